//! The manifest's JSON Schema (generated from the raw types) and the translation of
//! schema violations into located, plain-language problems.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::diagnostic::{MAX_PROBLEMS, Problem, SourceFile, did_you_mean};
use super::locate::{Locator, escape};
use super::raw::{RawManifest, RawTemplate};

/// The JSON Schema of a manifest, as checked in at `schemas/manifest.schema.json`.
pub fn manifest_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| without_null(serde_json::to_value(schemars::schema_for!(RawManifest))))
}

/// The JSON Schema of a templates file: a map of template name to template.
pub fn templates_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        without_null(serde_json::to_value(
            schemars::schema_for!(BTreeMap<String, RawTemplate>),
        ))
    })
}

/// Optional keys may be left out but not written as null: drops the `null` that
/// schemars adds to every `Option`, so that a wrong value gets the error of the type
/// it should have (an enum's choices, a mapping's keys) instead of "no branch matched".
fn without_null(schema: Result<Value, serde_json::Error>) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Array(types)) = map.get_mut("type") {
                    types.retain(|t| t != "null");
                    if types.len() == 1 {
                        let only = types.remove(0);
                        map.insert("type".into(), only);
                    }
                }
                let single = match map.get_mut("anyOf") {
                    Some(Value::Array(branches)) => {
                        branches.retain(|b| b.get("type").is_none_or(|t| t != "null"));
                        (branches.len() == 1).then(|| branches.remove(0))
                    }
                    _ => None,
                };
                if let Some(Value::Object(branch)) = single {
                    map.remove("anyOf");
                    map.extend(branch);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut schema = schema.expect("schema serializes");
    strip(&mut schema);
    schema
}

fn validator(schema: &'static Value, cell: &'static OnceLock<Validator>) -> &'static Validator {
    cell.get_or_init(|| jsonschema::validator_for(schema).expect("generated schema is valid"))
}

/// Every schema violation of a manifest document, located.
pub fn manifest_problems(doc: &Value, src: &SourceFile, loc: &Locator) -> Vec<Problem> {
    static CELL: OnceLock<Validator> = OnceLock::new();
    problems(
        manifest_schema(),
        validator(manifest_schema(), &CELL),
        doc,
        src,
        loc,
    )
}

/// Every schema violation of a templates file, located.
pub fn templates_problems(doc: &Value, src: &SourceFile, loc: &Locator) -> Vec<Problem> {
    static CELL: OnceLock<Validator> = OnceLock::new();
    problems(
        templates_schema(),
        validator(templates_schema(), &CELL),
        doc,
        src,
        loc,
    )
}

fn problems(
    schema: &Value,
    validator: &Validator,
    doc: &Value,
    src: &SourceFile,
    loc: &Locator,
) -> Vec<Problem> {
    validator
        .iter_errors(doc)
        .flat_map(|e| translate(&e, "", schema, src, loc))
        .take(MAX_PROBLEMS + 1)
        .collect()
}

/// One schema violation in plain words. An unknown-keys violation becomes one problem
/// per key, each at its key. `prefix` is the pointer of the instance `e` was found in.
fn translate(
    e: &ValidationError,
    prefix: &str,
    schema: &Value,
    src: &SourceFile,
    loc: &Locator,
) -> Vec<Problem> {
    let relative = e.instance_path().as_str();
    let pointer = &format!("{prefix}{relative}");
    let instance = e.instance();
    let node = schema_at(schema, relative);
    let at_value = |message: String, label: String, hint: Option<String>| {
        vec![src.problem(loc.value(pointer), pointer, message, label, hint)]
    };
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = node.map(property_names).unwrap_or_default();
            unexpected
                .iter()
                .take(MAX_PROBLEMS + 1)
                .map(|key| {
                    let p = format!("{pointer}/{}", escape(key));
                    let hint = match did_you_mean(key, &allowed) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("allowed keys here: {}", allowed.join(", ")),
                    };
                    src.problem(
                        loc.key(&p),
                        &p,
                        format!("unknown key `{key}`"),
                        "not a known key",
                        Some(hint),
                    )
                })
                .collect()
        }
        ValidationErrorKind::Required { property } => {
            let key = property.as_str().unwrap_or_default();
            let hint = node
                .and_then(|n| schema_at_node(schema, n, key))
                .and_then(description)
                .map(|d| format!("`{key}`: {d}"));
            vec![src.problem(
                loc.key(pointer),
                pointer,
                format!("missing required key `{key}`"),
                format!("`{key}` is missing here"),
                hint,
            )]
        }
        ValidationErrorKind::Type { kind } => at_value(
            format!(
                "expected {}, found {}",
                expected_type(kind),
                type_name(instance)
            ),
            format!("this is {}", type_name(instance)),
            node.and_then(description).map(str::to_string),
        ),
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit } => at_value(
            format!("`{}` is below the minimum of {limit}", short(instance)),
            format!("must be at least {limit}"),
            minimum_hint(pointer),
        ),
        ValidationErrorKind::Maximum { limit }
        | ValidationErrorKind::ExclusiveMaximum { limit } => at_value(
            format!("`{}` is above the maximum of {limit}", short(instance)),
            format!("must be at most {limit}"),
            None,
        ),
        ValidationErrorKind::MinLength { .. } | ValidationErrorKind::MinItems { .. } => at_value(
            format!("`{}` must not be empty", last_segment(pointer)),
            "empty".into(),
            node.and_then(description).map(str::to_string),
        ),
        ValidationErrorKind::MaxLength { limit } => at_value(
            format!("`{}` is longer than {limit} characters", short(instance)),
            "too long".into(),
            None,
        ),
        ValidationErrorKind::Pattern { .. } => at_value(
            format!("`{}` is not a valid {}", short(instance), what_is(pointer)),
            "not allowed here".into(),
            Some(pattern_hint(pointer)),
        ),
        ValidationErrorKind::Enum { options } => {
            let names: Vec<String> = options
                .as_array()
                .map(|a| a.iter().map(short).collect())
                .unwrap_or_default();
            let (message, hint) = not_one_of(instance, &names);
            at_value(message, "not an allowed value".into(), Some(hint))
        }
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. }
            if let Some(names) = node.and_then(|n| constants(schema, n)) =>
        {
            let (message, hint) = not_one_of(instance, &names);
            at_value(message, "not an allowed value".into(), Some(hint))
        }
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. }
            if let Some(found) =
                node.and_then(|n| branch_problems(schema, n, instance, pointer, src, loc)) =>
        {
            found
        }
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => at_value(
            format!("`{}` has the wrong form", last_segment(pointer)),
            "not an allowed form".into(),
            node.and_then(description).map(str::to_string),
        ),
        _ => at_value(e.to_string(), "here".into(), None),
    }
}

/// The message and hint for a value that is not among `names`.
fn not_one_of(instance: &Value, names: &[String]) -> (String, String) {
    let value = short(instance);
    let hint = match did_you_mean(&value, names) {
        Some(close) => format!("did you mean `{close}`?"),
        None => format!("use one of: {}", names.join(", ")),
    };
    (
        format!("`{value}` is not one of {}", names.join(", ")),
        hint,
    )
}

/// The allowed values of an enum written as `oneOf` constants (as schemars writes an
/// enum whose variants have docs).
fn constants(root: &Value, node: &Value) -> Option<Vec<String>> {
    let branches = node
        .get("oneOf")
        .or_else(|| node.get("anyOf"))?
        .as_array()?;
    branches
        .iter()
        .map(|b| resolve(root, b).get("const").map(short))
        .collect()
}

/// For a value that matches no branch of an `anyOf`, the problems against the branch
/// of its own JSON type (an image mapping against the lookup form, say), when there is one.
fn branch_problems(
    root: &Value,
    node: &Value,
    instance: &Value,
    pointer: &str,
    src: &SourceFile,
    loc: &Locator,
) -> Option<Vec<Problem>> {
    let kind = match instance {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::Null => "null",
    };
    let branches = node
        .get("anyOf")
        .or_else(|| node.get("oneOf"))?
        .as_array()?;
    let branch = branches
        .iter()
        .map(|b| resolve(root, b))
        .find(|b| b.get("type").and_then(Value::as_str) == Some(kind))?;
    let mut sub = branch.clone();
    if let (Some(defs), Some(map)) = (root.get("$defs"), sub.as_object_mut()) {
        map.insert("$defs".into(), defs.clone());
    }
    let validator = jsonschema::validator_for(&sub).ok()?;
    let found: Vec<Problem> = validator
        .iter_errors(instance)
        .flat_map(|e| translate(&e, pointer, &sub, src, loc))
        .take(MAX_PROBLEMS + 1)
        .collect();
    (!found.is_empty()).then_some(found)
}

/// The subschema that validates the instance at `pointer`, following `$ref`s,
/// `properties`, `additionalProperties`, `items` and the object branch of `anyOf`.
fn schema_at<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut node = resolve(root, root);
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        node = schema_at_node(root, node, &segment)?;
    }
    Some(node)
}

fn schema_at_node<'a>(root: &'a Value, node: &'a Value, segment: &str) -> Option<&'a Value> {
    let node = object_branch(root, node);
    let next = node
        .get("properties")
        .and_then(|p| p.get(segment))
        .or_else(|| node.get("additionalProperties").filter(|v| v.is_object()))
        .or_else(|| node.get("items"))?;
    Some(resolve(root, next))
}

fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix('#')
            .and_then(|p| root.pointer(p))
            .map_or(node, |n| resolve(root, n)),
        None => node,
    }
}

fn object_branch<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let branches = node.get("anyOf").or_else(|| node.get("oneOf"));
    branches
        .and_then(Value::as_array)
        .and_then(|bs| {
            bs.iter()
                .map(|b| resolve(root, b))
                .find(|b| b.get("properties").is_some())
        })
        .unwrap_or(node)
}

fn property_names(node: &Value) -> Vec<String> {
    node.get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn description(node: &Value) -> Option<&str> {
    node.get("description").and_then(Value::as_str)
}

fn expected_type(kind: &TypeKind) -> String {
    let one = |t: &jsonschema::JsonType| match t.to_string().as_str() {
        "integer" => "a whole number".to_string(),
        "number" => "a number".to_string(),
        "string" => "a string".to_string(),
        "boolean" => "true or false".to_string(),
        "array" => "a list".to_string(),
        "object" => "a mapping".to_string(),
        "null" => "nothing".to_string(),
        other => other.to_string(),
    };
    match kind {
        TypeKind::Single(t) => one(t),
        TypeKind::Multiple(set) => {
            let names: Vec<String> = set
                .iter()
                .filter(|t| t.to_string() != "null")
                .map(|t| one(&t))
                .collect();
            names.join(" or ")
        }
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) => format!("the string `{s}`"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// A value as the user wrote it, without JSON quotes.
fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn last_segment(pointer: &str) -> &str {
    pointer
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("manifest")
}

fn what_is(pointer: &str) -> &'static str {
    match pointer {
        "/name" => "fleet name",
        "/region" => "region name",
        "/account" => "profile name",
        p if p.starts_with("/members/") => "member name",
        _ => "value",
    }
}

fn pattern_hint(pointer: &str) -> String {
    match pointer {
        "/region" => "a region name such as us-west-2 or eu-central-1".into(),
        "/account" => "the name of a profile of the AWS configuration (`[profile NAME]` in ~/.aws/config), without spaces or brackets".into(),
        _ => "use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. cs499-fall26); it becomes part of every workspace name".into(),
    }
}

fn minimum_hint(pointer: &str) -> Option<String> {
    (pointer == "/count").then(|| {
        "a fleet has at least one workspace; to shrink a fleet, lower `count` and set `prune: true`".into()
    })
}

//! The manifest's own rules: names, numbering and fallback types; and properties of
//! loading over random manifests (`proptests`).

mod proptests;

use std::path::Path;

use super::*;

#[test]
fn the_name_rule_is_the_schemas() {
    let schema = super::schema_json();
    let name = &schema["properties"]["name"];
    assert_eq!(name["maxLength"], super::NAME_MAX);
    let pattern = name["pattern"].as_str().unwrap();
    assert_eq!(pattern, "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$");
    for (n, ok) in [
        ("cs-01", true),
        ("a", true),
        ("-a", false),
        ("a-", false),
        ("A", false),
        ("a_b", false),
        ("", false),
    ] {
        assert_eq!(super::valid_name(n), ok, "{n}");
    }
    assert!(super::valid_name(&"a".repeat(40)));
    assert!(!super::valid_name(&"a".repeat(41)));
}

#[test]
fn numbering_is_stable_when_the_count_grows() {
    let thirty = numbered_workspaces("cs499", 30);
    let thirty_two = numbered_workspaces("cs499", 32);
    assert_eq!(thirty[0], "cs499-01");
    assert_eq!(thirty[29], "cs499-30");
    assert_eq!(&thirty_two[..30], &thirty[..]);
    assert_eq!(&thirty_two[30..], ["cs499-31", "cs499-32"]);
}

#[test]
fn numbering_past_99_keeps_earlier_names() {
    let names = numbered_workspaces("lab", 100);
    assert_eq!(names[0], "lab-01");
    assert_eq!(names[98], "lab-99");
    assert_eq!(names[99], "lab-100");
}

#[test]
fn fallback_types_are_other_types_each_listed_once_and_located() {
    let text = "name: cs\nproject: p\ntemplate: t\ncount: 1\ntemplates:\n  t:\n    image: ami-1\n    instance_type: t3.micro\n    fallback_instance_types: [t3a.micro, t3.micro, t3a.micro]\n";
    let Err(super::ManifestError::Invalid { problems, .. }) =
        super::parse(Path::new("c.yaml"), text)
    else {
        panic!("refused");
    };
    let got: Vec<(usize, &str)> = problems
        .iter()
        .map(|p| (p.line, p.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (9, "`t3.micro` is template `t`'s own instance type"),
            (
                9,
                "`t3a.micro` is listed twice in `fallback_instance_types`"
            )
        ]
    );
    assert_eq!(problems[0].column, 42);

    let ok = text.replace(", t3.micro, t3a.micro]", ", m5.large]");
    let m = super::parse(Path::new("c.yaml"), &ok).unwrap();
    assert_eq!(
        m.template.fallback_instance_types,
        ["t3a.micro", "m5.large"]
    );
}

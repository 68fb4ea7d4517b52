//! The user's own settings, `~/.prism/config.yaml` (or `$PRISM_CONFIG`): defaults that a
//! manifest may override.
//!
//! ```yaml
//! rate_limiting:
//!   workspace_launch:
//!     enabled: true
//!     rate_per_minute: 2
//!     burst_size: 5
//!     adaptive: true
//! capacity:
//!   sold_out_ttl: 3m
//! store: dynamodb://prism-state   # replicas' shared table (default: this machine's files)
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use crate::engine::limiter::RateSettings;
use crate::manifest::{Locator, Problem, RateLimitSpec, SourceFile, Span};

/// The settings file, every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    #[serde(default)]
    pub rate_limiting: RateLimiting,
    #[serde(default)]
    pub capacity: Capacity,
    /// Where `watch` and `serve` keep what replicas share (`dynamodb://TABLE`), unless
    /// `--store` or `PRISM_STORE` says.
    pub store: Option<String>,
}

/// What prism does when AWS has no capacity.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// How long a sold-out (instance type, zone) is avoided, as a duration (`3m`).
    pub sold_out_ttl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiting {
    #[serde(default)]
    pub workspace_launch: LaunchLimit,
}

/// Launch pacing defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchLimit {
    pub enabled: Option<bool>,
    pub rate_per_minute: Option<f64>,
    pub burst_size: Option<u32>,
    pub adaptive: Option<bool>,
}

/// A settings file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file (named by `PRISM_CONFIG`, or the default one) could not be read.
    #[error("{message}")]
    Unreadable { path: String, message: String },
    /// The file was read, and has these problems, each located.
    #[error("{path}: {} problem{} in prism's settings file", problems.len(), if problems.len() == 1 { "" } else { "s" })]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
}

/// The keys each mapping of the settings file may hold, by JSON pointer.
const KEYS: &[(&str, &[&str])] = &[
    ("", &["rate_limiting", "capacity", "store"]),
    ("/capacity", &["sold_out_ttl"]),
    ("/rate_limiting", &["workspace_launch"]),
    (
        "/rate_limiting/workspace_launch",
        &["enabled", "rate_per_minute", "burst_size", "adaptive"],
    ),
];

/// Where the settings file is, and whether `PRISM_CONFIG` named it (an empty
/// `PRISM_CONFIG` is unset).
pub fn path() -> Option<(PathBuf, bool)> {
    if let Some(p) = std::env::var_os("PRISM_CONFIG").filter(|p| !p.is_empty()) {
        return Some((p.into(), true));
    }
    std::env::var_os("HOME").map(|h| (PathBuf::from(h).join(".prism/config.yaml"), false))
}

/// Reads the settings file; a missing default file is the defaults, a missing file
/// that `PRISM_CONFIG` names is an error.
pub fn load() -> Result<UserConfig, ConfigError> {
    let Some((path, named)) = path() else {
        return Ok(UserConfig::default());
    };
    let shown = path.display().to_string();
    let whose = if named {
        format!("PRISM_CONFIG names {shown}")
    } else {
        format!("prism's settings file {shown}")
    };
    let unreadable = |why: String| ConfigError::Unreadable {
        path: shown.clone(),
        message: format!("{whose}, which {why}."),
    };
    if path.is_dir() {
        return Err(unreadable("is a folder, not a file".into()));
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
            return Ok(UserConfig::default());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unreadable("does not exist".into()));
        }
        Err(e) => return Err(unreadable(format!("cannot be read: {e}"))),
    };
    parse(&shown, &text)
}

/// Parses the settings file's text, reporting every unknown key (with the key it was
/// probably meant to be) or else the first wrong value, each at its line and column.
pub fn parse(path: &str, text: &str) -> Result<UserConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(UserConfig::default());
    }
    let src = SourceFile::new(path, text);
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_string(),
        problems,
    };
    let at = |e: &serde_yaml::Error, what: &str| {
        let offset = e.location().map_or(0, |l| l.index());
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message);
        src.problem(
            Span { offset, len: 1 },
            "",
            format!("{what}{message}"),
            "here",
            None,
        )
    };
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| invalid(vec![at(&e, "invalid YAML: ")]))?;
    // serde_yaml read it; an index that fails only loses exact locations.
    let loc = Locator::new(text).unwrap_or_default();
    let mut problems = Vec::new();
    unknown_keys(&value, "", &src, &loc, &mut problems);
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let config: UserConfig = serde_yaml::from_str(text).map_err(|e| invalid(vec![at(&e, "")]))?;
    let launch = &config.rate_limiting.workspace_launch;
    let pointer = "/rate_limiting/workspace_launch";
    if let Some(r) = launch.rate_per_minute
        && !(r.is_finite() && r > 0.0)
    {
        let p = format!("{pointer}/rate_per_minute");
        problems.push(src.problem(
            loc.value(&p),
            &p,
            format!("rate_per_minute must be a number above 0, not {r}"),
            "not a rate",
            Some("for example `rate_per_minute: 2`".into()),
        ));
    }
    if launch.burst_size == Some(0) {
        let p = format!("{pointer}/burst_size");
        problems.push(src.problem(
            loc.value(&p),
            &p,
            "burst_size must be at least 1".to_string(),
            "not a burst",
            None,
        ));
    }
    if let Some(ttl) = &config.capacity.sold_out_ttl
        && humantime::parse_duration(ttl).is_err()
    {
        let p = "/capacity/sold_out_ttl";
        problems.push(src.problem(
            loc.value(p),
            p,
            format!("sold_out_ttl must be a duration, not `{ttl}`"),
            "not a duration",
            Some("for example `sold_out_ttl: 3m` (or `90s`, `0s` to never remember)".into()),
        ));
    }
    if let Some(store) = &config.store
        && let Err(why) = store.parse::<crate::store::StoreUrl>()
    {
        let p = "/store";
        problems.push(src.problem(
            loc.value(p),
            p,
            why,
            "not a store",
            Some("for example `store: dynamodb://prism-state` (made by `prism store init`), or `files`".into()),
        ));
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(invalid(problems))
    }
}

/// Where replicas share state: `--store` (or `PRISM_STORE`), else the settings file's
/// `store`, else this machine's files.
pub fn store(flag: Option<&crate::store::StoreUrl>, config: &UserConfig) -> crate::store::StoreUrl {
    flag.cloned()
        .or_else(|| config.store.as_deref().and_then(|s| s.parse().ok()))
        .unwrap_or(crate::store::StoreUrl::Files)
}

/// Records a problem for every key of `value` (at `pointer`) that the file may not hold.
fn unknown_keys(
    value: &serde_yaml::Value,
    pointer: &str,
    src: &SourceFile,
    loc: &Locator,
    out: &mut Vec<Problem>,
) {
    let (Some(map), Some((_, allowed))) =
        (value.as_mapping(), KEYS.iter().find(|(p, _)| *p == pointer))
    else {
        return;
    };
    let allowed: Vec<String> = allowed.iter().map(|k| k.to_string()).collect();
    for (key, child) in map {
        let key = match key {
            serde_yaml::Value::String(k) => k.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        let p = format!("{pointer}/{key}");
        if allowed.contains(&key) {
            unknown_keys(child, &p, src, loc, out);
            continue;
        }
        let hint = match crate::manifest::did_you_mean(&key, &allowed) {
            Some(close) => format!("did you mean `{close}`?"),
            None => format!("allowed keys here: {}", allowed.join(", ")),
        };
        out.push(src.problem(
            loc.key(&p),
            &p,
            format!("unknown key `{key}`"),
            "not a known key",
            Some(hint),
        ));
    }
}

/// How long a sold-out (instance type, zone) is avoided: the settings file's
/// `capacity.sold_out_ttl`, else [`crate::engine::capacity::SOLD_OUT_TTL`] (3 minutes).
pub fn sold_out_ttl(config: &UserConfig) -> std::time::Duration {
    config
        .capacity
        .sold_out_ttl
        .as_deref()
        .and_then(|t| humantime::parse_duration(t).ok())
        .unwrap_or(crate::engine::capacity::SOLD_OUT_TTL)
}

/// Launch pacing: each field from the manifest, else the settings file, else the
/// default ([`RateSettings::AUTO`]: 120 per minute, burst 5, adaptive). None when the settings file disables
/// pacing and the manifest does not ask for it.
pub fn launch_rate(manifest: &RateLimitSpec, config: &UserConfig) -> Option<RateSettings> {
    let user = &config.rate_limiting.workspace_launch;
    let asked = manifest.rate_per_minute.is_some() || manifest.burst_size.is_some();
    if user.enabled == Some(false) && !asked {
        return None;
    }
    let default = RateSettings::default();
    Some(RateSettings {
        rate_per_minute: manifest
            .rate_per_minute
            .or(user.rate_per_minute)
            .unwrap_or(default.rate_per_minute),
        burst_size: manifest
            .burst_size
            .or(user.burst_size)
            .unwrap_or(default.burst_size),
        adaptive: manifest
            .adaptive
            .or(user.adaptive)
            .unwrap_or(default.adaptive),
        auto: !asked && user.rate_per_minute.is_none() && user.burst_size.is_none(),
    })
}

/// How often the quota and the usage are read again while a workspace waits for room:
/// [`QuotaWait::EVERY`](crate::engine::QuotaWait::EVERY), or `PRISM_QUOTA_RECHECK`
/// (a duration such as `5s`) when set, for tests and demonstrations.
pub fn quota_recheck() -> std::time::Duration {
    std::env::var("PRISM_QUOTA_RECHECK")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(crate::engine::QuotaWait::EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_beats_settings_beat_defaults() {
        let config: UserConfig = serde_yaml::from_str(
            "rate_limiting: {workspace_launch: {rate_per_minute: 10, burst_size: 3}}",
        )
        .unwrap();
        let manifest = RateLimitSpec {
            rate_per_minute: Some(30.0),
            ..RateLimitSpec::default()
        };
        let r = launch_rate(&manifest, &config).unwrap();
        assert_eq!(
            (r.rate_per_minute, r.burst_size, r.adaptive),
            (30.0, 3, true)
        );
        let r = launch_rate(&RateLimitSpec::default(), &UserConfig::default()).unwrap();
        assert_eq!(r, crate::engine::RateSettings::AUTO);
        assert_eq!(
            (r.rate_per_minute, r.burst_size, r.adaptive),
            (120.0, 5, true)
        );
    }

    #[test]
    fn a_typo_is_located_with_the_key_it_was_meant_to_be() {
        let text = "rate_limiting:\n  workspace_launch:\n    rate_per_minut: 5\n";
        let Err(ConfigError::Invalid { problems, .. }) = parse("config.yaml", text) else {
            panic!("a typo is an error");
        };
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!((p.line, p.column), (3, 5));
        assert_eq!(p.message, "unknown key `rate_per_minut`");
        assert_eq!(p.hint.as_deref(), Some("did you mean `rate_per_minute`?"));
    }

    #[test]
    fn wrong_values_are_located() {
        for (text, line, words) in [
            (
                "rate_limiting: {workspace_launch: {burst_size: many}}",
                1,
                "invalid type",
            ),
            (
                "rate_limiting:\n  workspace_launch:\n    rate_per_minute: 0\n",
                3,
                "above 0",
            ),
            (
                "rate_limiting:\n  workspace_launch: {burst_size: 0}\n",
                2,
                "at least 1",
            ),
            ("rate_limiting: [\n", 2, "invalid YAML"),
            (
                "capacity: {}\nstore: s3://bucket\n",
                2,
                "`s3://bucket` is not a store",
            ),
        ] {
            let Err(ConfigError::Invalid { problems, .. }) = parse("c.yaml", text) else {
                panic!("{text:?} is refused");
            };
            assert_eq!(problems[0].line, line, "{text:?}");
            assert!(
                problems[0].message.contains(words),
                "{text:?}: {}",
                problems[0].message
            );
        }
    }

    #[test]
    fn the_sold_out_ttl_is_a_located_duration() {
        assert_eq!(
            sold_out_ttl(&UserConfig::default()),
            std::time::Duration::from_secs(180)
        );
        let c = parse("c.yaml", "capacity:\n  sold_out_ttl: 90s\n").unwrap();
        assert_eq!(sold_out_ttl(&c), std::time::Duration::from_secs(90));
        let Err(ConfigError::Invalid { problems, .. }) =
            parse("c.yaml", "capacity:\n  sold_out_ttl: soon\n")
        else {
            panic!("not a duration");
        };
        assert_eq!((problems[0].line, problems[0].column), (2, 17));
        assert!(problems[0].message.contains("must be a duration"));
        let Err(ConfigError::Invalid { problems, .. }) =
            parse("c.yaml", "capacity:\n  sold_out_tl: 1m\n")
        else {
            panic!("a typo");
        };
        assert_eq!(
            problems[0].hint.as_deref(),
            Some("did you mean `sold_out_ttl`?")
        );
    }

    #[test]
    fn settings_can_turn_pacing_off_unless_the_manifest_asks() {
        let off: UserConfig =
            serde_yaml::from_str("rate_limiting: {workspace_launch: {enabled: false}}").unwrap();
        assert!(launch_rate(&RateLimitSpec::default(), &off).is_none());
        let asked = RateLimitSpec {
            burst_size: Some(2),
            ..RateLimitSpec::default()
        };
        assert!(launch_rate(&asked, &off).is_some());
    }
}

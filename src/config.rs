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
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use crate::engine::limiter::RateSettings;
use crate::manifest::RateLimitSpec;

/// The settings file, every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    #[serde(default)]
    pub rate_limiting: RateLimiting,
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

/// A settings file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ConfigError {
    pub path: String,
    pub location: Option<(usize, usize)>,
    pub message: String,
}

/// Where the settings file is.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PRISM_CONFIG") {
        return Some(p.into());
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".prism/config.yaml"))
}

/// Reads the settings file; a missing file is the defaults.
pub fn load() -> Result<UserConfig, ConfigError> {
    let Some(path) = path() else {
        return Ok(UserConfig::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UserConfig::default()),
        Err(e) => {
            return Err(ConfigError {
                path: path.display().to_string(),
                location: None,
                message: e.to_string(),
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(UserConfig::default());
    }
    serde_yaml::from_str(&text).map_err(|e| ConfigError {
        path: path.display().to_string(),
        location: e.location().map(|l| (l.line(), l.column())),
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string(),
    })
}

/// Launch pacing: each field from the manifest, else the settings file, else the
/// default (2 per minute, burst 5, adaptive). None when the settings file disables
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
    })
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
        assert_eq!(
            (r.rate_per_minute, r.burst_size, r.adaptive),
            (2.0, 5, true)
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

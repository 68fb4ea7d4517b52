//! What prism hands the AWS SDK, checked before it does: endpoint URLs, regions and
//! profiles, each named with where it came from. A bad value becomes a clear error here
//! instead of a panic inside the SDK, a request dump, or calls sent somewhere unexpected.

use std::fmt;
use std::path::PathBuf;

/// Environment variables whose empty value means "unset", as for the AWS CLI
/// (`export AWS_ENDPOINT_URL=` leaves one set but empty).
pub const EMPTY_MEANS_UNSET: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_EC2",
    "AWS_ENDPOINT_URL_SERVICE_QUOTAS",
    "AWS_ENDPOINT_URL_EFS",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "PRISM_CONFIG",
];

/// Endpoint variables the SDK reads for the services prism calls.
const ENDPOINT_VARS: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_EC2",
    "AWS_ENDPOINT_URL_SERVICE_QUOTAS",
    "AWS_ENDPOINT_URL_EFS",
];

/// The regions of every AWS partition this prism knows. A region AWS opens later is
/// refused with a hint, rather than read as a typo of a known one.
pub const KNOWN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-isoe-west-1",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eusc-de-east-1",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-iso-east-1",
    "us-iso-west-1",
    "us-isob-east-1",
    "us-isof-east-1",
    "us-isof-south-1",
    "us-west-1",
    "us-west-2",
];

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag, e.g. `--region`.
    Flag(&'static str),
    /// An environment variable.
    Env(&'static str),
    /// The manifest's `region`.
    Manifest,
    /// The manifest's `account` (a profile name).
    ManifestAccount,
    /// The AWS configuration files (the profile's own setting).
    AwsConfig,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "the {name} flag"),
            Source::Env(name) => write!(f, "the environment variable {name}"),
            Source::Manifest => write!(f, "the manifest's `region`"),
            Source::ManifestAccount => write!(f, "the manifest's `account`"),
            Source::AwsConfig => write!(f, "the AWS configuration"),
        }
    }
}

/// A setting prism will not hand to the SDK. `code` is its catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingError {
    pub code: &'static str,
    /// The value in question, when it names a region (fills `{region}` in).
    pub region: Option<String>,
    pub message: String,
}

impl SettingError {
    fn new(code: &'static str, message: String) -> Self {
        SettingError {
            code,
            region: None,
            message,
        }
    }

    fn empty(source: &Source) -> Self {
        SettingError::new("EmptySetting", format!("{source} is set but empty."))
    }
}

/// Where and as whom to connect, checked. Unset fields fall back to the AWS
/// configuration (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, `~/.aws/config`).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Whether the profile was named for this command (`--profile` or the manifest's
    /// `account`): then its credentials are used even when the environment holds
    /// others, as the AWS CLI does with `--profile`, so that a fleet never lands in the
    /// account of whatever keys happen to be exported.
    pub named_profile: bool,
    pub endpoint_url: Option<String>,
}

/// The values given on the command line and in the manifest, unchecked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Requested<'a> {
    pub region_flag: Option<&'a str>,
    pub manifest_region: Option<&'a str>,
    pub profile_flag: Option<&'a str>,
    /// The manifest's `account`: a profile, overridden by `--profile`.
    pub manifest_account: Option<&'a str>,
    pub endpoint_flag: Option<&'a str>,
}

impl Connection {
    /// Checks the flags, the manifest's region and the environment variables the SDK
    /// would read, and returns what to connect with.
    pub fn resolve(req: Requested<'_>) -> Result<Connection, SettingError> {
        let endpoint_url = match req.endpoint_flag {
            Some(url) => Some(endpoint_url(url, &Source::Flag("--endpoint-url"))?),
            None => None,
        };
        for var in ENDPOINT_VARS {
            if let Some(url) = env(var)? {
                endpoint_url_checked_env(&url, var)?;
            }
        }
        let region = match (req.region_flag, req.manifest_region, env("AWS_REGION")?) {
            (Some(r), _, _) => Some(region(r, &Source::Flag("--region"))?),
            (None, Some(r), _) => Some(region(r, &Source::Manifest)?),
            (None, None, Some(r)) => Some(region(&r, &Source::Env("AWS_REGION"))?),
            (None, None, None) => None,
        };
        let profile = match (req.profile_flag, req.manifest_account, env("AWS_PROFILE")?) {
            (Some(p), _, _) => Some(profile(p, &Source::Flag("--profile"))?),
            (None, Some(p), _) => Some(profile(p, &Source::ManifestAccount)?),
            (None, None, Some(p)) => Some(profile(&p, &Source::Env("AWS_PROFILE"))?),
            (None, None, None) => None,
        };
        Ok(Connection {
            region,
            profile,
            named_profile: req.profile_flag.is_some() || req.manifest_account.is_some(),
            endpoint_url,
        })
    }
}

fn endpoint_url_checked_env(url: &str, var: &'static str) -> Result<(), SettingError> {
    endpoint_url(url, &Source::Env(var)).map(|_| ())
}

/// A set, non-empty environment variable; one that is not UTF-8 is an error.
pub fn env(name: &'static str) -> Result<Option<String>, SettingError> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(SettingError::new(
            "InvalidSetting",
            format!("{} is not valid UTF-8 text.", Source::Env(name)),
        )),
    }
}

/// An endpoint URL: absolute, http or https, with a host.
pub fn endpoint_url(value: &str, source: &Source) -> Result<String, SettingError> {
    if value.trim().is_empty() {
        return Err(SettingError::empty(source));
    }
    let why = match url::Url::parse(value.trim()) {
        Err(e) => e.to_string(),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            format!("its scheme is `{}`, not http or https", u.scheme())
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => "it names no host".into(),
        Ok(_) => return Ok(value.trim().to_string()),
    };
    Err(SettingError::new(
        "InvalidEndpointUrl",
        format!("`{value}` from {source} is not a usable endpoint URL: {why}."),
    ))
}

/// Whether `value` is shaped like a region name: `us-west-2`, `us-gov-east-1`.
fn well_formed(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
}

/// A region AWS has, also with a custom endpoint: an emulator or a private endpoint
/// stands in for such a region, and a typo there would fail only at the first call.
pub fn region(value: &str, source: &Source) -> Result<String, SettingError> {
    if value.is_empty() {
        return Err(SettingError::empty(source));
    }
    if KNOWN_REGIONS.contains(&value) {
        return Ok(value.to_string());
    }
    let candidates: Vec<String> = KNOWN_REGIONS.iter().map(|r| r.to_string()).collect();
    let hint = match crate::manifest::did_you_mean(value, &candidates) {
        Some(r) => format!(" Did you mean `{r}`?"),
        None => " Region names look like `us-west-2`.".into(),
    };
    let what = if well_formed(value) {
        "is not an AWS region this prism knows"
    } else {
        "is not a region name"
    };
    Err(SettingError {
        code: "UnknownRegion",
        region: Some(value.to_string()),
        message: format!("`{value}` from {source} {what}.{hint}"),
    })
}

/// A profile name: not empty, and defined in the AWS configuration or credentials file.
pub fn profile(value: &str, source: &Source) -> Result<String, SettingError> {
    if value.trim().is_empty() {
        return Err(SettingError::empty(source));
    }
    let files = [
        aws_file("AWS_CONFIG_FILE", ".aws/config")?,
        aws_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials")?,
    ];
    let mut defined = Vec::new();
    for path in files.iter().flatten() {
        if let Ok(text) = std::fs::read_to_string(path) {
            defined.extend(profile_names(&text));
        }
    }
    if defined.iter().any(|p| p == value) {
        return Ok(value.to_string());
    }
    let looked: Vec<String> = files
        .iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    let hint = crate::manifest::did_you_mean(value, &defined)
        .map(|p| format!(" Did you mean `{p}`?"))
        .unwrap_or_default();
    Err(SettingError::new(
        "ProfileNotFound",
        format!(
            "The profile `{value}` from {source} is not defined in {}.{hint}",
            if looked.is_empty() {
                "any AWS configuration file (HOME is not set)".to_string()
            } else {
                looked.join(" nor in ")
            }
        ),
    ))
}

/// The AWS file `var` names (with `~/` expanded, as the SDK does), else `~/default`.
fn aws_file(var: &'static str, default: &str) -> Result<Option<PathBuf>, SettingError> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    Ok(match env(var)? {
        Some(p) => match (p.strip_prefix("~/"), &home) {
            (Some(rest), Some(h)) => Some(PathBuf::from(h).join(rest)),
            _ => Some(PathBuf::from(p)),
        },
        None => home.map(|h| PathBuf::from(h).join(default)),
    })
}

/// The profile names that the sections of an AWS config or credentials file define:
/// `[default]`, `[profile NAME]` (config) and `[NAME]` (credentials).
fn profile_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let inner = l.strip_prefix('[')?.split(']').next()?;
            let words: Vec<&str> = inner.split_whitespace().collect();
            match words.as_slice() {
                ["profile", name] => Some(name.to_string()),
                [name] => Some(name.to_string()),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        let flag = Source::Flag("--endpoint-url");
        assert!(endpoint_url("http://127.0.0.1:5000", &flag).is_ok());
        assert!(endpoint_url("https://ec2.us-west-2.amazonaws.com", &flag).is_ok());
        for (bad, code) in [
            ("", "EmptySetting"),
            ("  ", "EmptySetting"),
            ("not a url", "InvalidEndpointUrl"),
            ("localhost:5000", "InvalidEndpointUrl"),
            ("ftp://example.com", "InvalidEndpointUrl"),
            ("http://", "InvalidEndpointUrl"),
        ] {
            let e = endpoint_url(bad, &flag).unwrap_err();
            assert_eq!(e.code, code, "{bad:?}: {e}");
            assert!(e.message.contains("--endpoint-url"), "{e}");
        }
    }

    #[test]
    fn regions() {
        let flag = Source::Flag("--region");
        assert_eq!(region("us-west-2", &flag).unwrap(), "us-west-2");
        assert!(region("us-gov-west-1", &flag).is_ok());
        let e = region("us-west-9", &flag).unwrap_err();
        assert_eq!(e.code, "UnknownRegion");
        assert!(
            e.message.contains("`us-west-9` from the --region flag"),
            "{e}"
        );
        assert!(e.message.contains("Did you mean"), "{e}");
        for bad in [
            "us_west_2",
            "US-WEST-2",
            "42",
            "us-west",
            "us-west-2 ",
            "us-west-3",
        ] {
            assert_eq!(region(bad, &flag).unwrap_err().code, "UnknownRegion");
        }
        assert_eq!(region("", &flag).unwrap_err().code, "EmptySetting");
    }

    #[test]
    fn profile_sections() {
        let text = "[default]\nregion = us-west-2\n[profile lab]\n[ profile  ops ]\n[sso-session corp x]\n# [profile commented]\n[creds]\n";
        assert_eq!(profile_names(text), ["default", "lab", "ops", "creds"]);
    }
}

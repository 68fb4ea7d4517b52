//! Quota arithmetic in one place: the vCPUs a class has in use, how healthy a quota is,
//! and the value to ask AWS for. The plan, `quota show`, `quota alerts` and the
//! explanation of VcpuLimitExceeded all call these, so one situation gives one answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::QuotaClass;

/// A quota more than this many percent used is a warning.
pub const WARNING_ABOVE_PERCENT: f64 = 50.0;
/// A quota more than this many percent used is critical.
pub const CRITICAL_ABOVE_PERCENT: f64 = 80.0;

/// Health of a quota by its use: up to 50 % ok, above 50 % warning, above 80 % critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    /// The status of `usage` out of `limit`; unknown when either is.
    pub fn of(usage: Option<f64>, limit: Option<f64>) -> Status {
        let (Some(u), Some(l)) = (usage, limit) else {
            return Status::Unknown;
        };
        // Compared as u × 100 against l × threshold: exact for whole numbers, where a
        // division by 0.8 would not be.
        if u * 100.0 > l * CRITICAL_ABOVE_PERCENT {
            Status::Critical
        } else if u * 100.0 > l * WARNING_ABOVE_PERCENT {
            Status::Warning
        } else {
            Status::Ok
        }
    }

    /// ✅, ⚠ or ❌ (? when unknown).
    pub fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✅",
            Status::Warning => "⚠",
            Status::Critical => "❌",
            Status::Unknown => "?",
        }
    }
}

/// `usage` as a percentage of `limit`; none when either is unknown or the limit is 0.
pub fn percent(usage: Option<f64>, limit: Option<f64>) -> Option<f64> {
    match (usage, limit) {
        (Some(u), Some(l)) if l > 0.0 => Some(u / l * 100.0),
        _ => None,
    }
}

/// The vCPUs that instances of `class` use, from instance counts by (type, lifecycle)
/// and the vCPUs of each type (see [`super::class_of`] for what counts where). Types
/// whose vCPUs are unknown make the usage unknown (never 0): the error lists them.
pub fn vcpus_in_use<'a>(
    class: &QuotaClass,
    counts: impl IntoIterator<Item = (&'a str, Option<&'a str>, u32)>,
    vcpus: &BTreeMap<String, u32>,
) -> Result<u32, Vec<String>> {
    let mut total = 0;
    let mut unknown = Vec::new();
    for (instance_type, lifecycle, count) in counts {
        if super::class_of(instance_type, lifecycle).map(|c| c.code) != Some(class.code) {
            continue;
        }
        match vcpus.get(instance_type) {
            Some(v) => total += v * count,
            None => unknown.push(instance_type.to_string()),
        }
    }
    if unknown.is_empty() {
        Ok(total)
    } else {
        unknown.sort();
        unknown.dedup();
        Err(unknown)
    }
}

/// vCPUs left in a quota: `limit − usage`, never below zero.
pub fn available(limit: f64, usage: u32) -> u32 {
    (limit - f64::from(usage)).max(0.0).floor() as u32
}

/// The quota value to ask AWS for so that `in_use` (what runs once the launches at hand
/// are done) is at most 80 % of it: the smallest whole number that is not critical.
/// None when the current `limit` already is (nothing to ask for).
///
/// Asking for exactly what is needed would leave the quota 100 % used, critical, right
/// after the launch; asking for the smallest value out of critical keeps the request
/// modest, which AWS approves more readily than a large one.
pub fn recommended_value(in_use: f64, limit: Option<f64>) -> Option<f64> {
    if in_use <= 0.0 {
        return None;
    }
    let value = (in_use * 100.0 / CRITICAL_ABOVE_PERCENT).ceil();
    // Critical means in_use > 80 % of the limit, so `value` is then above the limit,
    // as AWS requires of a desired value.
    match limit {
        Some(l) if Status::of(Some(in_use), Some(l)) != Status::Critical => None,
        _ => Some(value),
    }
}

/// vCPUs that may still be added before `usage` out of `limit` turns critical.
pub fn room_before_critical(usage: f64, limit: f64) -> f64 {
    (limit * CRITICAL_ABOVE_PERCENT / 100.0 - usage)
        .floor()
        .max(0.0)
}

/// The command that asks for `value` of `class`.
pub fn request_command(class: &QuotaClass, value: f64, region: Option<&str>) -> String {
    let mut out = format!(
        "prism quota request --quota {} --desired-value {value}",
        class.friendly
    );
    if let Some(r) = region {
        out.push_str(&format!(" --region {r}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{STANDARD, by_name};

    #[test]
    fn status_by_use() {
        let cases = [
            // (usage, limit, status)
            (Some(0.0), Some(32.0), Status::Ok),
            (Some(16.0), Some(32.0), Status::Ok),
            (Some(17.0), Some(32.0), Status::Warning),
            (Some(24.0), Some(32.0), Status::Warning),
            (Some(56.0), Some(70.0), Status::Warning),
            (Some(57.0), Some(70.0), Status::Critical),
            (Some(26.0), Some(32.0), Status::Critical),
            (Some(40.0), Some(32.0), Status::Critical),
            (Some(0.0), Some(0.0), Status::Ok),
            (Some(2.0), Some(0.0), Status::Critical),
            (None, Some(32.0), Status::Unknown),
            (Some(1.0), None, Status::Unknown),
        ];
        for (usage, limit, want) in cases {
            assert_eq!(Status::of(usage, limit), want, "{usage:?} of {limit:?}");
        }
    }

    #[test]
    fn recommended_values_leave_the_quota_out_of_critical() {
        let cases = [
            // (in use after the launch, current limit, recommended)
            (56.0, Some(32.0), Some(70.0)),
            (32.0, Some(32.0), Some(40.0)),
            (28.0, Some(32.0), Some(35.0)),
            (30.0, Some(32.0), Some(38.0)),
            (160.0, Some(32.0), Some(200.0)),
            (1.0, Some(0.0), Some(2.0)),
            (26.1, Some(32.5), Some(33.0)),
            // Not critical: nothing to ask for.
            (24.0, Some(32.0), None),
            (25.6, Some(32.0), None),
            (0.0, Some(0.0), None),
            // The limit could not be read: still a value to ask for.
            (56.0, None, Some(70.0)),
        ];
        for (in_use, limit, want) in cases {
            let got = recommended_value(in_use, limit);
            assert_eq!(got, want, "{in_use} in use of {limit:?}");
            if let Some(value) = got {
                assert_ne!(Status::of(Some(in_use), Some(value)), Status::Critical);
            }
        }
    }

    #[test]
    fn usage_counts_the_class_and_never_guesses_unknown_types() {
        let vcpus = BTreeMap::from([("t3.xlarge".to_string(), 4), ("g5.xlarge".to_string(), 4)]);
        let spot = Some("spot");
        type Counts<'a> = &'a [(&'a str, Option<&'a str>, u32)];
        let mixed: Counts = &[
            ("t3.xlarge", None, 4),
            ("t3.xlarge", spot, 2),
            ("g5.xlarge", None, 1),
            ("g5.xlarge", spot, 1),
        ];
        type Want = Result<u32, Vec<String>>;
        let cases: [(Counts, &str, Want); 5] = [
            (mixed, "L-1216C47A", Ok(16)),
            (mixed, "L-34B43A08", Ok(8)),
            (mixed, "L-DB2E81BA", Ok(4)),
            (&[], "L-1216C47A", Ok(0)),
            (
                &[
                    ("t3.xlarge", None, 1),
                    ("m9.huge", None, 2),
                    ("m9.huge", None, 1),
                ],
                "L-1216C47A",
                Err(vec!["m9.huge".into()]),
            ),
        ];
        for (counts, code, want) in cases {
            let class = by_name(code).unwrap();
            assert_eq!(
                vcpus_in_use(class, counts.iter().copied(), &vcpus),
                want,
                "{code}"
            );
        }
    }

    #[test]
    fn room_and_commands() {
        assert_eq!(room_before_critical(24.0, 32.0), 1.0);
        assert_eq!(room_before_critical(30.0, 32.0), 0.0);
        assert_eq!(available(32.0, 40), 0);
        assert_eq!(available(32.0, 16), 16);
        assert_eq!(
            request_command(&STANDARD, 70.0, Some("us-west-2")),
            "prism quota request --quota on-demand-vcpus --desired-value 70 --region us-west-2"
        );
    }
}

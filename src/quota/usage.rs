//! The account's quotas with their usage, as `prism quota show` and `alerts` see them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{EBS_GP3, ON_DEMAND, QuotaClass, SPOT_STANDARD, on_demand_class};
use crate::cloud::{Cloud, CloudError, InstanceFilter, InstanceState};
use crate::manifest::RetryPolicy;
use crate::observe::{QuotaReading, read_quota};
use crate::retry;

/// Health of a quota by its use: under 50 %, 50–80 %, over 80 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    /// The status of `usage` out of `limit`.
    pub fn of(usage: Option<f64>, limit: Option<f64>) -> Status {
        match (usage, limit) {
            (Some(u), Some(l)) if l <= 0.0 => {
                if u > 0.0 {
                    Status::Critical
                } else {
                    Status::Ok
                }
            }
            (Some(u), Some(l)) if u / l > 0.8 => Status::Critical,
            (Some(u), Some(l)) if u / l >= 0.5 => Status::Warning,
            (Some(_), Some(_)) => Status::Ok,
            _ => Status::Unknown,
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

/// One quota with its usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaRow {
    pub service: String,
    pub code: String,
    /// The name `prism quota request --quota` accepts.
    pub quota: String,
    pub name: String,
    pub unit: String,
    /// None when it could not be read.
    pub limit: Option<f64>,
    /// Whether the limit was raised from AWS's default.
    pub applied: Option<bool>,
    /// None when it could not be computed (never shown as 0).
    pub usage: Option<f64>,
    pub percent: Option<f64>,
    pub status: Status,
    /// Why the limit or the usage is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl QuotaRow {
    /// What to do about this quota, when anything.
    pub fn recommendation(&self) -> Option<String> {
        let limit = self.limit?;
        let usage = self.usage?;
        let desired = (limit * 2.0).max(usage * 1.5).ceil().max(1.0);
        let request = format!(
            "prism quota request --quota {} --desired-value {desired}",
            self.quota
        );
        match self.status {
            Status::Critical => Some(format!(
                "{} is {} used: request an increase now ({request}) or stop instances you no longer need",
                self.name,
                self.percent.map_or("fully".into(), |p| format!("{p:.0}%"))
            )),
            Status::Warning => Some(format!(
                "{} is {} used: consider requesting an increase ahead of need ({request})",
                self.name,
                self.percent.map_or("mostly".into(), |p| format!("{p:.0}%"))
            )),
            _ => None,
        }
    }
}

/// Usage of each vCPU class and of gp3 storage, by what the account runs.
struct Usage {
    by_code: BTreeMap<&'static str, Result<f64, String>>,
}

async fn usage(cloud: &dyn Cloud, policy: &RetryPolicy) -> Result<Usage, CloudError> {
    let running = InstanceFilter {
        tag_keys: vec![],
        tags: vec![],
        states: vec![InstanceState::Pending, InstanceState::Running],
    };
    let instances = retry::call(policy, || cloud.describe_instances(&running)).await?;
    let types: Vec<String> = instances
        .iter()
        .map(|i| i.instance_type.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let vcpus = if types.is_empty() {
        BTreeMap::new()
    } else {
        retry::call(policy, || cloud.instance_type_vcpus(&types)).await?
    };
    let mut by_code: BTreeMap<&'static str, Result<f64, String>> = BTreeMap::new();
    for class in ON_DEMAND.iter().chain([&SPOT_STANDARD]) {
        by_code.insert(class.code, Ok(0.0));
    }
    for i in &instances {
        let code = match i.lifecycle.as_deref() {
            None => on_demand_class(&i.instance_type).code,
            Some("spot") if on_demand_class(&i.instance_type).code == ON_DEMAND[0].code => {
                SPOT_STANDARD.code
            }
            Some(_) => continue,
        };
        let entry = by_code.entry(code).or_insert(Ok(0.0));
        match (vcpus.get(&i.instance_type), entry.as_mut()) {
            (Some(v), Ok(total)) => *total += f64::from(*v),
            (None, Ok(_)) => *entry = Err(format!("vCPUs of {} unknown", i.instance_type)),
            (_, Err(_)) => {}
        }
    }
    let gp3 = retry::call(policy, || cloud.describe_volumes(Some("gp3")))
        .await
        .map(|vs| vs.iter().map(|v| v.size_gib).sum::<u64>() as f64 / 1024.0)
        .map_err(|e| e.to_string());
    by_code.insert(EBS_GP3.code, gp3);
    Ok(Usage { by_code })
}

/// Every quota prism knows, with its limit and usage.
pub async fn survey(cloud: &dyn Cloud, policy: &RetryPolicy) -> Result<Vec<QuotaRow>, CloudError> {
    let usage = usage(cloud, policy).await?;
    let classes: Vec<&QuotaClass> = ON_DEMAND.iter().chain([&SPOT_STANDARD, &EBS_GP3]).collect();
    let readings =
        futures::future::join_all(classes.iter().map(|c| read_quota(cloud, c, policy))).await;
    Ok(classes
        .into_iter()
        .zip(readings)
        .map(|(class, reading)| {
            let (limit, applied, limit_note) = match reading {
                QuotaReading::Known { value, applied } => (Some(value), Some(applied), None),
                QuotaReading::Unknown { error } => (None, None, Some(error)),
            };
            let (used, usage_note) = match usage.by_code.get(class.code) {
                Some(Ok(u)) => (Some(*u), None),
                Some(Err(e)) => (None, Some(e.clone())),
                None => (None, None),
            };
            let percent = match (used, limit) {
                (Some(u), Some(l)) if l > 0.0 => Some(u / l * 100.0),
                _ => None,
            };
            QuotaRow {
                service: class.service.into(),
                code: class.code.into(),
                quota: class.friendly.into(),
                name: class.name.into(),
                unit: class.unit.into(),
                limit,
                applied,
                usage: used,
                percent,
                status: Status::of(used, limit),
                note: limit_note.or(usage_note),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_thresholds() {
        let s = |u, l| Status::of(Some(u), Some(l));
        assert_eq!(s(24.0, 32.0), Status::Warning);
        assert_eq!(s(15.0, 32.0), Status::Ok);
        assert_eq!(s(16.0, 32.0), Status::Warning);
        assert_eq!(s(26.0, 32.0), Status::Critical);
        assert_eq!(s(0.0, 0.0), Status::Ok);
        assert_eq!(s(2.0, 0.0), Status::Critical);
        assert_eq!(Status::of(None, Some(32.0)), Status::Unknown);
    }
}

//! The account's quotas with their usage, as `prism quota show` and `alerts` see them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::arith::{self, Status};
use super::read::{read_quota, read_quota_adjustable};
use super::{EBS_GP3, QuotaClass, QuotaReading};
use crate::cloud::{Cloud, CloudError, InstanceFilter, InstanceState};
use crate::manifest::RetryPolicy;
use crate::retry;

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
    /// Whether AWS takes increase requests for it; None when it could not be read.
    pub adjustable: Option<bool>,
    /// None when it could not be computed (never shown as 0).
    pub usage: Option<f64>,
    pub percent: Option<f64>,
    pub status: Status,
    /// The value to ask for when the quota is critical (see [`arith::recommended_value`]).
    pub recommended_value: Option<f64>,
    /// Why the limit or the usage is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl QuotaRow {
    fn new(
        class: &QuotaClass,
        (reading, adjustable): (QuotaReading, Option<bool>),
        usage: Result<f64, String>,
    ) -> Self {
        let (limit, applied, limit_note) = match reading {
            QuotaReading::Known { value, applied } => (Some(value), Some(applied), None),
            QuotaReading::Unknown { error } => (None, None, Some(error)),
        };
        let (usage, usage_note) = match usage {
            Ok(u) => (Some(u), None),
            Err(e) => (None, Some(e)),
        };
        let status = Status::of(usage, limit);
        QuotaRow {
            service: class.service.into(),
            code: class.code.into(),
            quota: class.friendly.into(),
            name: class.name.into(),
            unit: class.unit.into(),
            limit,
            applied,
            adjustable,
            usage,
            percent: arith::percent(usage, limit),
            status,
            recommended_value: match (status, usage) {
                (Status::Critical, Some(u)) => arith::recommended_value(u, limit),
                _ => None,
            },
            note: limit_note.or(usage_note),
        }
    }

    /// What to do about this quota, when anything.
    pub fn recommendation(&self) -> Option<String> {
        let class = super::by_name(&self.code)?;
        let percent = self.percent.map_or("fully".into(), |p| format!("{p:.0}%"));
        match self.status {
            Status::Critical => Some(format!(
                "{} is {percent} used: request an increase now ({}) or stop instances you no longer need",
                self.name,
                arith::request_command(class, self.recommended_value?, None)
            )),
            Status::Warning => Some(format!(
                "{} is {percent} used: {} {} more can be used before it turns critical; consider requesting an increase ahead of need",
                self.name,
                arith::room_before_critical(self.usage?, self.limit?),
                self.unit
            )),
            _ => None,
        }
    }
}

/// A quota over 50 % used, with what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// `warning` (over 50 %) or `critical` (over 80 %).
    pub severity: &'static str,
    pub code: String,
    pub quota: String,
    pub name: String,
    pub usage: f64,
    pub limit: f64,
    pub percent: Option<f64>,
    /// The value to ask for; none for a warning (the quota is not critical yet).
    pub recommended_value: Option<f64>,
    pub recommendation: String,
}

impl Alert {
    /// The alert for `r`, when it is over 50 % used.
    pub fn of(r: &QuotaRow) -> Option<Alert> {
        let severity = match r.status {
            Status::Critical => "critical",
            Status::Warning => "warning",
            _ => return None,
        };
        Some(Alert {
            severity,
            code: r.code.clone(),
            quota: r.quota.clone(),
            name: r.name.clone(),
            usage: r.usage?,
            limit: r.limit?,
            percent: r.percent,
            recommended_value: r.recommended_value,
            recommendation: r.recommendation()?,
        })
    }
}

/// The alerts of every row over 50 % used, in the rows' order.
pub fn alerts(rows: &[QuotaRow]) -> Vec<Alert> {
    rows.iter().filter_map(Alert::of).collect()
}

/// Usage of each vCPU class and of gp3 storage, by what the account runs.
/// Every pending or running instance of the region, and the vCPUs of their types.
async fn running(
    cloud: &dyn Cloud,
    policy: &RetryPolicy,
) -> Result<(Vec<crate::cloud::Instance>, BTreeMap<String, u32>), CloudError> {
    let running = InstanceFilter {
        tag_keys: vec![],
        tags: vec![],
        states: vec![InstanceState::Pending, InstanceState::Running],
        ..Default::default()
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
    Ok((instances, vcpus))
}

/// One count per instance, with its type and lifecycle, for the vCPU arithmetic.
fn counts(instances: &[crate::cloud::Instance]) -> Vec<(&str, Option<&str>, u32)> {
    instances
        .iter()
        .map(|i| (i.instance_type.as_str(), i.lifecycle.as_deref(), 1))
        .collect()
}

async fn usage(
    cloud: &dyn Cloud,
    policy: &RetryPolicy,
) -> Result<BTreeMap<&'static str, Result<f64, String>>, CloudError> {
    let (instances, vcpus) = running(cloud, policy).await?;
    let counts = counts(&instances);
    let mut by_code: BTreeMap<&'static str, Result<f64, String>> = super::all()
        .filter(|c| c.unit == "vCPUs")
        .map(|class| {
            let used = arith::vcpus_in_use(class, counts.iter().copied(), &vcpus)
                .map(f64::from)
                .map_err(|unknown| format!("vCPUs of {} unknown", unknown.join(", ")));
            (class.code, used)
        })
        .collect();
    let gp3 = retry::call(policy, || cloud.describe_volumes(Some("gp3")))
        .await
        .map(|vs| vs.iter().map(|v| v.size_gib).sum::<u64>() as f64 / 1024.0)
        .map_err(|e| e.to_string());
    by_code.insert(EBS_GP3.code, gp3);
    Ok(by_code)
}

/// vCPUs left in each of `classes` now: the quota's value less what every pending or
/// running instance of the region uses, read afresh (one DescribeInstances, one
/// DescribeInstanceTypes, one or two Service Quotas calls per class). A class whose
/// quota or usage cannot be read has no entry, with why.
pub async fn room(
    cloud: &dyn Cloud,
    classes: &[&'static QuotaClass],
    policy: &RetryPolicy,
) -> Result<BTreeMap<&'static str, u32>, String> {
    let (instances, vcpus) = running(cloud, policy).await.map_err(|e| e.to_string())?;
    let counts = counts(&instances);
    let mut out = BTreeMap::new();
    for class in classes {
        let used = arith::vcpus_in_use(class, counts.iter().copied(), &vcpus)
            .map_err(|unknown| format!("vCPUs of {} unknown", unknown.join(", ")))?;
        match read_quota(cloud, class, policy).await {
            QuotaReading::Known { value, .. } => {
                out.insert(class.code, arith::available(value, used));
            }
            QuotaReading::Unknown { error } => return Err(error),
        }
    }
    Ok(out)
}

/// The vCPUs `class` has in use in the region now, and its value, read afresh.
pub async fn in_use(
    cloud: &dyn Cloud,
    class: &'static QuotaClass,
    policy: &RetryPolicy,
) -> Result<(u32, f64), String> {
    let (instances, vcpus) = running(cloud, policy).await.map_err(|e| e.to_string())?;
    let used = arith::vcpus_in_use(class, counts(&instances).iter().copied(), &vcpus)
        .map_err(|unknown| format!("vCPUs of {} unknown", unknown.join(", ")))?;
    match read_quota(cloud, class, policy).await {
        QuotaReading::Known { value, .. } => Ok((used, value)),
        QuotaReading::Unknown { error } => Err(error),
    }
}

/// Every quota prism knows, with its limit and usage.
pub async fn survey(cloud: &dyn Cloud, policy: &RetryPolicy) -> Result<Vec<QuotaRow>, CloudError> {
    let mut usage = usage(cloud, policy).await?;
    let classes: Vec<&QuotaClass> = super::all().collect();
    let readings = futures::future::join_all(
        classes
            .iter()
            .map(|c| read_quota_adjustable(cloud, c, policy)),
    )
    .await;
    Ok(classes
        .into_iter()
        .zip(readings)
        .map(|(class, reading)| {
            let used = usage
                .remove(class.code)
                .unwrap_or_else(|| Err("not counted".into()));
            QuotaRow::new(class, reading, used)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::STANDARD;

    fn row(usage: f64, limit: f64) -> QuotaRow {
        QuotaRow::new(
            &STANDARD,
            (
                QuotaReading::Known {
                    value: limit,
                    applied: true,
                },
                Some(true),
            ),
            Ok(usage),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn room_is_the_quota_less_what_the_whole_region_runs() {
        use crate::cloud::fake::FakeCloud;
        let instance = |id: &str, t: &str, state| crate::cloud::Instance {
            id: id.into(),
            instance_type: t.into(),
            image_id: "ami-1".into(),
            state,
            availability_zone: None,
            launch_time: None,
            first_launch_time: None,
            tags: BTreeMap::new(),
            lifecycle: None,
            hibernated: false,
            hibernation: false,
        };
        let cloud = FakeCloud {
            vcpus: BTreeMap::from([("t3.xlarge".into(), 4), ("g5.xlarge".into(), 4)]),
            applied: BTreeMap::from([("L-1216C47A".into(), 32.0)]),
            defaults: BTreeMap::from([("L-DB2E81BA".into(), 8.0)]),
            instances: std::sync::Mutex::new(vec![
                instance("i-1", "t3.xlarge", InstanceState::Running),
                instance("i-2", "t3.xlarge", InstanceState::Pending),
                instance("i-3", "t3.xlarge", InstanceState::Stopped),
                instance("i-4", "g5.xlarge", InstanceState::Running),
            ]),
            ..FakeCloud::default()
        };
        let gpu = crate::quota::by_name("L-DB2E81BA").unwrap();
        let room = room(&cloud, &[&STANDARD, gpu], &RetryPolicy::default())
            .await
            .unwrap();
        assert_eq!(
            room,
            BTreeMap::from([("L-1216C47A", 24), ("L-DB2E81BA", 4)])
        );
    }

    #[test]
    fn rows_recommend_what_the_arithmetic_says() {
        let critical = row(28.0, 32.0);
        assert_eq!(critical.status, Status::Critical);
        assert_eq!(critical.recommended_value, Some(35.0));
        let text = critical.recommendation().unwrap();
        assert!(
            text.contains("prism quota request --quota on-demand-vcpus --desired-value 35"),
            "{text}"
        );
        let warning = row(24.0, 32.0);
        assert_eq!(warning.recommended_value, None);
        assert!(
            warning
                .recommendation()
                .unwrap()
                .contains("1 vCPUs more can be used before it turns critical")
        );
        assert_eq!(row(8.0, 32.0).recommendation(), None);
    }
}

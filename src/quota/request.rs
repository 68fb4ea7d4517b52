//! Quota increase requests as prism shows them: the same fields in the tables and in
//! JSON, dates as RFC 3339, the quota named as everywhere else in prism.

use serde::Serialize;

use super::{QuotaClass, QuotaReading, read_quota};
use crate::cloud::{Cloud, CloudError, QuotaRequest};
use crate::manifest::RetryPolicy;

/// One quota increase request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRow {
    /// "Request ID".
    pub request_id: String,
    /// The name `prism quota request --quota` accepts; none for a quota prism does not know.
    pub quota: Option<String>,
    /// The quota's name as `quota show` and plans give it (AWS's for others).
    pub name: String,
    pub service: String,
    pub code: String,
    pub desired_value: f64,
    pub status: String,
    /// When the request was made, RFC 3339 (UTC); "Submitted".
    pub submitted: Option<String>,
    /// When its status last changed, RFC 3339 (UTC).
    pub last_updated: Option<String>,
    /// The AWS support case AWS opened for it, if any.
    pub support_case: Option<String>,
}

impl From<&QuotaRequest> for RequestRow {
    fn from(r: &QuotaRequest) -> Self {
        let class = super::by_name(&r.code);
        RequestRow {
            request_id: r.id.clone(),
            quota: class.map(|c| c.friendly.to_string()),
            name: class.map_or_else(|| r.name.clone(), |c| c.name.to_string()),
            service: r.service.clone(),
            code: r.code.clone(),
            desired_value: r.desired_value,
            status: r.status.clone(),
            submitted: r.created.and_then(rfc3339),
            last_updated: r.last_updated.and_then(rfc3339),
            support_case: r.case_id.clone().filter(|c| !c.is_empty()),
        }
    }
}

/// Requests for EC2 and EBS quotas, newest first; only those in `status` when given.
pub async fn list(cloud: &dyn Cloud, status: Option<&str>) -> Result<Vec<RequestRow>, CloudError> {
    let mut all = Vec::new();
    for service in ["ec2", "ebs"] {
        all.extend(cloud.list_quota_requests(service, status).await?);
    }
    all.sort_by_key(|r| std::cmp::Reverse(r.created));
    Ok(all.iter().map(RequestRow::from).collect())
}

/// Why an increase cannot be asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotAsked {
    #[error("cannot read the current value: {0}")]
    Unreadable(String),
    #[error("the desired value ({desired}) must be above the current {current} {unit} of {name}", desired = number(*.desired), current = number(*.current))]
    NotAbove {
        desired: f64,
        current: f64,
        unit: &'static str,
        name: &'static str,
    },
}

/// A value as prism prints it: whole numbers without decimals, others with two.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.2}")
    }
}

/// The quota's current value, when `desired` is above it (an increase can be asked).
pub async fn current_below(
    cloud: &dyn Cloud,
    class: &QuotaClass,
    desired: f64,
    policy: &RetryPolicy,
) -> Result<f64, NotAsked> {
    let current = match read_quota(cloud, class, policy).await {
        QuotaReading::Known { value, .. } => value,
        QuotaReading::Unknown { error } => return Err(NotAsked::Unreadable(error)),
    };
    if desired.is_nan() || desired <= current {
        return Err(NotAsked::NotAbove {
            desired,
            current,
            unit: class.unit,
            name: class.name,
        });
    }
    Ok(current)
}

/// Seconds since the Unix epoch as RFC 3339 in UTC, e.g. `2026-03-01T09:30:00Z`.
pub fn rfc3339(epoch_seconds: i64) -> Option<String> {
    let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(
        u64::try_from(epoch_seconds).ok()?,
    ))?;
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_name_the_quota_as_prism_does_and_date_in_rfc3339() {
        let request = QuotaRequest {
            id: "abc".into(),
            service: "ec2".into(),
            code: "L-1216C47A".into(),
            name: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances".into(),
            desired_value: 70.0,
            status: "PENDING".into(),
            created: Some(1_772_357_400),
            last_updated: None,
            case_id: Some(String::new()),
        };
        let row = RequestRow::from(&request);
        assert_eq!(row.name, "On-Demand Standard (A, C, D, H, I, M, R, T, Z)");
        assert_eq!(row.quota.as_deref(), Some("on-demand-vcpus"));
        assert_eq!(row.submitted.as_deref(), Some("2026-03-01T09:30:00Z"));
        assert_eq!(row.last_updated, None);
        assert_eq!(row.support_case, None);
        let other = RequestRow::from(&QuotaRequest {
            code: "L-0263D0A3".into(),
            name: "EC2-VPC Elastic IPs".into(),
            ..request
        });
        assert_eq!(
            (other.name.as_str(), other.quota),
            ("EC2-VPC Elastic IPs", None)
        );
    }
}

//! Reading a quota's value from Service Quotas.

use serde::{Deserialize, Serialize};

use super::QuotaClass;
use crate::cloud::Cloud;
use crate::manifest::RetryPolicy;
use crate::retry;

/// A quota value, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum QuotaReading {
    /// The quota's value; `applied` is false when it is AWS's default.
    Known { value: f64, applied: bool },
    /// The quota could not be read; it is shown as unknown.
    Unknown { error: String },
}

impl QuotaReading {
    /// The value, when known.
    pub fn value(&self) -> Option<f64> {
        match self {
            QuotaReading::Known { value, .. } => Some(*value),
            QuotaReading::Unknown { .. } => None,
        }
    }
}

/// The applied quota value, falling back to AWS's default when none was ever applied.
/// Both reads are retried alike.
pub async fn read_quota(
    cloud: &dyn Cloud,
    class: &QuotaClass,
    policy: &RetryPolicy,
) -> QuotaReading {
    read_quota_adjustable(cloud, class, policy).await.0
}

/// [`read_quota`], and whether AWS takes increase requests for the quota (None when
/// it could not be read).
pub async fn read_quota_adjustable(
    cloud: &dyn Cloud,
    class: &QuotaClass,
    policy: &RetryPolicy,
) -> (QuotaReading, Option<bool>) {
    let applied = retry::call(policy, || {
        cloud.get_service_quota(class.service, class.code)
    })
    .await;
    let reading = match applied {
        Ok(Some(q)) => Ok((q.value, true, q.adjustable)),
        Ok(None) => retry::call(policy, || {
            cloud.get_default_service_quota(class.service, class.code)
        })
        .await
        .map(|q| (q.value, false, q.adjustable)),
        Err(e) => Err(e),
    };
    match reading {
        Ok((value, applied, adjustable)) => {
            (QuotaReading::Known { value, applied }, Some(adjustable))
        }
        Err(e) => (
            QuotaReading::Unknown {
                error: e.to_string(),
            },
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cloud::CloudError;
    use crate::cloud::fake::FakeCloud;

    fn throttled(operation: &'static str) -> CloudError {
        CloudError::service(
            operation,
            Some("ThrottlingException"),
            "slow down",
            Some(400),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_read_is_retried_like_the_first() {
        let cloud = FakeCloud {
            defaults: BTreeMap::from([("L-1216C47A".into(), 32.0)]),
            ..FakeCloud::default()
        };
        cloud.fail_next("GetServiceQuota", vec![throttled("GetServiceQuota")]);
        cloud.fail_next(
            "GetAWSDefaultServiceQuota",
            vec![
                throttled("GetAWSDefaultServiceQuota"),
                throttled("GetAWSDefaultServiceQuota"),
            ],
        );
        let reading = read_quota(&cloud, &super::super::STANDARD, &RetryPolicy::default()).await;
        assert_eq!(
            reading,
            QuotaReading::Known {
                value: 32.0,
                applied: false
            }
        );
        let calls = cloud.calls.lock().unwrap().clone();
        assert_eq!(calls.get("GetServiceQuota"), Some(&2));
        assert_eq!(calls.get("GetAWSDefaultServiceQuota"), Some(&3));
    }
}

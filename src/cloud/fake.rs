//! An in-memory [`Cloud`] for unit tests: state you set, calls it counts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Cloud, CloudError, Image, Instance, InstanceFilter, QuotaValue};

/// A cloud held in memory.
#[derive(Debug, Default)]
pub struct FakeCloud {
    pub region: String,
    pub instances: Mutex<Vec<Instance>>,
    pub vcpus: BTreeMap<String, u32>,
    /// Applied quota values by code; codes absent here answer with the default.
    pub applied: BTreeMap<String, f64>,
    pub defaults: BTreeMap<String, f64>,
    pub images: BTreeMap<String, Vec<Image>>,
    /// Number of calls per API name.
    pub calls: Mutex<BTreeMap<&'static str, usize>>,
}

impl FakeCloud {
    fn count(&self, api: &'static str) {
        *self.calls.lock().unwrap().entry(api).or_default() += 1;
    }

    /// How many times `api` was called.
    pub fn calls_to(&self, api: &str) -> usize {
        self.calls.lock().unwrap().get(api).copied().unwrap_or(0)
    }

    fn quota(service: &str, code: &str, value: f64) -> QuotaValue {
        QuotaValue {
            service: service.into(),
            code: code.into(),
            name: code.into(),
            value,
        }
    }
}

fn matches(i: &Instance, f: &InstanceFilter) -> bool {
    f.tags.iter().all(|(k, v)| i.tag(k) == Some(v.as_str()))
        && (f.states.is_empty() || f.states.contains(&i.state))
}

#[async_trait]
impl Cloud for FakeCloud {
    fn region(&self) -> &str {
        &self.region
    }

    async fn describe_instances(&self, f: &InstanceFilter) -> Result<Vec<Instance>, CloudError> {
        self.count("DescribeInstances");
        let all = self.instances.lock().unwrap();
        Ok(all.iter().filter(|i| matches(i, f)).cloned().collect())
    }

    async fn instance_type_vcpus(
        &self,
        types: &[String],
    ) -> Result<BTreeMap<String, u32>, CloudError> {
        self.count("DescribeInstanceTypes");
        Ok(types
            .iter()
            .filter_map(|t| Some((t.clone(), *self.vcpus.get(t)?)))
            .collect())
    }

    async fn get_service_quota(
        &self,
        service: &str,
        code: &str,
    ) -> Result<Option<QuotaValue>, CloudError> {
        self.count("GetServiceQuota");
        Ok(self
            .applied
            .get(code)
            .map(|v| Self::quota(service, code, *v)))
    }

    async fn get_default_service_quota(
        &self,
        service: &str,
        code: &str,
    ) -> Result<QuotaValue, CloudError> {
        self.count("GetAWSDefaultServiceQuota");
        self.defaults
            .get(code)
            .map(|v| Self::quota(service, code, *v))
            .ok_or_else(|| {
                CloudError::service(
                    "GetAWSDefaultServiceQuota",
                    Some("NoSuchResourceException"),
                    code,
                    Some(400),
                )
            })
    }

    async fn find_images(&self, owner: &str, name_pattern: &str) -> Result<Vec<Image>, CloudError> {
        self.count("DescribeImages");
        let prefix = name_pattern.trim_end_matches('*');
        Ok(self
            .images
            .get(owner)
            .map(|imgs| {
                imgs.iter()
                    .filter(|i| i.name.starts_with(prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}

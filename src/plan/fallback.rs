//! The template's fallback types: launched, in order, when the type before is sold out
//! in every zone. Each is checked against its own quota class, as if every launch of
//! the plan fell back to it.

use serde::{Deserialize, Serialize};

use super::{Action, ActionKind, QuotaCheck, Warning, WarningKind};
use crate::manifest::Manifest;
use crate::observe::Observed;
use crate::quota;

/// One fallback type against its quota class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FallbackCheck {
    pub instance_type: String,
    /// vCPUs of the type; unknown when the region does not offer it.
    pub vcpus: Option<u32>,
    /// The Service Quotas code of its class.
    pub quota_code: String,
    pub quota_name: String,
    /// The plan's launches, all of which could fall back to it.
    pub launches: usize,
    /// vCPUs those launches need on this type.
    pub needed: Option<u32>,
    /// vCPUs of its class left for them: the class's available vCPUs less what the
    /// plan's other actions in the class need.
    pub available: Option<u32>,
    /// Whether every launch fits on this type; unknown when a number is.
    pub fits: Option<bool>,
}

/// Checks each fallback type of the template when the plan launches anything.
pub fn check(
    manifest: &Manifest,
    observed: &Observed,
    actions: &[Action],
    quotas: &[QuotaCheck],
) -> (Vec<FallbackCheck>, Vec<Warning>) {
    let t = &manifest.template;
    let launches = actions
        .iter()
        .filter(|a| matches!(a.action, ActionKind::Create | ActionKind::Replace))
        .count();
    if launches == 0 || t.fallback_instance_types.is_empty() {
        return (vec![], vec![]);
    }
    let own_class = quota::on_demand_class(&t.instance_type).code;
    let own_need = observed
        .vcpus
        .get(&t.instance_type)
        .map(|v| v * launches as u32);
    let mut checks = Vec::new();
    let mut warnings = Vec::new();
    for ty in &t.fallback_instance_types {
        let class = quota::on_demand_class(ty);
        let vcpus = observed.vcpus.get(ty).copied();
        let q = quotas.iter().find(|q| q.code == class.code);
        // The launches move to this type: they no longer need the template's type.
        let others = q.and_then(|q| {
            let moved = if class.code == own_class {
                own_need?
            } else {
                0
            };
            q.unknown_types
                .is_empty()
                .then(|| q.needed.saturating_sub(moved))
        });
        let available = q
            .and_then(|q| q.available)
            .zip(others)
            .map(|(a, o)| a.saturating_sub(o));
        let needed = vcpus.map(|v| v * launches as u32);
        let check = FallbackCheck {
            instance_type: ty.clone(),
            vcpus,
            quota_code: class.code.into(),
            quota_name: class.name.into(),
            launches,
            needed,
            available,
            fits: needed.zip(available).map(|(n, a)| n <= a),
        };
        if vcpus.is_none() {
            warnings.push(Warning {
                kind: WarningKind::UnknownInstanceType,
                message: format!(
                    "fallback instance type {ty} is not offered in {}: launches that fall back to it will fail",
                    observed.region
                ),
                options: vec![format!(
                    "check the spelling of `fallback_instance_types` in template {}",
                    t.name
                )],
            });
        } else if let (Some(false), Some(q)) = (check.fits, q) {
            let after = q
                .usage
                .zip(others)
                .map(|(u, o)| u + o + needed.unwrap_or(0));
            warnings.push(shortfall(manifest, observed, &check, after, q.limit));
        }
        checks.push(check);
    }
    (checks, warnings)
}

/// "Only 3 of 10 launches fit … on fallback type …", with what to do; `after` is the
/// class's usage were every launch on this type.
fn shortfall(
    manifest: &Manifest,
    observed: &Observed,
    c: &FallbackCheck,
    after: Option<u32>,
    limit: Option<f64>,
) -> Warning {
    let (needed, available) = (c.needed.unwrap_or(0), c.available.unwrap_or(0));
    let fit = c.vcpus.map_or(0, |v| available / v.max(1));
    let mut options = vec![];
    let desired = after.and_then(|a| quota::arith::recommended_value(f64::from(a), limit));
    if let (Some(class), Some(v)) = (quota::by_name(&c.quota_code), desired) {
        options.push(format!(
            "request a quota increase: {}",
            quota::arith::request_command(class, v, Some(&observed.region))
        ));
    }
    options.push(format!(
        "list a fallback type of another quota class in template {}",
        manifest.template.name
    ));
    Warning {
        kind: WarningKind::FallbackQuotaShortfall,
        message: format!(
            "If {} is sold out in every zone, only {fit} of {} launches fit the {} quota on fallback type {} (needs {needed} vCPUs, {available} available)",
            manifest.template.instance_type, c.launches, c.quota_name, c.instance_type
        ),
        options,
    }
}

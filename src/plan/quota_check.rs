//! Does the plan fit the account's vCPU quotas? Per quota class: the vCPUs the plan's
//! launches and starts need, against the limit less what the whole account uses. The
//! arithmetic is [`crate::quota::arith`]'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Action, ActionKind, Warning};
use crate::manifest::Manifest;
use crate::observe::{Observed, QuotaReading};
use crate::quota::arith::{self, Status};
use crate::quota::{self, QuotaClass};

/// One quota class against the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaCheck {
    /// Service Quotas code, e.g. `L-1216C47A`.
    pub code: String,
    pub name: String,
    /// The name `prism quota request --quota` accepts.
    pub quota: String,
    /// The quota's value in vCPUs; unknown when it could not be read.
    pub limit: Option<f64>,
    /// vCPUs of every pending or running instance in the region in this class.
    pub usage: Option<u32>,
    /// vCPUs the plan's creates, starts and replacements need, and what its resizes
    /// add, of the types whose vCPUs are known (see `unknown_types`).
    pub needed: u32,
    /// Instance types of the plan's launches whose vCPUs are unknown: the need, and
    /// whether it fits, are then unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_types: Vec<String>,
    /// `limit − usage`, never below zero.
    pub available: Option<u32>,
    /// Whether `needed` fits in `available`; unknown when either is.
    pub fits: Option<bool>,
    /// The quota value to ask for when the usage after this plan would be over 80 %
    /// (critical) or over the limit; none when the current value is enough.
    #[serde(default)]
    pub recommended_value: Option<f64>,
    /// Workspaces (in plan order) whose launch or start does not fit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub over_quota: Vec<String>,
}

impl QuotaCheck {
    /// vCPUs in use once the plan's launches are done, when known.
    pub fn usage_after(&self) -> Option<u32> {
        match (self.usage, self.unknown_types.is_empty()) {
            (Some(u), true) => Some(u + self.needed),
            _ => None,
        }
    }
}

/// Checks each quota class the plan touches (or that was read) and warns on shortfalls.
pub fn check(
    manifest: &Manifest,
    observed: &Observed,
    actions: &[Action],
) -> (Vec<QuotaCheck>, Vec<Warning>) {
    let mut by_class: BTreeMap<&'static str, Vec<&Action>> = BTreeMap::new();
    for a in actions.iter().filter(|a| a.needs_quota()) {
        by_class
            .entry(quota::on_demand_class(&a.instance_type).code)
            .or_default()
            .push(a);
    }
    for code in observed.quotas.keys() {
        if let Some(class) = quota::by_name(code) {
            by_class.entry(class.code).or_default();
        }
    }
    let mut checks = Vec::new();
    let mut warnings = Vec::new();
    for (code, class_actions) in by_class {
        let class = quota::by_name(code).expect("a known class");
        let check = check_class(class, observed, &class_actions);
        if let Some(QuotaReading::Unknown { error }) = observed.quotas.get(code) {
            warnings.push(Warning {
                kind: super::WarningKind::QuotaUnknown,
                message: format!("the {} quota could not be read, so it was not checked: {error}", class.name),
                options: vec!["allow servicequotas:GetServiceQuota and servicequotas:GetAWSDefaultServiceQuota".into()],
            });
        }
        if check.fits == Some(false) {
            warnings.push(shortfall(manifest, observed, class, &check, &class_actions));
        } else if let Some(w) = high(observed, class, &check) {
            warnings.push(w);
        }
        checks.push(check);
    }
    (checks, warnings)
}

fn check_class(class: &QuotaClass, observed: &Observed, actions: &[&Action]) -> QuotaCheck {
    let needed = actions.iter().filter_map(|a| a.added_vcpus()).sum();
    let mut unknown_types: Vec<String> = actions
        .iter()
        .filter(|a| a.added_vcpus().is_none())
        .map(|a| a.instance_type.clone())
        .collect();
    unknown_types.sort();
    unknown_types.dedup();
    let counts = observed
        .account_running
        .iter()
        .map(|(t, n)| (t.as_str(), None, *n));
    let usage = arith::vcpus_in_use(class, counts, &observed.vcpus).ok();
    let limit = observed
        .quotas
        .get(class.code)
        .and_then(QuotaReading::value);
    let available = match (limit, usage) {
        (Some(l), Some(u)) => Some(arith::available(l, u)),
        _ => None,
    };
    let mut check = QuotaCheck {
        code: class.code.into(),
        name: class.name.into(),
        quota: class.friendly.into(),
        limit,
        usage,
        needed,
        fits: available
            .filter(|_| unknown_types.is_empty())
            .map(|a| needed <= a),
        available,
        unknown_types,
        recommended_value: None,
        over_quota: available.map_or_else(Vec::new, |a| over(actions, a)),
    };
    check.recommended_value = check
        .usage_after()
        .and_then(|after| arith::recommended_value(f64::from(after), limit));
    check
}

/// The actions, in order, that do not fit in `available` vCPUs.
fn over(actions: &[&Action], available: u32) -> Vec<String> {
    let mut used = 0;
    actions
        .iter()
        .skip_while(|a| {
            used += a.added_vcpus().unwrap_or(0);
            used <= available
        })
        .map(|a| a.workspace.clone())
        .collect()
}

/// "The … quota would be 100% used after this plan": a quota left critical.
fn high(observed: &Observed, class: &QuotaClass, check: &QuotaCheck) -> Option<Warning> {
    let limit = check.limit?;
    let usage = check.usage?;
    let after = check.usage_after()?;
    if Status::of(Some(f64::from(after)), Some(limit)) != Status::Critical {
        return None;
    }
    let percent = |u: u32| arith::percent(Some(f64::from(u)), Some(limit)).unwrap_or(100.0);
    let mut message = format!(
        "❌ The {} quota is {:.0}% used ({usage}/{limit} vCPUs) in {}",
        class.name,
        percent(usage),
        observed.region
    );
    if check.needed > 0 {
        message.push_str(&format!(
            "; after this plan it is {:.0}% used ({after}/{limit} vCPUs)",
            percent(after)
        ));
    }
    Some(Warning {
        kind: super::WarningKind::QuotaHigh,
        message,
        options: vec![arith::request_command(
            class,
            check.recommended_value?,
            Some(&observed.region),
        )],
    })
}

/// "Only 4 of 10 new workspaces fit …", with what the user can do about it.
fn shortfall(
    manifest: &Manifest,
    observed: &Observed,
    class: &QuotaClass,
    check: &QuotaCheck,
    actions: &[&Action],
) -> Warning {
    let available = check.available.unwrap_or(0);
    let wanted = actions.len();
    let fit = wanted - check.over_quota.len();
    let all_new = actions.iter().all(|a| a.action == ActionKind::Create);
    let what = if all_new {
        "new workspaces"
    } else {
        "workspaces to launch or start"
    };
    let limit = check.limit.unwrap_or(0.0);
    let types: Vec<&str> = actions.iter().map(|a| a.instance_type.as_str()).collect();
    let mut options = Vec::new();
    if let Some(desired) = check.recommended_value {
        options.push(format!(
            "request a quota increase: {} --reason \"{}: {wanted} workspaces × {} ({} vCPUs)\" --manifest {}",
            arith::request_command(class, desired, Some(&observed.region)),
            manifest.name,
            types[0],
            check.needed,
            manifest.source.display()
        ));
    }
    let per_workspace = available / u32::try_from(wanted).unwrap_or(u32::MAX).max(1);
    if per_workspace >= 1 {
        options.push(format!(
            "use a smaller instance type: at most {per_workspace} vCPU{} each lets all {wanted} fit",
            if per_workspace == 1 { "" } else { "s" }
        ));
    }
    let total = manifest.workspaces.len().saturating_sub(wanted) + fit;
    let fewer = format!(
        "launch fewer workspaces: {total} of {} fit in total",
        manifest.workspaces.len()
    );
    options.push(fewer);
    options.push(format!(
        "launch the rest as soon as there is room: `prism watch {0}`, or `prism apply {0} --wait-for-quota 72h`",
        manifest.source.display()
    ));
    Warning {
        kind: super::WarningKind::QuotaShortfall,
        message: format!(
            "Only {fit} of {wanted} {what} fit the {} quota (needs {} vCPUs, {available} available of {limit})",
            class.name, check.needed
        ),
        options,
    }
}

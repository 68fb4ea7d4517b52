//! The error catalogue: for every AWS error prism can meet, what happened, what prism
//! does about it, and what the user can do — filled in with the context at hand.
//!
//! `docs/troubleshooting.md` is generated from [`CATALOGUE`] (`prism errors --markdown`)
//! and a test keeps the two equal.

use std::fmt::Write;

use serde::Serialize;

use crate::cloud::CloudError;
pub use crate::cloud::catalogue::{CATALOGUE, Entry, lookup};

/// What is known around an error, to fill the texts in.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub region: Option<String>,
    pub zone: Option<String>,
    pub instance_type: Option<String>,
    pub limit: Option<f64>,
    pub usage: Option<u32>,
    /// Instances in use by type: (type, count, vCPUs each), for VcpuLimitExceeded.
    pub usage_by_type: Vec<(String, u32, u32)>,
    /// The quota value to ask for ([`crate::quota::arith::recommended_value`]).
    pub recommended_value: Option<f64>,
}

impl Context {
    /// The context of a fleet's apply: its region, instance type, quota and usage. The
    /// value recommended is the one for the usage plus the launch refused (one
    /// instance of `instance_type`); [`Context::for_plan`] knows the whole need.
    pub fn from_observed(observed: &crate::observe::Observed, instance_type: &str) -> Self {
        let one = observed.vcpus.get(instance_type).copied();
        Self::with_need(observed, instance_type, one)
    }

    /// The context of a fleet's apply from its plan: the value recommended is the one
    /// the plan recommends for the class, for its usage plus everything it launches.
    pub fn for_plan(
        observed: &crate::observe::Observed,
        plan: &crate::plan::Plan,
        instance_type: &str,
    ) -> Self {
        let class = crate::quota::on_demand_class(instance_type);
        let check = plan.quota.iter().find(|q| q.code == class.code);
        let needed = match check {
            Some(q) if q.unknown_types.is_empty() => Some(q.needed),
            Some(_) => None,
            None => Some(0),
        };
        Self::with_need(observed, instance_type, needed)
    }

    fn with_need(
        observed: &crate::observe::Observed,
        instance_type: &str,
        needed: Option<u32>,
    ) -> Self {
        let class = crate::quota::on_demand_class(instance_type);
        let usage_by_type: Vec<(String, u32, u32)> = observed
            .account_running
            .iter()
            .filter(|(t, _)| crate::quota::on_demand_class(t).code == class.code)
            .filter_map(|(t, n)| Some((t.clone(), *n, *observed.vcpus.get(t)?)))
            .collect();
        let counts = observed
            .account_running
            .iter()
            .map(|(t, n)| (t.as_str(), None, *n));
        let usage = crate::quota::arith::vcpus_in_use(class, counts, &observed.vcpus).ok();
        let limit = observed
            .quotas
            .get(class.code)
            .and_then(crate::quota::QuotaReading::value);
        let recommended_value = match (usage, needed) {
            (Some(u), Some(n)) => crate::quota::arith::recommended_value(f64::from(u + n), limit),
            _ => None,
        };
        Context {
            region: Some(observed.region.clone()),
            zone: None,
            instance_type: Some(instance_type.to_string()),
            limit,
            usage,
            usage_by_type,
            recommended_value,
        }
    }
}

/// An error explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explained {
    pub code: String,
    pub title: String,
    pub what_happened: String,
    pub what_prism_does: String,
    pub what_you_can_do: String,
}

fn fill(text: &str, err: &CloudError, ctx: &Context) -> String {
    let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
    text.replace("{region}", &or(&ctx.region, "the region"))
        .replace("{zone}", &or(&ctx.zone, "the availability zone AWS chose"))
        .replace(
            "{instance_type}",
            &or(&ctx.instance_type, "this instance type"),
        )
        .replace("{limit}", &ctx.limit.map_or("?".into(), |l| format!("{l}")))
        .replace("{usage}", &ctx.usage.map_or("?".into(), |u| u.to_string()))
        .replace(
            "{quota}",
            ctx.instance_type.as_deref().map_or("on-demand-vcpus", |t| {
                crate::quota::on_demand_class(t).friendly
            }),
        )
        .replace(
            "{desired_value}",
            &ctx.recommended_value.map_or("N".into(), |v| format!("{v}")),
        )
        .replace("{operation}", err.operation)
        .replace("{message}", &err.message)
}

/// Explains `err`; an unknown code still shows AWS's code and message.
pub fn explain(err: &CloudError, ctx: &Context) -> Explained {
    let code = err
        .code
        .clone()
        .unwrap_or_else(|| format!("{:?}", err.class));
    let Some(entry) = lookup(&code) else {
        // Only an answer from AWS is told as one.
        let what_happened = if err.status.is_some() {
            format!(
                "AWS answered {} with {code}: {}",
                err.operation, err.message
            )
        } else {
            format!("{} failed ({code}): {}", err.operation, err.message)
        };
        return Explained {
            title: format!("{} failed: {code}", err.operation),
            what_happened,
            what_prism_does: match err.class {
                crate::cloud::ErrorClass::Permanent => "prism does not retry this error.".into(),
                _ => "prism retries with backoff.".into(),
            },
            what_you_can_do: "Read AWS's message above; fix the cause and run the command again."
                .into(),
            code,
        };
    };
    let mut what_happened = fill(entry.what_happened, err, ctx);
    if code == "VcpuLimitExceeded" && !ctx.usage_by_type.is_empty() {
        what_happened.push_str("\nCurrent usage:");
        for (t, n, v) in &ctx.usage_by_type {
            let _ = write!(what_happened, "\n- {n}× {t} ({} vCPUs total)", n * v);
        }
        let _ = write!(
            what_happened,
            "\n= {} vCPUs used / {} limit",
            ctx.usage.map_or("?".into(), |u| u.to_string()),
            ctx.limit.map_or("?".into(), |l| format!("{l}"))
        );
    }
    Explained {
        code,
        title: fill(entry.title, err, ctx),
        what_happened,
        what_prism_does: fill(entry.what_prism_does, err, ctx),
        what_you_can_do: fill(entry.what_you_can_do, err, ctx),
    }
}

/// Explains a failure that happened before any call (a setting, a bug), by its code.
pub fn explain_setting(code: &str, message: &str, region: Option<&str>) -> Explained {
    let err = CloudError::transport(
        "configuration",
        crate::cloud::Transport::Local,
        code,
        message,
    );
    let ctx = Context {
        region: region.map(str::to_string),
        ..Context::default()
    };
    explain(&err, &ctx)
}

/// The explanation as text.
pub fn render(e: &Explained) -> String {
    format!(
        "❌ {} [{}]\n\nWhat happened: {}\nWhat prism does: {}\nWhat you can do: {}\n",
        e.title, e.code, e.what_happened, e.what_prism_does, e.what_you_can_do
    )
}

/// The catalogue as Markdown, for docs/troubleshooting.md.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Troubleshooting\n\nEvery AWS error prism knows, what it means, what prism does about it, and what you can do.\nThis page is generated from prism's error catalogue (`prism errors --markdown`); words in braces are filled in from the situation at hand.\n",
    );
    for e in CATALOGUE {
        let codes: Vec<String> = e.codes.iter().map(|c| format!("`{c}`")).collect();
        let _ = write!(
            out,
            "\n## {}\n\nCodes: {}\n\n- **What happened:** {}\n- **What prism does:** {}\n- **What you can do:** {}\n",
            e.title,
            codes.join(", "),
            e.what_happened,
            e.what_prism_does,
            e.what_you_can_do
        );
    }
    out
}

#[cfg(test)]
mod tests;

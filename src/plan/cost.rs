//! The estimated compute cost of a fleet: a small table of On-Demand prices, and a
//! week's running hours, on its schedule and always on.

use serde::{Deserialize, Serialize};

use crate::manifest::{DesiredState, Manifest};

/// Hourly On-Demand Linux prices in us-east-1 (USD) for common types: an estimate.
const PRICES: &[(&str, f64)] = &[
    ("t3.micro", 0.0104),
    ("t3.small", 0.0208),
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
    ("t3.xlarge", 0.1664),
    ("t3.2xlarge", 0.3328),
    ("m5.large", 0.096),
    ("m5.xlarge", 0.192),
    ("m5.2xlarge", 0.384),
    ("c5.large", 0.085),
    ("c5.xlarge", 0.17),
    ("r5.large", 0.126),
    ("r5.xlarge", 0.252),
    ("g4dn.xlarge", 0.526),
    ("g5.xlarge", 1.006),
    ("p3.2xlarge", 3.06),
];

/// What the prices are, as plans and listings say it.
pub const PRICE_SOURCE: &str = "us-east-1 On-Demand Linux prices";

/// The hourly price of `instance_type`, when the table has it.
pub fn hourly_usd(instance_type: &str) -> Option<f64> {
    PRICES
        .iter()
        .find(|(t, _)| *t == instance_type)
        .map(|(_, p)| *p)
}

/// gp3 storage, USD per GiB-month in us-east-1: what a kept disk costs.
pub const EBS_GIB_MONTH_USD: f64 = 0.08;

/// EBS snapshot storage (standard tier), USD per GiB-month in us-east-1, at most: a
/// snapshot stores only the blocks written, so it usually costs less.
pub const SNAPSHOT_GIB_MONTH_USD: f64 = 0.05;

/// Days in an average month, as AWS bills GiB-months.
pub const MONTH_DAYS: f64 = 30.44;

/// Hours in a week.
pub const WEEK_HOURS: f64 = 168.0;

/// A fleet's estimated compute cost per week (disks and traffic not counted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub instance_type: String,
    pub workspaces: usize,
    /// None when the price table has no price for the type.
    pub hourly_usd: Option<f64>,
    /// Hours a workspace runs in a week, by the schedule (or the fleet's state).
    pub running_hours_per_week: f64,
    pub per_week_usd: Option<f64>,
    /// The same fleet running all week.
    pub always_on_per_week_usd: Option<f64>,
    /// Where the prices come from.
    pub source: String,
}

fn cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The weekly cost of `manifest`'s fleet, running as its schedule (or state) says.
pub fn weekly(manifest: &Manifest) -> Cost {
    let hours = match (&manifest.schedule, manifest.state) {
        (Some(s), _) => s.hours_per_week(),
        (None, DesiredState::Running) => WEEK_HOURS,
        (None, DesiredState::Stopped) => 0.0,
    };
    let t = &manifest.template.instance_type;
    let price = hourly_usd(t);
    let n = manifest.workspaces.len() as f64;
    Cost {
        instance_type: t.clone(),
        workspaces: manifest.workspaces.len(),
        hourly_usd: price,
        running_hours_per_week: hours,
        per_week_usd: price.map(|p| cents(p * hours * n)),
        always_on_per_week_usd: price.map(|p| cents(p * WEEK_HOURS * n)),
        source: PRICE_SOURCE.into(),
    }
}

//! The workspaces of an account as every front door lists them: `prism workspace list`
//! and serve's `/api/v1/workspaces` show the same rows.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::cloud::{Cloud, CloudError, Instance, InstanceFilter, InstanceState, tags};
use crate::manifest::RetryPolicy;

/// The states a listing may be narrowed to.
pub const LIST_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];

/// A workspace as listings show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceRow {
    pub name: String,
    pub status: String,
    pub instance_type: String,
    /// Estimated On-Demand cost per day while running; None for types not in the table.
    pub daily_cost: Option<f64>,
    /// Time since the instance last started, e.g. `2h15m`; None when not running.
    pub uptime: Option<String>,
    pub fleet: String,
    pub project: Option<String>,
    pub instance_id: String,
    pub availability_zone: Option<String>,
    /// The next change the fleet's schedule makes (with `--manifest`), e.g.
    /// `stopped at Wed 2026-12-02 12:15 CST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_change: Option<String>,
    /// The AWS account the workspace is in, when AWS (STS) tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The profile of the AWS configuration that reached the account, when one was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// What `i` costs per day now: its On-Demand price while running, else nothing.
pub fn daily_cost(i: &Instance) -> Option<f64> {
    if i.state != InstanceState::Running {
        return Some(0.0);
    }
    crate::plan::cost::hourly_usd(&i.instance_type).map(|p| (p * 24.0 * 100.0).round() / 100.0)
}

fn uptime(i: &Instance, now: SystemTime) -> Option<String> {
    if i.state != InstanceState::Running {
        return None;
    }
    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(i.launch_time?).ok()?);
    let s = now.duration_since(since).ok()?.as_secs();
    Some(format!("{}h{}m", s / 3600, (s % 3600) / 60))
}

/// The row of instance `i` at `now`.
pub fn row(i: &Instance, now: SystemTime) -> WorkspaceRow {
    WorkspaceRow {
        name: i.workspace().unwrap_or(&i.id).to_string(),
        status: if i.hibernated {
            "hibernated".to_string()
        } else {
            i.state.to_string()
        },
        instance_type: i.instance_type.clone(),
        daily_cost: daily_cost(i),
        uptime: uptime(i, now),
        fleet: i.tag(tags::FLEET).unwrap_or_default().to_string(),
        project: i.tag(tags::PROJECT).map(str::to_string),
        instance_id: i.id.clone(),
        availability_zone: i.availability_zone.clone(),
        next_change: None,
        account: None,
        profile: None,
    }
}

/// `rows` marked with `account`, when known.
pub fn in_account(rows: &mut [WorkspaceRow], account: Option<&crate::cloud::Account>) {
    for r in rows {
        r.account = account.map(|a| a.id.clone());
        r.profile = account.and_then(|a| a.profile.clone());
    }
}

/// Every live instance of any prism fleet, narrowed by fleet, project and state (one
/// of [`LIST_STATES`]), by workspace name.
pub async fn workspaces(
    cloud: &dyn Cloud,
    fleet: Option<&str>,
    project: Option<&str>,
    state: Option<&str>,
) -> Result<Vec<Instance>, CloudError> {
    let mut filter = InstanceFilter {
        tags: vec![],
        tag_keys: vec![tags::FLEET.to_string()],
        states: match state.and_then(InstanceState::parse) {
            Some(s) => vec![s],
            None => InstanceState::ALL
                .into_iter()
                .filter(|s| *s != InstanceState::Terminated)
                .collect(),
        },
        ..Default::default()
    };
    if let Some(f) = fleet {
        filter.tags.push((tags::FLEET.to_string(), f.to_string()));
    }
    if let Some(p) = project {
        filter.tags.push((tags::PROJECT.to_string(), p.to_string()));
    }
    let mut found = crate::retry::call(&RetryPolicy::default(), || {
        cloud.describe_instances(&filter)
    })
    .await?;
    found.sort_by(|a, b| (a.workspace(), &a.id).cmp(&(b.workspace(), &b.id)));
    Ok(found)
}

/// The rows of `workspace list`: every live workspace of any fleet, narrowed by fleet,
/// project and state.
pub async fn rows(
    cloud: &dyn Cloud,
    fleet: Option<&str>,
    project: Option<&str>,
    state: Option<&str>,
    now: SystemTime,
) -> Result<Vec<WorkspaceRow>, CloudError> {
    let found = workspaces(cloud, fleet, project, state).await?;
    let mut rows: Vec<WorkspaceRow> = found.iter().map(|i| row(i, now)).collect();
    in_account(&mut rows, cloud.account().await.as_ref());
    Ok(rows)
}

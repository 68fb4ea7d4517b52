//! What stands between a plan and its run: the quota screen (which workspaces fit, in
//! name order) and whether to ask before going ahead. Plain data; the front door
//! shows it, asks, or refuses.

use std::collections::BTreeMap;

use super::verdict::Verdict;
use crate::plan::{ActionKind, Plan, QuotaCheck};

/// Why a run needs a yes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// The plan changes the fleet.
    Changes,
    /// Not every workspace fits the quota: going ahead launches those that fit.
    Shortfall,
    /// The run terminates instances and their disks.
    Deletion,
}

impl Ask {
    /// The question to put to a person.
    pub fn question(self, deletions: usize) -> String {
        match self {
            Ask::Changes => "Apply these changes?".into(),
            Ask::Shortfall => "Proceed?".into(),
            Ask::Deletion => format!(
                "Delete {deletions} workspace{} and {} disks?",
                if deletions == 1 { "" } else { "s" },
                if deletions == 1 { "its" } else { "their" }
            ),
        }
    }
}

/// The gate of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// Workspaces the quota has no room for (the last in name order), with why.
    pub over_quota: BTreeMap<String, Verdict>,
    /// The quota classes that fall short.
    pub shortfalls: Vec<QuotaCheck>,
    /// What to ask before the run, unless the user said yes already.
    pub ask: Option<Ask>,
}

impl Gate {
    /// The gate of `plan`. `yes`: the user agreed beforehand (`--yes`, or a request).
    pub fn of(plan: &Plan, yes: bool) -> Gate {
        let over_quota = over_quota(plan);
        let shortfalls: Vec<QuotaCheck> = plan
            .quota
            .iter()
            .filter(|q| !q.over_quota.is_empty())
            .cloned()
            .collect();
        let ask = if yes || !plan.has_changes() {
            None
        } else if !shortfalls.is_empty() {
            Some(Ask::Shortfall)
        } else {
            Some(Ask::Changes)
        };
        Gate {
            over_quota,
            shortfalls,
            ask,
        }
    }

    /// The gate of imperative changes (`workspace delete` asks; the others do not).
    pub fn of_changes(kind: ActionKind, yes: bool) -> Gate {
        Gate {
            over_quota: BTreeMap::new(),
            shortfalls: vec![],
            ask: (kind == ActionKind::Delete && !yes).then_some(Ask::Deletion),
        }
    }
}

/// The workspaces whose launch, start or resize the quota has no room for, with what
/// they wait for: room in that quota.
pub fn quota_waiting(plan: &Plan) -> BTreeMap<String, Verdict> {
    plan.quota
        .iter()
        .flat_map(|q| {
            let reason = Verdict::WaitingForQuota {
                quota: q.name.clone(),
                needed: q.needed,
                free: q.available.unwrap_or(0),
            };
            q.over_quota
                .iter()
                .map(move |w| (w.clone(), reason.clone()))
        })
        .collect()
}

/// The workspaces whose launch, start or resize the quota has no room for, with why.
fn over_quota(plan: &Plan) -> BTreeMap<String, Verdict> {
    let resizes: Vec<&str> = plan
        .actions
        .iter()
        .filter(|a| a.action == ActionKind::Resize)
        .map(|a| a.workspace.as_str())
        .collect();
    plan.quota
        .iter()
        .flat_map(|q| {
            let resizes = &resizes;
            q.over_quota.iter().map(move |w| {
                let verdict = Verdict::OverQuota {
                    resize: resizes.contains(&w.as_str()),
                    quota: q.name.clone(),
                    available: q.available.unwrap_or(0),
                    needed: q.needed,
                };
                (w.clone(), verdict)
            })
        })
        .collect()
}

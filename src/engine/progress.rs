//! A run's progress as one serializable state, reduced from its events. The terminal
//! bar, the plain lines, the JSON summary and the server all read this one state.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::Report;
use crate::engine::events::{Event, Stamped};
use crate::errors::Explained;
use crate::plan::ActionKind;

pub use super::clock::duration_text;

/// Where one workspace's action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceState {
    /// Waiting for its turn.
    Queued,
    /// Held back by the launch rate limit.
    WaitingForLimiter,
    /// The quota has no room for it yet: it goes ahead when room appears.
    WaitingForQuota,
    /// A call for it is in flight (RunInstances for launches).
    Launching,
    /// A call failed and will be tried again.
    Retrying,
    /// Its instance was launched and is on its way up.
    Launched,
    /// A start, stop, hibernation, termination or resize was accepted.
    Changed,
    /// Being resized in place: stopped, its type changed, started again.
    Resizing,
    /// Its instance runs.
    Running,
    /// Its instance is stopped, as asked.
    Stopped,
    Failed,
    Skipped,
    /// Never started: the run was cancelled first.
    Cancelled,
    /// Never launched by this run, which was cancelled; another run launched it.
    LaunchedElsewhere,
}

impl WorkspaceState {
    /// Whether nothing more will happen to it in this run.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            WorkspaceState::Running
                | WorkspaceState::Stopped
                | WorkspaceState::Failed
                | WorkspaceState::Skipped
                | WorkspaceState::Cancelled
                | WorkspaceState::LaunchedElsewhere
        )
    }
}

/// One workspace in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkspaceProgress {
    pub action: ActionKind,
    pub state: WorkspaceState,
    pub instance_id: Option<String>,
    pub availability_zone: Option<String>,
    /// The type of its latest launch call: the template's, or a fallback type.
    pub instance_type: Option<String>,
    /// Calls made for it so far (retries included).
    pub attempts: u32,
    /// Why it failed, from the error catalogue.
    pub failure: Option<Explained>,
    /// Why it was skipped, or what it waits for: in JSON, its sentence, and its code
    /// beside it (`skip_reason_code`).
    #[serde(serialize_with = "super::verdict::as_text")]
    pub skip_reason: Option<super::verdict::Verdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason_code: Option<&'static str>,
}

impl WorkspaceProgress {
    fn set_skip(&mut self, reason: Option<&super::verdict::Verdict>) {
        self.skip_reason = reason.cloned();
        self.skip_reason_code = reason.map(super::verdict::Verdict::code);
    }
}

/// Counts of a run's actions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub total: usize,
    /// Calls accepted (the instance may still be on its way to its state).
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    pub not_started: usize,
    /// Waiting for room in a quota.
    pub waiting_for_quota: usize,
}

/// An instance type sold out (or not offered) in a zone, avoided by every launch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoldOut {
    pub instance_type: String,
    pub availability_zone: String,
    /// AWS's answer that marked it.
    pub code: String,
    /// Until when (seconds since the run began) launches avoid it.
    pub until_s: f64,
}

/// Where a run stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    pub fleet: String,
    /// Seconds since the run began, at the last event.
    pub elapsed_s: f64,
    pub totals: Totals,
    /// Launches per minute now (after adaptive changes); None when not paced.
    pub rate_per_minute: Option<f64>,
    /// How long the next launch waits for the limiter, from `elapsed_s`.
    pub limiter_wait_s: Option<f64>,
    /// Estimated time until the last launch is made, from `elapsed_s`.
    pub eta_s: Option<f64>,
    /// (type, zone) pairs launches avoid now, by type then zone.
    pub sold_out: Vec<SoldOut>,
    /// The run was cancelled: actions in flight finish, no new ones start.
    pub interrupted: bool,
    /// The run is over; its report.
    pub finished: bool,
    pub workspaces: BTreeMap<String, WorkspaceProgress>,
}

impl Progress {
    /// Takes one event into account.
    pub fn apply(&mut self, stamped: &Stamped) {
        let now = stamped.elapsed_s;
        // Estimates are kept as of the last event.
        let age = now - self.elapsed_s;
        self.elapsed_s = now;
        for v in [&mut self.limiter_wait_s, &mut self.eta_s] {
            *v = v.map(|s| s - age).filter(|s| *s > 0.0);
        }
        match &stamped.event {
            Event::Started {
                fleet,
                total,
                rate_per_minute,
                ..
            } => {
                self.fleet = fleet.clone();
                self.totals.total = *total;
                self.rate_per_minute = *rate_per_minute;
            }
            Event::Queued { workspace, action } => {
                self.workspaces.insert(
                    workspace.clone(),
                    WorkspaceProgress {
                        action: *action,
                        state: WorkspaceState::Queued,
                        instance_id: None,
                        availability_zone: None,
                        instance_type: None,
                        attempts: 0,
                        failure: None,
                        skip_reason: None,
                        skip_reason_code: None,
                    },
                );
            }
            Event::RateLimited {
                workspace,
                wait_s,
                eta_s,
            } => {
                self.limiter_wait_s = Some(*wait_s);
                self.eta_s = Some(*eta_s);
                self.set(workspace, WorkspaceState::WaitingForLimiter);
            }
            Event::RateChanged {
                rate_per_minute, ..
            } => self.rate_per_minute = Some(*rate_per_minute),
            Event::Tagging { .. } => {}
            Event::Launching {
                workspace,
                attempt,
                availability_zone,
                instance_type,
            } => {
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.state = WorkspaceState::Launching;
                    w.attempts = w.attempts.max(*attempt);
                    w.availability_zone.clone_from(availability_zone);
                    w.instance_type = Some(instance_type.clone());
                }
            }
            Event::ZoneUnavailable {
                instance_type,
                availability_zone,
                code,
                for_s,
                ..
            } => {
                self.sold_out.retain(|s| {
                    (&s.instance_type, &s.availability_zone) != (instance_type, availability_zone)
                });
                self.sold_out.push(SoldOut {
                    instance_type: instance_type.clone(),
                    availability_zone: availability_zone.clone(),
                    code: code.clone(),
                    until_s: now + for_s,
                });
                self.sold_out.sort_by(|a, b| {
                    (&a.instance_type, &a.availability_zone)
                        .cmp(&(&b.instance_type, &b.availability_zone))
                });
            }
            Event::ZoneAvailable {
                instance_type,
                availability_zone,
            } => self.sold_out.retain(|s| {
                (&s.instance_type, &s.availability_zone) != (instance_type, availability_zone)
            }),
            Event::TypeFallback {
                workspace,
                next_instance_type,
                ..
            } => {
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.instance_type = Some(next_instance_type.clone());
                }
            }
            Event::Retrying {
                workspace, attempt, ..
            } => {
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.state = WorkspaceState::Retrying;
                    w.attempts = w.attempts.max(*attempt);
                }
            }
            Event::ZoneFull {
                workspace,
                next_zone,
                ..
            } => {
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.availability_zone = Some(next_zone.clone());
                }
            }
            Event::Launched {
                workspace,
                instance_id,
                ..
            }
            | Event::Changed {
                workspace,
                instance_id,
                ..
            } => {
                let state = if matches!(stamped.event, Event::Launched { .. }) {
                    WorkspaceState::Launched
                } else {
                    WorkspaceState::Changed
                };
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.state = state;
                    w.instance_id = Some(instance_id.clone());
                    w.attempts = w.attempts.max(1);
                }
                self.count();
            }
            Event::LaunchedElsewhere {
                workspace,
                instance_id,
            } => {
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.state = WorkspaceState::LaunchedElsewhere;
                    w.instance_id = Some(instance_id.clone());
                }
                self.count();
            }
            Event::Confirmed {
                workspace,
                instance_id,
                ..
            } => {
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.state = WorkspaceState::Launched;
                    w.instance_id = Some(instance_id.clone());
                    w.failure = None;
                }
                self.count();
            }
            Event::Resizing {
                workspace,
                instance_id,
                ..
            } => {
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.state = WorkspaceState::Resizing;
                    w.instance_id = Some(instance_id.clone());
                }
            }
            Event::ResizeUndone { .. } => {}
            Event::Running {
                workspace,
                instance_id,
            }
            | Event::Stopped {
                workspace,
                instance_id,
            } => {
                let state = if matches!(stamped.event, Event::Running { .. }) {
                    WorkspaceState::Running
                } else {
                    WorkspaceState::Stopped
                };
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.state = state;
                    w.instance_id = Some(instance_id.clone());
                }
            }
            Event::Failed {
                workspace,
                explained,
                ..
            } => {
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.state = WorkspaceState::Failed;
                    w.failure = Some(explained.clone());
                }
                self.count();
            }
            Event::Skipped {
                workspace, reason, ..
            } => {
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.state = WorkspaceState::Skipped;
                    w.set_skip(Some(reason));
                }
                self.count();
            }
            Event::WaitingForQuota {
                workspace, reason, ..
            } => {
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.state = WorkspaceState::WaitingForQuota;
                    w.set_skip(Some(reason));
                }
                self.count();
            }
            Event::QuotaAvailable { workspace, .. } => {
                if let Some(w) = self.workspaces.get_mut(workspace) {
                    w.state = WorkspaceState::Queued;
                    w.set_skip(None);
                }
                self.count();
            }
            Event::Interrupted => self.interrupted = true,
            Event::Summary(report) => self.finish(report),
        }
    }

    fn set(&mut self, workspace: &str, state: WorkspaceState) {
        if let Some(w) = self.workspaces.get_mut(workspace) {
            w.state = state;
        }
    }

    /// Recounts the totals from the workspaces.
    fn count(&mut self) {
        let mut t = Totals {
            total: self.totals.total,
            ..Totals::default()
        };
        for w in self.workspaces.values() {
            match w.state {
                WorkspaceState::Launched
                | WorkspaceState::Changed
                | WorkspaceState::Running
                | WorkspaceState::Stopped
                | WorkspaceState::LaunchedElsewhere => t.done += 1,
                WorkspaceState::Failed => t.failed += 1,
                WorkspaceState::Skipped => t.skipped += 1,
                WorkspaceState::Cancelled => t.not_started += 1,
                WorkspaceState::WaitingForQuota => t.waiting_for_quota += 1,
                _ => {}
            }
        }
        self.totals = t;
    }

    /// The end of the run: what never started is cancelled, the totals are the report's.
    fn finish(&mut self, report: &Report) {
        self.finished = true;
        self.limiter_wait_s = None;
        self.eta_s = None;
        self.interrupted |= report.interrupted;
        for w in self.workspaces.values_mut() {
            if matches!(
                w.state,
                WorkspaceState::Queued | WorkspaceState::WaitingForLimiter
            ) {
                w.state = WorkspaceState::Cancelled;
            }
        }
        for f in &report.failed {
            if let Some(w) = self.workspaces.get_mut(&f.workspace) {
                w.state = WorkspaceState::Failed;
                w.failure = Some(f.explained.clone());
            }
        }
        self.totals = Totals {
            total: report.total,
            done: report.succeeded,
            failed: report.failed.len(),
            skipped: report.skipped.len(),
            not_started: report.not_started,
            waiting_for_quota: report.waiting_for_quota.len(),
        };
    }

    /// Workspaces whose calls were accepted, as a count (the bar's position).
    pub fn settled(&self) -> usize {
        self.totals.done + self.totals.failed + self.totals.skipped
    }

    /// The estimates as they stand `later_s` seconds into the run.
    pub fn at(&self, later_s: f64) -> (Option<f64>, Option<f64>) {
        let age = later_s - self.elapsed_s;
        let left = |v: Option<f64>| v.map(|s| s - age).filter(|s| *s > 0.0);
        (left(self.limiter_wait_s), left(self.eta_s))
    }
}

/// One NDJSON line; the summary carries the final state of every workspace.
pub fn json_line(e: &Stamped, progress: &Progress) -> String {
    let mut v = serde_json::to_value(e).expect("events serialize");
    if matches!(e.event, Event::Summary(_)) {
        v["workspaces"] = serde_json::to_value(&progress.workspaces).expect("serializes");
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::Event;
    use crate::engine::verdict::Verdict;

    fn at(elapsed_s: f64, event: Event) -> Stamped {
        Stamped { elapsed_s, event }
    }

    #[test]
    fn the_state_of_a_launch_pinned_as_json() {
        let mut p = Progress::default();
        for e in [
            at(
                0.0,
                Event::Started {
                    fleet: "cs".into(),
                    total: 3,
                    launches: 3,
                    rate_per_minute: Some(2.0),
                    burst_size: 1,
                    adaptive: true,
                    auto: false,
                },
            ),
            at(
                0.0,
                Event::Queued {
                    workspace: "cs-01".into(),
                    action: ActionKind::Create,
                },
            ),
            at(
                0.0,
                Event::Queued {
                    workspace: "cs-02".into(),
                    action: ActionKind::Create,
                },
            ),
            at(
                0.0,
                Event::Queued {
                    workspace: "cs-03".into(),
                    action: ActionKind::Create,
                },
            ),
            at(
                0.1,
                Event::Launching {
                    workspace: "cs-01".into(),
                    attempt: 1,
                    availability_zone: Some("us-west-2a".into()),
                    instance_type: "t3.micro".into(),
                },
            ),
            at(
                0.2,
                Event::ZoneUnavailable {
                    instance_type: "t3.micro".into(),
                    availability_zone: "us-west-2a".into(),
                    code: "InsufficientInstanceCapacity".into(),
                    for_s: 180.0,
                    workspace: Some("cs-01".into()),
                },
            ),
            at(
                0.2,
                Event::ZoneUnavailable {
                    instance_type: "t3.micro".into(),
                    availability_zone: "us-west-2b".into(),
                    code: "InsufficientInstanceCapacity".into(),
                    for_s: 180.0,
                    workspace: Some("cs-01".into()),
                },
            ),
            at(
                0.3,
                Event::TypeFallback {
                    workspace: "cs-01".into(),
                    instance_type: "t3.micro".into(),
                    next_instance_type: "t3a.micro".into(),
                },
            ),
            at(
                0.3,
                Event::Launching {
                    workspace: "cs-01".into(),
                    attempt: 1,
                    availability_zone: Some("us-west-2a".into()),
                    instance_type: "t3a.micro".into(),
                },
            ),
            at(
                0.4,
                Event::ZoneAvailable {
                    instance_type: "t3.micro".into(),
                    availability_zone: "us-west-2b".into(),
                },
            ),
            at(
                0.5,
                Event::Launched {
                    workspace: "cs-01".into(),
                    instance_id: "i-1".into(),
                    took_s: 0.5,
                },
            ),
            at(
                0.5,
                Event::RateLimited {
                    workspace: "cs-02".into(),
                    wait_s: 30.0,
                    eta_s: 60.0,
                },
            ),
            at(
                10.5,
                Event::Skipped {
                    workspace: "cs-03".into(),
                    action: ActionKind::Create,
                    reason: Verdict::OverQuota {
                        resize: false,
                        quota: "On-Demand Standard".into(),
                        available: 0,
                        needed: 2,
                    },
                },
            ),
        ] {
            p.apply(&e);
        }
        assert_eq!(p.at(20.5), (Some(10.0), Some(40.0)));
        insta::assert_json_snapshot!(p);
    }
}

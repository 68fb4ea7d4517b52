//! The state the planner brings each workspace to: the manifest's fixed `state`, or
//! what its timetable wants at the plan's moment; and the plan's account of it.

use serde::{Deserialize, Serialize};

use super::schedule::{self, Phase, Wanted, moment};
use super::{Action, ActionKind};
use crate::cloud::{Instance, InstanceState, tags};
use crate::manifest::{DesiredState, Manifest};

/// The state every workspace is brought to.
pub(super) enum Target {
    /// The manifest's `state`.
    Fixed(DesiredState),
    /// What the schedule wants at the plan's moment.
    Scheduled(Box<Phase>),
    /// A scheduled fleet planned at no moment: states are left as they are.
    Untimed,
}

impl Target {
    pub(super) fn of(manifest: &Manifest, now: Option<jiff::Timestamp>) -> Target {
        match (&manifest.schedule, now) {
            (None, _) => Target::Fixed(manifest.state),
            (Some(s), Some(now)) => Target::Scheduled(Box::new(schedule::phase_at(s, now))),
            (Some(_), None) => Target::Untimed,
        }
    }

    /// Why instance `i`, running outside the windows, is left running: someone other
    /// than prism started it after the boundary that began the off period, and before
    /// the plan's moment (see [`schedule`]).
    pub(super) fn left_alone(&self, i: &Instance) -> Option<String> {
        let Target::Scheduled(p) = self else {
            return None;
        };
        let running = matches!(i.state, InstanceState::Running | InstanceState::Pending);
        if p.state == Wanted::Running || !running || started_by_prism(i) {
            return None;
        }
        let began = p.began?;
        let started = jiff::Timestamp::from_second(i.launch_time?).ok()?;
        // A start after the plan's moment (a plan `--at` an earlier time) is not one
        // that happened before it.
        (began <= started && started <= p.now.timestamp()).then(|| p.left_alone_reason(started))
    }

    /// Whether `i` runs once the plan is carried out (a resize ends in this state).
    pub(super) fn runs(&self, i: &Instance) -> bool {
        match self {
            Target::Fixed(state) => *state == DesiredState::Running,
            Target::Scheduled(p) => p.state == Wanted::Running || self.left_alone(i).is_some(),
            Target::Untimed => matches!(i.state, InstanceState::Running | InstanceState::Pending),
        }
    }

    /// The action that brings `i` to the target state, with its reason.
    pub(super) fn change(&self, i: &Instance) -> Option<(ActionKind, String)> {
        let stopped = matches!(i.state, InstanceState::Stopped | InstanceState::Stopping);
        let running = matches!(i.state, InstanceState::Running | InstanceState::Pending);
        match self {
            Target::Fixed(DesiredState::Running) if stopped => {
                Some((ActionKind::Start, format!("{}, desired running", i.state)))
            }
            Target::Fixed(DesiredState::Stopped) if running => {
                Some((ActionKind::Stop, format!("{}, desired stopped", i.state)))
            }
            Target::Scheduled(p) if p.state == Wanted::Running && stopped => {
                Some((ActionKind::Start, p.reason()))
            }
            Target::Scheduled(p) if p.state != Wanted::Running && running => {
                if self.left_alone(i).is_some() {
                    return None;
                }
                if p.state == Wanted::Hibernated && i.hibernation {
                    Some((ActionKind::Hibernate, p.reason()))
                } else if p.state == Wanted::Hibernated {
                    let why = "; launched without hibernation, so stopped instead";
                    Some((ActionKind::Stop, format!("{}{why}", p.reason())))
                } else {
                    Some((ActionKind::Stop, p.reason()))
                }
            }
            _ => None,
        }
    }

    /// The plan's account of the schedule, given the plan's `actions`.
    pub(super) fn view(
        &self,
        manifest: &Manifest,
        actions: &[Action],
        left_alone: Vec<LeftAlone>,
    ) -> Option<ScheduleView> {
        let Target::Scheduled(p) = self else {
            return None;
        };
        let total = manifest.workspaces.len();
        let next_change = p.next.as_ref().map(|c| {
            // After this plan every workspace is in the present state but those left
            // alone, which are already running.
            let workspaces = match c.state {
                Wanted::Running => total.saturating_sub(left_alone.len()),
                _ => total,
            };
            NextChange {
                at: rfc3339(&c.at),
                state: c.state,
                window: c.slot.label.clone(),
                workspaces,
                last_start_after_s: (c.state == Wanted::Running)
                    .then(|| schedule::start_eta_secs(workspaces)),
                shown: moment(&c.at),
            }
        });
        let starts = actions
            .iter()
            .filter(|a| a.action == ActionKind::Start)
            .count();
        Some(ScheduleView {
            timezone: p.now.time_zone().iana_name().unwrap_or("UTC").to_string(),
            at: rfc3339(&p.now),
            state: p.state,
            window: p.window.as_ref().map(|w| w.label.clone()),
            since: p
                .began
                .map(|b| rfc3339(&b.to_zoned(p.now.time_zone().clone()))),
            summary: p.summary(),
            last_start_after_s: (starts > 0).then(|| schedule::start_eta_secs(starts)),
            next_change,
            left_alone,
        })
    }
}

/// The next change `manifest`'s schedule makes to instance `i`, seen at `now`, as
/// `workspace list` shows it: what the plan does now (`stops now`, `starts now`), else
/// the next boundary's change, for a workspace left running the stop at the end of the
/// next window. None for a fleet without a schedule.
pub fn next_change(manifest: &Manifest, i: &Instance, now: jiff::Timestamp) -> Option<String> {
    let target = Target::of(manifest, Some(now));
    let Target::Scheduled(p) = &target else {
        return None;
    };
    if let Some((kind, _)) = target.change(i) {
        return Some(match kind {
            ActionKind::Start => "starts now".into(),
            ActionKind::Hibernate => "hibernates now".into(),
            _ => "stops now".into(),
        });
    }
    let c = p.next.as_ref()?;
    if target.left_alone(i).is_some() {
        let stop = match c.state {
            Wanted::Running => &c.slot.end,
            _ => &c.at,
        };
        return Some(format!("{} at {}", p.state.name(), moment(stop)));
    }
    Some(format!("{} at {}", c.state.name(), moment(&c.at)))
}

/// How far after its original launch an instance's last start may be and still be
/// that launch: EC2 records the launch and the attachments in the same few seconds.
const LAUNCH_SLACK_S: i64 = 60;
/// How far before prism's record of a start EC2's may be: the two clocks differ.
const CLOCK_SKEW_S: i64 = 300;
/// How far after prism's record of a start EC2's may be: the call is sent after the
/// record, paced and retried through throttling.
const START_SLACK_S: i64 = 900;

/// Whether `i`'s last start was prism's own: its launch (by any prism, `workspace
/// create` included), or a start that prism recorded on it (tag `prism:started`) just
/// before. A start that matches neither was made by someone else: the console, the
/// AWS CLI, `prism workspace start`.
pub fn started_by_prism(i: &Instance) -> bool {
    let Some(last) = i.launch_time else {
        return false;
    };
    let launch = i
        .first_launch_time
        .is_some_and(|first| (last - first).abs() <= LAUNCH_SLACK_S);
    let recorded = i
        .tag(tags::STARTED)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| {
            let t = t.as_second();
            t - CLOCK_SKEW_S <= last && last <= t + START_SLACK_S
        });
    launch || recorded
}

fn rfc3339(z: &jiff::Zoned) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Where a scheduled fleet stands at the plan's moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleView {
    pub timezone: String,
    /// The plan's moment, with its UTC offset.
    pub at: String,
    /// The state the schedule wants now.
    pub state: Wanted,
    /// The window open now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The boundary the present state began at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// One line for people.
    pub summary: String,
    /// Seconds after the run begins that the last of the plan's starts is sent, at
    /// the Start pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_start_after_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_change: Option<NextChange>,
    /// Workspaces started by hand outside the windows, left running until the next
    /// boundary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_alone: Vec<LeftAlone>,
}

/// The schedule's next change of state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextChange {
    pub at: String,
    pub state: Wanted,
    /// The window that opens or closes.
    pub window: String,
    /// How many workspaces change then.
    pub workspaces: usize,
    /// For a start: seconds after the boundary that the last start is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_start_after_s: Option<u64>,
    /// The moment as people read it (`Wed 2026-12-02 12:15 CST`).
    pub shown: String,
}

/// A workspace the schedule would stop that is left running for now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftAlone {
    pub workspace: String,
    pub instance_id: String,
    pub reason: String,
}

/// A new workspace and the roster row it is named after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMember {
    pub workspace: String,
    /// The roster's value (an email, a login).
    pub value: String,
    /// `roster.csv:14`.
    pub row: String,
}

/// The roster rows of the workspaces `actions` create.
pub(super) fn new_members(manifest: &Manifest, actions: &[Action]) -> Vec<NewMember> {
    let Some(roster) = &manifest.roster else {
        return vec![];
    };
    roster
        .members
        .iter()
        .zip(&manifest.workspaces)
        .filter(|(_, w)| {
            actions
                .iter()
                .any(|a| a.action == ActionKind::Create && &a.workspace == *w)
        })
        .map(|(m, w)| NewMember {
            workspace: w.clone(),
            value: m.value.clone(),
            row: format!("{}:{}", roster.file, m.line),
        })
        .collect()
}

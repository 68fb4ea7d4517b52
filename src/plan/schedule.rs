//! What a timetable wants at a moment: pure functions of a [`Schedule`] and a point in
//! time, which the caller passes in (the planner reads no clock). Plan, watch and
//! `workspace list` all read this one answer, [`Phase`].
//!
//! Windows are laid out on the calendar in the schedule's zone, so DST moves them with
//! the wall clock: a 09:00 window opens at 09:00 local time on both sides of a change.
//! A window time that a spring-forward skips opens at the first instant after the gap;
//! one that a fall-back repeats uses its first occurrence (jiff's "compatible" rule, as
//! RFC 5545 calendars do).
//!
//! **Boundaries and students who started by hand.** At a boundary the whole fleet is
//! brought to the window's state. Between boundaries, a workspace running outside the
//! windows is stopped unless someone else started it after the boundary that began the
//! off period: a student at the console or with the AWS CLI, finishing an assignment,
//! is left running until the next boundary. "Someone else" is a fact about who made the
//! last start, never read from the clock alone: prism's own starts and launches, from
//! any run on any machine (interrupted, `--no-wait`, `watch`, `serve`), are told from
//! others by EC2's own records. Its `LaunchTime` is reset by every start, while the
//! instance's volumes and network interface keep the time they were attached at
//! launch: when the two agree, the last start was the launch. Before each start of its
//! own, prism writes the time on the instance (tag `prism:started`): a last start soon
//! after that record was prism's. Both survive a crash between a call and the next
//! pass, and a restart or a one-off `prism apply` needs no memory of earlier passes.
//! Workspaces stopped inside a window are always started: a start interrupts no one,
//! and it is how a failed start is retried.
//!
//! A plan for a moment (`plan --at`) takes the fleet as it is now, with the clock set
//! to that moment: a start after the moment is not one that came before it.

use std::fmt::Write;

use jiff::civil::{Date, Time};
use jiff::{Timestamp, ToSpan, Zoned};
use serde::{Deserialize, Serialize};

use crate::manifest::schedule::{Window, clock};
use crate::manifest::{DesiredState, OffState, Schedule};

/// The state a schedule wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wanted {
    Running,
    Stopped,
    Hibernated,
}

impl Wanted {
    /// The state launched workspaces are left in: a new instance has nothing in memory
    /// to keep, so hibernated is stopped.
    pub fn desired(self) -> DesiredState {
        match self {
            Wanted::Running => DesiredState::Running,
            Wanted::Stopped | Wanted::Hibernated => DesiredState::Stopped,
        }
    }

    fn off(o: OffState) -> Wanted {
        match o {
            OffState::Stopped => Wanted::Stopped,
            OffState::Hibernated => Wanted::Hibernated,
        }
    }

    /// `running`, `stopped` or `hibernated`.
    pub fn name(self) -> &'static str {
        match self {
            Wanted::Running => "running",
            Wanted::Stopped => "stopped",
            Wanted::Hibernated => "hibernated",
        }
    }
}

/// One opening of a window, on the calendar.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub start: Zoned,
    pub end: Zoned,
    /// `class hours Mon 09:00–12:15 America/Chicago`.
    pub label: String,
}

/// A scheduled change of state.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub at: Zoned,
    /// The state from then on.
    pub state: Wanted,
    /// The window that opens (for a start) or closes (for a stop) then.
    pub slot: Slot,
}

/// What the schedule wants at a moment, and since and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub now: Zoned,
    pub state: Wanted,
    /// The window open now, when running.
    pub window: Option<Slot>,
    /// The last window that closed, when not running.
    pub closed: Option<Slot>,
    /// The boundary the present state began at.
    pub began: Option<Timestamp>,
    /// The next change of state.
    pub next: Option<Change>,
}

/// Days either side of a moment searched for windows: a weekly timetable repeats
/// within a week.
const REACH: i64 = 8;

fn day_of(window: &Window, date: Date) -> Option<&'static str> {
    window
        .days
        .iter()
        .find(|d| d.weekday() == date.weekday())
        .map(|d| d.short())
}

fn at_minutes(s: &Schedule, date: Date, minutes: u16) -> Zoned {
    let (date, minutes) = if minutes == 1440 {
        (date.tomorrow().expect("a date before 9999"), 0)
    } else {
        (date, minutes)
    };
    let time = Time::new((minutes / 60) as i8, (minutes % 60) as i8, 0, 0).expect("a time of day");
    date.to_datetime(time)
        .to_zoned(s.tz.clone())
        .expect("a date far from the ends of time")
}

/// The window openings within [`REACH`] days of `now`, in order.
fn slots(s: &Schedule, now: &Zoned) -> Vec<Slot> {
    let today = now.date();
    let mut out = Vec::new();
    for offset in -REACH..=REACH {
        let date = today
            .checked_add(offset.days())
            .expect("a date far from the ends");
        for w in &s.running {
            if let Some(day) = day_of(w, date) {
                out.push(Slot {
                    start: at_minutes(s, date, w.from),
                    end: at_minutes(s, date, w.to),
                    label: format!(
                        "{} {day} {}–{} {}",
                        w.name,
                        clock(w.from),
                        clock(w.to),
                        s.timezone
                    ),
                });
            }
        }
    }
    out.sort_by(|a, b| a.start.cmp(&b.start));
    out
}

/// What `schedule` wants at `now`.
pub fn phase_at(schedule: &Schedule, now: Timestamp) -> Phase {
    let now = now.to_zoned(schedule.tz.clone());
    let slots = slots(schedule, &now);
    let off = Wanted::off(schedule.otherwise);
    if let Some(k) = slots.iter().position(|s| s.start <= now && now < s.end) {
        // Windows that touch (one ends as the next begins) are one stretch of running.
        let mut first = k;
        while first > 0 && slots[first - 1].end == slots[first].start {
            first -= 1;
        }
        let mut last = k;
        while last + 1 < slots.len() && slots[last + 1].start == slots[last].end {
            last += 1;
        }
        let next = (last + 1 < slots.len()).then(|| Change {
            at: slots[last].end.clone(),
            state: off,
            slot: slots[last].clone(),
        });
        return Phase {
            began: Some(slots[first].start.timestamp()),
            state: Wanted::Running,
            window: Some(slots[k].clone()),
            closed: None,
            next,
            now,
        };
    }
    let closed = slots.iter().rev().find(|s| s.end <= now).cloned();
    let next = slots.iter().find(|s| s.start > now).map(|s| Change {
        at: s.start.clone(),
        state: Wanted::Running,
        slot: s.clone(),
    });
    Phase {
        began: closed.as_ref().map(|s| s.end.timestamp()),
        state: off,
        window: None,
        closed,
        next,
        now,
    }
}

/// A moment as plans show it: `Wed 2026-12-02 09:05 CST`.
pub fn moment(z: &Zoned) -> String {
    z.strftime("%a %Y-%m-%d %H:%M %Z").to_string()
}

impl Phase {
    /// Why a workspace is started or stopped now, naming the window.
    pub fn reason(&self) -> String {
        match (&self.window, &self.closed) {
            (Some(w), _) => w.label.clone(),
            (None, Some(c)) => format!("outside the schedule; {} ended {}", c.label, short(&c.end)),
            (None, None) => "outside the schedule".into(),
        }
    }

    /// Why a workspace started by hand after the last boundary is left running.
    pub fn left_alone_reason(&self, started: Timestamp) -> String {
        let started = started.to_zoned(self.now.time_zone().clone());
        let until = match &self.next {
            Some(c) if c.state == Wanted::Running => format!(
                "it is stopped when the next window ends, {}",
                moment(&c.slot.end)
            ),
            Some(c) => format!("it is stopped at the next boundary, {}", moment(&c.at)),
            None => "the schedule has no next boundary".into(),
        };
        format!(
            "started by hand {}, after the schedule stopped the fleet: left running; {until}",
            moment(&started)
        )
    }

    /// The schedule's line in a plan: where now stands, and the next change.
    pub fn summary(&self) -> String {
        let mut out = format!("at {}: ", moment(&self.now));
        match &self.window {
            Some(w) => {
                let _ = write!(out, "running, in {}", w.label);
            }
            None => {
                let _ = write!(out, "{}, outside the windows", self.state.name());
            }
        }
        out
    }
}

/// A moment within the week, without the date: `Mon 12:15 CST`.
fn short(z: &Zoned) -> String {
    z.strftime("%a %H:%M %Z").to_string()
}

/// Seconds until StartInstances has been called for `n` workspaces, at the engine's
/// Start pace (AWS's bucket: 5 at once, then 2 a second).
pub fn start_eta_secs(n: usize) -> u64 {
    (n.saturating_sub(5) as u64).div_ceil(2)
}

#[cfg(test)]
mod tests;

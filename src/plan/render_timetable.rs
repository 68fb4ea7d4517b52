//! The plan's text about timetables and rosters: where the schedule stands, the next
//! change, workspaces left running, the roster rows of new workspaces, the cost per week.

use std::fmt::Write;

use super::Plan;
use super::render::{BOLD, DIM, YELLOW, paint};
use super::schedule::Wanted;

/// The roster rows new workspaces are named after.
pub(super) fn new_members(out: &mut String, plan: &Plan) {
    if plan.new_members.is_empty() {
        return;
    }
    out.push('\n');
    let _ = writeln!(out, "{}", paint(BOLD, "New workspaces from the roster:"));
    let width = plan
        .new_members
        .iter()
        .map(|m| m.workspace.len())
        .max()
        .unwrap_or(0);
    for m in &plan.new_members {
        let _ = writeln!(
            out,
            "    {:width$}  ← {} {}",
            m.workspace,
            m.value,
            paint(DIM, &format!("({})", m.row))
        );
    }
}

/// Where the schedule stands, what changes next and when, and who is left running.
pub(super) fn schedule(out: &mut String, plan: &Plan) {
    let Some(s) = &plan.schedule else {
        return;
    };
    out.push('\n');
    let _ = writeln!(out, "{} {}", paint(BOLD, "Schedule:"), s.summary);
    if let Some(secs) = s.last_start_after_s {
        let n = plan.summary.start;
        let s = if n == 1 { "" } else { "s" };
        let pace = "StartInstances takes 5 at once, then 2 a second";
        let _ = match secs {
            0 => writeln!(out, "  {n} start{s}, sent at once ({pace})."),
            _ => writeln!(
                out,
                "  {n} starts: the last is sent about {secs} s after the run begins ({pace})."
            ),
        };
    }
    if let Some(c) = &s.next_change {
        let verb = match c.state {
            Wanted::Running => "start",
            Wanted::Stopped => "stop",
            Wanted::Hibernated => "hibernate",
        };
        let what = match c.state {
            Wanted::Running => "opens",
            _ => "ends",
        };
        let _ = write!(
            out,
            "  Next change: {}: {verb} {} workspace{} ({} {what})",
            c.shown,
            c.workspaces,
            if c.workspaces == 1 { "" } else { "s" },
            c.window
        );
        match c.last_start_after_s {
            Some(secs) if c.workspaces > 5 => {
                let _ = writeln!(out, "; the last start is sent about {secs} s later.");
            }
            _ => out.push_str(".\n"),
        }
    } else {
        let _ = writeln!(out, "  No change is scheduled.");
    }
    if !s.left_alone.is_empty() {
        let _ = writeln!(
            out,
            "  {}",
            paint(YELLOW, "Left running until the next boundary:")
        );
        for l in &s.left_alone {
            let _ = writeln!(out, "    {} ({}): {}", l.workspace, l.instance_id, l.reason);
        }
    }
}

/// The estimated compute cost per week, on the schedule and always on.
pub(super) fn cost(out: &mut String, plan: &Plan) {
    let Some(c) = &plan.cost else {
        return;
    };
    out.push('\n');
    let money = |v: Option<f64>| v.map_or("?".into(), |v| format!("${v:.2}"));
    let price = c
        .hourly_usd
        .map_or_else(|| "no price for this type".into(), |p| format!("${p}/h"));
    let _ = writeln!(
        out,
        "{} {} on the schedule ({} h × {} workspace{} × {price}); {} always on.",
        paint(BOLD, "Compute cost per week:"),
        money(c.per_week_usd),
        hours(c.running_hours_per_week),
        c.workspaces,
        if c.workspaces == 1 { "" } else { "s" },
        money(c.always_on_per_week_usd),
    );
    let _ = writeln!(
        out,
        "  {}",
        paint(
            DIM,
            &format!(
                "An estimate from {} for {}; disks and traffic not counted.",
                c.source, c.instance_type
            )
        )
    );
}

fn hours(h: f64) -> String {
    if h.fract() == 0.0 {
        format!("{h:.0}")
    } else {
        format!("{h:.2}").trim_end_matches('0').to_string()
    }
}

//! Plans for people (Terraform-like text) and for programs (JSON).
//!
//! Text carries ANSI styles; the CLI writes it through `anstream`, which drops them
//! when the output is not a terminal or `NO_COLOR` is set.

use std::fmt::Write;

use anstyle::{AnsiColor, Style};

use super::{ActionKind, Kept, Plan, QuotaCheck};

const GREEN: Style = AnsiColor::Green.on_default();
const RED: Style = AnsiColor::Red.on_default();
pub(super) const YELLOW: Style = AnsiColor::Yellow.on_default();
const MAGENTA: Style = AnsiColor::Magenta.on_default();
pub(super) const BOLD: Style = Style::new().bold();
pub(super) const DIM: Style = Style::new().dimmed();

pub(super) fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

fn symbol(kind: ActionKind) -> (&'static str, Style) {
    match kind {
        ActionKind::Create => ("+", GREEN),
        ActionKind::Delete => ("-", RED),
        ActionKind::Start | ActionKind::Stop | ActionKind::Hibernate | ActionKind::Resize => {
            ("~", YELLOW)
        }
        ActionKind::Replace => ("-/+", MAGENTA),
    }
}

fn kind_name(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Create => "create",
        ActionKind::Start => "start",
        ActionKind::Stop => "stop",
        ActionKind::Replace => "replace",
        ActionKind::Delete => "delete",
        ActionKind::Hibernate => "hibernate",
        ActionKind::Resize => "resize",
    }
}

/// The plan as text.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} fleet {} in {}",
        paint(BOLD, "prism plan:"),
        plan.fleet,
        plan.region
    );
    out.push('\n');
    let held: Vec<&Kept> = plan
        .would_delete_with_prune
        .iter()
        .filter(|k| k.action == ActionKind::Replace)
        .collect();
    if plan.actions.is_empty() && held.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            paint(GREEN, "No changes. The fleet matches the manifest.")
        );
    } else if plan.actions.is_empty() {
        let _ = writeln!(
            out,
            "{}\n",
            paint(
                YELLOW,
                "No changes will be made: the replacements below need `prune: true`."
            )
        );
        held_replacements(&mut out, &held);
    } else {
        if plan.summary.create + plan.summary.replace > 0 {
            let image = plan.image_id.as_deref().unwrap_or("unresolved");
            let _ = writeln!(
                out,
                "New instances launch from template {} (image {image}).",
                plan.template
            );
            if let Some(pace) = &plan.pace {
                let _ = writeln!(out, "{pace}.");
            }
            out.push('\n');
        }
        actions(&mut out, plan);
        held_replacements(&mut out, &held);
    }
    super::render_timetable::new_members(&mut out, plan);
    super::render_timetable::schedule(&mut out, plan);
    if !plan.quota.is_empty() {
        out.push('\n');
        quotas(&mut out, plan);
    }
    super::render_timetable::cost(&mut out, plan);
    if !plan.fallbacks.is_empty() {
        out.push('\n');
        fallbacks(&mut out, plan);
    }
    let unwanted: Vec<&Kept> = plan
        .would_delete_with_prune
        .iter()
        .filter(|k| k.action != ActionKind::Replace)
        .collect();
    if !unwanted.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "{}", paint(BOLD, "Kept because prune is off:"));
        for k in unwanted {
            let _ = writeln!(out, "    {} ({}): {}", k.workspace, k.instance_id, k.reason);
        }
    }
    if !plan.made_by_hand.is_empty() {
        out.push('\n');
        let _ = writeln!(
            out,
            "{}",
            paint(
                BOLD,
                "Made by hand (workspace create), not in the manifest: kept"
            )
        );
        for k in &plan.made_by_hand {
            let _ = writeln!(out, "    {} ({})", k.workspace, k.instance_id);
        }
    }
    for w in &plan.warnings {
        out.push('\n');
        let _ = writeln!(out, "{} {}", paint(YELLOW, "⚠"), w.message);
        if !w.options.is_empty() {
            let _ = writeln!(out, "  Options:");
            for (i, o) in w.options.iter().enumerate() {
                let _ = writeln!(out, "    {}. {o}", i + 1);
            }
        }
    }
    out.push('\n');
    let s = &plan.summary;
    let resize = if s.resize > 0 {
        format!(" {} to resize,", s.resize)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{} {} to create, {} to start, {} to stop,{resize} {} to replace, {} to delete.",
        paint(BOLD, "Plan:"),
        s.create,
        s.start,
        s.stop,
        s.replace,
        s.delete
    );
    out
}

fn actions(out: &mut String, plan: &Plan) {
    let width = |f: &dyn Fn(&super::Action) -> usize| plan.actions.iter().map(f).max().unwrap_or(0);
    let ws = width(&|a| a.workspace.len());
    let id = width(&|a| a.instance_id.as_deref().map_or(5, str::len));
    let ty = width(&|a| a.instance_type.len());
    for a in &plan.actions {
        let (sym, style) = symbol(a.action);
        let vcpus = a
            .vcpus
            .map_or_else(|| "? vCPUs".to_string(), |v| format!("{v} vCPUs"));
        let _ = writeln!(
            out,
            "{}{} {:ws$}  {:id$}  {:ty$}  {:>8}  {} {}",
            " ".repeat(4 - sym.len()),
            paint(style, sym),
            a.workspace,
            a.instance_id.as_deref().unwrap_or("(new)"),
            a.instance_type,
            vcpus,
            paint(style, &format!("{}:", kind_name(a.action))),
            paint(DIM, &a.reason),
        );
    }
}

/// Replacements held back because prune is off, where the actions are listed: shown,
/// but not done and not counted.
fn held_replacements(out: &mut String, held: &[&Kept]) {
    for k in held {
        let _ = writeln!(
            out,
            " {} {}  {}  {} {}",
            paint(DIM, "-/+"),
            k.workspace,
            k.instance_id,
            paint(YELLOW, "replace needs `prune: true`, not done:"),
            paint(DIM, &k.reason),
        );
    }
}

fn quotas(out: &mut String, plan: &Plan) {
    let _ = writeln!(
        out,
        "{}",
        paint(BOLD, &format!("Quotas ({}):", plan.region))
    );
    for q in &plan.quota {
        let _ = writeln!(
            out,
            "  {} {} [{}]: {}",
            quota_mark(q),
            q.name,
            q.code,
            quota_numbers(q)
        );
    }
}

/// The ladder: each fallback type with its vCPUs and whether the plan's launches fit
/// its class's quota on it.
fn fallbacks(out: &mut String, plan: &Plan) {
    let names: Vec<&str> = plan
        .fallbacks
        .iter()
        .map(|f| f.instance_type.as_str())
        .collect();
    let first = plan
        .actions
        .iter()
        .find(|a| matches!(a.action, ActionKind::Create | ActionKind::Replace))
        .map_or("the template's type", |a| a.instance_type.as_str());
    let _ = writeln!(
        out,
        "{} {} (when {first} is sold out in every zone)",
        paint(BOLD, "Fallback instance types:"),
        names.join(", then ")
    );
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    for f in &plan.fallbacks {
        let (mark, verdict) = match (f.fits, f.available) {
            (Some(true), Some(a)) => (paint(GREEN, "✓"), format!("fits ({a} available)")),
            (Some(false), Some(a)) => (paint(RED, "✗"), format!("does not fit ({a} available)")),
            _ if f.vcpus.is_none() => (paint(YELLOW, "?"), "not offered in the region".into()),
            _ => (paint(YELLOW, "?"), "not checked".into()),
        };
        let vcpus = f.vcpus.map_or("?".into(), |v| v.to_string());
        let needed = f.needed.map_or("?".into(), |n| n.to_string());
        let _ = writeln!(
            out,
            "  {mark} {:width$}  {vcpus} vCPUs each, {} launches need {needed} vCPUs of {} [{}] — {verdict}",
            f.instance_type, f.launches, f.quota_name, f.quota_code
        );
    }
}

fn quota_mark(q: &QuotaCheck) -> String {
    match q.fits {
        Some(true) => paint(GREEN, "✓"),
        Some(false) => paint(RED, "✗"),
        None => paint(YELLOW, "?"),
    }
}

fn quota_numbers(q: &QuotaCheck) -> String {
    let usage = q.usage.map_or("unknown".into(), |u| u.to_string());
    let limit = q.limit.map_or("unknown".into(), |l| format!("{l}"));
    let verdict = match (q.fits, q.available) {
        (Some(true), Some(a)) => format!("fits ({a} available)"),
        (Some(false), Some(a)) => format!("does not fit ({a} available)"),
        _ if !q.unknown_types.is_empty() => format!(
            "not checked: vCPUs of {} unknown",
            q.unknown_types.join(", ")
        ),
        _ => "not checked".into(),
    };
    let needed = if q.unknown_types.is_empty() {
        q.needed.to_string()
    } else {
        "unknown".into()
    };
    format!("{usage} used + {needed} needed of {limit} vCPUs — {verdict}")
}

/// The plan as pretty JSON (see docs/plan.md for the format).
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).expect("a plan serializes")
}

/// The pre-launch screen for a quota class the plan does not fit in: the numbers, how
/// many fit, and the options.
pub fn shortfall_screen(plan: &Plan, q: &QuotaCheck) -> String {
    let launching: Vec<&super::Action> = plan
        .actions
        .iter()
        .filter(|a| a.needs_quota())
        .filter(|a| crate::quota::on_demand_class(&a.instance_type).code == q.code)
        .collect();
    let wanted = launching.len();
    let fit = wanted - q.over_quota.len();
    let mut out = String::from("Checking AWS quotas...\n\n");
    if let Some(a) = launching.first() {
        let _ = writeln!(
            out,
            "Template: {} ({}, {} vCPUs each)",
            plan.template,
            a.instance_type,
            a.vcpus.map_or("?".into(), |v| v.to_string())
        );
    }
    let available = q.available.unwrap_or(0);
    let _ = writeln!(out, "Count: {wanted} workspaces to launch or start");
    let _ = writeln!(out, "Total needed: {} vCPUs\n", q.needed);
    let _ = writeln!(
        out,
        "Current quota: {} vCPUs ({} [{}])",
        q.limit.unwrap_or(0.0),
        q.name,
        q.code
    );
    let _ = writeln!(out, "Currently used: {} vCPUs", q.usage.unwrap_or(0));
    let _ = writeln!(out, "Available: {available} vCPUs");
    let _ = writeln!(
        out,
        "Shortfall: {} vCPUs\n",
        q.needed.saturating_sub(available)
    );
    let _ = writeln!(
        out,
        "{} Only {fit} of {wanted} workspaces can be launched with current quota.\n",
        paint(YELLOW, "⚠")
    );
    let _ = writeln!(out, "Options:");
    // The plan's options, numbered as the plan numbers them, then going ahead.
    let mut options = Vec::new();
    if let (Some(desired), Some(class)) = (q.recommended_value, crate::quota::by_name(&q.code)) {
        options.push(format!(
            "Request quota increase (recommended): {}",
            crate::quota::arith::request_command(class, desired, Some(&plan.region))
        ));
    }
    let per = available / u32::try_from(wanted.max(1)).unwrap_or(u32::MAX);
    if per >= 1 {
        options.push(format!(
            "Use a smaller instance type (at most {per} vCPU{} each)",
            if per == 1 { "" } else { "s" }
        ));
    }
    options.push(format!("Launch fewer workspaces ({fit} fit)"));
    options.push(if fit == 0 {
        "Proceed anyway: none fit, so nothing is launched; all are reported as not launched".into()
    } else {
        format!(
            "Proceed anyway: launch the {fit} that fit, in name order; the rest are reported as not launched"
        )
    });
    options.push(
        "Proceed and wait: with `--wait-for-quota DURATION` (or under `prism watch`), the rest launch in name order as soon as the quota has room"
            .into(),
    );
    for (n, o) in options.iter().enumerate() {
        let _ = writeln!(out, "{}. {o}", n + 1);
    }
    out
}

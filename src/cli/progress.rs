//! The event stream for people and programs: a live bar on a terminal, plain lines when
//! piped, NDJSON with `--format json`.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::cloud::ErrorClass;
use crate::engine::Progress;
use crate::engine::Report;
use crate::engine::events::{Event, Stamped};
use crate::plan::ActionKind;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live bar, lines above it.
    Terminal,
    /// One line per event that matters.
    Lines,
    /// One JSON object per event.
    Json,
    /// One log record per line, through tracing (for `prism watch`).
    Log,
    /// Only failures and the summary.
    Quiet,
}

pub use crate::engine::progress::duration_text;

fn secs(s: f64) -> String {
    duration_text(Duration::from_secs_f64(s.max(0.0)))
}

fn done_word(action: ActionKind) -> &'static str {
    match action {
        ActionKind::Create | ActionKind::Replace => "launched",
        ActionKind::Start => "started",
        ActionKind::Stop => "stopped",
        ActionKind::Delete => "terminated",
        ActionKind::Hibernate => "hibernated",
        ActionKind::Resize => "resized",
    }
}

/// The line about launches that ended in errors but were up after all.
fn confirmed(r: &Report) -> String {
    if r.confirmed_after_errors.is_empty() {
        return String::new();
    }
    format!(
        "Confirmed after errors: {} (a call whose answer was lost had launched {})\n",
        r.confirmed_after_errors.join(", "),
        if r.confirmed_after_errors.len() == 1 {
            "it"
        } else {
            "them"
        }
    )
}

/// The line about instances that another run had launched with the same tokens.
fn by_other_runs(r: &Report) -> String {
    if r.launched_by_other_runs.is_empty() {
        return String::new();
    }
    format!(
        "Already launched by another run: {} (AWS answered this run with the {} that run had launched; nothing was launched twice)\n",
        r.launched_by_other_runs.join(", "),
        if r.launched_by_other_runs.len() == 1 {
            "instance"
        } else {
            "instances"
        }
    )
}

/// The lines about workspaces launched on a fallback type, one per type and reason.
fn fallbacks(r: &Report) -> String {
    /// The type launched, the template's, and why.
    type Why<'a> = (&'a str, &'a str, &'a str);
    let mut groups: Vec<(Why<'_>, Vec<&str>)> = Vec::new();
    for f in &r.fallbacks {
        let key = (
            f.instance_type.as_str(),
            f.instead_of.as_str(),
            f.reason.as_str(),
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.push(&f.workspace),
            None => groups.push((key, vec![&f.workspace])),
        }
    }
    groups
        .into_iter()
        .map(|((to, from, why), names)| {
            format!(
                "Launched as {to} instead of {from}: {} ({why})\n",
                names.join(", ")
            )
        })
        .collect()
}

/// What a capacity answer says of a (type, zone).
fn unavailable_words(code: &str) -> &'static str {
    if code == "Unsupported" {
        "is not offered in"
    } else {
        "is sold out in"
    }
}

/// `n thing` or `n things`.
fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// The closing text of a run; `rerun` is the command that finishes it.
pub fn summary_text(r: &Report, rerun: &str) -> String {
    let took = Duration::from_secs_f64(r.duration_s);
    let mut out = String::new();
    if r.complete() {
        let others = r.launched_by_other_runs.len();
        let what = match (r.launched + others == r.total, r.total) {
            (true, n) if others > 0 => format!(
                "All {n} workspaces are up ({} launched by this run, {others} by another run)",
                r.launched
            ),
            (true, 1) => "1 workspace launched successfully".to_string(),
            (true, n) => format!("All {n} workspaces launched successfully"),
            (false, 1) => "1 change applied successfully".to_string(),
            (false, n) => format!("All {n} changes applied successfully"),
        };
        let avg = if r.total > 0 {
            format!(" (avg {:.1}s per workspace)", r.duration_s / r.total as f64)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "✅ {what}\nTotal time: {}{avg}\n",
            duration_text(took)
        ));
        out.push_str(&confirmed(r));
        out.push_str(&by_other_runs(r));
        out.push_str(&fallbacks(r));
        return out;
    }
    // ❌ is for failures: a run that only held back or skipped work is a warning.
    let mark = if r.failed.is_empty() && !r.interrupted {
        "⚠"
    } else {
        "❌"
    };
    out.push_str(&format!(
        "{mark} {} of {} done in {}",
        r.succeeded,
        count(r.total, "change"),
        duration_text(took)
    ));
    let mut parts = vec![];
    if !r.failed.is_empty() {
        parts.push(format!("{} failed", r.failed.len()));
    }
    if !r.skipped.is_empty() {
        parts.push(format!("{} skipped", r.skipped.len()));
    }
    if r.not_started > 0 {
        parts.push(format!("{} not started", r.not_started));
    }
    if !r.waiting_for_quota.is_empty() {
        parts.push(format!("{} waiting for quota", r.waiting_for_quota.len()));
    }
    if !parts.is_empty() {
        out.push_str(&format!(" ({})", parts.join(", ")));
    }
    let listed = !r.failed.is_empty() || !r.skipped.is_empty() || !r.waiting_for_quota.is_empty();
    out.push_str(if listed { ":\n" } else { ".\n" });
    for f in &r.failed {
        let e = &f.explained;
        out.push_str(&format!(
            "  ✗ {} ({:?}): {} [{}]\n      What happened: {}\n      What prism did: {}\n      What you can do: {}\n",
            f.workspace,
            f.action,
            e.title,
            e.code,
            e.what_happened.replace('\n', "\n        "),
            e.what_prism_does,
            e.what_you_can_do
        ));
    }
    for s in &r.skipped {
        out.push_str(&format!(
            "  - {} ({:?}) skipped: {}\n",
            s.workspace, s.action, s.reason
        ));
    }
    for s in &r.waiting_for_quota {
        out.push_str(&format!(
            "  ⏸ {} ({:?}) {}\n",
            s.workspace, s.action, s.reason
        ));
    }
    out.push_str(&confirmed(r));
    out.push_str(&by_other_runs(r));
    out.push_str(&fallbacks(r));
    // Workspaces the gate left out for quota can wait for it instead.
    if r.skipped.iter().any(|s| s.reason.is_over_quota()) {
        out.push_str(&format!(
            "To launch what the quota had no room for as soon as it has: run `{rerun}` again with `--wait-for-quota DURATION`, or keep `prism watch` running.\n"
        ));
    }
    if r.interrupted {
        out.push_str(&format!("Interrupted: run `{rerun}` again to finish.\n"));
    } else if !r.failed.is_empty() {
        out.push_str(&format!(
            "The other workspaces are done; run `{rerun}` again to retry what failed.\n"
        ));
    }
    out
}

/// The run's progress as the renderers see it, and the lines they print.
pub(crate) struct Lines {
    progress: Progress,
    /// When the last event came, to age the estimates between events.
    last: Instant,
    rerun: String,
}

impl Lines {
    pub(crate) fn new(rerun: &str) -> Self {
        Lines {
            progress: Progress::default(),
            last: Instant::now(),
            rerun: rerun.to_string(),
        }
    }

    /// Takes `e` into the progress state and gives its line, if it has one.
    pub(crate) fn take(&mut self, e: &Stamped) -> Option<String> {
        self.progress.apply(e);
        self.last = Instant::now();
        self.line(&e.event)
    }

    fn line(&mut self, e: &Event) -> Option<String> {
        match e {
            Event::Started {
                fleet,
                total,
                launches,
                rate_per_minute,
                burst_size,
                adaptive,
                auto,
            } => {
                let settings = rate_per_minute.map(|r| crate::engine::RateSettings {
                    rate_per_minute: r,
                    burst_size: *burst_size,
                    adaptive: *adaptive,
                    auto: *auto,
                });
                let pacing = if *launches > 0 && settings.is_some() {
                    format!(
                        "{}\n\n",
                        crate::engine::RateSettings::describe(settings.as_ref())
                    )
                } else {
                    String::new()
                };
                let what = if launches == total {
                    format!("Launching {}", count(*total, "workspace"))
                } else {
                    format!("Applying {}", count(*total, "change"))
                };
                Some(format!("\n{pacing}{what} of fleet {fleet}:"))
            }
            Event::RateLimited { wait_s, eta_s, .. } => {
                Some(format!(
                    "⏳ Rate limit reached, waiting {} before next launch… (about {} left)",
                    secs(*wait_s),
                    secs(*eta_s)
                ))
            }
            Event::RateChanged { rate_per_minute, reason } => {
                Some(format!("⚠ {reason}: launch rate now {rate_per_minute:.2} per minute"))
            }
            Event::Tagging { instances, eta_s } => Some(format!(
                "🏷 Naming {} launched together (one CreateTags each, at AWS's pace: about {}); they are up already",
                count(*instances, "instance"),
                secs(*eta_s)
            )),
            Event::Retrying {
                workspace,
                attempt,
                max_attempts,
                delay_s,
                code,
                class,
            } => Some(match class {
                // Throttles are waited out, not counted against the attempts.
                ErrorClass::Throttle => format!(
                    "⚠ {workspace}: AWS throttling detected, retrying in {}…",
                    secs(*delay_s)
                ),
                _ => format!(
                    "⚠ {workspace}: {code} from AWS, retrying in {} (attempt {attempt}/{})…",
                    secs(*delay_s),
                    max_attempts - 1
                ),
            }),
            Event::ZoneFull {
                workspace,
                availability_zone,
                next_zone,
            } => Some(format!(
                "⚠ {workspace}: no capacity in {}, trying {next_zone}…",
                availability_zone.as_deref().unwrap_or("the zone AWS chose")
            )),
            Event::ZoneUnavailable {
                instance_type,
                availability_zone,
                code,
                for_s,
                workspace,
            } => Some(format!(
                "⚠ {instance_type} {} {availability_zone} ({code}{}): launches avoid it for {}",
                unavailable_words(code),
                if workspace.is_some() { "" } else { ", found by an earlier run" },
                secs(*for_s)
            )),
            Event::ZoneAvailable {
                instance_type,
                availability_zone,
            } => Some(format!(
                "  {instance_type} in {availability_zone} is tried again: its sold-out mark ran out"
            )),
            Event::TypeFallback {
                workspace,
                instance_type,
                next_instance_type,
            } => Some(format!(
                "⚠ {workspace}: no zone has {instance_type} capacity, trying {next_instance_type}…"
            )),
            Event::Launched {
                workspace,
                instance_id,
                took_s,
            } => {
                Some(format!(
                    "✓ {workspace} launched ({instance_id}) [{}/{}] - {}",
                    self.progress.totals.done,
                    self.progress.totals.total,
                    secs(*took_s)
                ))
            }
            Event::LaunchedElsewhere {
                workspace,
                instance_id,
            } => Some(format!(
                "✓ {workspace} launched by another run ({instance_id}) [{}/{}]",
                self.progress.totals.done,
                self.progress.totals.total,
            )),
            Event::Confirmed {
                workspace,
                instance_id,
                after,
            } => Some(format!(
                "✓ {workspace} launched ({instance_id}) [{}/{}] - confirmed: its launch ended with {after}, but an earlier call had launched it",
                self.progress.totals.done,
                self.progress.totals.total,
            )),
            Event::Changed {
                workspace,
                action,
                instance_id,
                took_s,
            } => {
                Some(format!(
                    "✓ {workspace} {} ({instance_id}) [{}/{}] - {}",
                    done_word(*action),
                    self.progress.totals.done,
                    self.progress.totals.total,
                    secs(*took_s)
                ))
            }
            Event::Resizing {
                workspace,
                instance_id,
                from_instance_type,
                instance_type,
            } => Some(format!(
                "~ {workspace}: resizing {from_instance_type} → {instance_type} ({instance_id}), disk kept…"
            )),
            Event::ResizeUndone {
                workspace,
                instance_id,
                instance_type,
            } => Some(format!(
                "⚠ {workspace}: AWS refused the new type; back on {instance_type} ({instance_id}), disk kept"
            )),
            Event::Running { workspace, instance_id } => Some(format!("  {workspace} is running ({instance_id})")),
            Event::Stopped { workspace, instance_id } => Some(format!("  {workspace} is stopped ({instance_id})")),
            Event::Failed {
                workspace, code, message, ..
            } => Some(format!("✗ {workspace} failed: {code} — {message}")),
            Event::Skipped { workspace, reason, .. } => Some(format!("- {workspace} skipped: {reason}")),
            Event::WaitingForQuota { workspace, reason, .. } => Some(format!("⏸ {workspace}: {reason}")),
            Event::QuotaAvailable {
                workspace,
                quota,
                available_vcpus,
                ..
            } => Some(format!(
                "▶ {workspace}: the {quota} quota has room now ({available_vcpus} vCPUs free), going ahead"
            )),
            Event::Interrupted => Some(
                "Interrupted: letting the calls in flight finish; no new ones start. Press Ctrl-C again to exit at once."
                    .into(),
            ),
            Event::Summary(report) => Some(format!(
                "\n{}",
                summary_text(report, &self.rerun).trim_end()
            )),
            Event::Queued { .. } | Event::Launching { .. } => None,
        }
    }

    fn status(&self) -> String {
        let mut parts = vec![];
        if let Some(r) = self.progress.rate_per_minute {
            parts.push(format!("{r:.2}/min"));
        }
        let now = self.progress.elapsed_s + self.last.elapsed().as_secs_f64();
        let (wait, eta) = self.progress.at(now);
        if let Some(eta) = eta {
            parts.push(format!("ETA {}", secs(eta)));
        }
        if let Some(wait) = wait {
            parts.push(format!("⏳ next launch in {}", secs(wait)));
        }
        if !self.progress.sold_out.is_empty() {
            let pairs: Vec<String> = self
                .progress
                .sold_out
                .iter()
                .filter(|s| s.until_s > now)
                .map(|s| format!("{} in {}", s.instance_type, s.availability_zone))
                .collect();
            if !pairs.is_empty() {
                parts.push(format!("sold out: {}", pairs.join(", ")));
            }
        }
        parts.join(" · ")
    }
}

/// Renders events until the summary (or the end of the stream); `rerun` is the
/// command that finishes an interrupted run. Returns the final progress.
pub async fn render(mode: Mode, mut rx: UnboundedReceiver<Stamped>, rerun: &str) -> Progress {
    if mode == Mode::Terminal {
        return terminal(rx, rerun).await;
    }
    let mut lines = Lines::new(rerun);
    while let Some(e) = rx.recv().await {
        let line = lines.take(&e);
        let text = match mode {
            Mode::Json => Some(crate::engine::progress::json_line(&e, &lines.progress)),
            Mode::Quiet => match &e.event {
                Event::Failed { .. } | Event::Summary(_) => line,
                _ => None,
            },
            Mode::Log => {
                if let Some(line) = line {
                    for l in line.lines().filter(|l| !l.trim().is_empty()) {
                        tracing::info!(target: "prism::apply", "{l}");
                    }
                }
                None
            }
            _ => line,
        };
        if let Some(text) = text {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
        if matches!(e.event, Event::Summary(_)) {
            break;
        }
    }
    lines.progress
}

async fn terminal(mut rx: UnboundedReceiver<Stamped>, rerun: &str) -> Progress {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut lines = Lines::new(rerun);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            e = rx.recv() => {
                let Some(e) = e else { break };
                let last = matches!(e.event, Event::Summary(_));
                if last {
                    bar.finish_and_clear();
                }
                if let Some(line) = lines.take(&e) {
                    bar.println(line);
                }
                if last {
                    break;
                }
                bar.set_length(lines.progress.totals.total as u64);
                bar.set_position(lines.progress.totals.done as u64);
            }
            _ = tick.tick() => {}
        }
        bar.set_message(lines.status());
        bar.tick();
    }
    bar.finish_and_clear();
    lines.progress
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_release_plan() {
        assert_eq!(duration_text(Duration::from_secs(2)), "2s");
        assert_eq!(duration_text(Duration::from_secs(67)), "1m 7s");
        assert_eq!(duration_text(Duration::from_secs(3720)), "1h 2m");
    }

    #[test]
    fn the_summary_says_who_got_a_fallback_type_and_why() {
        let note = |w: &str| crate::engine::FallbackNote {
            workspace: w.into(),
            instance_type: "m5.xlarge".into(),
            instead_of: "t3.xlarge".into(),
            reason:
                "t3.xlarge is sold out in every zone of us-west-2 (InsufficientInstanceCapacity)"
                    .into(),
        };
        let r = Report {
            fleet: "f".into(),
            total: 3,
            succeeded: 3,
            launched: 3,
            failed: vec![],
            skipped: vec![],
            not_started: 0,
            confirmed_after_errors: vec![],
            launched_by_other_runs: vec![],
            fallbacks: vec![note("f-01"), note("f-03")],
            waiting_for_quota: vec![],
            interrupted: false,
            duration_s: 3.0,
        };
        assert_eq!(
            summary_text(&r, "prism apply"),
            "✅ All 3 workspaces launched successfully\nTotal time: 3s (avg 1.0s per workspace)\nLaunched as m5.xlarge instead of t3.xlarge: f-01, f-03 (t3.xlarge is sold out in every zone of us-west-2 (InsufficientInstanceCapacity))\n"
        );
    }

    #[test]
    fn summary_of_a_clean_launch() {
        let r = Report {
            fleet: "f".into(),
            total: 7,
            succeeded: 7,
            launched: 7,
            failed: vec![],
            skipped: vec![],
            not_started: 0,
            waiting_for_quota: vec![],
            confirmed_after_errors: vec![],
            launched_by_other_runs: vec![],
            fallbacks: vec![],
            interrupted: false,
            duration_s: 67.2,
        };
        assert_eq!(
            summary_text(&r, "prism apply"),
            "✅ All 7 workspaces launched successfully\nTotal time: 1m 7s (avg 9.6s per workspace)\n"
        );
    }

    #[test]
    fn summary_names_what_another_run_had_launched() {
        let r = Report {
            fleet: "f".into(),
            total: 3,
            succeeded: 3,
            launched: 1,
            failed: vec![],
            skipped: vec![],
            not_started: 0,
            confirmed_after_errors: vec![],
            launched_by_other_runs: vec!["f-02".into(), "f-03".into()],
            fallbacks: vec![],
            waiting_for_quota: vec![],
            interrupted: false,
            duration_s: 3.0,
        };
        assert_eq!(
            summary_text(&r, "prism apply"),
            "✅ All 3 workspaces are up (1 launched by this run, 2 by another run)\nTotal time: 3s (avg 1.0s per workspace)\nAlready launched by another run: f-02, f-03 (AWS answered this run with the instances that run had launched; nothing was launched twice)\n"
        );
    }
}

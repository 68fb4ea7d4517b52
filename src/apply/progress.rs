//! The event stream for people and programs: a live bar on a terminal, plain lines when
//! piped, NDJSON with `--format json`.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::Report;
use super::events::{Event, Stamped};
use crate::cloud::ErrorClass;
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

/// A duration as people say it: `45s`, `2m 5s`, `1h 3m`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

fn secs(s: f64) -> String {
    human(Duration::from_secs_f64(s.max(0.0)))
}

fn done_word(action: ActionKind) -> &'static str {
    match action {
        ActionKind::Create | ActionKind::Replace => "launched",
        ActionKind::Start => "started",
        ActionKind::Stop => "stopped",
        ActionKind::Delete => "terminated",
        ActionKind::Hibernate => "hibernated",
    }
}

/// The closing text of an apply.
pub fn summary_text(r: &Report) -> String {
    let took = Duration::from_secs_f64(r.duration_s);
    let mut out = String::new();
    if r.complete() {
        let what = if r.launched == r.total {
            format!("All {} workspaces launched successfully", r.total)
        } else {
            format!("All {} changes applied successfully", r.total)
        };
        let avg = if r.total > 0 {
            format!(" (avg {:.1}s per workspace)", r.duration_s / r.total as f64)
        } else {
            String::new()
        };
        out.push_str(&format!("✅ {what}\nTotal time: {}{avg}\n", human(took)));
        return out;
    }
    out.push_str(&format!(
        "❌ {} of {} changes done in {}",
        r.succeeded,
        r.total,
        human(took)
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
    if !parts.is_empty() {
        out.push_str(&format!(" ({})", parts.join(", ")));
    }
    out.push_str(":\n");
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
    if r.interrupted {
        out.push_str("Interrupted: run `prism apply` again to finish.\n");
    } else if !r.failed.is_empty() {
        out.push_str(
            "The other workspaces are done; run `prism apply` again to retry what failed.\n",
        );
    }
    out
}

/// Line-oriented state shared by the terminal and plain renderers.
#[derive(Default)]
struct Lines {
    total: usize,
    done: std::collections::HashSet<String>,
    rate: Option<f64>,
    /// (eta in seconds, when it was estimated)
    eta: Option<(f64, Instant)>,
    wait_until: Option<Instant>,
}

impl Lines {
    fn line(&mut self, e: &Event) -> Option<String> {
        match e {
            Event::Started {
                fleet,
                total,
                launches,
                rate_per_minute,
                burst_size,
                adaptive,
            } => {
                self.total = *total;
                self.rate = *rate_per_minute;
                let pacing = match rate_per_minute {
                    Some(r) if *launches > 0 => format!(
                        "Rate limiting enabled: {r} launches per minute (burst: {burst_size}{})\n\n",
                        if *adaptive { ", adaptive" } else { "" }
                    ),
                    _ => String::new(),
                };
                let what = if launches == total {
                    format!("Launching {total} workspaces")
                } else {
                    format!("Applying {total} changes")
                };
                Some(format!("\n{pacing}{what} of fleet {fleet}:"))
            }
            Event::RateLimited { wait_s, eta_s, .. } => {
                self.eta = Some((*eta_s, Instant::now()));
                self.wait_until = Some(Instant::now() + Duration::from_secs_f64(*wait_s));
                Some(format!(
                    "⏳ Rate limit reached, waiting {} before next launch… (about {} left)",
                    secs(*wait_s),
                    secs(*eta_s)
                ))
            }
            Event::RateChanged { rate_per_minute, reason } => {
                self.rate = Some(*rate_per_minute);
                Some(format!("⚠ {reason}: launch rate now {rate_per_minute:.2} per minute"))
            }
            Event::Retrying {
                workspace,
                attempt,
                max_attempts,
                delay_s,
                code,
                class,
            } => {
                let what = match class {
                    ErrorClass::Throttle => "AWS throttling detected".to_string(),
                    _ => format!("{code} from AWS"),
                };
                Some(format!(
                    "⚠ {workspace}: {what}, retrying in {} (attempt {attempt}/{})…",
                    secs(*delay_s),
                    max_attempts - 1
                ))
            }
            Event::ZoneFull {
                workspace,
                availability_zone,
                next_zone,
            } => Some(format!(
                "⚠ {workspace}: no capacity in {}, trying {next_zone}…",
                availability_zone.as_deref().unwrap_or("the zone AWS chose")
            )),
            Event::Launched {
                workspace,
                instance_id,
                took_s,
            } => {
                self.done.insert(workspace.clone());
                Some(format!(
                    "✓ {workspace} launched ({instance_id}) [{}/{}] - {}",
                    self.done.len(),
                    self.total,
                    secs(*took_s)
                ))
            }
            Event::Changed {
                workspace,
                action,
                instance_id,
                took_s,
            } => {
                self.done.insert(workspace.clone());
                Some(format!(
                    "✓ {workspace} {} ({instance_id}) [{}/{}] - {}",
                    done_word(*action),
                    self.done.len(),
                    self.total,
                    secs(*took_s)
                ))
            }
            Event::Running { workspace, instance_id } => Some(format!("  {workspace} is running ({instance_id})")),
            Event::Stopped { workspace, instance_id } => Some(format!("  {workspace} is stopped ({instance_id})")),
            Event::Failed {
                workspace, code, message, ..
            } => Some(format!("✗ {workspace} failed: {code} — {message}")),
            Event::Skipped { workspace, reason, .. } => Some(format!("- {workspace} skipped: {reason}")),
            Event::Interrupted => Some(
                "Interrupted: letting the calls in flight finish; no new ones start. Press Ctrl-C again to exit at once."
                    .into(),
            ),
            Event::Summary(report) => Some(format!("\n{}", summary_text(report).trim_end())),
            Event::Queued { .. } | Event::Launching { .. } => None,
        }
    }

    fn status(&self) -> String {
        let mut parts = vec![];
        if let Some(r) = self.rate {
            parts.push(format!("{r:.2}/min"));
        }
        if let Some((eta, at)) = self.eta {
            let left = eta - at.elapsed().as_secs_f64();
            if left > 0.0 {
                parts.push(format!("ETA {}", secs(left)));
            }
        }
        if let Some(until) = self.wait_until {
            let now = Instant::now();
            if until > now {
                parts.push(format!("⏳ next launch in {}", human(until - now)));
            }
        }
        parts.join(" · ")
    }
}

/// Renders events until the summary (or the end of the stream).
pub async fn render(mode: Mode, mut rx: UnboundedReceiver<Stamped>) {
    if mode == Mode::Terminal {
        return terminal(rx).await;
    }
    let mut lines = Lines::default();
    while let Some(e) = rx.recv().await {
        let text = match mode {
            Mode::Json => Some(serde_json::to_string(&e).expect("events serialize")),
            Mode::Quiet => match &e.event {
                Event::Failed { .. } | Event::Summary(_) => lines.line(&e.event),
                _ => None,
            },
            Mode::Log => {
                if let Some(line) = lines.line(&e.event) {
                    for l in line.lines().filter(|l| !l.trim().is_empty()) {
                        tracing::info!(target: "prism::apply", "{l}");
                    }
                }
                None
            }
            _ => lines.line(&e.event),
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
}

async fn terminal(mut rx: UnboundedReceiver<Stamped>) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut lines = Lines::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            e = rx.recv() => {
                let Some(e) = e else { break };
                let last = matches!(e.event, Event::Summary(_));
                if last {
                    bar.finish_and_clear();
                }
                if let Some(line) = lines.line(&e.event) {
                    bar.println(line);
                }
                if last {
                    break;
                }
                bar.set_length(lines.total as u64);
                bar.set_position(lines.done.len() as u64);
            }
            _ = tick.tick() => {}
        }
        bar.set_message(lines.status());
        bar.tick();
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_release_plan() {
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_secs(67)), "1m 7s");
        assert_eq!(human(Duration::from_secs(3720)), "1h 2m");
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
            interrupted: false,
            duration_s: 67.2,
        };
        assert_eq!(
            summary_text(&r),
            "✅ All 7 workspaces launched successfully\nTotal time: 1m 7s (avg 9.6s per workspace)\n"
        );
    }
}

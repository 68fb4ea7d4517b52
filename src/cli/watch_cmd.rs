//! `prism watch`: the long-running reconciler.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use std::collections::HashMap;

use super::progress::{self, duration_text};
use super::{Failure, GlobalArgs, Refusal, connect};
use crate::cloud::Cloud;
use crate::engine::Engine;
use crate::engine::events::{Event, Stamped};
use crate::engine::launch_notes::LaunchNotes;
use crate::manifest;
use crate::store::{LEASE_RENEW, LeaseKeeper, Standing as LeaseStanding, StoreUrl, keep_once};
use crate::watch::{self, Notice, Pass, WatchOptions};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The fleet manifest to keep.
    pub file: PathBuf,
    /// Reconcile at least this often, to undo drift.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub resync: Duration,
    /// Run one pass and exit (for cron and tests): 0 when nothing failed.
    #[arg(long)]
    pub once: bool,
    /// Actions in flight at once.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: u16,
    /// Log records on stderr as text, or as JSON objects with their fields (fleet, pass,
    /// workspace, AWS request id), one per line, for log collectors
    #[arg(
        long,
        value_enum,
        default_value_t,
        env = "PRISM_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: super::logging::LogFormat,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (no token: loopback unless
    /// --allow-remote).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Let --metrics-listen be an address other than loopback, for a scraper on another
    /// machine
    #[arg(long, requires = "metrics_listen")]
    pub allow_remote: bool,
    /// Where replicas share state: `dynamodb://TABLE` (made by `prism store init`) lets
    /// several watches of one manifest run on several machines, one reconciling at a
    /// time; `files` keeps this machine's launch notes in a file [default: the settings
    /// file's `store`, else files]
    #[arg(long, env = "PRISM_STORE", value_name = "URL")]
    pub store: Option<crate::store::StoreUrl>,
}

pub async fn run(global: &GlobalArgs, args: &WatchArgs) -> Result<ExitCode, Failure> {
    if let Some(addr) = &args.metrics_listen
        && let Some(why) = crate::serve::metrics::refusal(addr, args.allow_remote)
    {
        return Err(Failure::Refused(Refusal::Unsafe, why));
    }
    let manifest = manifest::load(&args.file)?;
    let config = crate::config::load()?;
    let scrape = match args.metrics_listen {
        Some(at) => Some(super::metrics_listener(at).await?),
        None => None,
    };
    let metrics = scrape
        .as_ref()
        .map(|_| Arc::new(crate::metrics::Metrics::new()));
    let mut aws = connect(global, &manifest).await?;
    if let Some(m) = &metrics {
        aws = aws.with_metrics(m.clone());
    }
    let cancel = CancellationToken::new();
    let (notes, lease) = match crate::config::store(args.store.as_ref(), &config) {
        StoreUrl::Files => (super::launch_notes(global, &aws).await, None),
        StoreUrl::DynamoDb { table } => {
            let keeper = super::store_cmd::lease_keeper(&aws, &table).await?;
            // Whose turn it is is known before the first pass.
            let mut last = None;
            keep_once(&keeper, &mut last, metrics.as_deref(), WORK).await;
            let notes = Arc::new(LaunchNotes::in_store(keeper.clone()));
            let kept = keep_lease(keeper, last, metrics.clone(), cancel.clone());
            (notes, Some(tokio::spawn(kept)))
        }
    };
    let cloud: Arc<dyn Cloud> = Arc::new(aws);
    let engine = Engine::new(
        cloud.clone(),
        crate::config::launch_rate(&manifest.rate_limit, &config),
        notes,
    );
    if let (Some(l), Some(m)) = (scrape, &metrics) {
        engine.set_metrics(m.clone());
        tracing::info!(
            "metrics on http://{}/metrics",
            l.local_addr().map_err(Failure::Io)?
        );
        tokio::spawn(crate::serve::metrics::run(
            l,
            m.clone(),
            std::future::pending(),
        ));
    }
    engine.set_sold_out_ttl(crate::config::sold_out_ttl(&config));
    let opts = WatchOptions {
        resync: args.resync,
        once: args.once,
        parallelism: usize::from(args.parallelism),
        config,
        quota_recheck: crate::config::quota_recheck(),
    };
    tracing::info!(
        "watching {} (fleet {} in {}); resync every {}",
        args.file.display(),
        manifest.name,
        cloud.region(),
        humantime::format_duration(args.resync)
    );
    tokio::spawn(shutdown(cancel.clone()));
    let (notices, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::spawn(report(rx, args.file.clone(), args.once));
    let result = watch::run(
        args.file.clone(),
        manifest,
        engine,
        opts,
        cancel.clone(),
        notices,
    )
    .await;
    let _ = reporter.await;
    cancel.cancel();
    if let Some(lease) = lease {
        let _ = lease.await;
    }
    let clean = result.map_err(|e| {
        Failure::Refused(
            Refusal::Unavailable,
            format!("cannot watch {}: {e}", args.file.display()),
        )
    })?;
    Ok(if clean || !args.once {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What a watch has said of each workspace that stands still (held, waiting, failing),
/// so that it says it again only when it changes.
#[derive(Default)]
struct Standing {
    said: HashMap<String, String>,
    /// The last pass's status, without its number and timing.
    last_status: Option<String>,
}

/// What stays the same while a workspace stands still (a backoff's countdown and a
/// quota's numbers change every pass).
fn standing_key(kind: &str, what: &str) -> String {
    format!("{kind} {what}")
}

impl Standing {
    /// Whether `e` says something new; remembers what it says.
    fn is_news(&mut self, e: &Event) -> bool {
        let (ws, key) = match e {
            Event::Skipped {
                workspace, reason, ..
            } => (workspace, standing_key("skipped", &reason.standing())),
            Event::WaitingForQuota {
                workspace, reason, ..
            } => (workspace, standing_key("waiting", &reason.standing())),
            Event::Failed {
                workspace, code, ..
            } => (workspace, standing_key("failed", code)),
            Event::Launched { workspace, .. }
            | Event::Confirmed { workspace, .. }
            | Event::LaunchedElsewhere { workspace, .. }
            | Event::Changed { workspace, .. } => {
                self.said.remove(workspace);
                return true;
            }
            Event::Queued { .. } | Event::Launching { .. } | Event::Started { .. } => {
                return false;
            }
            _ => return true,
        };
        self.said.insert(ws.clone(), key.clone()) != Some(key)
    }
}

/// Logs one run of a pass: a line for what is new; what stands still as before is
/// logged at debug level only. Returns whether anything new was said.
async fn log_run(
    mut events: tokio::sync::mpsc::UnboundedReceiver<Stamped>,
    standing: &mut Standing,
    rerun: &str,
) -> bool {
    let mut lines = progress::Lines::new(rerun);
    let mut started: Option<String> = None;
    let mut news = false;
    while let Some(e) = events.recv().await {
        let line = lines.take(&e);
        let summary = matches!(e.event, Event::Summary(_));
        let new = if summary {
            news
        } else {
            standing.is_news(&e.event)
        };
        if let Some(line) = line {
            if matches!(e.event, Event::Started { .. }) {
                started = Some(line);
                continue;
            }
            // The pass's status line sums the run up; the full summary is for -v.
            if summary {
                for l in line.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::debug!(target: "prism::apply", "{l}");
                }
                break;
            }
            // In JSON, each line names its workspace.
            let workspace = serde_json::to_value(&e.event)
                .ok()
                .and_then(|v| v["workspace"].as_str().map(str::to_string));
            let span = match &workspace {
                Some(w) => tracing::info_span!("workspace", workspace = %w),
                None => tracing::Span::none(),
            };
            let _in = span.enter();
            for l in line.lines().filter(|l| !l.trim().is_empty()) {
                if new {
                    if let Some(s) = started.take() {
                        for s in s.lines().filter(|l| !l.trim().is_empty()) {
                            tracing::info!(target: "prism::apply", "{s}");
                        }
                    }
                    tracing::info!(target: "prism::apply", "{l}");
                } else {
                    tracing::debug!(target: "prism::apply", "{l}");
                }
            }
        }
        news |= new && !summary;
        if summary {
            break;
        }
    }
    news
}

/// Logs what the watch tells, one record per line, and only what is new at the
/// default level: a pass with nothing new to say is a debug heartbeat (`-v`).
async fn report(
    mut notices: tokio::sync::mpsc::UnboundedReceiver<Notice>,
    path: PathBuf,
    once: bool,
) {
    let mut standing = Standing::default();
    let mut news = false;
    let rerun = format!("prism apply {}", path.display());
    // The pass under way: its records carry its fleet and number.
    let mut span = tracing::Span::none();
    while let Some(n) = notices.recv().await {
        match n {
            Notice::PassStarted { pass, fleet } => {
                news = false;
                span = tracing::info_span!("pass", fleet = %fleet, pass);
                span.in_scope(|| tracing::debug!("reconciling"));
            }
            Notice::Run(events) => {
                news = log_run(events, &mut standing, &rerun)
                    .instrument(span.clone())
                    .await
            }
            Notice::PassEnded {
                pass,
                outcome,
                next,
                boundary,
            } => span.in_scope(|| {
                let line = status(pass, &outcome, (!once).then_some(next), boundary);
                let key = status(0, &outcome, Some(Duration::ZERO), None);
                let changed = standing.last_status.replace(key.clone()) != Some(key);
                let quiet = outcome.report.is_none()
                    && outcome.held == 0
                    && outcome.error.is_none()
                    && outcome.owned_elsewhere.is_none();
                // A pass that carried nothing out and said nothing new (workspaces
                // waiting or held as before) is not worth a line, whatever its counts.
                let idle = outcome.error.is_none()
                    && outcome
                        .report
                        .as_ref()
                        .is_none_or(|r| r.succeeded == 0 && r.failed.is_empty());
                if outcome.owned_elsewhere.is_some() && changed {
                    tracing::warn!(pass, "{line}");
                } else if (news || (changed && !idle)) && !quiet {
                    tracing::info!(pass, "{line}");
                } else {
                    tracing::debug!(pass, "{line}");
                }
            }),
            Notice::Invalid(e) => {
                super::logging::tell(true, super::render_problems(&e, false).trim_end());
                tracing::warn!(
                    "{} is invalid: keeping the last good manifest and changing nothing until it is fixed",
                    path.display()
                );
            }
            Notice::RegionChanged => {
                tracing::warn!("the manifest's region changed: restart prism watch to follow it")
            }
            Notice::FileGone => tracing::warn!(
                "{} was deleted: reconciling stops until it is back; no workspace is deleted",
                path.display()
            ),
            Notice::FileBack => {
                tracing::info!("{} is back: reconciling again", path.display());
            }
            Notice::Schedule(message) => tracing::info!("{message}"),
            Notice::Stopping => {}
        }
    }
}

/// The one status line of a pass; `next`: when the next pass comes (None: there is
/// none, `--once`); `boundary`: the time to the schedule's next change.
fn status(n: u64, pass: &Pass, next: Option<Duration>, boundary: Option<Duration>) -> String {
    let next = match (next, boundary) {
        (None, _) => "one pass (--once): no next pass".to_string(),
        (Some(next), Some(b)) if b < next => {
            format!("next pass at the schedule's change in {}", duration_text(b))
        }
        (Some(next), _) if pass.waiting_for_quota() > 0 => {
            format!("quota read again in {}", duration_text(next))
        }
        (Some(next), _) => format!("next resync in {}", duration_text(next)),
    };
    if let Some(owner) = &pass.owned_elsewhere {
        return format!("pass {n}: {owner}; {next}");
    }
    if let Some(e) = &pass.error {
        let explained = crate::errors::explain(e, &crate::errors::Context::default());
        return format!(
            "pass {n}: could not read the account: {} [{}]; {next}",
            explained.title, explained.code
        );
    }
    let Some(r) = &pass.report else {
        let held = if pass.held > 0 {
            format!("; {} deletions held", pass.held)
        } else {
            String::new()
        };
        return format!("pass {n}: no changes{held}; {next}");
    };
    let waiting = if r.waiting_for_quota.is_empty() {
        String::new()
    } else {
        format!(", {} waiting for quota", r.waiting_for_quota.len())
    };
    format!(
        "pass {n}: {} done, {} failed, {} skipped{waiting}{}; {next}",
        r.succeeded,
        r.failed.len(),
        r.skipped.len(),
        if pass.held > 0 {
            format!(" ({} deletions held)", pass.held)
        } else {
            String::new()
        }
    )
}

/// SIGINT or SIGTERM: let in-flight actions finish, then exit 0.
async fn shutdown(cancel: CancellationToken) {
    super::stop_signal().await;
    tracing::info!("stopping: letting the actions in flight finish");
    cancel.cancel();
}

/// What the holder of a watch's lease does.
const WORK: &str = "it reconciles and launches";

/// Keeps the lease (or waits for it) until `cancel`, then gives it up.
async fn keep_lease(
    keeper: Arc<LeaseKeeper>,
    mut last: Option<LeaseStanding>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    cancel: CancellationToken,
) {
    let mut next = last.as_ref().map_or(LEASE_RENEW, LeaseStanding::next_tick);
    loop {
        tokio::select! {
            () = tokio::time::sleep(next) => {
                next = keep_once(&keeper, &mut last, metrics.as_deref(), WORK).await;
            }
            () = cancel.cancelled() => break,
        }
    }
    keeper.release().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status line names what wakes the watch first: the schedule's next change, the
    /// next quota reading, or the next resync.
    #[test]
    fn the_status_line_names_what_comes_first() {
        let quiet = Pass::default();
        let (min, hour) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(
            status(2, &quiet, Some(5 * min), Some(2 * min)),
            "pass 2: no changes; next pass at the schedule's change in 2m 0s"
        );
        assert_eq!(
            status(2, &quiet, Some(5 * min), Some(hour)),
            "pass 2: no changes; next resync in 5m 0s"
        );
        assert_eq!(
            status(2, &quiet, Some(5 * min), None),
            "pass 2: no changes; next resync in 5m 0s"
        );
        assert_eq!(
            status(1, &quiet, None, Some(2 * min)),
            "pass 1: no changes; one pass (--once): no next pass"
        );
    }
}

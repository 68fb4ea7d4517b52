//! `prism watch`: the long-running reconciler.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use super::progress::{self, Mode, human};
use super::{Failure, GlobalArgs, connect};
use crate::cloud::Cloud;
use crate::engine::Engine;
use crate::manifest;
use crate::watch::{self, Notice, Pass, WatchOptions};

/// How `prism watch` logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

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
    /// Log lines as text or as JSON objects (for log collectors).
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
}

pub async fn run(global: &GlobalArgs, args: &WatchArgs) -> Result<ExitCode, Failure> {
    let manifest = manifest::load(&args.file)?;
    let config = crate::config::load()?;
    let cloud: Arc<dyn Cloud> = Arc::new(connect(global, &manifest).await?);
    let engine = Engine::new(
        cloud.clone(),
        crate::config::launch_rate(&manifest.rate_limit, &config),
        super::launch_memory(global, cloud.region()),
    );
    let opts = WatchOptions {
        resync: args.resync,
        once: args.once,
        parallelism: usize::from(args.parallelism),
        config,
    };
    tracing::info!(
        "watching {} (fleet {} in {}); resync every {}",
        args.file.display(),
        manifest.name,
        cloud.region(),
        humantime::format_duration(args.resync)
    );
    let cancel = CancellationToken::new();
    tokio::spawn(shutdown(cancel.clone()));
    let (notices, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::spawn(report(rx, args.file.clone()));
    let result = watch::run(args.file.clone(), manifest, engine, opts, cancel, notices).await;
    let _ = reporter.await;
    let clean =
        result.map_err(|e| Failure::Usage(format!("cannot watch {}: {e}", args.file.display())))?;
    Ok(if clean || !args.once {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Logs what the watch tells, one record per line.
async fn report(mut notices: tokio::sync::mpsc::UnboundedReceiver<Notice>, path: PathBuf) {
    while let Some(n) = notices.recv().await {
        match n {
            Notice::PassStarted { pass, fleet } => {
                tracing::info!(pass, fleet = %fleet, "reconciling");
            }
            Notice::Run(events) => {
                progress::render(
                    Mode::Log,
                    events,
                    &format!("prism apply {}", path.display()),
                )
                .await;
            }
            Notice::PassEnded {
                pass,
                outcome,
                next,
            } => tracing::info!(pass, "{}", status(pass, &outcome, next)),
            Notice::Invalid(e) => {
                eprint!("{}", super::render_problems(&e, false));
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
            Notice::Stopping => {}
        }
    }
}

/// The one status line of a pass.
fn status(n: u64, pass: &Pass, next: Duration) -> String {
    let next = format!("next resync in {}", human(next));
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
    format!(
        "pass {n}: {} done, {} failed, {} skipped{}; {next}",
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

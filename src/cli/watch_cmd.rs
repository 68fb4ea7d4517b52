//! `prism watch`: the long-running reconciler.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use super::{Failure, GlobalArgs, connect};
use crate::apply::progress::Mode;
use crate::cloud::Cloud;
use crate::manifest;
use crate::watch::{self, WatchOptions};

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
    let opts = WatchOptions {
        resync: args.resync,
        once: args.once,
        parallelism: usize::from(args.parallelism),
        config,
        mode: Mode::Log,
        memory: super::launch_memory(global, cloud.region()),
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
    let clean = watch::run(args.file.clone(), manifest, cloud, opts, cancel)
        .await
        .map_err(|e| Failure::Usage(format!("cannot watch {}: {e}", args.file.display())))?;
    Ok(if clean || !args.once {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// SIGINT or SIGTERM: let in-flight actions finish, then exit 0.
async fn shutdown(cancel: CancellationToken) {
    super::stop_signal().await;
    tracing::info!("stopping: letting the actions in flight finish");
    cancel.cancel();
}

//! `prism watch`: keep the fleet as the manifest says, on every edit of the file and on
//! a resync timer. The loop only schedules; each pass is [`reconcile_once`].
//!
//! Safe to leave running: an invalid edit keeps the last good manifest, a deleted file
//! stops reconciling, a pass that would delete more than half of the fleet holds its
//! deletions, failing workspaces back off one by one, and a pass never overlaps another.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::apply::events::Events;
use crate::apply::progress::{self, Mode};
use crate::apply::{self, Options, Report};
use crate::cloud::{Cloud, CloudError, ErrorClass};
use crate::manifest::{self, Manifest, ManifestError};
use crate::observe::observe;
use crate::plan::{self, ActionKind};

/// How a watch runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Time between passes when nothing else triggers one.
    pub resync: Duration,
    /// Run one pass and return.
    pub once: bool,
    pub parallelism: usize,
    /// Launch pacing settings file, read once.
    pub config: crate::config::UserConfig,
    /// How each pass's actions are reported.
    pub mode: Mode,
    /// Where each workspace's latest launch went, kept across passes.
    pub memory: std::sync::Arc<crate::apply::memory::LaunchMemory>,
}

/// Per-workspace requeue after failures, as a controller would: 10 s, doubling to 10 min.
#[derive(Debug, Default)]
pub struct Requeue {
    failing: HashMap<String, (u32, Instant)>,
}

impl Requeue {
    const FIRST: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(600);

    /// Records a failure of `workspace` at `now`.
    pub fn failed(&mut self, workspace: &str, now: Instant) {
        let n = self.failing.get(workspace).map_or(0, |(n, _)| *n) + 1;
        let delay = Self::FIRST
            .saturating_mul(1 << (n - 1).min(10))
            .min(Self::MAX);
        self.failing.insert(workspace.to_string(), (n, now + delay));
    }

    /// Forgets the failures of `workspace`.
    pub fn succeeded(&mut self, workspace: &str) {
        self.failing.remove(workspace);
    }

    /// The workspaces still backing off at `now`, with why.
    pub fn waiting(&self, now: Instant) -> BTreeMap<String, String> {
        self.failing
            .iter()
            .filter(|(_, (_, at))| *at > now)
            .map(|(w, (n, at))| {
                let reason = format!(
                    "backing off after {n} failure{}; next try in {}",
                    if *n == 1 { "" } else { "s" },
                    progress::human(*at - now)
                );
                (w.clone(), reason)
            })
            .collect()
    }

    /// When the next backed-off workspace is due.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.failing
            .values()
            .map(|(_, at)| *at)
            .filter(|at| *at > now)
            .min()
    }
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct Pass {
    pub report: Option<Report>,
    /// Deletions held back for safety.
    pub held: usize,
    /// The pass could not observe the account.
    pub error: Option<CloudError>,
}

/// One reconcile pass: observe, plan, hold what is unsafe, apply the rest.
pub async fn reconcile_once(
    cloud: Arc<dyn Cloud>,
    manifest: &Manifest,
    requeue: &mut Requeue,
    opts: &WatchOptions,
    cancel: &CancellationToken,
) -> Pass {
    let observed = match observe(cloud.as_ref(), manifest).await {
        Ok(o) => o,
        Err(e) => {
            return Pass {
                error: Some(e),
                ..Pass::default()
            };
        }
    };
    let plan = plan::plan(manifest, &observed);
    let mut skip = requeue.waiting(Instant::now());
    let live = observed
        .instances
        .iter()
        .filter(|i| !i.state.is_gone())
        .count();
    let deletes: Vec<&str> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.action, ActionKind::Delete | ActionKind::Replace))
        .map(|a| a.workspace.as_str())
        .collect();
    let held = if !deletes.is_empty() && deletes.len() * 2 > live {
        let reason = format!(
            "held: this pass would delete {} of the fleet's {live} instances; run `prism apply {}` to confirm",
            deletes.len(),
            manifest.source.display()
        );
        for w in &deletes {
            skip.insert((*w).to_string(), reason.clone());
        }
        deletes.len()
    } else {
        0
    };
    for q in &plan.quota {
        for w in &q.over_quota {
            skip.entry(w.clone())
                .or_insert_with(|| format!("not launched: no room left in the {} quota", q.name));
        }
    }
    if !plan.has_changes() {
        return Pass {
            report: None,
            held,
            error: None,
        };
    }
    let options = Options {
        parallelism: opts.parallelism,
        wait: None,
        poll: Duration::from_secs(2),
        rate: crate::config::launch_rate(&manifest.rate_limit, &opts.config),
        retry: manifest.retry.clone(),
        skip,
        memory: opts.memory.clone(),
    };
    let (events, rx) = Events::channel();
    let renderer = tokio::spawn(progress::render(opts.mode, rx));
    let report = apply::execute(
        cloud,
        manifest,
        &plan,
        &observed,
        &options,
        events,
        cancel.clone(),
    )
    .await;
    let _ = renderer.await;
    let now = Instant::now();
    for a in &plan.actions {
        if report.failed.iter().any(|f| f.workspace == a.workspace) {
            requeue.failed(&a.workspace, now);
        } else if !report.skipped.iter().any(|s| s.workspace == a.workspace) {
            requeue.succeeded(&a.workspace);
        }
    }
    Pass {
        report: Some(report),
        held,
        error: None,
    }
}

/// The one status line of a pass.
fn status(n: u64, pass: &Pass, next: Duration) -> String {
    let next = format!("next resync in {}", progress::human(next));
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

/// What tells a changed file from an unchanged one without reading it.
fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads the manifest again after a change of the file.
enum Reload {
    Good(Box<Manifest>),
    Invalid(ManifestError),
    Gone,
}

fn reload(path: &Path) -> Reload {
    if !path.exists() {
        return Reload::Gone;
    }
    match manifest::load(path) {
        Ok(m) => Reload::Good(Box::new(m)),
        Err(e) => Reload::Invalid(e),
    }
}

/// File change notifications for `path`, debounced (300 ms). The folder is watched, so
/// editors that save by writing a new file and renaming it over the old one are seen.
type FileWatcher = notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>;

fn file_events(path: &Path) -> notify::Result<(FileWatcher, mpsc::UnboundedReceiver<()>)> {
    use notify::RecursiveMode;
    let (tx, rx) = mpsc::unbounded_channel();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut debouncer = notify_debouncer_mini::new_debouncer(
        Duration::from_millis(300),
        move |res: notify_debouncer_mini::DebounceEventResult| {
            if let Ok(events) = res
                && events
                    .iter()
                    .any(|e| e.path.file_name().map(|n| n.to_os_string()) == name)
            {
                let _ = tx.send(());
            }
        },
    )?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    debouncer
        .watcher()
        .watch(dir, RecursiveMode::NonRecursive)?;
    Ok((debouncer, rx))
}

/// Backoff of the whole loop while AWS throttles or cannot be read: 5 s doubling to the resync.
fn loop_backoff(previous: Duration, resync: Duration) -> Duration {
    (previous * 2).max(Duration::from_secs(5)).min(resync)
}

/// Watches `path` until `cancel` (or, with `once`, for one pass). Returns whether the
/// last pass left nothing failed.
pub async fn run(
    path: PathBuf,
    first: Manifest,
    cloud: Arc<dyn Cloud>,
    opts: WatchOptions,
    cancel: CancellationToken,
) -> notify::Result<bool> {
    let (_guard, mut changes) = file_events(&path)?;
    let mut manifest = first;
    let mut requeue = Requeue::default();
    let mut passes = 0u64;
    let mut paused = false;
    let mut backoff = Duration::ZERO;
    let mut due = Instant::now();
    let mut clean = true;
    // Reading the file raises notify events of its own: only a changed stamp counts.
    let mut stamp = file_stamp(&path);
    loop {
        if !paused && Instant::now() >= due && !cancel.is_cancelled() {
            passes += 1;
            tracing::info!(pass = passes, fleet = %manifest.name, "reconciling");
            let pass = reconcile_once(cloud.clone(), &manifest, &mut requeue, &opts, &cancel).await;
            let throttled = pass
                .error
                .as_ref()
                .is_some_and(|e| e.class != ErrorClass::Permanent)
                || pass.report.as_ref().is_some_and(|r| {
                    r.failed
                        .iter()
                        .any(|f| f.class == Some(ErrorClass::Throttle))
                });
            backoff = if throttled || pass.error.is_some() {
                loop_backoff(backoff, opts.resync)
            } else {
                Duration::ZERO
            };
            let next = if backoff.is_zero() {
                opts.resync
            } else {
                backoff
            };
            clean =
                pass.error.is_none() && pass.report.as_ref().is_none_or(|r| r.failed.is_empty());
            tracing::info!(pass = passes, "{}", status(passes, &pass, next));
            due = Instant::now() + next;
            if opts.once {
                return Ok(clean);
            }
        }
        let requeue_due = requeue.next_due(Instant::now()).unwrap_or(due);
        tokio::select! {
            change = changes.recv() => {
                if change.is_none() {
                    return Ok(clean);
                }
                let now = file_stamp(&path);
                if now == stamp {
                    continue;
                }
                stamp = now;
                match reload(&path) {
                    Reload::Good(m) => {
                        if m.region != manifest.region {
                            tracing::warn!("the manifest's region changed: restart prism watch to follow it");
                        }
                        if paused {
                            tracing::info!("{} is back: reconciling again", path.display());
                        }
                        manifest = *m;
                        paused = false;
                        due = Instant::now();
                    }
                    Reload::Invalid(e) => {
                        eprint!("{}", crate::cli::render_problems(&e, false));
                        tracing::warn!("{} is invalid: keeping the last good manifest and changing nothing until it is fixed", path.display());
                    }
                    Reload::Gone => {
                        if !paused {
                            tracing::warn!("{} was deleted: reconciling stops until it is back; no workspace is deleted", path.display());
                        }
                        paused = true;
                    }
                }
            }
            () = sleep_until(due.min(requeue_due)) => {
                due = due.min(Instant::now());
            }
            () = cancel.cancelled() => return Ok(clean),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failing_workspaces_back_off_exponentially_and_recover() {
        let mut r = Requeue::default();
        let t0 = Instant::now();
        r.failed("a", t0);
        assert_eq!(r.next_due(t0), Some(t0 + Duration::from_secs(10)));
        assert!(r.waiting(t0).contains_key("a"));
        tokio::time::advance(Duration::from_secs(11)).await;
        let t1 = Instant::now();
        assert!(r.waiting(t1).is_empty(), "due again after 10 s");
        r.failed("a", t1);
        assert_eq!(r.next_due(t1), Some(t1 + Duration::from_secs(20)));
        for _ in 0..10 {
            r.failed("a", t1);
        }
        assert_eq!(
            r.next_due(t1),
            Some(t1 + Duration::from_secs(600)),
            "capped at 10 min"
        );
        r.succeeded("a");
        assert_eq!(r.next_due(t1), None);
    }

    #[test]
    fn the_loop_backs_off_up_to_the_resync() {
        let resync = Duration::from_secs(300);
        let mut d = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..8 {
            d = loop_backoff(d, resync);
            seen.push(d.as_secs());
        }
        assert_eq!(seen, [5, 10, 20, 40, 80, 160, 300, 300]);
    }
}

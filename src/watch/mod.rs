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
use tracing::Instrument;

use crate::cloud::{CloudError, ErrorClass};
use crate::engine::Report;
use crate::engine::events::Stamped;
use crate::engine::{Engine, Job, RunOptions, Verdict};
use crate::manifest::{self, Manifest, ManifestError};
use crate::observe::observe_with;
use crate::plan::{self, ActionKind, Plan};

pub mod wall_clock;
pub use wall_clock::WallClock;

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
    /// Time until the next pass while a workspace waits for room in a quota (when
    /// shorter than the resync): the pass reads the quota and the usage again.
    pub quota_recheck: Duration,
}

/// What the watch tells its front door; the library itself prints nothing.
#[derive(Debug)]
pub enum Notice {
    /// A pass begins.
    PassStarted { pass: u64, fleet: String },
    /// The events of the pass's run, to show as they come.
    Run(mpsc::UnboundedReceiver<Stamped>),
    /// A pass ended; the next one is due after `next`, or at the schedule's next
    /// change, `boundary` from now, when that comes first.
    PassEnded {
        pass: u64,
        outcome: Box<Pass>,
        next: Duration,
        boundary: Option<Duration>,
    },
    /// The manifest was edited into something invalid: the last good one is kept.
    Invalid(ManifestError),
    /// The manifest's region changed: the watch keeps its region until restarted.
    RegionChanged,
    /// The manifest file is gone: reconciling pauses, nothing is deleted.
    FileGone,
    /// The manifest file is back: reconciling resumes.
    FileBack,
    /// Cancelled: the actions in flight finish.
    Stopping,
    /// News of the schedule: a boundary reached, or the next one waited for.
    Schedule(String),
}

/// Where notices go.
pub type Notices = mpsc::UnboundedSender<Notice>;

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
    pub fn waiting(&self, now: Instant) -> BTreeMap<String, Verdict> {
        self.failing
            .iter()
            .filter(|(_, (_, at))| *at > now)
            .map(|(w, (n, at))| {
                let reason = Verdict::BackingOff {
                    failures: *n,
                    next_try: *at - now,
                };
                (w.clone(), reason)
            })
            .collect()
    }

    /// How many workspaces it remembers failures of.
    pub fn len(&self) -> usize {
        self.failing.len()
    }

    /// Whether it remembers no failure.
    pub fn is_empty(&self) -> bool {
        self.failing.is_empty()
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
    /// Another manifest manages the fleet: the pass changed nothing (what to do).
    pub owned_elsewhere: Option<String>,
}

impl Pass {
    /// Whether the pass left nothing failed.
    pub fn clean(&self) -> bool {
        self.error.is_none()
            && self.owned_elsewhere.is_none()
            && self.report.as_ref().is_none_or(|r| r.failed.is_empty())
    }

    /// Workspaces left waiting for room in a quota.
    pub fn waiting_for_quota(&self) -> usize {
        self.report
            .as_ref()
            .map_or(0, |r| r.waiting_for_quota.len())
    }
}

/// What a pass decided to leave alone, and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Workspaces not to act on this pass, with the reason.
    pub skip: BTreeMap<String, Verdict>,
    /// Workspaces the quota has no room for: they wait, with what for.
    pub quota_waiting: BTreeMap<String, Verdict>,
    /// Deletions held back for safety.
    pub held: usize,
}

/// Decides what a pass leaves alone: workspaces still backing off (`waiting`), every
/// deletion when the plan would delete more than half of the fleet's `live` instances,
/// and those the quota has no room for, which wait for it. Pure: the same inputs, the
/// same decision.
pub fn decide(
    plan: &Plan,
    live: usize,
    waiting: BTreeMap<String, Verdict>,
    source: &Path,
) -> Decision {
    let mut skip = waiting;
    let deletes: Vec<&str> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.action, ActionKind::Delete | ActionKind::Replace))
        .map(|a| a.workspace.as_str())
        .collect();
    let held = if !deletes.is_empty() && deletes.len() * 2 > live {
        let reason = Verdict::HeldDeletion {
            deletes: deletes.len(),
            live,
            manifest: source.display().to_string(),
        };
        for w in &deletes {
            skip.insert((*w).to_string(), reason.clone());
        }
        deletes.len()
    } else {
        0
    };
    let quota_waiting = crate::engine::gate::quota_waiting(plan)
        .into_iter()
        .filter(|(w, _)| !skip.contains_key(w))
        .collect();
    Decision {
        skip,
        quota_waiting,
        held,
    }
}

/// When the next pass is due after `pass`, and the loop's backoff from now on: while
/// AWS throttles or cannot be read, 5 s doubling up to the resync; else the resync.
pub fn error_policy(pass: &Pass, backoff: Duration, resync: Duration) -> (Duration, Duration) {
    let throttled = pass
        .error
        .as_ref()
        .is_some_and(|e| e.class != ErrorClass::Permanent)
        || pass.report.as_ref().is_some_and(|r| {
            r.failed
                .iter()
                .any(|f| f.class == Some(ErrorClass::Throttle))
        });
    let backoff = if throttled || pass.error.is_some() {
        loop_backoff(backoff, resync)
    } else {
        Duration::ZERO
    };
    let next = if backoff.is_zero() { resync } else { backoff };
    (next, backoff)
}

/// One reconcile pass at the system clock's time; see [`reconcile_at`].
pub async fn reconcile_once(
    engine: &Arc<Engine>,
    manifest: &Manifest,
    requeue: &mut Requeue,
    opts: &WatchOptions,
    cancel: &CancellationToken,
    notices: &Notices,
) -> Pass {
    let now = jiff::Timestamp::now();
    reconcile_at(engine, manifest, now, requeue, opts, cancel, notices).await
}

/// One reconcile pass: observe, plan as at `now` (which a schedule reads), decide what
/// is unsafe, carry out the rest on the engine (waiting for the instances as apply
/// does), and note failures for requeue.
pub async fn reconcile_at(
    engine: &Arc<Engine>,
    manifest: &Manifest,
    now: jiff::Timestamp,
    requeue: &mut Requeue,
    opts: &WatchOptions,
    cancel: &CancellationToken,
    notices: &Notices,
) -> Pass {
    let recent = engine.memory.recent_launches();
    let observed = match observe_with(engine.cloud().as_ref(), manifest, &recent).await {
        Ok(o) => o,
        Err(e) => {
            return Pass {
                error: Some(e),
                ..Pass::default()
            };
        }
    };
    let plan = plan::plan_at(manifest, &observed, Some(now));
    if let Some(m) = engine.metrics() {
        m.workspaces(&manifest.name, &observed.instances);
        for q in &plan.quota {
            m.quota(
                &observed.region,
                &q.code,
                &q.name,
                q.limit,
                q.usage.map(f64::from),
            );
        }
    }
    if let Some(o) = &plan.owned_elsewhere {
        return Pass {
            owned_elsewhere: Some(o.message(&plan.fleet)),
            ..Pass::default()
        };
    }
    crate::engine::adopt(engine.cloud().as_ref(), &plan, manifest).await;
    let live = observed
        .instances
        .iter()
        .filter(|i| !i.state.is_gone())
        .count();
    let decision = decide(
        &plan,
        live,
        requeue.waiting(Instant::now()),
        &manifest.source,
    );
    if !plan.has_changes() {
        return Pass {
            held: decision.held,
            ..Pass::default()
        };
    }
    engine.set_launch_rate(crate::config::launch_rate(
        &manifest.rate_limit,
        &opts.config,
    ));
    let mut job = Job::from_plan(manifest, &plan, &observed);
    job.skip = decision.skip;
    job.quota_waiting = decision.quota_waiting;
    let run_opts = RunOptions {
        parallelism: opts.parallelism,
        wait: Some(Duration::from_secs(600)),
        poll: Duration::from_secs(2),
        retry: manifest.retry.clone(),
        throttle_deadline: Duration::from_secs(600),
    };
    let mut run = engine.run(job, run_opts);
    let _ = notices.send(Notice::Run(run.events()));
    // Cancelling the watch cancels the run, whose calls in flight finish.
    let (canceller, stop) = (run.canceller(), cancel.clone());
    let relay = tokio::spawn(async move {
        stop.cancelled().await;
        canceller.cancel();
    });
    let report = run.report().await;
    relay.abort();
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
        held: decision.held,
        ..Pass::default()
    }
}

/// How `pass` ended, as the metrics count it.
fn pass_outcome(pass: &Pass) -> crate::metrics::PassOutcome {
    use crate::metrics::PassOutcome;
    if pass.error.is_some() {
        PassOutcome::Error
    } else if pass.owned_elsewhere.is_some() {
        PassOutcome::OwnedElsewhere
    } else if !pass.clean() {
        PassOutcome::Failed
    } else if pass.held > 0 {
        PassOutcome::Held
    } else {
        PassOutcome::Clean
    }
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

fn file_events(paths: &[PathBuf]) -> notify::Result<(FileWatcher, mpsc::UnboundedReceiver<()>)> {
    use notify::RecursiveMode;
    let (tx, rx) = mpsc::unbounded_channel();
    let names: Vec<_> = paths
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect();
    let mut debouncer = notify_debouncer_mini::new_debouncer(
        Duration::from_millis(300),
        move |res: notify_debouncer_mini::DebounceEventResult| {
            if let Ok(events) = res
                && events.iter().any(|e| {
                    e.path
                        .file_name()
                        .is_some_and(|n| names.iter().any(|m| m == n))
                })
            {
                let _ = tx.send(());
            }
        },
    )?;
    let mut dirs: Vec<&Path> = paths
        .iter()
        .map(|p| {
            p.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
        })
        .collect();
    dirs.dedup();
    for dir in dirs {
        debouncer
            .watcher()
            .watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok((debouncer, rx))
}

/// The files a watch reads: the manifest, and the roster it names.
fn watched_files(path: &Path, manifest: &Manifest) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    files.extend(manifest.roster.as_ref().map(|r| PathBuf::from(&r.file)));
    files
}

type Stamps = Vec<Option<(std::time::SystemTime, u64)>>;

fn file_stamps(files: &[PathBuf]) -> Stamps {
    files.iter().map(|f| file_stamp(f)).collect()
}

/// Backoff of the whole loop while AWS throttles or cannot be read: 5 s doubling to the resync.
fn loop_backoff(previous: Duration, resync: Duration) -> Duration {
    (previous * 2).max(Duration::from_secs(5)).min(resync)
}

/// Watches `path` until `cancel` (or, with `once`, for one pass), telling `notices`
/// what happens. Returns whether the last pass left nothing failed.
pub async fn run(
    path: PathBuf,
    first: Manifest,
    engine: Arc<Engine>,
    opts: WatchOptions,
    cancel: CancellationToken,
    notices: Notices,
) -> notify::Result<bool> {
    run_with_clock(
        path,
        first,
        engine,
        opts,
        cancel,
        notices,
        WallClock::System,
    )
    .await
}

/// [`run`], planning by `clock`. A scheduled fleet gets a pass at each boundary of its
/// schedule: a timer to the boundary, not polling.
pub async fn run_with_clock(
    path: PathBuf,
    first: Manifest,
    engine: Arc<Engine>,
    opts: WatchOptions,
    cancel: CancellationToken,
    notices: Notices,
    clock: WallClock,
) -> notify::Result<bool> {
    Watcher::new(path, first, engine, opts, cancel, notices, clock)?
        .run()
        .await
}

/// One watch of one manifest, and what its loop keeps between passes.
struct Watcher {
    path: PathBuf,
    manifest: Manifest,
    engine: Arc<Engine>,
    opts: WatchOptions,
    cancel: CancellationToken,
    notices: Notices,
    clock: WallClock,
    /// The manifest and the files it names, their notify watcher and its events.
    files: Vec<PathBuf>,
    _watcher: FileWatcher,
    changes: mpsc::UnboundedReceiver<()>,
    /// Reading the files raises notify events of its own: only a changed stamp counts.
    stamp: Stamps,
    requeue: Requeue,
    passes: u64,
    /// The manifest is gone: no pass until it is back.
    paused: bool,
    backoff: Duration,
    /// When the next pass is due.
    due: Instant,
    /// Whether the last pass left nothing failed.
    clean: bool,
    /// The schedule's next boundary after the last pass's moment.
    boundary: Option<crate::plan::schedule::Change>,
    /// The boundary just reached: a pass at it plans as at the boundary even if the timer
    /// fired early.
    reached: Option<jiff::Timestamp>,
}

impl Watcher {
    fn new(
        path: PathBuf,
        manifest: Manifest,
        engine: Arc<Engine>,
        opts: WatchOptions,
        cancel: CancellationToken,
        notices: Notices,
        clock: WallClock,
    ) -> notify::Result<Watcher> {
        let files = watched_files(&path, &manifest);
        let (watcher, changes) = file_events(&files)?;
        let stamp = file_stamps(&files);
        Ok(Watcher {
            path,
            manifest,
            engine,
            opts,
            cancel,
            notices,
            clock,
            files,
            _watcher: watcher,
            changes,
            stamp,
            requeue: Requeue::default(),
            passes: 0,
            paused: false,
            backoff: Duration::ZERO,
            due: Instant::now(),
            clean: true,
            boundary: None,
            reached: None,
        })
    }

    fn say(&self, notice: Notice) {
        let _ = self.notices.send(notice);
    }

    /// Passes when due, and waits for what comes next: a change of the files, the next
    /// pass, a boundary of the schedule, or the end. Returns whether the last pass left
    /// nothing failed (with `--once`, nothing failed and no deletion held).
    async fn run(mut self) -> notify::Result<bool> {
        loop {
            if !self.paused && Instant::now() >= self.due && !self.cancel.is_cancelled() {
                if self.engine.memory.fenced() {
                    // Another replica holds this account and region's lease: it
                    // reconciles; this one looks again when the lease may change hands.
                    if self.opts.once {
                        // The holder's pass is the one that counts.
                        tracing::info!("another replica reconciles: no pass here");
                        return Ok(true);
                    }
                    tracing::debug!("standing by: another replica reconciles");
                    self.due = Instant::now() + crate::store::LEASE_RENEW;
                } else {
                    let settled = self.pass().await;
                    if self.opts.once {
                        return Ok(settled);
                    }
                }
            }
            let requeue_due = self.requeue.next_due(Instant::now()).unwrap_or(self.due);
            let boundary_due = self
                .boundary
                .as_ref()
                .map(|c| self.clock.deadline(c.at.timestamp()));
            tokio::select! {
                change = self.changes.recv() => {
                    if change.is_none() {
                        return Ok(self.clean);
                    }
                    self.on_file_change()?;
                }
                () = sleep_until(self.due.min(requeue_due)) => {
                    self.due = self.due.min(Instant::now());
                }
                () = sleep_until(boundary_due.unwrap_or(self.due)), if boundary_due.is_some() && !self.paused => {
                    self.on_boundary();
                }
                () = self.cancel.cancelled() => {
                    self.say(Notice::Stopping);
                    return Ok(self.clean);
                }
            }
        }
    }

    /// One pass: reconciles the fleet as of now (or the boundary just reached), says
    /// how it went, and sets when the next one is due. Returns whether it settled the
    /// fleet: nothing failed and no deletion held.
    async fn pass(&mut self) -> bool {
        self.passes += 1;
        self.say(Notice::PassStarted {
            pass: self.passes,
            fleet: self.manifest.name.clone(),
        });
        let at = self
            .clock
            .now()
            .max(self.reached.take().unwrap_or(jiff::Timestamp::MIN));
        let began = Instant::now();
        let span = tracing::info_span!("pass", fleet = %self.manifest.name, pass = self.passes);
        let pass = reconcile_at(
            &self.engine,
            &self.manifest,
            at,
            &mut self.requeue,
            &self.opts,
            &self.cancel,
            &self.notices,
        )
        .instrument(span)
        .await;
        if let Some(m) = self.engine.metrics() {
            m.pass(&self.manifest.name, pass_outcome(&pass), began.elapsed());
        }
        let next_boundary = wall_clock::next_boundary(&self.manifest, at);
        if next_boundary.as_ref().map(|c| &c.at) != self.boundary.as_ref().map(|c| &c.at)
            && let Some(c) = &next_boundary
        {
            self.say(Notice::Schedule(wall_clock::waiting_notice(c)));
        }
        self.boundary = next_boundary;
        let mut next;
        (next, self.backoff) = error_policy(&pass, self.backoff, self.opts.resync);
        if pass.waiting_for_quota() > 0 {
            // Room may come at any time (a request approved, an instance stopped): the
            // quota and the usage are read again at a bounded pace.
            next = next.min(self.opts.quota_recheck);
        }
        self.clean = pass.clean();
        // One pass that held deletions back has not brought the fleet to the manifest:
        // `--once` says so with its exit code.
        let settled = self.clean && pass.held == 0;
        let boundary = self.boundary.as_ref().map(|c| {
            self.clock
                .deadline(c.at.timestamp())
                .saturating_duration_since(Instant::now())
        });
        self.say(Notice::PassEnded {
            pass: self.passes,
            outcome: Box::new(pass),
            next,
            boundary,
        });
        self.due = Instant::now() + next;
        settled
    }

    /// The manifest or a file it names changed (or went away): reload it; a good one
    /// is planned at once, a bad one is reported and the last good one kept.
    fn on_file_change(&mut self) -> notify::Result<()> {
        let now = file_stamps(&self.files);
        if now == self.stamp {
            return Ok(());
        }
        self.stamp = now;
        match reload(&self.path) {
            Reload::Good(m) => {
                if m.region != self.manifest.region {
                    self.say(Notice::RegionChanged);
                }
                if self.paused {
                    self.say(Notice::FileBack);
                }
                self.manifest = *m;
                self.paused = false;
                self.due = Instant::now();
                let files = watched_files(&self.path, &self.manifest);
                if files != self.files {
                    self.files = files;
                    (self._watcher, self.changes) = file_events(&self.files)?;
                    self.stamp = file_stamps(&self.files);
                }
            }
            Reload::Invalid(e) => self.say(Notice::Invalid(e)),
            Reload::Gone => {
                if !self.paused {
                    self.say(Notice::FileGone);
                }
                self.paused = true;
            }
        }
        Ok(())
    }

    /// A boundary of the schedule is reached: say so, and pass at once as of it.
    fn on_boundary(&mut self) {
        if let Some(c) = self.boundary.take() {
            self.say(Notice::Schedule(wall_clock::boundary_notice(&c)));
            self.reached = Some(c.at.timestamp());
        }
        self.due = Instant::now();
    }
}

#[cfg(test)]
mod tests;

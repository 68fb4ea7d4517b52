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

use crate::cloud::{CloudError, ErrorClass};
use crate::engine::Report;
use crate::engine::events::Stamped;
use crate::engine::{Engine, Job, RunOptions, Verdict};
use crate::manifest::{self, Manifest, ManifestError};
use crate::observe::observe_with;
use crate::plan::{self, ActionKind, Plan};

pub mod clock;
pub use clock::WallClock;

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
    let mut files = watched_files(&path, &first);
    let (mut _guard, mut changes) = file_events(&files)?;
    let mut manifest = first;
    let mut requeue = Requeue::default();
    let mut passes = 0u64;
    let mut paused = false;
    let mut backoff = Duration::ZERO;
    let mut due = Instant::now();
    let mut clean = true;
    // Reading the file raises notify events of its own: only a changed stamp counts.
    let mut stamp = file_stamps(&files);
    // The schedule's next boundary after the last pass's moment, and the boundary just
    // reached (a pass at it plans as at the boundary even if the timer fired early).
    let mut boundary: Option<crate::plan::schedule::Change> = None;
    let mut reached: Option<jiff::Timestamp> = None;
    loop {
        if !paused && Instant::now() >= due && !cancel.is_cancelled() {
            passes += 1;
            let _ = notices.send(Notice::PassStarted {
                pass: passes,
                fleet: manifest.name.clone(),
            });
            let at = clock
                .now()
                .max(reached.take().unwrap_or(jiff::Timestamp::MIN));
            let pass = reconcile_at(
                &engine,
                &manifest,
                at,
                &mut requeue,
                &opts,
                &cancel,
                &notices,
            )
            .await;
            let next_boundary = clock::next_boundary(&manifest, at);
            if next_boundary.as_ref().map(|c| &c.at) != boundary.as_ref().map(|c| &c.at)
                && let Some(c) = &next_boundary
            {
                let _ = notices.send(Notice::Schedule(clock::waiting_notice(c)));
            }
            boundary = next_boundary;
            let mut next;
            (next, backoff) = error_policy(&pass, backoff, opts.resync);
            if pass.waiting_for_quota() > 0 {
                // Room may come at any time (a request approved, an instance stopped):
                // the quota and the usage are read again at a bounded pace.
                next = next.min(opts.quota_recheck);
            }
            clean = pass.clean();
            // One pass that held deletions back has not brought the fleet to the
            // manifest: `--once` says so with its exit code.
            let settled = clean && pass.held == 0;
            let _ = notices.send(Notice::PassEnded {
                pass: passes,
                outcome: Box::new(pass),
                next,
                boundary: boundary.as_ref().map(|c| {
                    clock
                        .deadline(c.at.timestamp())
                        .saturating_duration_since(Instant::now())
                }),
            });
            due = Instant::now() + next;
            if opts.once {
                return Ok(settled);
            }
        }
        let requeue_due = requeue.next_due(Instant::now()).unwrap_or(due);
        let boundary_due = boundary.as_ref().map(|c| clock.deadline(c.at.timestamp()));
        tokio::select! {
            change = changes.recv() => {
                if change.is_none() {
                    return Ok(clean);
                }
                let now = file_stamps(&files);
                if now == stamp {
                    continue;
                }
                stamp = now;
                match reload(&path) {
                    Reload::Good(m) => {
                        if m.region != manifest.region {
                            let _ = notices.send(Notice::RegionChanged);
                        }
                        if paused {
                            let _ = notices.send(Notice::FileBack);
                        }
                        manifest = *m;
                        paused = false;
                        due = Instant::now();
                        let now_files = watched_files(&path, &manifest);
                        if now_files != files {
                            files = now_files;
                            (_guard, changes) = file_events(&files)?;
                            stamp = file_stamps(&files);
                        }
                    }
                    Reload::Invalid(e) => {
                        let _ = notices.send(Notice::Invalid(e));
                    }
                    Reload::Gone => {
                        if !paused {
                            let _ = notices.send(Notice::FileGone);
                        }
                        paused = true;
                    }
                }
            }
            () = sleep_until(due.min(requeue_due)) => {
                due = due.min(Instant::now());
            }
            () = sleep_until(boundary_due.unwrap_or(due)), if boundary_due.is_some() && !paused => {
                if let Some(c) = boundary.take() {
                    let _ = notices.send(Notice::Schedule(clock::boundary_notice(&c)));
                    reached = Some(c.at.timestamp());
                }
                due = Instant::now();
            }
            () = cancel.cancelled() => {
                let _ = notices.send(Notice::Stopping);
                return Ok(clean);
            }
        }
    }
}

#[cfg(test)]
mod soak;

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

    mod passes {
        //! Reconcile passes on the in-memory cloud under paused time.

        use std::collections::BTreeMap;

        use super::*;
        use crate::cloud::fake::FakeCloud;
        use crate::cloud::{CloudError, InstanceState};
        use crate::engine::memory::LaunchMemory;

        fn manifest(count: u32, extra: &str) -> Manifest {
            let text = format!(
                "name: w\nproject: p\ntemplate: t\ncount: {count}\n{extra}\ntemplates:\n  t: {{image: ami-1, instance_type: t3.micro}}\n"
            );
            crate::manifest::parse(Path::new("w.yaml"), &text).unwrap()
        }

        fn setup() -> (Arc<FakeCloud>, Arc<Engine>) {
            let cloud = Arc::new(FakeCloud {
                region: "us-west-2".into(),
                zones: vec!["us-west-2a".into()],
                vcpus: BTreeMap::from([("t3.micro".into(), 2)]),
                applied: BTreeMap::from([("L-1216C47A".into(), 64.0)]),
                images: FakeCloud::own_image("ami-1"),
                ..FakeCloud::default()
            });
            let engine = Engine::new(cloud.clone(), None, Arc::new(LaunchMemory::in_memory()));
            (cloud, engine)
        }

        fn opts() -> WatchOptions {
            WatchOptions {
                resync: Duration::from_secs(300),
                once: false,
                parallelism: 4,
                config: crate::config::UserConfig::default(),
                quota_recheck: Duration::from_secs(60),
            }
        }

        async fn pass(engine: &Arc<Engine>, m: &Manifest, requeue: &mut Requeue) -> Pass {
            let (tx, _rx) = mpsc::unbounded_channel();
            reconcile_once(engine, m, requeue, &opts(), &CancellationToken::new(), &tx).await
        }

        fn live(cloud: &FakeCloud) -> Vec<(String, InstanceState)> {
            let mut v: Vec<_> = cloud
                .instances
                .lock()
                .unwrap()
                .iter()
                .filter(|i| !i.state.is_gone())
                .map(|i| (i.workspace().unwrap().to_string(), i.state))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }

        #[tokio::test(start_paused = true)]
        async fn drift_and_edits_converge_and_a_quiet_pass_changes_nothing() {
            let (cloud, engine) = setup();
            let mut requeue = Requeue::default();
            let m = manifest(3, "");
            let p = pass(&engine, &m, &mut requeue).await;
            assert_eq!(p.report.as_ref().map(|r| r.launched), Some(3));
            assert!(
                pass(&engine, &m, &mut requeue).await.report.is_none(),
                "nothing to do"
            );

            // Drift: one instance terminated behind prism's back.
            cloud.instances.lock().unwrap()[1].state = InstanceState::Terminated;
            let p = pass(&engine, &m, &mut requeue).await;
            assert_eq!(p.report.as_ref().map(|r| r.launched), Some(1));
            assert_eq!(live(&cloud).len(), 3);

            // An edit: two more.
            let p = pass(&engine, &manifest(5, ""), &mut requeue).await;
            assert_eq!(p.report.as_ref().map(|r| r.launched), Some(2));
            assert_eq!(live(&cloud).len(), 5);
        }

        #[tokio::test(start_paused = true)]
        async fn a_stopped_fleet_gets_its_relaunched_workspace_stopped_in_the_same_pass() {
            let (cloud, engine) = setup();
            let mut requeue = Requeue::default();
            let m = manifest(2, "state: stopped");
            pass(&engine, &m, &mut requeue).await;
            assert!(
                live(&cloud)
                    .iter()
                    .all(|(_, s)| *s == InstanceState::Stopped)
            );
            cloud.instances.lock().unwrap()[0].state = InstanceState::Terminated;
            let p = pass(&engine, &m, &mut requeue).await;
            assert!(p.clean(), "{p:?}");
            assert_eq!(
                live(&cloud),
                [
                    ("w-01".to_string(), InstanceState::Stopped),
                    ("w-02".to_string(), InstanceState::Stopped)
                ],
                "relaunched and stopped, as apply does"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn an_emptied_manifest_holds_every_deletion() {
            let (cloud, engine) = setup();
            let mut requeue = Requeue::default();
            pass(&engine, &manifest(4, "prune: true"), &mut requeue).await;
            let p = pass(&engine, &manifest(1, "prune: true"), &mut requeue).await;
            assert_eq!(p.held, 3, "3 of 4 is more than half");
            assert_eq!(live(&cloud).len(), 4, "nothing deleted");
            let p = pass(&engine, &manifest(3, "prune: true"), &mut requeue).await;
            assert_eq!(
                (p.held, live(&cloud).len()),
                (0, 3),
                "one of four is not held"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_throttling_storm_backs_the_loop_off_then_recovers() {
            let (cloud, engine) = setup();
            let mut requeue = Requeue::default();
            let m = manifest(2, "");
            let throttle = CloudError::service(
                "DescribeInstances",
                Some("RequestLimitExceeded"),
                "Request limit exceeded.",
                Some(503),
            );
            // Every look at the account is throttled for a while.
            cloud.fail_next("DescribeInstances", vec![throttle; 40]);
            let mut backoff = Duration::ZERO;
            let mut waits = vec![];
            for _ in 0..4 {
                let p = pass(&engine, &m, &mut requeue).await;
                assert!(p.error.is_some());
                let next;
                (next, backoff) = error_policy(&p, backoff, opts().resync);
                waits.push(next.as_secs());
            }
            assert_eq!(waits, [5, 10, 20, 40]);
            cloud.faults.lock().unwrap().clear();
            let p = pass(&engine, &m, &mut requeue).await;
            let (next, backoff) = error_policy(&p, backoff, opts().resync);
            assert!(p.clean());
            assert_eq!((next.as_secs(), backoff), (300, Duration::ZERO));
            assert_eq!(live(&cloud).len(), 2);
        }

        #[tokio::test(start_paused = true)]
        async fn what_does_not_fit_waits_for_quota_and_launches_when_there_is_room() {
            let cloud = Arc::new(FakeCloud {
                region: "us-west-2".into(),
                zones: vec!["us-west-2a".into()],
                vcpus: BTreeMap::from([("t3.xlarge".into(), 4)]),
                applied: BTreeMap::from([("L-1216C47A".into(), 32.0)]),
                images: FakeCloud::own_image("ami-1"),
                ..FakeCloud::default()
            });
            let engine = Engine::new(cloud.clone(), None, Arc::new(LaunchMemory::in_memory()));
            let text = "name: w\nproject: p\ntemplate: t\ncount: 10\ntemplates:\n  t: {image: ami-1, instance_type: t3.xlarge}\n";
            let m = crate::manifest::parse(Path::new("w.yaml"), text).unwrap();
            let mut requeue = Requeue::default();

            let p = pass(&engine, &m, &mut requeue).await;
            let r = p.report.as_ref().unwrap();
            assert_eq!((r.launched, p.waiting_for_quota()), (8, 2), "{r:?}");
            assert!(r.skipped.is_empty() && r.failed.is_empty(), "{r:?}");
            assert_eq!(
                r.waiting_for_quota
                    .iter()
                    .map(|w| (w.workspace.as_str(), w.reason.to_string()))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(|(w, r)| (*w, r.as_str()))
                    .collect::<Vec<_>>(),
                [
                    (
                        "w-09",
                        "waiting for room in the On-Demand Standard (A, C, D, H, I, M, R, T, Z) quota: 40 vCPUs needed, 32 free"
                    ),
                    (
                        "w-10",
                        "waiting for room in the On-Demand Standard (A, C, D, H, I, M, R, T, Z) quota: 40 vCPUs needed, 32 free"
                    ),
                ]
            );
            // The loop comes back within the recheck, not the resync.
            let (next, _) = error_policy(&p, Duration::ZERO, opts().resync);
            assert_eq!(next, opts().resync);
            assert!(
                p.waiting_for_quota() > 0,
                "so the loop takes the recheck instead"
            );

            // Nothing changed: still waiting, no call to launch.
            let p = pass(&engine, &m, &mut requeue).await;
            assert_eq!(p.waiting_for_quota(), 2);
            assert!(
                p.report.unwrap().waiting_for_quota[0]
                    .reason
                    .to_string()
                    .ends_with("quota: 8 vCPUs needed, 0 free")
            );
            assert_eq!(cloud.calls_to("RunInstances"), 8);

            cloud.raise_quota("L-1216C47A", 48.0);
            let p = pass(&engine, &m, &mut requeue).await;
            let r = p.report.unwrap();
            assert_eq!((r.total, r.launched), (2, 2), "only the two: {r:?}");
            assert!(r.waiting_for_quota.is_empty());
            assert_eq!(live(&cloud).len(), 10);
            for api in ["StopInstances", "TerminateInstances", "StartInstances"] {
                assert_eq!(cloud.calls_to(api), 0, "{api}: the others untouched");
            }
        }

        /// The loop itself, in virtual time: with the default pace, a raise of the
        /// quota is acted on at the next reading, a minute after the last pass, not
        /// at the resync five minutes later.
        #[tokio::test(start_paused = true)]
        async fn the_loop_reads_the_quota_again_within_a_minute_while_workspaces_wait() {
            let cloud = Arc::new(FakeCloud {
                region: "us-west-2".into(),
                zones: vec!["us-west-2a".into()],
                vcpus: BTreeMap::from([("t3.xlarge".into(), 4)]),
                applied: BTreeMap::from([("L-1216C47A".into(), 32.0)]),
                images: FakeCloud::own_image("ami-1"),
                ..FakeCloud::default()
            });
            let engine = Engine::new(cloud.clone(), None, Arc::new(LaunchMemory::in_memory()));
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("w.yaml");
            let text = "name: w\nproject: p\ntemplate: t\ncount: 10\nrate_limit: {rate_per_minute: 6000, burst_size: 100}\ntemplates:\n  t: {image: ami-1, instance_type: t3.xlarge}\n";
            std::fs::write(&path, text).unwrap();
            let m = crate::manifest::load(&path).unwrap();
            let opts = WatchOptions {
                quota_recheck: crate::engine::QuotaWait::EVERY,
                ..opts()
            };
            let cancel = CancellationToken::new();
            let (tx, mut rx) = mpsc::unbounded_channel();
            let t0 = Instant::now();
            let watch = tokio::spawn(run(path, m, engine, opts, cancel.clone(), tx));
            let mut passes = vec![];
            while let Some(n) = rx.recv().await {
                let Notice::PassEnded { outcome, next, .. } = n else {
                    continue;
                };
                let at = (Instant::now() - t0).as_secs();
                passes.push((at, outcome.waiting_for_quota(), next.as_secs()));
                match passes.len() {
                    // Raised between two readings.
                    1 => {
                        tokio::time::sleep(Duration::from_secs(20)).await;
                        cloud.raise_quota("L-1216C47A", 48.0);
                    }
                    3 => break,
                    _ => {}
                }
            }
            cancel.cancel();
            watch.await.unwrap().unwrap();
            let launched: Vec<u64> = cloud
                .launch_calls
                .lock()
                .unwrap()
                .iter()
                .map(|(at, _)| (*at - t0).as_secs())
                .collect();
            assert_eq!(passes[0].1, 2, "{passes:?}");
            assert_eq!(passes[0].2, 60, "the next pass a minute later: {passes:?}");
            assert_eq!(passes[1].1, 0, "{passes:?}");
            assert_eq!(passes[1].2, 300, "nothing waits: back to the resync");
            assert_eq!(launched.len(), 10, "{launched:?}");
            let first = passes[0].0;
            assert!(
                launched[8..]
                    .iter()
                    .all(|at| (first + 60..first + 65).contains(at)),
                "the last two a minute after the first pass ({first} s): {launched:?}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_failing_workspace_is_skipped_while_it_backs_off() {
            let (cloud, engine) = setup();
            let mut requeue = Requeue::default();
            let m = manifest(2, "retry: {max_retries: 0}");
            cloud.fail_next(
                "RunInstances",
                vec![CloudError::service(
                    "RunInstances",
                    Some("InvalidParameterValue"),
                    "bad",
                    Some(400),
                )],
            );
            let p = pass(&engine, &m, &mut requeue).await;
            assert_eq!(p.report.as_ref().unwrap().failed.len(), 1);
            let p = pass(&engine, &m, &mut requeue).await;
            let r = p.report.unwrap();
            assert_eq!((r.skipped.len(), r.launched), (1, 0), "backing off: {r:?}");
            tokio::time::advance(Duration::from_secs(11)).await;
            let p = pass(&engine, &m, &mut requeue).await;
            assert_eq!(p.report.unwrap().launched, 1, "due again after 10 s");
            assert_eq!(live(&cloud).len(), 2);
        }
    }
}

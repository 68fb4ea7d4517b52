//! The bulk launches the server knows: each one's record, its numbered events, and the
//! run carrying it out on the engine. Events are numbered 1, 2, 3 … across the runs of
//! a launch (a resume continues the numbers) and kept in the state directory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tracing::Instrument;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{OwnedMutexGuard, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::store::{LaunchState, Record, Store};
use crate::engine::events::{Event, Stamped};
use crate::engine::progress::WorkspaceProgress;
use crate::engine::{Canceller, Progress, Run};

/// One launch.
#[derive(Debug)]
pub struct Launch {
    inner: Mutex<Inner>,
    /// The number of events so far; SSE streams wait on it.
    count: watch::Sender<usize>,
}

#[derive(Debug)]
struct Inner {
    record: Record,
    /// (event name, JSON) of every event; the id of `events[i]` is `i + 1`.
    events: Vec<(String, String)>,
    canceller: Option<Canceller>,
    /// Cancelled to take a launch out of the queue before its run starts.
    dequeue: CancellationToken,
    /// The server is stopping: the run ends `interrupted`, not `cancelled`.
    stopping: bool,
    pump: Option<JoinHandle<()>>,
    /// The workspaces as they stood before a resume: those the resumed run has nothing
    /// left to do for stay in the table and the totals.
    carried: Vec<Value>,
}

/// Adds to a run's `progress` and `workspaces` views the `carried` workspaces (from
/// before a resume) that the run does not act on: they were done before it.
fn with_carried(carried: &[Value], progress: &mut Value, workspaces: &mut Value) {
    let Some(rows) = workspaces.as_array_mut() else {
        return;
    };
    let mut added = 0;
    for c in carried {
        if !rows.iter().any(|r| r["name"] == c["name"]) {
            rows.push(c.clone());
            added += 1;
        }
    }
    rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    for key in ["total", "completed"] {
        if let Some(n) = progress[key].as_u64() {
            progress[key] = json!(n + added);
        }
    }
}

/// The progress fields the API shows, from the engine's progress state.
pub fn progress_view(p: &Progress) -> (Value, Value) {
    let t = &p.totals;
    let progress = json!({
        "total": t.total,
        "completed": t.done,
        "failed": t.failed,
        "skipped": t.skipped,
        "not_started": t.not_started,
        "waiting_for_quota": t.waiting_for_quota,
        "rate_limited": p.limiter_wait_s.is_some(),
        "rate_per_minute": p.rate_per_minute,
        "estimated_time_remaining_s": p.eta_s,
        "elapsed_s": p.elapsed_s,
    });
    let workspaces: Vec<Value> = p
        .workspaces
        .iter()
        .map(|(name, w)| workspace_view(name, w))
        .collect();
    (progress, Value::Array(workspaces))
}

fn workspace_view(name: &str, w: &WorkspaceProgress) -> Value {
    json!({
        "name": name,
        "action": w.action,
        "state": w.state,
        "instance_id": w.instance_id,
        "availability_zone": w.availability_zone,
        "attempts": w.attempts,
        "error": w.failure,
        "skip_reason": w.skip_reason.as_ref().map(ToString::to_string),
        "skip_reason_code": w.skip_reason_code,
    })
}

fn event_name(v: &Value) -> String {
    v["event"].as_str().unwrap_or("event").to_string()
}

impl Launch {
    pub fn new(record: Record, events: Vec<String>) -> Arc<Launch> {
        let events: Vec<(String, String)> = events
            .into_iter()
            .map(|line| {
                let name = serde_json::from_str::<Value>(&line)
                    .map(|v| event_name(&v))
                    .unwrap_or_default();
                (name, line)
            })
            .collect();
        let (count, _) = watch::channel(events.len());
        Arc::new(Launch {
            inner: Mutex::new(Inner {
                record,
                events,
                canceller: None,
                dequeue: CancellationToken::new(),
                stopping: false,
                pump: None,
                carried: vec![],
            }),
            count,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn id(&self) -> String {
        self.lock().record.id.clone()
    }

    pub fn fleet(&self) -> String {
        self.lock().record.fleet.clone()
    }

    pub fn state(&self) -> LaunchState {
        self.lock().record.state
    }

    pub fn created_ms(&self) -> u128 {
        self.lock().record.created_ms
    }

    pub fn record(&self) -> Record {
        self.lock().record.clone()
    }

    /// The launch as the API shows it.
    pub fn view(&self) -> Value {
        let inner = self.lock();
        let r = &inner.record;
        json!({
            "id": r.id,
            "fleet": r.fleet,
            "state": r.state,
            "resumable": r.state == LaunchState::Interrupted,
            "created_at": r.created_at,
            "manifest_path": r.request.manifest_path,
            "allow_partial": r.request.allow_partial,
            "wait_for_quota": r.request.wait_for_quota,
            "events": inner.events.len(),
            "progress": r.progress,
            "workspaces": r.workspaces,
            "report": r.report,
            "error": r.error,
        })
    }

    /// Events after `after` (ids `after + 1` …), and whether no more will come.
    pub fn events_after(&self, after: usize) -> (Vec<(usize, String, String)>, bool) {
        let inner = self.lock();
        let events = inner
            .events
            .iter()
            .enumerate()
            .skip(after)
            .map(|(i, (name, json))| (i + 1, name.clone(), json.clone()))
            .collect();
        (events, !inner.record.state.is_active())
    }

    /// A receiver that changes with every new event and when the launch ends.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Cancels the run: in-flight calls finish, nothing new starts. True when a run
    /// was going on.
    pub fn cancel(&self, stopping: bool) -> bool {
        let mut inner = self.lock();
        if !inner.record.state.is_active() {
            return false;
        }
        inner.stopping |= stopping;
        if !stopping {
            inner.record.state = LaunchState::Cancelling;
        }
        match &inner.canceller {
            Some(c) => c.cancel(),
            None => inner.dequeue.cancel(),
        }
        true
    }

    /// Waits for the run (if any) to end and its last event to be kept.
    pub async fn finished(&self) {
        let pump = self.lock().pump.take();
        if let Some(p) = pump {
            let _ = p.await;
        }
    }

    /// Carries out the launch: at once when its region's slot is free, else it waits as
    /// `queued` for the launches ahead of it (other fleets in the same account and
    /// region) and is planned again when its turn comes. Numbers, keeps and passes on
    /// the run's events, and sets the state from its report.
    /// The span of this launch's log records: its id and fleet.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!("launch", launch_id = %self.id(), fleet = %self.fleet())
    }

    pub fn start(self: &Arc<Self>, start: Start, store: Store) {
        let launch = self.clone();
        let dequeue = {
            let mut inner = self.lock();
            inner.dequeue = CancellationToken::new();
            inner.stopping = false;
            inner.record.error = None;
            inner.record.state = LaunchState::Queued;
            let _ = store.save(&inner.record);
            inner.dequeue.clone()
        };
        let pump = tokio::spawn(
            async move {
                let (_turn, run) = match start {
                    Start::Now(turn, run) => (turn, run),
                    Start::Queued(slot, plan) => {
                        let turn = tokio::select! {
                            turn = slot.lock_owned() => turn,
                            _ = dequeue.cancelled() => return launch.end_unstarted(None, &store),
                        };
                        if dequeue.is_cancelled() {
                            return launch.end_unstarted(None, &store);
                        }
                        match plan.await {
                            Ok(run) => (turn, run),
                            Err(e) => return launch.end_unstarted(Some(e), &store),
                        }
                    }
                };
                launch.follow(run, &store).await;
            }
            .instrument(self.span()),
        );
        self.lock().pump = Some(pump);
    }

    async fn follow(&self, mut run: Run, store: &Store) {
        let mut rx = run.events();
        {
            let mut inner = self.lock();
            if inner.record.state == LaunchState::Queued {
                inner.record.state = LaunchState::Running;
            }
            // A resume: what the interrupted run did stays.
            if let Value::Array(before) = &inner.record.workspaces {
                let before = before.clone();
                inner.carried = before;
            }
            inner.canceller = Some(run.canceller());
            if inner.dequeue.is_cancelled() {
                run.canceller().cancel();
            }
            let _ = store.save(&inner.record);
        }
        tracing::info!("launch {} running", self.id());
        let mut progress = Progress::default();
        while let Some(e) = rx.recv().await {
            progress.apply(&e);
            let last = matches!(e.event, Event::Summary(_));
            self.take(&e, &progress, store);
            if last {
                break;
            }
        }
        let report = run.report().await;
        self.end(&report, store);
        tracing::info!(
            "launch {} ended {}: {} done, {} failed, {} skipped",
            self.id(),
            serde_json::to_value(self.state())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            report.succeeded,
            report.failed.len(),
            report.skipped.len()
        );
    }

    /// Ends a launch whose run never started: taken out of the queue, or refused
    /// when its turn came (`error`).
    fn end_unstarted(&self, error: Option<ApiError>, store: &Store) {
        let n = {
            let mut inner = self.lock();
            inner.record.state = if inner.stopping {
                LaunchState::Interrupted
            } else if error.is_some() {
                LaunchState::Failed
            } else {
                LaunchState::Cancelled
            };
            inner.record.error = error.map(|e| e.body["error"].clone());
            if let Err(err) = store.save(&inner.record) {
                tracing::warn!("cannot keep launch {}: {err}", inner.record.id);
            }
            inner.events.len()
        };
        self.count.send_replace(n);
    }

    fn take(&self, e: &Stamped, progress: &Progress, store: &Store) {
        let line = crate::engine::progress::json_line(e, progress);
        let name = serde_json::from_str::<Value>(&line)
            .map(|v| event_name(&v))
            .unwrap_or_default();
        let n = {
            let mut inner = self.lock();
            if let Err(err) = store.append_event(&inner.record.id, &line) {
                tracing::warn!("cannot keep an event of launch {}: {err}", inner.record.id);
            }
            inner.events.push((name, line));
            let (mut p, mut w) = progress_view(progress);
            with_carried(&inner.carried, &mut p, &mut w);
            inner.record.progress = p;
            inner.record.workspaces = w;
            let _ = store.save(&inner.record);
            inner.events.len()
        };
        self.count.send_replace(n);
    }

    fn end(&self, report: &crate::engine::Report, store: &Store) {
        let n = {
            let mut inner = self.lock();
            inner.record.state = if inner.stopping {
                LaunchState::Interrupted
            } else if report.interrupted {
                LaunchState::Cancelled
            } else if report.complete() {
                LaunchState::Succeeded
            } else if report.failed.is_empty() && report.not_started == 0 {
                LaunchState::PartlyDone
            } else {
                LaunchState::Failed
            };
            inner.record.report = Some(serde_json::to_value(report).expect("serializes"));
            inner.canceller = None;
            if let Err(err) = store.save(&inner.record) {
                tracing::warn!("cannot keep launch {}: {err}", inner.record.id);
            }
            inner.events.len()
        };
        self.count.send_replace(n);
    }

    /// Marks a launch found running at start-up (the server stopped under it) as
    /// interrupted.
    pub fn interrupted_by_restart(&self, store: &Store) {
        let mut inner = self.lock();
        if inner.record.state.is_active() {
            inner.record.state = LaunchState::Interrupted;
            let _ = store.save(&inner.record);
        }
    }
}

/// How a launch's run begins.
pub enum Start {
    /// Its region's slot was free: the run has started.
    Now(OwnedMutexGuard<()>, Run),
    /// It waits for the slot, then plans and starts its run (or says why it cannot).
    Queued(
        Arc<tokio::sync::Mutex<()>>,
        BoxFuture<'static, Result<Run, ApiError>>,
    ),
}

/// Every launch, by id.
#[derive(Debug, Default)]
pub struct Registry {
    launches: Mutex<BTreeMap<String, Arc<Launch>>>,
}

impl Registry {
    pub fn insert(&self, launch: Arc<Launch>) {
        let id = launch.id();
        self.lock().insert(id, launch);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Launch>>> {
        self.launches.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Launch>> {
        self.lock().get(id).cloned()
    }

    /// Every launch, newest first.
    pub fn all(&self) -> Vec<Arc<Launch>> {
        let mut all: Vec<Arc<Launch>> = self.lock().values().cloned().collect();
        all.sort_by_key(|l| std::cmp::Reverse((l.created_ms(), l.id())));
        all
    }

    /// Every launch's id and state: it changes when a launch is created, moves on or
    /// ends, which is when what the account holds may have changed.
    pub fn stamp(&self) -> Vec<(String, LaunchState)> {
        self.lock().values().map(|l| (l.id(), l.state())).collect()
    }

    /// Whether any launch's run is going on.
    pub fn any_active(&self) -> bool {
        self.lock().values().any(|l| l.state().is_active())
    }

    /// The launch of `fleet` whose run is going on, if any.
    pub fn active_for(&self, fleet: &str) -> Option<Arc<Launch>> {
        self.all()
            .into_iter()
            .find(|l| l.fleet() == fleet && l.state().is_active())
    }
}

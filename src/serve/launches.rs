//! The bulk launches the server knows: each one's record, its numbered events, and the
//! run carrying it out on the engine. Events are numbered 1, 2, 3 … across the runs of
//! a launch (a resume continues the numbers) and kept in the state directory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tracing::Instrument;

use futures::FutureExt;
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
use crate::store::{LeaseKeeper, StoreError};

/// Writes a launch's events and record to the shared table as this replica's run
/// makes them, under the lease's epoch; each event is shown once written. When the
/// lease is lost the launch is handed over and nothing more is written.
async fn write_out(
    launch: Arc<Launch>,
    store: Store,
    keeper: Arc<LeaseKeeper>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Out>,
) {
    let id = launch.id();
    // The record is written when its state changes, else at most once a
    // [`RECORD_EVERY`]: it carries every workspace's row.
    let mut record: Option<Box<Record>> = None;
    let mut written_state = None;
    let mut written_at: Option<tokio::time::Instant> = None;
    loop {
        let due = written_at.map_or_else(tokio::time::Instant::now, |at| at + RECORD_EVERY);
        let first = match &record {
            Some(_) => match tokio::time::timeout_at(due, rx.recv()).await {
                Ok(got) => got,
                Err(_) => Some(Out::Flush),
            },
            None => rx.recv().await,
        };
        let closed = first.is_none();
        let mut batch: Vec<Out> = first.into_iter().collect();
        if !closed {
            // Events come in bursts: one write for each.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
        }
        let mut events = vec![];
        for out in batch {
            match out {
                Out::Event(name, line) => events.push((name, line)),
                Out::Record(r) => record = Some(r),
                Out::Flush => {}
            }
        }
        if !write_events(&launch, &store, &keeper, &id, &events).await {
            launch.handed_over();
            return;
        }
        let write = record.as_ref().is_some_and(|r| {
            closed
                || written_state != Some(r.state)
                || written_at.is_none_or(|at| at.elapsed() >= RECORD_EVERY)
        });
        if write && let Some(r) = record.take() {
            let done = with_lease(&keeper, |lease| {
                let store = store.clone();
                let r = r.clone();
                async move { store.put_record(&r, Some(&lease)).await.map(|()| true) }
            })
            .await;
            if done.is_none() {
                launch.handed_over();
                return;
            }
            written_state = Some(r.state);
            written_at = Some(tokio::time::Instant::now());
            // The record may say the launch ended: its streams end once they have
            // every event.
            let n = launch.event_count();
            launch.count.send_replace(n);
        }
        if closed && record.is_none() {
            return;
        }
    }
}

/// How often at most a running launch's record is written to the shared table.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes `events` (name, line) after the launch's last, in chunks, and shows each
/// chunk once written; false when the lease was lost.
async fn write_events(
    launch: &Launch,
    store: &Store,
    keeper: &LeaseKeeper,
    id: &str,
    events: &[(String, String)],
) -> bool {
    let lines: Vec<String> = events.iter().map(|(_, l)| l.clone()).collect();
    let mut written = 0;
    for chunk in Store::chunks(&lines) {
        let first = launch.event_count() + 1;
        let done = with_lease(keeper, |lease| {
            let store = store.clone();
            let (id, chunk) = (id.to_string(), chunk.to_vec());
            async move { store.put_events(&id, first, &chunk, &lease).await }
        })
        .await;
        if done != Some(true) {
            return false;
        }
        let n = {
            let mut inner = launch.lock();
            inner
                .events
                .extend(events[written..written + chunk.len()].iter().cloned());
            inner.unwritten = inner.unwritten.saturating_sub(chunk.len());
            inner.events.len()
        };
        written += chunk.len();
        launch.count.send_replace(n);
    }
    true
}

/// Runs `write` under the lease while it is held, again while the table cannot be
/// reached; None when the lease is lost (or the write was fenced).
async fn with_lease<F, Fut>(keeper: &LeaseKeeper, write: F) -> Option<bool>
where
    F: Fn(crate::store::Lease) -> Fut,
    Fut: std::future::Future<Output = Result<bool, StoreError>>,
{
    loop {
        let lease = keeper.lease()?;
        match write(lease).await {
            Ok(done) => return Some(done),
            Err(StoreError::Fenced(_)) => {
                keeper.lost();
                return None;
            }
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!("cannot reach the shared store: {e}; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

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
    /// With replicas: whether this replica runs the launch (else it shows what the
    /// table says of it), and where its run's events and record go to be written.
    local: bool,
    outbox: Option<tokio::sync::mpsc::UnboundedSender<Out>>,
    writer: Option<JoinHandle<()>>,
    /// Events sent to the writer and not yet written: until they are, the launch is
    /// shown running (its end is not kept yet).
    unwritten: usize,
}

impl Inner {
    /// The state as shown: a run that ended here is over once its last events are
    /// written.
    fn shown_state(&self) -> LaunchState {
        if self.unwritten > 0 && !self.record.state.is_active() {
            LaunchState::Running
        } else {
            self.record.state
        }
    }
}

/// What a launch run by this replica has for the shared table, in order.
#[derive(Debug)]
enum Out {
    Event(String, String),
    Record(Box<Record>),
    /// Nothing came within the record's interval: write the record now.
    Flush,
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

/// The name of the event a JSON line holds.
fn event_name_of(line: &str) -> String {
    serde_json::from_str::<Value>(line)
        .map(|v| event_name(&v))
        .unwrap_or_default()
}

impl Launch {
    pub fn new(record: Record, events: Vec<String>) -> Arc<Launch> {
        let events: Vec<(String, String)> = events
            .into_iter()
            .map(|line| (event_name_of(&line), line))
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
                local: false,
                outbox: None,
                writer: None,
                unwritten: 0,
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
            "place": r.place,
            "state": inner.shown_state(),
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
        (events, !inner.shown_state().is_active())
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

    /// The span of this launch's log records: its id and fleet.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!("launch", launch_id = %self.id(), fleet = %self.fleet())
    }

    /// Carries out the launch: at once when its account and region's slot is free,
    /// else it waits as `queued` for the launches ahead of it (other fleets in the same
    /// account and region) and is planned again when its turn comes. Numbers, keeps and
    /// passes on the run's events, and sets the state from its report.
    ///
    /// With `lease` (replicas), its events and record are written to the shared table
    /// under that lease, `first` (an event line) before the run's own.
    pub fn start(
        self: &Arc<Self>,
        start: Start,
        store: Store,
        lease: Option<Arc<LeaseKeeper>>,
        first: Option<String>,
    ) {
        let launch = self.clone();
        let flushed = self.clone();
        let span = self.span();
        let dequeue = {
            let mut inner = self.lock();
            inner.dequeue = CancellationToken::new();
            inner.stopping = false;
            inner.local = true;
            inner.record.error = None;
            if inner.record.state != LaunchState::Running {
                inner.record.state = LaunchState::Queued;
            }
            if let Some(keeper) = lease {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                if let Some(line) = first {
                    let _ = tx.send(Out::Event(event_name_of(&line), line));
                    inner.unwritten += 1;
                }
                inner.outbox = Some(tx);
                inner.writer = Some(tokio::spawn(
                    write_out(self.clone(), store.clone(), keeper, rx).instrument(span.clone()),
                ));
            }
            self.keep(&inner, &store);
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
            .then(|()| async move { flushed.flushed().await })
            .instrument(span),
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
            self.keep(&inner, store);
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
            inner.record.state = if inner.stopping && store.table().is_some() {
                // Another replica takes it on.
                inner.record.state
            } else if inner.stopping {
                LaunchState::Interrupted
            } else if error.is_some() {
                LaunchState::Failed
            } else {
                LaunchState::Cancelled
            };
            inner.record.error = error.map(|e| e.body["error"].clone());
            self.keep(&inner, store);
            inner.events.len()
        };
        self.count.send_replace(n);
    }

    fn take(&self, e: &Stamped, progress: &Progress, store: &Store) {
        let line = crate::engine::progress::json_line(e, progress);
        let name = event_name_of(&line);
        let mut inner = self.lock();
        if store.table().is_some() && inner.outbox.is_none() {
            // Handed over: what the run here still says is not the launch's any more.
            return;
        }
        let (mut p, mut w) = progress_view(progress);
        with_carried(&inner.carried, &mut p, &mut w);
        inner.record.progress = p;
        inner.record.workspaces = w;
        if let Some(out) = &inner.outbox {
            // Shown once the table has it: every replica numbers it alike.
            if out.send(Out::Event(name, line)).is_ok() {
                inner.unwritten += 1;
            }
            self.keep(&inner, store);
            return;
        }
        if let Err(err) = store.append_event(&inner.record.id, &line) {
            tracing::warn!("cannot keep an event of launch {}: {err}", inner.record.id);
        }
        inner.events.push((name, line));
        self.keep(&inner, store);
        let n = inner.events.len();
        drop(inner);
        self.count.send_replace(n);
    }

    fn end(&self, report: &crate::engine::Report, store: &Store) {
        let n = {
            let mut inner = self.lock();
            inner.record.state = if inner.stopping && store.table().is_some() {
                // Another replica takes it on where it stands.
                inner.record.state
            } else if inner.stopping {
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
            if !(inner.stopping && store.table().is_some()) {
                inner.record.report = Some(serde_json::to_value(report).expect("serializes"));
            }
            inner.canceller = None;
            self.keep(&inner, store);
            inner.events.len()
        };
        self.count.send_replace(n);
    }

    /// Keeps the record as it stands: in the state directory, or, for a launch this
    /// replica runs, through its writer to the shared table.
    fn keep(&self, inner: &Inner, store: &Store) {
        if let Some(out) = &inner.outbox {
            let _ = out.send(Out::Record(Box::new(inner.record.clone())));
        } else if store.table().is_none()
            && let Err(err) = store.save(&inner.record)
        {
            tracing::warn!("cannot keep launch {}: {err}", inner.record.id);
        }
    }

    /// Waits until the writer has written what the run left for the table.
    async fn flushed(&self) {
        let writer = {
            let mut inner = self.lock();
            inner.outbox = None;
            inner.writer.take()
        };
        if let Some(w) = writer {
            let _ = w.await;
        }
    }

    /// Says where the launch launches (kept with its record from then on).
    pub fn set_place(&self, place: String) {
        self.lock().record.place = Some(place);
    }

    /// Whether this replica shows the launch as the shared table says (it does not
    /// run it).
    pub fn mirrored(&self) -> bool {
        !self.lock().local
    }

    /// Claims the launch for this replica to run (a takeover); false when it runs it
    /// already.
    pub fn claim(&self) -> bool {
        !std::mem::replace(&mut self.lock().local, true)
    }

    /// Gives the launch back to the table: this replica does not run it (the start of
    /// a takeover failed, or the lease was lost).
    pub fn unclaim(&self) {
        self.lock().local = false;
    }

    /// The lease was lost: another replica runs the launch now. The run here stops,
    /// as a server stop stops it, and writes nothing more.
    fn handed_over(&self) {
        let mut inner = self.lock();
        inner.outbox = None;
        inner.unwritten = 0;
        inner.stopping = true;
        inner.local = false;
        if let Some(c) = &inner.canceller {
            c.cancel();
        } else {
            inner.dequeue.cancel();
        }
        tracing::warn!(
            "launch {}: this replica lost the lease; the replica holding it now carries the launch on",
            inner.record.id
        );
    }

    /// Takes what the shared table holds of a launch another replica runs: its record,
    /// and the events after those shown (`events` from the next id on).
    pub fn mirror(&self, record: Option<Record>, events: Vec<String>) {
        let n = {
            let mut inner = self.lock();
            if inner.local {
                return;
            }
            for line in events {
                inner.events.push((event_name_of(&line), line));
            }
            if let Some(r) = record {
                inner.record = r;
            }
            inner.events.len()
        };
        self.count.send_replace(n);
    }

    /// How many events are shown.
    pub fn event_count(&self) -> usize {
        self.lock().events.len()
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

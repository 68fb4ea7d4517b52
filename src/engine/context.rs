//! The run context: what every step of one run shares (the engine of its account and
//! region, the job's fleet and recipe, the events, the cancel token, the notes it
//! gathers on the way).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::account::Engine;
use super::events::Events;
use super::job::{Job, Recipe, RunOptions};
use super::limiter::Limiter;

use super::client_token::spec_digest;
use super::report::FallbackNote;
use super::verdict::Verdict;
use crate::cloud::{Cloud, LaunchSpec};
use crate::manifest::{DesiredState, RetryPolicy};

/// What every step of a run shares.
pub struct RunContext {
    pub engine: Arc<Engine>,
    pub cloud: Arc<dyn Cloud>,
    pub fleet: String,
    pub desired: DesiredState,
    pub allow_replace: bool,
    pub events: Events,
    pub cancel: CancellationToken,
    pub skip: BTreeMap<String, Verdict>,
    pub(super) recipe: Option<Recipe>,
    /// The region's zones, read once per run before the first launch; None when they
    /// could not be read (launches then let AWS choose).
    pub(super) zones: OnceCell<Option<Vec<String>>>,
    /// Workspaces launched on a fallback type, and why.
    pub(super) fallbacks: std::sync::Mutex<Vec<FallbackNote>>,
    /// Workspaces waiting for room in a quota, with why.
    pub quota_waiting: BTreeMap<String, Verdict>,
    /// Whether, and how long, the run waits for quota.
    pub quota_wait: Option<super::QuotaWait>,
    /// When the run began.
    pub started: Instant,
    /// The launch limiter when the run began; the engine's, shared with other runs.
    pub(super) launch: Option<Arc<Limiter>>,
    pub retry: RetryPolicy,
    /// Until when throttled calls are retried.
    pub(super) throttle_deadline: Instant,
    pub(super) launches_left: AtomicUsize,
    /// The template's spec digest: the key of the launch notes.
    pub(super) digest: String,
    /// Workspace and ClientToken of each launch this run made.
    pub(super) sent: std::sync::Mutex<Vec<(String, String)>>,
    /// Instances launched in a batch whose own tags are still to be written, with
    /// their workspace: written at the end of the run (see `launch_batch`).
    pub(super) untagged: std::sync::Mutex<Vec<(String, String)>>,
    /// Time between two looks at an instance that a resize waits for.
    pub(super) poll: Duration,
    /// How long a resize waits for its instance to stop.
    pub(super) settle: Duration,
    /// What the error catalogue fills its texts with.
    pub errors: crate::errors::Context,
    /// Whether starts are recorded as prism's own (see [`Job::own_starts`]).
    pub(super) own_starts: bool,
}

impl RunContext {
    pub fn new(
        engine: Arc<Engine>,
        job: Job,
        opts: &RunOptions,
        events: Events,
        cancel: CancellationToken,
        launches: usize,
    ) -> Self {
        let digest = job
            .recipe
            .as_ref()
            .and_then(|r| r.spec.as_ref().ok())
            .map(spec_digest)
            .unwrap_or_default();
        RunContext {
            cloud: engine.cloud().clone(),
            launch: engine.launch_limiter(),
            engine,
            fleet: job.fleet,
            desired: job.desired,
            allow_replace: job.allow_replace,
            events,
            cancel,
            skip: job.skip,
            quota_waiting: job.quota_waiting,
            quota_wait: job.quota_wait,
            started: Instant::now(),
            recipe: job.recipe,
            zones: OnceCell::new(),
            fallbacks: std::sync::Mutex::new(Vec::new()),
            retry: opts.retry.clone(),
            throttle_deadline: Instant::now() + opts.throttle_deadline,
            launches_left: AtomicUsize::new(launches),
            digest,
            poll: opts.poll,
            settle: opts.wait.unwrap_or(Duration::from_secs(600)),
            errors: job.errors,
            own_starts: job.own_starts,
            sent: Default::default(),
            untagged: Default::default(),
        }
    }

    /// The spec to launch from, or why there is none.
    /// Notes that this run sent `token` (a ClientToken, or a batch's token and index)
    /// at `sent_at` for `workspace`, and AWS answered with `instance_id` of
    /// `instance_type`: for the summary's launches by other runs, and for the plans of
    /// other processes while AWS does not show it yet.
    pub(super) fn note_sent(
        &self,
        workspace: &str,
        token: String,
        sent_at: u64,
        instance_id: &str,
        instance_type: &str,
    ) {
        self.engine.memory.sent(
            &token,
            sent_at,
            &super::launch_notes::Launched {
                fleet: self.fleet.clone(),
                instance_id: instance_id.to_string(),
                instance_type: instance_type.to_string(),
            },
        );
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((workspace.to_string(), token));
    }

    pub(super) fn template(&self) -> Result<&LaunchSpec, String> {
        match &self.recipe {
            Some(r) => r.spec.as_ref().map_err(Clone::clone),
            None => Err("the job has no launch recipe".into()),
        }
    }
}

impl RunContext {
    /// The workspaces this run launched whose instance another run had launched first
    /// with the same ClientToken: AWS answered this run with that instance.
    pub fn launched_by_others(&self) -> Vec<String> {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let others = self
            .engine
            .memory
            .launched_by_others(sent.iter().map(|(_, t)| t.as_str()));
        let mut names: Vec<String> = sent
            .iter()
            .filter(|(_, t)| others.contains(&t.as_str()))
            .map(|(w, _)| w.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

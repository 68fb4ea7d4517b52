//! What happens during an apply, as one stream of events that the progress display,
//! the NDJSON output and the summary all read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::verdict::Verdict;
use crate::cloud::ErrorClass;
use crate::plan::ActionKind;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The apply begins.
    Started {
        fleet: String,
        total: usize,
        launches: usize,
        /// Launches per minute; None when launches are not paced.
        rate_per_minute: Option<f64>,
        burst_size: u32,
        adaptive: bool,
        /// Whether the pace is AWS's own (`rate_limit: auto`): launches that can
        /// share a call do.
        #[serde(default)]
        auto: bool,
    },
    /// An action waits for its turn.
    Queued {
        workspace: String,
        action: ActionKind,
    },
    /// The launch rate limit holds the next launch back.
    RateLimited {
        workspace: String,
        wait_s: f64,
        /// Estimated time until every remaining launch has been made.
        eta_s: f64,
    },
    /// The workspaces launched in batches get their own tags (`prism:workspace`,
    /// `Name`, `prism:member`), one CreateTags each at AWS's pace for changes. They
    /// are up already; an interrupted run leaves the rest to the next.
    Tagging {
        instances: usize,
        /// Estimated time until every one is tagged.
        eta_s: f64,
    },
    /// The adaptive limiter changed the launch rate.
    RateChanged {
        rate_per_minute: f64,
        reason: String,
    },
    /// A RunInstances call is made.
    Launching {
        workspace: String,
        attempt: u32,
        availability_zone: Option<String>,
        /// The type launched: the template's, or one of its fallback types.
        instance_type: String,
    },
    /// A call failed and will be tried again.
    Retrying {
        workspace: String,
        attempt: u32,
        max_attempts: u32,
        delay_s: f64,
        code: String,
        class: ErrorClass,
    },
    /// No capacity in a zone: the launch moves on to the next one.
    ZoneFull {
        workspace: String,
        availability_zone: Option<String>,
        next_zone: String,
    },
    /// An instance type is sold out (or not offered) in a zone: every launch of the
    /// engine avoids the pair for `for_s` seconds.
    ZoneUnavailable {
        instance_type: String,
        availability_zone: String,
        /// AWS's answer: InsufficientInstanceCapacity, Unsupported, ….
        code: String,
        for_s: f64,
        /// The launch that met the answer; None for a mark already in force when the
        /// run began (made by an earlier run of the same engine).
        workspace: Option<String>,
    },
    /// A sold-out mark ran out: the pair is tried again.
    ZoneAvailable {
        instance_type: String,
        availability_zone: String,
    },
    /// The type is sold out in every zone: the workspace moves to the template's next
    /// fallback type.
    TypeFallback {
        workspace: String,
        instance_type: String,
        next_instance_type: String,
    },
    /// An instance was launched for a workspace.
    Launched {
        workspace: String,
        instance_id: String,
        took_s: f64,
    },
    /// A launch that ended in errors was found up after all: an earlier call, whose
    /// answer was lost, had launched it.
    Confirmed {
        workspace: String,
        instance_id: String,
        /// The error the launch ended with.
        after: String,
    },
    /// A workspace this cancelled run never launched is up: another run (another
    /// process, or a `prism watch`) launched it meanwhile.
    LaunchedElsewhere {
        workspace: String,
        instance_id: String,
    },
    /// A start, stop or terminate call was accepted.
    Changed {
        workspace: String,
        action: ActionKind,
        instance_id: String,
        took_s: f64,
    },
    /// An in-place resize begins: the instance is stopped, its type changed, and it is
    /// started again when the fleet runs.
    Resizing {
        workspace: String,
        instance_id: String,
        from_instance_type: String,
        instance_type: String,
    },
    /// A resize AWS refused was undone: the instance is back on its old type (and
    /// started again when the fleet runs). A `failed` event follows.
    ResizeUndone {
        workspace: String,
        instance_id: String,
        instance_type: String,
    },
    /// An instance reached the running state.
    Running {
        workspace: String,
        instance_id: String,
    },
    /// An instance reached the stopped state.
    Stopped {
        workspace: String,
        instance_id: String,
    },
    /// A workspace's action failed for good.
    Failed {
        workspace: String,
        action: ActionKind,
        code: String,
        message: String,
        class: Option<ErrorClass>,
        /// What happened, what prism did, what to do: from the error catalogue.
        explained: crate::errors::Explained,
    },
    /// The quota has no room for the workspace's action: it waits, and goes ahead
    /// (`quota_available`) once the quota or the usage leaves room.
    WaitingForQuota {
        workspace: String,
        action: ActionKind,
        #[serde(flatten)]
        reason: Verdict,
    },
    /// A reading of the quota found room for a waiting workspace: its action goes ahead.
    QuotaAvailable {
        workspace: String,
        action: ActionKind,
        /// The quota's name.
        quota: String,
        /// vCPUs free in it before this workspace.
        available_vcpus: u32,
    },
    /// An action was not carried out.
    Skipped {
        workspace: String,
        action: ActionKind,
        #[serde(flatten)]
        reason: Verdict,
    },
    /// The first Ctrl-C: no new actions start.
    Interrupted,
    /// The apply is over.
    Summary(super::report::Report),
}

/// An event with the time since the apply began.
#[derive(Debug, Clone, Serialize)]
pub struct Stamped {
    pub elapsed_s: f64,
    #[serde(flatten)]
    pub event: Event,
}

/// Where events go; cheap to clone. The summary is the last event: what a task still
/// winding down says after it (a launch that was waiting for its permit when Ctrl-C
/// came) is not news to anyone.
#[derive(Debug, Clone)]
pub struct Events {
    start: Instant,
    tx: mpsc::UnboundedSender<Stamped>,
    ended: Arc<AtomicBool>,
    /// Where the run's changes to workspaces are counted, and its fleet.
    counted: Option<Arc<(Arc<crate::metrics::Metrics>, String)>>,
}

impl Events {
    /// A sink and the receiving end for a renderer.
    pub fn channel() -> (Events, mpsc::UnboundedReceiver<Stamped>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Events {
                start: Instant::now(),
                tx,
                ended: Arc::new(AtomicBool::new(false)),
                counted: None,
            },
            rx,
        )
    }

    pub fn emit(&self, event: Event) {
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        if matches!(event, Event::Summary(_)) {
            self.ended.store(true, Ordering::Release);
        }
        if let Some(counted) = &self.counted {
            counted.0.event(&counted.1, &event);
        }
        let elapsed_s = self.start.elapsed().as_secs_f64();
        // A renderer that has gone away loses nothing the summary does not repeat.
        let _ = self.tx.send(Stamped { elapsed_s, event });
    }

    /// These events, counted in `metrics` as changes to workspaces of `fleet`.
    pub fn counted(mut self, metrics: Arc<crate::metrics::Metrics>, fleet: &str) -> Events {
        self.counted = Some(Arc::new((metrics, fleet.to_string())));
        self
    }

    /// Time since the apply began.
    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }
}

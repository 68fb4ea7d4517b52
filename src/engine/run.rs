//! A run in progress: its events, a way to cancel it, and its report at the end.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::account::Engine;
use super::events::{Event, Events, Stamped};
use super::executor;
use super::job::{Job, RunOptions};
use super::report::Report;

impl Engine {
    /// Starts carrying out `job`; the run goes on in the background.
    pub fn run(self: &Arc<Self>, job: Job, opts: RunOptions) -> Run {
        let (mut events, rx) = Events::channel();
        if let Some(metrics) = self.metrics() {
            events = events.counted(metrics, &job.fleet);
        }
        let cancel = CancellationToken::new();
        // Within the caller's span (a watch pass, a server's launch), the run's log
        // records carry its fleet.
        let span = tracing::info_span!("run", fleet = %job.fleet);
        let task = tokio::spawn(
            executor::execute(self.clone(), job, opts, events.clone(), cancel.clone())
                .instrument(span),
        );
        Run {
            events: Some(rx),
            canceller: Canceller { cancel, events },
            task,
        }
    }
}

/// Stops a run from starting new actions; the calls in flight finish.
#[derive(Debug, Clone)]
pub struct Canceller {
    cancel: CancellationToken,
    events: Events,
}

impl Canceller {
    /// Cancels the run (once; later calls do nothing) and says so in its events.
    pub fn cancel(&self) {
        if !self.cancel.is_cancelled() {
            self.events.emit(Event::Interrupted);
            self.cancel.cancel();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// A run in progress.
#[derive(Debug)]
pub struct Run {
    events: Option<UnboundedReceiver<Stamped>>,
    canceller: Canceller,
    task: JoinHandle<Report>,
}

impl Run {
    /// The run's events, from the start; the stream ends after the summary. Taken once.
    pub fn events(&mut self) -> UnboundedReceiver<Stamped> {
        self.events.take().expect("the events are taken once")
    }

    /// What cancels this run, for a signal handler or a request.
    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }

    /// Waits for the end of the run.
    pub async fn report(self) -> Report {
        drop(self.events);
        let Canceller { events, .. } = self.canceller;
        drop(events);
        match self.task.await {
            Ok(report) => report,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

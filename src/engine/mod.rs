//! The engine: one value per account and region that carries out changes to
//! workspaces for every front door (`apply`, the `workspace` commands, `watch`, the
//! server).
//!
//! It owns the cloud client and the limiters, so every run in the process shares
//! AWS's buckets: two launches at once never exceed the configured rate together. A
//! run takes a [`Job`] (the actions, and what a launch needs) and gives back a [`Run`]:
//! the event stream, a way to cancel, and the final [`Report`].
//!
//! The files read bottom-up; none uses a file above it (a unit test keeps it so):
//!
//! - foundations: `clock`, `limiter` (pacing), `client_token` (ClientTokens), `launch_notes` (launch
//!   notes), `capacity` (sold-out offerings), `gate` (the quota screen);
//! - what a run gives back: `report`, `events`, `progress`, `outcome`;
//! - what a run is: `account` (the [`Engine`] of an account and region), `job` (what it
//!   is asked), `context` (what its steps share), `call` (the paced, retried AWS call);
//! - the steps: `ops` (start, stop, pause, a failure's note), `launch`, `launch_batch`
//!   (many launches in one call), `resize`,
//!   `step` (the dispatch of one action), `batch` (starts, stops and terminations of
//!   many workspaces in one call), `wait` (final states), `quota_wait`;
//! - on top: `executor` (a whole run) and `run` (starting it, following it).

mod account;
mod batch;
mod call;
pub mod capacity;
pub mod client_token;
pub mod clock;
mod context;
pub mod events;
mod executor;
pub mod gate;
mod job;
mod launch;
mod launch_batch;
pub mod launch_notes;
pub mod limiter;
mod ops;
mod outcome;
pub mod progress;
mod quota_wait;
mod report;
mod resize;
mod run;
mod step;
pub mod verdict;
mod wait;

pub use account::{Engine, adopt};
pub use job::{Job, QuotaWait, Recipe, RunOptions};
pub use limiter::RateSettings;
pub use progress::Progress;
pub use report::{FailureNote, FallbackNote, Report, SkipNote};
pub use run::{Canceller, Run};
pub use verdict::Verdict;

#[cfg(test)]
mod tests;

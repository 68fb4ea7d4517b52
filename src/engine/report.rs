//! What a run gives back: the [`Report`] and its notes on each workspace that failed,
//! was skipped, waits for quota or launched on a fallback type.

use serde::Serialize;

use super::verdict::Verdict;
use crate::cloud::ErrorClass;
use crate::plan::ActionKind;

/// One workspace whose action failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureNote {
    pub workspace: String,
    pub action: ActionKind,
    /// Whether a call may have reached AWS (it answered, or the answer was lost).
    #[serde(skip)]
    pub reached_aws: bool,
    /// The AWS error code, or `Timeout` for a wait that ran out.
    pub code: String,
    pub message: String,
    pub class: Option<ErrorClass>,
    /// What happened, what prism did, what to do: from the error catalogue.
    pub explained: crate::errors::Explained,
}

/// One workspace launched on a fallback type, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FallbackNote {
    pub workspace: String,
    /// The type it was launched as.
    pub instance_type: String,
    /// The template's own type.
    pub instead_of: String,
    pub reason: String,
}

/// One workspace whose action was not carried out, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkipNote {
    pub workspace: String,
    pub action: ActionKind,
    #[serde(flatten)]
    pub reason: Verdict,
}

/// How an apply went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub fleet: String,
    /// Actions in the plan.
    pub total: usize,
    /// Actions carried out (and, when waiting, settled).
    pub succeeded: usize,
    /// Of those, instances launched.
    pub launched: usize,
    pub failed: Vec<FailureNote>,
    pub skipped: Vec<SkipNote>,
    /// Actions never started because of an interruption.
    pub not_started: usize,
    /// Workspaces still waiting for room in a quota when the run ended (`prism watch`
    /// launches them once there is room).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for_quota: Vec<SkipNote>,
    /// Workspaces whose launch ended in errors although its instance was up: a call
    /// whose answer was lost had launched it. Counted as launched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirmed_after_errors: Vec<String>,
    /// Workspaces whose instance another run, at the same time, had launched with the
    /// same ClientToken: AWS answered this run with it. Not counted as launched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub launched_by_other_runs: Vec<String>,
    /// Workspaces launched on one of the template's fallback types, in name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<FallbackNote>,
    pub interrupted: bool,
    pub duration_s: f64,
}

impl Report {
    /// Whether everything the plan asked for was done.
    pub fn complete(&self) -> bool {
        self.failed.is_empty()
            && self.skipped.is_empty()
            && self.waiting_for_quota.is_empty()
            && self.not_started == 0
            && !self.interrupted
    }
}

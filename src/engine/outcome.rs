//! How a step ended, and why a step stopped early.

use crate::cloud::{CloudError, InstanceState};
use crate::plan::ActionKind;

use super::report::FailureNote;
use super::verdict::Verdict;

/// How an action ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The calls were accepted; `instance` is the workspace's instance afterwards.
    Done {
        instance: Option<String>,
        launched: bool,
        then_stop: bool,
    },
    Failed(FailureNote),
    Skipped(Verdict),
    /// Still waiting for room in a quota when the run ended, with why.
    Waiting(Verdict),
    /// Not carried out: Ctrl-C came first.
    Interrupted,
}

/// Why a step stopped early.
pub enum StepError {
    Cloud(CloudError),
    Interrupted,
}

impl From<CloudError> for StepError {
    fn from(e: CloudError) -> Self {
        StepError::Cloud(e)
    }
}

/// The state an action leaves its instance in, to wait for.
pub(super) fn target_state(
    action: ActionKind,
    desired: crate::manifest::DesiredState,
) -> Option<InstanceState> {
    match action {
        ActionKind::Create | ActionKind::Replace | ActionKind::Start | ActionKind::Resize => {
            Some(match desired {
                crate::manifest::DesiredState::Running => InstanceState::Running,
                crate::manifest::DesiredState::Stopped => InstanceState::Stopped,
            })
        }
        ActionKind::Stop | ActionKind::Hibernate => Some(InstanceState::Stopped),
        ActionKind::Delete => None,
    }
}

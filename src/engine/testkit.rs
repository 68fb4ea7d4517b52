//! What the engine's unit tests share: the types they name, from one place.

pub use super::events::Event;
pub use super::launch_notes::LaunchNotes;
pub use crate::cloud::ErrorClass;
pub use crate::manifest::Manifest;
pub use crate::observe::Observed;

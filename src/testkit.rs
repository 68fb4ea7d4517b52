//! What the unit tests share: an engine on a fake cloud, a manifest from its text, and
//! the types they name.

use std::path::Path;
use std::sync::Arc;

use crate::cloud::fake::FakeCloud;
use crate::engine::{Engine, RateSettings};

pub use crate::cloud::ErrorClass;
pub use crate::engine::events::Event;
pub use crate::engine::launch_notes::LaunchNotes;
pub use crate::manifest::Manifest;
pub use crate::observe::Observed;

/// An engine on `cloud` with launch notes in memory, paced by `rate` (None: unpaced).
pub fn engine(cloud: &Arc<FakeCloud>, rate: Option<RateSettings>) -> Arc<Engine> {
    Engine::new(cloud.clone(), rate, Arc::new(LaunchNotes::in_memory()))
}

/// A launch pace.
pub fn pace(rate_per_minute: f64, burst_size: u32, adaptive: bool) -> Option<RateSettings> {
    Some(RateSettings {
        rate_per_minute,
        burst_size,
        adaptive,
        auto: false,
    })
}

/// The manifest `text`, as if read from `file`; a bad one fails the test with its
/// problems.
pub fn manifest(file: &str, text: &str) -> Manifest {
    crate::manifest::parse(Path::new(file), text)
        .unwrap_or_else(|e| panic!("{file} does not parse: {e:?}"))
}

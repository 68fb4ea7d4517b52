//! The wall clock a watch plans by, and the schedule's next boundary as a timer.
//!
//! A schedule is written in wall-clock time; timers run on tokio's clock. The system
//! clock is read for each pass (so that a suspended laptop or a corrected clock is
//! followed), and a boundary becomes a tokio deadline only for the wait to it. Tests
//! use a virtual wall clock that moves with tokio's paused time.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use crate::manifest::Manifest;
use crate::plan::schedule::{self, Change, Wanted, moment};

/// The wall clock of a watch.
#[derive(Debug, Clone, Copy)]
pub enum WallClock {
    /// The system's clock.
    System,
    /// `at` when tokio's clock read `since`, moving with tokio's clock (paused in tests).
    Virtual { at: Timestamp, since: Instant },
}

impl WallClock {
    /// A virtual clock that reads `at` now.
    pub fn starting_at(at: Timestamp) -> WallClock {
        WallClock::Virtual {
            at,
            since: Instant::now(),
        }
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        match self {
            WallClock::System => Timestamp::now(),
            WallClock::Virtual { at, since } => {
                let elapsed = jiff::SignedDuration::try_from(since.elapsed())
                    .expect("a watch runs less than centuries");
                at.checked_add(elapsed).expect("a time before 9999")
            }
        }
    }

    /// The tokio deadline at which this clock reads `t` (now, if `t` is past).
    pub fn deadline(&self, t: Timestamp) -> Instant {
        let ahead = t.duration_since(self.now());
        Instant::now() + Duration::try_from(ahead).unwrap_or(Duration::ZERO)
    }
}

/// The first change of `manifest`'s schedule after `after`, if it has a schedule.
pub fn next_boundary(manifest: &Manifest, after: Timestamp) -> Option<Change> {
    schedule::phase_at(manifest.schedule.as_ref()?, after).next
}

/// What a watch says when it wakes at `change`.
pub fn boundary_notice(change: &Change) -> String {
    match change.state {
        Wanted::Running => format!(
            "schedule: {} opens at {}: bringing the fleet to running",
            change.slot.label,
            moment(&change.at)
        ),
        state => format!(
            "schedule: {} ends at {}: bringing the fleet to {}",
            change.slot.label,
            moment(&change.at),
            state.name()
        ),
    }
}

/// What a watch says of the next boundary it waits for.
pub fn waiting_notice(change: &Change) -> String {
    let what = match change.state {
        Wanted::Running => "opens",
        _ => "ends",
    };
    format!(
        "schedule: next change at {}, when {} {what} ({})",
        moment(&change.at),
        change.slot.label,
        change.state.name()
    )
}

#[cfg(test)]
mod tests {
    //! A watch of a scheduled fleet on the in-memory cloud, in paused time.

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::cloud::InstanceState;
    use crate::cloud::fake::FakeCloud;
    use crate::engine::Engine;
    use crate::engine::launch_notes::LaunchNotes;
    use crate::watch::{Notice, WatchOptions};

    fn states(cloud: &FakeCloud) -> Vec<InstanceState> {
        let mut v: Vec<_> = cloud
            .instances
            .lock()
            .unwrap()
            .iter()
            .filter(|i| !i.state.is_gone())
            .map(|i| i.state)
            .collect();
        v.sort_by_key(|s| s.to_string());
        v
    }

    fn fake() -> Arc<FakeCloud> {
        Arc::new(FakeCloud {
            region: "us-west-2".into(),
            zones: vec!["us-west-2a".into()],
            vcpus: BTreeMap::from([("t3.micro".into(), 2)]),
            applied: BTreeMap::from([("L-1216C47A".into(), 64.0)]),
            images: FakeCloud::own_image("ami-1"),
            ..FakeCloud::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_workspace_started_by_hand_runs_until_the_next_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        let text = "name: w\nproject: p\ntemplate: t\ncount: 2\nschedule:\n  timezone: UTC\n  running:\n    - {days: [wed], from: \"09:00\", to: \"09:10\"}\n    - {days: [wed], from: \"10:00\", to: \"10:10\"}\ntemplates:\n  t: {image: ami-1, instance_type: t3.micro}\n";
        std::fs::write(&path, text).unwrap();
        let manifest = crate::manifest::load(&path).unwrap();
        let cloud = fake();
        let engine = Engine::new(cloud.clone(), None, Arc::new(LaunchNotes::in_memory()));
        let opts = WatchOptions {
            resync: Duration::from_secs(300),
            once: false,
            parallelism: 4,
            config: crate::config::UserConfig::default(),
            quota_recheck: crate::engine::QuotaWait::EVERY,
        };
        let start: Timestamp = "2026-12-02T09:11:00Z".parse().unwrap();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let (tx, _rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let watch = tokio::spawn(crate::watch::run_with_clock(
            path,
            manifest,
            engine,
            opts,
            cancel.clone(),
            tx,
            WallClock::starting_at(start),
        ));
        tokio::time::sleep_until(at(9 * 60)).await;
        assert_eq!(states(&cloud), [InstanceState::Stopped; 2]);
        // 09:20: a student starts w-01 (EC2 sets its launch time to now).
        {
            let mut instances = cloud.instances.lock().unwrap();
            let i = instances
                .iter_mut()
                .find(|i| i.workspace() == Some("w-01"))
                .unwrap();
            i.state = InstanceState::Running;
            i.launch_time = Some(start.as_second() + 9 * 60);
        }
        // Resyncs every 5 minutes until 09:59 leave it running.
        tokio::time::sleep_until(at(48 * 60)).await;
        assert_eq!(
            states(&cloud),
            [InstanceState::Running, InstanceState::Stopped]
        );
        // 10:00 starts the fleet; 10:10 stops all of it, the hand-started one too.
        tokio::time::sleep_until(at(49 * 60 + 5)).await;
        assert_eq!(states(&cloud), [InstanceState::Running; 2]);
        tokio::time::sleep_until(at(59 * 60 + 5)).await;
        assert_eq!(states(&cloud), [InstanceState::Stopped; 2]);
        cancel.cancel();
        watch.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_wakes_at_each_boundary_and_brings_the_fleet_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        let text = "name: w\nproject: p\ntemplate: t\ncount: 3\nschedule:\n  timezone: America/Chicago\n  running: [{days: [wed], from: \"09:00\", to: \"09:10\"}]\ntemplates:\n  t: {image: ami-1, instance_type: t3.micro}\n";
        std::fs::write(&path, text).unwrap();
        let manifest = crate::manifest::load(&path).unwrap();
        let cloud = fake();
        let engine = Engine::new(cloud.clone(), None, Arc::new(LaunchNotes::in_memory()));
        let opts = WatchOptions {
            resync: Duration::from_secs(3600),
            once: false,
            parallelism: 4,
            config: crate::config::UserConfig::default(),
            quota_recheck: crate::engine::QuotaWait::EVERY,
        };
        let start: Timestamp = "2026-12-02T14:59:00Z".parse().unwrap(); // 08:59 CST
        let clock = WallClock::starting_at(start);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let watch = tokio::spawn(crate::watch::run_with_clock(
            path,
            manifest,
            engine,
            opts,
            cancel.clone(),
            tx,
            clock,
        ));

        tokio::time::sleep_until(at(50)).await;
        assert_eq!(
            states(&cloud),
            [InstanceState::Stopped; 3],
            "launched, then stopped before class"
        );
        // The window opens at 60 s: the fleet runs within a few seconds.
        tokio::time::sleep_until(at(63)).await;
        assert_eq!(
            states(&cloud),
            [InstanceState::Running; 3],
            "started at 09:00"
        );
        tokio::time::sleep_until(at(60 + 599)).await;
        assert_eq!(
            states(&cloud),
            [InstanceState::Running; 3],
            "running until 09:10"
        );
        tokio::time::sleep_until(at(60 + 603)).await;
        assert_eq!(
            states(&cloud),
            [InstanceState::Stopped; 3],
            "stopped at 09:10"
        );
        cancel.cancel();
        watch.await.unwrap().unwrap();

        let mut passes = 0;
        let mut said = Vec::new();
        while let Ok(n) = rx.try_recv() {
            match n {
                Notice::PassStarted { .. } => passes += 1,
                Notice::Schedule(m) => said.push(m),
                _ => {}
            }
        }
        assert_eq!(
            passes, 3,
            "one pass at the start and one at each boundary: {said:#?}"
        );
        assert_eq!(
            said,
            [
                "schedule: next change at Wed 2026-12-02 09:00 CST, when class hours Wed 09:00–09:10 America/Chicago opens (running)",
                "schedule: class hours Wed 09:00–09:10 America/Chicago opens at Wed 2026-12-02 09:00 CST: bringing the fleet to running",
                "schedule: next change at Wed 2026-12-02 09:10 CST, when class hours Wed 09:00–09:10 America/Chicago ends (stopped)",
                "schedule: class hours Wed 09:00–09:10 America/Chicago ends at Wed 2026-12-02 09:10 CST: bringing the fleet to stopped",
                "schedule: next change at Wed 2026-12-09 09:00 CST, when class hours Wed 09:00–09:10 America/Chicago opens (running)",
            ]
        );
    }
}

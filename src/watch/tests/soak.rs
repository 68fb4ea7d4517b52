//! A week of `watch` in virtual time on the in-memory cloud: random drift, faults,
//! throttling and manifest edits. After each disturbance the fleet converges; no pass
//! ever leaves a workspace with two instances or deletes more than the guard allows;
//! what the watch remembers stays bounded.
//!
//! The seed is printed; `PRISM_SOAK_SEED=<seed>` replays a run.

use std::collections::{BTreeMap, BTreeSet};

use crate::cloud::fake::FakeCloud;
use crate::cloud::{CloudError, InstanceState};
use crate::engine::launch_notes::LaunchNotes;
use crate::watch::*;

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const RESYNC: Duration = Duration::from_secs(300);
/// The longest a disturbance may take to settle: failing workspaces back off up to
/// 10 min, the loop up to the resync, and a permanent fault lasts a few tries.
const SETTLE: Duration = Duration::from_secs(3 * 3600);
/// Workspace names the edits use: `s-01` to `s-08`.
const MOST: u32 = 8;

#[derive(Debug, Clone, PartialEq)]
struct Edit {
    count: u32,
    stopped: bool,
    prune: bool,
    instance_type: &'static str,
}

impl Edit {
    fn manifest(&self) -> Manifest {
        let text = format!(
            "name: s\nproject: p\ntemplate: t\ncount: {}\nstate: {}\nprune: {}\nretry: {{max_retries: 2, initial_backoff: 1s, max_backoff: 4s}}\ntemplates:\n  t: {{image: ami-1, instance_type: {}}}\n",
            self.count,
            if self.stopped { "stopped" } else { "running" },
            self.prune,
            self.instance_type
        );
        crate::manifest::parse(Path::new("s.yaml"), &text).unwrap()
    }

    fn random(rng: &mut fastrand::Rng) -> Edit {
        Edit {
            count: rng.u32(2..=MOST),
            stopped: rng.u8(0..10) == 0,
            prune: rng.bool(),
            instance_type: if rng.u8(0..8) == 0 {
                "t3.small"
            } else {
                "t3.micro"
            },
        }
    }
}

fn setup() -> (Arc<FakeCloud>, Arc<Engine>) {
    let cloud = Arc::new(FakeCloud {
        region: "us-west-2".into(),
        zones: vec![
            "us-west-2a".into(),
            "us-west-2b".into(),
            "us-west-2c".into(),
        ],
        vcpus: BTreeMap::from([("t3.micro".into(), 2), ("t3.small".into(), 2)]),
        applied: BTreeMap::from([("L-1216C47A".into(), 64.0)]),
        images: FakeCloud::own_image("ami-1"),
        ..FakeCloud::default()
    });
    let engine = Engine::new(cloud.clone(), None, Arc::new(LaunchNotes::in_memory()));
    (cloud, engine)
}

fn err(api: &'static str, code: &str, status: u16) -> CloudError {
    CloudError::service(api, Some(code), "injected", Some(status))
}

/// Live instances of the fleet by workspace.
fn live(cloud: &FakeCloud) -> BTreeMap<String, Vec<(String, InstanceState, String)>> {
    let mut by: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for i in cloud.instances.lock().unwrap().iter() {
        if !i.state.is_gone() {
            let w = i.workspace().unwrap_or("").to_string();
            // The fake boots a pending instance at the next look: the same as running.
            let state = match i.state {
                InstanceState::Pending => InstanceState::Running,
                s => s,
            };
            by.entry(w)
                .or_default()
                .push((i.id.clone(), state, i.instance_type.clone()));
        }
    }
    by
}

/// Whether the fleet is as `edit` says, short of what the guard holds back.
fn converged(cloud: &FakeCloud, edit: &Edit, m: &Manifest, held: usize) -> bool {
    let by = live(cloud);
    let want = if edit.stopped {
        InstanceState::Stopped
    } else {
        InstanceState::Running
    };
    let each = m.workspaces.iter().all(|w| {
        by.get(w).is_some_and(|is| {
            // A replacement the guard holds is not carried out, nor is its instance
            // started or stopped: held, it may be in any state.
            is.len() == 1
                && (is[0].1 == want || held > 0)
                && (is[0].2 == edit.instance_type || !edit.prune || held > 0)
        })
    });
    let extras = by.keys().any(|w| !m.workspaces.contains(w));
    each && (!edit.prune || held > 0 || !extras)
}

/// One random disturbance; returns what it was, for the failure message.
fn disturb(rng: &mut fastrand::Rng, cloud: &FakeCloud, edit: &mut Edit) -> String {
    match rng.u8(0..10) {
        0..=2 => {
            let mut all = cloud.instances.lock().unwrap();
            let live: Vec<usize> = (0..all.len())
                .filter(|n| !all[*n].state.is_gone())
                .collect();
            let Some(&n) = rng.choice(live.iter()) else {
                return "drift: nothing live".into();
            };
            all[n].state = if rng.bool() {
                InstanceState::Terminated
            } else {
                InstanceState::Stopped
            };
            format!("drift: {} {}", all[n].id, all[n].state)
        }
        3 => {
            let n = rng.usize(1..12);
            let api = *rng
                .choice(["DescribeInstances", "RunInstances", "StartInstances"].iter())
                .unwrap();
            cloud.fail_next(api, vec![err(api, "RequestLimitExceeded", 503); n]);
            format!("throttle: {n} × {api}")
        }
        4 => {
            let n = rng.usize(1..4);
            let e = err("RunInstances", "InsufficientInstanceCapacity", 500);
            cloud.fail_next("RunInstances", vec![e; n]);
            format!("capacity: {n}")
        }
        5 => {
            let e = err("RunInstances", "InternalError", 500);
            let n = rng.usize(1..4);
            cloud
                .lost
                .lock()
                .unwrap()
                .insert("RunInstances", vec![e; n]);
            format!("lost answers: {n}")
        }
        6 => {
            let n = rng.usize(1..3);
            let e = err("RunInstances", "InvalidParameterValue", 400);
            cloud.fail_next("RunInstances", vec![e; n]);
            format!("permanent: {n}")
        }
        7 => {
            let api = *rng
                .choice(
                    [
                        "DescribeInstances",
                        "DescribeInstanceTypes",
                        "GetServiceQuota",
                    ]
                    .iter(),
                )
                .unwrap();
            let n = rng.usize(1..8);
            cloud.fail_next(api, vec![err(api, "InternalError", 500); n]);
            format!("transient: {n} × {api}")
        }
        _ => {
            *edit = Edit::random(rng);
            format!("edit: {edit:?}")
        }
    }
}

/// What a soak run saw, for the report.
#[derive(Debug, Default)]
struct Tally {
    passes: u64,
    disturbances: u64,
    held_passes: u64,
    longest_settle: Duration,
    most_requeued: usize,
    most_notes: usize,
}

/// A pass as the loop runs it, checked: no workspace with two live instances, no
/// deletion beyond the guard, bounded memory. Returns the pass, when the loop would
/// run the next one, and whether the pass left the fleet as it found it.
async fn checked_pass(
    engine: &Arc<Engine>,
    cloud: &FakeCloud,
    m: &Manifest,
    requeue: &mut Requeue,
    backoff: &mut Duration,
    tally: &mut Tally,
    story: &[String],
) -> (Pass, Instant, bool) {
    let opts = WatchOptions {
        resync: RESYNC,
        once: false,
        parallelism: 4,
        config: crate::config::UserConfig::default(),
        quota_recheck: crate::engine::QuotaWait::EVERY,
    };
    let (tx, _rx) = mpsc::unbounded_channel();
    let fleet_before = live(cloud);
    let before: BTreeSet<String> = fleet_before
        .values()
        .flatten()
        .map(|i| i.0.clone())
        .collect();
    let pass = reconcile_once(engine, m, requeue, &opts, &CancellationToken::new(), &tx).await;
    tally.passes += 1;
    let after = live(cloud);
    let n = tally.passes;
    let ctx = || {
        format!(
            "pass {n} after {:?}",
            &story[story.len().saturating_sub(4)..]
        )
    };
    for (w, is) in &after {
        assert!(
            is.len() <= 1,
            "{w} has {} live instances: {is:?}; {}",
            is.len(),
            ctx()
        );
    }
    let still: BTreeSet<&String> = after.values().flatten().map(|i| &i.0).collect();
    let deleted = before.iter().filter(|id| !still.contains(id)).count();
    if !m.prune {
        assert_eq!(deleted, 0, "deleted without prune; {}", ctx());
    }
    assert!(
        deleted * 2 <= before.len(),
        "deleted {deleted} of {}; {}",
        before.len(),
        ctx()
    );
    tally.most_requeued = tally.most_requeued.max(requeue.len());
    tally.most_notes = tally.most_notes.max(engine.memory.len());
    assert!(
        requeue.len() <= m.workspaces.len(),
        "requeue holds {}; {}",
        requeue.len(),
        ctx()
    );
    assert!(
        engine.memory.len() <= MOST as usize,
        "{} launch notes",
        engine.memory.len()
    );
    if pass.held > 0 {
        tally.held_passes += 1;
    }
    let next;
    (next, *backoff) = error_policy(&pass, *backoff, RESYNC);
    let now = Instant::now();
    let due = (now + next).min(requeue.next_due(now).unwrap_or(now + next));
    (pass, due, after == fleet_before)
}

#[tokio::test(start_paused = true)]
async fn a_week_of_drift_faults_and_edits() {
    let seed = std::env::var("PRISM_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_240_901u64);
    println!("soak seed {seed} (PRISM_SOAK_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (cloud, engine) = setup();
    let mut edit = Edit {
        count: 6,
        stopped: false,
        prune: true,
        instance_type: "t3.micro",
    };
    let mut requeue = Requeue::default();
    let mut backoff = Duration::ZERO;
    let mut tally = Tally::default();
    let mut story: Vec<String> = vec![];
    let t0 = Instant::now();
    while Instant::now() - t0 < WEEK {
        for _ in 0..rng.usize(1..=3) {
            story.push(disturb(&mut rng, &cloud, &mut edit));
            tally.disturbances += 1;
        }
        let m = edit.manifest();
        let start = Instant::now();
        loop {
            let (pass, due, still) = checked_pass(
                &engine,
                &cloud,
                &m,
                &mut requeue,
                &mut backoff,
                &mut tally,
                &story,
            )
            .await;
            sleep_until(due).await;
            let backing_off = !requeue.waiting(Instant::now()).is_empty();
            if still
                && !backing_off
                && pass.error.is_none()
                && converged(&cloud, &edit, &m, pass.held)
            {
                break;
            }
            assert!(
                Instant::now() - start < SETTLE,
                "not converged after {:?}: {:?}\nlive: {:?}\nrequeue: {requeue:?}\nfaults: {:?}\nlast: {:?}",
                SETTLE,
                edit,
                live(&cloud),
                cloud
                    .faults
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k, v.len()))
                    .collect::<Vec<_>>(),
                &story[story.len().saturating_sub(6)..]
            );
        }
        tally.longest_settle = tally.longest_settle.max(Instant::now() - start);
        // Quiet for a while: passes that find the fleet as it should be change nothing.
        for _ in 0..rng.usize(0..24) {
            let (pass, due, still) = checked_pass(
                &engine,
                &cloud,
                &m,
                &mut requeue,
                &mut backoff,
                &mut tally,
                &story,
            )
            .await;
            // While the guard holds deletions, what it holds back may go ahead later as
            // the fleet's size changes; otherwise a quiet pass changes nothing.
            assert!(
                still || pass.held > 0,
                "a quiet pass changed the fleet; {:?}",
                story.last()
            );
            sleep_until(due).await;
        }
    }
    println!("{tally:?}");
    assert!(tally.passes > 2000, "a week of passes: {tally:?}");
}

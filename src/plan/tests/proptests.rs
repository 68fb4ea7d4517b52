//! Properties of the planner over random fleets: random manifests against random
//! accounts (duplicates, strays, other types and images, every state).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use crate::cloud::fake::FakeCloud;
use crate::cloud::tags;
use crate::engine::{Job, RunOptions};
use crate::observe::QuotaReading;
use crate::plan::*;

const TYPES: [&str; 2] = ["t3.micro", "t3.large"];

/// What a manifest says, in the few ways that matter to the planner.
#[derive(Debug, Clone)]
struct Desired {
    count: u32,
    prune: bool,
    stopped: bool,
    instance_type: &'static str,
}

impl Desired {
    fn manifest(&self) -> Manifest {
        let text = format!(
            "name: cs\nproject: p\ntemplate: t\ncount: {}\nprune: {}\nstate: {}\ntemplates:\n  t: {{image: ami-1, instance_type: {}}}\n",
            self.count,
            self.prune,
            if self.stopped { "stopped" } else { "running" },
            self.instance_type
        );
        crate::manifest::parse(Path::new("cs.yaml"), &text).expect("valid manifest")
    }
}

fn desired() -> impl Strategy<Value = Desired> {
    (1u32..7, any::<bool>(), any::<bool>(), 0usize..2).prop_map(|(count, prune, stopped, t)| {
        Desired {
            count,
            prune,
            stopped,
            instance_type: TYPES[t],
        }
    })
}

/// An instance of fleet `cs`: workspace `cs-01`..`cs-08` (beyond the count: no longer
/// wanted) or none (a stray), either type, either image, any state.
fn instance() -> impl Strategy<Value = (Option<u32>, usize, bool, usize, i64)> {
    (
        prop::option::weighted(0.9, 1u32..9),
        0usize..2,
        prop::bool::weighted(0.8),
        0usize..InstanceState::ALL.len(),
        0i64..4,
    )
}

fn instances() -> impl Strategy<Value = Vec<Instance>> {
    prop::collection::vec(instance(), 0..14).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(n, (ws, t, same_image, state, launched))| {
                let mut tags = BTreeMap::from([(tags::FLEET.to_string(), "cs".to_string())]);
                if let Some(w) = ws {
                    tags.insert(tags::WORKSPACE.to_string(), format!("cs-{w:02}"));
                }
                Instance {
                    id: format!("i-old{n:03}"),
                    instance_type: TYPES[t].into(),
                    image_id: if same_image { "ami-1" } else { "ami-2" }.into(),
                    state: InstanceState::ALL[state],
                    availability_zone: Some("us-west-2a".into()),
                    launch_time: Some(launched),
                    first_launch_time: None,
                    tags,
                    lifecycle: None,
                    hibernated: false,
                    hibernation: false,
                }
            })
            .collect()
    })
}

fn observed(instances: Vec<Instance>, quota: f64, others_running: u32) -> Observed {
    Observed {
        region: "us-west-2".into(),
        instances,
        account_running: BTreeMap::from([("t3.micro".into(), others_running)]),
        vcpus: BTreeMap::from([("t3.micro".into(), 2), ("t3.large".into(), 2)]),
        quotas: BTreeMap::from([(
            "L-1216C47A".into(),
            QuotaReading::Known {
                value: quota,
                applied: true,
            },
        )]),
        image: ImageResolution::Resolved {
            id: "ami-1".into(),
            root_device: None,
        },
        in_flight: vec![],
    }
}

fn deleting(a: &Action) -> bool {
    matches!(a.action, ActionKind::Delete | ActionKind::Replace)
}

fn launching(a: &Action) -> bool {
    matches!(a.action, ActionKind::Create | ActionKind::Replace)
}

/// Applies `plan` on a fake cloud holding `instances`, as watch and apply do (waiting
/// for the instances, under paused time), and returns the plan made afterwards.
fn apply_then_plan(d: &Desired, instances: Vec<Instance>) -> Plan {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let cloud = Arc::new(FakeCloud {
            region: "us-west-2".into(),
            zones: vec!["us-west-2a".into(), "us-west-2b".into()],
            vcpus: BTreeMap::from([("t3.micro".into(), 2), ("t3.large".into(), 2)]),
            applied: BTreeMap::from([("L-1216C47A".into(), 1024.0)]),
            images: FakeCloud::own_image("ami-1"),
            instances: std::sync::Mutex::new(instances),
            ..FakeCloud::default()
        });
        let engine = crate::testkit::engine(&cloud, None);
        let m = d.manifest();
        let before = crate::observe::observe(cloud.as_ref(), &m).await.unwrap();
        let first = plan(&m, &before);
        let opts = RunOptions {
            parallelism: 4,
            wait: Some(std::time::Duration::from_secs(600)),
            poll: std::time::Duration::from_secs(2),
            retry: m.retry.clone(),
            throttle_deadline: std::time::Duration::from_secs(600),
        };
        let report = engine
            .run(Job::from_plan(&m, &first, &before), opts)
            .report()
            .await;
        assert!(report.failed.is_empty(), "{report:?}");
        let after = crate::observe::observe(cloud.as_ref(), &m).await.unwrap();
        plan(&m, &after)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn nothing_is_deleted_without_prune(d in desired(), is in instances()) {
        let m = d.manifest();
        let p = plan(&m, &observed(is, 1024.0, 0));
        if !m.prune {
            prop_assert!(!p.actions.iter().any(deleting), "{:?}", p.actions);
        }
        // With prune, only instances the manifest does not keep are deleted: never
        // the one kept for a wanted workspace unless it is replaced.
        let deleted: Vec<_> = p.actions.iter().filter(|a| a.action == ActionKind::Delete).collect();
        for a in &deleted {
            prop_assert!(a.instance_id.is_some());
        }
        prop_assert_eq!(p.summary.delete, deleted.len());
    }

    #[test]
    fn no_workspace_gets_two_launches(d in desired(), is in instances()) {
        let m = d.manifest();
        let o = observed(is, 1024.0, 0);
        let p = plan(&m, &o);
        let mut launches: BTreeMap<&str, usize> = BTreeMap::new();
        for a in p.actions.iter().filter(|a| launching(a)) {
            *launches.entry(&a.workspace).or_default() += 1;
        }
        prop_assert!(launches.values().all(|n| *n == 1), "{:?}", p.actions);
        // A workspace that has a live instance is never created again.
        let live: BTreeSet<&str> = o.instances.iter()
            .filter(|i| !i.state.is_gone())
            .filter_map(|i| i.workspace())
            .collect();
        for a in p.actions.iter().filter(|a| a.action == ActionKind::Create) {
            prop_assert!(!live.contains(a.workspace.as_str()), "{:?}", a);
        }
        // Every action of a workspace acts on one instance at most once.
        let ids: Vec<&String> = p.actions.iter().filter_map(|a| a.instance_id.as_ref()).collect();
        let unique: BTreeSet<&String> = ids.iter().copied().collect();
        prop_assert_eq!(ids.len(), unique.len(), "{:?}", p.actions);
    }

    #[test]
    fn the_plan_does_not_depend_on_the_order_aws_lists_instances(
        d in desired(),
        is in instances(),
        seed in any::<u64>(),
    ) {
        let m = d.manifest();
        let mut shuffled = is.clone();
        fastrand::Rng::with_seed(seed).shuffle(&mut shuffled);
        prop_assert_eq!(plan(&m, &observed(is, 1024.0, 0)), plan(&m, &observed(shuffled, 1024.0, 0)));
    }

    #[test]
    fn more_quota_never_fits_fewer(
        d in desired(),
        is in instances(),
        low in 0u32..40,
        more in 0u32..40,
        others in 0u32..10,
    ) {
        let m = d.manifest();
        let small = plan(&m, &observed(is.clone(), f64::from(low), others));
        let big = plan(&m, &observed(is, f64::from(low + more), others));
        prop_assert_eq!(&small.actions, &big.actions, "quota does not change the actions");
        let over = |p: &Plan| -> BTreeSet<String> {
            p.quota.iter().flat_map(|q| q.over_quota.iter().cloned()).collect()
        };
        prop_assert!(over(&big).is_subset(&over(&small)), "{:?} ⊄ {:?}", over(&big), over(&small));
        for (s, b) in small.quota.iter().zip(&big.quota) {
            prop_assert_eq!(&s.code, &b.code);
            prop_assert!(b.available >= s.available);
            if s.fits == Some(true) {
                prop_assert_eq!(b.fits, Some(true));
            }
        }
    }
}

proptest! {
    // Each case runs the engine on the fake cloud: fewer cases, still well spread.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn applying_a_plan_then_planning_again_changes_nothing(d in desired(), mut is in instances()) {
        if !d.prune {
            // Without prune, duplicates stay, and which one is kept follows their
            // states, which the apply changes: keep one live instance per workspace.
            let mut seen = BTreeSet::new();
            is.retain(|i| i.state.is_gone() || seen.insert(i.workspace().map(str::to_string)) || i.workspace().is_none());
        }
        let again = apply_then_plan(&d, is);
        prop_assert!(!again.has_changes(), "{:?}", again.actions);
        prop_assert!(
            !again.warnings.iter().any(|w| w.kind == crate::plan::WarningKind::DuplicateInstances) || !d.prune,
            "with prune, duplicates are gone: {:?}", again.warnings
        );
    }
}

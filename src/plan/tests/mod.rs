//! Table-driven tests of the planner: (name, manifest, observed) → expected actions.

mod proptests;

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::cloud::tags;
use crate::observe::QuotaReading;

fn manifest(extra: &str) -> Manifest {
    // `extra` may choose the template itself: a key is written once.
    let template = if extra.lines().any(|l| l.starts_with("template:")) {
        ""
    } else {
        "template: t\n"
    };
    let text = format!(
        "name: cs\nproject: p\n{template}{extra}\ntemplates:\n  t: {{image: ami-new, instance_type: t3.xlarge}}\n  l:\n    image: {{owner: amazon, name: 'al2023-*'}}\n    instance_type: t3.xlarge\n"
    );
    crate::manifest::parse(Path::new("test.yaml"), &text).expect("valid test manifest")
}

fn inst(id: &str, workspace: Option<&str>, instance_type: &str, state: InstanceState) -> Instance {
    let mut t = BTreeMap::from([(tags::FLEET.to_string(), "cs".to_string())]);
    if let Some(w) = workspace {
        t.insert(tags::WORKSPACE.to_string(), w.to_string());
    }
    Instance {
        id: id.into(),
        instance_type: instance_type.into(),
        image_id: "ami-new".into(),
        state,
        availability_zone: Some("us-west-2a".into()),
        launch_time: Some(id.len() as i64),
        first_launch_time: None,
        tags: t,
        lifecycle: None,
        hibernated: false,
        hibernation: false,
    }
}

fn observed(instances: Vec<Instance>) -> Observed {
    Observed {
        region: "us-west-2".into(),
        instances,
        account_running: BTreeMap::new(),
        vcpus: BTreeMap::from([("t3.xlarge".into(), 4), ("t3.large".into(), 2)]),
        quotas: BTreeMap::from([(
            "L-1216C47A".into(),
            QuotaReading::Known {
                value: 640.0,
                applied: true,
            },
        )]),
        image: ImageResolution::Resolved {
            id: "ami-new".into(),
            root_device: Some("/dev/sda1".into()),
        },
        in_flight: vec![],
    }
}

fn summary(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| {
            format!(
                "{:?} {} {}",
                a.action,
                a.workspace,
                a.instance_id.as_deref().unwrap_or("-")
            )
            .to_lowercase()
        })
        .collect()
}

use InstanceState::*;

#[test]
fn actions_table() {
    let with_image = |mut i: Instance, image: &str| {
        i.image_id = image.into();
        i
    };
    let cases: Vec<(&str, &str, Vec<Instance>, Vec<&str>)> = vec![
        (
            "empty account",
            "count: 2",
            vec![],
            vec!["create cs-01 -", "create cs-02 -"],
        ),
        (
            "all running",
            "count: 2",
            vec![
                inst("i-1", Some("cs-01"), "t3.xlarge", Running),
                inst("i-2", Some("cs-02"), "t3.xlarge", Pending),
            ],
            vec![],
        ),
        (
            "stopped, want running",
            "count: 1",
            vec![inst("i-1", Some("cs-01"), "t3.xlarge", Stopped)],
            vec!["start cs-01 i-1"],
        ),
        (
            "stopping, want running",
            "count: 1",
            vec![inst("i-1", Some("cs-01"), "t3.xlarge", Stopping)],
            vec!["start cs-01 i-1"],
        ),
        (
            "running, want stopped",
            "count: 1\nstate: stopped",
            vec![inst("i-1", Some("cs-01"), "t3.xlarge", Running)],
            vec!["stop cs-01 i-1"],
        ),
        (
            "pending, want stopped",
            "count: 1\nstate: stopped",
            vec![inst("i-1", Some("cs-01"), "t3.xlarge", Pending)],
            vec!["stop cs-01 i-1"],
        ),
        (
            "stopped, want stopped",
            "count: 1\nstate: stopped",
            vec![inst("i-1", Some("cs-01"), "t3.xlarge", Stopped)],
            vec![],
        ),
        (
            "shutting down is gone",
            "count: 1",
            vec![inst("i-1", Some("cs-01"), "t3.xlarge", ShuttingDown)],
            vec!["create cs-01 -"],
        ),
        (
            "type changed: resized in place",
            "count: 1\nprune: true",
            vec![inst("i-1", Some("cs-01"), "t3.large", Running)],
            vec!["resize cs-01 i-1"],
        ),
        (
            "type changed, prune off: resized all the same",
            "count: 1",
            vec![inst("i-1", Some("cs-01"), "t3.large", Running)],
            vec!["resize cs-01 i-1"],
        ),
        (
            "type changed, stopped: resized, no separate start",
            "count: 1",
            vec![inst("i-1", Some("cs-01"), "t3.large", Stopped)],
            vec!["resize cs-01 i-1"],
        ),
        (
            "type and image changed: replaced",
            "count: 1\nprune: true",
            vec![with_image(
                inst("i-1", Some("cs-01"), "t3.large", Running),
                "ami-old",
            )],
            vec!["replace cs-01 i-1"],
        ),
        (
            "image id changed",
            "count: 1\nprune: true",
            vec![with_image(
                inst("i-1", Some("cs-01"), "t3.xlarge", Running),
                "ami-old",
            )],
            vec!["replace cs-01 i-1"],
        ),
        (
            "lookup image newer: no replace",
            "count: 1\ntemplate: l",
            vec![with_image(
                inst("i-1", Some("cs-01"), "t3.xlarge", Running),
                "ami-old",
            )],
            vec![],
        ),
        (
            "unwanted, prune off",
            "count: 1",
            vec![
                inst("i-1", Some("cs-01"), "t3.xlarge", Running),
                inst("i-9", Some("cs-09"), "t3.xlarge", Running),
            ],
            vec![],
        ),
        (
            "unwanted, prune on",
            "count: 1\nprune: true",
            vec![
                inst("i-1", Some("cs-01"), "t3.xlarge", Running),
                inst("i-9", Some("cs-09"), "t3.xlarge", Stopped),
            ],
            vec!["delete cs-09 i-9"],
        ),
        (
            "duplicates keep the running one",
            "count: 1\nprune: true",
            vec![
                inst("i-22", Some("cs-01"), "t3.xlarge", Stopped),
                inst("i-333", Some("cs-01"), "t3.xlarge", Running),
            ],
            vec!["delete cs-01 i-22"],
        ),
        (
            "fleet tag without workspace tag",
            "count: 1\nprune: true",
            vec![
                inst("i-1", Some("cs-01"), "t3.xlarge", Running),
                inst("i-7", None, "t3.xlarge", Running),
            ],
            vec!["delete i-7 i-7"],
        ),
        (
            "members",
            "members: [ann, bo]",
            vec![inst("i-1", Some("cs-ann"), "t3.xlarge", Running)],
            vec!["create cs-bo -"],
        ),
    ];
    for (name, extra, instances, want) in cases {
        let p = plan(&manifest(extra), &observed(instances));
        assert_eq!(summary(&p), want, "case: {name}");
        assert_eq!(p.summary.total(), p.actions.len(), "case: {name}");
    }
}

#[test]
fn without_prune_unwanted_workspaces_are_listed_not_deleted() {
    let p = plan(
        &manifest("count: 1"),
        &observed(vec![
            inst("i-1", Some("cs-01"), "t3.xlarge", Running),
            inst("i-9", Some("cs-09"), "t3.xlarge", Running),
        ]),
    );
    assert_eq!(p.summary.delete, 0);
    assert_eq!(p.would_delete_with_prune.len(), 1);
    assert_eq!(p.would_delete_with_prune[0].instance_id, "i-9");
    assert!(
        p.warnings
            .iter()
            .any(|w| w.kind == WarningKind::PruneDisabled)
    );
}

#[test]
fn raising_the_count_only_adds_the_new_workspaces() {
    let existing: Vec<Instance> = (1..=30)
        .map(|i| {
            inst(
                &format!("i-{i}"),
                Some(&format!("cs-{i:02}")),
                "t3.xlarge",
                Running,
            )
        })
        .collect();
    let p = plan(&manifest("count: 32"), &observed(existing));
    assert_eq!(summary(&p), ["create cs-31 -", "create cs-32 -"]);
}

fn quota_case(limit: f64, used_xlarge: u32, count: u32) -> Plan {
    let mut o = observed(vec![]);
    o.quotas.insert(
        "L-1216C47A".into(),
        QuotaReading::Known {
            value: limit,
            applied: true,
        },
    );
    if used_xlarge > 0 {
        o.account_running.insert("t3.xlarge".into(), used_xlarge);
    }
    plan(&manifest(&format!("count: {count}")), &o)
}

#[test]
fn quota_shortfall_counts_what_fits() {
    let p = quota_case(32.0, 4, 10);
    let q = &p.quota[0];
    assert_eq!(
        (q.limit, q.usage, q.needed, q.available, q.fits),
        (Some(32.0), Some(16), 40, Some(16), Some(false))
    );
    let w = p
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::QuotaShortfall)
        .expect("shortfall");
    assert_eq!(
        w.message,
        "Only 4 of 10 new workspaces fit the On-Demand Standard (A, C, D, H, I, M, R, T, Z) quota (needs 40 vCPUs, 16 available of 32)"
    );
    assert!(
        w.options[0].contains("--quota on-demand-vcpus --desired-value 70 --region us-west-2"),
        "{}",
        w.options[0]
    );
    assert_eq!(
        w.options[1],
        "use a smaller instance type: at most 1 vCPU each lets all 10 fit"
    );
    assert_eq!(
        w.options[2],
        "launch fewer workspaces: 4 of 10 fit in total"
    );
    assert!(
        w.options[0].ends_with("--manifest test.yaml"),
        "{}",
        w.options[0]
    );
    assert_eq!(
        w.options[3],
        "launch the rest as soon as there is room: `prism watch test.yaml`, or `prism apply test.yaml --wait-for-quota 72h`"
    );
}

#[test]
fn quota_that_fits_has_no_warning() {
    // 16 used + 40 needed of 80: 70 % after the plan, not critical.
    let p = quota_case(80.0, 4, 10);
    assert_eq!(p.quota[0].fits, Some(true));
    assert_eq!(p.quota[0].available, Some(64));
    assert_eq!(p.quota[0].recommended_value, None);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn a_plan_that_fits_but_leaves_the_quota_critical_says_so() {
    let cases = [
        // (limit, t3.xlarge running, count, warned, recommended)
        (64.0, 4, 10, true, Some(70.0)),
        (32.0, 7, 1, true, Some(40.0)),
        (40.0, 7, 1, false, None),
        (70.0, 4, 10, false, None),
        (80.0, 4, 10, false, None),
    ];
    for (limit, used, count, warned, recommended) in cases {
        let p = quota_case(limit, used, count);
        let q = &p.quota[0];
        assert_eq!(q.fits, Some(true), "{limit} {used} {count}");
        assert_eq!(q.recommended_value, recommended, "{limit} {used} {count}");
        let high = p.warnings.iter().find(|w| w.kind == WarningKind::QuotaHigh);
        assert_eq!(
            high.is_some(),
            warned,
            "{limit} {used} {count}: {:?}",
            p.warnings
        );
        if let (Some(w), Some(r)) = (high, recommended) {
            assert!(w.options[0].ends_with(&format!("--desired-value {r} --region us-west-2")));
        }
    }
}

#[test]
fn the_apply_error_context_recommends_what_the_plan_does() {
    let mut o = observed(vec![]);
    o.quotas.insert(
        "L-1216C47A".into(),
        QuotaReading::Known {
            value: 32.0,
            applied: true,
        },
    );
    o.account_running.insert("t3.xlarge".into(), 7);
    // One workspace to launch: the launch AWS refuses is the plan's whole need.
    let p = plan(&manifest("count: 1"), &o);
    let from_plan = p.quota[0].recommended_value;
    assert_eq!(from_plan, Some(40.0));
    let ctx = crate::errors::Context::from_observed(&o, "t3.xlarge");
    assert_eq!(ctx.recommended_value, from_plan);
    assert_eq!(ctx.usage, Some(28));
    // Several: the plan's context knows the whole need.
    let p = plan(&manifest("count: 3"), &o);
    let ctx = crate::errors::Context::for_plan(&o, &p, "t3.xlarge");
    assert_eq!(ctx.recommended_value, p.quota[0].recommended_value);
    assert_eq!(ctx.recommended_value, Some(50.0));
    let err = crate::cloud::CloudError::service(
        "RunInstances",
        Some("VcpuLimitExceeded"),
        "You have requested more vCPU capacity than your current vCPU limit of 32 allows",
        Some(400),
    );
    let e = crate::errors::explain(&err, &ctx);
    assert!(
        e.what_you_can_do
            .contains("prism quota request --quota on-demand-vcpus --desired-value 50"),
        "{}",
        e.what_you_can_do
    );
}

#[test]
fn a_replacement_without_prune_is_held_not_counted() {
    let mut old = inst("i-1", Some("cs-01"), "t3.xlarge", Running);
    old.image_id = "ami-old".into();
    let o = observed(vec![old, inst("i-2", Some("cs-02"), "t3.xlarge", Running)]);
    let p = plan(&manifest("count: 2"), &o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(!p.has_changes());
    assert_eq!(p.summary.total(), 0);
    assert_eq!(
        p.would_delete_with_prune,
        [Kept {
            workspace: "cs-01".into(),
            instance_id: "i-1".into(),
            reason: "image ami-old → ami-new; a new instance from the image: its disk is lost"
                .into(),
            action: ActionKind::Replace,
        }]
    );
    assert!(p.warnings.iter().any(|w| {
        w.kind == WarningKind::PruneDisabled
            && w.message
                .starts_with("1 workspace to replace is kept as it is")
    }));
    let text = anstream::adapter::strip_str(&render::text(&p)).to_string();
    assert!(
        text.contains("-/+ cs-01  i-1  replace needs `prune: true`, not done: image ami-old → ami-new; a new instance from the image: its disk is lost"),
        "{text}"
    );
    assert!(text.contains("Plan: 0 to create, 0 to start, 0 to stop, 0 to replace, 0 to delete."));
    assert!(!text.contains("Kept because prune is off"), "{text}");
    // A saved plan from before the field existed still reads.
    let mut v = serde_json::to_value(&p).unwrap();
    v["would_delete_with_prune"][0]
        .as_object_mut()
        .unwrap()
        .remove("action");
    let old: Plan = serde_json::from_value(v).unwrap();
    assert_eq!(old.would_delete_with_prune[0].action, ActionKind::Delete);
}

#[test]
fn launches_of_a_type_with_unknown_vcpus_do_not_fit_silently() {
    let mut o = observed(vec![]);
    o.vcpus.remove("t3.xlarge");
    let p = plan(&manifest("count: 2"), &o);
    let q = &p.quota[0];
    assert_eq!(q.unknown_types, ["t3.xlarge"]);
    assert_eq!(q.fits, None);
    assert_eq!(q.recommended_value, None);
    let text = anstream::adapter::strip_str(&render::text(&p)).to_string();
    assert!(
        text.contains(
            "0 used + unknown needed of 640 vCPUs — not checked: vCPUs of t3.xlarge unknown"
        ),
        "{text}"
    );
}

#[test]
fn usage_over_the_limit_leaves_nothing_available() {
    let p = quota_case(8.0, 4, 1);
    assert_eq!(p.quota[0].available, Some(0));
    assert!(
        p.warnings[0]
            .message
            .starts_with("Only 0 of 1 new workspaces fit")
    );
    assert!(
        !p.warnings[0]
            .options
            .iter()
            .any(|o| o.starts_with("use a smaller instance type")),
        "no smaller type can fit in 0 vCPUs: {:?}",
        p.warnings[0].options
    );
    assert_eq!(p.warnings[0].options.len(), 3);
}

#[test]
fn unknown_quota_or_usage_is_not_zero() {
    let mut o = observed(vec![]);
    o.quotas.insert(
        "L-1216C47A".into(),
        QuotaReading::Unknown {
            error: "AccessDenied".into(),
        },
    );
    o.account_running.insert("m9.huge".into(), 1);
    let p = plan(&manifest("count: 2"), &o);
    let q = &p.quota[0];
    assert_eq!(
        (q.limit, q.usage, q.available, q.fits),
        (None, None, None, None)
    );
    assert!(
        p.warnings
            .iter()
            .any(|w| w.kind == WarningKind::QuotaUnknown)
    );
}

#[test]
fn unknown_instance_type_and_unresolved_image_are_warned() {
    let mut o = observed(vec![]);
    o.vcpus.remove("t3.xlarge");
    o.image = ImageResolution::Failed {
        reason: "no match".into(),
    };
    let p = plan(&manifest("count: 1"), &o);
    let kinds: Vec<WarningKind> = p.warnings.iter().map(|w| w.kind).collect();
    assert!(
        kinds.contains(&WarningKind::UnknownInstanceType),
        "{kinds:?}"
    );
    assert!(kinds.contains(&WarningKind::ImageUnresolved), "{kinds:?}");
    // The JSON names stay as they were.
    assert_eq!(
        serde_json::to_value(WarningKind::UnknownInstanceType).unwrap(),
        "unknown_instance_type"
    );
    assert_eq!(p.actions[0].vcpus, None);
}

#[test]
fn planning_is_deterministic_and_fingerprints_the_fleet() {
    let m = manifest("count: 3");
    let o = observed(vec![inst("i-1", Some("cs-01"), "t3.xlarge", Running)]);
    assert_eq!(plan(&m, &o), plan(&m, &o));
    let mut changed = o.clone();
    changed.instances[0].state = Stopped;
    assert_ne!(plan(&m, &o).fingerprint, plan(&m, &changed).fingerprint);
}

#[test]
fn text_rendering() {
    let mut o = observed(vec![
        inst("i-1", Some("cs-01"), "t3.xlarge", Stopped),
        inst("i-2", Some("cs-02"), "t3.large", Running),
        inst("i-9", Some("cs-09"), "t3.xlarge", Running),
    ]);
    o.quotas.insert(
        "L-1216C47A".into(),
        QuotaReading::Known {
            value: 16.0,
            applied: false,
        },
    );
    o.account_running.insert("t3.large".into(), 1);
    let p = plan(&manifest("count: 4\nprune: true"), &o);
    let text = anstream::adapter::strip_str(&render::text(&p)).to_string();
    insta::assert_snapshot!(text);
}

#[test]
fn json_rendering_has_the_documented_fields() {
    let p = quota_case(32.0, 4, 2);
    let v: serde_json::Value = serde_json::from_str(&render::json(&p)).unwrap();
    for key in [
        "format_version",
        "fleet",
        "region",
        "actions",
        "summary",
        "quota",
        "warnings",
        "fingerprint",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let a = &v["actions"][0];
    for key in [
        "action",
        "workspace",
        "instance_id",
        "instance_type",
        "vcpus",
        "reason",
    ] {
        assert!(a.get(key).is_some(), "action lacks {key}");
    }
    let q = &v["quota"][0];
    for key in [
        "code",
        "name",
        "limit",
        "usage",
        "needed",
        "available",
        "fits",
    ] {
        assert!(q.get(key).is_some(), "quota lacks {key}");
    }
    assert_eq!(v["actions"][0]["action"], "create");
}

/// The resize of each instance state into each fleet state: its steps, and the vCPUs
/// it adds to the quota (t3.large has 2, t3.xlarge 4).
#[test]
fn a_resize_counts_only_the_vcpus_it_adds() {
    let cases = [
        (Running, "", "stop, change type, start", Some(2)),
        (Stopped, "", "change type, start", Some(4)),
        (
            Running,
            "state: stopped",
            "stop, change type; stays stopped",
            Some(0),
        ),
        (
            Stopped,
            "state: stopped",
            "change type; stays stopped",
            Some(0),
        ),
    ];
    for (state, extra, steps, added) in cases {
        let o = observed(vec![inst("i-1", Some("cs-01"), "t3.large", state)]);
        let p = plan(&manifest(&format!("count: 1\n{extra}")), &o);
        let [a] = p.actions.as_slice() else {
            panic!("one action: {:?}", p.actions)
        };
        assert_eq!(a.action, ActionKind::Resize);
        assert_eq!(
            a.reason,
            format!("t3.large → t3.xlarge ({steps}; disk kept)")
        );
        assert_eq!(
            a.resize,
            Some(ResizeFrom {
                instance_type: "t3.large".into(),
                vcpus: Some(2),
                added_vcpus: added,
            }),
            "{state:?} {extra}"
        );
        let needed = p.quota.iter().map(|q| q.needed).sum::<u32>();
        assert_eq!(Some(needed), added, "{state:?} {extra}");
        assert_eq!(p.summary.resize, 1);
        assert!(p.would_delete_with_prune.is_empty());
    }
}

#[test]
fn resizes_fit_a_quota_that_new_instances_would_not() {
    // 8 × t3.large run (16 vCPUs) under a quota of 32: growing them to t3.xlarge adds
    // 16, which fits; launching 8 × t3.xlarge anew would need 32.
    let mut o = observed(
        (1..=8)
            .map(|n| {
                inst(
                    &format!("i-{n}"),
                    Some(&format!("cs-{n:02}")),
                    "t3.large",
                    Running,
                )
            })
            .collect(),
    );
    o.account_running = BTreeMap::from([("t3.large".into(), 8)]);
    o.quotas.insert(
        "L-1216C47A".into(),
        QuotaReading::Known {
            value: 32.0,
            applied: true,
        },
    );
    let p = plan(&manifest("count: 8"), &o);
    assert_eq!(p.summary.resize, 8);
    let q = &p.quota[0];
    assert_eq!((q.usage, q.needed, q.fits), (Some(16), 16, Some(true)));
    let text = anstream::adapter::strip_str(&render::text(&p)).to_string();
    assert!(
        text.contains(
            "~ cs-01  i-1  t3.xlarge   4 vCPUs  resize: t3.large → t3.xlarge (stop, change type, start; disk kept)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "Plan: 0 to create, 0 to start, 0 to stop, 8 to resize, 0 to replace, 0 to delete."
        ),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&render::json(&p)).unwrap();
    assert_eq!(json["summary"]["resize"], 8);
    assert_eq!(json["actions"][0]["action"], "resize");
    assert_eq!(json["actions"][0]["resize"]["instance_type"], "t3.large");
    assert_eq!(json["actions"][0]["resize"]["added_vcpus"], 2);

    // With a quota of 24, only the first 4 resizes fit, in name order.
    o.quotas.insert(
        "L-1216C47A".into(),
        QuotaReading::Known {
            value: 24.0,
            applied: true,
        },
    );
    let p = plan(&manifest("count: 8"), &o);
    assert_eq!(p.quota[0].over_quota, ["cs-05", "cs-06", "cs-07", "cs-08"]);
}

#[test]
fn an_instance_with_hibernation_is_replaced_not_resized() {
    let mut i = inst("i-1", Some("cs-01"), "t3.large", Running);
    i.hibernation = true;
    let p = plan(&manifest("count: 1\nprune: true"), &observed(vec![i]));
    assert_eq!(summary(&p), ["replace cs-01 i-1"]);
    assert!(
        p.actions[0].reason.contains("its disk is lost"),
        "{}",
        p.actions[0].reason
    );
}

/// The ladder is checked type by type against each one's quota class, as if every
/// launch fell back to it; a type of the same class frees the template type's need.
#[test]
fn fallback_types_are_each_checked_against_their_quota_class() {
    let text = "name: cs\nproject: p\ntemplate: t\ncount: 4\ntemplates:\n  t:\n    image: ami-new\n    instance_type: t3.xlarge\n    fallback_instance_types: [m5.2xlarge, g4dn.xlarge, x9.huge]\n";
    let m = crate::manifest::parse(Path::new("test.yaml"), text).unwrap();
    let mut o = observed(vec![]);
    o.vcpus.insert("m5.2xlarge".into(), 8);
    o.vcpus.insert("g4dn.xlarge".into(), 4);
    o.quotas.insert(
        "L-1216C47A".into(),
        QuotaReading::Known {
            value: 24.0,
            applied: true,
        },
    );
    o.quotas.insert(
        "L-DB2E81BA".into(),
        QuotaReading::Known {
            value: 16.0,
            applied: true,
        },
    );
    let p = plan(&m, &o);
    /// Type, vCPUs needed, vCPUs available, fits.
    type Rung<'a> = (&'a str, Option<u32>, Option<u32>, Option<bool>);
    let got: Vec<Rung<'_>> = p
        .fallbacks
        .iter()
        .map(|f| (f.instance_type.as_str(), f.needed, f.available, f.fits))
        .collect();
    assert_eq!(
        got,
        [
            // 4 × 4 vCPUs of t3.xlarge fit in 24; on m5.2xlarge 32 do not.
            ("m5.2xlarge", Some(32), Some(24), Some(false)),
            ("g4dn.xlarge", Some(16), Some(16), Some(true)),
            ("x9.huge", None, None, None),
        ]
    );
    assert_eq!(p.fallbacks[1].quota_code, "L-DB2E81BA");
    let kinds: Vec<WarningKind> = p.warnings.iter().map(|w| w.kind).collect();
    assert_eq!(
        kinds,
        [
            WarningKind::FallbackQuotaShortfall,
            WarningKind::UnknownInstanceType
        ]
    );
    assert_eq!(
        p.warnings[0].message,
        "If t3.xlarge is sold out in every zone, only 3 of 4 launches fit the On-Demand Standard (A, C, D, H, I, M, R, T, Z) quota on fallback type m5.2xlarge (needs 32 vCPUs, 24 available)"
    );
    let shown = anstream::adapter::strip_str(&render::text(&p)).to_string();
    assert!(
        shown.contains("Fallback instance types: m5.2xlarge, then g4dn.xlarge, then x9.huge (when t3.xlarge is sold out in every zone)"),
        "{shown}"
    );
    assert!(
        shown.contains("✗ m5.2xlarge   8 vCPUs each, 4 launches need 32 vCPUs of"),
        "{shown}"
    );

    // Nothing to launch: no ladder.
    let one =
        crate::manifest::parse(Path::new("t.yaml"), &text.replace("count: 4", "count: 1")).unwrap();
    let p = plan(
        &one,
        &observed(vec![inst("i-1", Some("cs-01"), "t3.xlarge", Running)]),
    );
    assert!(p.fallbacks.is_empty());
}

#[test]
fn an_instance_of_a_fallback_type_is_kept() {
    let text = "name: cs\nproject: p\ntemplate: t\ncount: 2\nprune: true\ntemplates:\n  t:\n    image: ami-new\n    instance_type: t3.xlarge\n    fallback_instance_types: [t3.large]\n";
    let m = crate::manifest::parse(Path::new("test.yaml"), text).unwrap();
    let o = observed(vec![
        inst("i-1", Some("cs-01"), "t3.large", Running),
        inst("i-2", Some("cs-02"), "m5.large", Running),
    ]);
    assert_eq!(
        summary(&plan(&m, &o)),
        ["resize cs-02 i-2"],
        "the fallback type is the workspace's; another type is resized"
    );
}

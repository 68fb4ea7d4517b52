mod soak;

use super::*;

#[tokio::test(start_paused = true)]
async fn failing_workspaces_back_off_exponentially_and_recover() {
    let mut r = Requeue::default();
    let t0 = Instant::now();
    r.failed("a", t0);
    assert_eq!(r.next_due(t0), Some(t0 + Duration::from_secs(10)));
    assert!(r.waiting(t0).contains_key("a"));
    tokio::time::advance(Duration::from_secs(11)).await;
    let t1 = Instant::now();
    assert!(r.waiting(t1).is_empty(), "due again after 10 s");
    r.failed("a", t1);
    assert_eq!(r.next_due(t1), Some(t1 + Duration::from_secs(20)));
    for _ in 0..10 {
        r.failed("a", t1);
    }
    assert_eq!(
        r.next_due(t1),
        Some(t1 + Duration::from_secs(600)),
        "capped at 10 min"
    );
    r.succeeded("a");
    assert_eq!(r.next_due(t1), None);
}

#[test]
fn the_loop_backs_off_up_to_the_resync() {
    let resync = Duration::from_secs(300);
    let mut d = Duration::ZERO;
    let mut seen = vec![];
    for _ in 0..8 {
        d = loop_backoff(d, resync);
        seen.push(d.as_secs());
    }
    assert_eq!(seen, [5, 10, 20, 40, 80, 160, 300, 300]);
}

mod passes {
    //! Reconcile passes on the in-memory cloud under paused time.

    use std::collections::BTreeMap;

    use super::*;
    use crate::cloud::fake::FakeCloud;
    use crate::cloud::{CloudError, InstanceState};

    fn manifest(count: u32, extra: &str) -> Manifest {
        let text = format!(
            "name: w\nproject: p\ntemplate: t\ncount: {count}\n{extra}\ntemplates:\n  t: {{image: ami-1, instance_type: t3.micro}}\n"
        );
        crate::testkit::manifest("w.yaml", &text)
    }

    fn setup() -> (Arc<FakeCloud>, Arc<Engine>) {
        let cloud = Arc::new(FakeCloud {
            region: "us-west-2".into(),
            zones: vec!["us-west-2a".into()],
            vcpus: BTreeMap::from([("t3.micro".into(), 2)]),
            applied: BTreeMap::from([("L-1216C47A".into(), 64.0)]),
            images: FakeCloud::own_image("ami-1"),
            ..FakeCloud::default()
        });
        let engine = crate::testkit::engine(&cloud, None);
        (cloud, engine)
    }

    fn opts() -> WatchOptions {
        WatchOptions {
            resync: Duration::from_secs(300),
            once: false,
            parallelism: 4,
            config: crate::config::UserConfig::default(),
            quota_recheck: Duration::from_secs(60),
        }
    }

    async fn pass(engine: &Arc<Engine>, m: &Manifest, requeue: &mut Requeue) -> Pass {
        let (tx, _rx) = mpsc::unbounded_channel();
        reconcile_once(engine, m, requeue, &opts(), &CancellationToken::new(), &tx).await
    }

    fn live(cloud: &FakeCloud) -> Vec<(String, InstanceState)> {
        let mut v: Vec<_> = cloud
            .instances
            .lock()
            .unwrap()
            .iter()
            .filter(|i| !i.state.is_gone())
            .map(|i| (i.workspace().unwrap().to_string(), i.state))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[tokio::test(start_paused = true)]
    async fn drift_and_edits_converge_and_a_quiet_pass_changes_nothing() {
        let (cloud, engine) = setup();
        let mut requeue = Requeue::default();
        let m = manifest(3, "");
        let p = pass(&engine, &m, &mut requeue).await;
        assert_eq!(p.report.as_ref().map(|r| r.launched), Some(3));
        assert!(
            pass(&engine, &m, &mut requeue).await.report.is_none(),
            "nothing to do"
        );

        // Drift: one instance terminated behind prism's back.
        cloud.instances.lock().unwrap()[1].state = InstanceState::Terminated;
        let p = pass(&engine, &m, &mut requeue).await;
        assert_eq!(p.report.as_ref().map(|r| r.launched), Some(1));
        assert_eq!(live(&cloud).len(), 3);

        // An edit: two more.
        let p = pass(&engine, &manifest(5, ""), &mut requeue).await;
        assert_eq!(p.report.as_ref().map(|r| r.launched), Some(2));
        assert_eq!(live(&cloud).len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_fleet_gets_its_relaunched_workspace_stopped_in_the_same_pass() {
        let (cloud, engine) = setup();
        let mut requeue = Requeue::default();
        let m = manifest(2, "state: stopped");
        pass(&engine, &m, &mut requeue).await;
        assert!(
            live(&cloud)
                .iter()
                .all(|(_, s)| *s == InstanceState::Stopped)
        );
        cloud.instances.lock().unwrap()[0].state = InstanceState::Terminated;
        let p = pass(&engine, &m, &mut requeue).await;
        assert!(p.clean(), "{p:?}");
        assert_eq!(
            live(&cloud),
            [
                ("w-01".to_string(), InstanceState::Stopped),
                ("w-02".to_string(), InstanceState::Stopped)
            ],
            "relaunched and stopped, as apply does"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_emptied_manifest_holds_every_deletion() {
        let (cloud, engine) = setup();
        let mut requeue = Requeue::default();
        pass(&engine, &manifest(4, "prune: true"), &mut requeue).await;
        let p = pass(&engine, &manifest(1, "prune: true"), &mut requeue).await;
        assert_eq!(p.held, 3, "3 of 4 is more than half");
        assert_eq!(live(&cloud).len(), 4, "nothing deleted");
        let p = pass(&engine, &manifest(3, "prune: true"), &mut requeue).await;
        assert_eq!(
            (p.held, live(&cloud).len()),
            (0, 3),
            "one of four is not held"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttling_storm_backs_the_loop_off_then_recovers() {
        let (cloud, engine) = setup();
        let mut requeue = Requeue::default();
        let m = manifest(2, "");
        let throttle = CloudError::service(
            "DescribeInstances",
            Some("RequestLimitExceeded"),
            "Request limit exceeded.",
            Some(503),
        );
        // Every look at the account is throttled for a while.
        cloud.fail_next("DescribeInstances", vec![throttle; 40]);
        let mut backoff = Duration::ZERO;
        let mut waits = vec![];
        for _ in 0..4 {
            let p = pass(&engine, &m, &mut requeue).await;
            assert!(p.error.is_some());
            let next;
            (next, backoff) = error_policy(&p, backoff, opts().resync);
            waits.push(next.as_secs());
        }
        assert_eq!(waits, [5, 10, 20, 40]);
        cloud.faults.lock().unwrap().clear();
        let p = pass(&engine, &m, &mut requeue).await;
        let (next, backoff) = error_policy(&p, backoff, opts().resync);
        assert!(p.clean());
        assert_eq!((next.as_secs(), backoff), (300, Duration::ZERO));
        assert_eq!(live(&cloud).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn what_does_not_fit_waits_for_quota_and_launches_when_there_is_room() {
        let cloud = Arc::new(FakeCloud {
            region: "us-west-2".into(),
            zones: vec!["us-west-2a".into()],
            vcpus: BTreeMap::from([("t3.xlarge".into(), 4)]),
            applied: BTreeMap::from([("L-1216C47A".into(), 32.0)]),
            images: FakeCloud::own_image("ami-1"),
            ..FakeCloud::default()
        });
        let engine = crate::testkit::engine(&cloud, None);
        let text = "name: w\nproject: p\ntemplate: t\ncount: 10\ntemplates:\n  t: {image: ami-1, instance_type: t3.xlarge}\n";
        let m = crate::testkit::manifest("w.yaml", text);
        let mut requeue = Requeue::default();

        let p = pass(&engine, &m, &mut requeue).await;
        let r = p.report.as_ref().unwrap();
        assert_eq!((r.launched, p.waiting_for_quota()), (8, 2), "{r:?}");
        assert!(r.skipped.is_empty() && r.failed.is_empty(), "{r:?}");
        assert_eq!(
            r.waiting_for_quota
                .iter()
                .map(|w| (w.workspace.as_str(), w.reason.to_string()))
                .collect::<Vec<_>>()
                .iter()
                .map(|(w, r)| (*w, r.as_str()))
                .collect::<Vec<_>>(),
            [
                (
                    "w-09",
                    "waiting for room in the On-Demand Standard (A, C, D, H, I, M, R, T, Z) quota: 40 vCPUs needed, 32 free"
                ),
                (
                    "w-10",
                    "waiting for room in the On-Demand Standard (A, C, D, H, I, M, R, T, Z) quota: 40 vCPUs needed, 32 free"
                ),
            ]
        );
        // The loop comes back within the recheck, not the resync.
        let (next, _) = error_policy(&p, Duration::ZERO, opts().resync);
        assert_eq!(next, opts().resync);
        assert!(
            p.waiting_for_quota() > 0,
            "so the loop takes the recheck instead"
        );

        // Nothing changed: still waiting, no call to launch.
        let p = pass(&engine, &m, &mut requeue).await;
        assert_eq!(p.waiting_for_quota(), 2);
        assert!(
            p.report.unwrap().waiting_for_quota[0]
                .reason
                .to_string()
                .ends_with("quota: 8 vCPUs needed, 0 free")
        );
        assert_eq!(
            cloud.calls_to("RunInstances"),
            1,
            "the eight that fit, in one call"
        );

        cloud.raise_quota("L-1216C47A", 48.0);
        let p = pass(&engine, &m, &mut requeue).await;
        let r = p.report.unwrap();
        assert_eq!((r.total, r.launched), (2, 2), "only the two: {r:?}");
        assert!(r.waiting_for_quota.is_empty());
        assert_eq!(live(&cloud).len(), 10);
        for api in ["StopInstances", "TerminateInstances", "StartInstances"] {
            assert_eq!(cloud.calls_to(api), 0, "{api}: the others untouched");
        }
    }

    /// The loop itself, in virtual time: with the default pace, a raise of the
    /// quota is acted on at the next reading, a minute after the last pass, not
    /// at the resync five minutes later.
    #[tokio::test(start_paused = true)]
    async fn the_loop_reads_the_quota_again_within_a_minute_while_workspaces_wait() {
        let cloud = Arc::new(FakeCloud {
            region: "us-west-2".into(),
            zones: vec!["us-west-2a".into()],
            vcpus: BTreeMap::from([("t3.xlarge".into(), 4)]),
            applied: BTreeMap::from([("L-1216C47A".into(), 32.0)]),
            images: FakeCloud::own_image("ami-1"),
            ..FakeCloud::default()
        });
        let engine = crate::testkit::engine(&cloud, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        let text = "name: w\nproject: p\ntemplate: t\ncount: 10\nrate_limit: {rate_per_minute: 6000, burst_size: 100}\ntemplates:\n  t: {image: ami-1, instance_type: t3.xlarge}\n";
        std::fs::write(&path, text).unwrap();
        let m = crate::manifest::load(&path).unwrap();
        let opts = WatchOptions {
            quota_recheck: crate::engine::QuotaWait::EVERY,
            ..opts()
        };
        let cancel = CancellationToken::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        let watch = tokio::spawn(run(path, m, engine, opts, cancel.clone(), tx));
        let mut passes = vec![];
        while let Some(n) = rx.recv().await {
            let Notice::PassEnded { outcome, next, .. } = n else {
                continue;
            };
            let at = (Instant::now() - t0).as_secs();
            passes.push((at, outcome.waiting_for_quota(), next.as_secs()));
            match passes.len() {
                // Raised between two readings.
                1 => {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    cloud.raise_quota("L-1216C47A", 48.0);
                }
                3 => break,
                _ => {}
            }
        }
        cancel.cancel();
        watch.await.unwrap().unwrap();
        let launched: Vec<u64> = cloud
            .launch_calls
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| (*at - t0).as_secs())
            .collect();
        assert_eq!(passes[0].1, 2, "{passes:?}");
        assert_eq!(passes[0].2, 60, "the next pass a minute later: {passes:?}");
        assert_eq!(passes[1].1, 0, "{passes:?}");
        assert_eq!(passes[1].2, 300, "nothing waits: back to the resync");
        assert_eq!(launched.len(), 10, "{launched:?}");
        let first = passes[0].0;
        assert!(
            launched[8..]
                .iter()
                .all(|at| (first + 60..first + 65).contains(at)),
            "the last two a minute after the first pass ({first} s): {launched:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_workspace_is_skipped_while_it_backs_off() {
        let (cloud, engine) = setup();
        let mut requeue = Requeue::default();
        let m = manifest(2, "retry: {max_retries: 0}");
        // The two share a call, which AWS refuses: each goes again alone, and the
        // first of them is refused too.
        let bad = CloudError::service(
            "RunInstances",
            Some("InvalidParameterValue"),
            "bad",
            Some(400),
        );
        cloud.fail_next("RunInstances", vec![bad.clone(), bad]);
        let p = pass(&engine, &m, &mut requeue).await;
        assert_eq!(p.report.as_ref().unwrap().failed.len(), 1);
        let p = pass(&engine, &m, &mut requeue).await;
        let r = p.report.unwrap();
        assert_eq!((r.skipped.len(), r.launched), (1, 0), "backing off: {r:?}");
        tokio::time::advance(Duration::from_secs(11)).await;
        let p = pass(&engine, &m, &mut requeue).await;
        assert_eq!(p.report.unwrap().launched, 1, "due again after 10 s");
        assert_eq!(live(&cloud).len(), 2);
    }
}

//! A term in virtual time on the in-memory cloud: a class's roster grows and shrinks
//! (late joiners who collide with a classmate's name among them), students start and
//! stop their workspaces by hand, TAs add guests, the instructor changes the instance
//! type (a resize), the timetable opens and closes, and applies run whole, interrupted,
//! or two at once. After every step:
//!
//! - no instance of a member still on the roster has been terminated;
//! - no member and no workspace has more than one live instance;
//! - nothing made by hand has been pruned;
//! - after a whole pass outside the windows, nothing prism launched or started runs.
//!
//! The term ends with a destroy with snapshots (sometimes interrupted after the
//! snapshots and run again): no instance of the fleet is left, and every destroyed
//! workspace has completed snapshots tagged with its fleet, workspace, member and
//! instance, taken once.
//!
//! The seed of each term is printed; `PRISM_TERM_SEED=<seed>` replays one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::cloud::fake::FakeCloud;
use crate::cloud::{Instance, InstanceState, tags};
use crate::engine::{Engine, Job, RunOptions};
use crate::manifest::{Manifest, roster};

const TERMS: u64 = 200;
const STEPS: usize = 30;
/// Local parts of the e-mails students have: few, so that names collide.
const PEOPLE: [&str; 5] = ["ana.lee", "bo.chen", "cy.diaz", "dee.oko", "eli.ford"];
const DOMAINS: [&str; 2] = ["state.edu", "exchange.edu"];

struct Term {
    cloud: Arc<FakeCloud>,
    engine: Arc<Engine>,
    /// The roster's e-mails, in row order.
    roster: Vec<String>,
    /// The template's instance type.
    instance_type: &'static str,
    guests: usize,
    now: Timestamp,
    /// Each member's first instance, while they are on the roster.
    first: BTreeMap<String, String>,
    story: Vec<String>,
    /// How often each invariant was checked with something to check.
    tally: BTreeMap<&'static str, usize>,
}

impl Term {
    fn new() -> Term {
        let cloud = Arc::new(FakeCloud {
            region: "us-west-2".into(),
            zones: vec!["us-west-2a".into(), "us-west-2b".into()],
            vcpus: BTreeMap::from([("t3.micro".into(), 2), ("t3.small".into(), 2)]),
            applied: BTreeMap::from([("L-1216C47A".into(), 640.0)]),
            images: FakeCloud::own_image("ami-1"),
            snapshot_looks: 2,
            ..FakeCloud::default()
        });
        let engine = crate::testkit::engine(&cloud, None);
        Term {
            cloud,
            engine,
            roster: vec![],
            instance_type: "t3.micro",
            guests: 0,
            // A Monday morning, before class.
            now: "2030-01-07T07:00:00Z".parse().unwrap(),
            first: BTreeMap::new(),
            story: vec![],
            tally: BTreeMap::new(),
        }
    }

    fn manifest(&self) -> Manifest {
        let mut m = crate::manifest::parse(
            Path::new("term.yaml"),
            "name: term\nproject: p\ntemplate: t\nmembers: [x]\nprune: true\nschedule:\n  timezone: UTC\n  running:\n    - {days: [mon, wed], from: \"09:00\", to: \"12:00\"}\ntemplates:\n  t: {image: ami-1, instance_type: t3.micro}\n",
        )
        .unwrap();
        m.template.instance_type = self.instance_type.to_string();
        let csv = format!("Email\n{}\n", self.roster.join("\n"));
        let r = roster::parse("roster.csv", &csv, None).unwrap_or_else(|_| panic!("{csv}"));
        let names: Vec<String> = r.members.iter().map(|m| m.name.clone()).collect();
        m.workspaces = crate::manifest::member_workspaces("term", &names);
        m.roster = Some(r);
        m
    }

    /// One apply at the term's moment: whole, interrupted, or two at once.
    async fn apply(&mut self, how: u8) -> bool {
        let m = self.manifest();
        let observed = crate::observe::observe(self.cloud.as_ref(), &m)
            .await
            .unwrap();
        let plan = crate::plan::plan_at(&m, &observed, Some(self.now));
        let job = Job::from_plan(&m, &plan, &observed);
        let opts = RunOptions {
            wait: Some(Duration::from_secs(120)),
            ..RunOptions::default()
        };
        match how {
            0 => {
                let run = self.engine.run(job.clone(), opts.clone());
                let canceller = run.canceller();
                tokio::task::yield_now().await;
                canceller.cancel();
                run.report().await;
                false
            }
            1 => {
                let a = self.engine.run(job.clone(), opts.clone());
                let b = self.engine.run(job, opts);
                let (a, b) = tokio::join!(a.report(), b.report());
                a.failed.is_empty() && b.failed.is_empty()
            }
            _ => {
                let report = self.engine.run(job, opts).report().await;
                report.failed.is_empty()
            }
        }
    }

    fn hand(&self, rng: &mut fastrand::Rng, start: bool) -> Option<String> {
        let mut all = self.cloud.instances.lock().unwrap();
        let mine: Vec<&mut Instance> = all
            .iter_mut()
            .filter(|i| !i.state.is_gone() && i.tag(tags::MEMBER).is_some())
            .filter(|i| (i.state == InstanceState::Stopped) == start)
            .collect();
        if mine.is_empty() {
            return None;
        }
        let n = rng.usize(..mine.len());
        let i = mine.into_iter().nth(n)?;
        if start {
            i.state = InstanceState::Running;
            i.launch_time = Some(self.now.as_second());
        } else {
            i.state = InstanceState::Stopped;
        }
        Some(i.workspace().unwrap_or_default().to_string())
    }

    fn guest(&mut self) {
        self.guests += 1;
        let name = format!("guest{}", self.guests);
        let mut all = self.cloud.instances.lock().unwrap();
        all.push(Instance {
            id: format!("i-guest{}", self.guests),
            instance_type: "t3.micro".into(),
            image_id: "ami-1".into(),
            state: InstanceState::Running,
            availability_zone: Some("us-west-2a".into()),
            launch_time: Some(0),
            first_launch_time: Some(0),
            tags: BTreeMap::from([
                (tags::FLEET.into(), "term".into()),
                (tags::WORKSPACE.into(), name.clone()),
                (tags::MEMBER.into(), name),
                (tags::MADE_BY.into(), "hand".into()),
            ]),
            lifecycle: None,
            hibernated: false,
            hibernation: false,
        });
    }

    /// The end of the term: `prism destroy --snapshot`, its first attempt stopped after
    /// the snapshots when `interrupted`.
    async fn destroy(&mut self, interrupted: bool) {
        use crate::teardown::{Teardown, take_snapshots, unsafe_to_delete, wait_for};
        let story = self.story.join(" → ");
        let cloud = self.cloud.as_ref();
        let day = self.now.strftime("%Y-%m-%d").to_string();
        let t = Teardown::survey(cloud, "term").await.unwrap();
        let mut taken = take_snapshots(cloud, &t, &day).await.unwrap();
        if interrupted {
            let again = take_snapshots(cloud, &t, &day).await.unwrap();
            let ids = |m: &BTreeMap<String, Vec<crate::cloud::Snapshot>>| {
                m.values()
                    .flatten()
                    .map(|s| s.id.clone())
                    .collect::<BTreeSet<_>>()
            };
            assert_eq!(ids(&taken), ids(&again), "taken twice: {story}");
            taken = again;
        }
        wait_for(cloud, &mut taken, Duration::from_secs(15), |_| {})
            .await
            .unwrap();
        let keep = unsafe_to_delete(&taken);
        assert!(keep.is_empty(), "{keep:?}: {story}");
        let job = Job::changes("term", t.actions(&keep), "us-west-2");
        let report = self.engine.run(job, RunOptions::default()).report().await;
        assert!(report.complete(), "{report:?}: {story}");

        let all = self.cloud.instances.lock().unwrap().clone();
        let left: Vec<&str> = all
            .iter()
            .filter(|i| !i.state.is_gone())
            .map(|i| i.workspace().unwrap_or_default())
            .collect();
        assert!(left.is_empty(), "{left:?} outlived the destroy: {story}");
        for d in &t.doomed {
            let snaps = &taken[&d.instance.id];
            assert!(!snaps.is_empty(), "{}: no snapshot: {story}", d.workspace());
            for s in snaps {
                assert_eq!(s.state, "completed");
                assert_eq!(s.tag(tags::FLEET), Some("term"));
                assert_eq!(s.tag(tags::WORKSPACE), d.instance.workspace());
                assert_eq!(s.tag(tags::MEMBER), d.instance.tag(tags::MEMBER));
                assert_eq!(s.tag(tags::INSTANCE), Some(d.instance.id.as_str()));
            }
        }
        *self
            .tally
            .entry("workspaces destroyed with snapshots")
            .or_default() += t.doomed.len();
        if interrupted {
            *self.tally.entry("destroys run again").or_default() += 1;
        }
    }

    /// The invariants; `whole_pass` after an apply that ran to its end.
    fn check(&mut self, whole_pass: bool) {
        let story = || self.story.join(" → ");
        let all = self.cloud.instances.lock().unwrap().clone();
        let keys: BTreeSet<String> = self.roster.iter().map(|e| roster::member_key(e)).collect();
        let live: Vec<&Instance> = all.iter().filter(|i| !i.state.is_gone()).collect();
        let mut per_member: BTreeMap<&str, usize> = BTreeMap::new();
        let mut per_name: BTreeMap<&str, usize> = BTreeMap::new();
        for i in &live {
            *per_member
                .entry(i.tag(tags::MEMBER).unwrap_or(""))
                .or_default() += 1;
            *per_name.entry(i.workspace().unwrap_or("")).or_default() += 1;
            if let Some(k) = i.tag(tags::MEMBER)
                && keys.contains(k)
            {
                self.first
                    .entry(k.to_string())
                    .or_insert_with(|| i.id.clone());
            }
        }
        for (k, n) in per_member.iter().chain(&per_name) {
            assert!(*n <= 1, "{k} has {n} live instances: {}", story());
        }
        self.first.retain(|k, _| keys.contains(k));
        *self.tally.entry("members kept").or_default() += self.first.len();
        for (k, id) in &self.first {
            let i = all
                .iter()
                .find(|i| &i.id == id)
                .expect("an instance never vanishes");
            assert!(
                !i.state.is_gone(),
                "{k}'s instance {id} was terminated: {}",
                story()
            );
        }
        for n in 1..=self.guests {
            let id = format!("i-guest{n}");
            assert!(
                live.iter().any(|i| i.id == id),
                "guest{n} was pruned: {}",
                story()
            );
        }
        let out_of_hours =
            crate::plan::schedule::phase_at(self.manifest().schedule.as_ref().unwrap(), self.now)
                .state
                != crate::plan::schedule::Wanted::Running;
        if whole_pass && out_of_hours {
            *self.tally.entry("out-of-hours passes").or_default() += 1;
            for i in &live {
                let running = matches!(i.state, InstanceState::Running | InstanceState::Pending);
                let by_hand =
                    i.tag(tags::MADE_BY) == Some("hand") || !crate::plan::started_by_prism(i);
                assert!(
                    !running || by_hand,
                    "{} runs out of hours after a whole pass: {}",
                    i.workspace().unwrap_or_default(),
                    story()
                );
            }
        }
    }
}

async fn term(seed: u64) -> BTreeMap<&'static str, usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut t = Term::new();
    for _ in 0..STEPS {
        let mut whole = false;
        let what = match rng.u8(0..11) {
            0..=2 => {
                let email = format!(
                    "{}@{}",
                    PEOPLE[rng.usize(..PEOPLE.len())],
                    DOMAINS[rng.usize(..DOMAINS.len())]
                );
                if t.roster.contains(&email) {
                    continue;
                }
                t.roster.push(email.clone());
                format!("join {email}")
            }
            3 if !t.roster.is_empty() => {
                let gone = t.roster.remove(rng.usize(..t.roster.len()));
                format!("drop {gone}")
            }
            4 => {
                let start = rng.bool();
                match t.hand(&mut rng, start) {
                    Some(w) => format!("by hand {w}"),
                    None => continue,
                }
            }
            5 => {
                t.guest();
                format!("guest{}", t.guests)
            }
            6 => {
                let hours = rng.i64(1..=30);
                t.now = t
                    .now
                    .checked_add(SignedDuration::from_hours(hours))
                    .unwrap();
                format!("+{hours}h")
            }
            10 => {
                t.instance_type = if t.instance_type == "t3.micro" {
                    "t3.small"
                } else {
                    "t3.micro"
                };
                format!("type {}", t.instance_type)
            }
            how => {
                let how = how % 3;
                whole = t.apply(how).await && how != 0;
                ["apply interrupted", "two applies", "apply"][usize::from(how)].to_string()
            }
        };
        if what.starts_with("type") {
            *t.tally.entry("type changes").or_default() += 1;
        }
        if what.starts_with("by hand") {
            *t.tally.entry("starts and stops by hand").or_default() += 1;
        }
        if what.starts_with("join")
            && t.roster
                .iter()
                .filter(|e| e.split('@').next() == what[5..].split('@').next())
                .count()
                > 1
        {
            *t.tally.entry("late joiners who collide").or_default() += 1;
        }
        t.story
            .push(format!("{what} ({})", t.now.strftime("%a %H:%M")));
        t.check(whole);
    }
    *t.tally.entry("resizes").or_default() += t.cloud.calls_to("ModifyInstanceAttribute");
    let interrupted = rng.bool();
    t.destroy(interrupted).await;
    t.tally
}

#[tokio::test(start_paused = true)]
async fn a_term_keeps_every_students_work() {
    let seeds: Vec<u64> = match std::env::var("PRISM_TERM_SEED") {
        Ok(s) => vec![s.parse().expect("a seed")],
        Err(_) => {
            let base = fastrand::u64(..u64::MAX / 2);
            (base..base + TERMS).collect()
        }
    };
    eprintln!(
        "terms: seeds {}..={} (PRISM_TERM_SEED=<seed> replays one)",
        seeds[0],
        seeds[seeds.len() - 1]
    );
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in seeds {
        eprintln!("term seed {seed}");
        for (k, n) in term(seed).await {
            *tally.entry(k).or_default() += n;
        }
    }
    eprintln!("checked: {tally:?}");
    for what in [
        "members kept",
        "out-of-hours passes",
        "starts and stops by hand",
        "type changes",
        "resizes",
        "workspaces destroyed with snapshots",
        "destroys run again",
    ] {
        assert!(
            tally.get(what).is_some_and(|n| *n > 0),
            "no {what}: {tally:?}"
        );
    }
}

//! Prometheus metrics of one process: one [`Metrics`] value (with its registry) is made
//! by the front door that serves them (`serve`, `watch --metrics-listen`) and handed to
//! what counts: the engine (its runs' events, the launch limiter's rate), the AWS client
//! (every call), the watch loop (its passes) and the server (its event streams).
//!
//! Names follow Prometheus conventions: a `prism_` prefix, base units (`_seconds`),
//! `_total` on counters, and what varies in labels. docs/operate.md lists every metric.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::cloud::{ErrorClass, Instance, InstanceState};
use crate::engine::events::Event;
use crate::plan::ActionKind;

/// The media type of [`Metrics::encode`]'s OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The media type of [`Metrics::encode_prometheus`]'s classic text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

type GaugeF64 = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    fleet: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    region: String,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    operation: &'static str,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabels {
    region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabels {
    lease: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FleetLabels {
    fleet: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    fleet: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    region: String,
    quota_code: String,
    quota: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    fleet: String,
    outcome: &'static str,
}

/// How a watch pass ended, for [`Metrics::pass`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOutcome {
    /// Nothing failed.
    Clean,
    /// An action failed (its workspace backs off).
    Failed,
    /// Nothing failed, but deletions were held back for safety.
    Held,
    /// The account could not be read.
    Error,
    /// Another manifest manages the fleet: nothing was done.
    OwnedElsewhere,
}

impl PassOutcome {
    fn label(self) -> &'static str {
        match self {
            PassOutcome::Clean => "clean",
            PassOutcome::Failed => "failed",
            PassOutcome::Held => "held",
            PassOutcome::Error => "error",
            PassOutcome::OwnedElsewhere => "owned_elsewhere",
        }
    }
}

/// Every metric of the process, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    changes: Family<ChangeLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<RegionLabels, Histogram>,
    retries: Family<RetryLabels, Counter>,
    launch_rate: Family<RegionLabels, GaugeF64>,
    lease_held: Family<LeaseLabels, Gauge>,
    workspaces: Family<StateLabels, Gauge>,
    quota_usage: Family<QuotaLabels, GaugeF64>,
    quota_limit: Family<QuotaLabels, GaugeF64>,
    passes: Family<PassLabels, Counter>,
    pass_seconds: Family<FleetLabels, Histogram>,
    last_success: Family<FleetLabels, GaugeF64>,
    event_streams: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Buckets of AWS call durations: 10 ms to about 41 s.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

/// Buckets of watch pass durations: 0.25 s to about 17 min.
fn pass_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.25, 2.0, 13))
}

impl Metrics {
    /// Every metric, registered under the `prism` prefix, at zero.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("prism"),
            changes: Family::default(),
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(call_buckets),
            retries: Family::default(),
            launch_rate: Family::default(),
            lease_held: Family::default(),
            workspaces: Family::default(),
            quota_usage: Family::default(),
            quota_limit: Family::default(),
            passes: Family::default(),
            pass_seconds: Family::new_with_constructor(pass_buckets),
            last_success: Family::default(),
            event_streams: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "workspace_changes",
            "Changes carried out on workspaces, by fleet and outcome (launched, started, stopped, hibernated, terminated, resized, failed, skipped, waiting_for_quota)",
            m.changes.clone(),
        );
        r.register(
            "aws_requests",
            "AWS API calls by region, operation and outcome (ok, throttled, failed): each attempt counts",
            m.calls.clone(),
        );
        r.register_with_unit(
            "aws_request_duration",
            "Time AWS API calls took, every page of a paginated call included",
            Unit::Seconds,
            m.call_seconds.clone(),
        );
        r.register(
            "aws_retries",
            "AWS API calls tried again by prism's retry layer, by operation and error class (throttle, capacity, transient)",
            m.retries.clone(),
        );
        r.register(
            "launch_rate_per_second",
            "The launch limiter's current rate (RunInstances calls per second) by region; adapts to throttling",
            m.launch_rate.clone(),
        );
        r.register(
            "lease_held",
            "Whether this replica holds the lease of an account and region (1) or stands by (0), with --store",
            m.lease_held.clone(),
        );
        r.register(
            "workspaces",
            "The fleet's instances by state, as the last observation of the account found them",
            m.workspaces.clone(),
        );
        r.register(
            "quota_usage",
            "Usage of each quota the last plan checked, in the quota's unit (vCPUs for instance quotas)",
            m.quota_usage.clone(),
        );
        r.register(
            "quota_limit",
            "Value of each quota the last plan checked, in the quota's unit (vCPUs for instance quotas)",
            m.quota_limit.clone(),
        );
        r.register(
            "watch_passes",
            "Reconcile passes of prism watch, by fleet and outcome (clean, failed, held, error, owned_elsewhere)",
            m.passes.clone(),
        );
        r.register_with_unit(
            "watch_pass_duration",
            "Time a reconcile pass took, from reading the account to the end of its run",
            Unit::Seconds,
            m.pass_seconds.clone(),
        );
        r.register_with_unit(
            "watch_last_success_timestamp",
            "When the last clean pass of the fleet ended (Unix time)",
            Unit::Seconds,
            m.last_success.clone(),
        );
        r.register(
            "serve_event_streams",
            "Event streams (server-sent events) open on prism serve",
            m.event_streams.clone(),
        );
        m
    }

    /// The metrics in the OpenMetrics text format (what Prometheus asks for).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The metrics in Prometheus's classic text format (0.0.4), for a client that does
    /// not ask for OpenMetrics (`curl`, older scrapers).
    pub fn encode_prometheus(&self) -> String {
        classic_text(&self.encode())
    }

    /// Counts what an event of a run of `fleet` says was done to a workspace.
    pub fn event(&self, fleet: &str, event: &Event) {
        let outcome = match event {
            Event::Launched { .. } | Event::Confirmed { .. } => "launched",
            Event::Changed { action, .. } => match action {
                ActionKind::Start => "started",
                ActionKind::Stop => "stopped",
                ActionKind::Hibernate => "hibernated",
                ActionKind::Delete | ActionKind::Replace => "terminated",
                ActionKind::Resize => "resized",
                ActionKind::Create => "launched",
            },
            Event::Failed { .. } => "failed",
            Event::Skipped { .. } => "skipped",
            Event::WaitingForQuota { .. } => "waiting_for_quota",
            _ => return,
        };
        self.changes
            .get_or_create(&ChangeLabels {
                fleet: fleet.to_string(),
                outcome,
            })
            .inc();
    }

    /// Counts one AWS call (every attempt is one) in `region`: `error` is its failure.
    pub fn aws_call(
        &self,
        region: &str,
        operation: &'static str,
        error: Option<ErrorClass>,
        took: Duration,
    ) {
        let outcome = match error {
            None => "ok",
            Some(ErrorClass::Throttle) => "throttled",
            Some(_) => "failed",
        };
        let region = region.to_string();
        self.calls
            .get_or_create(&CallLabels {
                region: region.clone(),
                operation,
                outcome,
            })
            .inc();
        self.call_seconds
            .get_or_create(&RegionLabels { region })
            .observe(took.as_secs_f64());
    }

    /// Counts a call that prism's retry layer tries again after an error of `class`.
    pub fn aws_retry(&self, operation: &'static str, class: ErrorClass) {
        let class = match class {
            ErrorClass::Throttle => "throttle",
            ErrorClass::Capacity => "capacity",
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        };
        self.retries
            .get_or_create(&RetryLabels { operation, class })
            .inc();
    }

    /// The launch limiter of `region` now allows `per_minute` launches a minute.
    pub fn launch_rate(&self, region: &str, per_minute: f64) {
        self.launch_rate
            .get_or_create(&RegionLabels {
                region: region.to_string(),
            })
            .set(per_minute / 60.0);
    }

    /// Whether this replica holds the lease `lease` (`ACCOUNT/REGION`) now.
    pub fn lease_held(&self, lease: &str, held: bool) {
        self.lease_held
            .get_or_create(&LeaseLabels {
                lease: lease.to_string(),
            })
            .set(i64::from(held));
    }

    /// The fleet's instances as an observation found them: every state is set, so that
    /// a state no instance is in any more reads 0.
    pub fn workspaces(&self, fleet: &str, instances: &[Instance]) {
        for state in InstanceState::ALL {
            let n = instances.iter().filter(|i| i.state == state).count();
            self.workspaces
                .get_or_create(&StateLabels {
                    fleet: fleet.to_string(),
                    state: state.as_str(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// What a plan of `fleet` found: its instances by state, and each quota it checked.
    pub fn planned(&self, observed: &crate::observe::Observed, plan: &crate::plan::Plan) {
        self.workspaces(&plan.fleet, &observed.instances);
        for q in &plan.quota {
            self.quota(
                &observed.region,
                &q.code,
                &q.name,
                q.limit,
                q.usage.map(f64::from),
            );
        }
    }

    /// A quota as it was read: its value and its usage, when known.
    pub fn quota(
        &self,
        region: &str,
        code: &str,
        name: &str,
        limit: Option<f64>,
        usage: Option<f64>,
    ) {
        let labels = QuotaLabels {
            region: region.to_string(),
            quota_code: code.to_string(),
            quota: name.to_string(),
        };
        if let Some(limit) = limit {
            self.quota_limit.get_or_create(&labels).set(limit);
        }
        if let Some(usage) = usage {
            self.quota_usage.get_or_create(&labels).set(usage);
        }
    }

    /// A watch pass of `fleet` ended after `took`.
    pub fn pass(&self, fleet: &str, outcome: PassOutcome, took: Duration) {
        let fleet = fleet.to_string();
        self.passes
            .get_or_create(&PassLabels {
                fleet: fleet.clone(),
                outcome: outcome.label(),
            })
            .inc();
        self.pass_seconds
            .get_or_create(&FleetLabels {
                fleet: fleet.clone(),
            })
            .observe(took.as_secs_f64());
        if outcome == PassOutcome::Clean {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.last_success
                .get_or_create(&FleetLabels { fleet })
                .set(now.as_secs_f64());
        }
    }

    /// An event stream opened; it counts as open until the guard is dropped.
    pub fn event_stream(self: &std::sync::Arc<Self>) -> StreamGuard {
        self.event_streams.inc();
        StreamGuard(self.clone())
    }
}

/// Counts an open event stream while it lives.
#[derive(Debug)]
pub struct StreamGuard(std::sync::Arc<Metrics>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.event_streams.dec();
    }
}

/// OpenMetrics text as Prometheus's classic text format: a counter's family is named
/// with its `_total` (OpenMetrics names it without), and the `# UNIT` and `# EOF` lines,
/// which the classic format does not have, are left out.
pub fn classic_text(openmetrics: &str) -> String {
    let mut counters = std::collections::BTreeSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|l| l.strip_suffix(" counter"))
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let head = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        match head {
            Some(p) => {
                let rest = &line[p.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_string()
                };
                out.push_str(&format!("{p}{name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_their_total_in_the_classic_format() {
        let m = Metrics::new();
        m.aws_call("us-west-2", "RunInstances", None, Duration::from_millis(20));
        m.aws_call(
            "us-west-2",
            "RunInstances",
            Some(ErrorClass::Throttle),
            Duration::from_millis(20),
        );
        let open = m.encode();
        assert!(
            open.contains("# TYPE prism_aws_requests counter\n"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
        let classic = m.encode_prometheus();
        assert!(
            classic.contains("# TYPE prism_aws_requests_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains(
                "prism_aws_requests_total{region=\"us-west-2\",operation=\"RunInstances\",outcome=\"throttled\"} 1\n"
            ),
            "{classic}"
        );
        assert!(classic.contains("# TYPE prism_aws_request_duration_seconds histogram\n"));
        assert!(
            !classic.contains("# EOF") && !classic.contains("# UNIT"),
            "{classic}"
        );
    }

    #[test]
    fn every_state_of_a_fleet_is_set_so_that_an_emptied_one_reads_zero() {
        let m = Metrics::new();
        let running = Instance {
            id: "i-1".into(),
            instance_type: "t3.micro".into(),
            image_id: "ami-1".into(),
            state: InstanceState::Running,
            availability_zone: None,
            launch_time: None,
            first_launch_time: None,
            tags: Default::default(),
            lifecycle: None,
            hibernated: false,
            hibernation: false,
        };
        m.workspaces("f", &[running]);
        m.workspaces("f", &[]);
        let text = m.encode_prometheus();
        assert!(
            text.contains("prism_workspaces{fleet=\"f\",state=\"running\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("prism_workspaces{fleet=\"f\",state=\"stopped\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn a_stream_counts_while_it_is_open() {
        let m = std::sync::Arc::new(Metrics::new());
        let g = m.event_stream();
        assert!(m.encode().contains("prism_serve_event_streams 1\n"));
        drop(g);
        assert!(m.encode().contains("prism_serve_event_streams 0\n"));
    }
}

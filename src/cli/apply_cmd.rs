//! `prism apply`: plan, confirm, carry out with progress, summarize.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{Failure, Format, GlobalArgs, Refusal, connect, print};
use crate::cloud::Cloud;
use crate::engine::gate::{Ask, Gate};
use crate::engine::{Engine, Job, QuotaWait, RunOptions};
use crate::manifest::{self, Manifest};
use crate::observe::observe_with;
use crate::plan::{self, Plan, SavedPlan};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A fleet manifest, or a plan saved by `prism plan --out`.
    pub file: PathBuf,
    /// Apply without asking for confirmation.
    #[arg(short, long)]
    pub yes: bool,
    /// Actions (calls and waits) in flight at once.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: u16,
    /// Return once AWS accepted the calls, without waiting for instances to settle.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for instances to reach their state.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub wait_timeout: Duration,
    /// Keep the workspaces the quota has no room for waiting, up to DURATION, and
    /// launch them in name order as soon as there is room (the quota and the usage are
    /// read again about once a minute).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub wait_for_quota: Option<Duration>,
    /// Output: text (a live bar on a terminal, lines otherwise) or json (NDJSON events).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Change nothing: print the plan as `prism plan FILE` does (its text, or with
    /// --format json its JSON document), with its exit codes.
    #[arg(long)]
    pub dry_run: bool,
}

/// A saved plan is JSON with a `plan` key; anything else is a manifest.
fn read_saved(path: &Path) -> Result<Option<SavedPlan>, Failure> {
    if path.extension().is_none_or(|e| e != "json") {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(Failure::file(path))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        let path = path.display().to_string();
        if is_printed_plan(&text) {
            Failure::PrintedPlan { path }
        } else {
            Failure::BadPlanFile {
                path,
                message: e.to_string(),
            }
        }
    })
}

/// Whether `text` is a plan as `prism plan --format json` prints it: the plan alone,
/// without the manifest it was made from, which apply needs to check it still holds.
fn is_printed_plan(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| {
        v.get("format_version").is_some()
            && v.get("actions").is_some()
            && v.get("manifest").is_none()
    })
}

fn check_manifest_unchanged(saved: &SavedPlan) -> Result<Manifest, Failure> {
    let text = std::fs::read(&saved.manifest).map_err(Failure::file(&saved.manifest))?;
    if SavedPlan::new(&saved.manifest, &text, saved.plan.clone()).manifest_sha256
        != saved.manifest_sha256
    {
        return Err(Failure::StalePlan(format!(
            "{} changed since the plan was made",
            saved.manifest.display()
        )));
    }
    Ok(manifest::load(&saved.manifest)?)
}

pub async fn run(global: &GlobalArgs, args: &ApplyArgs) -> Result<ExitCode, Failure> {
    let saved = read_saved(&args.file)?;
    let manifest = match &saved {
        Some(s) => check_manifest_unchanged(s)?,
        None => manifest::load(&args.file)?,
    };
    carry_out(global, &manifest, saved, args, None).await
}

/// Plans `manifest` (or takes the saved plan, when still current), shows it, confirms,
/// and carries it out with progress and a summary.
pub async fn carry_out(
    global: &GlobalArgs,
    manifest: &Manifest,
    saved: Option<SavedPlan>,
    args: &ApplyArgs,
    focus: Option<&[String]>,
) -> Result<ExitCode, Failure> {
    let settings = crate::config::load()?;
    let cloud: Arc<dyn Cloud> = Arc::new(connect(global, manifest).await?);
    let memory = super::launch_notes(global, cloud.as_ref()).await;
    let observed = observe_with(cloud.as_ref(), manifest, &memory.recent_launches())
        .await
        .map_err(|e| Failure::aws(e, cloud.region()))?;
    let now = Some(jiff::Timestamp::now());
    let fresh = match focus {
        Some(_) => plan::plan_by_hand(manifest, &observed, now),
        None => plan::plan_at(manifest, &observed, now),
    };
    let state = |p: &Plan| p.schedule.as_ref().map(|s| s.state);
    let mut plan: Plan = match saved {
        Some(s) if s.plan.fingerprint != fresh.fingerprint => {
            return Err(Failure::StalePlan(
                "the fleet's instances changed since the plan was made".into(),
            ));
        }
        Some(s) if state(&s.plan) != state(&fresh) => {
            return Err(Failure::StalePlan(
                "the schedule has changed the fleet's state since the plan was made".into(),
            ));
        }
        Some(s) => s.plan,
        None => fresh,
    };
    match focus {
        // Workspaces made by hand join any fleet, whoever manages it; they adopt nothing.
        Some(names) => plan.focus_on_creates(names),
        None => {
            if let Some(o) = &plan.owned_elsewhere {
                return Err(Failure::Refused(
                    Refusal::OwnedElsewhere,
                    o.message(&plan.fleet),
                ));
            }
        }
    }
    if let Some(e) = plan::missing_image(manifest, &observed, &plan) {
        return Err(Failure::ImageNotFound(e));
    }
    if args.dry_run {
        // What `prism plan` prints, whatever --quiet says: the plan is the output. (A
        // run says its pace in its progress instead.)
        plan.pace = Some(crate::engine::RateSettings::describe(
            crate::config::launch_rate(&manifest.rate_limit, &settings).as_ref(),
        ));
        print(&super::plan_cmd::shown(&plan, args.format))?;
        return Ok(ExitCode::SUCCESS);
    }

    match args.format {
        Format::Text if global.quiet => {}
        Format::Text => print(&plan::render::text(&plan))?,
        Format::Json => print(&format!(
            "{}\n",
            serde_json::json!({"event": "plan", "elapsed_s": 0.0, "plan": plan})
        ))?,
    }
    crate::engine::adopt(cloud.as_ref(), &plan, manifest).await;
    if !plan.has_changes() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut gate = Gate::of(&plan, args.yes);
    if focus.is_some() && gate.ask == Some(Ask::Changes) {
        // `workspace create` names what to launch: only deletions and applies ask.
        gate.ask = None;
    }
    // Quiet shows the quota screen only when the run stops on it.
    if !global.quiet || gate.ask.is_some() {
        for q in &gate.shortfalls {
            super::to_stderr(&format!("\n{}", plan::render::shortfall_screen(&plan, q)));
        }
    }
    if !super::pass_gate(&gate, 0)? {
        say!("Apply cancelled; nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }

    let engine = Engine::new(
        cloud.clone(),
        crate::config::launch_rate(&manifest.rate_limit, &settings),
        memory,
    );
    engine.set_sold_out_ttl(crate::config::sold_out_ttl(&settings));
    let mut job = Job::from_plan(manifest, &plan, &observed);
    if let (Some(recipe), Some(_)) = (job.recipe.as_mut(), focus) {
        // `workspace create` makes workspaces by hand, which no manifest prunes.
        recipe.made_by_hand = true;
    }
    let wait = args.wait_for_quota.map(|until| QuotaWait {
        until,
        every: crate::config::quota_recheck(),
    });
    job.over_quota(&plan, gate, wait);
    let opts = RunOptions {
        parallelism: usize::from(args.parallelism),
        wait: (!args.no_wait).then_some(args.wait_timeout),
        poll: Duration::from_secs(2),
        retry: manifest.retry.clone(),
        throttle_deadline: args.wait_timeout,
    };
    let mode = global.progress_mode(args.format);
    let report = super::drive(&engine, job, opts, mode, "prism apply").await;
    Ok(if report.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

//! `prism plan`: what apply would change, and whether it fits the quotas.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::{Failure, Format, GlobalArgs, Refusal, connect, print};
use crate::cloud::Cloud;
use crate::manifest;
use crate::observe::observe_with;
use crate::plan::{self, SavedPlan};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The fleet manifest.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also save the plan as JSON, for `prism apply` to carry out unless the fleet changed.
    #[arg(long, short = 'o', visible_alias = "output", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Plan as at another moment, to preview a schedule: `2026-12-02T09:05` (in the
    /// schedule's time zone) or with an offset (`2026-12-02T15:05Z`).
    #[arg(long, value_name = "TIME", value_parser = parse_at, conflicts_with = "out")]
    pub at: Option<At>,
}

/// A moment given on the command line.
#[derive(Debug, Clone, Copy)]
pub enum At {
    /// With an offset or `Z`: one instant everywhere.
    Instant(jiff::Timestamp),
    /// A date and time on the wall clock of the schedule's zone.
    Civil(jiff::civil::DateTime),
}

fn parse_at(text: &str) -> Result<At, String> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(At::Instant(t));
    }
    text.parse::<jiff::civil::DateTime>()
        .map(At::Civil)
        .map_err(|_| "expected a date and time such as 2026-12-02T09:05 (in the schedule's time zone) or 2026-12-02T15:05Z".into())
}

impl At {
    /// The instant this moment names for `manifest`: a wall-clock time is read in the
    /// schedule's zone (UTC for a fleet without one).
    pub fn resolve(self, manifest: &manifest::Manifest) -> jiff::Timestamp {
        match self {
            At::Instant(t) => t,
            At::Civil(dt) => {
                let tz = manifest
                    .schedule
                    .as_ref()
                    .map_or(jiff::tz::TimeZone::UTC, |s| s.tz.clone());
                dt.to_zoned(tz)
                    .map_or(jiff::Timestamp::UNIX_EPOCH, |z| z.timestamp())
            }
        }
    }
}

pub async fn plan_command(global: &GlobalArgs, args: &PlanArgs) -> Result<ExitCode, Failure> {
    let manifest = manifest::load(&args.file)?;
    let cloud = connect(global, &manifest).await?;
    let recent = super::launch_notes(global, &cloud).await.recent_launches();
    let observed = observe_with(&cloud, &manifest, &recent)
        .await
        .map_err(|e| Failure::aws(e, cloud.region()))?;
    let now = args
        .at
        .map_or_else(jiff::Timestamp::now, |a| a.resolve(&manifest));
    let mut plan = plan::plan_at(&manifest, &observed, Some(now));
    let settings = crate::config::load()?;
    plan.pace = Some(crate::engine::RateSettings::describe(
        crate::config::launch_rate(&manifest.rate_limit, &settings).as_ref(),
    ));
    if let Some(o) = &plan.owned_elsewhere {
        return Err(Failure::Refused(
            Refusal::OwnedElsewhere,
            o.message(&plan.fleet),
        ));
    }
    if let Some(e) = plan::missing_image(&manifest, &observed, &plan) {
        return Err(Failure::ImageNotFound(e));
    }
    if let Some(path) = &args.out {
        save(path, &args.file, &plan)?;
    }
    print(&shown(&plan, args.format))?;
    if let (Some(path), Format::Text) = (&args.out, args.format) {
        say!(
            "Saved the plan to {}. Apply it with: prism apply {}",
            path.display(),
            path.display()
        );
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The plan as `prism plan` prints it (and `apply --dry-run`).
pub(super) fn shown(plan: &plan::Plan, format: Format) -> String {
    match format {
        Format::Text => plan::render::text(plan),
        Format::Json => format!("{}\n", plan::render::json(plan)),
    }
}

fn save(path: &Path, manifest_path: &Path, plan: &plan::Plan) -> Result<(), Failure> {
    let text = std::fs::read(manifest_path).map_err(Failure::file(manifest_path))?;
    // An absolute path, so the plan can be applied from any folder.
    let absolute = std::path::absolute(manifest_path).map_err(Failure::file(manifest_path))?;
    let saved = SavedPlan::new(&absolute, &text, plan.clone());
    let json = serde_json::to_string_pretty(&saved).expect("serializes");
    std::fs::write(path, json + "\n").map_err(Failure::file(path))
}

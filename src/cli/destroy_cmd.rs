//! `prism destroy MANIFEST [--snapshot]`: the end of a fleet. Shows everything that
//! goes and what it costs, asks for the fleet's name, optionally keeps a snapshot of
//! every workspace's disks, then deletes every workspace of the fleet.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use comfy_table::{Table, presets::NOTHING};

use super::progress::Mode;
use super::workspace_cmd::ActArgs;
use super::{Failure, GlobalArgs, print};
use crate::cloud::{Cloud, Snapshot, tags};
use crate::engine::{Engine, Job, RunOptions};
use crate::plan::cost;
use crate::teardown::{self, Teardown};

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// The fleet's manifest.
    pub file: PathBuf,
    /// First take an EBS snapshot of every workspace's disks (tagged with fleet,
    /// workspace, member and date) and wait for them to complete; a workspace whose
    /// snapshot fails is kept.
    #[arg(long)]
    pub snapshot: bool,
    #[command(flatten)]
    pub act: ActArgs,
}

/// The longest time between two looks at the snapshots being taken.
const SNAPSHOT_POLL: Duration = Duration::from_secs(15);

fn disks(d: &teardown::Doomed) -> String {
    if d.volumes.is_empty() {
        return "-".into();
    }
    d.volumes
        .iter()
        .map(|v| format!("{} GiB", v.size_gib))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The plan: every workspace that goes, its disks and member, and the totals.
fn shown(t: &Teardown, source: &str, snapshot: bool) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_header(["", "WORKSPACE", "STATE", "TYPE", "DISKS", "MEMBER"]);
    for d in &t.doomed {
        let member = match (d.instance.tag(tags::MEMBER), d.instance.tag(tags::MADE_BY)) {
            (_, Some("hand")) => "(made by hand)".to_string(),
            (Some(m), _) => m.to_string(),
            (None, _) => "-".to_string(),
        };
        table.add_row([
            "-".to_string(),
            d.workspace().to_string(),
            d.instance.state.to_string(),
            d.instance.instance_type.clone(),
            disks(d),
            member,
        ]);
    }
    let n = t.doomed.len();
    let disks: usize = t.doomed.iter().map(|d| d.volumes.len()).sum();
    let plural = |k: usize, word: &str| format!("{k} {word}{}", if k == 1 { "" } else { "s" });
    let saving = t.daily_usd().map_or(
        "an unknown amount (a type prism has no price for)".into(),
        |c| format!("about ${c:.2}"),
    );
    let kept = if snapshot {
        format!(
            "Kept: a snapshot of every disk, tagged with fleet, workspace, member and date \
             (at most {} GiB, up to ${:.2} a month; list them with `prism storage list --snapshots`).",
            t.disk_gib(),
            t.disk_gib() as f64 * cost::SNAPSHOT_GIB_MONTH_USD
        )
    } else {
        "Kept: nothing. Everything on these disks is lost; `--snapshot` keeps a copy.".into()
    };
    format!(
        "Fleet `{}` ({source}):\n\n{table}\n\nDestroy: {} and {} ({} GiB) deleted; saves {saving} a day.\n{kept}\n",
        t.fleet,
        plural(n, "workspace"),
        plural(disks, "disk"),
        t.disk_gib(),
    )
}

/// Asks for the fleet's name to be typed; without a terminal, refuses.
fn typed_yes(fleet: &str) -> Result<bool, Failure> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Unconfirmed("destroy"));
    }
    super::to_stderr(&format!(
        "\nThis deletes every workspace of the fleet. Type the fleet's name ({fleet}) to go ahead: "
    ));
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(Failure::Io)?;
    Ok(answer.trim() == fleet)
}

/// Takes the snapshots and waits for them; the instances whose snapshots did not all
/// complete, to be kept.
async fn archive(
    cloud: &dyn Cloud,
    t: &Teardown,
    mode: Mode,
) -> Result<(Vec<Snapshot>, BTreeSet<String>), Failure> {
    // Beside the run's own progress: on stdout as text, on stderr beside JSON events.
    let show = |line: String| match mode {
        Mode::Quiet => {}
        Mode::Json => super::to_stderr(&format!("{line}\n")),
        Mode::Terminal | Mode::Lines | Mode::Log => {
            let _ = print(&format!("{line}\n"));
        }
    };
    let day = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let aws = |e| Failure::aws(e, cloud.region());
    show(format!(
        "Taking snapshots of {} workspaces…",
        t.doomed.len()
    ));
    let mut taken = teardown::take_snapshots(cloud, t, &day)
        .await
        .map_err(aws)?;
    let mut last = usize::MAX;
    teardown::wait_for(cloud, &mut taken, SNAPSHOT_POLL, |now| {
        let completed = now.iter().filter(|s| s.state == "completed").count();
        if completed != last {
            show(format!("  snapshots: {completed}/{} completed", now.len()));
        }
        last = completed;
    })
    .await
    .map_err(aws)?;
    let keep = teardown::unsafe_to_delete(&taken);
    for d in t.doomed.iter().filter(|d| keep.contains(&d.instance.id)) {
        say!(
            "✗ {}: its snapshot did not complete; the workspace is kept. Run the destroy again to retry.",
            d.workspace()
        );
    }
    Ok((taken.into_values().flatten().collect(), keep))
}

pub async fn run(global: &GlobalArgs, a: &DestroyArgs) -> Result<ExitCode, Failure> {
    let manifest = crate::manifest::load(&a.file)?;
    let cloud = Arc::new(super::connect(global, &manifest).await?);
    let t = Teardown::survey(cloud.as_ref(), &manifest.name)
        .await
        .map_err(|e| Failure::aws(e, cloud.region()))?;
    let instances: Vec<_> = t.doomed.iter().map(|d| d.instance.clone()).collect();
    if let (Some(o), _) = crate::plan::ownership(&manifest, &instances) {
        return Err(Failure::Refused(
            super::Refusal::OwnedElsewhere,
            o.message(&t.fleet),
        ));
    }
    if t.doomed.is_empty() {
        print(&format!(
            "Nothing to destroy: fleet `{}` has no workspaces.\n",
            t.fleet
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let plan = shown(&t, &a.file.display().to_string(), a.snapshot);
    if !global.quiet {
        if a.act.format == super::Format::Json {
            super::to_stderr(&plan);
        } else {
            print(&plan)?;
        }
    }
    if a.act.dry_run {
        say!("Dry run: nothing was deleted.");
        return Ok(ExitCode::SUCCESS);
    }
    if !a.act.yes && !typed_yes(&t.fleet)? {
        say!("Cancelled; nothing was deleted.");
        return Ok(ExitCode::FAILURE);
    }
    let (snapshots, keep) = if a.snapshot {
        archive(cloud.as_ref(), &t, global.progress_mode(a.act.format)).await?
    } else {
        (vec![], BTreeSet::new())
    };
    let actions = t.actions(&keep);
    let mut complete = keep.is_empty();
    if !actions.is_empty() {
        let engine = Engine::new(
            cloud.clone(),
            None,
            super::launch_notes(global, cloud.as_ref()).await,
        );
        let job = Job::changes(&t.fleet, actions, cloud.region());
        let rerun = format!(
            "prism destroy {}{}",
            a.file.display(),
            if a.snapshot { " --snapshot" } else { "" }
        );
        let mode = global.progress_mode(a.act.format);
        let report = super::drive(&engine, job, RunOptions::default(), mode, &rerun).await;
        complete &= report.complete();
    }
    if a.snapshot && a.act.format == super::Format::Text {
        let kept = snapshots.iter().filter(|s| s.state == "completed").count();
        print(&format!(
            "{kept} snapshots kept; `prism storage list --snapshots --fleet {}` lists them, \
             `prism workspace create … --from-snapshot ID` restores one.\n",
            t.fleet
        ))?;
    }
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

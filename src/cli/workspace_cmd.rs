//! `prism workspace list|show|start|stop|delete`: imperative commands on the workspaces
//! of every fleet, through the same executor, limits, retries and progress as apply.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use clap_complete::engine::ArgValueCandidates;
use comfy_table::{Table, presets::NOTHING};

use super::{Failure, Format, GlobalArgs, ListFormat, Refusal, connect_to, print, quoted};
use crate::cloud::{Cloud, Instance, InstanceState, tags};
use crate::engine::gate::Gate;
use crate::engine::{Engine, Job, RunOptions};
use crate::inventory::{LIST_STATES, WorkspaceRow, row};
use crate::manifest::{DesiredState, Manifest, RateLimitSpec, RetryPolicy};
use crate::plan::{Action, ActionKind};

#[derive(Debug, Args)]
pub struct WorkspaceArgs {
    #[command(subcommand)]
    pub command: WorkspaceCommand,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Workspaces of every fleet: name, status, type, estimated cost per day, uptime.
    List(ListArgs),
    /// One workspace in detail.
    Show(ShowArgs),
    /// Launch named workspaces from a template, paced and retried as apply does.
    Create(CreateArgs),
    /// Start stopped workspaces.
    Start(ChangeArgs),
    /// Stop running workspaces (their disks are kept).
    Stop(ChangeArgs),
    /// Hibernate running workspaces: memory saved to disk, no compute charges
    /// (templates with `hibernation: true` only).
    Hibernate(ChangeArgs),
    /// Resume hibernated (or stopped) workspaces.
    Resume(ChangeArgs),
    /// Terminate workspaces and their disks.
    Delete(ChangeArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this fleet's workspaces.
    #[arg(long, add = ArgValueCandidates::new(super::complete::fleets))]
    pub fleet: Option<String>,
    /// Only this project's workspaces.
    #[arg(long, add = ArgValueCandidates::new(super::complete::projects))]
    pub project: Option<String>,
    /// Only workspaces in this state.
    #[arg(long, value_parser = LIST_STATES)]
    pub state: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
    /// The fleet's manifest: lists its fleet, with the next change its schedule makes.
    #[arg(long, short = 'm', value_name = "FILE")]
    pub manifest: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The workspace, e.g. cs499-fall26-07.
    #[arg(add = ArgValueCandidates::new(super::complete::workspaces))]
    pub name: String,
    /// The workspace's fleet, when its name exists in more than one.
    #[arg(long, add = ArgValueCandidates::new(super::complete::fleets))]
    pub fleet: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Workspace names.
    #[arg(required = true, add = ArgValueCandidates::new(super::complete::workspaces))]
    pub names: Vec<String>,
    /// The workspaces' fleet, when a name exists in more than one.
    #[arg(long, add = ArgValueCandidates::new(super::complete::fleets))]
    pub fleet: Option<String>,
    #[command(flatten)]
    pub act: ActArgs,
}

/// The flags every command that changes workspaces shares.
#[derive(Debug, Args)]
pub struct ActArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub yes: bool,
    /// Show what would be done, without doing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Output: text, or json (NDJSON events).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Names of the new workspaces (lowercase letters, digits, '-').
    #[arg(required = true)]
    pub names: Vec<String>,
    /// The template to launch from.
    #[arg(short, long)]
    pub template: String,
    /// The manifest or templates file that defines the template.
    #[arg(short, long, value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// The fleet the workspaces join (tag prism:fleet).
    #[arg(long, default_value = "workspaces", add = ArgValueCandidates::new(super::complete::fleets))]
    pub fleet: String,
    /// The project (tag prism:project); the fleet's name when left out.
    #[arg(long, add = ArgValueCandidates::new(super::complete::projects))]
    pub project: Option<String>,
    /// Restore this snapshot (see `prism storage list --snapshots`) as the workspace's
    /// second disk, at /dev/sdf: a workspace brought back after `prism destroy
    /// --snapshot`. One workspace at a time.
    #[arg(long, value_name = "SNAPSHOT_ID")]
    pub from_snapshot: Option<String>,
    #[command(flatten)]
    pub act: ActArgs,
}

/// [`crate::inventory::workspaces`], failing as a command does.
async fn workspaces(
    cloud: &dyn Cloud,
    fleet: Option<&str>,
    project: Option<&str>,
    state: Option<&str>,
) -> Result<Vec<Instance>, Failure> {
    crate::inventory::workspaces(cloud, fleet, project, state)
        .await
        .map_err(|e| Failure::aws(e, cloud.region()))
}

fn money(v: Option<f64>) -> String {
    v.map_or("?".into(), |c| format!("${c:.2}"))
}

/// The workspaces of `rows` as a table, with the account and region they are in
/// (`place`, when the account is known).
fn table(rows: &[WorkspaceRow], place: Option<&str>) -> String {
    if rows.is_empty() {
        return match place {
            Some(p) => format!("No workspaces in account {p}.\n"),
            None => "No workspaces.\n".into(),
        };
    }
    let mut t = Table::new();
    let scheduled = rows.iter().any(|r| r.next_change.is_some());
    let mut header = vec!["NAME", "STATUS", "TYPE", "COST/DAY*", "UPTIME", "FLEET"];
    if scheduled {
        header.push("NEXT CHANGE");
    }
    t.load_preset(NOTHING).set_header(header);
    for r in rows {
        let mut cells = vec![
            r.name.clone(),
            r.status.clone(),
            r.instance_type.clone(),
            money(r.daily_cost),
            r.uptime.clone().unwrap_or_else(|| "-".into()),
            r.fleet.clone(),
        ];
        if scheduled {
            cells.push(r.next_change.clone().unwrap_or_else(|| "-".into()));
        }
        t.add_row(cells);
    }
    let mut out = format!(
        "{t}\n* estimate from us-east-1 On-Demand Linux prices; ? = a type prism has no price for\n"
    );
    if let Some(p) = place {
        out.push_str(&format!("Account {p}\n"));
    }
    out
}

pub async fn run(global: &GlobalArgs, args: &WorkspaceArgs) -> Result<ExitCode, Failure> {
    let now = SystemTime::now();
    // A manifest's fleet is listed where the manifest keeps it: its account and region.
    if let WorkspaceCommand::List(a) = &args.command
        && let Some(file) = &a.manifest
    {
        let manifest = crate::manifest::load(file)?;
        return list(&super::connect(global, &manifest).await?, a, now).await;
    }
    let cloud = connect_to(global, None).await?;
    match &args.command {
        WorkspaceCommand::List(a) => list(&cloud, a, now).await,
        WorkspaceCommand::Show(a) => {
            let found = workspaces(&cloud, a.fleet.as_deref(), None, None).await?;
            let i = resolve(&found, std::slice::from_ref(&a.name), a.fleet.as_deref())?[0];
            let r = row(i, now);
            // One object: the list's fields and the tags.
            let mut shown_row = serde_json::to_value(&r).expect("a row serializes");
            shown_row["tags"] = serde_json::json!(&i.tags);
            let text = a.format.encode(&shown_row).unwrap_or_else(|| {
                let tag_lines: Vec<String> = i.tags.iter().map(|(k, v)| format!("  {k}: {v}")).collect();
                format!(
                    "Name: {}\nStatus: {}\nInstance: {}\nType: {}\nZone: {}\nFleet: {}\nProject: {}\nCost/day: {} (estimate)\nUptime: {}\nTags:\n{}\n",
                    r.name,
                    r.status,
                    r.instance_id,
                    r.instance_type,
                    r.availability_zone.as_deref().unwrap_or("-"),
                    r.fleet,
                    r.project.as_deref().unwrap_or("-"),
                    money(r.daily_cost),
                    r.uptime.as_deref().unwrap_or("-"),
                    tag_lines.join("\n")
                )
            });
            print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        WorkspaceCommand::Create(a) => create(global, a).await,
        WorkspaceCommand::Start(a) => {
            change(global, Arc::new(cloud), ActionKind::Start, "start", a).await
        }
        WorkspaceCommand::Stop(a) => {
            change(global, Arc::new(cloud), ActionKind::Stop, "stop", a).await
        }
        WorkspaceCommand::Delete(a) => {
            change(global, Arc::new(cloud), ActionKind::Delete, "delete", a).await
        }
        WorkspaceCommand::Hibernate(a) => {
            change(
                global,
                Arc::new(cloud),
                ActionKind::Hibernate,
                "hibernate",
                a,
            )
            .await
        }
        WorkspaceCommand::Resume(a) => {
            change(global, Arc::new(cloud), ActionKind::Start, "resume", a).await
        }
    }
}

/// `workspace list`, also behind the legacy `prism list`.
pub async fn list(cloud: &dyn Cloud, a: &ListArgs, now: SystemTime) -> Result<ExitCode, Failure> {
    let manifest = a
        .manifest
        .as_deref()
        .map(crate::manifest::load)
        .transpose()?;
    let account = cloud.account().await;
    let fleet = a
        .fleet
        .as_deref()
        .or(manifest.as_ref().map(|m| m.name.as_str()));
    let found = workspaces(cloud, fleet, a.project.as_deref(), a.state.as_deref()).await?;
    let at = jiff::Timestamp::try_from(now).ok();
    let mut rows: Vec<WorkspaceRow> = found
        .iter()
        .map(|i| {
            let mut r = row(i, now);
            if let (Some(m), Some(at)) = (&manifest, at)
                && r.fleet == m.name
            {
                r.next_change = crate::plan::next_change(m, i, at);
            }
            r
        })
        .collect();
    crate::inventory::in_account(&mut rows, account.as_ref());
    let place = account.map(|acc| format!("{acc}, {}", cloud.region()));
    print(
        &a.format
            .encode(&rows)
            .unwrap_or_else(|| table(&rows, place.as_deref())),
    )?;
    Ok(ExitCode::SUCCESS)
}

fn needed(kind: ActionKind, i: &Instance) -> bool {
    match kind {
        ActionKind::Start => matches!(i.state, InstanceState::Stopped | InstanceState::Stopping),
        ActionKind::Stop | ActionKind::Hibernate => {
            matches!(i.state, InstanceState::Running | InstanceState::Pending)
        }
        _ => !i.state.is_gone(),
    }
}

/// `workspace start|stop|delete NAME…`, also behind the legacy top-level verbs; `verb`
/// is the command's own word (`resume` starts).
pub async fn change(
    global: &GlobalArgs,
    cloud: Arc<dyn Cloud>,
    kind: ActionKind,
    verb: &str,
    a: &ChangeArgs,
) -> Result<ExitCode, Failure> {
    let found = workspaces(cloud.as_ref(), a.fleet.as_deref(), None, None).await?;
    let mut by_fleet: BTreeMap<String, Vec<&Instance>> = BTreeMap::new();
    for i in resolve(&found, &a.names, a.fleet.as_deref())? {
        by_fleet
            .entry(i.tag(tags::FLEET).unwrap_or_default().to_string())
            .or_default()
            .push(i);
    }
    if kind == ActionKind::Hibernate {
        let cannot: Vec<&str> = by_fleet
            .values()
            .flatten()
            .filter(|i| !i.hibernation)
            .map(|i| i.workspace().unwrap_or(&i.id))
            .collect();
        if !cannot.is_empty() {
            return Err(Failure::Refused(
                Refusal::Unsupported,
                format!(
                    "{} cannot hibernate: it was launched without hibernation. Hibernation is chosen at launch: set `hibernation: true` in the template for new workspaces, or use `prism workspace stop` (nothing was changed)",
                    quoted(&cannot)
                ),
            ));
        }
    }
    let todo: Vec<&Instance> = by_fleet
        .values()
        .flatten()
        .copied()
        .filter(|i| needed(kind, i))
        .collect();
    if todo.is_empty() {
        print(&format!(
            "Nothing to {verb}: the workspaces are already in that state.\n"
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    for i in &todo {
        say!(
            "  {verb} {} ({}, {})",
            i.workspace().unwrap_or(&i.id),
            i.id,
            i.state
        );
    }
    if a.act.dry_run {
        say!("Dry run: nothing was changed.");
        return Ok(ExitCode::SUCCESS);
    }
    if !super::pass_gate(&Gate::of_changes(kind, a.act.yes), todo.len())? {
        say!("Cancelled; nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    let mode = global.progress_mode(a.act.format);
    let engine = Engine::new(
        cloud.clone(),
        None,
        super::launch_notes(global, cloud.as_ref()).await,
    );
    let rerun = format!("prism workspace {verb} {}", a.names.join(" "));
    let mut complete = true;
    for (fleet, instances) in &by_fleet {
        let actions: Vec<Action> = instances
            .iter()
            .filter(|i| needed(kind, i))
            .map(|i| Action {
                action: kind,
                workspace: i.workspace().unwrap_or(&i.id).to_string(),
                instance_id: Some(i.id.clone()),
                instance_type: i.instance_type.clone(),
                vcpus: None,
                reason: "asked for on the command line".into(),
                resize: None,
            })
            .collect();
        let job = Job::changes(fleet, actions, cloud.region());
        let report = super::drive(&engine, job, RunOptions::default(), mode, &rerun).await;
        complete &= report.complete();
        if report.interrupted {
            break;
        }
    }
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The instances that bare workspace `names` stand for: each name must exist, and in
/// one fleet only (or in `fleet`, when given), so a command never acts on two
/// workspaces for one name by accident.
fn resolve<'a>(
    found: &'a [Instance],
    names: &[String],
    fleet: Option<&str>,
) -> Result<Vec<&'a Instance>, Failure> {
    let missing: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !found.iter().any(|i| i.workspace() == Some(n)))
        .collect();
    if !missing.is_empty() {
        // Suggested as manifest keys are: the closest name, when one is close enough.
        let mut known: Vec<String> = found
            .iter()
            .filter_map(|i| i.workspace().map(str::to_string))
            .collect();
        known.sort();
        known.dedup();
        let guesses = missing
            .iter()
            .filter_map(|m| crate::manifest::did_you_mean(m, &known).map(|g| (m.to_string(), g)))
            .collect();
        return Err(Failure::NoSuchWorkspace {
            names: missing.iter().map(|m| m.to_string()).collect(),
            fleet: fleet.map(str::to_string),
            guesses,
        });
    }
    let mut out = Vec::new();
    for name in names {
        let matching: Vec<&Instance> = found
            .iter()
            .filter(|i| i.workspace() == Some(name.as_str()))
            .collect();
        let mut fleets: Vec<String> = matching
            .iter()
            .map(|i| i.tag(tags::FLEET).unwrap_or_default().to_string())
            .collect();
        fleets.sort();
        fleets.dedup();
        if fleets.len() > 1 {
            return Err(Failure::AmbiguousName {
                name: name.clone(),
                fleets,
            });
        }
        out.extend(matching);
    }
    Ok(out)
}

/// Fails when one of `names` is already a workspace of a fleet other than `fleet`.
fn check_names_free(found: &[Instance], names: &[String], fleet: &str) -> Result<(), Failure> {
    for name in names {
        if let Some(other) = found
            .iter()
            .find(|i| i.workspace() == Some(name.as_str()) && i.tag(tags::FLEET) != Some(fleet))
        {
            return Err(Failure::NameTaken {
                name: name.clone(),
                fleet: other.tag(tags::FLEET).unwrap_or_default().to_string(),
            });
        }
    }
    Ok(())
}

/// Fails unless snapshot `id` is one of the account's and usable (pending or completed).
async fn restorable(cloud: &dyn Cloud, id: &str) -> Result<(), Failure> {
    let filter = crate::cloud::SnapshotFilter {
        ids: vec![id.to_string()],
        ..Default::default()
    };
    let found = crate::retry::call(&RetryPolicy::default(), || {
        cloud.describe_snapshots(&filter)
    })
    .await
    .map_err(|e| Failure::aws(e, cloud.region()))?;
    match found.first() {
        None => Err(Failure::Refused(
            Refusal::NotFound,
            format!(
                "no snapshot `{id}` in {}; see `prism storage list --snapshots` (nothing was launched)",
                cloud.region()
            ),
        )),
        Some(s) if s.state == "pending" || s.state == "completed" => Ok(()),
        Some(s) => Err(Failure::Refused(
            Refusal::Unavailable,
            format!(
                "snapshot `{id}` is {}: it cannot be restored (nothing was launched)",
                s.state
            ),
        )),
    }
}

/// `workspace create`, also behind the legacy `prism launch`.
pub async fn create(global: &GlobalArgs, a: &CreateArgs) -> Result<ExitCode, Failure> {
    let bad: Vec<&str> = a
        .names
        .iter()
        .chain([&a.fleet])
        .map(String::as_str)
        .filter(|n| !crate::manifest::valid_name(n))
        .collect();
    if !bad.is_empty() {
        return Err(Failure::Refused(
            Refusal::InvalidValue,
            format!(
                "invalid name {}: use 1 to {} lowercase letters, digits and '-', starting and ending with a letter or digit (nothing was launched)",
                quoted(&bad),
                crate::manifest::NAME_MAX
            ),
        ));
    }
    if a.from_snapshot.is_some() && a.names.len() > 1 {
        return Err(Failure::Refused(
            Refusal::InvalidValue,
            format!(
                "--from-snapshot restores one workspace, and {} were named (nothing was launched)",
                a.names.len()
            ),
        ));
    }
    let templates = crate::manifest::load_templates(&a.file)?;
    let Some(mut template) = templates.get(&a.template).cloned() else {
        let names: Vec<String> = templates.keys().cloned().collect();
        let hint = crate::manifest::did_you_mean(&a.template, &names).map_or_else(
            || format!("it defines: {}", names.join(", ")),
            |c| format!("did you mean `{c}`?"),
        );
        return Err(Failure::Refused(
            Refusal::NotFound,
            format!(
                "no template `{}` in {}; {hint}",
                a.template,
                a.file.display()
            ),
        ));
    };
    let cloud = connect_to(global, None).await?;
    let every = workspaces(&cloud, None, None, None).await?;
    check_names_free(&every, &a.names, &a.fleet)?;
    if let Some(id) = &a.from_snapshot {
        restorable(&cloud, id).await?;
        template.restore_snapshot = Some(id.clone());
    }
    let manifest = Manifest {
        source: a.file.clone(),
        name: a.fleet.clone(),
        project: a.project.clone().unwrap_or_else(|| a.fleet.clone()),
        template,
        templates,
        workspaces: a.names.clone(),
        region: None,
        account: None,
        state: DesiredState::Running,
        schedule: None,
        roster: None,
        prune: false,
        rate_limit: RateLimitSpec::default(),
        retry: RetryPolicy::default(),
    };
    if a.act.dry_run {
        let observed = crate::observe::observe(&cloud, &manifest)
            .await
            .map_err(|e| Failure::aws(e, cloud.region()))?;
        let mut plan = crate::plan::plan_by_hand(&manifest, &observed, None);
        plan.focus_on_creates(&a.names);
        print(&crate::plan::render::text(&plan))?;
        return Ok(ExitCode::SUCCESS);
    }
    let apply = super::apply_cmd::ApplyArgs {
        file: a.file.clone(),
        yes: a.act.yes,
        parallelism: 10,
        no_wait: false,
        wait_timeout: Duration::from_secs(600),
        wait_for_quota: None,
        format: a.act.format,
        dry_run: false,
    };
    super::apply_cmd::carry_out(global, &manifest, None, &apply, Some(&a.names)).await
}

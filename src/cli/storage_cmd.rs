//! `prism storage list|create|delete`: EBS volumes and EFS file systems in one place.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{Table, presets::NOTHING};
use serde::{Deserialize, Serialize};

use super::{Failure, GlobalArgs, ListFormat, Refusal, confirm, connect_to, print};
use crate::cloud::{Cloud, FileSystem, Volume};
use crate::manifest::RetryPolicy;
use crate::retry;

/// Tag on storage prism created.
const STORAGE_TAG: &str = "prism:storage";

#[derive(Debug, Args)]
pub struct StorageArgs {
    #[command(subcommand)]
    pub command: StorageCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// An EBS volume: a disk in one availability zone.
    Ebs,
    /// An EFS file system: shared storage that many workspaces mount.
    Efs,
}

impl StorageType {
    fn name(self) -> &'static str {
        match self {
            StorageType::Ebs => "ebs",
            StorageType::Efs => "efs",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// EBS volumes and EFS file systems.
    List {
        /// Only one kind.
        #[arg(long = "type", value_enum, conflicts_with = "snapshots")]
        kind: Option<StorageType>,
        /// The snapshots prism kept of workspaces' disks (`prism destroy --snapshot`),
        /// instead of volumes and file systems.
        #[arg(long)]
        snapshots: bool,
        /// Only the snapshots of this fleet.
        #[arg(long, requires = "snapshots", add = clap_complete::engine::ArgValueCandidates::new(super::complete::fleets))]
        fleet: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
    /// Create an EBS volume (gp3) or an EFS file system.
    Create {
        /// Name (the Name tag).
        name: String,
        /// What to create (required; the legacy `prism volume` creates EBS).
        #[arg(long = "type", value_enum)]
        kind: Option<StorageType>,
        /// Size in GiB (EBS only; required for EBS).
        #[arg(long, required_if_eq("kind", "ebs"), value_parser = clap::value_parser!(u32).range(1..=16384))]
        size: Option<u32>,
        /// Availability zone of an EBS volume; the region's first when left out.
        #[arg(long)]
        zone: Option<String>,
        /// Project (tag prism:project).
        #[arg(long)]
        project: Option<String>,
        /// Show what would be created, without creating it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete volumes or file systems by name or id.
    Delete {
        /// Names or ids.
        #[arg(required = true, add = clap_complete::engine::ArgValueCandidates::new(super::complete::storage))]
        names: Vec<String>,
        /// Only look among one kind.
        #[arg(long = "type", value_enum)]
        kind: Option<StorageType>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        /// Show what would be deleted, without deleting it.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Storage as listings show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageRow {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: StorageType,
    pub id: String,
    pub size_gib: f64,
    pub state: String,
    /// Instances an EBS volume is attached to; mount targets of an EFS file system.
    pub attached_to: Vec<String>,
    pub availability_zone: Option<String>,
}

fn ebs_row(v: &Volume) -> StorageRow {
    StorageRow {
        name: v.tags.get("Name").cloned().unwrap_or_else(|| v.id.clone()),
        kind: StorageType::Ebs,
        id: v.id.clone(),
        size_gib: v.size_gib as f64,
        state: v.state.clone(),
        attached_to: v.attached_to.clone(),
        availability_zone: v.availability_zone.clone(),
    }
}

fn efs_row(f: &FileSystem) -> StorageRow {
    StorageRow {
        name: f.name.clone().unwrap_or_else(|| f.id.clone()),
        kind: StorageType::Efs,
        id: f.id.clone(),
        size_gib: (f.size_bytes as f64 / (1u64 << 30) as f64 * 100.0).round() / 100.0,
        state: f.state.clone(),
        attached_to: (0..f.mount_targets)
            .map(|i| format!("mount target {}", i + 1))
            .collect(),
        availability_zone: None,
    }
}

async fn rows(cloud: &dyn Cloud, kind: Option<StorageType>) -> Result<Vec<StorageRow>, Failure> {
    let policy = RetryPolicy::default();
    let aws = |e| Failure::aws(e, cloud.region());
    let mut out = Vec::new();
    if kind != Some(StorageType::Efs) {
        let volumes = retry::call(&policy, || cloud.describe_volumes(None))
            .await
            .map_err(aws)?;
        out.extend(volumes.iter().map(ebs_row));
    }
    if kind != Some(StorageType::Ebs) {
        let systems = retry::call(&policy, || cloud.list_file_systems())
            .await
            .map_err(aws)?;
        out.extend(systems.iter().map(efs_row));
    }
    out.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Ok(out)
}

/// A kept snapshot as `storage list --snapshots` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRow {
    pub workspace: String,
    pub fleet: String,
    pub member: Option<String>,
    /// The day it was taken (`YYYY-MM-DD`).
    pub taken: Option<String>,
    pub size_gib: u64,
    /// `completed`, or `pending 45%`, or `error`.
    pub state: String,
    pub id: String,
    /// The volume it was taken of.
    pub volume_id: String,
}

async fn snapshot_rows(
    cloud: &dyn Cloud,
    fleet: Option<&str>,
) -> Result<Vec<SnapshotRow>, Failure> {
    use crate::cloud::{SnapshotFilter, tags};
    let mut filter = SnapshotFilter {
        tag_keys: vec![tags::WORKSPACE.to_string()],
        ..Default::default()
    };
    if let Some(f) = fleet {
        filter.tags.push((tags::FLEET.to_string(), f.to_string()));
    }
    let found = retry::call(&RetryPolicy::default(), || {
        cloud.describe_snapshots(&filter)
    })
    .await
    .map_err(|e| Failure::aws(e, cloud.region()))?;
    let mut rows: Vec<SnapshotRow> = found
        .into_iter()
        .map(|s| SnapshotRow {
            workspace: s.tag(tags::WORKSPACE).unwrap_or_default().to_string(),
            fleet: s.tag(tags::FLEET).unwrap_or_default().to_string(),
            member: s.tag(tags::MEMBER).map(str::to_string),
            taken: s.tag(tags::TAKEN).map(str::to_string),
            size_gib: s.size_gib,
            state: match (&s.progress, s.state.as_str()) {
                (Some(p), "pending") => format!("pending {p}"),
                _ => s.state.clone(),
            },
            id: s.id,
            volume_id: s.volume_id,
        })
        .collect();
    rows.sort_by(|a, b| {
        (&a.fleet, &a.workspace, &b.taken, &a.id).cmp(&(&b.fleet, &b.workspace, &a.taken, &b.id))
    });
    Ok(rows)
}

fn snapshot_table(rows: &[SnapshotRow]) -> String {
    if rows.is_empty() {
        return "No snapshots.\n".into();
    }
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header([
        "WORKSPACE",
        "FLEET",
        "MEMBER",
        "TAKEN",
        "SIZE",
        "STATE",
        "ID",
    ]);
    for r in rows {
        t.add_row([
            r.workspace.clone(),
            r.fleet.clone(),
            r.member.clone().unwrap_or_else(|| "-".into()),
            r.taken.clone().unwrap_or_else(|| "-".into()),
            format!("{} GiB", r.size_gib),
            r.state.clone(),
            r.id.clone(),
        ]);
    }
    format!("{t}\n")
}

fn table(rows: &[StorageRow]) -> String {
    if rows.is_empty() {
        return "No storage.\n".into();
    }
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_header(["NAME", "TYPE", "SIZE", "STATE", "ATTACHED TO", "ID"]);
    for r in rows {
        t.add_row([
            r.name.clone(),
            r.kind.name().to_string(),
            format!("{} GiB", r.size_gib),
            r.state.clone(),
            if r.attached_to.is_empty() {
                "-".into()
            } else {
                r.attached_to.join(", ")
            },
            r.id.clone(),
        ]);
    }
    format!("{t}\n")
}

/// Runs a storage command; `only` forces one kind (the legacy `prism volume`).
pub async fn run(
    global: &GlobalArgs,
    args: &StorageArgs,
    only: Option<StorageType>,
) -> Result<ExitCode, Failure> {
    let cloud = connect_to(global, None).await?;
    let region = cloud.region().to_string();
    let aws = |e| Failure::aws(e, &region);
    match &args.command {
        StorageCommand::List {
            snapshots: true,
            fleet,
            format,
            ..
        } => {
            let rows = snapshot_rows(&cloud, fleet.as_deref()).await?;
            print(
                &format
                    .encode(&rows)
                    .unwrap_or_else(|| snapshot_table(&rows)),
            )?;
        }
        StorageCommand::List { kind, format, .. } => {
            let rows = rows(&cloud, only.or(*kind)).await?;
            print(&format.encode(&rows).unwrap_or_else(|| table(&rows)))?;
        }
        StorageCommand::Create {
            name,
            kind,
            size,
            zone,
            project,
            dry_run,
        } => {
            let kind = only.or(*kind).ok_or_else(|| {
                Failure::Refused(
                    Refusal::MissingFlag,
                    "`storage create` needs --type ebs (a volume) or --type efs (a file system)"
                        .into(),
                )
            })?;
            check_create_flags(kind, *size, zone.as_deref(), &region)?;
            if let Some(found) = rows(&cloud, Some(kind))
                .await?
                .into_iter()
                .find(|r| &r.name == name)
            {
                if kind == StorageType::Efs {
                    // The creation token is derived from the name: creating twice
                    // returns the first.
                    print(&format!(
                        "✓ efs `{}` exists already ({}, {} GiB); nothing was created\n",
                        found.name, found.id, found.size_gib
                    ))?;
                    return Ok(ExitCode::SUCCESS);
                }
                return Err(Failure::Refused(
                    Refusal::AlreadyExists,
                    format!(
                        "ebs storage named `{name}` already exists ({}); see `prism storage list`",
                        found.id
                    ),
                ));
            }
            if *dry_run {
                print(&format!(
                    "Dry run: would create {} storage `{name}`; nothing was created.\n",
                    kind.name()
                ))?;
                return Ok(ExitCode::SUCCESS);
            }
            let created = match kind {
                StorageType::Ebs => {
                    let Some(size) = size else {
                        return Err(Failure::Refused(
                            Refusal::MissingFlag,
                            "an EBS volume needs --size (GiB)".into(),
                        ));
                    };
                    let zones = cloud.availability_zones().await.map_err(aws)?;
                    let zone = match zone {
                        Some(z) if zones.contains(z) => z.clone(),
                        Some(z) => {
                            return Err(Failure::Refused(
                                Refusal::InvalidValue,
                                format!(
                                    "--zone {z} is not an availability zone of {region} (it has: {}); nothing was created",
                                    zones.join(", ")
                                ),
                            ));
                        }
                        None => zones.into_iter().next().ok_or_else(|| {
                            Failure::Refused(
                                Refusal::Unavailable,
                                format!("no availability zone found in {region}; pass --zone"),
                            )
                        })?,
                    };
                    let mut tags = BTreeMap::from([
                        ("Name".to_string(), name.clone()),
                        (STORAGE_TAG.to_string(), name.clone()),
                    ]);
                    if let Some(p) = project {
                        tags.insert(crate::cloud::tags::PROJECT.to_string(), p.clone());
                    }
                    ebs_row(
                        &cloud
                            .create_volume(*size, &zone, &tags)
                            .await
                            .map_err(aws)?,
                    )
                }
                StorageType::Efs => {
                    // The name is the creation token: creating twice returns the first.
                    efs_row(
                        &cloud
                            .create_file_system(name, &format!("prism-{name}"))
                            .await
                            .map_err(aws)?,
                    )
                }
            };
            print(&format!(
                "✓ Created {} `{}` ({}, {} GiB)\n",
                created.kind.name(),
                created.name,
                created.id,
                created.size_gib
            ))?;
        }
        StorageCommand::Delete {
            names,
            kind,
            yes,
            dry_run,
        } => return delete(&cloud, names, only.or(*kind), *yes, *dry_run).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses flags that do not apply to `kind`, and a zone of another region, before
/// anything is sent to AWS.
fn check_create_flags(
    kind: StorageType,
    size: Option<u32>,
    zone: Option<&str>,
    region: &str,
) -> Result<(), Failure> {
    if kind == StorageType::Efs {
        let mut wrong = Vec::new();
        if size.is_some() {
            wrong.push("--size (an EFS file system grows with its data)");
        }
        if zone.is_some() {
            wrong.push("--zone (an EFS file system spans the region's zones)");
        }
        if !wrong.is_empty() {
            return Err(Failure::Refused(
                Refusal::InvalidValue,
                format!(
                    "--type efs takes no {}; nothing was created",
                    wrong.join(" and no ")
                ),
            ));
        }
    }
    if let Some(z) = zone
        && !z.starts_with(region)
    {
        return Err(Failure::Refused(
            Refusal::InvalidValue,
            format!(
                "--zone {z} is not in region {region}: a volume is created in the region prism calls (pass --region to choose it); nothing was created"
            ),
        ));
    }
    Ok(())
}

async fn delete(
    cloud: &dyn Cloud,
    names: &[String],
    kind: Option<StorageType>,
    yes: bool,
    dry_run: bool,
) -> Result<ExitCode, Failure> {
    let all = rows(cloud, kind).await?;
    let mut chosen = Vec::new();
    for n in names {
        match all.iter().find(|r| &r.name == n || &r.id == n) {
            Some(r) => chosen.push(r),
            None => {
                return Err(Failure::Refused(
                    Refusal::NotFound,
                    format!(
                        "no storage named `{n}`; see `prism storage list` (nothing was deleted)"
                    ),
                ));
            }
        }
    }
    if let Some(busy) = chosen
        .iter()
        .find(|r| r.kind == StorageType::Ebs && !r.attached_to.is_empty())
    {
        return Err(Failure::Refused(
            Refusal::InUse,
            format!(
                "`{}` is attached to {}: delete or stop-and-detach that workspace first (nothing was deleted)",
                busy.name,
                busy.attached_to.join(", ")
            ),
        ));
    }
    for r in &chosen {
        say!(
            "  delete {} `{}` ({}, {} GiB)",
            r.kind.name(),
            r.name,
            r.id,
            r.size_gib
        );
    }
    if dry_run {
        say!("Dry run: nothing was deleted.");
        return Ok(ExitCode::SUCCESS);
    }
    let question = if chosen.len() == 1 {
        "Delete it and all data on it?".to_string()
    } else {
        format!("Delete these {} and all data on them?", chosen.len())
    };
    if !yes && !confirm(&question, Failure::Unconfirmed("delete"))? {
        say!("Cancelled; nothing was deleted.");
        return Ok(ExitCode::FAILURE);
    }
    let policy = RetryPolicy::default();
    for r in chosen {
        let result = match r.kind {
            StorageType::Ebs => retry::call(&policy, || cloud.delete_volume(&r.id)).await,
            StorageType::Efs => retry::call(&policy, || cloud.delete_file_system(&r.id)).await,
        };
        result.map_err(|e| Failure::aws(e, cloud.region()))?;
        print(&format!(
            "✓ Deleted {} `{}` ({})\n",
            r.kind.name(),
            r.name,
            r.id
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

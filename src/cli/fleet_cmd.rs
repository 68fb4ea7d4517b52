//! `prism fleet adopt MANIFEST`: hands a fleet over to a manifest. One manifest manages
//! each fleet (tag `prism:owner`, see `plan::OwnedElsewhere`); another manifest naming
//! the same fleet changes nothing until it adopts the fleet.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Failure, GlobalArgs, confirm, connect, print};
use crate::cloud::{Cloud, tags};
use crate::observe::observe;

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Make MANIFEST the manager of its fleet (the fleet named by its `name:`), taking
    /// it over from the manifest that managed it; its instances are only retagged.
    Adopt {
        /// The manifest that manages the fleet from now on.
        file: PathBuf,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
}

pub async fn run(global: &GlobalArgs, args: &FleetArgs) -> Result<ExitCode, Failure> {
    let FleetCommand::Adopt { file, yes } = &args.command;
    let manifest = crate::manifest::load(file)?;
    let cloud = connect(global, &manifest).await?;
    let observed = observe(&cloud, &manifest)
        .await
        .map_err(|e| Failure::aws(e, cloud.region()))?;
    let ours = manifest.owner();
    let mut others: Vec<&str> = Vec::new();
    let todo: Vec<_> = observed
        .instances
        .iter()
        .filter(|i| !i.state.is_gone() && i.tag(tags::MADE_BY) != Some("hand"))
        .filter(|i| i.tag(tags::OWNER) != Some(ours.as_str()))
        .inspect(|i| others.extend(i.tag(tags::OWNER)))
        .collect();
    others.sort();
    others.dedup();
    if todo.is_empty() {
        print(&format!(
            "Fleet `{}` is already managed by `{ours}`; nothing was changed.\n",
            manifest.name
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let from = if others.is_empty() {
        "no manifest".to_string()
    } else {
        others
            .iter()
            .map(|o| format!("`{o}`"))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    say!(
        "Fleet `{}`: {} workspace{} managed by {from} will be managed by `{ours}` (tag {}); no instance is changed otherwise.",
        manifest.name,
        todo.len(),
        if todo.len() == 1 { "" } else { "s" },
        tags::OWNER
    );
    if !yes && !confirm("Adopt the fleet?", Failure::Unconfirmed("adopt"))? {
        say!("Cancelled; nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    for i in &todo {
        crate::retry::call(&manifest.retry, || {
            cloud.tag_instance(&i.id, tags::OWNER, &ours)
        })
        .await
        .map_err(|e| Failure::aws(e, cloud.region()))?;
    }
    print(&format!(
        "✓ Fleet `{}` is managed by `{ours}` ({} workspaces retagged).\n",
        manifest.name,
        todo.len()
    ))?;
    Ok(ExitCode::SUCCESS)
}

//! `prism template list|show`: the templates a manifest or a templates file defines.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use comfy_table::{Table, presets::NOTHING};

use super::{Failure, ListFormat, Refusal, print};
use crate::manifest::{self, Template};

#[derive(Debug, Args)]
pub struct TemplateArgs {
    #[command(subcommand)]
    pub command: TemplateCommand,
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// The templates of a manifest (inline and its templates file) or of a templates file.
    List {
        /// A manifest or a templates file; by default, every one in the current folder.
        #[arg(short, long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
    /// One template in full.
    Show {
        /// The template's name.
        #[arg(add = clap_complete::engine::ArgValueCandidates::new(names_for_completion))]
        name: String,
        /// A manifest or a templates file; by default, every one in the current folder.
        #[arg(short, long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
}

fn show_text(t: &Template) -> String {
    format!(
        "Name: {}\nImage: {}\nInstance type: {}\nRoot volume: {}\nHibernation: {}\nUser data:\n{}\n",
        t.name,
        t.image,
        t.instance_type,
        t.root_volume_gb
            .map_or("the image's".into(), |g| format!("{g} GiB")),
        if t.hibernation { "yes" } else { "no" },
        t.user_data.as_deref().unwrap_or("(none)")
    )
}

/// The templates of `file`, or of every manifest and templates file in the current
/// folder (`*.yaml`, `*.yml`; other YAML files are passed over), each with its file.
/// Template names for completion: of the `-f/--file` on the command line being
/// completed, else of the manifests in the current folder.
pub fn names_for_completion() -> Vec<clap_complete::engine::CompletionCandidate> {
    let args: Vec<String> = std::env::args().collect();
    let file = args
        .windows(2)
        .find_map(|w| (w[0] == "-f" || w[0] == "--file").then(|| PathBuf::from(&w[1])));
    let mut names: Vec<String> = templates(file.as_ref())
        .unwrap_or_default()
        .into_iter()
        .map(|(_, t)| t.name)
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(clap_complete::engine::CompletionCandidate::new)
        .collect()
}

fn templates(file: Option<&PathBuf>) -> Result<Vec<(PathBuf, Template)>, Failure> {
    if let Some(f) = file {
        return Ok(manifest::load_templates(f)?
            .into_values()
            .map(|t| (f.clone(), t))
            .collect());
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(".")
        .map_err(Failure::file("."))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| p.strip_prefix("./").map(PathBuf::from).unwrap_or(p))
        .collect();
    candidates.sort();
    let found: Vec<(PathBuf, Template)> = candidates
        .iter()
        .filter_map(|p| manifest::load_templates(p).ok().map(|ts| (p, ts)))
        .flat_map(|(p, ts)| ts.into_values().map(move |t| (p.clone(), t)))
        .collect();
    if found.is_empty() {
        let looked = if candidates.is_empty() {
            "it has no *.yaml or *.yml file".to_string()
        } else {
            let names: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            format!(
                "none of {} is a valid manifest or templates file",
                names.join(", ")
            )
        };
        let here = std::env::current_dir().map_or(".".into(), |d| d.display().to_string());
        return Err(Failure::Refused(
            Refusal::NotFound,
            format!(
                "no templates found in {here}: {looked}; pass --file FILE (a manifest or a templates file)"
            ),
        ));
    }
    Ok(found)
}

pub fn run(args: &TemplateArgs) -> Result<ExitCode, Failure> {
    match &args.command {
        TemplateCommand::List { file, format } => {
            let found = templates(file.as_ref())?;
            let list: Vec<&Template> = found.iter().map(|(_, t)| t).collect();
            let text = format.encode(&list).unwrap_or_else(|| {
                let mut t = Table::new();
                t.load_preset(NOTHING).set_header([
                    "NAME",
                    "TYPE",
                    "IMAGE",
                    "ROOT",
                    "HIBERNATION",
                    "FILE",
                ]);
                for (path, tpl) in &found {
                    t.add_row([
                        tpl.name.clone(),
                        tpl.instance_type.clone(),
                        tpl.image.to_string(),
                        tpl.root_volume_gb
                            .map_or("-".into(), |g| format!("{g} GiB")),
                        if tpl.hibernation { "yes" } else { "no" }.to_string(),
                        path.display().to_string(),
                    ]);
                }
                format!("{t}\n")
            });
            print(&text)?;
        }
        TemplateCommand::Show { name, file, format } => {
            let found = templates(file.as_ref())?;
            let matching: Vec<&(PathBuf, Template)> =
                found.iter().filter(|(_, t)| &t.name == name).collect();
            let t = match matching.as_slice() {
                [(_, t)] => t,
                [] => {
                    let mut names: Vec<&str> = found.iter().map(|(_, t)| t.name.as_str()).collect();
                    names.dedup();
                    return Err(Failure::Refused(
                        Refusal::NotFound,
                        format!("no template `{name}`; found: {}", names.join(", ")),
                    ));
                }
                several => {
                    let files: Vec<String> = several
                        .iter()
                        .map(|(p, _)| p.display().to_string())
                        .collect();
                    return Err(Failure::Refused(
                        Refusal::Ambiguous,
                        format!(
                            "template `{name}` is defined in {}; pass --file to say which",
                            files.join(" and ")
                        ),
                    ));
                }
            };
            print(&format.encode(t).unwrap_or_else(|| show_text(t)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

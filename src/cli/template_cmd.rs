//! `prism template list|show`: the templates a manifest or a templates file defines.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use comfy_table::{Table, presets::NOTHING};

use super::{Failure, ListFormat, print};
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
        /// A manifest or a templates file.
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
    /// One template in full.
    Show {
        /// The template's name.
        name: String,
        /// A manifest or a templates file.
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
}

impl TemplateArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            TemplateCommand::List { format, .. } | TemplateCommand::Show { format, .. } => {
                *format == ListFormat::Json
            }
        }
    }
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

pub fn run(args: &TemplateArgs) -> Result<ExitCode, Failure> {
    match &args.command {
        TemplateCommand::List { file, format } => {
            let templates: Vec<Template> = manifest::load_templates(file)?.into_values().collect();
            let text = format.encode(&templates).unwrap_or_else(|| {
                let mut t = Table::new();
                t.load_preset(NOTHING)
                    .set_header(["NAME", "TYPE", "IMAGE", "ROOT", "HIBERNATION"]);
                for tpl in &templates {
                    t.add_row([
                        tpl.name.clone(),
                        tpl.instance_type.clone(),
                        tpl.image.to_string(),
                        tpl.root_volume_gb
                            .map_or("-".into(), |g| format!("{g} GiB")),
                        if tpl.hibernation { "yes" } else { "no" }.to_string(),
                    ]);
                }
                format!("{t}\n")
            });
            print(&text)?;
        }
        TemplateCommand::Show { name, file, format } => {
            let templates = manifest::load_templates(file)?;
            let Some(t) = templates.get(name) else {
                let names: Vec<&str> = templates.keys().map(String::as_str).collect();
                return Err(Failure::Usage(format!(
                    "no template `{name}` in {}; it defines: {}",
                    file.display(),
                    names.join(", ")
                )));
            };
            print(&format.encode(t).unwrap_or_else(|| show_text(t)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

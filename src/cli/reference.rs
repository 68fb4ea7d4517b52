//! Commands that read no AWS state: validate, schema, errors, completion, man.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{Cli, Failure, Format, print};
use crate::manifest;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for. Load it with e.g. `source <(prism completion bash)`.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// Shells prism completes for, names of workspaces, fleets and projects included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write prism.1 and a page per command (prism-plan.1, …) into this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ErrorsArgs {
    /// An AWS error code, e.g. VcpuLimitExceeded; all of them when left out.
    pub code: Option<String>,
    /// Print the catalogue as Markdown (docs/troubleshooting.md).
    #[arg(long, conflicts_with = "code")]
    pub markdown: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which document's schema.
    #[arg(value_enum, default_value_t)]
    pub document: SchemaDocument,
}

/// The documents prism reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum SchemaDocument {
    /// A fleet manifest.
    #[default]
    Manifest,
    /// A templates file (a map of template name to template).
    Templates,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The fleet manifest.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// The script that makes a shell ask prism for completions (COMPLETE=shell prism …).
pub fn completion_command(args: &CompletionArgs) -> Result<ExitCode, Failure> {
    use clap_complete::env::EnvCompleter;
    let shell: &dyn EnvCompleter = match args.shell {
        CompletionShell::Bash => &clap_complete::env::Bash,
        CompletionShell::Zsh => &clap_complete::env::Zsh,
        CompletionShell::Fish => &clap_complete::env::Fish,
        CompletionShell::Powershell => &clap_complete::env::Powershell,
        CompletionShell::Elvish => &clap_complete::env::Elvish,
    };
    let mut out = Vec::new();
    shell
        .write_registration("COMPLETE", "prism", "prism", "prism", &mut out)
        .map_err(Failure::Io)?;
    print(&String::from_utf8_lossy(&out))?;
    Ok(ExitCode::SUCCESS)
}

pub fn man_command(args: &ManArgs) -> Result<ExitCode, Failure> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(Failure::Io)?;
            clap_mangen::generate_to(cmd, dir).map_err(Failure::Io)?;
            eprintln!("Wrote the man pages to {}", dir.display());
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(Failure::Io)?;
            print(&String::from_utf8_lossy(&out))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn errors_command(args: &ErrorsArgs) -> Result<ExitCode, Failure> {
    use crate::errors::{CATALOGUE, explain, render};
    if args.markdown {
        print(&crate::errors::markdown())?;
        return Ok(ExitCode::SUCCESS);
    }
    let codes: Vec<&str> = match &args.code {
        Some(c) => vec![c.as_str()],
        None => CATALOGUE.iter().map(|e| e.codes[0]).collect(),
    };
    let explained: Vec<_> = codes
        .iter()
        .map(|c| {
            let err =
                crate::cloud::CloudError::service("the call", Some(c), "(AWS's message)", None);
            explain(&err, &crate::errors::Context::default())
        })
        .collect();
    let text = match args.format {
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&explained).expect("serializes")
        ),
        Format::Text => explained.iter().map(render).collect::<Vec<_>>().join("\n"),
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

pub fn validate_command(args: &ValidateArgs) -> Result<ExitCode, Failure> {
    let m = manifest::load(&args.file)?;
    let text = match args.format {
        Format::Text => format!(
            "{}: valid — fleet {}, {} workspace{} from template {} ({})\n",
            args.file.display(),
            m.name,
            m.workspaces.len(),
            if m.workspaces.len() == 1 { "" } else { "s" },
            m.template.name,
            m.template.instance_type
        ),
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&m).expect("serializes")
        ),
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

//! Commands that read no AWS state: validate, schema, errors, completion, man, version.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{Cli, Failure, Format, Refusal, print};
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
pub struct VersionArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// What `prism --version` says: the version, the git commit and the build date.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PRISM_GIT_COMMIT"),
    " ",
    env!("PRISM_BUILD_DATE"),
    ")"
);

#[derive(Debug, serde::Serialize)]
struct BuildInfo {
    version: &'static str,
    commit: &'static str,
    build_date: &'static str,
    target: &'static str,
    rustc: &'static str,
    aws_sdk: std::collections::BTreeMap<&'static str, &'static str>,
}

fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("PRISM_GIT_COMMIT"),
        build_date: env!("PRISM_BUILD_DATE"),
        target: env!("PRISM_TARGET"),
        rustc: env!("PRISM_RUSTC"),
        aws_sdk: env!("PRISM_AWS_SDK_VERSIONS")
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect(),
    }
}

/// `prism version`: the `--version` line, or as JSON with the AWS SDK versions.
pub fn version_command(args: &VersionArgs) -> Result<ExitCode, Failure> {
    let text = match args.format {
        Format::Text => format!("prism {VERSION}\n"),
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&build_info()).expect("serializes")
        ),
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ErrorsArgs {
    /// An AWS error code, e.g. VcpuLimitExceeded; all of them when left out.
    #[arg(add = clap_complete::engine::ArgValueCandidates::new(super::complete::error_codes))]
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
            std::fs::create_dir_all(dir).map_err(Failure::file(dir))?;
            clap_mangen::generate_to(cmd, dir).map_err(Failure::file(dir))?;
            say!("Wrote the man pages to {}", dir.display());
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
    use crate::errors::{CATALOGUE, Entry, render};
    if args.markdown {
        print(&crate::errors::markdown())?;
        return Ok(ExitCode::SUCCESS);
    }
    let entries: Vec<(&str, &Entry)> = match &args.code {
        Some(c) => vec![find_entry(c)?],
        None => CATALOGUE.iter().map(|e| (e.codes[0], e)).collect(),
    };
    let explained: Vec<_> = entries.iter().map(|(c, e)| describe(c, e)).collect();
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

/// The catalogue entry of `code`, whatever its case; an unknown code names the closest.
fn find_entry(code: &str) -> Result<(&'static str, &'static crate::errors::Entry), Failure> {
    let all = || {
        crate::errors::CATALOGUE
            .iter()
            .flat_map(|e| e.codes.iter().map(move |c| (*c, e)))
    };
    if let Some(found) = all().find(|(c, _)| c.eq_ignore_ascii_case(code)) {
        return Ok(found);
    }
    let wanted = code.to_ascii_lowercase();
    let mut near: Vec<(usize, &str)> = all()
        .map(|(c, _)| {
            let lower = c.to_ascii_lowercase();
            let d = if lower.starts_with(&wanted) || lower.contains(&wanted) {
                0
            } else {
                strsim::damerau_levenshtein(&wanted, &lower)
            };
            (d, c)
        })
        .collect();
    near.sort();
    let closest: Vec<String> = near.iter().take(3).map(|(_, c)| format!("`{c}`")).collect();
    Err(Failure::Refused(
        Refusal::NotFound,
        format!(
            "`{code}` is not an error code prism knows; the closest are {}. `prism errors` lists them all",
            closest.join(", ")
        ),
    ))
}

/// An entry explained in general, for `prism errors`: with no situation at hand, the
/// values the texts would be filled with are left out or named in general words, so no
/// placeholder reaches the reader.
fn describe(code: &str, e: &crate::errors::Entry) -> crate::errors::Explained {
    let general = |text: &str| {
        let mut t = text.to_string();
        for (from, to) in [
            (" ({usage}/{limit} vCPUs used)", ""),
            (": {message}", ""),
            ("\n{message}", ""),
            (
                "AWS has {message} in {region}.",
                "AWS has no such request in the region.",
            ),
            ("{message}", "AWS's message"),
            ("the {operation} ", "the "),
            ("many {operation} ", "many "),
            ("its {operation} ", "its "),
            ("answered {operation} ", "answered "),
            ("allows {operation}", "allows the action"),
            ("The {operation} call", "The call"),
            ("{operation}", "this action"),
            ("{region}", "the region"),
            ("in {zone}", "in an availability zone"),
            ("{zone}", "the availability zone"),
            (
                "enough {instance_type} capacity",
                "capacity of the instance type",
            ),
            ("{instance_type}'s", "the instance type's"),
            ("{instance_type}", "the instance type"),
            ("{quota}", "on-demand-vcpus"),
            ("{desired_value}", "N"),
            ("{limit}", "the limit"),
            ("{usage}", "the usage"),
        ] {
            t = t.replace(from, to);
        }
        t
    };
    crate::errors::Explained {
        code: code.to_string(),
        title: general(e.title),
        what_happened: general(e.what_happened),
        what_prism_does: general(e.what_prism_does),
        what_you_can_do: general(e.what_you_can_do),
    }
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

#[cfg(test)]
mod tests {
    use super::{describe, find_entry};

    /// No entry, explained with no situation at hand, shows a placeholder or an
    /// unknown value.
    #[test]
    fn every_entry_reads_well_without_context() {
        let placeholders = [
            "{region}",
            "{zone}",
            "{instance_type}",
            "{limit}",
            "{usage}",
            "{quota}",
            "{desired_value}",
            "{operation}",
            "{message}",
            "?/?",
            "the call requests",
            ": \n",
        ];
        for entry in crate::errors::CATALOGUE {
            for code in entry.codes {
                let e = describe(code, entry);
                let text = crate::errors::render(&e);
                for p in placeholders {
                    assert!(!text.contains(p), "{code} shows `{p}`:\n{text}");
                }
                for line in text.lines() {
                    assert!(
                        !line.ends_with(": "),
                        "{code}: a line ends unfinished:\n{text}"
                    );
                }
            }
        }
    }

    #[test]
    fn lookups_ignore_case_and_unknown_codes_name_the_closest() {
        assert_eq!(
            find_entry("vcpulimitexceeded").unwrap().0,
            "VcpuLimitExceeded"
        );
        let err = find_entry("VcpuLimit").unwrap_err().to_string();
        assert!(err.contains("`VcpuLimitExceeded`"), "{err}");
        let err = find_entry("NoSuchThing").unwrap_err().to_string();
        assert!(err.contains("not an error code prism knows"), "{err}");
    }
}

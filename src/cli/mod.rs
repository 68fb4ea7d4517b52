//! The command line: clap definitions, dispatch, and how results reach the terminal.

/// `eprintln!` that survives a closed stderr: what cannot be said is dropped, and the
/// command goes on (`eprintln!` would panic).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::to_stderr(&format!("{}\n", format_args!($($arg)*)))
    };
}

mod apply_cmd;
mod complete;
mod destroy_cmd;
mod fleet_cmd;
mod logging;
mod plan_cmd;
pub mod progress;
mod quota_cmd;
mod reference;
mod report;
mod serve_cmd;
mod storage_cmd;
mod store_cmd;
mod template_cmd;
mod watch_cmd;
pub(crate) mod workspace_cmd;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cloud::aws::{AwsCloud, ConnectError};
use crate::cloud::settings::{Connection, Requested, Source};
use crate::engine::Report;
use crate::engine::gate::{Ask, Gate};
use crate::engine::launch_notes::LaunchNotes;
use crate::engine::{Canceller, Engine, Job, RunOptions};
use crate::manifest::{self, Manifest};
use crate::plan;

pub use plan_cmd::PlanArgs;
pub use reference::{
    CompletionArgs, CompletionShell, ErrorsArgs, ManArgs, SchemaArgs, SchemaDocument, ValidateArgs,
    VersionArgs,
};
pub use report::{Failure, Refusal, render_problems};

/// Keep fleets of EC2 research workspaces in the state a manifest declares.
#[derive(Debug, Parser)]
#[command(
    name = "prism",
    version = reference::VERSION,
    propagate_version = true,
    max_term_width = 100,
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The exit codes of every command, at the end of `prism --help`, the man page and
/// docs/cli.md. Lines under 90 columns, so that help does not rewrap them.
const EXIT_CODES: &str = "\
Exit codes:

* 0 — done: the command did what it was asked, or there was nothing to do; `plan` made
  the plan (with `--detailed-exitcode`: and it has no changes); `apply --dry-run` showed
  it; `watch` and `serve` were stopped by Ctrl-C or SIGTERM. A closed stdout
  (`prism … | head`) ends the output, not the command: the code stays the command's own.
* 1 — failed: an invalid manifest, file or setting, a failed AWS call, a refusal (a name
  that does not exist, a stale or unreadable plan, no confirmation), an `apply`, a
  `destroy` or a `workspace` change that did not complete every action (the first Ctrl-C
  lets the calls in flight finish, then exits 1; `destroy --snapshot` keeps a workspace
  whose snapshot failed), or a `watch --once` pass that left the fleet unlike the
  manifest (an action failed, or deletions were held back).
* 2 — a usage error: an unknown flag, a missing argument or a value that cannot be used
  (clap's message), or a flag the command needs (`storage create --type`). With
  `plan --detailed-exitcode`, 2 means the plan has changes and nothing else: a usage
  error then exits 1.
* 130 — a second Ctrl-C stopped `apply`, `destroy` or a `workspace` change at once.";

/// Flags every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// AWS region; overrides the manifest's `region` and the AWS configuration.
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// AWS profile; overrides the manifest's `account`.
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Send AWS calls to this endpoint (e.g. a local emulator).
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// More detail on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less output: no plan and no progress lines, only failures and the summary.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

impl GlobalArgs {
    /// How progress is shown for `format` on this terminal and with these flags.
    pub fn progress_mode(&self, format: Format) -> progress::Mode {
        use progress::Mode;
        use std::io::IsTerminal;
        match format {
            Format::Json => Mode::Json,
            Format::Text if self.quiet => Mode::Quiet,
            Format::Text if std::io::stdout().is_terminal() => Mode::Terminal,
            Format::Text => Mode::Lines,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what apply would change, and whether it fits the account's quotas.
    Plan(PlanArgs),
    /// Make the account match the manifest (or carry out a saved plan).
    Apply(apply_cmd::ApplyArgs),
    /// Delete every workspace of a manifest's fleet, optionally keeping a snapshot of
    /// each one's disks (the end of a term).
    Destroy(destroy_cmd::DestroyArgs),
    /// Hand a fleet over to a manifest: the one manifest that manages it.
    Fleet(fleet_cmd::FleetArgs),
    /// Check a manifest without calling AWS.
    Validate(ValidateArgs),
    /// Keep the fleet as the manifest says: on every edit, on drift, forever.
    Watch(watch_cmd::WatchArgs),
    /// List, show, start, stop and delete workspaces of any fleet.
    Workspace(workspace_cmd::WorkspaceArgs),
    /// EBS volumes and EFS file systems: list, create, delete.
    Storage(storage_cmd::StorageArgs),
    /// List and show the templates of a manifest or a templates file.
    Template(template_cmd::TemplateArgs),
    /// Show the account's quotas, request increases, list alerts.
    Quota(quota_cmd::QuotaArgs),
    /// Serve the bulk-launch HTTP API on this machine.
    Serve(serve_cmd::ServeArgs),
    /// Set up the DynamoDB table that replicas on several machines share.
    Store(store_cmd::StoreArgs),
    /// Print the shell completion script (bash, zsh, fish, powershell, elvish).
    Completion(CompletionArgs),
    /// Print prism's man page, or write one page per command into a folder.
    Man(ManArgs),
    /// Explain an AWS error code, or list every error prism knows.
    Errors(ErrorsArgs),
    /// Print the version, git commit and build date (as JSON: with the AWS SDK versions).
    Version(VersionArgs),
    /// Deprecated: `prism workspace create --template TEMPLATE NAME…`.
    #[command(hide = true)]
    Launch(LaunchArgs),
    /// Deprecated: `prism storage … --type ebs`.
    #[command(hide = true)]
    Volume(storage_cmd::StorageArgs),
    /// Deprecated: `prism workspace list`.
    #[command(hide = true)]
    List(workspace_cmd::ListArgs),
    /// Deprecated: `prism workspace start`.
    #[command(hide = true)]
    Start(workspace_cmd::ChangeArgs),
    /// Deprecated: `prism workspace stop`.
    #[command(hide = true)]
    Stop(workspace_cmd::ChangeArgs),
    /// Deprecated: `prism workspace delete`.
    #[command(hide = true)]
    Delete(workspace_cmd::ChangeArgs),
    /// Deprecated: `prism workspace hibernate`.
    #[command(hide = true)]
    Hibernate(workspace_cmd::ChangeArgs),
    /// Deprecated: `prism workspace resume`.
    #[command(hide = true)]
    Resume(workspace_cmd::ChangeArgs),
    /// Print the JSON Schema of manifests (or of templates files), for editors and CI.
    Schema(SchemaArgs),
}

/// Whether the command was asked for JSON (`--format json` on the command that runs),
/// so that its failures are JSON too.
fn wants_json(matches: &clap::ArgMatches) -> bool {
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    m.ids().any(|id| id.as_str() == "format")
        && m.try_get_raw("format")
            .ok()
            .flatten()
            .is_some_and(|mut v| v.any(|v| v == "json"))
}

/// Output format of a listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    #[default]
    Table,
    Json,
    Yaml,
}

impl ListFormat {
    /// `items` as JSON or YAML; None for a table, which the caller draws.
    pub fn encode<T: serde::Serialize>(self, items: &T) -> Option<String> {
        match self {
            ListFormat::Table => None,
            ListFormat::Json => Some(format!(
                "{}\n",
                serde_json::to_string_pretty(items).expect("serializes")
            )),
            ListFormat::Yaml => Some(serde_yaml::to_string(items).expect("serializes")),
        }
    }
}

/// Output format of a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// The legacy `prism launch TEMPLATE NAME…`.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The template to launch from.
    pub template: String,
    /// Names of the new workspaces.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// The manifest or templates file that defines the template.
    #[arg(short, long, value_name = "FILE")]
    pub file: PathBuf,
    /// The fleet the workspaces join.
    #[arg(long, default_value = "workspaces")]
    pub fleet: String,
    /// Project (tag prism:project); the fleet's name when left out.
    #[arg(long)]
    pub project: Option<String>,
    /// The same --yes, --dry-run and --format as `workspace create`.
    #[command(flatten)]
    pub act: workspace_cmd::ActArgs,
}

/// Parses the arguments, runs the command, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    std::panic::set_hook(Box::new(report::bug));
    unset_empty_env();
    // A shell asking for completions (COMPLETE=bash …) is answered here, and exits.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    let detailed = detailed_exitcode(std::env::args_os());
    let parsed = <Cli as clap::CommandFactory>::command()
        .try_get_matches()
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m).map(|cli| (m, cli)));
    let (matches, cli) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return exit_code(u8::try_from(e.exit_code()).unwrap_or(1), detailed);
        }
    };
    endpoint_for_roles(&cli.global);
    let service = match &cli.command {
        Command::Watch(w) => Some(w.log_format),
        Command::Serve(s) => Some(s.log_format),
        _ => None,
    };
    logging::init(
        cli.global.verbose,
        service.unwrap_or_default(),
        service.is_some(),
    );
    let json = wants_json(&matches);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return exit_code(report::fail(&Failure::Io(e), json), detailed),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(failure) => exit_code(report::fail(&failure, json), detailed),
    }
}

/// Whether the command line asks for `--detailed-exitcode` (before a `--`, after which
/// words are values). Read from the raw words, so that it holds even for a command
/// line clap cannot parse.
fn detailed_exitcode(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--detailed-exitcode")
}

/// The exit code for a failure's `code`: with `--detailed-exitcode`, 2 says that the
/// plan has changes, so a usage error (2 otherwise, as clap's own) exits 1.
fn exit_code(code: u8, detailed: bool) -> ExitCode {
    ExitCode::from(if detailed && code == 2 { 1 } else { code })
}

/// An empty AWS variable is unset, as for the AWS CLI (`export AWS_ENDPOINT_URL=` leaves
/// it empty); the SDK would take it for a value, and panic on an empty endpoint URL.
fn unset_empty_env() {
    for name in crate::cloud::settings::EMPTY_MEANS_UNSET {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            // SAFETY: called first thing in main, before the runtime or any other
            // thread exists, so nothing reads the environment concurrently.
            unsafe { std::env::remove_var(name) };
        }
    }
}

/// Sends the STS calls that assume a profile's role (`role_arn`) to `--endpoint-url`
/// too. The SDK makes that client from the environment and the profile alone, so
/// without this an emulator's profile would ask AWS's own STS, with the emulator's
/// keys. `AWS_ENDPOINT_URL_STS`, when set, is left as it is.
fn endpoint_for_roles(global: &GlobalArgs) {
    let Some(url) = global
        .endpoint_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    else {
        return;
    };
    if std::env::var_os("AWS_ENDPOINT_URL_STS").is_none() {
        // SAFETY: called in main before the runtime or any other thread exists, so
        // nothing reads the environment concurrently.
        unsafe { std::env::set_var("AWS_ENDPOINT_URL_STS", url.trim()) };
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Plan(args) => plan_cmd::plan_command(&cli.global, &args).await,
        Command::Apply(args) => apply_cmd::run(&cli.global, &args).await,
        Command::Validate(args) => reference::validate_command(&args),
        Command::Errors(args) => reference::errors_command(&args),
        Command::Completion(args) => reference::completion_command(&args),
        Command::Man(args) => reference::man_command(&args),
        Command::Version(args) => reference::version_command(&args),
        Command::Quota(args) => quota_cmd::run(&cli.global, &args).await,
        Command::Watch(args) => watch_cmd::run(&cli.global, &args).await,
        Command::Workspace(args) => workspace_cmd::run(&cli.global, &args).await,
        Command::Destroy(args) => destroy_cmd::run(&cli.global, &args).await,
        Command::Fleet(args) => fleet_cmd::run(&cli.global, &args).await,
        Command::Template(args) => template_cmd::run(&args),
        Command::Serve(args) => serve_cmd::run(&cli.global, &args).await,
        Command::Store(args) => store_cmd::run(&cli.global, &args).await,
        Command::Storage(args) => storage_cmd::run(&cli.global, &args, None).await,
        Command::Volume(args) => {
            deprecated("volume", "storage … --type ebs");
            storage_cmd::run(&cli.global, &args, Some(storage_cmd::StorageType::Ebs)).await
        }
        Command::Launch(args) => {
            deprecated("launch", "workspace create --template TEMPLATE");
            let create = workspace_cmd::CreateArgs {
                names: args.names,
                template: args.template,
                file: args.file,
                fleet: args.fleet,
                project: args.project,
                from_snapshot: None,
                act: args.act,
            };
            workspace_cmd::create(&cli.global, &create).await
        }
        Command::List(args) => {
            deprecated("list", "workspace list");
            let cloud = connect_to(&cli.global, None).await?;
            workspace_cmd::list(&cloud, &args, std::time::SystemTime::now()).await
        }
        Command::Start(args) => {
            legacy_change(&cli.global, "start", plan::ActionKind::Start, &args).await
        }
        Command::Stop(args) => {
            legacy_change(&cli.global, "stop", plan::ActionKind::Stop, &args).await
        }
        Command::Hibernate(args) => {
            legacy_change(&cli.global, "hibernate", plan::ActionKind::Hibernate, &args).await
        }
        Command::Resume(args) => {
            legacy_change(&cli.global, "resume", plan::ActionKind::Start, &args).await
        }
        Command::Delete(args) => {
            legacy_change(&cli.global, "delete", plan::ActionKind::Delete, &args).await
        }
        Command::Schema(args) => {
            let schema = match args.document {
                SchemaDocument::Manifest => manifest::schema_json(),
                SchemaDocument::Templates => manifest::templates_schema_json(),
            };
            let schema = serde_json::to_string_pretty(schema).expect("schema serializes");
            print(&format!("{schema}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes `text` on stdout. A closed stdout (`prism … | head`) ends the output, not the
/// command: the rest is dropped, and the command finishes with its own exit code.
fn print(text: &str) -> Result<(), Failure> {
    let mut out = anstream::stdout();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written.map_err(Failure::Io),
    }
}

/// Writes `text` on stderr, dropping it when stderr is closed (see `say!`).
pub(crate) fn to_stderr(text: &str) {
    let mut err = anstream::stderr();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// The one line a legacy command prints before doing what its new form does.
fn deprecated(old: &str, new: &str) {
    say!("warning: `prism {old}` is deprecated; use `prism {new}` (it works the same)");
}

async fn legacy_change(
    global: &GlobalArgs,
    verb: &str,
    kind: plan::ActionKind,
    args: &workspace_cmd::ChangeArgs,
) -> Result<ExitCode, Failure> {
    deprecated(verb, &format!("workspace {verb}"));
    let cloud = connect_to(global, None).await?;
    workspace_cmd::change(global, std::sync::Arc::new(cloud), kind, verb, args).await
}

/// Binds a `--metrics-listen` address (checked for loopback by the caller).
async fn metrics_listener(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Failure::Refused(
            Refusal::Unavailable,
            format!("cannot serve metrics on {addr}: {e}"),
        )
    })
}

/// Connects to the account and region the flags, else the manifest (`account`,
/// `region`), else the AWS configuration name. A manifest's `account` that the AWS
/// configuration does not define is a problem located in the manifest.
pub async fn connect(global: &GlobalArgs, manifest: &Manifest) -> Result<AwsCloud, Failure> {
    if global.profile.is_none()
        && let Some(account) = &manifest.account
        && let Err(e) = crate::cloud::settings::profile(account, &Source::ManifestAccount)
    {
        return Err(Failure::Manifest(manifest::problem_after_load(
            manifest,
            "/account",
            "/account",
            e.message,
            "named here",
            Some(
                "`account` names a profile of the AWS configuration (`[profile NAME]` in ~/.aws/config, or the file AWS_CONFIG_FILE names); --profile overrides it for one command".into(),
            ),
        )));
    }
    connect_as(
        global,
        manifest.region.as_deref(),
        manifest.account.as_deref(),
    )
    .await
}

/// Connects to the region the flags name, else `region`, else the AWS configuration's.
/// Every setting is checked before the SDK sees it, and so is prism's settings file.
pub async fn connect_to(global: &GlobalArgs, region: Option<&str>) -> Result<AwsCloud, Failure> {
    connect_as(global, region, None).await
}

/// [`connect_to`], as the profile `account` unless `--profile` names another.
async fn connect_as(
    global: &GlobalArgs,
    region: Option<&str>,
    account: Option<&str>,
) -> Result<AwsCloud, Failure> {
    crate::config::load()?;
    let conn = Connection::resolve(Requested {
        region_flag: global.region.as_deref(),
        manifest_region: region,
        profile_flag: global.profile.as_deref(),
        manifest_account: account,
        endpoint_flag: global.endpoint_url.as_deref(),
    })?;
    AwsCloud::connect(&conn).await.map_err(|e| match e {
        ConnectError::NoRegion => Failure::NoRegion,
        ConnectError::Setting(e) => Failure::Setting(e),
    })
}

/// The notes of where each workspace's latest launch went, kept in a file per account,
/// region and endpoint so that a rerun finds them (see [`crate::engine::memory`]).
pub async fn launch_notes(
    global: &GlobalArgs,
    cloud: &dyn crate::cloud::Cloud,
) -> Arc<LaunchNotes> {
    let account = cloud.account().await.map(|a| a.id);
    let region = cloud.region();
    let endpoint = global.endpoint_url.clone().or_else(|| {
        std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|v| !v.is_empty())
    });
    Arc::new(
        match LaunchNotes::default_file(account.as_deref(), region, endpoint.as_deref()) {
            Some(file) => LaunchNotes::in_file(file),
            None => LaunchNotes::in_memory(),
        },
    )
}

/// Carries out `job` on `engine` with progress shown in `mode`. The first Ctrl-C (or
/// SIGTERM) stops new actions and lets the calls in flight finish; a second Ctrl-C exits
/// at once. `rerun` is the command that finishes an interrupted run.
pub async fn drive(
    engine: &Arc<Engine>,
    job: Job,
    opts: RunOptions,
    mode: progress::Mode,
    rerun: &str,
) -> Report {
    let mut run = engine.run(job, opts);
    let events = run.events();
    let hint = rerun.to_string();
    let renderer = tokio::spawn(async move { progress::render(mode, events, &hint).await });
    let signals = tokio::spawn(interrupts(run.canceller(), rerun.to_string()));
    let report = run.report().await;
    signals.abort();
    let _ = renderer.await;
    report
}

/// The first Ctrl-C (or SIGTERM) cancels the run; a second Ctrl-C exits at once.
async fn interrupts(run: Canceller, rerun: String) {
    stop_signal().await;
    run.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        say!("\nExiting at once; run `{rerun}` again to finish.");
        std::process::exit(130);
    }
}

/// Asks what `gate` asks, on the terminal (refusing without one); true to go ahead.
fn pass_gate(gate: &Gate, deletions: usize) -> Result<bool, Failure> {
    let Some(ask) = gate.ask else {
        return Ok(true);
    };
    let refusal = match ask {
        Ask::Shortfall => Failure::QuotaShortfall,
        Ask::Changes => Failure::Unconfirmed("apply"),
        Ask::Deletion => Failure::Unconfirmed("delete"),
    };
    confirm(&ask.question(deletions), refusal)
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Asks `question` on the terminal; without one, fails with `refusal`.
fn confirm(question: &str, refusal: Failure) -> Result<bool, Failure> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(refusal);
    }
    to_stderr(&format!("\n{question} [y/N] "));
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(Failure::Io)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Names as a list for messages: `a`, `b`, `c`.
fn quoted<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::Cli;

    #[test]
    fn detailed_exitcode_is_read_from_the_raw_words_before_a_double_dash() {
        let asked = |words: &[&str]| super::detailed_exitcode(words.iter().map(Into::into));
        assert!(asked(&[
            "prism",
            "plan",
            "--detailed-exitcode",
            "--formt",
            "json"
        ]));
        assert!(asked(&["prism", "plan", "a.yaml", "--detailed-exitcode"]));
        assert!(!asked(&["prism", "plan", "a.yaml", "--formt", "json"]));
        assert!(!asked(&["prism", "plan", "--", "--detailed-exitcode"]));
        assert!(!asked(&["--detailed-exitcode"]), "the program's own name");
    }

    #[test]
    fn the_cli_is_well_formed() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn cli_reference_is_generated_from_the_clap_definitions() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
        let generated = format!(
            "{}\n{}",
            "<!-- Generated from prism's clap definitions; a test keeps it current (PRISM_UPDATE_DOCS=1 cargo test cli_reference). -->",
            clap_markdown::help_markdown::<Cli>()
        );
        if std::env::var_os("PRISM_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "docs/cli.md is out of date: regenerate it with PRISM_UPDATE_DOCS=1 cargo test cli_reference"
        );
    }
}

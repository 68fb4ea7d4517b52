//! How a failed command reaches the user: located manifest diagnostics, AWS errors with
//! what to do about them, and the exit code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::cloud::CloudError;
use crate::manifest::ManifestError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("no AWS region is configured")]
    NoRegion,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A saved plan no longer matches the manifest or the fleet.
    #[error("the saved plan is stale: {0}")]
    StalePlan(String),
    /// Apply needs a yes, and there is no terminal to ask on.
    #[error("refusing to apply without confirmation: there is no terminal to ask on")]
    Unconfirmed,
    #[error("cannot read the saved plan {path}: {message}")]
    BadPlanFile { path: String, message: String },
    #[error(transparent)]
    Io(std::io::Error),
}

/// Whether stderr takes colour: a terminal, and `NO_COLOR` unset.
fn stderr_color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Renders every problem of a manifest, each with its file:line:column and source line.
pub fn render_problems(err: &ManifestError, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_links(false)
        .with_width(100);
    let mut out = String::new();
    for p in err.problems() {
        // A compiler-style first line (file:line:column: message), then miette's
        // snippet of the source with the label and the hint.
        out.push_str(&format!(
            "{}:{}:{}: error: {}\n",
            p.file, p.line, p.column, p.message
        ));
        let mut rendered = String::new();
        let _ = handler.render_report(&mut rendered, p);
        let snippet = rendered
            .find('╭')
            .map_or(0, |i| rendered[..i].rfind('\n').map_or(0, |n| n + 1));
        out.push_str(&rendered[snippet..]);
        out.push('\n');
    }
    out.push_str(&format!("Error: {err}; nothing was sent to AWS.\n"));
    out
}

fn cloud_hint(e: &CloudError) -> &'static str {
    match (e.code.as_deref(), e.status) {
        (None, None) if e.message.contains("credentials") => {
            "prism found no AWS credentials: run `aws configure`, set AWS_PROFILE, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        }
        (None, None) => {
            "prism could not reach AWS: check the network, --endpoint-url / AWS_ENDPOINT_URL, and the region name"
        }
        (Some("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException"), _) => {
            "the AWS identity in use lacks a permission this command needs; see docs/plan.md for the policy"
        }
        (
            Some("AuthFailure" | "InvalidClientTokenId" | "SignatureDoesNotMatch" | "ExpiredToken"),
            _,
        ) => {
            "AWS did not accept the credentials: refresh them (aws sso login, new keys) and try again"
        }
        _ => "nothing was changed; run the command again, or with -v for detail",
    }
}

/// Prints `failure` on stderr and returns the exit code for it (1; 0 for a closed pipe).
pub fn fail(failure: &Failure) -> ExitCode {
    if let Failure::Io(e) = failure
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        return ExitCode::SUCCESS;
    }
    let text = match failure {
        Failure::Manifest(e @ ManifestError::Invalid { .. }) => render_problems(e, stderr_color()),
        Failure::Cloud(e) => format!("Error: {e}\n  hint: {}\n", cloud_hint(e)),
        Failure::NoRegion => "Error: no AWS region is configured\n  hint: set `region:` in the manifest, pass --region, or set AWS_REGION\n".to_string(),
        Failure::StalePlan(_) => format!("Error: {failure}\n  hint: nothing was changed; make a new plan with `prism plan FILE --out PLAN.json`, or apply the manifest itself\n"),
        Failure::Unconfirmed => format!("Error: {failure}\n  hint: pass --yes (-y) to apply without asking; nothing was changed\n"),
        other => format!("Error: {other}\n"),
    };
    let _ = std::io::stderr().write_all(text.as_bytes());
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::render_problems;

    #[test]
    fn manifest_diagnostics() {
        let text = "name: Lab_1\nprojct: p\ntemplate: pyton\ncount: 0\nretry: {initial_backoff: soon}\ntemplates:\n  python: {image: ami-1, instance_type: t3.micro}\n";
        let err = crate::manifest::parse(Path::new("lab.yaml"), text).unwrap_err();
        insta::assert_snapshot!(render_problems(&err, false));
    }
}

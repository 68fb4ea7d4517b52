//! `prism quota show|request|alerts`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use comfy_table::{Table, presets::NOTHING};

use super::{Failure, GlobalArgs, ListFormat, Refusal, connect_to, print};
use crate::cloud::Cloud;
use crate::manifest::RetryPolicy;
use crate::quota::request::RequestRow;
use crate::quota::usage::{Alert, QuotaRow, survey};
use crate::quota::{self, QuotaClass};

#[derive(Debug, Args)]
pub struct QuotaArgs {
    #[command(subcommand)]
    pub command: QuotaCommand,
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// The account's EC2 vCPU, Spot and EBS gp3 quotas with their usage.
    Show(FormatArgs),
    /// Ask AWS for a higher quota, or follow requests (`show ID`, `list`).
    Request(RequestArgs),
    /// Quotas over 50 % (warning) and 80 % (critical), with what to do.
    Alerts(FormatArgs),
}

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RequestArgs {
    #[command(subcommand)]
    pub action: Option<RequestAction>,
    /// on-demand-vcpus, gpu-vcpus, p-vcpus, spot-vcpus, ebs-gp3-tib, … or a quota code.
    #[arg(long, required = true, value_name = "NAME", add = clap_complete::engine::ArgValueCandidates::new(super::complete::quotas))]
    pub quota: Option<String>,
    /// The new value wanted (vCPUs, or TiB for EBS).
    #[arg(long, required = true, value_name = "N")]
    pub desired_value: Option<f64>,
    /// Why: shown back for your records and any AWS support case (the API takes none).
    #[arg(long)]
    pub reason: Option<String>,
    /// Show what would be asked, without asking.
    #[arg(long)]
    pub dry_run: bool,
    /// The manifest whose shortfall this request is for (as `prism plan` suggests):
    /// also prints how to let prism launch what did not fit once the request is approved.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

#[derive(Debug, Subcommand)]
pub enum RequestAction {
    /// One request's status.
    Show {
        /// The request id printed by `prism quota request`.
        id: String,
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
    /// Requests for EC2 and EBS quotas, newest first.
    List {
        /// Only requests in this status.
        #[arg(long, value_parser = ["PENDING", "CASE_OPENED", "APPROVED", "DENIED", "CASE_CLOSED", "NOT_APPROVED", "INVALID_REQUEST"])]
        status: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
}

pub async fn run(global: &GlobalArgs, args: &QuotaArgs) -> Result<ExitCode, Failure> {
    let cloud = connect_to(global, None).await?;
    let region = cloud.region().to_string();
    let aws = |e| Failure::aws(e, &region);
    let policy = RetryPolicy::default();
    match &args.command {
        QuotaCommand::Show(a) => {
            let rows = survey(&cloud, &policy).await.map_err(aws)?;
            let place = match cloud.account().await {
                Some(account) => format!("{region}, account {account}"),
                None => region.clone(),
            };
            print(
                &a.format
                    .encode(&rows)
                    .unwrap_or_else(|| show_text(&place, &rows)),
            )?;
        }
        QuotaCommand::Alerts(a) => {
            let rows = survey(&cloud, &policy).await.map_err(aws)?;
            let alerts = quota::usage::alerts(&rows);
            print(
                &a.format
                    .encode(&alerts)
                    .unwrap_or_else(|| alerts_text(&region, &alerts)),
            )?;
        }
        QuotaCommand::Request(r) => match &r.action {
            Some(RequestAction::Show { id, format }) => {
                let req = RequestRow::from(&cloud.get_quota_request(id).await.map_err(aws)?);
                print(&format.encode(&req).unwrap_or_else(|| request_text(&req)))?;
            }
            Some(RequestAction::List { status, format }) => {
                let rows = quota::request::list(&cloud, status.as_deref())
                    .await
                    .map_err(aws)?;
                print(&format.encode(&rows).unwrap_or_else(|| list_text(&rows)))?;
            }
            None => return request(&cloud, r, &policy).await,
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn number(v: Option<f64>) -> String {
    match v {
        None => "unknown".into(),
        Some(v) if v.fract() == 0.0 => format!("{v}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The quotas of `place`: the region, and the account when it is known.
fn show_text(place: &str, rows: &[QuotaRow]) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_header(["", "QUOTA", "CODE", "USED", "LIMIT", "USE", "UNIT"]);
    for r in rows {
        table.add_row([
            r.status.mark().to_string(),
            r.name.clone(),
            r.code.clone(),
            number(r.usage),
            number(r.limit),
            r.percent.map_or("-".into(), |p| format!("{p:.0}%")),
            r.unit.clone(),
        ]);
    }
    let mut out = format!("📊 AWS Service Quotas - {place}\n\n{table}\n\n");
    out.push_str("Legend: ✅ Healthy (<50%)  ⚠ Warning (50-80%)  ❌ Critical (>80%)  ? unknown\n");
    let notes: Vec<String> = rows
        .iter()
        .filter_map(|r| r.note.as_ref().map(|n| format!("? {}: {n}", r.name)))
        .collect();
    let recs: Vec<String> = rows.iter().filter_map(QuotaRow::recommendation).collect();
    if !recs.is_empty() {
        out.push_str("\nRecommendations:\n");
        for (r, row) in recs
            .iter()
            .zip(rows.iter().filter(|r| r.recommendation().is_some()))
        {
            out.push_str(&format!("{} {r}\n", row.status.mark()));
        }
    }
    if !notes.is_empty() {
        out.push_str("\nUnknown values:\n");
        for n in notes {
            out.push_str(&format!("{n}\n"));
        }
    }
    out
}

fn alerts_text(region: &str, alerts: &[Alert]) -> String {
    if alerts.is_empty() {
        return format!("✅ No quota in {region} is over 50% used.\n");
    }
    let mut out = String::new();
    for a in alerts {
        let mark = if a.severity == "critical" {
            "❌"
        } else {
            "⚠"
        };
        out.push_str(&format!(
            "{mark} {} [{}]: {}/{} ({})\n   {}\n",
            a.name,
            a.code,
            number(Some(a.usage)),
            number(Some(a.limit)),
            a.percent.map_or("-".into(), |p| format!("{p:.0}%")),
            a.recommendation
        ));
    }
    out
}

fn request_text(r: &RequestRow) -> String {
    format!(
        "Request ID: {}\nQuota: {} [{}/{}]\nDesired value: {}\nStatus: {}\nSubmitted: {}\nLast updated: {}\nSupport case: {}\n",
        r.request_id,
        r.name,
        r.service,
        r.code,
        number(Some(r.desired_value)),
        r.status,
        r.submitted.as_deref().unwrap_or("-"),
        r.last_updated.as_deref().unwrap_or("-"),
        r.support_case.as_deref().unwrap_or("-")
    )
}

fn list_text(all: &[RequestRow]) -> String {
    if all.is_empty() {
        return "No quota increase requests.\n".into();
    }
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header([
        "REQUEST ID",
        "QUOTA",
        "CODE",
        "DESIRED",
        "STATUS",
        "SUBMITTED",
        "LAST UPDATED",
        "SUPPORT CASE",
    ]);
    for r in all {
        table.add_row([
            r.request_id.clone(),
            r.name.clone(),
            r.code.clone(),
            number(Some(r.desired_value)),
            r.status.clone(),
            r.submitted.clone().unwrap_or_else(|| "-".into()),
            r.last_updated.clone().unwrap_or_else(|| "-".into()),
            r.support_case.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    format!("{table}\n")
}

/// How to let prism launch a fleet's waiting workspaces by itself once a request is
/// approved.
fn continue_text(manifest: &str) -> String {
    format!(
        "\nLet prism launch what did not fit by itself, as soon as the quota has room:\n  prism watch {manifest}\n      (keeps those workspaces waiting; reads the quota again about once a minute)\n  prism apply {manifest} --yes --wait-for-quota 72h\n      (one apply that launches what fits now, then waits up to 72 hours for the rest)\n"
    )
}

fn class(name: &str) -> Result<&'static QuotaClass, Failure> {
    quota::by_name(name).ok_or_else(|| {
        let names: Vec<&str> = quota::all().map(|q| q.friendly).collect();
        Failure::Refused(
            Refusal::NotFound,
            format!(
                "unknown quota `{name}`; use one of {} or a quota code such as L-1216C47A",
                names.join(", ")
            ),
        )
    })
}

async fn request(
    cloud: &dyn Cloud,
    r: &RequestArgs,
    policy: &RetryPolicy,
) -> Result<ExitCode, Failure> {
    let class = class(r.quota.as_deref().unwrap_or_default())?;
    let desired = r.desired_value.unwrap_or_default();
    let region = cloud.region().to_string();
    let current = quota::request::current_below(cloud, class, desired, policy)
        .await
        .map_err(|e| {
            let kind = match e {
                quota::request::NotAsked::Unreadable(_) => Refusal::Unavailable,
                quota::request::NotAsked::NotAbove { .. } => Refusal::InvalidValue,
            };
            Failure::Refused(kind, e.to_string())
        })?;
    let mut out = format!(
        "{}\n\nQuota: {} [{}] in {region}\nCurrent quota: {} {unit}\nDesired quota: {} {unit}\nIncrease: {} {unit}{}\n",
        if r.dry_run {
            "Dry run: nothing is sent to AWS."
        } else {
            "Requesting quota increase..."
        },
        class.name,
        class.code,
        number(Some(current)),
        number(Some(desired)),
        number(Some(desired - current)),
        if current > 0.0 {
            format!(" ({:.0}%)", (desired - current) / current * 100.0)
        } else {
            String::new()
        },
        unit = class.unit,
    );
    if let Some(reason) = &r.reason {
        out.push_str(&format!("Reason: {reason}\n  (kept for your records and any AWS support case: the Service Quotas API takes no reason)\n"));
    }
    if r.dry_run {
        if let Some(json) = r.format.encode(&serde_json::json!({
            "dry_run": true, "service": class.service, "code": class.code, "current_value": current, "desired_value": desired, "region": region,
        })) {
            out = json;
        }
        print(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let req = RequestRow::from(
        &cloud
            .request_quota_increase(class.service, class.code, desired)
            .await
            .map_err(|e| Failure::aws(e, &region))?,
    );
    if let Some(json) = r.format.encode(&req) {
        print(&json)?;
        return Ok(ExitCode::SUCCESS);
    }
    out.push_str(&format!(
        "\nRequest submitted successfully!\nRequest ID: {}\nStatus: {}\nTypical approval time: 1-2 business days\n\nTrack status:\n  prism quota request show {}\n\nOr via AWS Console:\n  https://console.aws.amazon.com/servicequotas/home/requests\n",
        req.request_id, req.status, req.request_id
    ));
    if let Some(file) = &r.manifest {
        out.push_str(&continue_text(&file.display().to_string()));
    }
    print(&out)?;
    Ok(ExitCode::SUCCESS)
}

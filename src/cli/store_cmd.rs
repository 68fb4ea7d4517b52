//! `prism store`: the DynamoDB table replicas share (`--store dynamodb://TABLE`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::{Failure, GlobalArgs, Refusal, connect_to};
use crate::cloud::Cloud;
use crate::cloud::aws::AwsCloud;
use crate::store::dynamo::{DynamoStore, iam_policy};
use crate::store::{LeaseKeeper, StoreUrl};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create the DynamoDB table replicas share (on-demand billing, with a TTL
    /// attribute), unless it exists, and print the IAM policy the replicas need.
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The store: `dynamodb://TABLE`.
    #[arg(value_name = "URL")]
    pub store: StoreUrl,
}

pub async fn run(global: &GlobalArgs, args: &StoreArgs) -> Result<ExitCode, Failure> {
    match &args.command {
        StoreCommand::Init(a) => init(global, a).await,
    }
}

fn unreachable(e: impl std::fmt::Display) -> Failure {
    Failure::Refused(Refusal::Unavailable, e.to_string())
}

async fn init(global: &GlobalArgs, args: &InitArgs) -> Result<ExitCode, Failure> {
    let StoreUrl::DynamoDb { table } = &args.store else {
        return Err(Failure::Refused(
            Refusal::InvalidValue,
            "`files` needs no set-up: each machine keeps its own; name a table, `dynamodb://TABLE`"
                .into(),
        ));
    };
    let aws = connect_to(global, None).await?;
    let account = aws.account_id().await.map_err(unreachable)?;
    let store = DynamoStore::new(aws.sdk_config(), table).map_err(unreachable)?;
    let created = store.init().await.map_err(unreachable)?;
    let region = aws.region();
    let done = if created {
        format!(
            "Created the DynamoDB table {table} in {region} (account {account}): on-demand billing, TTL on `expires`."
        )
    } else {
        format!(
            "The DynamoDB table {table} in {region} (account {account}) is ready: nothing to change."
        )
    };
    super::print(&format!(
        "{done}\n\nRun the replicas with `--store dynamodb://{table}` (or PRISM_STORE). Each needs this IAM policy:\n\n{}\n",
        iam_policy(table, region, &account)
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The lease of `aws`'s account and region in the table `table`, not taken yet.
pub async fn lease_keeper(aws: &AwsCloud, table: &str) -> Result<Arc<LeaseKeeper>, Failure> {
    let account = aws.account_id().await.map_err(unreachable)?;
    let store = DynamoStore::new(aws.sdk_config(), table).map_err(unreachable)?;
    Ok(Arc::new(LeaseKeeper::new(
        Arc::new(store),
        format!("{account}/{}", aws.region()),
    )))
}

//! `kafscale admin ...`: one-shot operations on a distributed cluster's storage (`init`), and
//! the admin HTTP API's client commands (`cluster`, `topics`, `groups`, ... in
//! [`crate::admin_cli`]).
//!
//! `admin init` prepares a new cluster and is safe to repeat: it creates the metadata table if
//! it is missing, fixes the shard count and the metadata layout (an existing cluster keeps its
//! own) and, when asked, creates the S3 bucket. Run it once before the services (e.g. as a
//! Kubernetes Job), or let the services create the table themselves with `--create-tables`.
//! It never switches an existing cluster's layout: the chart runs it before every upgrade,
//! while pods of the old release still serve.
//!
//! `admin switch-to-shard-log` moves an existing cluster to the shard log, once every process
//! runs a release that reads it (it checks the live leases and members and refuses otherwise).

use anyhow::Context;
use kafscale_fetch::{COORDINATOR_MEMBER_KIND, NON_COORDINATOR_MEMBER_KIND};
use kafscale_shared::shards::switch_to_shard_log;
use tokio_util::sync::CancellationToken;

use crate::stores::StorageArgs;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdminCommand {
    /// Create the metadata table and the cluster settings (idempotent).
    Init(InitArgs),
    /// Move an existing cluster to the newest metadata layout, the shard log with short items
    /// (idempotent; refused while a process of an older release is alive).
    SwitchToShardLog(SwitchArgs),
    #[command(flatten)]
    Client(crate::admin_cli::ClientCommand),
}

#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Also create the S3 bucket if it is missing (usually Terraform's job).
    #[arg(long, env = "KAFSCALE_CREATE_BUCKET", default_value_t = false, action = clap::ArgAction::Set)]
    create_bucket: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SwitchArgs {
    #[command(flatten)]
    storage: StorageArgs,
}

pub(crate) async fn run(command: AdminCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    match command {
        AdminCommand::SwitchToShardLog(args) => {
            let stores = args.storage.open().await?;
            let kinds = [COORDINATOR_MEMBER_KIND, NON_COORDINATOR_MEMBER_KIND];
            let settings = switch_to_shard_log(&stores.catalog, Some(&kinds))
                .await
                .with_context(|| {
                    format!(
                        "switching table {} to the shard log",
                        stores.dynamo.table_name()
                    )
                })?;
            println!(
                "kafscale admin switch-to-shard-log: table {} is on the shard log (layout {}, {} shards); \
                 each shard switches when its owner next acquires it",
                stores.dynamo.table_name(),
                settings.layout,
                settings.shard_count
            );
            Ok(())
        }
        AdminCommand::Client(command) => crate::admin_cli::run(command).await,
        AdminCommand::Init(args) => {
            let stores = args.storage.open().await?;
            stores
                .dynamo
                .create_table_if_missing()
                .await
                .with_context(|| format!("creating the table {}", stores.dynamo.table_name()))?;
            if args.create_bucket {
                stores
                    .s3
                    .create_bucket_if_missing()
                    .await
                    .with_context(|| {
                        format!("creating the bucket {}", stores.s3.config().bucket)
                    })?;
            }
            let cluster = args.storage.cluster(&stores, &shutdown).await?;
            println!(
                "kafscale admin init: table {} ready, {} shards, {} layout{}",
                stores.dynamo.table_name(),
                cluster.shard_count,
                if cluster.on_shard_log() {
                    "shard-log"
                } else {
                    "transactions"
                },
                if args.create_bucket {
                    format!(", bucket {} ready", stores.s3.config().bucket)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
    }
}

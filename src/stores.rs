//! The shared storage of distributed mode: segment objects in an S3 bucket, metadata in one
//! DynamoDB table. Every distributed process (ingest, fetch, indexer, admin) opens both from
//! the same flags, so they can never disagree on where the cluster lives.
//!
//! There is deliberately no fallback: if the bucket or table cannot be reached the process
//! reports it (readiness, retriable Kafka errors) instead of quietly using something local.

use std::sync::Arc;

use anyhow::Context;
use kafscale_shared::catalog::Catalog;
use kafscale_shared::meta_store::{DynamoConfig, DynamoMetaStore};
use kafscale_shared::object_store::{ObjectStore, S3Config, S3ObjectStore};
use kafscale_shared::shards::{ClusterSettings, DEFAULT_SHARD_COUNT, load_or_init_cluster};
use tracing::info;

use crate::args::{LayoutArg, SimulatedRequests, SimulationArgs};

/// Where the cluster's data and metadata live. AWS credentials come from the standard chain
/// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profile, web identity, instance metadata).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StorageArgs {
    /// S3 bucket holding every segment object.
    #[arg(long, env = "KAFSCALE_S3_BUCKET")]
    s3_bucket: String,
    /// Endpoint URL of an S3-compatible server (default: AWS).
    #[arg(long, env = "KAFSCALE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Path-style S3 URLs (endpoint/bucket/key), which most S3-compatible servers need.
    #[arg(long, env = "KAFSCALE_S3_PATH_STYLE", default_value_t = false, action = clap::ArgAction::Set)]
    s3_path_style: bool,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "KAFSCALE_S3_REGION")]
    s3_region: Option<String>,
    /// Prefix of every object key, so several clusters can share one bucket (e.g. "prod/").
    #[arg(long, env = "KAFSCALE_S3_PREFIX")]
    s3_prefix: Option<String>,
    /// Endpoint URL of a DynamoDB-compatible server (default: AWS).
    #[arg(long, env = "KAFSCALE_DYNAMODB_ENDPOINT")]
    dynamodb_endpoint: Option<String>,
    /// The metadata table is named "{prefix}kafscale".
    #[arg(long, env = "KAFSCALE_TABLE_PREFIX", default_value = "")]
    table_prefix: String,
    /// Create the metadata table at start-up if it is missing (otherwise `kafscale admin init`
    /// must have created it).
    #[arg(long, env = "KAFSCALE_CREATE_TABLES", default_value_t = false, action = clap::ArgAction::Set)]
    create_tables: bool,
    /// Indexer shards of a new cluster (an existing cluster keeps the count it was created with).
    #[arg(long, env = "KAFSCALE_SHARDS", default_value_t = DEFAULT_SHARD_COUNT)]
    shards: u32,
    /// The metadata layout of a new cluster. An existing cluster keeps its own until
    /// `kafscale admin switch-to-shard-log`.
    #[arg(long, env = "KAFSCALE_INITIAL_LAYOUT", value_enum, default_value_t = LayoutArg::ShardLog)]
    initial_layout: LayoutArg,
    #[command(flatten)]
    simulation: SimulationArgs,
}

/// The opened stores of a distributed process.
pub(crate) struct Stores {
    pub(crate) s3: S3ObjectStore,
    pub(crate) dynamo: DynamoMetaStore,
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) catalog: Arc<Catalog>,
    /// Request counts of simulated latency, if configured (logged at shutdown).
    pub(crate) simulated: SimulatedRequests,
}

impl StorageArgs {
    fn s3_config(&self) -> S3Config {
        let region = self
            .s3_region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".to_string());
        let mut config = S3Config::new(self.s3_bucket.clone(), region);
        config.endpoint = self.s3_endpoint.clone();
        config.path_style = self.s3_path_style;
        config.prefix = self.s3_prefix.clone().filter(|p| !p.is_empty());
        config
    }

    fn dynamo_config(&self) -> DynamoConfig {
        let mut config = DynamoConfig::with_table_prefix(&self.table_prefix);
        config.endpoint = self.dynamodb_endpoint.clone();
        config
    }

    /// Opens both stores (no request is sent yet, except creating the table when
    /// `--create-tables` is set).
    pub(crate) async fn open(&self) -> anyhow::Result<Stores> {
        let s3 = S3ObjectStore::new(self.s3_config())
            .await
            .context("configuring the S3 object store")?;
        let dynamo = DynamoMetaStore::connect(self.dynamo_config())
            .await
            .context("configuring the DynamoDB metadata store")?;
        if self.create_tables {
            dynamo
                .create_table_if_missing()
                .await
                .with_context(|| format!("creating the table {}", dynamo.table_name()))?;
        }
        s3.metrics().export();
        dynamo.metrics().export();
        let (objects, meta, simulated) = self
            .simulation
            .apply(Arc::new(s3.clone()), Arc::new(dynamo.clone()));
        Ok(Stores {
            objects,
            s3,
            dynamo,
            catalog: Arc::new(Catalog::new(meta)),
            simulated,
        })
    }

    /// The cluster settings, created with `--shards` if this is the cluster's first process.
    /// Retries while the store is unreachable, so processes may start before their store.
    pub(crate) async fn cluster(
        &self,
        stores: &Stores,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<ClusterSettings> {
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            let layout = self.initial_layout.layout();
            match load_or_init_cluster(&stores.catalog, self.shards.max(1), layout).await {
                Ok(c) => {
                    info!(
                        shard_count = c.shard_count,
                        layout = c.layout,
                        table = stores.dynamo.table_name(),
                        "cluster settings"
                    );
                    return Ok(c);
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, table = stores.dynamo.table_name(), "metadata store not reachable yet; retrying");
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "reading the cluster settings from table {} (run `kafscale admin init`?)",
                            stores.dynamo.table_name()
                        )
                    });
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => anyhow::bail!("shut down before the metadata store answered"),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
    }
}

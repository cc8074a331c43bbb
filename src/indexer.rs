//! `kafscale indexer`: one replica of the sequencer tier. Replicas share the cluster's fixed
//! shards through leases in the metadata store (an even share each, taken over when a replica
//! stops renewing), and serve `POST /v1/commit` for the shards they own. Every write of an
//! owner is conditioned on its lease, so a replica that was paused past its lease can never
//! write again; it answers "fenced" and the gateway re-resolves the owner. `GET /v1/shards`
//! tells the gateways' admin API each shard's queue depth and recent commit latency here.
//! Replicas also apply retention to the partitions of their shards and, one at a time,
//! collect garbage (segment objects no partition references, orphans). With
//! `--internal-token-file`, commits, DeleteRecords and the watermark feed need the cluster's
//! internal token (see `kafscale_indexer::internal_auth`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kafscale_indexer::http::{commit_routes, watermark_routes};
use kafscale_indexer::internal_auth::require_internal_token;
use kafscale_indexer::status::status_routes;
use kafscale_indexer::{Indexer, IndexerConfig};
use kafscale_shared::watermarks::Watermarks;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::args::{
    InternalTokenArgs, LifecycleArgs, TopicDefaultsArgs, advertised_or_bound, split_host_port,
};
use crate::http::{self, Readiness};
use crate::stores::StorageArgs;
use crate::tls::HttpTlsArgs;

/// Watermark changes kept for fetch gateways that fell behind the feed.
const WATERMARK_JOURNAL_CHANGES: usize = 100_000;

/// Flags of `kafscale indexer`.
#[derive(Debug, clap::Args)]
pub(crate) struct IndexerProcessArgs {
    /// Address of the HTTP listener (commit API, watermark feed, shard status, /healthz,
    /// /readyz, /metrics).
    #[arg(long, env = "KAFSCALE_HTTP_ADDR", default_value = "127.0.0.1:9094")]
    http_addr: std::net::SocketAddr,
    /// host:port at which ingest gateways reach this replica's HTTP listener (e.g. the pod IP);
    /// defaults to the listener's address.
    #[arg(long, env = "KAFSCALE_ADVERTISED_ADDR")]
    advertised_addr: Option<String>,
    /// This replica's name in the leases (default: a fresh random one per start, so a
    /// restarted replica never mistakes an old lease for its own).
    #[arg(long, env = "KAFSCALE_INDEXER_ID")]
    id: Option<String>,
    /// How long a shard lease lasts without renewal (milliseconds); renewed every third of it.
    /// A dead replica's shards move after at most this long.
    #[arg(long, env = "KAFSCALE_LEASE_TTL_MS", default_value_t = 10_000)]
    lease_ttl_ms: u64,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    lifecycle: LifecycleArgs,
    #[command(flatten)]
    topic_defaults: TopicDefaultsArgs,
    #[command(flatten)]
    http_tls: HttpTlsArgs,
    #[command(flatten)]
    internal_token: InternalTokenArgs,
}

pub(crate) async fn run(
    args: IndexerProcessArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(a) = &args.advertised_addr {
        split_host_port(a)?;
    }
    let cluster_defaults = args.topic_defaults.cluster_defaults()?;
    let internal_token = args.internal_token.token()?;
    if internal_token.is_none() {
        warn!(
            "no internal token configured (--internal-token-file or KAFSCALE_INTERNAL_TOKEN): \
             commit, DeleteRecords and watermark-feed endpoints are unauthenticated"
        );
    }
    if args.lease_ttl_ms < 300 {
        anyhow::bail!("--lease-ttl-ms must be at least 300");
    }
    let stores = args.storage.open().await?;
    let cluster = args.storage.cluster(&stores, &shutdown).await?;

    // The listener is bound before the indexer exists because the lease carries its address.
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding http listener {}", args.http_addr))?;
    let http_addr = listener.local_addr()?;
    let owner_addr = advertised_or_bound(args.advertised_addr.as_deref(), http_addr);
    let owner_id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("indexer-{}", uuid::Uuid::new_v4().simple()));
    // Fetch gateways follow this replica's watermark changes (GET /v1/watermarks).
    let watermarks = Arc::new(Watermarks::with_journal(WATERMARK_JOURNAL_CHANGES));
    let indexer = Indexer::new(
        stores.catalog.clone(),
        watermarks.clone(),
        args.lifecycle.indexer_config(IndexerConfig {
            owner_id: owner_id.clone(),
            owner_addr: owner_addr.clone(),
            lease_ttl: Duration::from_millis(args.lease_ttl_ms),
            shard_count: cluster.shard_count,
            shard_log: cluster.on_shard_log(),
            ..IndexerConfig::default()
        })?,
    );
    let ready = Arc::new(Readiness::probing(stores.catalog.store().clone()));
    let (http_addr, http_server) = http::serve_on(
        listener,
        ready.clone(),
        require_internal_token(
            commit_routes(indexer.clone()).merge(watermark_routes(watermarks)),
            internal_token,
        )
        .merge(status_routes(indexer.clone())),
        &args.http_tls,
        shutdown.clone(),
    )?;
    let http_task = tokio::spawn(http_server);
    let lease_task = tokio::spawn(indexer.clone().run_lease_loop(shutdown.clone()));
    let retention_task =
        args.lifecycle
            .spawn_retention(indexer.clone(), cluster_defaults.clone(), &shutdown)?;
    let fold_task = args.lifecycle.spawn_fold(indexer.clone(), &shutdown)?;
    let gc_task = args.lifecycle.spawn_gc(
        stores.catalog.clone(),
        stores.objects.clone(),
        owner_id.clone(),
        &shutdown,
    )?;
    ready.set(true);
    println!("kafscale indexer listening http={http_addr} id={owner_id}");
    info!(%http_addr, %owner_addr, %owner_id, shards = cluster.shard_count, "indexer ready");

    shutdown.cancelled().await;
    ready.set(false);
    info!("shutting down: releasing shard leases");
    crate::drain_within(vec![
        gc_task,
        retention_task,
        fold_task,
        lease_task,
        http_task,
    ])
    .await;
    info!("stopped");
    Ok(())
}

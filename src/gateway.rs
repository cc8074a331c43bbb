//! `kafscale ingest` and `kafscale fetch`: the stateless gateways of distributed mode.
//!
//! Producers bootstrap at the ingest Service and consumers at the fetch Service, so each tier
//! scales on its own traffic. Yet both gateways serve *every* data API, because Kafka clients
//! derive features from the whole ApiVersions table: librdkafka enables message format v2 only
//! if the broker lists Produce v3+ *and* Fetch v4+, so an ingest gateway without Fetch made it
//! fall back to magic-0 messages (and fail idempotent producers). Serving both also means a
//! client that uses one bootstrap address for everything still works. The role only names the
//! process and its ready line; what runs is the same code:
//!
//! - produce: batches buffered into one segment object per flush in S3, committed over HTTP to
//!   the indexers owning the shards ([`RemoteSequencer`]);
//! - fetch: reads through the offset index in DynamoDB to byte ranges in S3; long polls wake
//!   when the indexer that committed announces the new high watermark on its change feed, and
//!   at the latest when the store is re-read (every `--watermark-poll-ms` for partitions that
//!   long polls wait on).

use std::sync::Arc;
use std::time::Duration;

use kafscale_fetch::{FeedFollowerConfig, FetchService, follow_indexer_feeds};
use kafscale_ingest::{RemoteSequencer, RemoteSequencerConfig, SegmentBuffer};
use kafscale_shared::http_client::InternalCalls;
use kafscale_shared::sequencer::Sequencer;
use kafscale_shared::watermarks::Watermarks;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::admin_api::{self, AdminApiArgs, AdminState};
use crate::args::{
    BoundListener, FetchArgs, IngestArgs, InternalTokenArgs, KafkaListenerArgs, TopicDefaultsArgs,
};
use crate::authz::AuthorizerArgs;
use crate::http::{self, Readiness};
use crate::stores::StorageArgs;
use crate::tiers::KafkaTiers;
use crate::tls::InternalTlsArgs;

/// Which tier a gateway process is deployed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GatewayRole {
    Ingest,
    Fetch,
}

impl GatewayRole {
    fn name(self) -> &'static str {
        match self {
            GatewayRole::Ingest => "ingest",
            GatewayRole::Fetch => "fetch",
        }
    }
}

/// Flags of `kafscale ingest` and `kafscale fetch`.
#[derive(Debug, clap::Args)]
pub(crate) struct GatewayArgs {
    #[command(flatten)]
    listener: KafkaListenerArgs,
    #[command(flatten)]
    ingest: IngestArgs,
    #[command(flatten)]
    topic_defaults: TopicDefaultsArgs,
    #[command(flatten)]
    fetch: FetchArgs,
    #[command(flatten)]
    admin: AdminApiArgs,
    #[command(flatten)]
    authorizer: AuthorizerArgs,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    internal_token: InternalTokenArgs,
    #[command(flatten)]
    internal_tls: InternalTlsArgs,
    /// How long one commit may keep looking for a live shard owner (milliseconds; cover the
    /// indexers' lease time, so a failover does not fail produce requests).
    #[arg(long, env = "KAFSCALE_COMMIT_FAILOVER_MS", default_value_t = 30_000)]
    commit_failover_ms: u64,
    /// How often partitions that long polls wait on are re-read from the store, and how old a
    /// known high watermark may be before a fetch reads it again (milliseconds). The indexers'
    /// change feeds usually announce a new watermark much sooner; this bounds the delay when
    /// they do not.
    #[arg(long, env = "KAFSCALE_WATERMARK_POLL_MS", default_value_t = 500)]
    watermark_poll_ms: u64,
}

pub(crate) async fn run(
    role: GatewayRole,
    args: GatewayArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    args.listener.validate()?;
    args.authorizer.validate()?;
    let cluster_defaults = args.ingest.cluster_defaults(&args.topic_defaults)?;
    let internal = InternalCalls {
        token: args.internal_token.token()?,
        tls: args.internal_tls.client_tls()?,
    };
    let stores = args.storage.open().await?;
    let cluster = args.storage.cluster(&stores, &shutdown).await?;
    let buffer = SegmentBuffer::new(args.ingest.config(cluster.shard_count, true)?);
    let sequencer: Arc<dyn Sequencer> = Arc::new(RemoteSequencer::new(
        stores.catalog.clone(),
        RemoteSequencerConfig {
            failover_timeout: Duration::from_millis(args.commit_failover_ms),
            internal: internal.clone(),
            ..RemoteSequencerConfig::default()
        },
    ));
    let poll = Duration::from_millis(args.watermark_poll_ms.max(1));
    let watermarks = Arc::new(Watermarks::new());
    let fetch = FetchService::new(
        stores.catalog.clone(),
        args.fetch.block_cache(stores.objects.clone(), false),
        watermarks.clone(),
        args.fetch.config(Some(poll)),
    );

    let admin = AdminState::new(
        role.name(),
        stores.catalog.clone(),
        cluster.shard_count,
        args.listener.default_partitions,
    );
    let ready = Arc::new(Readiness::probing(stores.catalog.store().clone()));
    let (http_addr, http_server) = http::serve(
        args.listener.http_addr,
        ready.clone(),
        admin_api::router(admin.clone(), args.admin.auth()?),
        &args.listener.http_tls,
        shutdown.clone(),
    )
    .await?;
    let authorizer = args.authorizer.start(&stores.catalog, &shutdown).await?;
    let BoundListener {
        servers,
        kafka_addr,
        advertised,
        topics,
    } = args
        .listener
        .bind(stores.catalog.clone(), "kafscale", &shutdown)
        .await?;
    let running = KafkaTiers {
        buffer,
        fetch: fetch.clone(),
        objects: stores.objects.clone(),
        sequencer,
        groups: args.fetch.group_config(role == GatewayRole::Fetch, None)?,
        authorizer: authorizer.as_ref().map(|(a, _)| a.clone()),
    }
    .start(
        servers,
        topics.with_cluster_defaults(cluster_defaults.clone()),
        &shutdown,
    )
    .await;
    let (fetch_service, group_service) = running.services();
    admin.set_tiers(fetch_service, group_service);
    admin.set_internal_calls(internal.clone());
    let poller = tokio::spawn(fetch.clone().run_store_poller(shutdown.clone()));
    let feeds = tokio::spawn(follow_indexer_feeds(
        stores.catalog.clone(),
        watermarks,
        FeedFollowerConfig {
            internal,
            ..FeedFollowerConfig::default()
        },
        shutdown.clone(),
    ));
    let http_task = tokio::spawn(http_server);
    ready.set(true);
    let role_name = role.name();
    println!("kafscale {role_name} listening kafka={kafka_addr} http={http_addr}");
    info!(role = role_name, %kafka_addr, %http_addr, %advertised, shards = cluster.shard_count, "gateway ready");

    shutdown.cancelled().await;
    ready.set(false);
    info!("shutting down: flushing buffered produce requests");
    let mut others = vec![poller, feeds, http_task];
    others.extend(authorizer.map(|(_, refresh)| refresh));
    running.stop(others).await;
    stores.simulated.log_summary();
    info!("stopped");
    Ok(())
}

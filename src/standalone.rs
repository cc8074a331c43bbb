//! Standalone mode: ingest, indexer and fetch tiers in one process, one Kafka listener serving
//! every API, a local-filesystem object store and an embedded (redb) metadata store under one
//! data directory. The same tier code runs in distributed mode; only the wiring differs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kafscale_fetch::FetchService;
use kafscale_indexer::{Indexer, IndexerConfig};
use kafscale_ingest::SegmentBuffer;
use kafscale_shared::catalog::Catalog;
use kafscale_shared::meta_store::{MetaStore, RedbMetaStore};
use kafscale_shared::metered::{MeteredMetaStore, MeteredObjectStore};
use kafscale_shared::object_store::{LocalFsObjectStore, ObjectStore};
use kafscale_shared::shards::{LAYOUT_NEWEST, load_or_init_cluster, switch_to_shard_log};
use kafscale_shared::watermarks::Watermarks;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin_api::{self, AdminApiArgs, AdminState};
use crate::args::{
    BoundListener, FetchArgs, IngestArgs, KafkaListenerArgs, LayoutArg, LifecycleArgs,
    SimulationArgs, TopicDefaultsArgs,
};
use crate::authz::AuthorizerArgs;
use crate::http::{self, Readiness};
use crate::tiers::KafkaTiers;

/// Flags of `kafscale standalone` (each also read from a `KAFSCALE_*` environment variable).
#[derive(Debug, clap::Args)]
pub(crate) struct StandaloneArgs {
    /// Directory holding the object store (objects/) and the metadata store (meta.redb).
    #[arg(long, env = "KAFSCALE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
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
    /// Indexer shards of a new data directory (an existing one keeps its own count).
    #[arg(long, env = "KAFSCALE_SHARDS", default_value_t = 1)]
    shards: u32,
    /// The metadata layout of a new data directory. With `shard-log`, a data directory of an
    /// earlier release is switched to the shard log at start (this process holds its lock, so
    /// no process of that release can still be using it).
    #[arg(long, env = "KAFSCALE_INITIAL_LAYOUT", value_enum, default_value_t = LayoutArg::ShardLog)]
    initial_layout: LayoutArg,
    #[command(flatten)]
    simulation: SimulationArgs,
    #[command(flatten)]
    lifecycle: LifecycleArgs,
}

/// Runs standalone mode until `shutdown` fires, then flushes and stops.
pub(crate) async fn run(args: StandaloneArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    args.listener.validate()?;
    args.authorizer.validate()?;
    let cluster_defaults = args.ingest.cluster_defaults(&args.topic_defaults)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let objects: Arc<dyn ObjectStore> = Arc::new(MeteredObjectStore::new(Arc::new(
        LocalFsObjectStore::new(args.data_dir.join("objects"))
            .context("opening the local object store")?,
    )));
    let meta_path = args.data_dir.join("meta.redb");
    let meta: Arc<dyn MetaStore> = Arc::new(MeteredMetaStore::new(Arc::new(
        RedbMetaStore::open(&meta_path).with_context(|| {
            format!(
                "opening the metadata store {} (is another kafscale using it?)",
                meta_path.display()
            )
        })?,
    )));
    let (objects, meta, simulated) = args.simulation.apply(objects, meta);
    // Garbage collection lists and deletes objects: not through the block cache.
    let gc_objects = objects.clone();
    // Every tier reads and writes through the block cache: segments enter it as the ingest
    // side writes them, and tail consumers are served from memory.
    let objects = args.fetch.block_cache(objects, true);
    let catalog = Arc::new(Catalog::new(meta));
    let watermarks = Arc::new(Watermarks::new());
    let layout = args.initial_layout.layout();
    let mut cluster = load_or_init_cluster(&catalog, args.shards.max(1), layout)
        .await
        .context("reading the cluster settings")?;
    if args.initial_layout == LayoutArg::ShardLog && cluster.layout < LAYOUT_NEWEST {
        let was = cluster.layout;
        cluster = switch_to_shard_log(&catalog, None)
            .await
            .context("switching the data directory to the shard log")?;
        info!(
            from = was,
            to = cluster.layout,
            "data directory switched to the shard log layout"
        );
    }

    let indexer = Indexer::start(
        catalog.clone(),
        watermarks.clone(),
        args.lifecycle.indexer_config(IndexerConfig {
            owner_id: "standalone".into(),
            owner_addr: "in-process".into(),
            lease_ttl: Duration::from_secs(30),
            shard_count: cluster.shard_count,
            shard_log: cluster.on_shard_log(),
            ..IndexerConfig::default()
        })?,
    )
    .await
    .context("starting the indexer")?;

    let admin = AdminState::new(
        "standalone",
        catalog.clone(),
        cluster.shard_count,
        args.listener.default_partitions,
    );
    admin.set_local_indexer(indexer.clone());
    let ready = Arc::new(Readiness::probing(catalog.store().clone()));
    let (http_addr, http_server) = http::serve(
        args.listener.http_addr,
        ready.clone(),
        admin_api::router(admin.clone(), args.admin.auth()?),
        &args.listener.http_tls,
        shutdown.clone(),
    )
    .await?;

    let buffer = SegmentBuffer::new(args.ingest.config(
        cluster.shard_count,
        args.simulation.simulates_object_store(),
    )?);
    let fetch = FetchService::new(
        catalog.clone(),
        objects.clone(),
        watermarks.clone(),
        args.fetch.config(None),
    );

    let authorizer = args.authorizer.start(&catalog, &shutdown).await?;
    let BoundListener {
        servers,
        kafka_addr,
        advertised,
        topics,
    } = args
        .listener
        .bind(catalog.clone(), "kafscale-standalone", &shutdown)
        .await?;
    let running = KafkaTiers {
        buffer,
        fetch,
        objects,
        sequencer: indexer.clone(),
        groups: args.fetch.group_config(true, Some("standalone".into()))?,
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
    let renewer = {
        let indexer = indexer.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(indexer.renew_interval());
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    // Standalone keeps every shard; leases are not released at shutdown
                    // because the final flush still commits (they are ours on restart anyway).
                    _ = tick.tick() => match indexer.maintain_leases(cluster.shard_count as usize).await {
                        Ok(r) if r.lost.is_empty() => {}
                        Ok(r) => error!(lost = ?r.lost, "the indexer lost shard leases; commits to them will be refused"),
                        Err(e) => warn!(error = %e, "lease renewal failed"),
                    },
                }
            }
        })
    };
    let retention_task =
        args.lifecycle
            .spawn_retention(indexer.clone(), cluster_defaults.clone(), &shutdown)?;
    let gc_task =
        args.lifecycle
            .spawn_gc(catalog.clone(), gc_objects, "standalone".into(), &shutdown)?;
    let fold_task = args.lifecycle.spawn_fold(indexer.clone(), &shutdown)?;
    let http_task = tokio::spawn(http_server);
    ready.set(true);
    println!(
        "kafscale standalone listening kafka={kafka_addr} http={http_addr} data_dir={}",
        args.data_dir.display()
    );
    info!(%kafka_addr, %http_addr, advertised = %advertised, data_dir = %args.data_dir.display(), "standalone ready");

    shutdown.cancelled().await;
    ready.set(false);
    info!("shutting down: flushing buffered produce requests");
    let mut others = vec![gc_task, retention_task, fold_task, renewer, http_task];
    others.extend(authorizer.map(|(_, refresh)| refresh));
    running.stop(others).await;
    simulated.log_summary();
    info!("stopped");
    Ok(())
}

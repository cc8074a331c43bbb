//! Standalone mode: ingest, indexer and fetch tiers in one process, one Kafka listener serving
//! every API, a local-filesystem object store and an embedded (redb) metadata store under one
//! data directory. The same tier code runs in distributed mode; only the wiring differs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kafscale_fetch::{FetchConfig, FetchHandler, FetchService};
use kafscale_indexer::{Indexer, IndexerConfig};
use kafscale_ingest::{IngestConfig, IngestHandler, SegmentBuffer};
use kafscale_shared::catalog::Catalog;
use kafscale_shared::meta_store::{MetaStore, RedbMetaStore};
use kafscale_shared::object_store::{LocalFsObjectStore, ObjectStore};
use kafscale_shared::sequencer::Sequencer;
use kafscale_shared::shards::load_or_init_cluster;
use kafscale_shared::topic_api::{TopicApi, TopicSettings};
use kafscale_shared::topic_handler::TopicHandler;
use kafscale_shared::watermarks::Watermarks;
use kafscale_shared::wire::{KafkaHandler, KafkaServer, Router, WireConfig};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::http::{self, Readiness};

/// Flags of `kafscale standalone` (each also read from a `KAFSCALE_*` environment variable).
#[derive(Debug, clap::Args)]
pub(crate) struct StandaloneArgs {
    /// Directory holding the object store (objects/) and the metadata store (meta.redb).
    #[arg(long, env = "KAFSCALE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Address of the Kafka listener.
    #[arg(long, env = "KAFSCALE_KAFKA_ADDR", default_value = "127.0.0.1:9092")]
    kafka_addr: SocketAddr,
    /// Address of the HTTP listener (/healthz, /readyz).
    #[arg(long, env = "KAFSCALE_HTTP_ADDR", default_value = "127.0.0.1:9093")]
    http_addr: SocketAddr,
    /// host:port put in Metadata answers; defaults to the Kafka listener's address.
    #[arg(long, env = "KAFSCALE_ADVERTISED_ADDR")]
    advertised_addr: Option<String>,
    /// Create unknown topics on first use (Metadata or Produce).
    #[arg(long, env = "KAFSCALE_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Partition count of auto-created topics and of CreateTopics asking for the default.
    #[arg(long, env = "KAFSCALE_DEFAULT_PARTITIONS", default_value_t = 1)]
    default_partitions: i32,
    /// Flush the produce buffer at least this often (milliseconds).
    #[arg(long, env = "KAFSCALE_FLUSH_INTERVAL_MS", default_value_t = 20)]
    flush_interval_ms: u64,
    /// Flush the produce buffer when it holds this many bytes.
    #[arg(long, env = "KAFSCALE_FLUSH_BYTES", default_value_t = 4 * 1024 * 1024)]
    flush_bytes: usize,
    /// Largest record batch accepted (Kafka's max.message.bytes).
    #[arg(long, env = "KAFSCALE_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024 + 12)]
    max_message_bytes: usize,
    /// Largest request frame accepted; longer frames close the connection.
    #[arg(long, env = "KAFSCALE_MAX_FRAME_BYTES", default_value_t = 100 * 1024 * 1024)]
    max_frame_bytes: usize,
    /// Indexer shards of a new data directory (an existing one keeps its own count).
    #[arg(long, env = "KAFSCALE_SHARDS", default_value_t = 1)]
    shards: u32,
    /// Bytes of segment data cached by the fetch tier.
    #[arg(long, env = "KAFSCALE_FETCH_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    fetch_cache_bytes: usize,
}

fn split_host_port(s: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?} is not host:port"))?;
    let port: u16 = port.parse().with_context(|| format!("bad port in {s:?}"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port as i32))
}

/// Runs standalone mode until `shutdown` fires, then flushes and stops.
pub(crate) async fn run(args: StandaloneArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if args.default_partitions < 1 {
        anyhow::bail!("--default-partitions must be at least 1");
    }
    if args.flush_bytes == 0 || args.max_message_bytes == 0 {
        anyhow::bail!("--flush-bytes and --max-message-bytes must be positive");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let objects: Arc<dyn ObjectStore> = Arc::new(
        LocalFsObjectStore::new(args.data_dir.join("objects"))
            .context("opening the local object store")?,
    );
    let meta_path = args.data_dir.join("meta.redb");
    let meta: Arc<dyn MetaStore> =
        Arc::new(RedbMetaStore::open(&meta_path).with_context(|| {
            format!(
                "opening the metadata store {} (is another kafscale using it?)",
                meta_path.display()
            )
        })?);
    let catalog = Arc::new(Catalog::new(meta));
    let watermarks = Arc::new(Watermarks::new());
    let cluster = load_or_init_cluster(&catalog, args.shards.max(1))
        .await
        .context("reading the cluster settings")?;

    let indexer = Indexer::start(
        catalog.clone(),
        watermarks.clone(),
        IndexerConfig {
            owner_id: "standalone".into(),
            owner_addr: "in-process".into(),
            lease_ttl: Duration::from_secs(30),
            shard_count: cluster.shard_count,
        },
    )
    .await
    .context("starting the indexer")?;

    let ready = Arc::new(Readiness::default());
    let (http_addr, http_server) = http::serve(args.http_addr, ready.clone(), shutdown.clone())
        .await
        .with_context(|| format!("binding http listener {}", args.http_addr))?;

    let ingest_config = IngestConfig {
        flush_bytes: args.flush_bytes,
        flush_interval: Duration::from_millis(args.flush_interval_ms.max(1)),
        max_message_bytes: args.max_message_bytes,
        shard_count: cluster.shard_count,
        ..IngestConfig::default()
    };
    let buffer = SegmentBuffer::new(ingest_config);
    let fetch = FetchService::new(
        catalog.clone(),
        objects.clone(),
        watermarks.clone(),
        FetchConfig {
            range_cache_bytes: args.fetch_cache_bytes,
            ..FetchConfig::default()
        },
    );

    // Bind first: the advertised address defaults to the bound address (port 0 allowed).
    let server = KafkaServer::bind(
        args.kafka_addr,
        WireConfig {
            max_frame_bytes: args.max_frame_bytes,
            ..WireConfig::default()
        },
    )
    .await
    .with_context(|| format!("binding kafka listener {}", args.kafka_addr))?;
    let kafka_addr = server.local_addr()?;
    let advertised = match &args.advertised_addr {
        Some(a) => a.clone(),
        None if kafka_addr.ip().is_unspecified() => format!("127.0.0.1:{}", kafka_addr.port()),
        None => kafka_addr.to_string(),
    };
    let (advertised_host, advertised_port) = split_host_port(&advertised)?;
    let topics = TopicApi::new(
        catalog.clone(),
        TopicSettings {
            advertised_host,
            advertised_port,
            auto_create_topics: args.auto_create_topics,
            default_partitions: args.default_partitions,
            cluster_id: "kafscale-standalone".into(),
        },
    );
    let router: Arc<dyn KafkaHandler> = Arc::new(Router::new(vec![
        Arc::new(TopicHandler::new(topics.clone())),
        Arc::new(IngestHandler::new(topics, buffer.clone())),
        Arc::new(FetchHandler::new(fetch.clone())),
    ]));
    let flusher_shutdown = CancellationToken::new();
    let sequencer: Arc<dyn Sequencer> = indexer.clone();
    let flusher = tokio::spawn(buffer.clone().run_flusher(
        objects.clone(),
        sequencer,
        flusher_shutdown.clone(),
    ));
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
    let http_task = tokio::spawn(http_server);
    let kafka_task = tokio::spawn(server.run(router, shutdown.clone()));
    ready.set(true);
    println!(
        "kafscale standalone listening kafka={kafka_addr} http={http_addr} data_dir={}",
        args.data_dir.display()
    );
    info!(%kafka_addr, %http_addr, advertised = %advertised, data_dir = %args.data_dir.display(), "standalone ready");

    shutdown.cancelled().await;
    ready.set(false);
    info!("shutting down: flushing buffered produce requests");
    // Connections stop reading; the flusher seals and commits what is buffered so in-flight
    // produce requests get their answers; then the connections drain and close.
    flusher_shutdown.cancel();
    fetch.stop_waiting();
    let drain = async {
        let _ = flusher.await;
        let _ = kafka_task.await;
        let _ = renewer.await;
        let _ = http_task.await;
    };
    if tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .is_err()
    {
        warn!("shutdown did not finish within 30s; exiting anyway");
    }
    info!("stopped");
    Ok(())
}

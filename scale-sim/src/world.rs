//! One simulated cluster: stores, topics, indexers with their lease loops, gateways with their
//! flushers, and the producers; set up, run for a while, stopped, checked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafscale_indexer::{Indexer, IndexerConfig};
use kafscale_ingest::{IngestConfig, SegmentBuffer};
use kafscale_shared::batch::ValidatedBatch;
use kafscale_shared::catalog::Catalog;
use kafscale_shared::meta_store::{MemoryMetaStore, MetaStore};
use kafscale_shared::object_store::ObjectStore;
use kafscale_shared::sequencer::Sequencer;
use kafscale_shared::shards::load_or_init_cluster;
use kafscale_shared::simulated_latency::{
    MetaStoreLatency, ObjectStoreLatency, SimulatedMetaStore, SimulatedObjectStore,
};
use kafscale_shared::watermarks::Watermarks;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::SimError;
use crate::producers::{self, Pace, Route, Target};
use crate::report::{Measured, Report};
use crate::routing::ShardRouter;
use crate::sizes_only::SizesOnlyObjectStore;
use crate::verify;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub gateways: usize,
    pub indexers: usize,
    pub shards: u32,
    pub topics: usize,
    pub partitions_per_topic: i32,
    pub producers_per_gateway: usize,
    /// Bytes a second offered to each gateway (record batches as sent).
    pub rate_per_gateway: f64,
    pub record_bytes: usize,
    pub records_per_batch: usize,
    /// Batches one producer may have waiting for an answer.
    pub max_in_flight: usize,
    pub duration: Duration,
    pub flush_interval: Duration,
    /// A slow upload is raced by a second one after this (the gateways' S3 default: 100 ms).
    pub upload_hedge_after: Option<Duration>,
    pub object_store: ObjectStoreLatency,
    pub meta_store: MetaStoreLatency,
    /// Partition keys the simulated DynamoDB never throttles (what-if: a key design that
    /// spreads them); their load is still reported.
    pub unlimited_keys: Vec<String>,
    /// Indexers commit to the shard log (one item per commit, folded every second) instead of
    /// a transaction per commit.
    pub shard_log: bool,
}

impl SimConfig {
    fn check(&self) -> Result<(), SimError> {
        let positive = [
            ("gateways", self.gateways),
            ("indexers", self.indexers),
            ("shards", self.shards as usize),
            ("topics", self.topics),
            (
                "partitions per topic",
                self.partitions_per_topic.max(0) as usize,
            ),
            ("producers per gateway", self.producers_per_gateway),
            ("record bytes", self.record_bytes),
            ("records per batch", self.records_per_batch),
            ("max in flight", self.max_in_flight),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(SimError::Config(format!("{name} must be positive")));
        }
        if self.rate_per_gateway <= 0.0 || self.duration.is_zero() {
            return Err(SimError::Config(
                "the rate and the duration must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Runs one simulation to its end and checks it.
pub async fn run(config: &SimConfig) -> Result<Report, SimError> {
    config.check()?;
    let sizes = Arc::new(SizesOnlyObjectStore::default());
    let objects = Arc::new(SimulatedObjectStore::new(
        sizes.clone(),
        config.object_store,
    ));
    let bare: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let meta = Arc::new(
        SimulatedMetaStore::new(bare.clone(), config.meta_store)
            .with_unlimited_keys(config.unlimited_keys.iter().cloned()),
    );
    // Topics are created on the bare store: set-up is not what is measured.
    let setup = Catalog::new(bare);
    // As in every real cluster: readers find the shard logs by the stored shard count.
    let layout = if config.shard_log {
        kafscale_shared::shards::LAYOUT_NEWEST
    } else {
        kafscale_shared::shards::LAYOUT_TRANSACTIONS
    };
    load_or_init_cluster(&setup, config.shards, layout).await?;
    let targets = create_topics(&setup, config).await?;
    let shutdown = CancellationToken::new();
    let catalog = Arc::new(Catalog::new(meta.clone()));
    let (indexers, lease_loops) = start_indexers(&catalog, config, &shutdown).await?;
    let shard_router = Arc::new(ShardRouter::new(indexers, config.shards));
    let router: Arc<dyn Sequencer> = shard_router.clone();
    let objects_dyn: Arc<dyn ObjectStore> = objects.clone();
    let (gateways, flushers) = start_gateways(&objects_dyn, &router, config);

    let batch = producers::build_batch(config.records_per_batch, config.record_bytes)?;
    let batch_bytes = batch.bytes.len();
    let started = Instant::now();
    let tally = producers::collect(start_producers(&gateways, &targets, batch, config)).await;
    let elapsed = started.elapsed();
    for buffer_flusher in flushers {
        buffer_flusher.stop.cancel();
        let _ = buffer_flusher.task.await;
    }
    shutdown.cancel();
    for task in lease_loops {
        let _ = task.await;
    }
    let check = verify::check(&setup, &sizes, &targets, &tally.acks).await?;
    Ok(Report::new(
        config,
        Measured {
            elapsed,
            batch_bytes,
            tally,
            check,
            commits: shard_router.committed(),
            meta: meta.metrics(),
            meta_keys: meta.key_usage(),
            objects: objects.metrics(),
            object_prefixes: objects.prefix_usage(),
        },
    ))
}

async fn create_topics(catalog: &Catalog, config: &SimConfig) -> Result<Vec<Target>, SimError> {
    let mut targets = Vec::new();
    for t in 0..config.topics {
        let topic = catalog
            .create_topic(
                &format!("sim-{t:05}"),
                config.partitions_per_topic,
                BTreeMap::new(),
            )
            .await?;
        targets.extend((0..config.partitions_per_topic).map(|partition| Target {
            topic_id: topic.topic_id,
            partition,
        }));
    }
    Ok(targets)
}

/// Indexers that split the shards evenly before the run starts (as their lease loops would
/// after a few rounds), then keep renewing their leases through the run.
async fn start_indexers(
    catalog: &Arc<Catalog>,
    config: &SimConfig,
    shutdown: &CancellationToken,
) -> Result<(Vec<Arc<Indexer>>, Vec<JoinHandle<()>>), SimError> {
    let lease_ttl = Duration::from_secs(10);
    let indexers: Vec<Arc<Indexer>> = (0..config.indexers)
        .map(|i| {
            Indexer::new(
                catalog.clone(),
                Arc::new(Watermarks::new()),
                IndexerConfig {
                    owner_id: format!("sim-indexer-{i}"),
                    owner_addr: format!("sim-indexer-{i}:0"),
                    lease_ttl,
                    shard_count: config.shards,
                    shard_log: config.shard_log,
                    ..IndexerConfig::default()
                },
            )
        })
        .collect();
    for i in 0..config.indexers {
        let id = format!("sim-indexer-{i}");
        catalog
            .heartbeat_member("indexer", &id, &format!("{id}:0"), lease_ttl)
            .await?;
    }
    let share = (config.shards as usize).div_ceil(config.indexers);
    let mut owned = 0;
    for indexer in &indexers {
        owned += indexer.maintain_leases(share).await?.owned.len();
    }
    if owned != config.shards as usize {
        return Err(SimError::Config(format!(
            "the indexers took {owned} of {} shards",
            config.shards
        )));
    }
    let mut loops: Vec<JoinHandle<()>> = indexers
        .iter()
        .map(|i| tokio::spawn(i.clone().run_lease_loop(shutdown.clone())))
        .collect();
    if config.shard_log {
        loops.extend(indexers.iter().map(|i| {
            tokio::spawn(
                i.clone()
                    .run_fold_loop(Duration::from_secs(1), shutdown.clone()),
            )
        }));
    }
    Ok((indexers, loops))
}

struct Flusher {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

fn start_gateways(
    objects: &Arc<dyn ObjectStore>,
    router: &Arc<dyn Sequencer>,
    config: &SimConfig,
) -> (Vec<Arc<SegmentBuffer>>, Vec<Flusher>) {
    (0..config.gateways)
        .map(|_| {
            let buffer = SegmentBuffer::new(IngestConfig {
                flush_interval: config.flush_interval,
                // The object-store policy: one seal per interval at most.
                flush_min_interval: config.flush_interval,
                shard_count: config.shards,
                upload_hedge_after: config.upload_hedge_after,
                ..IngestConfig::default()
            });
            let stop = CancellationToken::new();
            let task = tokio::spawn(buffer.clone().run_flusher(
                objects.clone(),
                router.clone(),
                stop.clone(),
            ));
            (buffer, Flusher { stop, task })
        })
        .unzip()
}

fn start_producers(
    gateways: &[Arc<SegmentBuffer>],
    targets: &[Target],
    batch: ValidatedBatch,
    config: &SimConfig,
) -> Vec<JoinHandle<producers::Tally>> {
    let per_producer = config.rate_per_gateway / config.producers_per_gateway as f64;
    let period = Duration::from_secs_f64(batch.bytes.len() as f64 / per_producer);
    let until = Instant::now() + config.duration;
    let targets: Arc<[Target]> = targets.into();
    let partitions = config.partitions_per_topic as usize;
    let total = gateways.len() * config.producers_per_gateway;
    let mut tasks = Vec::with_capacity(total);
    for (g, gateway) in gateways.iter().enumerate() {
        for j in 0..config.producers_per_gateway {
            let n = g * config.producers_per_gateway + j;
            let topic = n % config.topics;
            let pace = Pace {
                period,
                phase: period.mul_f64(n as f64 / total as f64),
                max_in_flight: config.max_in_flight,
                until,
            };
            tasks.push(tokio::spawn(producers::produce(
                gateway.clone(),
                batch.clone(),
                targets.clone(),
                Route {
                    topic_start: topic * partitions,
                    partitions,
                    first: (n / config.topics) % partitions,
                },
                pace,
            )));
        }
    }
    tasks
}

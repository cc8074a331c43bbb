//! Offset assignment, idempotent-producer checks and the atomic commit write.
//!
//! Metrics: a commit counts in `kafscale_indexer_commit_queue_depth` from the moment it asks
//! for its shard until it is done, so the gauge is the number of commits waiting on or inside
//! the per-shard locks: the indexer tier's scaling signal (it grows when shards are busier than
//! their owner can sequence). Commit latency, commits, batches and records, shards owned, lease
//! acquisitions and losses and fenced writes are counted beside it, and on the shard log the
//! store requests that appended and the items they carried (commits grouped per request).
//!
//! A commit waits for its shard in the shard's queue ([`commit_queue`]): whoever takes the
//! shard's lock runs every commit queued at that moment, those on the shard log as one group.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kafscale_shared::catalog::{
    self, Catalog, CatalogError, ITEM_FORMAT, LeaseRecord, PartitionRecord, ProducerRecord,
    SegmentCommitRecord, SegmentPart,
};
use kafscale_shared::keys::segment_created_ms;
use kafscale_shared::meta_store::{Condition, ItemKey, MetaStoreError, WriteOp};
use kafscale_shared::metrics as names;
use kafscale_shared::periodic::run_every;
use kafscale_shared::sequencer::{
    BatchOutcome, CommitBatch, CommitRequest, CommitResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, Sequencer, SequencerError,
};
use kafscale_shared::shards::{SHARD_LEASE_PREFIX, shard_lease_name, shard_of};
use kafscale_shared::watermarks::Watermarks;
use metrics::{Counter, Gauge, Histogram};
use tokio::sync::Mutex;
use tracing::{Instrument, debug, info, instrument, warn};
use uuid::Uuid;

use crate::status::{ShardStats, ShardStatusList};

mod commit_queue;
mod fold;
mod log_commit;
mod plan;
mod retention;
use commit_queue::CommitQueue;
pub use fold::FoldReport;
use log_commit::{BATCHES_PER_LOG_ITEM, LogCommit, LogState};
use plan::{CommitPlan, Loaded};
pub use retention::{Retained, RetentionReport};

/// Settings of one indexer replica.
#[derive(Debug, Clone)]
pub struct IndexerConfig {
    /// Identity written into the shard lease.
    pub owner_id: String,
    /// Address other processes use to reach this indexer (advertised in the lease).
    pub owner_addr: String,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// Shards of the cluster (read from the store with [`kafscale_shared::shards`]).
    pub shard_count: u32,
    /// Segments created longer ago than this (the time is in their key) are no longer
    /// committed: garbage collection deletes uncommitted objects past this age (plus its
    /// grace), so a late commit must not make one of them referenced.
    pub segment_commit_max_age: Duration,
    /// An idempotent producer's state in a partition is forgotten this long after its last
    /// batch there (Kafka's `producer.id.expiration.ms`); its next batch then starts afresh.
    pub producer_id_expiration: Duration,
    /// Switch every shard this replica acquires to the shard log (layout 2,
    /// [`kafscale_shared::shard_log`]) whatever the cluster settings say: the processes set it
    /// from the cluster's layout, which an owner also reads at every acquisition (so a
    /// cluster switched while it runs is noticed). A shard once switched stays switched,
    /// whoever owns it.
    pub shard_log: bool,
}

/// Default of [`IndexerConfig::producer_id_expiration`] (Kafka's: one day).
pub const DEFAULT_PRODUCER_ID_EXPIRATION: Duration = Duration::from_secs(86_400);

/// Default of [`IndexerConfig::segment_commit_max_age`].
pub const DEFAULT_SEGMENT_COMMIT_MAX_AGE: Duration = Duration::from_secs(600);

impl Default for IndexerConfig {
    fn default() -> Self {
        IndexerConfig {
            owner_id: format!("indexer-{}", Uuid::new_v4().simple()),
            owner_addr: String::new(),
            lease_ttl: Duration::from_secs(10),
            shard_count: 1,
            segment_commit_max_age: DEFAULT_SEGMENT_COMMIT_MAX_AGE,
            producer_id_expiration: DEFAULT_PRODUCER_ID_EXPIRATION,
            shard_log: false,
        }
    }
}

/// What one round of lease maintenance did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseReport {
    pub owned: Vec<u32>,
    pub acquired: Vec<u32>,
    pub lost: Vec<u32>,
    pub released: Vec<u32>,
}

/// Errors of the indexer crate.
#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    #[error("shard lease {0} is held by another indexer")]
    LeaseHeld(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    ObjectStore(#[from] kafscale_shared::object_store::ObjectStoreError),
}

/// A shard lease this replica holds: its item version is the fencing token.
#[derive(Debug, Clone)]
struct HeldLease {
    name: String,
    version: u64,
    epoch: u64,
}

type PartitionId = (Uuid, i32);
type ProducerKey = (Uuid, i32, i64);

#[derive(Debug, Clone, Copy)]
struct PartitionState {
    record: PartitionRecord,
    version: u64,
}

/// An idempotent producer's state in one partition as stored: the row and its item version,
/// or `None` while the partition has no row for it. Its writes are conditioned on that
/// version, like the partition row's, so a stale copy can never be written back.
type StoredProducer = Option<(ProducerRecord, u64)>;

/// One shard's sequencing state. Its mutex orders the shard's commits and lease changes, so
/// the lease version a commit is fenced with cannot change under it; different shards commit
/// concurrently.
#[derive(Default)]
struct ShardState {
    lease: Option<HeldLease>,
    partitions: HashMap<PartitionId, PartitionState>,
    producers: HashMap<ProducerKey, StoredProducer>,
    recent: HashMap<String, CommitResponse>,
    recent_order: VecDeque<String>,
    /// A write was sent whose outcome the cached rows do not reflect yet, or (shard log) the
    /// cache holds planned items not written yet. Set before each commit write (before the
    /// first item of a group is applied) and cleared once the cache matches the store; if the
    /// commit's future is dropped in between (its caller went away, e.g. a killed gateway's
    /// HTTP request), the write may still have landed, so the next commit starts from the
    /// store again.
    unsettled: bool,
    /// The shard's log, on layout 2 (read when the shard is first used after the cache was
    /// forgotten: `log_opened` false).
    log: Option<LogState>,
    log_opened: bool,
}

impl ShardState {
    /// Forgets every cached row (the shard changed hands, so the store may have moved on).
    fn forget_rows(&mut self) {
        self.partitions.clear();
        self.producers.clear();
        self.log = None;
        self.log_opened = false;
    }

    /// Before a write: if an earlier write's outcome is unknown, reload rows from the store.
    fn settle(&mut self) {
        if self.unsettled {
            debug!("an earlier write's outcome is unknown; reloading rows");
            self.forget_rows();
            self.unsettled = false;
        }
    }
}

const RECENT_COMMITS_KEPT: usize = 1024;

/// Producer states cached per shard at most; past it the cache starts over (the store has
/// every row, so a commit only pays a read for a producer it no longer holds).
const PRODUCERS_CACHED: usize = 100_000;

/// The sequencer for the partitions of the shards whose leases it holds.
pub struct Indexer {
    catalog: Arc<Catalog>,
    watermarks: Arc<Watermarks>,
    config: IndexerConfig,
    /// One entry per shard of the cluster.
    shards: Vec<Mutex<ShardState>>,
    /// The commits waiting for each shard (same positions as `shards`).
    queues: Vec<CommitQueue>,
    /// Serializes lease rounds (maintenance, release), so the owned count they reason on holds.
    lease_round: Mutex<()>,
    metrics: CommitMetrics,
    /// Per-shard queue depth and recent commit latencies, for operators (`GET /v1/shards`).
    stats: Vec<ShardStats>,
}

/// The commit path's metric handles.
struct CommitMetrics {
    queue_depth: Gauge,
    latency: Histogram,
    commits: Counter,
    batches: Counter,
    records: Counter,
    /// Store requests that appended to a shard log, and the items they carried.
    log_writes: Counter,
    log_items: Counter,
}

impl CommitMetrics {
    fn new() -> Self {
        // Registered at zero now, so the series exist before the first event.
        for name in [
            names::INDEXER_LEASES_ACQUIRED,
            names::INDEXER_LEASES_LOST,
            names::INDEXER_FENCED,
        ] {
            metrics::counter!(name).increment(0);
        }
        metrics::gauge!(names::INDEXER_SHARDS_OWNED).set(0.0);
        CommitMetrics {
            queue_depth: metrics::gauge!(names::INDEXER_QUEUE_DEPTH),
            latency: metrics::histogram!(names::INDEXER_COMMIT_DURATION),
            commits: metrics::counter!(names::INDEXER_COMMITS),
            batches: metrics::counter!(names::INDEXER_BATCHES),
            records: metrics::counter!(names::INDEXER_RECORDS),
            log_writes: metrics::counter!(names::INDEXER_LOG_WRITES),
            log_items: metrics::counter!(names::INDEXER_LOG_ITEMS_WRITTEN),
        }
    }
}

/// Keeps a commit counted in the queue depth until it is dropped (done or cancelled).
struct Queued<'a>(&'a Gauge);

impl<'a> Queued<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        gauge.increment(1.0);
        Queued(gauge)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer")
            .field("owner", &self.config.owner_id)
            .finish()
    }
}

impl Indexer {
    /// An indexer that owns no shard yet (see [`Indexer::maintain_leases`]).
    pub fn new(
        catalog: Arc<Catalog>,
        watermarks: Arc<Watermarks>,
        config: IndexerConfig,
    ) -> Arc<Self> {
        let shards = (0..config.shard_count.max(1))
            .map(|_| Mutex::new(ShardState::default()))
            .collect();
        let stats = (0..config.shard_count.max(1))
            .map(|_| ShardStats::default())
            .collect();
        let queues = (0..config.shard_count.max(1))
            .map(|_| CommitQueue::default())
            .collect();
        Arc::new(Indexer {
            catalog,
            watermarks,
            config,
            shards,
            queues,
            lease_round: Mutex::new(()),
            metrics: CommitMetrics::new(),
            stats,
        })
    }

    /// An indexer that owns every shard (standalone); fails if another live owner holds one.
    pub async fn start(
        catalog: Arc<Catalog>,
        watermarks: Arc<Watermarks>,
        config: IndexerConfig,
    ) -> Result<Arc<Self>, IndexerError> {
        let shards = config.shard_count.max(1) as usize;
        let indexer = Self::new(catalog, watermarks, config);
        let report = indexer.maintain_leases(shards).await?;
        if report.owned.len() != shards {
            let missing = (0..shards as u32)
                .find(|s| !report.owned.contains(s))
                .unwrap_or(0);
            return Err(IndexerError::LeaseHeld(shard_lease_name(missing)));
        }
        info!(shards, "indexer owns every shard");
        Ok(indexer)
    }

    /// Takes or renews one lease for this replica.
    async fn take_lease(&self, name: &str) -> Result<Option<(LeaseRecord, u64)>, CatalogError> {
        let c = &self.config;
        self.catalog
            .acquire_lease(name, &c.owner_id, &c.owner_addr, c.lease_ttl)
            .await
    }

    /// Reads the shard leases, so that this replica starts waiting out an owner that stopped
    /// renewing now rather than when its share grows: another owner's lease is taken only once
    /// this process has seen it unchanged for a lease time
    /// ([`kafscale_shared::lease_observations`]). A failed read only delays a takeover.
    async fn watch_shard_leases(&self) {
        if let Err(e) = self.catalog.leases(SHARD_LEASE_PREFIX).await {
            debug!(error = %e, "reading the shard leases failed; the next round reads them");
        }
    }

    /// Renews the leases it holds, then takes free, released or abandoned shards until it owns
    /// `target`, or gives up shards above `target` (so replicas spread the shards between
    /// them). Each shard is locked only while its own lease is handled.
    pub async fn maintain_leases(&self, target: usize) -> Result<LeaseReport, IndexerError> {
        let _round = self.lease_round.lock().await;
        let mut report = LeaseReport::default();
        for (shard, slot) in self.shards.iter().enumerate() {
            let shard = shard as u32;
            let mut state = slot.lock().await;
            let Some(held) = state.lease.clone() else {
                continue;
            };
            match self.take_lease(&held.name).await? {
                Some((lease, version)) => {
                    if held.epoch != lease.epoch {
                        // Someone else owned it in between: cached rows may be stale.
                        state.forget_rows();
                    }
                    state.lease = Some(HeldLease {
                        name: held.name,
                        version,
                        epoch: lease.epoch,
                    });
                    report.owned.push(shard);
                }
                None => {
                    warn!(shard, "shard lease lost");
                    metrics::counter!(names::INDEXER_LEASES_LOST).increment(1);
                    state.lease = None;
                    state.forget_rows();
                    report.lost.push(shard);
                }
            }
        }
        if report.owned.len() < self.shards.len() {
            self.watch_shard_leases().await;
        }
        for (shard, slot) in self.shards.iter().enumerate() {
            if report.owned.len() >= target {
                break;
            }
            let shard = shard as u32;
            let mut state = slot.lock().await;
            if state.lease.is_some() {
                continue;
            }
            let name = shard_lease_name(shard);
            if let Some((lease, version)) = self.take_lease(&name).await? {
                info!(shard, epoch = lease.epoch, "acquired shard lease");
                metrics::counter!(names::INDEXER_LEASES_ACQUIRED).increment(1);
                // A new owner must not trust anything cached before it owned the shard.
                state.forget_rows();
                state.lease = Some(HeldLease {
                    name,
                    version,
                    epoch: lease.epoch,
                });
                report.owned.push(shard);
                report.acquired.push(shard);
            }
        }
        report.owned.sort_unstable();
        while report.owned.len() > target.max(1) {
            let Some(shard) = report.owned.pop() else {
                break;
            };
            let mut state = self.shards[shard as usize].lock().await;
            if let Some(held) = state.lease.take()
                && self
                    .catalog
                    .release_lease(&held.name, &self.config.owner_id, held.version)
                    .await?
            {
                info!(shard, "released shard lease to balance replicas");
            }
            report.released.push(shard);
        }
        metrics::gauge!(names::INDEXER_SHARDS_OWNED).set(report.owned.len() as f64);
        Ok(report)
    }

    /// Gives up every lease (clean shutdown), so other replicas take over at once.
    pub async fn release_all(&self) -> Result<(), IndexerError> {
        let _round = self.lease_round.lock().await;
        for slot in &self.shards {
            let mut state = slot.lock().await;
            if let Some(held) = state.lease.take() {
                self.catalog
                    .release_lease(&held.name, &self.config.owner_id, held.version)
                    .await?;
            }
        }
        metrics::gauge!(names::INDEXER_SHARDS_OWNED).set(0.0);
        Ok(())
    }

    /// The shards this replica currently owns.
    pub async fn owned_shards(&self) -> Vec<u32> {
        let mut owned = Vec::new();
        for (shard, slot) in self.shards.iter().enumerate() {
            if slot.lock().await.lease.is_some() {
                owned.push(shard as u32);
            }
        }
        owned
    }

    /// Keeps the leases until `shutdown`: heartbeats this replica, aims at an even share of
    /// the shards among live replicas, renews at a third of the lease time, then releases all.
    pub async fn run_lease_loop(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        run_every(self.renew_interval(), &shutdown, || self.lease_round()).await;
        if let Err(e) = self.release_all().await {
            warn!(error = %e, "releasing shard leases failed; they expire by themselves");
        }
    }

    /// One round of the lease loop: heartbeat, then renew and balance the shard leases.
    async fn lease_round(&self) {
        let shards = self.config.shard_count.max(1) as usize;
        let target = match self
            .catalog
            .heartbeat_member(
                "indexer",
                &self.config.owner_id,
                &self.config.owner_addr,
                self.config.lease_ttl,
            )
            .await
        {
            Ok(()) => match self.catalog.live_members("indexer").await {
                Ok(members) => shards.div_ceil(members.len().max(1)),
                Err(_) => shards,
            },
            Err(e) => {
                warn!(error = %e, "indexer heartbeat failed");
                shards
            }
        };
        match self.maintain_leases(target).await {
            Ok(r) if !r.acquired.is_empty() || !r.lost.is_empty() || !r.released.is_empty() => {
                info!(owned = ?r.owned, acquired = ?r.acquired, lost = ?r.lost, released = ?r.released, "shard leases changed")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "lease maintenance failed"),
        }
    }

    /// Queue depth and recent commit latency of every shard at this replica (see
    /// [`crate::status`]); shards it does not own show what it did while it owned them.
    pub fn shard_status(&self) -> ShardStatusList {
        let now = std::time::Instant::now();
        ShardStatusList {
            owner: self.config.owner_id.clone(),
            shards: self
                .stats
                .iter()
                .enumerate()
                .map(|(shard, stats)| stats.status(shard as u32, now))
                .collect(),
        }
    }

    /// The renewal period matching the configured lease time.
    pub fn renew_interval(&self) -> Duration {
        self.config.lease_ttl / 3
    }

    /// Reads the shard's log if it was not read since the cache was last forgotten: before any
    /// row or producer state enters the cache, so that each is replayed with the log above the
    /// fold. (A row read first and cached without it would hand out offsets again.)
    async fn ensure_log_open(
        &self,
        state: &mut ShardState,
        shard: u32,
    ) -> Result<(), CatalogError> {
        if !state.log_opened {
            state.log = self.open_log(shard).await?;
            state.log_opened = true;
        }
        Ok(())
    }

    /// The shard holding partition `id`.
    fn shard_of_partition(&self, id: PartitionId) -> u32 {
        shard_of(id.0, id.1, self.config.shard_count.max(1))
    }

    async fn load_partition(
        &self,
        state: &mut ShardState,
        id: PartitionId,
    ) -> Result<Option<PartitionState>, CatalogError> {
        if let Some(p) = state.partitions.get(&id) {
            return Ok(Some(*p));
        }
        self.ensure_log_open(state, self.shard_of_partition(id))
            .await?;
        match self.catalog.topic_by_id(id.0).await? {
            Some(t) if id.1 >= 0 && id.1 < t.partitions => {}
            // Partitions may have been added since the topic was cached: look once more.
            Some(t) if id.1 >= t.partitions => {
                self.catalog.invalidate_topics();
                match self.catalog.topic_by_id(id.0).await? {
                    Some(t) if id.1 < t.partitions => {}
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        }
        let Some((mut record, version)) = self.catalog.partition(id.0, id.1).await? else {
            return Ok(None);
        };
        Self::replay_row(state, id, &mut record);
        let p = PartitionState { record, version };
        state.partitions.insert(id, p);
        Ok(Some(p))
    }

    async fn load_producer(
        &self,
        state: &mut ShardState,
        key: ProducerKey,
    ) -> Result<StoredProducer, CatalogError> {
        if let Some(p) = state.producers.get(&key) {
            return Ok(p.clone());
        }
        self.ensure_log_open(state, self.shard_of_partition((key.0, key.1)))
            .await?;
        let stored = self.catalog.producer(key.0, key.1, key.2).await?;
        let record = Self::replay_producer_state(state, key, stored);
        state.producers.insert(key, record.clone());
        Ok(record)
    }

    fn remember(state: &mut ShardState, key: String, response: CommitResponse) {
        if state.recent.insert(key.clone(), response).is_none() {
            state.recent_order.push_back(key);
        }
        while state.recent_order.len() > RECENT_COMMITS_KEPT {
            if let Some(old) = state.recent_order.pop_front() {
                state.recent.remove(&old);
            }
        }
    }

    #[instrument(name = "commit", skip_all, fields(shard = request.shard, segment = %request.segment_key, batches = request.batches.len()))]
    async fn commit_inner(&self, request: CommitRequest) -> Result<CommitResponse, SequencerError> {
        let shard = request.shard as usize;
        let (Some(slot), Some(queue)) = (self.shards.get(shard), self.queues.get(shard)) else {
            return Err(SequencerError::InvalidRequest(format!(
                "shard {} is outside the cluster's {} shards",
                request.shard,
                self.shards.len()
            )));
        };
        let shard_count = self.config.shard_count.max(1);
        if let Some(b) = request
            .batches
            .iter()
            .find(|b| shard_of(b.topic_id, b.partition, shard_count) != request.shard)
        {
            return Err(SequencerError::InvalidRequest(format!(
                "partition {} of {} is not in shard {}",
                b.partition, b.topic_id, request.shard
            )));
        }
        self.commit_in_turn(slot, queue, request).await
    }

    /// The checks of a commit under its shard's lock, before anything is written: the lease,
    /// an answer kept from a recent commit of the same segment, and the shard's layout.
    async fn prepare(
        &self,
        state: &mut ShardState,
        request: &CommitRequest,
    ) -> Result<Prepared, SequencerError> {
        state.settle();
        let Some(lease) = state.lease.clone() else {
            return Err(SequencerError::NotOwner {
                shard: request.shard,
                owner: None,
            });
        };
        if let Some(done) = state.recent.get(&recent_key(request)) {
            same_batch_count(&request.segment_key, &done.outcomes, &request.batches)?;
            return Ok(Prepared::Answered(done.clone()));
        }
        self.ensure_log_open(state, request.shard)
            .await
            .map_err(|e| SequencerError::StoreUnavailable(e.to_string()))?;
        match state.log {
            Some(_) => Ok(Prepared::OnLog),
            None => Ok(Prepared::OnRows(lease)),
        }
    }

    /// Commits a prepared request on its own.
    async fn finish(
        &self,
        state: &mut ShardState,
        request: &CommitRequest,
        prepared: Prepared,
    ) -> Result<CommitResponse, SequencerError> {
        let outcomes = match prepared {
            Prepared::Answered(response) => return Ok(response),
            Prepared::OnLog => self.commit_to_log(state, request).await?,
            Prepared::OnRows(lease) => self.commit_to_rows(state, &lease, request).await?,
        };
        Ok(Self::answered(state, request, outcomes))
    }

    /// The response to a commit that was sequenced, kept for a repeat of it.
    fn answered(
        state: &mut ShardState,
        request: &CommitRequest,
        outcomes: Vec<BatchOutcome>,
    ) -> CommitResponse {
        let response = CommitResponse { outcomes };
        Self::remember(state, recent_key(request), response.clone());
        response
    }

    /// Layout 1: the commit as one transaction of rows, entries and its commit record.
    async fn commit_to_rows(
        &self,
        state: &mut ShardState,
        lease: &HeldLease,
        request: &CommitRequest,
    ) -> Result<Vec<BatchOutcome>, SequencerError> {
        // No read of the commit record first: the write is conditioned on its absence, and only
        // a write that finds it (a retry of a commit that did land) reads the stored answer.

        // A store whose write batches are limited (DynamoDB: 100 operations) gets the commit in
        // chunks of consecutive batches, each sequenced and written on its own with its own
        // commit record, so each is idempotent by itself; one partition's batches stay in order.
        let chunks = plan_chunks(&request.batches, self.catalog.store().max_batch_ops());
        if chunks.len() <= 1 {
            let batches = &request.batches;
            return self
                .apply_or_recall(state, lease, request, batches, &request.segment_key)
                .await;
        }
        debug!(
            chunks = chunks.len(),
            "commit split to fit the store's write limit"
        );
        let mut all = Vec::with_capacity(request.batches.len());
        for (k, range) in chunks.into_iter().enumerate() {
            let chunk_key = format!("{}~{k:04}", request.segment_key);
            let outcomes = self
                .apply_or_recall(state, lease, request, &request.batches[range], &chunk_key)
                .await?;
            all.extend(outcomes);
        }
        Ok(all)
    }

    /// Layout 2: the commit as one log item, or several of [`BATCHES_PER_LOG_ITEM`] batches
    /// (deterministic, so a retry is split the same way and finds the chunks that landed).
    async fn commit_to_log(
        &self,
        state: &mut ShardState,
        request: &CommitRequest,
    ) -> Result<Vec<BatchOutcome>, SequencerError> {
        if request.batches.len() <= BATCHES_PER_LOG_ITEM {
            return self.append_one(state, LogCommit::whole(request)).await;
        }
        let mut all = Vec::with_capacity(request.batches.len());
        for (k, batches) in request.batches.chunks(BATCHES_PER_LOG_ITEM).enumerate() {
            let chunk = LogCommit {
                request,
                batches,
                chunk: Some(k as u32),
                caller: None,
            };
            all.extend(self.append_one(state, chunk).await?);
        }
        Ok(all)
    }

    /// [`apply`](Self::apply)s `batches` under the commit record named `record_name`, or, if
    /// that record already exists (this is a retry of a commit that landed), returns the
    /// outcomes it holds.
    async fn apply_or_recall(
        &self,
        state: &mut ShardState,
        lease: &HeldLease,
        request: &CommitRequest,
        batches: &[CommitBatch],
        record_name: &str,
    ) -> Result<Vec<BatchOutcome>, SequencerError> {
        let record = catalog::segment_commit_key(record_name, request.shard);
        let expired = self.is_expired(&request.segment_key);
        if !expired
            && let Some(outcomes) = self.apply(state, lease, request, batches, record).await?
        {
            return Ok(outcomes);
        }
        match self
            .catalog
            .segment_commit(record_name, request.shard)
            .await
        {
            Ok(Some(done)) => {
                same_batch_count(&request.segment_key, &done.outcomes, batches)?;
                // The write that landed may have gone unanswered (a lost response), so
                // nothing published its offsets: readers learn them from the rows now.
                self.publish_stored(state, batches).await?;
                Ok(done.outcomes)
            }
            // Only a retry of a commit that landed gets an answer for an expired segment.
            Ok(None) if expired => {
                warn!(segment = %request.segment_key, "refusing the commit of an expired segment");
                Err(SequencerError::SegmentExpired(request.segment_key.clone()))
            }
            Ok(None) => Err(SequencerError::StoreUnavailable(format!(
                "commit record of {record_name} reported present but not found; retry"
            ))),
            Err(e) => Err(SequencerError::StoreUnavailable(e.to_string())),
        }
    }

    /// Publishes the stored offsets of the partitions `batches` touch, read afresh.
    async fn publish_stored(
        &self,
        state: &mut ShardState,
        batches: &[CommitBatch],
    ) -> Result<(), SequencerError> {
        let ids: BTreeSet<PartitionId> =
            batches.iter().map(|b| (b.topic_id, b.partition)).collect();
        for id in ids {
            state.partitions.remove(&id);
            let part = self
                .load_partition(state, id)
                .await
                .map_err(|e| SequencerError::StoreUnavailable(e.to_string()))?;
            if let Some(part) = part {
                self.publish_row(id.0, id.1, &part.record);
            }
        }
        Ok(())
    }

    /// Whether `segment_key` was created at least the commit horizon ago (keys without a
    /// creation time, as in tests, never expire).
    fn is_expired(&self, segment_key: &str) -> bool {
        let max_age = self.config.segment_commit_max_age.as_millis() as i64;
        segment_created_ms(segment_key)
            .is_some_and(|created| created <= catalog::now_ms().saturating_sub(max_age))
    }

    /// Sequences `batches` (all of `request`'s or one chunk of them) and writes the result with
    /// the commit record `record` in ONE conditional write fenced by `lease`; `None` if the
    /// record already exists (nothing was written). Caches are only updated after the write
    /// succeeded.
    async fn apply(
        &self,
        state: &mut ShardState,
        lease: &HeldLease,
        request: &CommitRequest,
        batches: &[CommitBatch],
        record: ItemKey,
    ) -> Result<Option<Vec<BatchOutcome>>, SequencerError> {
        let loaded = self.load_for(state, batches).await?;
        // Work on copies; the cache is only updated after the write succeeded.
        let plan = CommitPlan::new(&request.segment_key, batches, loaded, catalog::now_ms());
        let ops = Self::transaction_of(&plan, lease, record, request.segment_size);
        let record_index = ops.len() - 1;
        match self.write_shard(state, lease, ops).await {
            Ok(()) => {}
            Err(MetaStoreError::ConditionFailed { index, .. }) if index == record_index => {
                debug!(segment = %request.segment_key, "already committed");
                return Ok(None);
            }
            Err(e) => return Err(Self::write_error(lease, e)),
        }
        let outcomes = plan.outcomes.clone();
        self.settle_plan(state, plan);
        Ok(Some(outcomes))
    }

    /// Loads the rows and producer states `batches` need (from the cache where it has them).
    async fn load_for(
        &self,
        state: &mut ShardState,
        batches: &[CommitBatch],
    ) -> Result<Loaded, SequencerError> {
        let store_err = |e: CatalogError| SequencerError::StoreUnavailable(e.to_string());
        let mut loaded = Loaded::default();
        let mut unknown: HashSet<PartitionId> = HashSet::new();
        for batch in batches {
            let id = (batch.topic_id, batch.partition);
            if unknown.contains(&id) {
                continue;
            }
            if let Entry::Vacant(slot) = loaded.parts.entry(id) {
                match self.load_partition(state, id).await.map_err(store_err)? {
                    Some(p) => {
                        slot.insert(p);
                    }
                    None => {
                        unknown.insert(id);
                        continue;
                    }
                }
            }
            let key = (batch.topic_id, batch.partition, batch.producer_id);
            if batch.producer_id >= 0 && !loaded.producers.contains_key(&key) {
                let stored = self.load_producer(state, key).await.map_err(store_err)?;
                loaded.producers.insert(key, stored);
            }
        }
        Ok(loaded)
    }

    /// The layout-1 commit: the lease check, each touched partition's row (conditioned on the
    /// version read) and index entries, changed producer states, and the commit record last
    /// (`Absent`: a retry of a commit that landed fails there).
    fn transaction_of(
        plan: &CommitPlan,
        lease: &HeldLease,
        record: ItemKey,
        segment_size: u64,
    ) -> Vec<WriteOp> {
        let mut ops = vec![WriteOp::Check {
            key: catalog::lease_key(&lease.name),
            condition: Condition::Version(lease.version),
        }];
        let mut segment_parts = Vec::new();
        for id in &plan.touched {
            let Some(list) = plan.entries.get(id) else {
                continue;
            };
            let part = plan.parts[id];
            ops.push(WriteOp::Put {
                key: catalog::partition_key(id.0, id.1),
                value: catalog::encode(&part.record),
                condition: Condition::Version(part.version),
            });
            for e in list {
                ops.push(WriteOp::Put {
                    key: catalog::index_key(id.0, id.1, e.last_offset),
                    value: catalog::encode(e),
                    condition: Condition::None,
                });
            }
            if let Some(last) = list.last() {
                segment_parts.push(SegmentPart {
                    topic_id: id.0,
                    partition: id.1,
                    last_offset: last.last_offset,
                });
            }
        }
        for (key, record) in &plan.changed {
            let condition = match plan.producers.get(key) {
                Some(Some((_, version))) => Condition::Version(*version),
                _ => Condition::Absent,
            };
            ops.push(WriteOp::Put {
                key: catalog::producer_key(key.0, key.1, key.2),
                value: catalog::encode(record),
                condition,
            });
        }
        ops.push(WriteOp::Put {
            key: record,
            value: catalog::encode(&SegmentCommitRecord {
                format: ITEM_FORMAT,
                size: segment_size,
                committed_at_ms: plan.now_ms,
                outcomes: plan.outcomes.clone(),
                parts: Some(segment_parts),
            }),
            condition: Condition::Absent,
        });
        ops
    }

    /// After a layout-1 commit landed: the cache takes the plan's rows (each written row one
    /// version on) and producer states, and the new watermarks are published.
    fn settle_plan(&self, state: &mut ShardState, plan: CommitPlan) {
        let CommitPlan {
            touched,
            mut parts,
            entries,
            mut changed,
            producers,
            ..
        } = plan;
        for id in touched {
            let Some(mut part) = parts.remove(&id) else {
                continue;
            };
            if entries.contains_key(&id) {
                part.version += 1;
            }
            self.publish_row(id.0, id.1, &part.record);
            state.partitions.insert(id, part);
        }
        for (key, stored) in producers {
            let stored = match changed.remove(&key) {
                Some(record) => Some((record, stored.map_or(1, |(_, version)| version + 1))),
                None => stored,
            };
            state.producers.insert(key, stored);
        }
        if state.producers.len() > PRODUCERS_CACHED {
            state.producers.clear();
        }
    }
}

impl Indexer {
    /// Writes `ops`, whose first operation is the check of the shard lease `lease`. While the
    /// write is out the cached rows are marked unsettled; if it fails they are forgotten
    /// (whatever happened, the write may even have landed), and a failed lease check drops
    /// the lease (this replica was deposed).
    async fn write_shard(
        &self,
        state: &mut ShardState,
        lease: &HeldLease,
        ops: Vec<WriteOp>,
    ) -> Result<(), MetaStoreError> {
        state.unsettled = true;
        let items = ops.len();
        let written = self
            .catalog
            .store()
            .write(ops)
            .instrument(tracing::info_span!("store_write", items))
            .await;
        state.unsettled = false;
        if let Err(e) = &written {
            state.forget_rows();
            if matches!(e, MetaStoreError::ConditionFailed { index: 0, .. }) {
                warn!(lease = %lease.name, "shard write fenced: shard lease lost");
                metrics::counter!(names::INDEXER_FENCED).increment(1);
                state.lease = None;
            }
        }
        written
    }

    /// The sequencer's error for a failed [`Indexer::write_shard`].
    fn write_error(lease: &HeldLease, e: MetaStoreError) -> SequencerError {
        match e {
            MetaStoreError::ConditionFailed { index: 0, .. } => {
                SequencerError::Fenced(lease.name.clone())
            }
            other => SequencerError::StoreUnavailable(other.to_string()),
        }
    }
}

/// What a commit needs once its shard's lock is held and the checks are done.
enum Prepared {
    /// A repeat of a recent commit: its kept answer.
    Answered(CommitResponse),
    /// To be appended to the shard's log.
    OnLog,
    /// To be written as rows (layout 1), fenced by the lease.
    OnRows(HeldLease),
}

/// The key of a commit's kept answer: one per segment and shard.
fn recent_key(request: &CommitRequest) -> String {
    format!("{}#{}", request.segment_key, request.shard)
}

/// Splits a commit's batches into runs of consecutive batches whose write fits `max_ops`
/// operations: besides the lease check and the commit record, a batch adds at most one index
/// entry, its partition's row (first batch of the partition in the run) and its producer's
/// state (first batch of that producer and partition in the run). Deterministic, so a retried
/// commit is split the same way and finds the records of the chunks already written.
fn plan_chunks(batches: &[CommitBatch], max_ops: usize) -> Vec<std::ops::Range<usize>> {
    let room = max_ops.saturating_sub(2).max(3);
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut used = 0;
    let mut partitions: HashSet<PartitionId> = HashSet::new();
    let mut producers: HashSet<ProducerKey> = HashSet::new();
    for (i, b) in batches.iter().enumerate() {
        let pid = (b.topic_id, b.partition);
        let pkey = (b.topic_id, b.partition, b.producer_id);
        let cost = |partitions: &HashSet<PartitionId>, producers: &HashSet<ProducerKey>| {
            1 + usize::from(!partitions.contains(&pid))
                + usize::from(b.producer_id >= 0 && !producers.contains(&pkey))
        };
        if used + cost(&partitions, &producers) > room && i > start {
            chunks.push(start..i);
            start = i;
            used = 0;
            partitions.clear();
            producers.clear();
        }
        used += cost(&partitions, &producers);
        partitions.insert(pid);
        if b.producer_id >= 0 {
            producers.insert(pkey);
        }
    }
    chunks.push(start..batches.len());
    chunks
}

/// A repeated commit must list as many batches as the one that landed: a segment key names
/// one object, so another list under a committed key is not a retry (the stored outcomes
/// would answer batches they do not belong to). The count is what the commit record keeps.
fn same_batch_count(
    segment_key: &str,
    outcomes: &[BatchOutcome],
    batches: &[CommitBatch],
) -> Result<(), SequencerError> {
    if outcomes.len() == batches.len() {
        return Ok(());
    }
    Err(SequencerError::InvalidRequest(format!(
        "segment {segment_key} was committed with {} batches, this commit lists {}",
        outcomes.len(),
        batches.len()
    )))
}

#[async_trait]
impl Sequencer for Indexer {
    async fn commit(&self, request: CommitRequest) -> Result<CommitResponse, SequencerError> {
        if request.segment_key.is_empty() {
            return Err(SequencerError::InvalidRequest("empty segment key".into()));
        }
        let m = &self.metrics;
        let _queued = Queued::enter(&m.queue_depth);
        let shard_stats = self.stats.get(request.shard as usize);
        let _queued_on_shard = shard_stats.map(ShardStats::enter);
        let started = std::time::Instant::now();
        let batches = request.batches.len() as u64;
        let records: u64 = request
            .batches
            .iter()
            .map(|b| u64::from(b.record_count))
            .sum();
        let result = self.commit_inner(request).await;
        let elapsed = started.elapsed();
        m.latency.record(elapsed.as_secs_f64());
        if let Some(stats) = shard_stats {
            stats.record(started + elapsed, elapsed);
        }
        if result.is_ok() {
            m.commits.increment(1);
            m.batches.increment(batches);
            m.records.increment(records);
        }
        result
    }

    async fn delete_records(
        &self,
        request: DeleteRecordsRequest,
    ) -> Result<DeleteRecordsResponse, SequencerError> {
        let shard_count = self.config.shard_count.max(1);
        if shard_of(request.topic_id, request.partition, shard_count) != request.shard {
            return Err(SequencerError::InvalidRequest(format!(
                "partition {} of {} is not in shard {}",
                request.partition, request.topic_id, request.shard
            )));
        }
        let log_start_offset = self
            .move_log_start(request.topic_id, request.partition, request.offset)
            .await?;
        Ok(DeleteRecordsResponse { log_start_offset })
    }
}

#[cfg(test)]
mod tests;

//! Fetch: resolve partitions, read through the index and range cache, long-poll on watermarks.
//!
//! Metrics: requests, record bytes returned (their rate per pod is the fetch tier's scaling
//! signal), latency including the long-poll wait, and the long polls waiting right now.
//!
//! Memory: a request reads its partitions in waves whose byte budgets together fit what is
//! left of its response limit (the client's `max_bytes`, capped by the server's
//! `max_response_bytes`), so it never holds more than that, plus the one batch Kafka lets
//! exceed the limit. Each wave first takes its budget from the process's fetch memory
//! ([`FetchConfig::memory_bytes`]), and the bytes read keep their share until the response
//! holding them has been written to the client (slow readers therefore use up the budget, not
//! the process's memory); a request that cannot get it in time answers with what it read so
//! far and a `throttle_time_ms`, so clients back off instead of the process buffering without
//! bound.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafscale_shared::catalog::{Catalog, TopicRecord};
use kafscale_shared::metrics as names;
use kafscale_shared::object_store::ObjectStore;
use kafscale_shared::watermarks::{PartitionOffsets, Watermarks};
use kafscale_shared::wire::fetch_frame::{RecordSplices, concat};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument, warn};
use uuid::Uuid;

use crate::config::FetchConfig;
use crate::error::FetchError;
use crate::index_cache::IndexCache;
use crate::range_cache::{RangeCache, RecordChain};

/// Everything the fetch tier needs to read partitions.
pub struct FetchService {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) watermarks: Arc<Watermarks>,
    pub(crate) index: IndexCache,
    pub(crate) ranges: RangeCache,
    pub(crate) config: FetchConfig,
    /// The process's fetch memory, in bytes (see the module note).
    memory: Arc<Semaphore>,
    /// Cancelled at shutdown so long polls answer at once instead of holding the process.
    stopping: CancellationToken,
    metrics: FetchMetrics,
}

/// The fetch path's metric handles.
struct FetchMetrics {
    requests: metrics::Counter,
    bytes: metrics::Counter,
    latency: metrics::Histogram,
    waiting: metrics::Gauge,
    throttled: metrics::Counter,
}

impl FetchMetrics {
    fn new() -> Self {
        FetchMetrics {
            requests: metrics::counter!(names::FETCH_REQUESTS),
            bytes: metrics::counter!(names::FETCH_BYTES),
            latency: metrics::histogram!(names::FETCH_DURATION),
            waiting: metrics::gauge!(names::FETCH_LONG_POLLS),
            throttled: metrics::counter!(names::FETCH_THROTTLED),
        }
    }
}

/// Counts a long poll as waiting until dropped.
struct Waiting<'a>(&'a metrics::Gauge);

impl<'a> Waiting<'a> {
    fn enter(gauge: &'a metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl std::fmt::Debug for FetchService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchService")
            .field("config", &self.config)
            .finish()
    }
}

/// One requested partition, resolved.
struct Target {
    topic_index: usize,
    topic: Option<TopicRecord>,
    unknown_error: FetchError,
    partition: i32,
    fetch_offset: i64,
    max_bytes: i32,
}

/// How long a request waits for fetch memory before answering short with a throttle time.
const MEMORY_WAIT: Duration = Duration::from_millis(500);

/// The throttle time a request answered short for lack of fetch memory asks the client for.
const MEMORY_THROTTLE_MS: i32 = 500;

/// Semaphore permits for a byte budget (tokio counts permits in `u32` per acquisition and caps
/// a semaphore's size).
fn memory_permits(bytes: usize) -> usize {
    bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize))
}

/// The partitions of the next wave, in request order from `next`, with their budgets: each
/// gets its own limit capped by what the wave has not yet handed out of `left`. With nothing
/// left, every remaining partition joins with a zero budget (they still answer their offsets
/// and errors).
fn plan_wave(limits: &[usize], next: usize, left: usize) -> Vec<(usize, usize)> {
    let mut wave = Vec::new();
    let mut planned = 0usize;
    for (i, &limit) in limits.iter().enumerate().skip(next) {
        let budget = limit.min(left - planned);
        wave.push((i, budget));
        planned += budget;
        if left > 0 && planned >= left {
            break;
        }
    }
    wave
}

/// What a pass over a request's partitions read.
struct ReadAll {
    results: Vec<Result<PartitionRead, FetchError>>,
    total: usize,
    /// The process's fetch memory ran out before every partition was read.
    short_of_memory: bool,
}

/// What was read for one partition.
pub(crate) struct PartitionRead {
    pub(crate) offsets: PartitionOffsets,
    pub(crate) records: RecordChain,
}

impl FetchService {
    pub fn new(
        catalog: Arc<Catalog>,
        store: Arc<dyn ObjectStore>,
        watermarks: Arc<Watermarks>,
        config: FetchConfig,
    ) -> Arc<Self> {
        Arc::new(FetchService {
            index: IndexCache::new(catalog.clone(), config.index_cache_entries),
            ranges: RangeCache::new(store, config.range_cache_bytes, config.store_caches_blocks),
            catalog,
            watermarks,
            memory: Arc::new(Semaphore::new(memory_permits(config.memory_bytes))),
            config,
            stopping: CancellationToken::new(),
            metrics: FetchMetrics::new(),
        })
    }

    /// Refreshes, every `store_poll_interval`, the offsets of partitions that long polls wait
    /// on, from the store — how a fetch gateway in its own process learns that the indexer
    /// moved a watermark. Does nothing in standalone (no interval). Runs until shutdown.
    pub async fn run_store_poller(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(interval) = self.config.store_poll_interval else {
            return;
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.stopping.cancelled() => return,
                _ = tick.tick() => {}
            }
            for (topic_id, partition) in self.watermarks.stale_watched(interval) {
                match self.catalog.partition_view(topic_id, partition).await {
                    Ok(Some(row)) => self.watermarks.publish(
                        topic_id,
                        partition,
                        PartitionOffsets {
                            log_start_offset: row.log_start_offset,
                            high_watermark: row.next_offset,
                        },
                    ),
                    Ok(None) => {}
                    Err(e) => debug!(error = %e, "watermark poll failed"),
                }
            }
        }
    }

    /// Ends every long poll now and answers future ones without waiting (shutdown).
    pub fn stop_waiting(&self) {
        self.stopping.cancel();
    }

    /// The partition's readable range, from the watermark registry or the store.
    pub(crate) async fn offsets(
        &self,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<PartitionOffsets, FetchError> {
        let known = match self.config.store_poll_interval {
            None => self.watermarks.get(topic_id, partition),
            Some(age) => self.watermarks.get_fresh(topic_id, partition, age),
        };
        if let Some(o) = known {
            return Ok(o);
        }
        self.offsets_from_store(topic_id, partition).await
    }

    /// The partition's readable range as the store has it now (published for later reads).
    async fn offsets_from_store(
        &self,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<PartitionOffsets, FetchError> {
        let row = self
            .catalog
            .partition_view(topic_id, partition)
            .await?
            .ok_or(FetchError::UnknownTopicOrPartition)?;
        let offsets = PartitionOffsets {
            log_start_offset: row.log_start_offset,
            high_watermark: row.next_offset,
        };
        self.watermarks.publish(topic_id, partition, offsets);
        Ok(self.watermarks.get(topic_id, partition).unwrap_or(offsets))
    }

    /// Reads whole batches starting at the one holding `offset`, up to `max_bytes` (at least one
    /// batch when `allow_oversized_first`).
    pub(crate) async fn read_partition(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        allow_oversized_first: bool,
    ) -> Result<PartitionRead, FetchError> {
        let mut offsets = self.offsets(topic_id, partition).await?;
        if offset > offsets.high_watermark && self.config.store_poll_interval.is_some() {
            // The client may have read further through another gateway whose indexer news was
            // fresher than ours: ask the store before calling its offset out of range (which
            // would make the client reset its position).
            offsets = self.offsets_from_store(topic_id, partition).await?;
        }
        let id = (topic_id, partition);
        match self
            .read_in_range(id, offset, offsets, max_bytes, allow_oversized_first)
            .await
        {
            Err(FetchError::IndexMoved(why)) => {
                // Our log start or cached index entries were older than retention and garbage
                // collection: forget them and read again from the store's view.
                warn!(%why, topic_id = %topic_id, partition, offset, "re-reading the partition's log start and index");
                self.index.forget(topic_id, partition);
                let offsets = self.offsets_from_store(topic_id, partition).await?;
                self.read_in_range(id, offset, offsets, max_bytes, allow_oversized_first)
                    .await
            }
            other => other,
        }
    }

    /// [`FetchService::read_partition`] with the partition's `offsets` known.
    async fn read_in_range(
        &self,
        (topic_id, partition): (Uuid, i32),
        offset: i64,
        offsets: PartitionOffsets,
        max_bytes: usize,
        allow_oversized_first: bool,
    ) -> Result<PartitionRead, FetchError> {
        if offset < offsets.log_start_offset || offset > offsets.high_watermark {
            return Err(FetchError::OffsetOutOfRange {
                offset,
                log_start: offsets.log_start_offset,
                high_watermark: offsets.high_watermark,
            });
        }
        if offset == offsets.high_watermark || (max_bytes == 0 && !allow_oversized_first) {
            return Ok(PartitionRead {
                offsets,
                records: RecordChain::default(),
            });
        }
        let entries = self
            .index
            .entries_from(
                topic_id,
                partition,
                offset,
                offsets.high_watermark,
                max_bytes as u64,
            )
            .await?;
        if entries.is_empty() {
            return Err(FetchError::IndexMoved(format!(
                "no index entry holds offset {offset}"
            )));
        }
        let mut records = RecordChain::default();
        'entries: for entry in entries {
            let range = self.ranges.read(&entry).await?;
            for batch in range.batches() {
                if batch.last_offset < offset {
                    continue;
                }
                if records.len() + batch.bytes.len() > max_bytes
                    && !(records.is_empty() && allow_oversized_first)
                {
                    break 'entries;
                }
                records.push(&range, &batch);
            }
        }
        Ok(PartitionRead { offsets, records })
    }

    async fn resolve(&self, request: &FetchRequest, version: i16) -> Vec<Target> {
        let mut targets = Vec::new();
        for (topic_index, t) in request.topics.iter().enumerate() {
            let (lookup, unknown) = if version >= 13 {
                (
                    self.catalog.topic_by_id(t.topic_id).await,
                    FetchError::UnknownTopicId,
                )
            } else {
                (
                    self.catalog.topic(&t.topic.0).await,
                    FetchError::UnknownTopicOrPartition,
                )
            };
            // A store that cannot answer is a retriable error, never "unknown topic" (clients
            // would drop the partition or reset their offsets).
            let (topic, unknown_error) = match lookup {
                Ok(topic) => (topic, unknown),
                Err(e) => (None, FetchError::from(e)),
            };
            for p in &t.partitions {
                targets.push(Target {
                    topic_index,
                    topic: topic.clone(),
                    unknown_error: unknown_error.clone(),
                    partition: p.partition,
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                });
            }
        }
        targets
    }

    /// Serves one Fetch request, long-polling until `min_bytes` are available or `max_wait_ms`
    /// passes.
    #[instrument(skip_all, fields(version, topics = request.topics.len()))]
    pub async fn fetch(&self, request: FetchRequest, version: i16) -> FetchResponse {
        self.fetch_spliced(request, version, None).await
    }

    /// [`FetchService::fetch`] for the wire: a partition's records that are several chunks
    /// (batches as stored, each behind its real base offset) go into `splices`, and the
    /// response holds tickets for them, to be encoded with the same `splices`. Without
    /// `splices`, they are copied into one `Bytes` each.
    pub async fn fetch_spliced(
        &self,
        request: FetchRequest,
        version: i16,
        splices: Option<&RecordSplices>,
    ) -> FetchResponse {
        let started = std::time::Instant::now();
        self.metrics.requests.increment(1);
        let targets = self.resolve(&request, version).await;
        let max_wait =
            Duration::from_millis(request.max_wait_ms.max(0) as u64).min(self.config.max_wait_cap);
        let deadline = Instant::now() + max_wait;
        let min_bytes = request.min_bytes.max(0) as usize;
        let response_max = if version >= 3 && request.max_bytes > 0 {
            request.max_bytes as usize
        } else {
            usize::MAX
        }
        .min(self.config.max_response_bytes)
        .min(memory_permits(self.config.memory_bytes));
        // Subscribe before reading so a commit between the read and the wait is not missed.
        let mut receivers: Vec<watch::Receiver<PartitionOffsets>> = Vec::new();
        for t in &targets {
            if let Some(topic) = &t.topic
                && self.offsets(topic.topic_id, t.partition).await.is_ok()
                && let Some(mut rx) = self.watermarks.subscribe(topic.topic_id, t.partition)
            {
                rx.borrow_and_update();
                receivers.push(rx);
            }
        }
        loop {
            let memory_deadline = deadline.max(Instant::now() + MEMORY_WAIT);
            let read = self.read_all(&targets, response_max, memory_deadline).await;
            let any_error = read.results.iter().any(|r| r.is_err());
            if read.total >= min_bytes
                || any_error
                || read.short_of_memory
                || receivers.is_empty()
                || Instant::now() >= deadline
                || self.stopping.is_cancelled()
            {
                self.metrics.bytes.increment(read.total as u64);
                self.metrics.latency.record(started.elapsed().as_secs_f64());
                let mut response =
                    build_response(&request, version, &targets, read.results, splices);
                if read.short_of_memory {
                    self.metrics.throttled.increment(1);
                    response.throttle_time_ms = MEMORY_THROTTLE_MS;
                }
                return response;
            }
            let waiting = Waiting::enter(&self.metrics.waiting);
            let changed =
                futures::future::select_all(receivers.iter_mut().map(|rx| Box::pin(rx.changed())));
            tokio::select! {
                // Read again; past the deadline the next pass returns whatever it finds.
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.stopping.cancelled() => {}
            }
            drop(waiting);
            for rx in receivers.iter_mut() {
                rx.borrow_and_update();
            }
            debug!("watermark moved; fetching again");
        }
    }

    /// Reads every target partition within `response_max` bytes, in waves (see
    /// [`plan_wave`]). Within a wave the reads run concurrently: each partition's index lookups
    /// and object-store range reads overlap the others' (against S3, a fetch of eight
    /// partitions costs one round trip instead of eight). A wave first takes its budget from
    /// the process's fetch memory, waiting until `memory_deadline`; each partition's bytes
    /// keep their share until they are dropped, after the answer has been written. See [`FetchService::read_oversized_first`] for a batch larger than the limits.
    async fn read_all(
        &self,
        targets: &[Target],
        response_max: usize,
        memory_deadline: Instant,
    ) -> ReadAll {
        let mut limits = Vec::with_capacity(targets.len());
        for t in targets {
            limits.push(if self.caught_up(t).await {
                0
            } else {
                t.max_bytes.max(0) as usize
            });
        }
        let mut results: Vec<Option<Result<PartitionRead, FetchError>>> =
            targets.iter().map(|_| None).collect();
        let (mut total, mut next, mut short_of_memory) = (0usize, 0usize, false);
        while next < targets.len() {
            let mut wave = plan_wave(&limits, next, response_max.saturating_sub(total));
            let planned: usize = wave.iter().map(|(_, b)| b).sum();
            let mut permit = None;
            if planned > 0 {
                match self.take_memory(planned, memory_deadline).await {
                    Some(p) => permit = Some(p),
                    None => {
                        // Answer what was read; the rest only with its offsets.
                        short_of_memory = true;
                        wave = (next..targets.len()).map(|i| (i, 0)).collect();
                    }
                }
            }
            next = wave.last().map_or(targets.len(), |(i, _)| i + 1);
            let reads = futures::future::join_all(
                wave.iter()
                    .map(|&(i, budget)| self.read_target(&targets[i], budget, false)),
            )
            .await;
            for ((i, _), mut read) in wave.into_iter().zip(reads) {
                if let Ok(r) = &mut read {
                    total += r.records.len();
                    // The bytes stay counted until the answer holding them is written.
                    if let Some(share) = permit.as_mut().and_then(|p| p.split(r.records.len())) {
                        r.records = std::mem::take(&mut r.records).held_by(share);
                    }
                }
                results[i] = Some(read);
            }
            // What the wave planned but did not read goes back now (`permit` drops).
        }
        if !short_of_memory {
            total = self
                .read_oversized_first(targets, &mut results, total)
                .await;
        }
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or(Err(FetchError::UnknownTopicOrPartition)))
            .collect();
        ReadAll {
            results,
            total,
            short_of_memory,
        }
    }

    /// Whether the target is known to be at its high watermark: nothing to read, so it needs
    /// no share of the response (a wave then need not stop at it).
    async fn caught_up(&self, t: &Target) -> bool {
        let Some(topic) = &t.topic else { return true };
        if t.partition < 0 || t.partition >= topic.partitions {
            return true;
        }
        self.offsets(topic.topic_id, t.partition)
            .await
            .is_ok_and(|o| t.fetch_offset == o.high_watermark)
    }

    /// `bytes` of the process's fetch memory, or `None` if they are not free by `deadline`.
    async fn take_memory(&self, bytes: usize, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        let permits = u32::try_from(memory_permits(bytes)).unwrap_or(u32::MAX);
        tokio::time::timeout_at(deadline, self.memory.clone().acquire_many_owned(permits))
            .await
            .ok()?
            .ok()
    }

    /// Kafka's rule for a batch larger than the limits (KIP-74): if the first partition that
    /// has records to give could not give its first batch within its budget, that one batch is
    /// returned whatever its size, and nothing after it. Re-reads that partition if so, and
    /// returns the bytes the answer now holds.
    async fn read_oversized_first(
        &self,
        targets: &[Target],
        results: &mut [Option<Result<PartitionRead, FetchError>>],
        total: usize,
    ) -> usize {
        let first = targets.iter().zip(results.iter()).position(|(t, r)| {
            matches!(r, Some(Ok(read)) if !read.records.is_empty()
                || t.fetch_offset < read.offsets.high_watermark)
        });
        let Some(i) = first else { return total };
        if results[i]
            .as_ref()
            .is_some_and(|r| r.as_ref().is_ok_and(|r| !r.records.is_empty()))
        {
            return total;
        }
        let read = self.read_target(&targets[i], 0, true).await;
        let total = read.as_ref().map_or(0, |r| r.records.len());
        results[i] = Some(read);
        for later in results.iter_mut().skip(i + 1).flatten().flatten() {
            later.records = RecordChain::default();
        }
        total
    }

    async fn read_target(
        &self,
        t: &Target,
        budget: usize,
        allow_oversized_first: bool,
    ) -> Result<PartitionRead, FetchError> {
        match &t.topic {
            None => Err(t.unknown_error.clone()),
            Some(topic) if t.partition < 0 || t.partition >= topic.partitions => {
                Err(FetchError::UnknownTopicOrPartition)
            }
            Some(topic) => {
                self.read_partition(
                    topic.topic_id,
                    t.partition,
                    t.fetch_offset,
                    budget,
                    allow_oversized_first,
                )
                .await
            }
        }
    }
}

fn build_response(
    request: &FetchRequest,
    version: i16,
    targets: &[Target],
    results: Vec<Result<PartitionRead, FetchError>>,
    splices: Option<&RecordSplices>,
) -> FetchResponse {
    let mut response = FetchResponse::default();
    response.session_id = 0;
    let mut topics: Vec<FetchableTopicResponse> = request
        .topics
        .iter()
        .map(|t| {
            let mut r = FetchableTopicResponse::default();
            if version >= 13 {
                r.topic_id = t.topic_id;
            } else {
                r.topic = TopicName(t.topic.0.clone());
            }
            r
        })
        .collect();
    for (t, result) in targets.iter().zip(results) {
        let mut p = PartitionData::default();
        p.partition_index = t.partition;
        p.preferred_read_replica = BrokerId(-1);
        p.aborted_transactions = if version >= 4 { Some(Vec::new()) } else { None };
        match result {
            Ok(read) => {
                p.high_watermark = read.offsets.high_watermark;
                p.last_stable_offset = read.offsets.high_watermark;
                p.log_start_offset = read.offsets.log_start_offset;
                p.records = Some(match splices {
                    Some(splices) => splices.records(read.records.into_chunks()),
                    None => concat(read.records.into_chunks()),
                });
            }
            Err(e) => {
                p.error_code = e.kafka_error().code();
                p.high_watermark = -1;
                p.last_stable_offset = -1;
                p.log_start_offset = -1;
                if let FetchError::OffsetOutOfRange {
                    log_start,
                    high_watermark,
                    ..
                } = e
                {
                    p.high_watermark = high_watermark;
                    p.last_stable_offset = high_watermark;
                    p.log_start_offset = log_start;
                }
                p.records = Some(Bytes::new());
            }
        }
        if let Some(topic) = topics.get_mut(t.topic_index) {
            topic.partitions.push(p);
        }
    }
    response.responses = std::mem::take(&mut topics);
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::protocol::StrBytes;
    use kafscale_shared::meta_store::MemoryMetaStore;
    use kafscale_shared::object_store::MemoryObjectStore;

    use super::*;

    /// Partition 0 of `id` as an indexer elsewhere leaves it: `next_offset` in its store row.
    async fn store_high_watermark(catalog: &Catalog, id: Uuid, next_offset: i64) {
        use kafscale_shared::catalog::{ITEM_FORMAT, PartitionRecord, encode, partition_key};
        use kafscale_shared::meta_store::{Condition, WriteOp};

        let row = PartitionRecord {
            format: ITEM_FORMAT,
            next_offset,
            log_start_offset: 0,
            bytes: 10,
            max_timestamp: -1,
        };
        let put = WriteOp::Put {
            key: partition_key(id, 0),
            value: encode(&row),
            condition: Condition::None,
        };
        catalog.store().write(vec![put]).await.expect("write");
    }

    #[tokio::test]
    async fn a_gateway_in_its_own_process_learns_new_watermarks_from_the_store() {
        let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
        let id = catalog
            .create_topic("t", 1, BTreeMap::new())
            .await
            .expect("create")
            .topic_id;
        let watermarks = Arc::new(Watermarks::new());
        let service = FetchService::new(
            catalog.clone(),
            Arc::new(MemoryObjectStore::new()),
            watermarks.clone(),
            FetchConfig {
                store_poll_interval: Some(Duration::from_millis(20)),
                ..FetchConfig::default()
            },
        );
        assert_eq!(
            service
                .offsets(id, 0)
                .await
                .expect("offsets")
                .high_watermark,
            0
        );
        let mut rx = watermarks.subscribe(id, 0).expect("seeded");
        let shutdown = CancellationToken::new();
        let poller = tokio::spawn(service.clone().run_store_poller(shutdown.clone()));
        // The indexer (elsewhere) commits: only the store knows.
        store_high_watermark(&catalog, id, 7).await;
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("the poller noticed")
            .expect("open");
        assert_eq!(rx.borrow().high_watermark, 7);
        // Readers without a waiter also see it once the known value is older than the interval.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            service
                .offsets(id, 0)
                .await
                .expect("offsets")
                .high_watermark,
            7
        );
        shutdown.cancel();
        poller.await.expect("poller");
    }

    #[test]
    fn a_wave_hands_out_no_more_than_is_left() {
        // Limits in request order; 2.5 MiB left.
        let mib = 1 << 20;
        let limits = [mib, 0, mib, mib, mib];
        assert_eq!(
            plan_wave(&limits, 0, 5 * mib / 2),
            vec![(0, mib), (1, 0), (2, mib), (3, mib / 2)]
        );
        assert_eq!(plan_wave(&limits, 4, 5 * mib / 2), vec![(4, mib)]);
        // Nothing left: the rest in one wave, for their offsets only.
        assert_eq!(plan_wave(&limits, 2, 0), vec![(2, 0), (3, 0), (4, 0)]);
        for left in [0, 1, mib, 3 * mib, 10 * mib] {
            for next in 0..limits.len() {
                let planned: usize = plan_wave(&limits, next, left).iter().map(|(_, b)| b).sum();
                assert!(planned <= left, "{planned} > {left}");
            }
        }
    }

    #[tokio::test]
    async fn a_fetch_without_memory_answers_short_with_a_throttle_time() {
        let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
        let id = catalog
            .create_topic("t", 1, BTreeMap::new())
            .await
            .expect("create")
            .topic_id;
        store_high_watermark(&catalog, id, 7).await;
        let service = FetchService::new(
            catalog,
            Arc::new(MemoryObjectStore::new()),
            Arc::new(Watermarks::new()),
            FetchConfig {
                memory_bytes: 1 << 20,
                ..FetchConfig::default()
            },
        );
        // Every byte of fetch memory is taken by other requests.
        let taken = service.memory.acquire_many(1 << 20).await.expect("open");
        let mut request = FetchRequest::default();
        request.max_wait_ms = 0;
        request.max_bytes = 1 << 20;
        let mut topic = kafka_protocol::messages::fetch_request::FetchTopic::default();
        topic.topic = TopicName(StrBytes::from_static_str("t"));
        let mut p = kafka_protocol::messages::fetch_request::FetchPartition::default();
        p.partition_max_bytes = 1 << 20;
        topic.partitions.push(p);
        request.topics.push(topic);
        let response = service.fetch(request, 12).await;
        assert_eq!(response.throttle_time_ms, MEMORY_THROTTLE_MS);
        let part = &response.responses[0].partitions[0];
        assert_eq!(part.error_code, 0);
        assert_eq!(part.high_watermark, 7);
        assert_eq!(part.records.as_ref().map(Bytes::len), Some(0));
        drop(taken);
    }

    /// A memory store whose reads fail while `down` is set.
    #[derive(Debug, Default)]
    struct Outage {
        inner: MemoryMetaStore,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl kafscale_shared::meta_store::MetaStore for Outage {
        async fn get(
            &self,
            key: &kafscale_shared::meta_store::ItemKey,
        ) -> Result<Option<kafscale_shared::meta_store::Item>, MetaStoreError> {
            self.check()?;
            self.inner.get(key).await
        }
        async fn query(
            &self,
            query: kafscale_shared::meta_store::Query,
        ) -> Result<Vec<kafscale_shared::meta_store::Item>, MetaStoreError> {
            self.check()?;
            self.inner.query(query).await
        }
        async fn write(
            &self,
            ops: Vec<kafscale_shared::meta_store::WriteOp>,
        ) -> Result<(), MetaStoreError> {
            self.check()?;
            self.inner.write(ops).await
        }
        fn max_batch_ops(&self) -> usize {
            self.inner.max_batch_ops()
        }
    }

    use kafka_protocol::error::ResponseError;
    use kafscale_shared::meta_store::MetaStoreError;

    impl Outage {
        fn check(&self) -> Result<(), MetaStoreError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                Err(MetaStoreError::Unavailable("injected outage".into()))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn a_store_outage_is_a_retriable_error_not_an_unknown_topic() {
        let store = Arc::new(Outage::default());
        let catalog = Arc::new(Catalog::new(store.clone()));
        let id = catalog
            .create_topic("t", 1, BTreeMap::new())
            .await
            .expect("create")
            .topic_id;
        let service = FetchService::new(
            catalog,
            Arc::new(MemoryObjectStore::new()),
            Arc::new(Watermarks::new()),
            FetchConfig::default(),
        );
        store.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for (version, topic) in [(12, Some("t")), (13, None)] {
            let mut request = FetchRequest::default();
            request.max_bytes = 1 << 20;
            let mut t = FetchTopic::default();
            match topic {
                Some(name) => t.topic = TopicName(StrBytes::from_static_str(name)),
                None => t.topic_id = id,
            }
            let mut p = FetchPartition::default();
            p.partition_max_bytes = 1 << 20;
            t.partitions = vec![p];
            request.topics = vec![t];
            let response = service.fetch(request, version).await;
            assert_eq!(
                response.responses[0].partitions[0].error_code,
                ResponseError::KafkaStorageError.code(),
                "Fetch v{version} during an outage"
            );
        }
        let mut request = kafka_protocol::messages::ListOffsetsRequest::default();
        let mut t = kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_static_str("t"));
        t.partitions = vec![Default::default()];
        request.topics = vec![t];
        let response = service.list_offsets(request, 7).await;
        assert_eq!(
            response.topics[0].partitions[0].error_code,
            ResponseError::KafkaStorageError.code()
        );
    }

    #[tokio::test]
    async fn stop_waiting_ends_long_polls_at_once() {
        let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
        catalog
            .create_topic("t", 1, BTreeMap::new())
            .await
            .expect("create");
        let service = FetchService::new(
            catalog,
            Arc::new(MemoryObjectStore::new()),
            Arc::new(Watermarks::new()),
            FetchConfig::default(),
        );
        let mut request = FetchRequest::default();
        request.max_wait_ms = 20_000;
        request.min_bytes = 1;
        request.max_bytes = 1 << 20;
        let mut topic = FetchTopic::default();
        topic.topic = TopicName(StrBytes::from_static_str("t"));
        let mut p = FetchPartition::default();
        p.partition_max_bytes = 1 << 20;
        topic.partitions = vec![p];
        request.topics = vec![topic];
        let poll = tokio::spawn({
            let service = service.clone();
            async move { service.fetch(request, 12).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!poll.is_finished(), "an empty partition is long-polled");
        service.stop_waiting();
        let response = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("the long poll ended when asked to")
            .expect("task");
        assert_eq!(response.responses[0].partitions[0].error_code, 0);
    }
}

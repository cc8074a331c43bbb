//! Layout 2's commit path (see [`kafscale_shared::shard_log`]): a commit is one item appended
//! to the shard's log with an `Absent` condition at the next sequence number.
//!
//! The owner keeps every log item above the fold checkpoint in memory and the rows and producer
//! states it has read, with those items replayed onto them. An append that finds its sequence
//! number taken (another process wrote it: a deposed owner that has not noticed yet, or an
//! earlier append of ours whose answer was lost) reads the log forward, replays what it finds,
//! and plans again at the next number; so no two appends are ever computed from different
//! prefixes, whoever holds the lease. A retry of a commit is answered from the log: every item
//! of the last `segment_commit_max_age` is remembered by its record name.

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use kafscale_shared::catalog::{self, Catalog, CatalogError, PartitionRecord, ProducerRecord};
use kafscale_shared::meta_store::{Condition, MetaStoreError, WriteOp};
use kafscale_shared::sequencer::{BatchOutcome, CommitBatch, CommitRequest, SequencerError};
use kafscale_shared::shard_log::{
    self, FoldCheckpoint, LogEntry, LogOutcome, ProducerDelta, SHARD_LOG_FORMAT, ShardLogItem,
    fold_checkpoint_key, shard_log_key,
};
use kafscale_shared::watermarks::PartitionOffsets;
use tracing::{Instrument, debug, warn};

use super::plan::CommitPlan;
use super::{Indexer, PartitionId, ProducerKey, ShardState, same_batch_count};

/// Appends tried per commit chunk before the commit is answered "retry" (each failed one means
/// another writer appended meanwhile, and was read).
const APPEND_ATTEMPTS: usize = 4;

/// How much further back than the answer horizon an opening owner reads the log, for items
/// appended by a process whose clock was behind.
const CLOCK_SKEW_MARGIN_MS: i64 = 60_000;

/// Batches per log item at most: each costs the item about 150 bytes (entry, outcome and
/// producer delta), so an item stays well under DynamoDB's 400 KB.
pub(super) const BATCHES_PER_LOG_ITEM: usize = 2_000;

/// A shard's log as its owner holds it.
#[derive(Debug, Default)]
pub(super) struct LogState {
    /// The last sequence number known to be taken; the next append goes to the one after.
    pub last_seq: u64,
    /// The fold checkpoint as last read or written, with its item version.
    pub folded_through: u64,
    pub checkpoint_version: u64,
    /// The items above the checkpoint, in order: what the next fold writes, and what is
    /// replayed onto rows and producer states read from the store.
    pub unfolded: VecDeque<(u64, Arc<ShardLogItem>)>,
    /// Answers to retries, by record name, with the time each was logged (oldest first).
    pub answers: HashMap<String, Vec<BatchOutcome>>,
    pub answer_order: VecDeque<(i64, String)>,
    /// An append's outcome is unknown, or another writer took a sequence number: read the log
    /// before the next append.
    pub behind: bool,
    /// Write log items and index pages short (layout 3), as the cluster's settings said when
    /// the shard was acquired.
    pub short_items: bool,
}

impl LogState {
    /// Remembers an item's answer and forgets those logged before `horizon_ms`.
    fn remember(&mut self, item: &ShardLogItem, record_name: &str, horizon_ms: i64) {
        if let Some(outcomes) = item.outcomes()
            && self
                .answers
                .insert(record_name.to_string(), outcomes)
                .is_none()
        {
            self.answer_order
                .push_back((item.committed_at_ms, record_name.to_string()));
        }
        while let Some((at, _)) = self.answer_order.front() {
            if *at >= horizon_ms {
                break;
            }
            if let Some((_, name)) = self.answer_order.pop_front() {
                self.answers.remove(&name);
            }
        }
    }
}

/// The log item that records `plan` for `segment_key` (chunk `chunk` of it, if split).
fn log_item_of(
    plan: &CommitPlan,
    segment_key: &str,
    segment_size: u64,
    chunk: Option<u32>,
) -> ShardLogItem {
    let mut item = ShardLogItem {
        format: SHARD_LOG_FORMAT,
        segment_key: segment_key.to_string(),
        segment_size,
        committed_at_ms: plan.now_ms,
        chunk,
        topics: Vec::new(),
        entries: Vec::new(),
        producers: Vec::new(),
        outcomes: plan.outcomes.iter().map(|o| LogOutcome::from(*o)).collect(),
    };
    for id in &plan.touched {
        for e in plan.entries.get(id).into_iter().flatten() {
            let topic = item.topic_position(id.0);
            item.entries.push(LogEntry::of(topic, id.1, e));
        }
    }
    for accepted in &plan.accepted {
        let topic = item.topic_position(accepted.producer.0);
        item.producers.push(ProducerDelta {
            topic,
            partition: accepted.producer.1,
            producer_id: accepted.producer.2,
            epoch: accepted.epoch,
            batch: accepted.batch,
        });
    }
    item
}

/// Creates `shard`'s checkpoint at 0 if it has none, switching the shard to layout 2.
pub(super) async fn create_checkpoint(catalog: &Catalog, shard: u32) -> Result<(), CatalogError> {
    let checkpoint = FoldCheckpoint {
        format: SHARD_LOG_FORMAT,
        folded_through: 0,
    };
    let op = WriteOp::Put {
        key: fold_checkpoint_key(shard),
        value: catalog::encode(&checkpoint),
        condition: Condition::Absent,
    };
    match catalog.store().write(vec![op]).await {
        Ok(()) | Err(MetaStoreError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `shard`'s log items from `start` on.
async fn read_log(
    catalog: &Catalog,
    shard: u32,
    start: Bound<u64>,
) -> Result<Vec<(u64, ShardLogItem)>, CatalogError> {
    Ok(shard_log::read_items(catalog.store().as_ref(), shard, start).await?)
}

impl Indexer {
    /// The earliest commit time whose answer is still kept.
    pub(super) fn answer_horizon_ms(&self) -> i64 {
        let max_age = self.config.segment_commit_max_age.as_millis() as i64;
        catalog::now_ms().saturating_sub(max_age)
    }

    /// Opens `shard`'s log after acquiring it: `None` if the shard is on layout 1. Reads the
    /// checkpoint and the newest items: those above the checkpoint are to be folded and
    /// replayed, and the answers of the last `segment_commit_max_age` are kept for retries.
    /// Older folded items stay in the store as commit records; they are not read.
    pub(super) async fn open_log(&self, shard: u32) -> Result<Option<LogState>, CatalogError> {
        let store = self.catalog.store().as_ref();
        // A cluster switched after this process started is noticed at the next acquisition.
        let cluster = kafscale_shared::shards::read_cluster(store).await?;
        let switch = self.config.shard_log || cluster.is_some_and(|c| c.on_shard_log());
        // Without cluster settings (tests of the indexer alone) this release's newest form.
        let short_items = cluster.map_or(self.config.shard_log, |c| c.short_items());
        if switch {
            create_checkpoint(&self.catalog, shard).await?;
        }
        let Some((checkpoint, version)) = shard_log::read_checkpoint(store, shard).await? else {
            return Ok(None);
        };
        let mut log = LogState {
            last_seq: checkpoint.folded_through,
            folded_through: checkpoint.folded_through,
            checkpoint_version: version,
            short_items,
            ..LogState::default()
        };
        let horizon = self.answer_horizon_ms();
        // Commit times come from the clocks of whoever appended: read a margin further back.
        let read_back_to = horizon.saturating_sub(CLOCK_SKEW_MARGIN_MS);
        let folded_through = log.folded_through;
        let newest = shard_log::read_newest(store, shard, |seq, item| {
            seq > folded_through || item.committed_at_ms >= read_back_to
        })
        .await?;
        for (seq, item) in newest {
            log.remember(&item, &item.record_name(), horizon);
            if seq > log.folded_through {
                if seq != log.last_seq + 1 {
                    return Err(log_gap(shard, log.last_seq + 1, seq));
                }
                log.unfolded.push_back((seq, Arc::new(item)));
                log.last_seq = seq;
            }
        }
        debug!(
            shard,
            last_seq = log.last_seq,
            unfolded = log.unfolded.len(),
            "shard log opened"
        );
        Ok(Some(log))
    }

    /// Reads the items appended after the last one known and replays them onto the cache.
    async fn catch_up(&self, shard: u32, state: &mut ShardState) -> Result<(), CatalogError> {
        let Some(log) = state.log.as_ref() else {
            return Ok(());
        };
        let after = log.last_seq;
        let items = read_log(&self.catalog, shard, Bound::Excluded(after)).await?;
        let horizon = self.answer_horizon_ms();
        for (seq, item) in items {
            let expected = state.log.as_ref().map_or(0, |l| l.last_seq + 1);
            if seq != expected {
                return Err(log_gap(shard, expected, seq));
            }
            self.take_logged(state, seq, Arc::new(item), horizon);
        }
        if let Some(log) = state.log.as_mut() {
            log.behind = false;
        }
        Ok(())
    }

    /// Takes a log item (ours just appended, or another writer's read back): its entries and
    /// producer batches move the cached rows and states, its answer is remembered, and the
    /// watermarks of its partitions are published.
    fn take_logged(&self, state: &mut ShardState, seq: u64, item: Arc<ShardLogItem>, horizon: i64) {
        for (entry, topic_id) in item
            .entries
            .iter()
            .filter_map(|e| Some((e, item.topic_id(e.topic)?)))
        {
            if let Some(part) = state.partitions.get_mut(&(topic_id, entry.partition)) {
                entry.apply_to(&mut part.record);
                self.publish_row(topic_id, entry.partition, &part.record);
            }
        }
        for (delta, topic_id) in item
            .producers
            .iter()
            .filter_map(|d| Some((d, item.topic_id(d.topic)?)))
        {
            let key = (topic_id, delta.partition, delta.producer_id);
            replay_producer(state.producers.get_mut(&key), delta, item.committed_at_ms);
        }
        if let Some(log) = state.log.as_mut() {
            log.remember(&item, &item.record_name(), horizon);
            log.unfolded.push_back((seq, item));
            log.last_seq = seq;
        }
    }

    /// Publishes a partition's offsets as `row` has them.
    pub(super) fn publish_row(&self, topic_id: uuid::Uuid, partition: i32, row: &PartitionRecord) {
        self.watermarks.publish(
            topic_id,
            partition,
            PartitionOffsets {
                log_start_offset: row.log_start_offset,
                high_watermark: row.next_offset,
            },
        );
    }

    /// A row read from the store, with the unfolded log replayed onto it.
    pub(super) fn replay_row(state: &ShardState, id: PartitionId, row: &mut PartitionRecord) {
        let Some(log) = state.log.as_ref() else {
            return;
        };
        for (_, item) in &log.unfolded {
            for e in &item.entries {
                if e.partition == id.1 && item.topic_id(e.topic) == Some(id.0) {
                    e.apply_to(row);
                }
            }
        }
    }

    /// A producer state read from the store (`None`: no row), with the unfolded log replayed
    /// onto it. The version stays the stored row's; 0 stands for "no row in the store".
    pub(super) fn replay_producer_state(
        state: &ShardState,
        key: ProducerKey,
        stored: Option<(ProducerRecord, u64)>,
    ) -> Option<(ProducerRecord, u64)> {
        let Some(log) = state.log.as_ref() else {
            return stored;
        };
        let mut current = stored;
        for (_, item) in &log.unfolded {
            for d in &item.producers {
                if (d.partition, d.producer_id) == (key.1, key.2)
                    && item.topic_id(d.topic) == Some(key.0)
                {
                    replay_producer(Some(&mut current), d, item.committed_at_ms);
                }
            }
        }
        current
    }

    /// Commits `batches` (all of `request`'s or one chunk) to the shard's log, or answers a
    /// retry from it.
    pub(super) async fn append_or_recall(
        &self,
        state: &mut ShardState,
        request: &CommitRequest,
        batches: &[CommitBatch],
        chunk: Option<u32>,
    ) -> Result<Vec<BatchOutcome>, SequencerError> {
        let store_err = |e: CatalogError| SequencerError::StoreUnavailable(e.to_string());
        let record_name = match chunk {
            Some(chunk) => format!("{}~{chunk:04}", request.segment_key),
            None => request.segment_key.clone(),
        };
        for _ in 0..APPEND_ATTEMPTS {
            if state.log.as_ref().is_some_and(|l| l.behind) {
                self.catch_up(request.shard, state)
                    .await
                    .map_err(store_err)?;
            }
            let answered = state
                .log
                .as_ref()
                .and_then(|l| l.answers.get(&record_name).cloned());
            if let Some(outcomes) = answered {
                same_batch_count(&request.segment_key, &outcomes, batches)?;
                // The append may have landed unanswered, so nothing published its offsets.
                self.publish_stored(state, batches).await?;
                return Ok(outcomes);
            }
            if self.is_expired(&request.segment_key) {
                warn!(segment = %request.segment_key, "refusing the commit of an expired segment");
                return Err(SequencerError::SegmentExpired(request.segment_key.clone()));
            }
            let loaded = self.load_for(state, batches).await?;
            let plan = CommitPlan::new(&request.segment_key, batches, loaded, catalog::now_ms());
            let item = log_item_of(&plan, &request.segment_key, request.segment_size, chunk);
            if self.append(state, request.shard, item).await? {
                return Ok(plan.outcomes);
            }
        }
        Err(SequencerError::StoreUnavailable(format!(
            "shard {} log moved under {APPEND_ATTEMPTS} appends; retry",
            request.shard
        )))
    }

    /// Appends `item` at the next sequence number: `true` if it landed (and the cache took
    /// it), `false` if another writer had taken the number (the log is to be read again).
    async fn append(
        &self,
        state: &mut ShardState,
        shard: u32,
        item: ShardLogItem,
    ) -> Result<bool, SequencerError> {
        let Some((seq, short)) = state.log.as_ref().map(|l| (l.last_seq + 1, l.short_items)) else {
            return Err(SequencerError::StoreUnavailable(format!(
                "shard {shard} has no open log"
            )));
        };
        let value = match short {
            true => item.encode_short(),
            false => catalog::encode(&item),
        };
        let op = WriteOp::Put {
            key: shard_log_key(shard, seq),
            value,
            condition: Condition::Absent,
        };
        // Until the answer is in, the append may or may not have landed.
        if let Some(log) = state.log.as_mut() {
            log.behind = true;
        }
        let written = self
            .catalog
            .store()
            .write(vec![op])
            .instrument(tracing::info_span!("store_write", items = 1, seq))
            .await;
        match written {
            Ok(()) => {
                let horizon = self.answer_horizon_ms();
                self.take_logged(state, seq, Arc::new(item), horizon);
                if let Some(log) = state.log.as_mut() {
                    log.behind = false;
                }
                Ok(true)
            }
            Err(MetaStoreError::ConditionFailed { .. }) => {
                debug!(shard, seq, "sequence number taken; reading the log");
                Ok(false)
            }
            Err(e) => Err(SequencerError::StoreUnavailable(e.to_string())),
        }
    }
}

/// Replays a producer batch onto a cached state (nothing cached: nothing to do, the state is
/// replayed when it is loaded).
fn replay_producer(
    cached: Option<&mut Option<(ProducerRecord, u64)>>,
    delta: &ProducerDelta,
    at_ms: i64,
) {
    let Some(cached) = cached else {
        return;
    };
    match cached {
        Some((record, _)) => {
            if let Some(next) = delta.apply_to(Some(record), at_ms) {
                *record = next;
            }
        }
        None => {
            *cached = delta.apply_to(None, at_ms).map(|record| (record, 0));
        }
    }
}

fn log_gap(shard: u32, expected: u64, found: u64) -> CatalogError {
    CatalogError::Store(MetaStoreError::Corrupt {
        key: shard_log_key(shard, found),
        reason: format!(
            "shard log jumps from {} to {found}",
            expected.saturating_sub(1)
        ),
    })
}

//! The shard log: one item per segment commit and shard, the metadata layout (layout 2) that
//! makes a commit cost one small PutItem instead of a transaction with two items per partition
//! (docs/proposals/shard-log.md; issue 16's cost target needs it).
//!
//! A commit appends `slog/{shard}` / `{seq}` with an `Absent` condition. The item holds what
//! the commit decided: the index entries it appended (compact, topic ids written once), the
//! idempotent producers' new batches, and the outcome of every batch, so a retry is answered
//! from the log. Sequence numbers are contiguous per shard and each append is computed from the
//! whole prefix, so two processes that both believe they own a shard can never hand out the
//! same offsets: the second append at a sequence number fails and its writer must replay.
//!
//! The owner folds the log about once a second into per-partition index pages and partition
//! rows, and records how far it got in the shard's [`FoldCheckpoint`]. Readers take the folded
//! state and, above it, the log's entries.
//!
//! Nothing writes this layout yet: these are its types and keys.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::{
    ITEM_FORMAT, IndexEntry, PartitionRecord, ProducerBatch, ProducerRecord, SegmentPart,
};
use crate::keys::StoredSegmentKey;
use crate::meta_store::{Direction, ItemKey, MetaStore, MetaStoreError, Query};
use crate::sequencer::{BatchOutcome, RejectReason};

/// Format of shard-log items as written on layout 2, and of fold checkpoints.
pub const SHARD_LOG_FORMAT: u32 = 2;

/// Format of shard-log items as written on layout 3 ([`ShardLogItem::encode_short`]).
pub const SHARD_LOG_FORMAT_SHORT: u32 = 3;

/// The partition key of one shard's log (sorted by sequence number).
pub fn shard_log_pk(shard: u32) -> String {
    format!("slog/{shard:05}")
}

/// The sort key of a sequence number: fixed width, so the order of keys is the order of numbers.
pub fn sequence_sk(seq: u64) -> String {
    format!("{seq:020}")
}

/// Entry `seq` of `shard`'s log.
pub fn shard_log_key(shard: u32, seq: u64) -> ItemKey {
    ItemKey::new(shard_log_pk(shard), sequence_sk(seq))
}

/// The sequence number of a shard-log item's sort key.
pub fn sequence_of_sk(sk: &str) -> Option<u64> {
    sk.parse().ok()
}

/// Where `shard`'s fold checkpoint lives. Its presence switches the shard to layout 2.
pub fn fold_checkpoint_key(shard: u32) -> ItemKey {
    ItemKey::new(format!("fold/{shard:05}"), "checkpoint")
}

/// How far a shard's log has been folded into index pages and partition rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldCheckpoint {
    pub format: u32,
    /// Every log item with a sequence number up to this one is folded (0: none yet; the log
    /// starts at 1).
    pub folded_through: u64,
}

/// One commit of one shard, as appended to the shard's log. Stored in format 2 (these fields)
/// or 3 ([`ShortLogItem`]); both are read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredLogItem")]
pub struct ShardLogItem {
    pub format: u32,
    pub segment_key: String,
    pub segment_size: u64,
    pub committed_at_ms: i64,
    /// Which chunk of a commit split over several items this is (`None`: not split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
    /// The topics the entries and producers name, each once; they refer to it by position.
    pub topics: Vec<Uuid>,
    pub entries: Vec<LogEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub producers: Vec<ProducerDelta>,
    /// One per batch of the commit request, in its order (the answer to a retry).
    pub outcomes: Vec<LogOutcome>,
}

/// An index entry in the log: [`IndexEntry`] with its partition and without the segment key
/// (the item's). Stored as an array, so a commit of many partitions stays a small item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "LogEntryArray", into = "LogEntryArray")]
pub struct LogEntry {
    /// Position of the topic id in [`ShardLogItem::topics`].
    pub topic: u32,
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub byte_start: u64,
    pub byte_len: u64,
    pub batch_count: u32,
    pub record_count: u64,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub running_max_timestamp: i64,
}

type LogEntryArray = (u32, i32, i64, i64, u64, u64, u32, u64, i64, i64, i64);

impl From<LogEntryArray> for LogEntry {
    fn from(a: LogEntryArray) -> Self {
        LogEntry {
            topic: a.0,
            partition: a.1,
            base_offset: a.2,
            last_offset: a.3,
            byte_start: a.4,
            byte_len: a.5,
            batch_count: a.6,
            record_count: a.7,
            first_timestamp: a.8,
            max_timestamp: a.9,
            running_max_timestamp: a.10,
        }
    }
}

impl From<LogEntry> for LogEntryArray {
    fn from(e: LogEntry) -> Self {
        (
            e.topic,
            e.partition,
            e.base_offset,
            e.last_offset,
            e.byte_start,
            e.byte_len,
            e.batch_count,
            e.record_count,
            e.first_timestamp,
            e.max_timestamp,
            e.running_max_timestamp,
        )
    }
}

/// A log item as stored: format 3 first (its field names are short, so format 2 never
/// matches it, nor it format 2).
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredLogItem {
    Short(ShortLogItem),
    Whole(WholeLogItem),
}

/// Format 2: [`ShardLogItem`]'s fields as they are.
#[derive(Deserialize)]
struct WholeLogItem {
    format: u32,
    segment_key: String,
    segment_size: u64,
    committed_at_ms: i64,
    #[serde(default)]
    chunk: Option<u32>,
    topics: Vec<Uuid>,
    entries: Vec<LogEntry>,
    #[serde(default)]
    producers: Vec<ProducerDelta>,
    outcomes: Vec<LogOutcome>,
}

/// Format 3: what a commit appends most (the segment key, entries' timestamps, an outcome per
/// batch) in fewer bytes, so a commit of a few partitions stays under DynamoDB's 1 KB write
/// unit: short field names, the segment key short ([`StoredSegmentKey`]), topic ids without
/// dashes, entries' offsets and timestamps as differences ([`ShortLogEntry`]), and an outcome
/// that is an append with the same log start as the one before as just the difference of its
/// base offset from that one's.
#[derive(Serialize, Deserialize)]
struct ShortLogItem {
    #[serde(rename = "f")]
    format: u32,
    #[serde(rename = "k")]
    segment: StoredSegmentKey,
    #[serde(rename = "z")]
    segment_size: u64,
    #[serde(rename = "t")]
    committed_at_ms: i64,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    chunk: Option<u32>,
    #[serde(rename = "i")]
    topics: Vec<String>,
    #[serde(rename = "e")]
    entries: Vec<ShortLogEntry>,
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    producers: Vec<ProducerDelta>,
    #[serde(rename = "o")]
    outcomes: Vec<ShortOutcome>,
}

/// `[topic, partition, base offset, last − base, byte start, byte length, batches, records,
/// first timestamp − commit time, max − first, running max − max]` (differences wrap).
type ShortLogEntry = (u32, i32, i64, i64, u64, u64, u32, u64, i64, i64, i64);

/// An outcome in format 3: an append's base offset relative to the outcome before's (its log
/// start unchanged), or the outcome whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum ShortOutcome {
    Appended(i64),
    Whole(LogOutcome),
}

impl TryFrom<StoredLogItem> for ShardLogItem {
    type Error = String;

    fn try_from(stored: StoredLogItem) -> Result<Self, String> {
        match stored {
            StoredLogItem::Whole(w) => Ok(ShardLogItem {
                format: w.format,
                segment_key: w.segment_key,
                segment_size: w.segment_size,
                committed_at_ms: w.committed_at_ms,
                chunk: w.chunk,
                topics: w.topics,
                entries: w.entries,
                producers: w.producers,
                outcomes: w.outcomes,
            }),
            StoredLogItem::Short(s) => s.into_item(),
        }
    }
}

impl ShortLogItem {
    fn of(item: &ShardLogItem) -> ShortLogItem {
        let at = item.committed_at_ms;
        let entries = item
            .entries
            .iter()
            .map(|e| {
                (
                    e.topic,
                    e.partition,
                    e.base_offset,
                    e.last_offset.wrapping_sub(e.base_offset),
                    e.byte_start,
                    e.byte_len,
                    e.batch_count,
                    e.record_count,
                    e.first_timestamp.wrapping_sub(at),
                    e.max_timestamp.wrapping_sub(e.first_timestamp),
                    e.running_max_timestamp.wrapping_sub(e.max_timestamp),
                )
            })
            .collect();
        let (mut base, mut log_start) = (0i64, 0i64);
        let outcomes = item
            .outcomes
            .iter()
            .map(|o| match *o {
                LogOutcome::Offsets(APPENDED, b, start) if start == log_start => {
                    let delta = b.wrapping_sub(base);
                    base = b;
                    ShortOutcome::Appended(delta)
                }
                LogOutcome::Offsets(_, b, start) => {
                    (base, log_start) = (b, start);
                    ShortOutcome::Whole(*o)
                }
                LogOutcome::Rejected(..) => ShortOutcome::Whole(*o),
            })
            .collect();
        ShortLogItem {
            format: SHARD_LOG_FORMAT_SHORT,
            segment: StoredSegmentKey::of(&item.segment_key, 0),
            segment_size: item.segment_size,
            committed_at_ms: at,
            chunk: item.chunk,
            topics: item.topics.iter().map(|t| t.simple().to_string()).collect(),
            entries,
            producers: item.producers.clone(),
            outcomes,
        }
    }

    fn into_item(self) -> Result<ShardLogItem, String> {
        let at = self.committed_at_ms;
        let topics = self
            .topics
            .iter()
            .map(|t| Uuid::try_parse(t).map_err(|e| format!("topic id {t:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let entries = self
            .entries
            .into_iter()
            .map(
                |(topic, partition, base, span, start, len, batches, records, first, max, run)| {
                    let first = at.wrapping_add(first);
                    let max = first.wrapping_add(max);
                    LogEntry {
                        topic,
                        partition,
                        base_offset: base,
                        last_offset: base.wrapping_add(span),
                        byte_start: start,
                        byte_len: len,
                        batch_count: batches,
                        record_count: records,
                        first_timestamp: first,
                        max_timestamp: max,
                        running_max_timestamp: max.wrapping_add(run),
                    }
                },
            )
            .collect();
        let (mut base, mut log_start) = (0i64, 0i64);
        let outcomes = self
            .outcomes
            .into_iter()
            .map(|o| match o {
                ShortOutcome::Appended(delta) => {
                    base = base.wrapping_add(delta);
                    LogOutcome::Offsets(APPENDED, base, log_start)
                }
                ShortOutcome::Whole(whole) => {
                    if let LogOutcome::Offsets(_, b, start) = whole {
                        (base, log_start) = (b, start);
                    }
                    whole
                }
            })
            .collect();
        Ok(ShardLogItem {
            format: self.format,
            segment_key: self.segment.key(0)?,
            segment_size: self.segment_size,
            committed_at_ms: at,
            chunk: self.chunk,
            topics,
            entries,
            producers: self.producers,
            outcomes,
        })
    }
}

/// A batch an idempotent producer appended, to be remembered in its state for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ProducerDeltaArray", into = "ProducerDeltaArray")]
pub struct ProducerDelta {
    pub topic: u32,
    pub partition: i32,
    pub producer_id: i64,
    pub epoch: i16,
    pub batch: ProducerBatch,
}

type ProducerDeltaArray = (u32, i32, i64, i16, i32, i32, i64);

impl From<ProducerDeltaArray> for ProducerDelta {
    fn from(a: ProducerDeltaArray) -> Self {
        ProducerDelta {
            topic: a.0,
            partition: a.1,
            producer_id: a.2,
            epoch: a.3,
            batch: ProducerBatch {
                first_seq: a.4,
                last_seq: a.5,
                base_offset: a.6,
            },
        }
    }
}

impl From<ProducerDelta> for ProducerDeltaArray {
    fn from(d: ProducerDelta) -> Self {
        (
            d.topic,
            d.partition,
            d.producer_id,
            d.epoch,
            d.batch.first_seq,
            d.batch.last_seq,
            d.batch.base_offset,
        )
    }
}

/// A [`BatchOutcome`] as an array: `[0, base, log start]` appended, `[1, base, log start]` a
/// duplicate, `[2, reason]` rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogOutcome {
    Offsets(u8, i64, i64),
    Rejected(u8, u8),
}

const APPENDED: u8 = 0;
const DUPLICATE: u8 = 1;
const REJECTED: u8 = 2;

const REJECT_REASONS: [RejectReason; 4] = [
    RejectReason::UnknownTopicOrPartition,
    RejectReason::OutOfOrderSequence,
    RejectReason::InvalidProducerEpoch,
    RejectReason::UnknownProducerId,
];

impl From<BatchOutcome> for LogOutcome {
    fn from(outcome: BatchOutcome) -> Self {
        match outcome {
            BatchOutcome::Appended {
                base_offset,
                log_start_offset,
            } => LogOutcome::Offsets(APPENDED, base_offset, log_start_offset),
            BatchOutcome::Duplicate {
                base_offset,
                log_start_offset,
            } => LogOutcome::Offsets(DUPLICATE, base_offset, log_start_offset),
            BatchOutcome::Rejected(reason) => {
                let code = REJECT_REASONS.iter().position(|r| *r == reason);
                LogOutcome::Rejected(REJECTED, code.unwrap_or(0) as u8)
            }
        }
    }
}

impl LogOutcome {
    /// The outcome this stands for; `None` for a code this release does not know.
    pub fn outcome(self) -> Option<BatchOutcome> {
        match self {
            LogOutcome::Offsets(APPENDED, base_offset, log_start_offset) => {
                Some(BatchOutcome::Appended {
                    base_offset,
                    log_start_offset,
                })
            }
            LogOutcome::Offsets(DUPLICATE, base_offset, log_start_offset) => {
                Some(BatchOutcome::Duplicate {
                    base_offset,
                    log_start_offset,
                })
            }
            LogOutcome::Rejected(REJECTED, code) => REJECT_REASONS
                .get(code as usize)
                .map(|r| BatchOutcome::Rejected(*r)),
            _ => None,
        }
    }
}

impl ShardLogItem {
    /// The item in format 3 (layout 3): about half the bytes of format 2, which
    /// [`crate::catalog::encode`] writes.
    pub fn encode_short(&self) -> bytes::Bytes {
        crate::catalog::encode(&ShortLogItem::of(self))
    }

    /// The topic id an entry or producer delta refers to by position; `None` if out of range.
    pub fn topic_id(&self, position: u32) -> Option<Uuid> {
        self.topics.get(position as usize).copied()
    }

    /// The entries as index entries, with their topic ids; `None` if one names no topic.
    pub fn index_entries(&self) -> Option<Vec<(Uuid, i32, IndexEntry)>> {
        self.entries
            .iter()
            .map(|e| {
                let entry = IndexEntry {
                    format: ITEM_FORMAT,
                    base_offset: e.base_offset,
                    last_offset: e.last_offset,
                    segment_key: self.segment_key.clone(),
                    byte_start: e.byte_start,
                    byte_len: e.byte_len,
                    batch_count: e.batch_count,
                    record_count: e.record_count,
                    first_timestamp: e.first_timestamp,
                    max_timestamp: e.max_timestamp,
                    running_max_timestamp: Some(e.running_max_timestamp),
                };
                Some((self.topic_id(e.topic)?, e.partition, entry))
            })
            .collect()
    }

    /// The commit's answer, one outcome per batch; `None` if one is unknown to this release.
    pub fn outcomes(&self) -> Option<Vec<BatchOutcome>> {
        self.outcomes.iter().map(|o| o.outcome()).collect()
    }

    /// The name the commit's answer and its commit record go under: the segment key, or
    /// `{key}~{chunk}` for one chunk of a commit split over several items.
    pub fn record_name(&self) -> String {
        match self.chunk {
            Some(chunk) => format!("{}~{chunk:04}", self.segment_key),
            None => self.segment_key.clone(),
        }
    }

    /// The partitions the item appended to, each with the last offset it wrote there (what
    /// keeps the segment referenced, see [`crate::catalog::SegmentCommitRecord::parts`]).
    pub fn segment_parts(&self) -> Vec<SegmentPart> {
        let mut parts: Vec<SegmentPart> = Vec::new();
        for e in &self.entries {
            let Some(topic_id) = self.topic_id(e.topic) else {
                continue;
            };
            match parts
                .iter_mut()
                .find(|p| p.topic_id == topic_id && p.partition == e.partition)
            {
                Some(part) => part.last_offset = part.last_offset.max(e.last_offset),
                None => parts.push(SegmentPart {
                    topic_id,
                    partition: e.partition,
                    last_offset: e.last_offset,
                }),
            }
        }
        parts
    }

    /// Position of `topic_id` in [`ShardLogItem::topics`], added if missing.
    pub fn topic_position(&mut self, topic_id: Uuid) -> u32 {
        match self.topics.iter().position(|t| *t == topic_id) {
            Some(p) => p as u32,
            None => {
                self.topics.push(topic_id);
                (self.topics.len() - 1) as u32
            }
        }
    }
}

impl LogEntry {
    /// `entry` of `partition` of the topic at position `topic` of its item.
    pub fn of(topic: u32, partition: i32, entry: &IndexEntry) -> LogEntry {
        LogEntry {
            topic,
            partition,
            base_offset: entry.base_offset,
            last_offset: entry.last_offset,
            byte_start: entry.byte_start,
            byte_len: entry.byte_len,
            batch_count: entry.batch_count,
            record_count: entry.record_count,
            first_timestamp: entry.first_timestamp,
            max_timestamp: entry.max_timestamp,
            running_max_timestamp: entry.running_max_timestamp.unwrap_or(entry.max_timestamp),
        }
    }

    /// Moves a folded `row` past this entry; an entry the row already covers changes nothing,
    /// so replaying a log item twice is harmless.
    pub fn apply_to(&self, row: &mut PartitionRecord) {
        if self.last_offset >= row.next_offset {
            row.append(self.last_offset, self.byte_len, self.max_timestamp);
        }
    }
}

impl ProducerDelta {
    /// The producer's state with this batch remembered, as the commit made it at `at_ms`;
    /// `None` if `current` already holds it (replayed twice).
    pub fn apply_to(&self, current: Option<&ProducerRecord>, at_ms: i64) -> Option<ProducerRecord> {
        // Base offsets grow in a partition, and epochs only move forward.
        let held = current.is_some_and(|r| {
            r.epoch > self.epoch
                || (r.epoch == self.epoch
                    && r.batches
                        .iter()
                        .any(|b| b.base_offset >= self.batch.base_offset))
        });
        (!held).then(|| ProducerRecord::after_batch(current, self.epoch, self.batch, at_ms))
    }
}

/// A log item arrived out of order: the reader missed `expected` and must read again from the
/// shard's checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceGap {
    pub expected: u64,
    pub found: u64,
}

/// The index entries of a shard's log above a point, per partition, as a reader holds them
/// (the fetch tier between folds, the owner while it replays). Items must arrive in sequence
/// order without a gap; entries are immutable once logged, so holding some that a fold has
/// also written to pages is harmless (readers merge by offset).
#[derive(Debug, Default, Clone)]
pub struct ShardTail {
    last_seq: u64,
    partitions: HashMap<(Uuid, i32), Vec<(u64, IndexEntry)>>,
}

impl ShardTail {
    /// A tail that holds nothing up to and including `seq` (a fold checkpoint).
    pub fn after(seq: u64) -> Self {
        ShardTail {
            last_seq: seq,
            partitions: HashMap::new(),
        }
    }

    /// The sequence number of the last item taken (the starting point if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Takes the item logged at `seq`: the next one, or one already held (ignored).
    pub fn push(&mut self, seq: u64, item: &ShardLogItem) -> Result<(), SequenceGap> {
        if seq <= self.last_seq {
            return Ok(());
        }
        if seq != self.last_seq + 1 {
            return Err(SequenceGap {
                expected: self.last_seq + 1,
                found: seq,
            });
        }
        for (topic_id, partition, entry) in item.index_entries().unwrap_or_default() {
            let list = self.partitions.entry((topic_id, partition)).or_default();
            list.push((seq, entry));
        }
        self.last_seq = seq;
        Ok(())
    }

    /// The partition's high watermark as far as the tail knows it (`None`: nothing logged).
    pub fn high_watermark(&self, topic_id: Uuid, partition: i32) -> Option<i64> {
        let list = self.partitions.get(&(topic_id, partition))?;
        list.last().map(|(_, e)| e.last_offset + 1)
    }

    /// The partition's entries reaching `offset` (last offset ≥ it), in offset order.
    pub fn entries_from(&self, topic_id: Uuid, partition: i32, offset: i64) -> Vec<IndexEntry> {
        let Some(list) = self.partitions.get(&(topic_id, partition)) else {
            return Vec::new();
        };
        let first = list.partition_point(|(_, e)| e.last_offset < offset);
        list[first..].iter().map(|(_, e)| e.clone()).collect()
    }

    /// Forgets the entries of items up to and including `seq` (folded since).
    pub fn forget_through(&mut self, seq: u64) {
        self.partitions.retain(|_, list| {
            list.retain(|(s, _)| *s > seq);
            !list.is_empty()
        });
    }
}

/// How long a shard found on layout 1 is taken to stay there before its checkpoint is looked
/// for again (a shard switches once, when an owner with the shard log takes it).
const LAYOUT_RECHECK: Duration = Duration::from_secs(10);

/// Log items taken into a tail between two prunes (a read of the checkpoint, after which the
/// folded entries are forgotten).
const ITEMS_BETWEEN_PRUNES: u64 = 1_000;

/// One shard's tail as a reading process holds it.
#[derive(Debug)]
struct TailSlot {
    /// Whether the shard has a fold checkpoint (is on the shard log), as of `checked_at`.
    logged: bool,
    checked_at: Option<Instant>,
    tail: ShardTail,
    pruned_at_seq: u64,
}

/// What readers outside the shard's owner see of the shard logs: the entries above each
/// shard's fold, read on demand (a Query of the items after the last one held) and merged
/// with the folded pages and rows by offset. Kept per process in the [`crate::catalog::Catalog`].
#[derive(Debug, Default)]
pub struct LogTails {
    shard_count: std::sync::Mutex<Option<u32>>,
    slots: std::sync::Mutex<HashMap<u32, Arc<tokio::sync::Mutex<TailSlot>>>>,
}

/// A partition's entries above the fold and its high watermark as far as the log knows.
#[derive(Debug, Default, Clone)]
pub struct PartitionTail {
    pub entries: Vec<IndexEntry>,
    pub high_watermark: Option<i64>,
}

impl LogTails {
    /// The shard count of the cluster (`None` while no process has stored it).
    async fn shard_count(&self, store: &dyn MetaStore) -> Result<Option<u32>, MetaStoreError> {
        if let Some(count) = *self.shard_count.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(Some(count));
        }
        let Some(settings) = crate::shards::read_cluster(store).await? else {
            return Ok(None);
        };
        let count = settings.shard_count.max(1);
        *self.shard_count.lock().unwrap_or_else(|e| e.into_inner()) = Some(count);
        Ok(Some(count))
    }

    fn slot(&self, shard: u32) -> Arc<tokio::sync::Mutex<TailSlot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(shard)
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(TailSlot {
                    logged: false,
                    checked_at: None,
                    tail: ShardTail::after(0),
                    pruned_at_seq: 0,
                }))
            })
            .clone()
    }

    /// The partition's entries reaching `offset` above its shard's fold, and the high
    /// watermark the log shows, read afresh from the store; empty on a shard without a log.
    pub async fn partition_tail(
        &self,
        store: &dyn MetaStore,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    ) -> Result<PartitionTail, MetaStoreError> {
        let Some(count) = self.shard_count(store).await? else {
            return Ok(PartitionTail::default());
        };
        let shard = crate::shards::shard_of(topic_id, partition, count);
        let slot = self.slot(shard);
        let mut slot = slot.lock().await;
        if !slot.logged {
            let fresh = slot
                .checked_at
                .is_some_and(|at| at.elapsed() < LAYOUT_RECHECK);
            if fresh {
                return Ok(PartitionTail::default());
            }
            slot.checked_at = Some(Instant::now());
            let Some((checkpoint, _)) = read_checkpoint(store, shard).await? else {
                return Ok(PartitionTail::default());
            };
            slot.logged = true;
            slot.tail = ShardTail::after(checkpoint.folded_through);
            slot.pruned_at_seq = checkpoint.folded_through;
        }
        refresh(store, shard, &mut slot).await?;
        Ok(PartitionTail {
            entries: slot.tail.entries_from(topic_id, partition, offset),
            high_watermark: slot.tail.high_watermark(topic_id, partition),
        })
    }
}

/// `shard`'s fold checkpoint and its item version (`None`: the shard is not on the log).
pub async fn read_checkpoint(
    store: &dyn MetaStore,
    shard: u32,
) -> Result<Option<(FoldCheckpoint, u64)>, MetaStoreError> {
    let key = fold_checkpoint_key(shard);
    match store.get(&key).await? {
        Some(item) => Ok(Some((
            crate::catalog::decode(&key, &item.value)?,
            item.version,
        ))),
        None => Ok(None),
    }
}

/// `shard`'s log items from `start` on, in sequence order (every reader of the log: the
/// owner, other processes' tails, garbage collection).
pub async fn read_items(
    store: &dyn MetaStore,
    shard: u32,
    start: Bound<u64>,
) -> Result<Vec<(u64, ShardLogItem)>, MetaStoreError> {
    let items = store
        .query(Query {
            pk: shard_log_pk(shard),
            start: start.map(sequence_sk),
            end: Bound::Unbounded,
            direction: Direction::Forward,
            limit: None,
        })
        .await?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let seq = decode_sequence(&item.key)?;
        out.push((seq, crate::catalog::decode(&item.key, &item.value)?));
    }
    Ok(out)
}

/// Items a backward read of the log asks for at a time.
const ITEMS_PER_BACKWARD_PAGE: usize = 256;

/// `shard`'s newest log items, in sequence order: read from the end backwards, a page at a
/// time, down to and without the first item (from the end) for which `wanted` is false. The
/// log keeps folded items until garbage collection deletes them with their segments, so an
/// owner reads only what it needs (the unfolded items and the answers still kept).
pub async fn read_newest(
    store: &dyn MetaStore,
    shard: u32,
    wanted: impl Fn(u64, &ShardLogItem) -> bool,
) -> Result<Vec<(u64, ShardLogItem)>, MetaStoreError> {
    let mut newest_first = Vec::new();
    let mut end = Bound::Unbounded;
    loop {
        let page = store
            .query(Query {
                pk: shard_log_pk(shard),
                start: Bound::Unbounded,
                end: end.clone(),
                direction: Direction::Backward,
                limit: Some(ITEMS_PER_BACKWARD_PAGE),
            })
            .await?;
        let full = page.len() == ITEMS_PER_BACKWARD_PAGE;
        for item in page {
            let seq = decode_sequence(&item.key)?;
            let logged: ShardLogItem = crate::catalog::decode(&item.key, &item.value)?;
            if !wanted(seq, &logged) {
                newest_first.reverse();
                return Ok(newest_first);
            }
            end = Bound::Excluded(item.key.sk.clone());
            newest_first.push((seq, logged));
        }
        if !full {
            newest_first.reverse();
            return Ok(newest_first);
        }
    }
}

fn decode_sequence(key: &ItemKey) -> Result<u64, MetaStoreError> {
    sequence_of_sk(&key.sk).ok_or_else(|| MetaStoreError::Corrupt {
        key: key.clone(),
        reason: "shard log sequence number".into(),
    })
}

/// Takes the items appended since the last one held. Items missing below the first one
/// found were deleted, which only happens after their fold: the pages hold them.
async fn refresh(
    store: &dyn MetaStore,
    shard: u32,
    slot: &mut TailSlot,
) -> Result<(), MetaStoreError> {
    let after = Bound::Excluded(slot.tail.last_seq());
    for (seq, logged) in read_items(store, shard, after).await? {
        if let Err(gap) = slot.tail.push(seq, &logged) {
            slot.tail = ShardTail::after(gap.found - 1);
            slot.tail.push(seq, &logged).ok();
        }
    }
    if slot.tail.last_seq() >= slot.pruned_at_seq + ITEMS_BETWEEN_PRUNES {
        if let Some((checkpoint, _)) = read_checkpoint(store, shard).await? {
            slot.tail.forget_through(checkpoint.folded_through);
        }
        slot.pruned_at_seq = slot.tail.last_seq();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{decode, encode};

    #[tokio::test]
    async fn the_newest_items_are_read_backwards_over_pages_and_returned_in_order() {
        let store = crate::meta_store::MemoryMetaStore::new();
        let ops = (1..=600)
            .map(|seq| crate::meta_store::WriteOp::Put {
                key: shard_log_key(3, seq),
                value: encode(&item()),
                condition: crate::meta_store::Condition::None,
            })
            .collect();
        store.write(ops).await.expect("write");
        let newest = read_newest(&store, 3, |seq, _| seq > 300)
            .await
            .expect("read");
        let seqs: Vec<u64> = newest.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (301..=600).collect::<Vec<_>>());
        let all = read_newest(&store, 3, |_, _| true).await.expect("read");
        assert_eq!(all.len(), 600);
        let none = read_newest(&store, 3, |_, _| false).await.expect("read");
        assert!(none.is_empty());
        assert!(
            read_newest(&store, 4, |_, _| true)
                .await
                .expect("read")
                .is_empty()
        );
    }

    fn item() -> ShardLogItem {
        let topic = Uuid::from_u128(7);
        let mut item = ShardLogItem {
            format: SHARD_LOG_FORMAT,
            segment_key: "segments/0a/1700000000000-abc.kseg".into(),
            segment_size: 4096,
            committed_at_ms: 1_700_000_000_123,
            chunk: None,
            topics: vec![],
            entries: vec![],
            producers: vec![],
            outcomes: vec![],
        };
        let t = item.topic_position(topic);
        item.entries.push(LogEntry {
            topic: t,
            partition: 3,
            base_offset: 100,
            last_offset: 109,
            byte_start: 61,
            byte_len: 900,
            batch_count: 1,
            record_count: 10,
            first_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_009,
            running_max_timestamp: 1_700_000_000_009,
        });
        item.producers.push(ProducerDelta {
            topic: t,
            partition: 3,
            producer_id: 42,
            epoch: 0,
            batch: ProducerBatch {
                first_seq: 0,
                last_seq: 9,
                base_offset: 100,
            },
        });
        item.outcomes = vec![
            BatchOutcome::Appended {
                base_offset: 100,
                log_start_offset: 0,
            }
            .into(),
            BatchOutcome::Duplicate {
                base_offset: 90,
                log_start_offset: 0,
            }
            .into(),
            BatchOutcome::Rejected(RejectReason::InvalidProducerEpoch).into(),
        ];
        item
    }

    #[test]
    fn a_log_item_round_trips_and_stays_compact() {
        let item = item();
        let bytes = encode(&item);
        let key = shard_log_key(3, 1);
        let back: ShardLogItem = decode(&key, &bytes).expect("decode");
        assert_eq!(back, item);
        // One entry of a commit costs about 80 bytes, so a 64-partition commit fits in ~6 KB.
        let entry_json = serde_json::to_string(&item.entries[0]).expect("json");
        assert!(entry_json.starts_with("[0,3,100,109,"), "{entry_json}");
        assert!(entry_json.len() < 90, "{entry_json}");
    }

    /// A commit as the 1 MiB/s bench appends it: 8 partitions, 35 batches.
    fn bench_commit() -> ShardLogItem {
        let at = 1_796_456_656_415;
        let mut item = ShardLogItem {
            format: SHARD_LOG_FORMAT,
            segment_key: crate::keys::new_segment_key(at - 28),
            segment_size: 159_748,
            committed_at_ms: at,
            chunk: None,
            topics: vec![],
            entries: vec![],
            producers: vec![],
            outcomes: vec![],
        };
        let t = item.topic_position(Uuid::new_v4());
        for p in 0..8 {
            item.entries.push(LogEntry {
                topic: t,
                partition: p,
                base_offset: 920,
                last_offset: 938,
                byte_start: 16 + 19_878 * p as u64,
                byte_len: 19_878,
                batch_count: 4,
                record_count: 19,
                first_timestamp: at - 264 + p as i64,
                max_timestamp: at - 124 + p as i64,
                running_max_timestamp: at - 124 + p as i64,
            });
        }
        item.outcomes = (0..35)
            .map(|i| LogOutcome::Offsets(APPENDED, 920 + i / 2, 0))
            .collect();
        item
    }

    fn write_units(key: &ItemKey, value: bytes::Bytes) -> u64 {
        crate::meta_store::capacity::item_write_units(
            &crate::meta_store::WriteOp::Put {
                key: key.clone(),
                value,
                condition: crate::meta_store::Condition::Absent,
            },
            false,
        )
    }

    #[test]
    fn a_short_log_item_reads_back_exactly_and_a_bench_commit_costs_one_write_unit() {
        let key = shard_log_key(3, 12_345_678);
        let commit = bench_commit();
        assert_eq!(write_units(&key, encode(&commit)), 2, "format 2");
        let short = commit.encode_short();
        assert_eq!(
            write_units(&key, short.clone()),
            1,
            "format 3: {}",
            short.len()
        );
        let back: ShardLogItem = decode(&key, &short).expect("decode");
        assert_eq!(
            ShardLogItem {
                format: SHARD_LOG_FORMAT,
                ..back
            },
            commit
        );

        // Everything else an item can hold: producers, a chunk, duplicates, rejections, log
        // starts that move, a hand-made segment key and extreme offsets and timestamps.
        let mut odd = item();
        odd.chunk = Some(2);
        odd.entries[0].first_timestamp = i64::MIN;
        odd.entries[0].max_timestamp = i64::MAX;
        odd.entries[0].running_max_timestamp = -1;
        odd.entries[0].last_offset = i64::MAX;
        odd.outcomes.extend([
            LogOutcome::Offsets(APPENDED, 120, 0),
            LogOutcome::Offsets(APPENDED, 130, 50),
            LogOutcome::Offsets(APPENDED, 140, 50),
            LogOutcome::Offsets(APPENDED, i64::MIN, 50),
            LogOutcome::Offsets(DUPLICATE, 90, 50),
            LogOutcome::Offsets(APPENDED, 150, 50),
        ]);
        let back: ShardLogItem = decode(&key, &odd.encode_short()).expect("decode");
        assert_eq!(back.format, SHARD_LOG_FORMAT_SHORT);
        assert_eq!(
            ShardLogItem {
                format: SHARD_LOG_FORMAT,
                ..back
            },
            odd
        );
    }

    #[test]
    fn a_short_log_item_with_a_bad_topic_id_is_corrupt() {
        let key = shard_log_key(3, 1);
        let mut value: serde_json::Value =
            serde_json::from_slice(&bench_commit().encode_short()).expect("json");
        value["i"][0] = "not-a-uuid".into();
        let bytes = serde_json::to_vec(&value).expect("json");
        assert!(matches!(
            decode::<ShardLogItem>(&key, &bytes),
            Err(MetaStoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn entries_and_outcomes_read_back_as_the_catalog_types() {
        let item = item();
        let entries = item.index_entries().expect("topics");
        assert_eq!(entries.len(), 1);
        let (topic, partition, entry) = &entries[0];
        assert_eq!((*topic, *partition), (Uuid::from_u128(7), 3));
        assert_eq!(entry.segment_key, item.segment_key);
        assert_eq!((entry.base_offset, entry.last_offset), (100, 109));
        assert_eq!(entry.running_max_timestamp, Some(1_700_000_000_009));
        let outcomes = item.outcomes().expect("known outcomes");
        assert_eq!(
            outcomes,
            [
                BatchOutcome::Appended {
                    base_offset: 100,
                    log_start_offset: 0
                },
                BatchOutcome::Duplicate {
                    base_offset: 90,
                    log_start_offset: 0
                },
                BatchOutcome::Rejected(RejectReason::InvalidProducerEpoch),
            ]
        );
    }

    #[test]
    fn unknown_codes_and_topic_positions_are_reported_not_guessed() {
        let mut item = item();
        item.outcomes.push(LogOutcome::Offsets(9, 0, 0));
        assert_eq!(item.outcomes(), None);
        item.entries[0].topic = 5;
        assert_eq!(item.index_entries(), None);
    }

    #[test]
    fn sequence_keys_sort_in_number_order() {
        let keys: Vec<String> = [9u64, 10, 100, 2]
            .iter()
            .map(|s| shard_log_key(1, *s).sk)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                sequence_sk(2),
                sequence_sk(9),
                sequence_sk(10),
                sequence_sk(100)
            ]
        );
        assert_eq!(sequence_of_sk(&sequence_sk(77)), Some(77));
        assert_eq!(shard_log_pk(12), "slog/00012");
        assert_eq!(fold_checkpoint_key(12).pk, "fold/00012");
    }

    fn entry_item(partition: i32, base: i64, last: i64) -> ShardLogItem {
        let mut item = item();
        item.entries[0].partition = partition;
        item.entries[0].base_offset = base;
        item.entries[0].last_offset = last;
        item
    }

    #[test]
    fn a_tail_takes_items_in_order_and_reports_a_gap() {
        let topic = Uuid::from_u128(7);
        let mut tail = ShardTail::after(4);
        tail.push(5, &entry_item(0, 0, 9)).expect("next");
        tail.push(6, &entry_item(1, 0, 4)).expect("next");
        tail.push(7, &entry_item(0, 10, 19)).expect("next");
        // Held already: ignored.
        tail.push(6, &entry_item(1, 0, 4)).expect("held");
        assert_eq!(
            tail.push(9, &entry_item(0, 20, 29)),
            Err(SequenceGap {
                expected: 8,
                found: 9
            })
        );
        assert_eq!(tail.last_seq(), 7);
        assert_eq!(tail.high_watermark(topic, 0), Some(20));
        assert_eq!(tail.high_watermark(topic, 1), Some(5));
        assert_eq!(tail.high_watermark(topic, 2), None);
        let lasts = |v: Vec<IndexEntry>| v.iter().map(|e| e.last_offset).collect::<Vec<_>>();
        assert_eq!(lasts(tail.entries_from(topic, 0, 0)), [9, 19]);
        assert_eq!(lasts(tail.entries_from(topic, 0, 12)), [19]);
        assert!(tail.entries_from(topic, 0, 20).is_empty());
        tail.forget_through(6);
        assert_eq!(lasts(tail.entries_from(topic, 0, 0)), [19]);
        assert_eq!(tail.high_watermark(topic, 1), None);
    }

    #[test]
    fn replaying_onto_folded_rows_and_producer_states_is_idempotent() {
        let item = item();
        let mut row = PartitionRecord {
            format: ITEM_FORMAT,
            next_offset: 100,
            log_start_offset: 0,
            bytes: 1000,
            max_timestamp: 5,
        };
        item.entries[0].apply_to(&mut row);
        let after = row;
        assert_eq!(
            (after.next_offset, after.bytes, after.max_timestamp),
            (110, 1900, 1_700_000_000_009)
        );
        item.entries[0].apply_to(&mut row);
        assert_eq!(row, after);

        let delta = item.producers[0];
        let state = delta.apply_to(None, 77).expect("new state");
        assert_eq!(
            (state.epoch, state.batches.len(), state.last_write_ms),
            (0, 1, 77)
        );
        assert_eq!(delta.apply_to(Some(&state), 78), None);
        let next = ProducerDelta {
            batch: ProducerBatch {
                first_seq: 10,
                last_seq: 19,
                base_offset: 110,
            },
            ..delta
        };
        let state = next.apply_to(Some(&state), 79).expect("appended");
        assert_eq!(state.batches.len(), 2);
        let bumped = ProducerDelta { epoch: 1, ..next };
        let state = bumped.apply_to(Some(&state), 80).expect("new epoch");
        assert_eq!((state.epoch, state.batches.len()), (1, 1));
        // An older epoch's batch replayed onto a newer state is already superseded.
        assert_eq!(next.apply_to(Some(&state), 81), None);
    }
}

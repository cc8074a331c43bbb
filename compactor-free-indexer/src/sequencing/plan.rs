//! What a commit decides, apart from how it is written: offsets for each batch, idempotent
//! producers' checks, the index entries and the new rows. The shard's rows and producer states
//! are loaded first; planning itself reads nothing, so both metadata layouts (a transaction of
//! rows and entries, or one shard-log item) write the same decisions.

use std::collections::HashMap;

use kafscale_shared::catalog::{ITEM_FORMAT, IndexEntry, ProducerBatch, ProducerRecord};
use kafscale_shared::sequencer::{BatchOutcome, CommitBatch, RejectReason};
use tracing::debug;

use super::{PartitionId, PartitionState, ProducerKey, StoredProducer};

/// The rows a commit's batches need, as loaded (partitions missing here are unknown).
#[derive(Default)]
pub(super) struct Loaded {
    pub parts: HashMap<PartitionId, PartitionState>,
    pub producers: HashMap<ProducerKey, StoredProducer>,
}

/// One idempotent producer's batch that was appended.
#[derive(Debug, Clone, Copy)]
pub(super) struct AcceptedBatch {
    pub producer: ProducerKey,
    pub epoch: i16,
    pub batch: ProducerBatch,
}

/// The decisions of one commit (or one chunk of it).
pub(super) struct CommitPlan {
    /// One per batch, in order.
    pub outcomes: Vec<BatchOutcome>,
    /// The partitions the batches name that exist, in the order first named, with their rows
    /// after the commit (the version still the one read).
    pub touched: Vec<PartitionId>,
    pub parts: HashMap<PartitionId, PartitionState>,
    /// New index entries per partition, in offset order (absent: nothing appended).
    pub entries: HashMap<PartitionId, Vec<IndexEntry>>,
    /// Producer states after the commit, for those that appended.
    pub changed: HashMap<ProducerKey, ProducerRecord>,
    /// Their appended batches, in order.
    pub accepted: Vec<AcceptedBatch>,
    /// Every producer state looked at, as read.
    pub producers: HashMap<ProducerKey, StoredProducer>,
    pub now_ms: i64,
}

/// Decision for one idempotent batch.
enum Check {
    Accept,
    Duplicate(i64),
    Reject(RejectReason),
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

fn check_sequence(state: Option<&ProducerRecord>, batch: &CommitBatch, last_seq: i32) -> Check {
    // A producer this partition has no state for starts wherever it is (Kafka 2.5+, KIP-360):
    // its state may have been lost or expired, and refusing would leave it stuck.
    let Some(state) = state else {
        return Check::Accept;
    };
    if batch.producer_epoch < state.epoch {
        return Check::Reject(RejectReason::InvalidProducerEpoch);
    }
    if batch.producer_epoch > state.epoch {
        return if batch.base_sequence == 0 {
            Check::Accept
        } else {
            Check::Reject(RejectReason::OutOfOrderSequence)
        };
    }
    if let Some(dup) = state
        .batches
        .iter()
        .find(|b| b.first_seq == batch.base_sequence && b.last_seq == last_seq)
    {
        return Check::Duplicate(dup.base_offset);
    }
    match state.batches.last() {
        Some(last) if batch.base_sequence == next_seq(last.last_seq) => Check::Accept,
        None if batch.base_sequence == 0 => Check::Accept,
        _ => Check::Reject(RejectReason::OutOfOrderSequence),
    }
}

fn last_sequence(batch: &CommitBatch) -> i32 {
    let last = batch.base_sequence as i64 + batch.offset_count as i64 - 1;
    if last > i32::MAX as i64 {
        (last - i32::MAX as i64 - 1) as i32
    } else {
        last as i32
    }
}

impl CommitPlan {
    /// Sequences `batches` of the segment `segment_key` on top of `loaded`.
    pub(super) fn new(
        segment_key: &str,
        batches: &[CommitBatch],
        loaded: Loaded,
        now_ms: i64,
    ) -> Self {
        let Loaded { parts, producers } = loaded;
        let mut plan = CommitPlan {
            outcomes: Vec::with_capacity(batches.len()),
            touched: Vec::new(),
            parts,
            entries: HashMap::new(),
            changed: HashMap::new(),
            accepted: Vec::new(),
            producers,
            now_ms,
        };
        for batch in batches {
            let outcome = plan.sequence(segment_key, batch);
            plan.outcomes.push(outcome);
        }
        plan
    }

    /// The outcome of one batch, with its effects on the plan's rows.
    fn sequence(&mut self, segment_key: &str, batch: &CommitBatch) -> BatchOutcome {
        let id = (batch.topic_id, batch.partition);
        let Some(part) = self.parts.get(&id).copied() else {
            return BatchOutcome::Rejected(RejectReason::UnknownTopicOrPartition);
        };
        if !self.touched.contains(&id) {
            self.touched.push(id);
        }
        let log_start_offset = part.record.log_start_offset;
        if batch.producer_id >= 0 {
            match self.check_producer(batch, part.record.next_offset) {
                Check::Accept => {}
                Check::Duplicate(base_offset) => {
                    return BatchOutcome::Duplicate {
                        base_offset,
                        log_start_offset,
                    };
                }
                Check::Reject(reason) => {
                    debug!(
                        producer_id = batch.producer_id,
                        seq = batch.base_sequence,
                        ?reason,
                        "batch rejected"
                    );
                    return BatchOutcome::Rejected(reason);
                }
            }
        }
        let base_offset = self.append_entry(segment_key, id, batch);
        BatchOutcome::Appended {
            base_offset,
            log_start_offset,
        }
    }

    /// Checks an idempotent batch and, if accepted, records the producer's new state.
    fn check_producer(&mut self, batch: &CommitBatch, base_offset: i64) -> Check {
        let key = (batch.topic_id, batch.partition, batch.producer_id);
        let last_seq = last_sequence(batch);
        let current = self.changed.get(&key).or_else(|| {
            self.producers
                .get(&key)
                .and_then(|p| p.as_ref())
                .map(|(record, _)| record)
        });
        let check = check_sequence(current, batch, last_seq);
        if let Check::Accept = check {
            let appended = ProducerBatch {
                first_seq: batch.base_sequence,
                last_seq,
                base_offset,
            };
            let record =
                ProducerRecord::after_batch(current, batch.producer_epoch, appended, self.now_ms);
            self.changed.insert(key, record);
            self.accepted.push(AcceptedBatch {
                producer: key,
                epoch: batch.producer_epoch,
                batch: appended,
            });
        }
        check
    }

    /// Gives the batch the partition's next offsets and indexes them: a batch right behind
    /// the previous one in the same object extends its entry. Returns the base offset.
    fn append_entry(&mut self, segment_key: &str, id: PartitionId, batch: &CommitBatch) -> i64 {
        let Some(part) = self.parts.get_mut(&id) else {
            return -1;
        };
        let base_offset = part.record.next_offset;
        let last_offset = base_offset + batch.offset_count as i64 - 1;
        part.record
            .append(last_offset, batch.byte_len, batch.max_timestamp);
        let running_max_timestamp = Some(part.record.max_timestamp);
        let list = self.entries.entry(id).or_default();
        match list.last_mut() {
            Some(e)
                if e.byte_start + e.byte_len == batch.byte_start
                    && e.last_offset + 1 == base_offset =>
            {
                e.last_offset = last_offset;
                e.byte_len += batch.byte_len;
                e.batch_count += 1;
                e.record_count += batch.record_count as u64;
                e.first_timestamp = e.first_timestamp.min(batch.first_timestamp);
                e.max_timestamp = e.max_timestamp.max(batch.max_timestamp);
                e.running_max_timestamp = running_max_timestamp;
            }
            _ => list.push(IndexEntry {
                format: ITEM_FORMAT,
                base_offset,
                last_offset,
                segment_key: segment_key.to_string(),
                byte_start: batch.byte_start,
                byte_len: batch.byte_len,
                batch_count: 1,
                record_count: batch.record_count as u64,
                first_timestamp: batch.first_timestamp,
                max_timestamp: batch.max_timestamp,
                running_max_timestamp,
            }),
        }
        base_offset
    }
}

//! Retention and DeleteRecords: moving a partition's log start offset forward.
//!
//! Nothing is rewritten (the indexer is compactor-free): a partition forgets its oldest index
//! entries and its log start offset moves past them. Both happen in ONE conditional write,
//! fenced by the shard lease like every commit and conditioned on the partition row's version,
//! so a deposed owner cannot move the log start and no reader ever finds an index entry below
//! it. The entries go by whole entries, oldest first, as Kafka deletes whole segments: an
//! entry goes when its newest record is older than `retention.ms`, or while the partition
//! without it still holds at least `retention.bytes`. DeleteRecords may put the log start in
//! the middle of an entry; the entry stays until the log start passes its last offset.
//!
//! The same pass forgets idempotent-producer states idle longer than
//! `producer.id.expiration.ms`, as Kafka does: the producer's next batch is then accepted as
//! from a new producer (any sequence), never refused.
//!
//! The segment objects themselves stay: a segment is garbage once the log start of every
//! partition in it has passed it, which garbage collection reads from the partition rows this
//! write updates.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use kafscale_shared::catalog::{self, IndexEntry};
use kafscale_shared::meta_store::{Condition, WriteOp};
use kafscale_shared::metrics as names;
use kafscale_shared::periodic::run_every;
use kafscale_shared::sequencer::SequencerError;
use kafscale_shared::shards::shard_of;
use kafscale_shared::topic_config::{ClusterDefaults, Retention};
use kafscale_shared::watermarks::PartitionOffsets;
use tracing::{Instrument, debug, info, warn};
use uuid::Uuid;

use super::{Indexer, PartitionId, ShardState};

/// Index entries removed in one write at most (besides the lease check and the partition
/// row), so a long backlog is forgotten in steps that each stand on their own; fewer where
/// the store's writes are smaller (DynamoDB: 100 operations, so 98 entries).
const ENTRIES_PER_WRITE: usize = 256;

/// What one retention pass removed, and what the partitions it looked at hold after it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    pub partitions_trimmed: u64,
    pub entries_removed: u64,
    pub bytes_removed: u64,
    pub records_removed: u64,
    /// Idempotent-producer states forgotten (idle past `producer.id.expiration.ms`).
    pub producers_expired: u64,
    /// Per topic name: what this replica's partitions of it hold after the pass.
    pub retained: BTreeMap<String, Retained>,
}

/// Record-batch bytes and records between a partition's log start and its high watermark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    pub bytes: u64,
    pub records: u64,
}

/// How far to move a partition's log start.
#[derive(Debug, Clone, Copy)]
enum Trim {
    /// Drop what `retention` no longer keeps, as of `now_ms`.
    Retention { retention: Retention, now_ms: i64 },
    /// DeleteRecords: the log start becomes this offset (at most the high watermark).
    Before(i64),
}

impl Trim {
    /// Whether `entry` (the oldest left) goes, with `bytes` held by the partition.
    fn drops(&self, entry: &IndexEntry, bytes: u64) -> bool {
        match *self {
            Trim::Retention { retention, now_ms } => {
                let expired = retention
                    .max_age_ms
                    .is_some_and(|age| entry.max_timestamp < now_ms.saturating_sub(age));
                let too_big = retention
                    .max_bytes
                    .is_some_and(|max| bytes.saturating_sub(entry.byte_len) >= max);
                expired || too_big
            }
            Trim::Before(offset) => entry.last_offset < offset,
        }
    }
}

impl Indexer {
    /// One retention pass over the partitions of the shards this replica owns, with each
    /// topic's `retention.ms` / `retention.bytes` over `defaults`.
    pub async fn enforce_retention(
        &self,
        defaults: &ClusterDefaults,
        now_ms: i64,
    ) -> Result<RetentionReport, SequencerError> {
        let store_err = |e: catalog::CatalogError| SequencerError::StoreUnavailable(e.to_string());
        let topics = self.catalog.list_topics().await.map_err(store_err)?;
        let shard_count = self.config.shard_count.max(1);
        let owned = self.owned_shards().await;
        let mut report = RetentionReport::default();
        for topic in topics {
            let retention = defaults.retention(&topic.configs);
            for partition in 0..topic.partitions {
                let shard = shard_of(topic.topic_id, partition, shard_count);
                if !owned.contains(&shard) {
                    continue;
                }
                let id = (topic.topic_id, partition);
                let expired = self.expire_producers(shard, id, now_ms).await;
                let trimmed = if retention == Retention::default() {
                    Ok(None)
                } else {
                    self.trim(shard, id, Trim::Retention { retention, now_ms })
                        .await
                };
                match (expired, trimmed) {
                    (Ok(producers), Ok(trimmed)) => {
                        report.producers_expired += producers;
                        if let Some((_, removed)) = trimmed {
                            report.add(&removed);
                        }
                        if let Some(held) = self.retained(shard, id).await? {
                            let topic_total =
                                report.retained.entry(topic.name.clone()).or_default();
                            topic_total.bytes += held.bytes;
                            topic_total.records += held.records;
                        }
                    }
                    // A shard lost meanwhile is its new owner's to trim.
                    (Err(SequencerError::NotOwner { .. } | SequencerError::Fenced(_)), _)
                    | (_, Err(SequencerError::NotOwner { .. } | SequencerError::Fenced(_))) => {}
                    (Err(e), _) | (_, Err(e)) => return Err(e),
                }
            }
        }
        metrics::counter!(names::INDEXER_RETENTION_ENTRIES).increment(report.entries_removed);
        metrics::counter!(names::INDEXER_RETENTION_BYTES).increment(report.bytes_removed);
        metrics::counter!(names::INDEXER_PRODUCERS_EXPIRED).increment(report.producers_expired);
        metrics::gauge!(names::INDEXER_RETENTION_LAST_PASS).set(now_ms as f64 / 1000.0);
        Ok(report)
    }

    /// What partition `id` holds now (its row as the shard owner knows it); `None` if the
    /// partition does not exist (any more).
    async fn retained(
        &self,
        shard: u32,
        id: PartitionId,
    ) -> Result<Option<Retained>, SequencerError> {
        let store_err = |e: catalog::CatalogError| SequencerError::StoreUnavailable(e.to_string());
        let mut state = self.settled_shard(shard).await?;
        let part = self
            .load_partition(&mut state, id)
            .await
            .map_err(store_err)?;
        Ok(part.map(|p| Retained {
            bytes: p.record.bytes,
            records: (p.record.next_offset - p.record.log_start_offset).max(0) as u64,
        }))
    }

    /// Forgets the idempotent-producer states of partition `id` whose last batch is older than
    /// `producer.id.expiration.ms`, in fenced writes conditioned on each row's version (a
    /// producer that wrote meanwhile keeps its state). Returns how many went.
    async fn expire_producers(
        &self,
        shard: u32,
        id: PartitionId,
        now_ms: i64,
    ) -> Result<u64, SequencerError> {
        let store_err = |e: catalog::CatalogError| SequencerError::StoreUnavailable(e.to_string());
        let horizon = now_ms.saturating_sub(self.config.producer_id_expiration.as_millis() as i64);
        let mut state = self.settled_shard(shard).await?;
        let expired: Vec<(i64, u64)> = self
            .catalog
            .producers_of(id.0, id.1)
            .await
            .map_err(store_err)?
            .into_iter()
            .filter(|(_, p, _)| p.last_write_ms > 0 && p.last_write_ms < horizon)
            .map(|(producer_id, _, version)| (producer_id, version))
            .collect();
        let per_write = self
            .catalog
            .store()
            .max_batch_ops()
            .saturating_sub(1)
            .max(1);
        for chunk in expired.chunks(per_write) {
            let Some(lease) = state.lease.clone() else {
                return Err(SequencerError::NotOwner { shard, owner: None });
            };
            let mut ops = vec![WriteOp::Check {
                key: catalog::lease_key(&lease.name),
                condition: Condition::Version(lease.version),
            }];
            ops.extend(chunk.iter().map(|(producer_id, version)| WriteOp::Delete {
                key: catalog::producer_key(id.0, id.1, *producer_id),
                condition: Condition::Version(*version),
            }));
            self.write_shard(&mut state, &lease, ops)
                .await
                .map_err(|e| Self::write_error(&lease, e))?;
            for (producer_id, _) in chunk {
                state.producers.remove(&(id.0, id.1, *producer_id));
            }
        }
        if !expired.is_empty() {
            debug!(topic_id = %id.0, partition = id.1, producers = expired.len(), "producer states expired");
        }
        Ok(expired.len() as u64)
    }

    /// DeleteRecords of one partition: its log start becomes `offset` (-1: the high
    /// watermark). Returns the new log start. An offset past the high watermark is refused.
    pub(crate) async fn move_log_start(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    ) -> Result<i64, SequencerError> {
        let shard = shard_of(topic_id, partition, self.config.shard_count.max(1));
        match self
            .trim(shard, (topic_id, partition), Trim::Before(offset))
            .await?
        {
            Some((log_start, _)) => Ok(log_start),
            None => Err(SequencerError::UnknownPartition),
        }
    }

    /// Moves the log start of `id` as `trim` says, in writes of at most
    /// [`ENTRIES_PER_WRITE`] entries. `None`: the partition does not exist.
    async fn trim(
        &self,
        shard: u32,
        id: PartitionId,
        trim: Trim,
    ) -> Result<Option<(i64, RetentionReport)>, SequencerError> {
        let store_err = |e: catalog::CatalogError| SequencerError::StoreUnavailable(e.to_string());
        let mut state = self.settled_shard(shard).await?;
        let per_write = ENTRIES_PER_WRITE
            .min(self.catalog.store().max_batch_ops().saturating_sub(2))
            .max(1);
        let mut removed = RetentionReport::default();
        loop {
            let Some(part) = self
                .load_partition(&mut state, id)
                .await
                .map_err(store_err)?
            else {
                return Ok(None);
            };
            let record = part.record;
            let target = match trim {
                Trim::Before(-1) => Trim::Before(record.next_offset),
                Trim::Before(o) if o < 0 || o > record.next_offset => {
                    return Err(SequencerError::OffsetOutOfRange {
                        offset: o,
                        high_watermark: record.next_offset,
                    });
                }
                t => t,
            };
            // Most passes find nothing to drop: look at the oldest entry alone before reading
            // a whole page (a read costs by the bytes it returns).
            if removed.entries_removed == 0 {
                let oldest = self
                    .catalog
                    .index_entries_from(id.0, id.1, record.log_start_offset, Some(1))
                    .await
                    .map_err(store_err)?;
                let moves = matches!(target, Trim::Before(o) if o > record.log_start_offset);
                if !moves
                    && !oldest
                        .first()
                        .is_some_and(|e| target.drops(e, record.bytes))
                {
                    return Ok(Some((record.log_start_offset, removed)));
                }
            }
            let page = self
                .catalog
                .index_entries_from(id.0, id.1, record.log_start_offset, Some(per_write))
                .await
                .map_err(store_err)?;
            let mut bytes = record.bytes;
            let mut dropped = Vec::new();
            for entry in &page {
                if !target.drops(entry, bytes) {
                    break;
                }
                bytes = bytes.saturating_sub(entry.byte_len);
                dropped.push(entry);
            }
            // The page ended the walk (an entry stays, or none is left): this write is the last.
            let last_write = dropped.len() < page.len() || page.len() < per_write;
            let mut log_start = dropped
                .last()
                .map_or(record.log_start_offset, |e| e.last_offset + 1);
            if let Trim::Before(o) = target
                && last_write
            {
                // Only once every entry below `o` is gone, or some would be left below it.
                log_start = log_start.max(o);
            }
            if log_start <= record.log_start_offset {
                return Ok(Some((record.log_start_offset, removed)));
            }
            let mut next = record;
            next.log_start_offset = log_start;
            next.bytes = bytes;
            self.write_trim(&mut state, id, part.version, next, &dropped)
                .await?;
            removed.partitions_trimmed = 1;
            for e in &dropped {
                removed.entries_removed += 1;
                removed.bytes_removed += e.byte_len;
                removed.records_removed += e.record_count;
            }
            debug!(topic_id = %id.0, partition = id.1, log_start, entries = dropped.len(), "log start moved");
            if last_write {
                return Ok(Some((log_start, removed)));
            }
        }
    }

    /// Writes the new partition row `next` and deletes `dropped`, fenced by the shard lease and
    /// the row's `version`; updates the cache and the watermarks once it landed.
    async fn write_trim(
        &self,
        state: &mut ShardState,
        id: PartitionId,
        version: u64,
        next: catalog::PartitionRecord,
        dropped: &[&IndexEntry],
    ) -> Result<(), SequencerError> {
        let Some(lease) = state.lease.clone() else {
            return Err(SequencerError::NotOwner {
                shard: shard_of(id.0, id.1, self.config.shard_count.max(1)),
                owner: None,
            });
        };
        let mut ops = vec![
            WriteOp::Check {
                key: catalog::lease_key(&lease.name),
                condition: Condition::Version(lease.version),
            },
            WriteOp::Put {
                key: catalog::partition_key(id.0, id.1),
                value: catalog::encode(&next),
                condition: Condition::Version(version),
            },
        ];
        ops.extend(dropped.iter().map(|e| WriteOp::Delete {
            key: catalog::index_key(id.0, id.1, e.last_offset),
            condition: Condition::None,
        }));
        self.write_shard(state, &lease, ops)
            .await
            .map_err(|e| Self::write_error(&lease, e))?;
        if let Some(part) = state.partitions.get_mut(&id) {
            part.record = next;
            part.version = version + 1;
        }
        self.watermarks.publish(
            id.0,
            id.1,
            PartitionOffsets {
                log_start_offset: next.log_start_offset,
                high_watermark: next.next_offset,
            },
        );
        Ok(())
    }

    /// Runs a retention pass every `interval` until `shutdown`.
    pub async fn run_retention_loop(
        self: std::sync::Arc<Self>,
        defaults: ClusterDefaults,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let reported = Mutex::new(BTreeSet::new());
        run_every(interval, &shutdown, || {
            self.retention_round(&defaults, &reported)
        })
        .await;
    }

    /// One retention pass as of now, logged; `reported` holds the topics whose retained-size
    /// gauges this replica set last time (a topic it no longer holds is set to 0).
    async fn retention_round(
        &self,
        defaults: &ClusterDefaults,
        reported: &Mutex<BTreeSet<String>>,
    ) {
        let pass = tracing::info_span!("retention_pass");
        match self
            .enforce_retention(defaults, catalog::now_ms())
            .instrument(pass)
            .await
        {
            Ok(r) => {
                if r.entries_removed + r.producers_expired > 0 {
                    info!(
                        partitions = r.partitions_trimmed,
                        entries = r.entries_removed,
                        bytes = r.bytes_removed,
                        records = r.records_removed,
                        producers_expired = r.producers_expired,
                        "retention moved log starts and expired producer states"
                    );
                }
                report_retained(
                    &r.retained,
                    &mut reported.lock().unwrap_or_else(|e| e.into_inner()),
                );
            }
            Err(e) => warn!(error = %e, "retention pass failed; the next one retries"),
        }
    }
}

/// Sets the per-topic retained-size gauges to `retained`, and to 0 for the topics in
/// `reported` it no longer has; `reported` becomes the topics of `retained`.
fn report_retained(retained: &BTreeMap<String, Retained>, reported: &mut BTreeSet<String>) {
    let set = |topic: &str, held: Retained| {
        let topic = topic.to_string();
        metrics::gauge!(names::TOPIC_RETAINED_BYTES, "topic" => topic.clone())
            .set(held.bytes as f64);
        metrics::gauge!(names::TOPIC_RETAINED_RECORDS, "topic" => topic).set(held.records as f64);
    };
    for gone in reported.iter().filter(|t| !retained.contains_key(*t)) {
        set(gone, Retained::default());
    }
    for (topic, held) in retained {
        set(topic, *held);
    }
    *reported = retained.keys().cloned().collect();
}

impl Indexer {
    /// Shard `shard`'s state, locked, with the rows of an earlier write of unknown outcome
    /// forgotten (the prologue of every write outside a commit).
    async fn settled_shard(
        &self,
        shard: u32,
    ) -> Result<tokio::sync::MutexGuard<'_, ShardState>, SequencerError> {
        let Some(slot) = self.shards.get(shard as usize) else {
            return Err(SequencerError::InvalidRequest(format!("no shard {shard}")));
        };
        let mut state = slot.lock().await;
        state.settle();
        Ok(state)
    }
}

impl RetentionReport {
    fn add(&mut self, other: &RetentionReport) {
        self.partitions_trimmed += other.partitions_trimmed;
        self.entries_removed += other.entries_removed;
        self.bytes_removed += other.bytes_removed;
        self.records_removed += other.records_removed;
        self.producers_expired += other.producers_expired;
    }
}

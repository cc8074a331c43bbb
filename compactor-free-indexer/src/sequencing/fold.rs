//! Layout 2's fold: the owner of a shard writes the log items above the checkpoint into
//! per-partition index pages, partition rows and producer states, then moves the checkpoint.
//!
//! Every write is a single item, never a transaction (half the write units): pages carry no
//! condition (they are derived from the immutable log, so a page written twice, or by a
//! deposed owner, holds the same entries for the same offsets), rows and producer states are
//! conditioned on the version read, and the checkpoint is written last. A fold cut short
//! anywhere is redone from the old checkpoint by the next one; replaying an item onto a row or
//! state that already holds it changes nothing.
//!
//! Folded items stay in the log: each names its segment and the partitions and offsets in it,
//! so it is the segment's commit record. Garbage collection deletes it with the segment, once
//! no partition references either (a fold that wrote a record per item and deleted the item
//! paid two more writes per commit for the same information).
//!
//! The fold holds the shard's lock, so commits wait for it: about one write round per
//! partition touched since the last fold, once per fold interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kafscale_shared::catalog::{self, CatalogError, IndexEntry, IndexPage, ProducerRecord};
use kafscale_shared::meta_store::{Condition, ItemKey, MetaStoreError, WriteOp};
use kafscale_shared::metrics as names;
use kafscale_shared::periodic::run_every;
use kafscale_shared::shard_log::{
    FoldCheckpoint, SHARD_LOG_FORMAT, ShardLogItem, fold_checkpoint_key,
};
use tracing::{debug, warn};

use super::{Indexer, PartitionId, ProducerKey, ShardState};

/// Single-item writes of one fold in flight at once.
const FOLD_WRITES_IN_FLIGHT: usize = 16;

/// What one fold of a shard wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldReport {
    /// Log items folded.
    pub items: usize,
    pub pages: usize,
    pub rows: usize,
    pub producers: usize,
}

/// The pages a fold writes: each partition's entries from the folded items, in order.
fn pages_of(items: &[(u64, Arc<ShardLogItem>)]) -> BTreeMap<PartitionId, Vec<IndexEntry>> {
    let mut pages: BTreeMap<PartitionId, Vec<IndexEntry>> = BTreeMap::new();
    for (_, item) in items {
        for (topic_id, partition, entry) in item.index_entries().unwrap_or_default() {
            pages.entry((topic_id, partition)).or_default().push(entry);
        }
    }
    pages
}

/// The producers the folded items changed.
fn producers_of(items: &[(u64, Arc<ShardLogItem>)]) -> Vec<ProducerKey> {
    let mut keys = Vec::new();
    for (_, item) in items {
        for d in &item.producers {
            if let Some(topic_id) = item.topic_id(d.topic) {
                let key = (topic_id, d.partition, d.producer_id);
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
    }
    keys
}

impl Indexer {
    /// Folds `shard`'s log if this replica holds it on layout 2 (otherwise does nothing).
    pub async fn fold_shard(&self, shard: u32) -> Result<FoldReport, CatalogError> {
        let Some(slot) = self.shards.get(shard as usize) else {
            return Ok(FoldReport::default());
        };
        let mut state = slot.lock().await;
        if state.lease.is_none() {
            return Ok(FoldReport::default());
        }
        // After a takeover the new owner folds what its predecessor left, commits or not.
        if let Err(e) = self.ensure_log_open(&mut state, shard).await {
            state.forget_rows();
            return Err(e);
        }
        let folded = self.fold_locked(shard, &mut state).await;
        if folded.is_err() {
            // Whatever landed, the next commit starts from the store and the log again.
            state.forget_rows();
        }
        folded
    }

    async fn fold_locked(
        &self,
        shard: u32,
        state: &mut ShardState,
    ) -> Result<FoldReport, CatalogError> {
        let Some(log) = state.log.as_ref() else {
            return Ok(FoldReport::default());
        };
        if log.behind {
            return Ok(FoldReport::default());
        }
        let items: Vec<(u64, Arc<ShardLogItem>)> = log.unfolded.iter().cloned().collect();
        let Some(&(through, _)) = items.last() else {
            return Ok(FoldReport::default());
        };
        let mut report = FoldReport {
            items: items.len(),
            ..FoldReport::default()
        };
        let short_items = log.short_items;
        let pages = pages_of(&items);
        report.pages = self.write_pages(&pages, short_items).await?;
        for id in pages.keys() {
            self.fold_row(state, *id).await?;
            report.rows += 1;
        }
        for key in producers_of(&items) {
            self.fold_producer(state, key).await?;
            report.producers += 1;
        }
        self.move_checkpoint(shard, state, through).await?;
        debug!(shard, through, ?report, "shard log folded");
        Ok(report)
    }

    /// One page per partition, keyed by its last offset; `short`: in format 4 (layout 3).
    async fn write_pages(
        &self,
        pages: &BTreeMap<PartitionId, Vec<IndexEntry>>,
        short: bool,
    ) -> Result<usize, CatalogError> {
        let items = pages
            .iter()
            .filter_map(|(id, entries)| {
                let last = entries.last()?.last_offset;
                let page = IndexPage {
                    entries: entries.clone(),
                };
                let value = match short {
                    true => page.encode_short(),
                    false => catalog::encode(&page),
                };
                Some((catalog::index_key(id.0, id.1, last), value))
            })
            .collect();
        self.put_all(items).await
    }

    /// Unconditional single-item puts, several in flight (derived from the immutable log, so
    /// writing one twice is harmless); the first error, or how many were written.
    async fn put_all(&self, items: Vec<(ItemKey, bytes::Bytes)>) -> Result<usize, CatalogError> {
        // The futures are collected first: a stream over a borrowing closure is not `Send`
        // for every lifetime.
        let writes: Vec<_> = items
            .into_iter()
            .map(|(key, value)| self.write_one(key, value, Condition::None))
            .collect();
        let results: Vec<_> = futures::stream::iter(writes)
            .buffer_unordered(FOLD_WRITES_IN_FLIGHT)
            .collect()
            .await;
        let written = results.len();
        match results.into_iter().find_map(Result::err) {
            Some(e) => Err(e.into()),
            None => Ok(written),
        }
    }

    async fn write_one(
        &self,
        key: ItemKey,
        value: bytes::Bytes,
        condition: Condition,
    ) -> Result<(), MetaStoreError> {
        let op = WriteOp::Put {
            key,
            value,
            condition,
        };
        self.catalog.store().write(vec![op]).await
    }

    /// Writes a partition's row as the log left it, over the version read.
    async fn fold_row(&self, state: &mut ShardState, id: PartitionId) -> Result<(), CatalogError> {
        let Some(part) = self.load_partition(state, id).await? else {
            // The topic was deleted: garbage collection removes what the fold wrote.
            return Ok(());
        };
        let key = catalog::partition_key(id.0, id.1);
        let value = catalog::encode(&part.record);
        self.write_one(key, value, Condition::Version(part.version))
            .await?;
        if let Some(cached) = state.partitions.get_mut(&id) {
            cached.version += 1;
        }
        Ok(())
    }

    /// Writes a producer's state as the log left it, over the version read (0: no row yet).
    async fn fold_producer(
        &self,
        state: &mut ShardState,
        key: ProducerKey,
    ) -> Result<(), CatalogError> {
        let Some((record, version)) = self.load_producer(state, key).await? else {
            return Ok(());
        };
        let condition = match version {
            0 => Condition::Absent,
            v => Condition::Version(v),
        };
        let item = catalog::producer_key(key.0, key.1, key.2);
        self.write_one(item, catalog::encode::<ProducerRecord>(&record), condition)
            .await?;
        state
            .producers
            .insert(key, Some((record, version.saturating_add(1).max(1))));
        Ok(())
    }

    /// Moves the checkpoint to `through` over the version read, then forgets the folded items
    /// (their answers stay remembered).
    async fn move_checkpoint(
        &self,
        shard: u32,
        state: &mut ShardState,
        through: u64,
    ) -> Result<(), CatalogError> {
        let Some(log) = state.log.as_mut() else {
            return Ok(());
        };
        let checkpoint = FoldCheckpoint {
            format: SHARD_LOG_FORMAT,
            folded_through: through,
        };
        self.write_one(
            fold_checkpoint_key(shard),
            catalog::encode(&checkpoint),
            Condition::Version(log.checkpoint_version),
        )
        .await?;
        log.checkpoint_version += 1;
        log.folded_through = through;
        while log.unfolded.front().is_some_and(|(seq, _)| *seq <= through) {
            log.unfolded.pop_front();
        }
        Ok(())
    }

    /// Folds every shard this replica holds on the shard log, and publishes the backlog it
    /// found (`kafscale_indexer_fold_backlog_items`).
    pub async fn fold_all(&self) -> HashMap<u32, FoldReport> {
        let mut reports = HashMap::new();
        let mut backlog = 0;
        for shard in 0..self.shards.len() as u32 {
            match self.fold_shard(shard).await {
                // What a fold found above the checkpoint is what it folded.
                Ok(r) if r != FoldReport::default() => {
                    backlog += r.items;
                    reports.insert(shard, r);
                }
                Ok(_) => {}
                Err(e) => {
                    backlog += self.unfolded_items(shard).await;
                    metrics::counter!(names::INDEXER_FOLD_FAILURES).increment(1);
                    warn!(shard, error = %e, "folding the shard log failed; the next fold retries")
                }
            }
        }
        metrics::gauge!(names::INDEXER_FOLD_BACKLOG).set(backlog as f64);
        reports
    }

    /// Log items above `shard`'s checkpoint that this replica holds (0: not its shard, or not
    /// on the shard log, or its log not read yet).
    pub async fn unfolded_items(&self, shard: u32) -> usize {
        let Some(slot) = self.shards.get(shard as usize) else {
            return 0;
        };
        let state = slot.lock().await;
        match (&state.lease, &state.log) {
            (Some(_), Some(log)) => log.unfolded.len(),
            _ => 0,
        }
    }

    /// Folds every `interval` until `shutdown`, then once more.
    pub async fn run_fold_loop(
        self: Arc<Self>,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        run_every(interval, &shutdown, || async {
            self.fold_all().await;
        })
        .await;
        self.fold_all().await;
    }
}

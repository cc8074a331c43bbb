//! Garbage collection of segment objects, their commit records and deleted topics' rows.
//!
//! Nothing here decides what data to forget: retention and DeleteRecords do that, by moving a
//! partition's log start in the same write that drops its index entries. A segment is
//! *referenced* while some partition it holds data of still has a log start at or below the
//! last offset the segment holds there; the commit records list those partitions and offsets
//! ([`SegmentCommitRecord::parts`]), so a pass needs the bucket listing, the commit records and
//! one partition row per partition, never the index entries.
//!
//! Why it is safe:
//! - Only segments created longer ago than the indexers' commit horizon
//!   ([`crate::IndexerConfig::segment_commit_max_age`]) are considered: younger ones may still
//!   be committed, older ones never can be (the indexer refuses them), so what a pass sees
//!   of them no longer changes except by log starts moving forward.
//! - An unreferenced segment is deleted only by a later pass, at least the grace period after
//!   the pass that first found it unreferenced, and after checking again: a Fetch that read an
//!   index entry just before retention dropped it still finds the object. The first sighting
//!   is kept in memory, so a restarted collector waits the grace period anew (later, never
//!   earlier).
//! - The object goes first, its commit records after: a pass cut short finds the records
//!   again and finishes the job (deleting a missing object is no error). Once the records are
//!   gone a retried commit of that segment is refused as expired, never appended again.
//! - An object with no commit record older than the horizon plus the grace is an orphan (an
//!   upload whose commit never happened, or the loser of a hedged upload) and is deleted.
//! - On the shard log (layout 2, [`kafscale_shared::shard_log`]) a commit writes no record: its
//!   log item names the segment and its partitions, and stays in the log as its record. A
//!   segment whose item is not folded yet is kept whatever the log starts say, and its item is
//!   deleted with it only once folded, so the log never has a gap above its checkpoint. Records
//!   that the first releases' fold wrote under `seg/{shard}` are read as well.
//! - A deleted topic's partition rows, index entries and producer states are removed before
//!   the commit records that name the topic, so a pass cut short finds the topic again.
//!
//! One replica collects at a time (the `gc` lease) to avoid doing the work twice; nothing
//! depends on that for safety, since every deletion is re-derived from the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use kafscale_shared::catalog::{self, Catalog, SegmentCommitRecord, SegmentPart};
use kafscale_shared::keys::{SEGMENT_PREFIX, segment_created_ms};
use kafscale_shared::meta_store::ItemKey;
use kafscale_shared::metrics as names;
use kafscale_shared::object_store::{ObjectMeta, ObjectStore};
use kafscale_shared::periodic::run_every;
use kafscale_shared::shard_log::{read_checkpoint, read_items, shard_log_key};
use kafscale_shared::shards::read_cluster;
use tokio::sync::Mutex;
use tracing::{Instrument, debug, info, warn};
use uuid::Uuid;

use crate::IndexerError;

/// Name of the lease held by the replica that collects.
pub const GC_LEASE: &str = "gc";

/// Commit records read per store query.
const RECORDS_PER_PAGE: usize = 1000;

/// Settings of the garbage collector.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// How long an unreferenced segment stays after a pass first found it unreferenced.
    pub grace: Duration,
    /// The indexers' commit horizon (see [`crate::IndexerConfig::segment_commit_max_age`]).
    pub segment_commit_max_age: Duration,
}

/// What one pass found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    pub objects_listed: u64,
    pub commit_records_read: u64,
    /// Committed segments no partition references, still within their grace period.
    pub segments_waiting: u64,
    pub segments_deleted: u64,
    pub orphans_deleted: u64,
    pub bytes_deleted: u64,
    pub commit_records_deleted: u64,
    pub topics_purged: u64,
}

/// One segment as a pass sees it: its object (if listed) and what names it as committed:
/// commit records and folded shard-log items, with the key to delete them by and the
/// partitions they name; an unfolded shard-log item has neither (it keeps the segment).
#[derive(Debug, Default)]
struct Segment {
    object: Option<u64>,
    records: Vec<(Option<ItemKey>, Option<Vec<SegmentPart>>)>,
}

/// Deletes what no partition references any more (see the module docs).
#[derive(Debug)]
pub struct GarbageCollector {
    catalog: Arc<Catalog>,
    objects: Arc<dyn ObjectStore>,
    config: GcConfig,
    /// Segment key → (pass number, time) of the pass that first found it unreferenced.
    condemned: Mutex<Condemned>,
}

#[derive(Debug, Default)]
struct Condemned {
    passes: u64,
    since: HashMap<String, (u64, i64)>,
}

impl GarbageCollector {
    pub fn new(catalog: Arc<Catalog>, objects: Arc<dyn ObjectStore>, config: GcConfig) -> Self {
        for name in [
            names::GC_SEGMENTS_DELETED,
            names::GC_ORPHANS_DELETED,
            names::GC_BYTES_DELETED,
            names::GC_RECORDS_DELETED,
            names::GC_TOPICS_PURGED,
        ] {
            metrics::counter!(name).increment(0);
        }
        GarbageCollector {
            catalog,
            objects,
            config,
            condemned: Mutex::new(Condemned::default()),
        }
    }

    /// One pass as of `now_ms` (see the module docs).
    pub async fn run_pass(&self, now_ms: i64) -> Result<GcReport, IndexerError> {
        let mut condemned = self.condemned.lock().await;
        condemned.passes += 1;
        let pass = condemned.passes;
        let mut report = GcReport::default();
        let segments = self.load_segments(&mut report).await?;
        let live_topics: HashSet<Uuid> = self
            .catalog
            .list_topics()
            .await?
            .into_iter()
            .map(|t| t.topic_id)
            .collect();
        report.topics_purged = self.purge_deleted_topics(&segments, &live_topics).await?;

        let horizon = now_ms.saturating_sub(self.config.segment_commit_max_age.as_millis() as i64);
        let grace = self.config.grace.as_millis() as i64;
        let mut log_starts = LogStarts::default();
        let mut doomed_objects = Vec::new();
        let mut doomed_records = Vec::new();
        let mut still_condemned = HashMap::new();
        for (key, segment) in &segments {
            // Keys without a creation time are not ours: never touched.
            let Some(created) = segment_created_ms(key) else {
                continue;
            };
            if created >= horizon {
                continue;
            }
            if segment.records.is_empty() {
                if let Some(size) = segment.object
                    && created < horizon.saturating_sub(grace)
                {
                    debug!(segment = %key, "orphan segment");
                    report.orphans_deleted += 1;
                    report.bytes_deleted += size;
                    doomed_objects.push(key.clone());
                }
                continue;
            }
            if self
                .is_referenced(segment, &live_topics, &mut log_starts)
                .await?
            {
                continue;
            }
            let first = *condemned.since.get(key).unwrap_or(&(pass, now_ms));
            if first.0 < pass && now_ms.saturating_sub(first.1) >= grace {
                report.segments_deleted += u64::from(segment.object.is_some());
                report.bytes_deleted += segment.object.unwrap_or(0);
                doomed_objects.push(key.clone());
                doomed_records.extend(segment.records.iter().filter_map(|(key, _)| key.clone()));
            } else {
                report.segments_waiting += 1;
                still_condemned.insert(key.clone(), first);
            }
        }
        // Segments referenced again (cannot happen) or gone are forgotten with the rest.
        condemned.since = still_condemned;
        // Objects first, then their records: a pass cut short in between finds the records.
        self.objects.delete_many(&doomed_objects).await?;
        report.commit_records_deleted = doomed_records.len() as u64;
        self.catalog.delete_items(doomed_records).await?;
        report.count();
        Ok(report)
    }

    /// The bucket's segment objects and every commit record and shard-log item, by segment
    /// key.
    async fn load_segments(
        &self,
        report: &mut GcReport,
    ) -> Result<BTreeMap<String, Segment>, IndexerError> {
        let mut segments: BTreeMap<String, Segment> = BTreeMap::new();
        let listed: Vec<ObjectMeta> = self.objects.list(SEGMENT_PREFIX).await?;
        report.objects_listed = listed.len() as u64;
        for object in listed {
            segments.entry(object.key).or_default().object = Some(object.size);
        }
        self.load_records(catalog::SEGMENT_COMMIT_PK, &mut segments, report)
            .await?;
        let shard_count = read_cluster(self.catalog.store().as_ref())
            .await
            .map_err(catalog::CatalogError::from)?
            .map_or(0, |c| c.shard_count);
        for shard in 0..shard_count {
            let pk = catalog::shard_segment_commits_pk(shard);
            self.load_records(&pk, &mut segments, report).await?;
            self.load_log(shard, &mut segments, report).await?;
        }
        Ok(segments)
    }

    /// The commit records under `pk`, a page at a time.
    async fn load_records(
        &self,
        pk: &str,
        segments: &mut BTreeMap<String, Segment>,
        report: &mut GcReport,
    ) -> Result<(), IndexerError> {
        let mut start = Bound::Unbounded;
        loop {
            let page = self
                .catalog
                .segment_commits_in(pk, start, RECORDS_PER_PAGE)
                .await?;
            let full = page.len() == RECORDS_PER_PAGE;
            report.commit_records_read += page.len() as u64;
            let mut last = None;
            for (sk, record) in page {
                let SegmentCommitRecord { parts, .. } = record;
                let segment = catalog::segment_of_commit_sk(&sk).to_string();
                let key = ItemKey::new(pk, sk.clone());
                segments
                    .entry(segment)
                    .or_default()
                    .records
                    .push((Some(key), parts));
                last = Some(sk);
            }
            match (full, last) {
                (true, Some(sk)) => start = Bound::Excluded(sk),
                _ => return Ok(()),
            }
        }
    }

    /// The items of `shard`'s log: each names a committed segment. A folded one is the
    /// segment's commit record; one above the checkpoint keeps its segment until folded.
    async fn load_log(
        &self,
        shard: u32,
        segments: &mut BTreeMap<String, Segment>,
        report: &mut GcReport,
    ) -> Result<(), IndexerError> {
        let store = self.catalog.store().as_ref();
        // The checkpoint first: an item folded after it was read counts as unfolded.
        let folded_through = read_checkpoint(store, shard)
            .await
            .map_err(catalog::CatalogError::from)?
            .map_or(0, |(checkpoint, _)| checkpoint.folded_through);
        let items = read_items(store, shard, Bound::Unbounded)
            .await
            .map_err(catalog::CatalogError::from)?;
        report.commit_records_read += items.len() as u64;
        for (seq, logged) in items {
            let record = if seq <= folded_through {
                (
                    Some(shard_log_key(shard, seq)),
                    Some(logged.segment_parts()),
                )
            } else {
                (None, None)
            };
            segments
                .entry(logged.segment_key.clone())
                .or_default()
                .records
                .push(record);
        }
        Ok(())
    }

    /// Whether some partition still references `segment`. Records written before commit
    /// records listed their partitions, and shard-log items not folded yet, keep their
    /// segments.
    async fn is_referenced(
        &self,
        segment: &Segment,
        live_topics: &HashSet<Uuid>,
        log_starts: &mut LogStarts,
    ) -> Result<bool, IndexerError> {
        for (_, parts) in &segment.records {
            let Some(parts) = parts else {
                return Ok(true);
            };
            for part in parts {
                if !live_topics.contains(&part.topic_id) {
                    continue;
                }
                match log_starts.get(&self.catalog, part).await? {
                    Some(log_start) if log_start > part.last_offset => {}
                    // A live topic's partition without a row references what it names.
                    _ => return Ok(true),
                }
            }
        }
        Ok(false)
    }

    /// Removes the rows of deleted topics: those with a marker (written when the topic was
    /// deleted) and any other that commit records name. Partition rows go last and the marker
    /// after them, so a pass cut short finds the topic and its partitions again; the partitions
    /// named by commit records are searched too, in case a commit raced the deletion. Returns
    /// how many topics had rows.
    async fn purge_deleted_topics(
        &self,
        segments: &BTreeMap<String, Segment>,
        live_topics: &HashSet<Uuid>,
    ) -> Result<u64, IndexerError> {
        let mut deleted: HashMap<Uuid, BTreeSet<i32>> = HashMap::new();
        for topic_id in self.catalog.deleted_topics().await? {
            deleted.entry(topic_id).or_default();
        }
        for part in segments
            .values()
            .flat_map(|s| s.records.iter())
            .filter_map(|(_, parts)| parts.as_ref())
            .flatten()
        {
            deleted
                .entry(part.topic_id)
                .or_default()
                .insert(part.partition);
        }
        deleted.retain(|id, _| !live_topics.contains(id));
        let mut purged = 0;
        for (topic_id, mut partitions) in deleted {
            let rows = self
                .catalog
                .item_keys(&catalog::partitions_pk(topic_id))
                .await?;
            partitions.extend(rows.iter().filter_map(|row| row.sk.parse::<i32>().ok()));
            let mut removed = rows.len();
            for partition in partitions {
                for pk in [
                    catalog::index_pk(topic_id, partition),
                    catalog::producer_pk(topic_id, partition),
                ] {
                    let keys = self.catalog.item_keys(&pk).await?;
                    removed += keys.len();
                    self.catalog.delete_items(keys).await?;
                }
            }
            self.catalog.delete_items(rows).await?;
            self.catalog
                .delete_items(vec![catalog::deleted_topic_key(topic_id)])
                .await?;
            if removed > 0 {
                info!(%topic_id, items = removed, "removed a deleted topic's partition rows, index entries and producer states");
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Collects every `interval` while this replica holds the [`GC_LEASE`], until `shutdown`.
    pub async fn run_loop(
        self: Arc<Self>,
        owner_id: String,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        // Renewed every round; the others take over from a collector that died once they have
        // seen its lease unchanged for three rounds.
        let lease_ttl = (interval * 3).max(Duration::from_secs(1));
        run_every(interval, &shutdown, || self.gc_round(&owner_id, lease_ttl)).await;
    }

    /// One round: a pass if this replica holds (or takes) the [`GC_LEASE`].
    async fn gc_round(&self, owner_id: &str, lease_ttl: Duration) {
        match self
            .catalog
            .acquire_lease(GC_LEASE, owner_id, "", lease_ttl)
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "taking the gc lease failed; the next round retries");
                return;
            }
        }
        let span = tracing::info_span!("gc_pass");
        match self.run_pass(catalog::now_ms()).instrument(span).await {
            Ok(r) if r.segments_deleted + r.orphans_deleted + r.topics_purged > 0 => info!(
                segments = r.segments_deleted,
                orphans = r.orphans_deleted,
                bytes = r.bytes_deleted,
                commit_records = r.commit_records_deleted,
                topics = r.topics_purged,
                waiting = r.segments_waiting,
                "garbage collected"
            ),
            Ok(r) => debug!(?r, "gc pass found nothing to delete"),
            Err(e) => warn!(error = %e, "gc pass failed; the next one retries"),
        }
    }
}

impl GcReport {
    /// Adds the pass to the metrics.
    fn count(&self) {
        metrics::counter!(names::GC_SEGMENTS_DELETED).increment(self.segments_deleted);
        metrics::counter!(names::GC_ORPHANS_DELETED).increment(self.orphans_deleted);
        metrics::counter!(names::GC_BYTES_DELETED).increment(self.bytes_deleted);
        metrics::counter!(names::GC_RECORDS_DELETED).increment(self.commit_records_deleted);
        metrics::counter!(names::GC_TOPICS_PURGED).increment(self.topics_purged);
        metrics::gauge!(names::GC_LAST_PASS).set(catalog::now_ms() as f64 / 1000.0);
    }
}

/// Partition log starts read during one pass (one read per partition).
#[derive(Default)]
struct LogStarts(HashMap<(Uuid, i32), Option<i64>>);

impl LogStarts {
    async fn get(
        &mut self,
        catalog: &Catalog,
        part: &SegmentPart,
    ) -> Result<Option<i64>, IndexerError> {
        let id = (part.topic_id, part.partition);
        if let Some(known) = self.0.get(&id) {
            return Ok(*known);
        }
        let log_start = catalog
            .partition(id.0, id.1)
            .await?
            .map(|(row, _)| row.log_start_offset);
        self.0.insert(id, log_start);
        Ok(log_start)
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

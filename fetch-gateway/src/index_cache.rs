//! A cache of offset-index entries per partition.
//!
//! Entries never change once committed (only retention removes old ones), so a cached entry is
//! always right; a lookup walks cached entries and asks the store only for what it lacks. An
//! entry cached before retention removed it may name a segment garbage collection has deleted
//! since: the reader then forgets the partition's entries and reads its log start again.
//! Metrics (`cache="index"`): a lookup answered from memory is a hit, one that reads a page
//! from the store a miss; its size is estimated from the entries held.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kafscale_shared::catalog::{Catalog, IndexEntry};
use kafscale_shared::metrics as names;
use metrics::{Counter, Gauge};
use uuid::Uuid;

use crate::error::FetchError;

const STORE_PAGE: usize = 64;

/// Cached entries per partition, keyed by last offset.
type PartitionEntries = HashMap<(Uuid, i32), BTreeMap<i64, Arc<IndexEntry>>>;

pub(crate) struct IndexCache {
    catalog: Arc<Catalog>,
    capacity: usize,
    inner: Mutex<(usize, PartitionEntries)>,
    hits: Counter,
    misses: Counter,
    bytes: Gauge,
}

/// Estimated memory of one cached entry (the struct and its segment key).
const ENTRY_BYTES: usize = std::mem::size_of::<IndexEntry>() + 64;

impl IndexCache {
    pub(crate) fn new(catalog: Arc<Catalog>, capacity: usize) -> Self {
        IndexCache {
            catalog,
            capacity,
            inner: Mutex::new((0, HashMap::new())),
            hits: metrics::counter!(names::CACHE_HITS, "cache" => "index"),
            misses: metrics::counter!(names::CACHE_MISSES, "cache" => "index"),
            bytes: metrics::gauge!(names::CACHE_BYTES, "cache" => "index"),
        }
    }

    fn cached_at(&self, id: (Uuid, i32), offset: i64) -> Option<Arc<IndexEntry>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let map = inner.1.get(&id)?;
        let (_, e) = map.range(offset..).next()?;
        (e.base_offset <= offset).then(|| e.clone())
    }

    fn insert(&self, id: (Uuid, i32), entries: &[IndexEntry]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.0 + entries.len() > self.capacity {
            inner.1.clear();
            inner.0 = 0;
        }
        let mut added = 0;
        let map = inner.1.entry(id).or_default();
        for e in entries {
            if map.insert(e.last_offset, Arc::new(e.clone())).is_none() {
                added += 1;
            }
        }
        inner.0 += added;
        self.bytes.set((inner.0 * ENTRY_BYTES) as f64);
    }

    /// Forgets the partition's cached entries (their segment objects may be gone).
    pub(crate) fn forget(&self, topic_id: Uuid, partition: i32) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = inner.1.remove(&(topic_id, partition)) {
            inner.0 = inner.0.saturating_sub(map.len());
            self.bytes.set((inner.0 * ENTRY_BYTES) as f64);
        }
    }

    /// Consecutive entries starting with the one holding `offset`, below `high_watermark`,
    /// until they cover at least `want_bytes`.
    pub(crate) async fn entries_from(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
        high_watermark: i64,
        want_bytes: u64,
    ) -> Result<Vec<Arc<IndexEntry>>, FetchError> {
        let id = (topic_id, partition);
        let mut out = Vec::new();
        let mut next = offset;
        let mut bytes = 0u64;
        while next < high_watermark && (out.is_empty() || bytes < want_bytes) {
            let entry = match self.cached_at(id, next) {
                Some(e) => {
                    self.hits.increment(1);
                    e
                }
                None => {
                    self.misses.increment(1);
                    let page = self
                        .catalog
                        .index_entries_from(topic_id, partition, next, Some(STORE_PAGE))
                        .await?;
                    self.insert(id, &page);
                    match page.into_iter().next() {
                        Some(e) if e.base_offset <= next => Arc::new(e),
                        // Retention removed the entry (the log start moved) or the index has a
                        // hole; either way the offset cannot be served.
                        _ => break,
                    }
                }
            };
            if entry.last_offset >= high_watermark {
                break;
            }
            bytes += entry.byte_len;
            next = entry.last_offset + 1;
            out.push(entry);
        }
        Ok(out)
    }

    /// Every entry from `offset` on, in order (for timestamp searches).
    pub(crate) async fn scan(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    ) -> Result<Vec<IndexEntry>, FetchError> {
        Ok(self
            .catalog
            .index_entries_from(topic_id, partition, offset, None)
            .await?)
    }
}

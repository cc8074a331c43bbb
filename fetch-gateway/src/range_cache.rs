//! A bounded cache of index-entry ranges, each with its batches' real base offsets.
//!
//! Batches are stored with base offset 0: offsets are only known once the indexer commits the
//! segment. A reader needs each batch with its real base offset, but copying a range to patch
//! eight bytes per batch costs a copy of every byte served (and the page faults of the new
//! buffer). So a range is kept as the stored bytes themselves (a slice of the object or of a
//! cached block, shared with every other reader) plus one small buffer of the real base
//! offsets, eight bytes a batch; a reader sends each batch as two chunks, its real base offset
//! and the rest of the batch as stored (see [`RecordChain`]). Small batches are copied instead:
//! below [`COPY_BELOW_BYTES`] a chunk costs more than the copy.
//!
//! Index entries are immutable once committed, so a range read for an entry always yields the
//! same batches and offsets: they are cached under the entry's (segment, start, length).
//! Concurrent misses for the same range share one object-store read.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafscale_shared::batch::iter_batches;
use kafscale_shared::catalog::IndexEntry;
use kafscale_shared::loading_cache::{CacheValue, LoadingCache};
use kafscale_shared::object_store::ObjectStore;
use kafscale_shared::wire::fetch_frame::concat;

use crate::error::FetchError;

type RangeKey = (String, u64, u64);

/// Batches smaller than this are copied (with their real base offset) into one chunk with
/// their neighbours rather than sent as two chunks of their own.
pub(crate) const COPY_BELOW_BYTES: usize = 16 * 1024;

/// Bytes of a batch's base offset field (the first field of its header).
const BASE_OFFSET_LEN: usize = 8;

/// An index entry's batches as stored, with their real base offsets beside them.
#[derive(Clone)]
pub(crate) struct PatchedRange {
    /// The batches as stored (never copied).
    stored: Bytes,
    /// Each batch's real base offset, big-endian, in batch order.
    base_offsets: Bytes,
}

/// Memory a cached range costs besides its bytes: its key (a segment key of about 70 bytes and
/// two numbers), the LRU's node and the value's handles. Counted so that a cache of ranges
/// without their bytes (over a block cache: 8 bytes a batch) stays within its byte budget.
const RANGE_ENTRY_OVERHEAD: usize = 256;

impl CacheValue for PatchedRange {
    fn cached_len(&self) -> usize {
        self.stored.len() + self.base_offsets.len() + RANGE_ENTRY_OVERHEAD
    }
}

/// One batch of a [`PatchedRange`].
pub(crate) struct PatchedBatch {
    /// Position of the batch in the range.
    index: usize,
    /// Where it is in the range.
    pub(crate) bytes: std::ops::Range<usize>,
    pub(crate) last_offset: i64,
    pub(crate) max_timestamp: i64,
}

impl PatchedRange {
    /// Reads the stored batches' headers and checks they hold exactly the entry's offsets.
    fn new(stored: Bytes, entry: &IndexEntry) -> Result<Self, FetchError> {
        let mut base_offsets = BytesMut::new();
        let mut next = entry.base_offset;
        let mut end = 0;
        for (header, range) in iter_batches(&stored) {
            base_offsets.put_i64(next);
            next += header.last_offset_delta as i64 + 1;
            end = range.end;
        }
        if end != stored.len() || next != entry.last_offset + 1 {
            return Err(FetchError::Corrupt(format!(
                "batches in {} at {} end at offset {} and byte {end} of {}, but the index says \
                 offset {}",
                entry.segment_key,
                entry.byte_start,
                next - 1,
                stored.len(),
                entry.last_offset
            )));
        }
        Ok(PatchedRange {
            stored,
            base_offsets: base_offsets.freeze(),
        })
    }

    /// Every batch in order, with its real offsets.
    pub(crate) fn batches(&self) -> impl Iterator<Item = PatchedBatch> + '_ {
        iter_batches(&self.stored)
            .enumerate()
            .map(|(index, (header, range))| {
                let base_offset = self.base_offset(index);
                PatchedBatch {
                    index,
                    bytes: range,
                    last_offset: base_offset + header.last_offset_delta as i64,
                    max_timestamp: header.max_timestamp,
                }
            })
    }

    /// One batch with its real base offset, as one `Bytes` (a copy: for decoding it).
    pub(crate) fn batch_bytes(&self, batch: &PatchedBatch) -> Bytes {
        let mut chain = RecordChain::default();
        chain.push(self, batch);
        concat(chain.into_chunks())
    }

    fn base_offset(&self, index: usize) -> i64 {
        let at = index * BASE_OFFSET_LEN;
        let field: [u8; BASE_OFFSET_LEN] = self.base_offsets[at..at + BASE_OFFSET_LEN]
            .try_into()
            .unwrap_or_default();
        i64::from_be_bytes(field)
    }
}

/// Record bytes to send, as chunks in order: whole batches with their real base offsets.
#[derive(Default)]
pub(crate) struct RecordChain {
    chunks: Vec<Bytes>,
    /// Small batches waiting to become one chunk.
    copied: BytesMut,
    len: usize,
}

impl RecordChain {
    /// Appends `batch` of `range` (batches are appended in order).
    pub(crate) fn push(&mut self, range: &PatchedRange, batch: &PatchedBatch) {
        let at = batch.index * BASE_OFFSET_LEN;
        let real = range.base_offsets.slice(at..at + BASE_OFFSET_LEN);
        let rest = batch.bytes.start + BASE_OFFSET_LEN..batch.bytes.end;
        self.len += batch.bytes.len();
        if batch.bytes.len() < COPY_BELOW_BYTES {
            self.copied.extend_from_slice(&real);
            self.copied.extend_from_slice(&range.stored[rest]);
        } else {
            self.seal_copied();
            self.chunks.push(real);
            self.chunks.push(range.stored.slice(rest));
        }
    }

    fn seal_copied(&mut self) {
        if !self.copied.is_empty() {
            self.chunks.push(self.copied.split().freeze());
        }
    }

    /// Bytes in the chain.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order.
    pub(crate) fn into_chunks(mut self) -> Vec<Bytes> {
        self.seal_copied();
        self.chunks
    }

    /// The chain with `hold` kept until its first chunk is dropped (the chunks of a response
    /// are written, then dropped, together).
    pub(crate) fn held_by<T: Send + 'static>(mut self, hold: T) -> Self {
        self.seal_copied();
        if let Some(first) = self.chunks.first_mut() {
            *first = Bytes::from_owner(Held {
                data: std::mem::take(first),
                _hold: hold,
            });
        }
        self
    }
}

/// Bytes that keep something (a share of the fetch memory) until they are dropped.
struct Held<T> {
    data: Bytes,
    _hold: T,
}

impl<T> AsRef<[u8]> for Held<T> {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// Index-entry ranges with their real base offsets, by entry.
pub(crate) struct RangeCache {
    store: Arc<dyn ObjectStore>,
    /// Cached ranges; without their bytes (`stored` empty) when `keep_bytes` is off.
    ranges: LoadingCache<RangeKey, FetchError, PatchedRange>,
    /// Whether cached ranges keep their bytes: not when the store caches blocks itself.
    keep_bytes: bool,
}

impl RangeCache {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        capacity: usize,
        store_caches_blocks: bool,
    ) -> Self {
        RangeCache {
            store,
            ranges: LoadingCache::new(capacity).named("range"),
            keep_bytes: !store_caches_blocks,
        }
    }

    /// The entry's batches with their real base offsets.
    ///
    /// Without `keep_bytes` the cache keeps the offsets only, and the bytes come from the
    /// store's block cache on every read, except on the miss that loads the range: that caller
    /// keeps the bytes its load read, rather than reading them a second time.
    pub(crate) async fn read(&self, entry: &IndexEntry) -> Result<PatchedRange, FetchError> {
        let key: RangeKey = (entry.segment_key.clone(), entry.byte_start, entry.byte_len);
        let keep_bytes = self.keep_bytes;
        // Set only by the miss that runs the load: where it leaves the bytes it read.
        let mut loaded_here: Option<Arc<std::sync::Mutex<Option<Bytes>>>> = None;
        let cached = self
            .ranges
            .get_or_load(key, || {
                // Only on a miss: a hit costs the key and nothing else.
                let (store, e) = (self.store.clone(), entry.clone());
                let slot = (!keep_bytes).then(Arc::default);
                loaded_here.clone_from(&slot);
                Box::pin(async move {
                    let mut range = PatchedRange::new(read_stored(&*store, &e).await?, &e)?;
                    if let Some(slot) = slot {
                        let stored = std::mem::take(&mut range.stored);
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored);
                    }
                    Ok(range)
                })
            })
            .await?;
        if self.keep_bytes {
            return Ok(cached);
        }
        let loaded =
            loaded_here.and_then(|slot| slot.lock().unwrap_or_else(|p| p.into_inner()).take());
        let stored = match loaded {
            Some(stored) => stored,
            // From the store's block cache (a hit unless the block was let go since).
            None => read_stored(&*self.store, entry).await?,
        };
        Ok(PatchedRange {
            stored,
            base_offsets: cached.base_offsets,
        })
    }
}

/// The entry's bytes as stored.
async fn read_stored(store: &dyn ObjectStore, e: &IndexEntry) -> Result<Bytes, FetchError> {
    let stored = store
        .get_range(&e.segment_key, e.byte_start..e.byte_start + e.byte_len)
        .await?;
    if stored.len() as u64 != e.byte_len {
        return Err(FetchError::Corrupt(format!(
            "read {} bytes of {} from {}",
            stored.len(),
            e.byte_len,
            e.segment_key
        )));
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use kafscale_shared::batch::BATCH_HEADER_LEN;

    use super::*;

    /// A stored batch of `records` records and `len` bytes in all (base offset 0, as written).
    fn stored_batch(records: i32, len: usize) -> Vec<u8> {
        assert!(len >= BATCH_HEADER_LEN);
        let mut b = vec![0u8; len];
        b[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        b[16] = 2; // magic
        b[23..27].copy_from_slice(&(records - 1).to_be_bytes());
        for (i, byte) in b.iter_mut().enumerate().skip(BATCH_HEADER_LEN) {
            *byte = i as u8;
        }
        b
    }

    /// The batches with base offsets patched the plain way (a copy), to compare against.
    fn patched_copy(stored: &[u8], base_offset: i64) -> Vec<u8> {
        let mut copy = stored.to_vec();
        kafscale_shared::batch::patch_base_offsets(&mut copy, base_offset);
        copy
    }

    fn entry(base_offset: i64, last_offset: i64, byte_len: usize) -> IndexEntry {
        IndexEntry {
            format: 1,
            base_offset,
            last_offset,
            segment_key: "seg".into(),
            byte_start: 0,
            byte_len: byte_len as u64,
            batch_count: 0,
            record_count: (last_offset - base_offset + 1) as u64,
            first_timestamp: 0,
            max_timestamp: 0,
            running_max_timestamp: None,
        }
    }

    fn range_of(sizes: &[(i32, usize)], base_offset: i64) -> (Bytes, PatchedRange) {
        let stored: Vec<u8> = sizes
            .iter()
            .flat_map(|&(n, len)| stored_batch(n, len))
            .collect();
        let stored = Bytes::from(stored);
        let records: i64 = sizes.iter().map(|&(n, _)| n as i64).sum();
        let e = entry(base_offset, base_offset + records - 1, stored.len());
        let range = PatchedRange::new(stored.clone(), &e).expect("consistent");
        (stored, range)
    }

    #[test]
    fn a_chain_is_the_patched_batches_and_large_ones_are_not_copied() {
        let sizes = [(3, 100), (1, 40_000), (2, 200), (5, 300), (4, 20_000)];
        let (stored, range) = range_of(&sizes, 1000);
        let offsets: Vec<(i64, i64)> = range
            .batches()
            .map(|b| (range.base_offset(b.index), b.last_offset))
            .collect();
        assert_eq!(
            offsets,
            [
                (1000, 1002),
                (1003, 1003),
                (1004, 1005),
                (1006, 1010),
                (1011, 1014)
            ]
        );
        let expected = patched_copy(&stored, 1000);
        for batches in [0..5, 1..4, 2..3, 3..5, 0..1] {
            let mut chain = RecordChain::default();
            for batch in range.batches().filter(|b| batches.contains(&b.index)) {
                chain.push(&range, &batch);
            }
            let start: usize = sizes[..batches.start].iter().map(|s| s.1).sum();
            let end: usize = sizes[..batches.end].iter().map(|s| s.1).sum();
            assert_eq!(chain.len(), end - start);
            let chunks = chain.into_chunks();
            let got: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(got, expected[start..end], "batches {batches:?}");
            // Every large batch goes out as the stored bytes after its base offset.
            for (i, &(_, len)) in sizes
                .iter()
                .enumerate()
                .filter(|(i, _)| batches.contains(i))
            {
                let at: usize = sizes[..i].iter().map(|s| s.1).sum();
                let shared = chunks
                    .iter()
                    .any(|c| c.as_ptr() == stored[at + BASE_OFFSET_LEN..].as_ptr());
                assert_eq!(shared, len >= COPY_BELOW_BYTES, "batch {i} of {len} bytes");
            }
        }
    }

    #[test]
    fn a_range_whose_batches_disagree_with_its_entry_is_corrupt() {
        let stored = Bytes::from(stored_batch(3, 100));
        assert!(PatchedRange::new(stored.clone(), &entry(10, 12, 100)).is_ok());
        let short = PatchedRange::new(stored.clone(), &entry(10, 13, 100));
        assert!(
            matches!(short, Err(FetchError::Corrupt(_))),
            "one record short"
        );
        let torn = PatchedRange::new(stored.slice(..99), &entry(10, 12, 99));
        assert!(torn.is_err(), "a torn batch");
        let mut trailing = stored.to_vec();
        trailing.extend_from_slice(&[0; 5]);
        assert!(PatchedRange::new(Bytes::from(trailing), &entry(10, 12, 105)).is_err());
    }

    #[tokio::test]
    async fn over_a_block_cache_only_the_offsets_are_kept() {
        use kafscale_shared::object_store::MemoryObjectStore;
        let sizes = [(2, 30_000), (1, 500)];
        let stored: Vec<u8> = sizes
            .iter()
            .flat_map(|&(n, len)| stored_batch(n, len))
            .collect();
        let store = Arc::new(MemoryObjectStore::new());
        store.put("seg", Bytes::from(stored.clone())).await.unwrap();
        let e = entry(7, 9, stored.len());
        for store_caches_blocks in [false, true] {
            let cache = RangeCache::new(store.clone(), 1 << 20, store_caches_blocks);
            for _ in 0..2 {
                let range = cache.read(&e).await.unwrap();
                let mut chain = RecordChain::default();
                range.batches().for_each(|b| chain.push(&range, &b));
                let got: Vec<u8> = chain
                    .into_chunks()
                    .iter()
                    .flat_map(|c| c.to_vec())
                    .collect();
                assert_eq!(got, patched_copy(&stored, 7));
            }
            let kept = if store_caches_blocks {
                16 + RANGE_ENTRY_OVERHEAD
            } else {
                stored.len() + 16 + RANGE_ENTRY_OVERHEAD
            };
            assert_eq!(cache.ranges.cached_bytes(), kept);
        }
    }

    /// The read that loads a range keeps the bytes it read: one store read on a miss, one on
    /// each hit (before, a miss read the range twice: once to find the offsets, once to serve).
    #[tokio::test]
    async fn a_miss_over_a_block_cache_reads_the_range_once() {
        use kafscale_shared::object_store::{MemoryObjectStore, ObjectStoreOp};
        use kafscale_shared::simulated_latency::{
            LatencyModel, ObjectStoreLatency, SimulatedObjectStore,
        };
        let stored = stored_batch(3, 2_000);
        // Without delay: only its request counts are wanted.
        let instant = LatencyModel::new(0, 0, 0);
        let store = Arc::new(SimulatedObjectStore::new(
            Arc::new(MemoryObjectStore::new()),
            ObjectStoreLatency {
                put: instant,
                get: instant,
                other: instant,
                per_prefix: None,
            },
        ));
        store.put("seg", Bytes::from(stored.clone())).await.unwrap();
        let cache = RangeCache::new(store.clone(), 1 << 20, true);
        let e = entry(40, 42, stored.len());
        let reads = || store.metrics().get(ObjectStoreOp::GetRange).requests;
        for expected_reads in [1, 2] {
            let range = cache.read(&e).await.unwrap();
            assert_eq!(range.stored, Bytes::from(stored.clone()));
            assert_eq!(reads(), expected_reads);
        }
        // One batch: its base offset is all the cache keeps.
        assert_eq!(cache.ranges.cached_bytes(), 8 + RANGE_ENTRY_OVERHEAD);
    }
}

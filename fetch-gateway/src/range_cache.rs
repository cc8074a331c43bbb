//! A bounded cache of segment byte ranges, with their batches' base offsets already patched.
//!
//! Index entries are immutable once committed, so a range read for an entry always yields the
//! same patched bytes: they are cached under the entry's (segment, start, length) and served as
//! zero-copy slices. Concurrent misses for the same range share one object-store read.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafscale_shared::batch::patch_base_offsets;
use kafscale_shared::catalog::IndexEntry;
use kafscale_shared::loading_cache::LoadingCache;
use kafscale_shared::object_store::ObjectStore;

use crate::error::FetchError;

type RangeKey = (String, u64, u64);

/// Patched segment ranges by index entry.
pub(crate) struct RangeCache {
    store: Arc<dyn ObjectStore>,
    ranges: LoadingCache<RangeKey, FetchError>,
}

impl RangeCache {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, capacity: usize) -> Self {
        RangeCache {
            store,
            ranges: LoadingCache::new(capacity).named("range"),
        }
    }

    /// The entry's bytes with every batch's base offset set to its real offset.
    pub(crate) async fn read(&self, entry: &IndexEntry) -> Result<Bytes, FetchError> {
        let key: RangeKey = (entry.segment_key.clone(), entry.byte_start, entry.byte_len);
        self.ranges
            .get_or_load(key, || {
                // Only on a miss: a hit costs the key and nothing else.
                let (store, e) = (self.store.clone(), entry.clone());
                Box::pin(async move {
                    let raw = store
                        .get_range(&e.segment_key, e.byte_start..e.byte_start + e.byte_len)
                        .await?;
                    if raw.len() as u64 != e.byte_len {
                        return Err(FetchError::Corrupt(format!(
                            "read {} bytes of {} from {}",
                            raw.len(),
                            e.byte_len,
                            e.segment_key
                        )));
                    }
                    let mut buf = BytesMut::from(&raw[..]);
                    let next = patch_base_offsets(&mut buf, e.base_offset);
                    if next != e.last_offset + 1 {
                        return Err(FetchError::Corrupt(format!(
                            "batches in {} at {} end at offset {} but the index says {}",
                            e.segment_key,
                            e.byte_start,
                            next - 1,
                            e.last_offset
                        )));
                    }
                    Ok(buf.freeze())
                })
            })
            .await
    }
}

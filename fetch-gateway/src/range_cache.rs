//! A bounded cache of segment byte ranges, with their batches' base offsets already patched.
//!
//! Index entries are immutable once committed, so a range read for an entry always yields the
//! same patched bytes: they are cached under the entry's (segment, start, length) and served as
//! zero-copy slices. Concurrent misses for the same range share one object-store read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kafscale_shared::batch::patch_base_offsets;
use kafscale_shared::catalog::IndexEntry;
use kafscale_shared::object_store::ObjectStore;
use lru::LruCache;

use crate::error::FetchError;

type RangeKey = (String, u64, u64);
type Load = Shared<BoxFuture<'static, Result<Bytes, FetchError>>>;

struct Inner {
    lru: LruCache<RangeKey, Bytes>,
    bytes: usize,
    loading: HashMap<RangeKey, Load>,
}

/// Patched segment ranges by index entry.
pub(crate) struct RangeCache {
    store: Arc<dyn ObjectStore>,
    capacity: usize,
    inner: Mutex<Inner>,
}

impl RangeCache {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, capacity: usize) -> Self {
        RangeCache {
            store,
            capacity,
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                loading: HashMap::new(),
            }),
        }
    }

    /// The entry's bytes with every batch's base offset set to its real offset.
    pub(crate) async fn read(&self, entry: &IndexEntry) -> Result<Bytes, FetchError> {
        let key: RangeKey = (entry.segment_key.clone(), entry.byte_start, entry.byte_len);
        let load = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(b) = inner.lru.get(&key) {
                return Ok(b.clone());
            }
            match inner.loading.get(&key) {
                Some(l) => l.clone(),
                None => {
                    let store = self.store.clone();
                    let e = entry.clone();
                    let fut: BoxFuture<'static, Result<Bytes, FetchError>> = Box::pin(async move {
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
                    });
                    let shared = fut.shared();
                    inner.loading.insert(key.clone(), shared.clone());
                    shared
                }
            }
        };
        let result = load.await;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.loading.remove(&key);
        if let Ok(bytes) = &result
            && bytes.len() <= self.capacity
            && inner.lru.peek(&key).is_none()
        {
            {
                inner.bytes += bytes.len();
                inner.lru.put(key, bytes.clone());
                while inner.bytes > self.capacity {
                    match inner.lru.pop_lru() {
                        Some((_, old)) => inner.bytes -= old.len(),
                        None => break,
                    }
                }
            }
        }
        result
    }
}

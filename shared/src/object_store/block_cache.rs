//! A read cache of whole object blocks, as an [`ObjectStore`] wrapper.
//!
//! Why blocks and not the ranges readers ask for: a segment holds the batches of many
//! partitions, and a consumer group reading all of them asks for one range per partition. Read
//! as asked, a segment of 16 partitions costs 16 GETs per fetch replica; read as blocks (8 MiB
//! by default, larger than a segment at the ingest tier's default flush size), it costs one,
//! which serves every partition's range, for tail and catch-up readers alike. The object
//! store's cost model is per request, so this is what keeps catch-up reads at about one GET per
//! segment (docs/benchmarks.md). Blocks are read with [`ObjectStore::get_range_capped`], so the
//! cache never needs to know an object's size.
//!
//! **Write-through.** Where the same process writes the segments (standalone mode), `put` also
//! caches the new object's blocks, so tail consumers are served from memory and never touch
//! the disk or S3 for what was just written.
//!
//! Objects are immutable, so a cached block never goes stale; a deleted object's blocks simply
//! age out of the LRU.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{ObjectMeta, ObjectStore, ObjectStoreError};
use crate::loading_cache::LoadingCache;

/// Default block size: larger than a segment flushed at the ingest tier's default 4 MiB.
pub const DEFAULT_BLOCK_BYTES: u64 = 8 * 1024 * 1024;

/// Blocks a multi-block read loads at the same time.
const READ_AHEAD_BLOCKS: u64 = 4;

/// Block caching around another object store.
pub struct BlockCache {
    inner: Arc<dyn ObjectStore>,
    block_bytes: u64,
    write_through: bool,
    blocks: Arc<LoadingCache<(String, u64), ObjectStoreError>>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("inner", &self.inner)
            .field("block_bytes", &self.block_bytes)
            .field("write_through", &self.write_through)
            .field("cached_bytes", &self.blocks.cached_bytes())
            .finish()
    }
}

impl BlockCache {
    /// Caches up to `capacity_bytes` of `inner`'s objects in blocks of `block_bytes`; with
    /// `write_through`, objects written through this store are cached as they are written.
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        block_bytes: u64,
        capacity_bytes: usize,
        write_through: bool,
    ) -> Self {
        BlockCache {
            inner,
            block_bytes: block_bytes.max(1),
            write_through,
            blocks: Arc::new(LoadingCache::new(capacity_bytes).named("block")),
        }
    }

    /// Block `index` of `key` (shorter than a block at the object's end, empty past it).
    async fn block(&self, key: &str, index: u64) -> Result<Bytes, ObjectStoreError> {
        let range = index * self.block_bytes..(index + 1) * self.block_bytes;
        self.blocks
            .get_or_load((key.to_owned(), index), || {
                let (inner, owned) = (self.inner.clone(), key.to_owned());
                Box::pin(async move { inner.get_range_capped(&owned, range).await })
            })
            .await
    }

    /// What the object holds of `range`, assembled from blocks (a slice of one block without
    /// copying when the range lies inside it). Blocks load [`READ_AHEAD_BLOCKS`] at a time and
    /// stop at the object's last (short) block, since the object's size is not known.
    async fn read(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectStoreError> {
        if range.start >= range.end {
            return self.inner.get_range_capped(key, range).await;
        }
        let first = range.start / self.block_bytes;
        let last = (range.end - 1) / self.block_bytes;
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut index = first;
        'waves: while index <= last {
            let wave = index..=last.min(index + READ_AHEAD_BLOCKS - 1);
            let loads = wave.clone().map(|i| self.block(key, i));
            let blocks = match futures::future::try_join_all(loads).await {
                Ok(blocks) => blocks,
                // The object ends before this block: what came before is what it holds of
                // the range; if nothing did, the backend words the error for the range asked.
                Err(ObjectStoreError::InvalidRange { .. }) if !pieces.is_empty() => break,
                Err(ObjectStoreError::InvalidRange { .. }) => {
                    return self.inner.get_range_capped(key, range).await;
                }
                Err(e) => return Err(e),
            };
            for (i, block) in wave.zip(blocks) {
                let block_start = i * self.block_bytes;
                let from = range.start.saturating_sub(block_start) as usize;
                if from > block.len() {
                    return self.inner.get_range_capped(key, range).await;
                }
                let to = (range.end - block_start).min(block.len() as u64) as usize;
                pieces.push(block.slice(from..to));
                if (block.len() as u64) < self.block_bytes {
                    break 'waves; // the object's last block
                }
            }
            index += READ_AHEAD_BLOCKS;
        }
        Ok(match pieces.len() {
            1 => pieces.pop().unwrap_or_default(),
            _ => {
                let mut buf = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
                for piece in &pieces {
                    buf.extend_from_slice(piece);
                }
                buf.freeze()
            }
        })
    }
}

#[async_trait]
impl ObjectStore for BlockCache {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        self.inner.put(key, data.clone()).await?;
        if self.write_through {
            let mut start = 0u64;
            let mut index = 0;
            loop {
                let end = (start + self.block_bytes).min(data.len() as u64);
                let block = data.slice(start as usize..end as usize);
                self.blocks.insert((key.to_owned(), index), block);
                if end == data.len() as u64 {
                    break;
                }
                start = end;
                index += 1;
            }
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectStoreError> {
        if range.start >= range.end {
            return self.inner.get_range(key, range).await;
        }
        match self.read(key, range.clone()).await {
            Ok(got) if got.len() as u64 == range.end - range.start => Ok(got),
            // Past the object's end: the backend words the error (with the object's size).
            Ok(_) | Err(ObjectStoreError::InvalidRange { .. }) => {
                self.inner.get_range(key, range).await
            }
            Err(e) => Err(e),
        }
    }

    async fn get_range_capped(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, ObjectStoreError> {
        self.read(key, range).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), ObjectStoreError> {
        self.inner.delete_many(keys).await
    }
}

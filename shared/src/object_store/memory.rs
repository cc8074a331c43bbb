//! An in-memory [`ObjectStore`] for unit tests.
//!
//! It is the reference for the trait's semantics: every check (create-only, range bounds) is
//! done under one mutex, so it is trivially atomic. Nothing survives the process, and `put`
//! is "durable" only in the sense that later calls see it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectMeta, ObjectStore, ObjectStoreError};

/// An [`ObjectStore`] that keeps every object in a sorted map in memory.
#[derive(Debug, Default)]
pub struct MemoryObjectStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryObjectStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, Bytes>> {
        // A panic while holding the lock cannot leave the map half-updated (every critical
        // section is a single map call), so a poisoned lock is still safe to use.
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Checks that `range` lies inside an object of `size` bytes.
pub(crate) fn check_range(
    key: &str,
    range: &Range<u64>,
    size: u64,
) -> Result<(), ObjectStoreError> {
    if range.start <= range.end && range.end <= size {
        Ok(())
    } else {
        Err(ObjectStoreError::InvalidRange {
            key: key.to_owned(),
            start: range.start,
            end: range.end,
            size,
        })
    }
}

#[async_trait]
impl ObjectStore for MemoryObjectStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        let mut objects = self.objects();
        if objects.contains_key(key) {
            return Err(ObjectStoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        objects.insert(key.to_owned(), data);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
        self.objects()
            .get(key)
            .cloned()
            .ok_or_else(|| ObjectStoreError::NotFound {
                key: key.to_owned(),
            })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectStoreError> {
        let data = self.get(key).await?;
        check_range(key, &range, data.len() as u64)?;
        // Both bounds are <= data.len(), which is a usize, so the casts cannot truncate.
        Ok(data.slice(range.start as usize..range.end as usize))
    }

    async fn get_range_capped(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, ObjectStoreError> {
        let data = self.get(key).await?;
        let range = range.start..range.end.min(data.len() as u64);
        check_range(key, &range, data.len() as u64)?;
        Ok(data.slice(range.start as usize..range.end as usize))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        Ok(self.objects().get(key).map(|data| ObjectMeta {
            key: key.to_owned(),
            size: data.len() as u64,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        let objects = self.objects();
        Ok(objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, data)| ObjectMeta {
                key: key.clone(),
                size: data.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.objects().remove(key);
        Ok(())
    }
}

//! An in-memory [`MetaStore`] for unit tests.
//!
//! It is the reference for the trait's semantics: a whole write batch is checked and applied
//! under one mutex, so atomicity and isolation are trivial. Nothing survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use super::batch::{condition_holds, condition_of, is_empty_range, validate_batch};
use super::{Direction, Item, ItemKey, MetaStore, MetaStoreError, Query, WriteOp};

type Items = BTreeMap<ItemKey, (Bytes, u64)>;

/// A [`MetaStore`] that keeps every item (value and version) in a sorted map in memory.
#[derive(Debug)]
pub struct MemoryMetaStore {
    items: Mutex<Items>,
    max_batch_ops: usize,
}

impl Default for MemoryMetaStore {
    fn default() -> Self {
        MemoryMetaStore {
            items: Mutex::default(),
            max_batch_ops: usize::MAX,
        }
    }
}

impl MemoryMetaStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that, like DynamoDB, refuses write batches of more than `max` operations
    /// (for testing code that must split its writes).
    pub fn with_max_batch_ops(max: usize) -> Self {
        MemoryMetaStore {
            items: Mutex::default(),
            max_batch_ops: max.max(1),
        }
    }

    /// A copy of every item (key and value), in key order: to start many stores from one
    /// state (the fuzz targets) or to look at what a test wrote.
    pub fn dump(&self) -> Vec<(ItemKey, Bytes)> {
        self.items()
            .iter()
            .map(|(key, (value, _))| (key.clone(), value.clone()))
            .collect()
    }

    /// A store holding `items`, each at version 1.
    pub fn with_items(items: impl IntoIterator<Item = (ItemKey, Bytes)>) -> Self {
        let store = Self::new();
        store
            .items()
            .extend(items.into_iter().map(|(key, value)| (key, (value, 1))));
        store
    }

    fn items(&self) -> MutexGuard<'_, Items> {
        // Batches are checked before anything is modified and applying them cannot panic, so a
        // poisoned lock never guards a half-applied batch.
        self.items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl MetaStore for MemoryMetaStore {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, MetaStoreError> {
        Ok(self.items().get(key).map(|(value, version)| Item {
            key: key.clone(),
            value: value.clone(),
            version: *version,
        }))
    }

    async fn query(&self, query: Query) -> Result<Vec<Item>, MetaStoreError> {
        let limit = query.limit.unwrap_or(usize::MAX);
        if limit == 0 || is_empty_range(&query.start, &query.end) {
            return Ok(Vec::new());
        }
        let pk = &query.pk;
        let lower = match &query.start {
            Bound::Included(sk) => Bound::Included(ItemKey::new(pk, sk)),
            Bound::Excluded(sk) => Bound::Excluded(ItemKey::new(pk, sk)),
            // "" is the smallest sort key.
            Bound::Unbounded => Bound::Included(ItemKey::new(pk, "")),
        };
        let upper = match &query.end {
            Bound::Included(sk) => Bound::Included(ItemKey::new(pk, sk)),
            Bound::Excluded(sk) => Bound::Excluded(ItemKey::new(pk, sk)),
            // `pk + "\0"` is the smallest partition key after `pk`.
            Bound::Unbounded => Bound::Excluded(ItemKey::new(format!("{pk}\0"), "")),
        };
        let items = self.items();
        let range = items.range((lower, upper));
        let to_item = |(key, (value, version)): (&ItemKey, &(Bytes, u64))| Item {
            key: key.clone(),
            value: value.clone(),
            version: *version,
        };
        Ok(match query.direction {
            Direction::Forward => range.take(limit).map(to_item).collect(),
            Direction::Backward => range.rev().take(limit).map(to_item).collect(),
        })
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
        validate_batch(&ops, self.max_batch_ops())?;
        let mut items = self.items();
        for (index, op) in ops.iter().enumerate() {
            let current = items.get(op.key()).map(|(_, version)| *version);
            if !condition_holds(condition_of(op), current) {
                return Err(MetaStoreError::ConditionFailed {
                    index,
                    key: op.key().clone(),
                });
            }
        }
        for op in ops {
            match op {
                WriteOp::Put { key, value, .. } => {
                    let version = items.get(&key).map_or(0, |(_, version)| *version) + 1;
                    items.insert(key, (value, version));
                }
                WriteOp::Delete { key, .. } => {
                    items.remove(&key);
                }
                WriteOp::Check { .. } => {}
            }
        }
        Ok(())
    }

    fn max_batch_ops(&self) -> usize {
        self.max_batch_ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dump_starts_a_store_with_the_same_items() {
        let store = MemoryMetaStore::new();
        let put = |sk: &str, value: &'static [u8]| WriteOp::Put {
            key: ItemKey::new("p", sk),
            value: Bytes::from_static(value),
            condition: super::super::Condition::None,
        };
        store
            .write(vec![put("a", b"1"), put("b", b"2")])
            .await
            .unwrap();
        store.write(vec![put("a", b"3")]).await.unwrap();
        let copy = MemoryMetaStore::with_items(store.dump());
        let items = copy.query(Query::all("p")).await.unwrap();
        let seen: Vec<_> = items
            .iter()
            .map(|i| (i.key.sk.as_str(), &i.value[..], i.version))
            .collect();
        assert_eq!(seen, vec![("a", &b"3"[..], 1), ("b", &b"2"[..], 1)]);
    }
}

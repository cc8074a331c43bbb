//! The metadata store: a small, DynamoDB-shaped table of versioned items.
//!
//! Every item has a partition key (`pk`) and a sort key (`sk`); items of one `pk` are kept in
//! `sk` order so an index lookup ("first entry whose last offset is ≥ X") is one range query.
//! Every item carries a `version` that starts at 1 and grows by one per put, and writes are
//! atomic batches of operations with per-operation conditions (absent, exact version, exists).
//! That is all coordination needs: compare-and-set on versions plus fencing through a
//! `Check` of a lease item in the same batch. The typed layer on top ([`crate::catalog`]) owns
//! the logical model (topics, partitions, index rows, leases, ...) so each backend stays small.
//!
//! Backends: [`MemoryMetaStore`] (unit tests), [`RedbMetaStore`] (standalone, durable: every
//! `write` is one fsynced redb transaction), [`DynamoMetaStore`] (distributed mode: one DynamoDB
//! table). Every backend passes [`conformance::run_all`].

use std::ops::Bound;

use async_trait::async_trait;
use bytes::Bytes;

mod batch;
pub mod capacity;
pub mod conformance;
pub mod dynamodb;
mod memory;
pub mod metrics;
mod redb_store;

pub use dynamodb::{DynamoConfig, DynamoMetaStore};
pub use memory::MemoryMetaStore;
pub use metrics::MetaStoreMetrics;
pub use redb_store::RedbMetaStore;

/// The address of one item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemKey {
    /// Partition key: groups items that are queried together.
    pub pk: String,
    /// Sort key: orders items inside a partition key (byte-wise).
    pub sk: String,
}

impl ItemKey {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        ItemKey {
            pk: pk.into(),
            sk: sk.into(),
        }
    }
}

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub key: ItemKey,
    pub value: Bytes,
    /// 1 after the first put, +1 after every later put of the same key.
    pub version: u64,
}

/// A condition that must hold on the item's current state for a write batch to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// No condition.
    None,
    /// The item must not exist.
    Absent,
    /// The item must exist (any version).
    Exists,
    /// The item must exist with exactly this version.
    Version(u64),
}

/// One operation of an atomic write batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Creates or replaces the item (its version becomes old version + 1, or 1).
    Put {
        key: ItemKey,
        value: Bytes,
        condition: Condition,
    },
    /// Removes the item (a missing item is fine unless the condition says otherwise).
    Delete { key: ItemKey, condition: Condition },
    /// Writes nothing; only its condition must hold (e.g. "the lease still has my version").
    Check { key: ItemKey, condition: Condition },
}

impl WriteOp {
    pub fn key(&self) -> &ItemKey {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key, .. } | WriteOp::Check { key, .. } => {
                key
            }
        }
    }
}

/// Which way a query walks the sort keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// A query over one partition key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub pk: String,
    pub start: Bound<String>,
    pub end: Bound<String>,
    pub direction: Direction,
    /// At most this many items (all when `None`).
    pub limit: Option<usize>,
}

impl Query {
    /// Every item of `pk`, in sort-key order.
    pub fn all(pk: impl Into<String>) -> Self {
        Query {
            pk: pk.into(),
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            direction: Direction::Forward,
            limit: None,
        }
    }
}

/// Errors of a metadata store backend.
#[derive(Debug, thiserror::Error)]
pub enum MetaStoreError {
    /// The condition of operation `index` of a write batch did not hold; nothing was written.
    #[error("condition failed on {key:?} (operation {index} of the batch)")]
    ConditionFailed { index: usize, key: ItemKey },
    /// The batch has more operations than the backend can apply atomically, or names one key twice.
    #[error("invalid write batch: {0}")]
    InvalidBatch(String),
    /// The backend is unavailable or failed; the call may succeed if retried.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded (corruption or a newer format).
    #[error("corrupt metadata item {key:?}: {reason}")]
    Corrupt { key: ItemKey, reason: String },
}

impl MetaStoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, MetaStoreError::Unavailable(_))
    }
}

/// A DynamoDB-shaped store of versioned items with conditional, atomic write batches.
#[async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug + 'static {
    /// Reads one item.
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, MetaStoreError>;
    /// Reads the items of one partition key inside a sort-key range.
    async fn query(&self, query: Query) -> Result<Vec<Item>, MetaStoreError>;
    /// Applies every operation atomically if every condition holds, else nothing
    /// ([`MetaStoreError::ConditionFailed`] names the first failing operation). A key may appear
    /// at most once per batch. Durable when it returns `Ok`.
    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError>;
    /// The largest batch `write` accepts (DynamoDB transactions: 100).
    fn max_batch_ops(&self) -> usize;
}

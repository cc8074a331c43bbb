//! The object store: where every byte of record data lives.
//!
//! Objects are immutable and written once: `put` is create-only and fails with
//! [`ObjectStoreError::AlreadyExists`] if the key is taken, so a retried upload can never
//! overwrite data a reader may already be using. Behaviour such as retries, metrics or fault
//! injection is added by wrappers that are themselves `ObjectStore`s.
//!
//! Backends: [`MemoryObjectStore`] (unit tests), [`LocalFsObjectStore`] (standalone; crash-safe
//! through write-temp, fsync, then a create-only hard link), [`S3ObjectStore`] (distributed
//! mode; create-only through conditional writes). Every backend passes [`conformance::run_all`].

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

pub mod block_cache;
pub mod conformance;
mod local;
mod memory;
mod metrics;
mod s3;

pub use block_cache::BlockCache;
pub use local::LocalFsObjectStore;
pub use memory::MemoryObjectStore;
pub use metrics::{ObjectStoreMetrics, ObjectStoreOp, OpCounts};
pub use s3::{S3Config, S3Credentials, S3ObjectStore};

/// What `head` and `list` report about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's full key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Errors of an object store backend.
#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    /// `put` found the key already taken.
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    /// `get`, `get_range` or `delete` found no such object.
    #[error("object {key} not found")]
    NotFound { key: String },
    /// A range that does not lie inside the object.
    #[error("range {start}..{end} is outside object {key} of {size} bytes")]
    InvalidRange {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },
    /// A key that the backend cannot store (empty, `..` segments, absolute, ...).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The backend failed (I/O, network); the operation may succeed if retried.
    #[error("object store i/o error on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// The backend refused the request for a reason that retrying it unchanged cannot fix: access
    /// denied, no such bucket, wrong region, a feature the server lacks (such as conditional
    /// writes). This is a deployment problem, and neither "not found" nor a transient failure.
    #[error("object store rejected the request for {key}: {reason}")]
    Rejected { key: String, reason: String },
}

/// A copy of the error for each waiter of a shared load (the read caches): the I/O source is
/// rebuilt with its kind and message, as `std::io::Error` is not `Clone`.
impl Clone for ObjectStoreError {
    fn clone(&self) -> Self {
        match self {
            ObjectStoreError::AlreadyExists { key } => {
                ObjectStoreError::AlreadyExists { key: key.clone() }
            }
            ObjectStoreError::NotFound { key } => ObjectStoreError::NotFound { key: key.clone() },
            ObjectStoreError::InvalidRange {
                key,
                start,
                end,
                size,
            } => ObjectStoreError::InvalidRange {
                key: key.clone(),
                start: *start,
                end: *end,
                size: *size,
            },
            ObjectStoreError::InvalidKey { key, reason } => ObjectStoreError::InvalidKey {
                key: key.clone(),
                reason,
            },
            ObjectStoreError::Io { key, source } => ObjectStoreError::Io {
                key: key.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            ObjectStoreError::Rejected { key, reason } => ObjectStoreError::Rejected {
                key: key.clone(),
                reason: reason.clone(),
            },
        }
    }
}

impl ObjectStoreError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ObjectStoreError::Io { .. })
    }
}

/// A narrow, immutable-object store (the S3 subset kafscale needs).
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `data` under `key` if no object has that key yet (create-only).
    /// The object is durable when this returns `Ok`.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError>;
    /// Reads a whole object.
    async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError>;
    /// Reads `range` (end exclusive) of an object; the range must lie inside it.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectStoreError>;
    /// Reads what the object holds of `range`: from `range.start` to the smaller of `range.end`
    /// and the object's size, so fewer bytes than asked when the object ends first. A start
    /// beyond the size (or after the end) is [`ObjectStoreError::InvalidRange`].
    ///
    /// This is how a reader that does not know an object's size reads it in fixed-size blocks
    /// (the fetch tier's [`BlockCache`](super::block_cache::BlockCache)): one request where the
    /// backend can clamp (S3 does for a `Range` header). The default asks for the size first.
    async fn get_range_capped(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, ObjectStoreError> {
        let size = self
            .head(key)
            .await?
            .ok_or_else(|| ObjectStoreError::NotFound {
                key: key.to_owned(),
            })?
            .size;
        let capped = range.start..range.end.min(size);
        self.get_range(key, capped).await
    }
    /// Size of an object, or `None` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError>;
    /// Deletes an object; deleting a missing object is not an error (as in S3).
    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError>;
    /// Deletes every object in `keys` (missing ones are not an error, duplicates are allowed).
    ///
    /// Not atomic: on error some of the objects may already be gone, and the call can simply be
    /// repeated. The default deletes one key at a time; backends with a batch API (S3's
    /// DeleteObjects) override it, since garbage collection deletes objects by the thousand.
    async fn delete_many(&self, keys: &[String]) -> Result<(), ObjectStoreError> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }
}

//! Settings of the ingest tier.

use std::time::Duration;

/// How the ingest gateway buffers and flushes.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Flush when this many batch bytes are buffered.
    pub flush_bytes: usize,
    /// The longest data waits to be sealed (a full segment is sealed at once): a segment is
    /// sealed when this long has passed since the previous seal and it holds data, even while
    /// uploads are in flight.
    pub flush_interval: Duration,
    /// The least time between two seals when nothing is uploading. Zero (local disk): a
    /// segment is sealed as soon as no upload is in flight, so a request on an idle gateway
    /// is flushed at once and what arrives during an upload is grouped into the next segment,
    /// with `flush_interval` only an upper bound. Equal to `flush_interval` (object stores,
    /// where each flush is a PUT and a metadata write): one seal per interval at most.
    pub flush_min_interval: Duration,
    /// Largest record batch accepted (Kafka's `max.message.bytes`).
    pub max_message_bytes: usize,
    /// Bytes buffered or in flight before produce requests wait (backpressure).
    pub max_buffered_bytes: usize,
    /// Segments uploading at the same time (commits still happen in order).
    pub max_concurrent_uploads: usize,
    /// Attempts of a segment commit before the produce requests get an error.
    pub commit_attempts: u32,
    /// Indexer shards of the cluster (a segment is committed once per shard it touches).
    pub shard_count: u32,
    /// A segment upload slower than this is raced by a second upload under a new key (`None`:
    /// never). Worth it against object stores with a long latency tail (S3), not local disk.
    pub upload_hedge_after: Option<Duration>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            flush_bytes: 4 * 1024 * 1024,
            flush_interval: Duration::from_millis(20),
            flush_min_interval: Duration::ZERO,
            max_message_bytes: 1024 * 1024 + 12,
            max_buffered_bytes: 256 * 1024 * 1024,
            max_concurrent_uploads: 4,
            commit_attempts: 5,
            shard_count: 1,
            upload_hedge_after: None,
        }
    }
}

//! The compactor-free indexer: the single writer (sequencer) for the partitions of its shards.
//!
//! For every uploaded segment it assigns offsets to each batch, de-duplicates idempotent
//! producers exactly as a Kafka partition leader does (the last five batches per producer and
//! partition are remembered), and then writes — in ONE atomic, conditional metadata-store batch
//! — the offset-index entries, each touched partition's next offset (= high watermark), the
//! producer states, and the segment's commit record, fenced by a `Check` on its shard lease.
//! A deposed owner's write therefore fails as a whole; a retried commit of the same segment
//! finds the commit record and gets the same answer. It never rewrites segment data.
//!
//! Concurrency: each shard's commits are applied one at a time (its state mutex), which also
//! orders them exactly as the gateways submitted them; different shards commit concurrently.

pub mod gc;
pub mod http;
pub mod internal_auth;
mod sequencing;
pub mod status;

pub use sequencing::{
    DEFAULT_PRODUCER_ID_EXPIRATION, DEFAULT_SEGMENT_COMMIT_MAX_AGE, FoldReport, Indexer,
    IndexerConfig, IndexerError, LeaseReport, Retained, RetentionReport,
};

//! The commit contract between the ingest tier and the indexer (sequencer).
//!
//! After a segment object is durable in the object store, the ingest gateway sends one
//! [`CommitRequest`] describing every batch in it; the sequencer assigns offsets (or recognises
//! idempotent-producer duplicates) and answers with one [`BatchOutcome`] per batch, in request
//! order. A commit is idempotent by segment key: repeating it returns the same outcomes.
//! Standalone mode calls the indexer in-process through this trait; the network
//! implementation speaks the same types over HTTP.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One batch of a segment to be sequenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitBatch {
    pub topic_id: Uuid,
    pub partition: i32,
    /// Absolute position of the batch inside the segment object.
    pub byte_start: u64,
    pub byte_len: u64,
    /// Offsets the batch occupies (last offset delta + 1).
    pub offset_count: u32,
    pub record_count: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// A request to sequence the batches of one uploaded segment that belong to one indexer shard
/// (a segment spanning several shards is committed once per shard). Batches of one partition
/// appear in the order the gateway accepted them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    pub segment_key: String,
    /// The shard every batch belongs to (see [`crate::shards::shard_of`]).
    pub shard: u32,
    pub segment_size: u64,
    pub batches: Vec<CommitBatch>,
}

/// Why the sequencer refused a batch (mapped to a Kafka error code at the protocol edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    UnknownTopicOrPartition,
    OutOfOrderSequence,
    InvalidProducerEpoch,
    UnknownProducerId,
}

/// What happened to one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOutcome {
    /// The batch got offsets `base_offset..base_offset + offset_count`.
    Appended {
        base_offset: i64,
        log_start_offset: i64,
    },
    /// An idempotent producer re-sent a batch it had already written at `base_offset`.
    Duplicate {
        base_offset: i64,
        log_start_offset: i64,
    },
    Rejected(RejectReason),
}

/// The sequencer's answer: one outcome per request batch, in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResponse {
    pub outcomes: Vec<BatchOutcome>,
}

/// Errors of a commit as a whole; each is retriable by resending the same request. They cross
/// the network as JSON, so the gateway sees exactly what the indexer said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SequencerError {
    #[error("metadata store unavailable: {0}")]
    StoreUnavailable(String),
    #[error("this indexer no longer owns the partitions (fenced): {0}")]
    Fenced(String),
    /// The shard is not (or no longer) owned by the indexer that was asked; re-resolve.
    #[error("indexer does not own shard {shard} (owner: {owner:?})")]
    NotOwner { shard: u32, owner: Option<String> },
    #[error("indexer unreachable: {0}")]
    Unreachable(String),
    #[error("sequencer is shutting down")]
    ShuttingDown,
    #[error("invalid commit request: {0}")]
    InvalidRequest(String),
    /// DeleteRecords of a partition that does not exist.
    #[error("unknown topic or partition")]
    UnknownPartition,
    /// DeleteRecords past the high watermark (or below -1).
    #[error("offset {offset} is outside the partition's log (high watermark {high_watermark})")]
    OffsetOutOfRange { offset: i64, high_watermark: i64 },
    /// A commit of a segment older than the indexer accepts (garbage collection may already
    /// treat it as an orphan); it was not committed, and the producer's retry writes anew.
    #[error("segment {0} is too old to be committed")]
    SegmentExpired(String),
    /// The indexer refused the gateway's internal token (HTTP 401): the gateway and the
    /// indexers are configured with different `--internal-token-file`s. Never re-sent at
    /// once: only a configuration change helps.
    #[error(
        "indexer refused the internal token (check --internal-token-file on gateways and indexers)"
    )]
    Unauthorized,
}

impl SequencerError {
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            SequencerError::InvalidRequest(_)
                | SequencerError::UnknownPartition
                | SequencerError::OffsetOutOfRange { .. }
                | SequencerError::SegmentExpired(_)
        )
    }
}

/// DeleteRecords of one partition, sent to its shard's owner: the log start offset becomes
/// `offset` (-1: the high watermark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRecordsRequest {
    pub shard: u32,
    pub topic_id: Uuid,
    pub partition: i32,
    pub offset: i64,
}

/// The partition's log start offset after a DeleteRecords (Kafka's "low watermark").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRecordsResponse {
    pub log_start_offset: i64,
}

/// Assigns offsets to the batches of uploaded segments, and moves log start offsets (the
/// shard owner is the one writer of its partitions' rows).
#[async_trait]
pub trait Sequencer: Send + Sync + 'static {
    async fn commit(&self, request: CommitRequest) -> Result<CommitResponse, SequencerError>;

    async fn delete_records(
        &self,
        request: DeleteRecordsRequest,
    ) -> Result<DeleteRecordsResponse, SequencerError>;
}

//! Errors of the ingest tier and their Kafka error codes.

use kafka_protocol::error::ResponseError;
use kafscale_shared::batch::BatchError;
use kafscale_shared::catalog::CatalogError;
use kafscale_shared::object_store::ObjectStoreError;
use kafscale_shared::sequencer::{RejectReason, SequencerError};
use kafscale_shared::topic_api::catalog_error_code;

/// Why a produce partition (or the whole flush it was in) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    #[error("invalid record batch: {0}")]
    Batch(#[from] BatchError),
    #[error("segment upload failed: {0}")]
    Upload(String),
    #[error("segment commit failed: {0}")]
    Commit(String),
    #[error("indexer fenced: {0}")]
    Fenced(String),
    #[error("rejected by the sequencer: {0:?}")]
    Rejected(RejectReason),
    #[error("topic lookup failed: {0}")]
    Catalog(String, ResponseError),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The batch was not committed within the produce request's timeout; it may still be.
    #[error("not committed within the request's {0} ms timeout; it may still be committed")]
    TimedOut(u64),
    /// Records without a key sent to a compacted topic (their indexes in the batch).
    #[error("{} of the batch's records have no key; a compacted topic accepts only keyed records", .0.len())]
    KeylessRecords(Vec<i32>),
}

impl IngestError {
    pub fn from_upload(e: &ObjectStoreError) -> Self {
        IngestError::Upload(e.to_string())
    }

    pub fn from_commit(e: &SequencerError) -> Self {
        match e {
            SequencerError::Fenced(s) => IngestError::Fenced(s.clone()),
            SequencerError::NotOwner { .. } | SequencerError::Unreachable(_) => {
                IngestError::Fenced(e.to_string())
            }
            SequencerError::ShuttingDown => IngestError::ShuttingDown,
            SequencerError::StoreUnavailable(_)
            | SequencerError::Unauthorized
            | SequencerError::InvalidRequest(_)
            | SequencerError::UnknownPartition
            | SequencerError::OffsetOutOfRange { .. }
            | SequencerError::SegmentExpired(_) => IngestError::Commit(e.to_string()),
        }
    }

    pub fn from_catalog(e: &CatalogError) -> Self {
        IngestError::Catalog(e.to_string(), catalog_error_code(e))
    }

    /// The Kafka error code a client sees.
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            IngestError::Batch(b) => match b {
                BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
                BatchError::CrcMismatch { .. } | BatchError::Truncated { .. } => {
                    ResponseError::CorruptMessage
                }
                BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
                BatchError::Invalid(_) | BatchError::DecompressedTooLarge { .. } => {
                    ResponseError::InvalidRecord
                }
            },
            IngestError::KeylessRecords(_) => ResponseError::InvalidRecord,
            // Retriable: the client retries and, if idempotent, is de-duplicated.
            IngestError::Upload(_) | IngestError::Commit(_) => ResponseError::KafkaStorageError,
            IngestError::Fenced(_) | IngestError::ShuttingDown => {
                ResponseError::NotLeaderOrFollower
            }
            IngestError::Rejected(r) => match r {
                RejectReason::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
                RejectReason::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
                RejectReason::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
                RejectReason::UnknownProducerId => ResponseError::UnknownProducerId,
            },
            IngestError::Catalog(_, code) => *code,
            // Retriable, like Kafka's expired DelayedProduce.
            IngestError::TimedOut(_) => ResponseError::RequestTimedOut,
        }
    }
}

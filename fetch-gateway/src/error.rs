//! Errors of the fetch tier and their Kafka error codes.

use kafka_protocol::error::ResponseError;
use kafscale_shared::catalog::CatalogError;
use kafscale_shared::object_store::ObjectStoreError;

/// Why a partition could not be read, or a group operation was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("offset {offset} is outside [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        high_watermark: i64,
    },
    #[error("metadata store: {0}")]
    Metadata(String),
    #[error("object store: {0}")]
    Storage(String),
    /// This reader's view of a partition is older than the store's: an index entry's segment
    /// object is gone (garbage collection deleted it after retention dropped the entry), or no
    /// entry holds an offset the reader thought was above the log start.
    #[error("the partition's index moved on: {0}")]
    IndexMoved(String),
    #[error("index and segment disagree: {0}")]
    Corrupt(String),
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("group {0} not found")]
    GroupNotFound(String),
    #[error("group {group} has members (state {state}); stop its consumers first")]
    GroupNotEmpty { group: String, state: String },
    #[error("this process does not coordinate the group (coordinator: {})", coordinator.as_deref().unwrap_or("none live"))]
    NotCoordinator { coordinator: Option<String> },
}

impl From<CatalogError> for FetchError {
    fn from(e: CatalogError) -> Self {
        FetchError::Metadata(e.to_string())
    }
}

impl From<ObjectStoreError> for FetchError {
    fn from(e: ObjectStoreError) -> Self {
        match e {
            ObjectStoreError::NotFound { key } => {
                FetchError::IndexMoved(format!("segment {key} no longer exists"))
            }
            other => FetchError::Storage(other.to_string()),
        }
    }
}

impl FetchError {
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            FetchError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            FetchError::UnknownTopicId => ResponseError::UnknownTopicId,
            FetchError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            // Retriable: the client backs off and fetches again.
            FetchError::Metadata(_) | FetchError::Storage(_) | FetchError::IndexMoved(_) => {
                ResponseError::KafkaStorageError
            }
            FetchError::Corrupt(_) => ResponseError::CorruptMessage,
            FetchError::InvalidGroupId => ResponseError::InvalidGroupId,
            FetchError::GroupNotFound(_) => ResponseError::GroupIdNotFound,
            FetchError::GroupNotEmpty { .. } => ResponseError::NonEmptyGroup,
            FetchError::NotCoordinator { .. } => ResponseError::NotCoordinator,
        }
    }
}

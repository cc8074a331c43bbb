//! Errors of the load generator.

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadtestError {
    #[error("{0}: {1}")]
    Io(String, String),
    #[error("encoding a request: {0}")]
    Encode(String),
    #[error("unexpected answer: {0}")]
    Protocol(String),
    #[error("broker refused: {0}")]
    Kafka(String),
}

//! Errors of the load generator.

/// Why a run (or its --plot picture) could not go on.
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
    /// A refusal the broker says may pass (a store outage, a coordinator moving).
    #[error("broker refused for now: {0}")]
    KafkaRetriable(String),
    /// No usable font for the --plot picture's text.
    #[error(
        "no font for the plot's text: {0}; give a TrueType font with --plot-font FILE.ttf, or install one (Debian: apt-get install fonts-dejavu-core)"
    )]
    PlotFont(String),
    #[error("drawing the plot {0}")]
    Plot(String),
}

impl LoadtestError {
    /// A failure the next attempt may not meet: a lost connection (a gateway restarting) or
    /// a refusal the broker marks retriable.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            LoadtestError::Io(..) | LoadtestError::KafkaRetriable(_)
        )
    }

    /// A Kafka error code's refusal, retriable or not as the protocol says.
    pub(crate) fn refused(e: kafka_protocol::error::ResponseError, what: String) -> Self {
        if e.is_retriable() {
            LoadtestError::KafkaRetriable(format!("{what}: {e:?}"))
        } else {
            LoadtestError::Kafka(format!("{what}: {e:?}"))
        }
    }
}

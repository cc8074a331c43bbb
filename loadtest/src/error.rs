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
    /// No usable font for the --plot picture's text.
    #[error(
        "no font for the plot's text: {0}; give a TrueType font with --plot-font FILE.ttf, or install one (Debian: apt-get install fonts-dejavu-core)"
    )]
    PlotFont(String),
    #[error("drawing the plot {0}")]
    Plot(String),
}

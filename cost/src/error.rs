//! Errors of reading counters and pricing them.

/// What can go wrong between a `/metrics` page and a cost per GiB.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    /// A line of the Prometheus text format could not be read.
    #[error("line {line} of the metrics text: {reason}")]
    Exposition { line: usize, reason: String },
    /// A counter went down between the baseline and now: a process restarted in between, so
    /// its requests before the restart are lost and the difference means nothing.
    #[error(
        "counter {name} went down ({earlier} → {later}): a process restarted since the baseline; take a new one"
    )]
    CounterReset {
        name: &'static str,
        earlier: f64,
        later: f64,
    },
    /// Nothing was produced in the window, so there is no "per GiB".
    #[error("no bytes were produced in this window (kafscale_produce_bytes_total did not grow)")]
    NothingProduced,
}

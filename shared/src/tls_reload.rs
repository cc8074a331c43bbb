//! The periodic check that picks up rotated TLS certificates and client CA bundles (see
//! `kafscale_tls::ServerTls::reload_if_changed`): every `interval` the files are re-read,
//! changed ones are swapped in for new handshakes, and files that cannot be loaded are
//! reported (a warning and `kafscale_tls_certificate_reload_failures_total`) while the previous
//! ones stay in use. Stops at the next round once `shutdown` fires.

use std::time::Duration;

use kafscale_tls::{ReloadOutcome, ServerTls};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics as names;

/// Checks the certificate files of `tls` every `interval` until `shutdown`; `protocol` names
/// the listener in logs and metrics (`kafka`, `http`).
pub async fn reload_certificates(
    tls: ServerTls,
    protocol: &'static str,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let reloads = metrics::counter!(names::TLS_CERTIFICATE_RELOADS, "listener" => names::role(), "protocol" => protocol);
    let failures = metrics::counter!(names::TLS_CERTIFICATE_RELOAD_FAILURES, "listener" => names::role(), "protocol" => protocol);
    crate::periodic::run_every(interval, &shutdown, || {
        let outcome = tls.reload_if_changed();
        async {
            match outcome {
                Ok(ReloadOutcome::Unchanged) => {}
                Ok(ReloadOutcome::Reloaded) => {
                    reloads.increment(1);
                    info!(protocol, "tls certificate reloaded");
                }
                Err(e) => {
                    failures.increment(1);
                    warn!(protocol, error = %e, "tls certificate or client CA files changed but cannot be loaded; keeping the previous ones");
                }
            }
        }
    })
    .await;
}

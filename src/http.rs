//! The HTTP endpoint of every process: `/healthz` (the process is alive), `/readyz` (it
//! serves its role's traffic) and `/metrics` (Prometheus text format, see
//! `kafscale_shared::metrics`), plus the routes of the role (the indexer's commit API and
//! watermark feed, the gateways' admin API).
//!
//! Every route passes the same tower stack ([`common_layers`]): a span per request that
//! continues the caller's trace (`traceparent`), a panic turned into a 500, a concurrency
//! limit, a deadline and a default body limit. Routes narrow what they need on top (the
//! commit API allows bigger bodies, the admin API adds authentication and its own limits).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// HTTP requests served at once by one process; more wait for a slot.
const MAX_CONCURRENT_REQUESTS: usize = 1024;
/// The longest any HTTP request may take: above the indexer feed's longest long poll (30 s).
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
/// The body limit of routes that set none of their own.
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Whether the process is ready to serve.
#[derive(Debug, Default)]
pub(crate) struct Readiness(AtomicBool);

impl Readiness {
    pub(crate) fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The Prometheus page (empty when no recorder is installed, as in tests).
async fn metrics() -> impl axum::response::IntoResponse {
    let page = match kafscale_shared::metrics::exporter() {
        Some(e) => e.render().await,
        None => String::new(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
}

async fn readyz(State(ready): State<Arc<Readiness>>) -> (StatusCode, &'static str) {
    if ready.0.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds the HTTP listener and returns its address and the serving future. `extra` carries
/// the routes of the process's role (the indexer's commit API).
pub(crate) async fn serve(
    addr: SocketAddr,
    ready: Arc<Readiness>,
    extra: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding http listener {addr}"))?;
    serve_on(listener, ready, extra, shutdown)
}

/// [`serve`] on a listener that is already bound.
pub(crate) fn serve_on(
    listener: tokio::net::TcpListener,
    ready: Arc<Readiness>,
    extra: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ready)
        .merge(extra);
    let app = common_layers(app);
    let local = listener.local_addr()?;
    let fut = async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "http server failed");
        }
    };
    Ok((local, fut))
}

/// The layers every HTTP route of the process passes (outermost first: trace, panic,
/// concurrency, deadline, body limit).
fn common_layers(app: Router) -> Router {
    app.layer(DefaultBodyLimit::max(DEFAULT_MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_DEADLINE,
        ))
        .layer(ConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        .layer(CatchPanicLayer::new())
        .layer(
            TraceLayer::new_for_http().make_span_with(|r: &axum::http::Request<_>| {
                kafscale_shared::trace_context::request_span(r)
            }),
        )
}

//! The HTTP endpoint of every process: `/healthz` (the process is alive), `/readyz` (it
//! serves its role's traffic) and `/metrics` (Prometheus text format, see
//! `kafscale_shared::metrics`), plus the routes of the role (the indexer's commit API and
//! watermark feed, the gateways' admin API).
//!
//! With `--http-tls-cert`/`--http-tls-key` the listener serves HTTPS only (see
//! [`crate::tls::HttpsListener`]); the routes are the same.
//!
//! Every route passes the same tower stack ([`common_layers`]): a span per request that
//! continues the caller's trace (`traceparent`), a panic turned into a 500, a concurrency
//! limit, a deadline and a default body limit. Routes narrow what they need on top (the
//! commit API allows bigger bodies, the admin API adds authentication and its own limits).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kafscale_shared::meta_store::{ItemKey, MetaStore};
use tokio::time::Instant;

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

use crate::tls::{HttpTlsArgs, HttpsListener};

/// The serving future of the HTTP listener (plain or TLS).
pub(crate) type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// HTTP requests served at once by one process; more wait for a slot.
const MAX_CONCURRENT_REQUESTS: usize = 1024;
/// The longest any HTTP request may take: above the indexer feed's longest long poll (30 s).
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
/// The body limit of routes that set none of their own.
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long one answer of the metadata-store probe stands (kubelet probes every few seconds;
/// concurrent probes share one read).
const STORE_PROBE_CACHE: Duration = Duration::from_secs(1);
/// A probe read slower than this counts as the store unreachable.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the process is ready to serve: started (and not stopping), and its metadata store
/// answering. Every tier needs the metadata store for every request it serves, so a pod that
/// cannot reach it leaves the Service until it can, and comes back by itself. (The object store
/// is not probed: a HEAD needs read access that not every tier's IAM role has; its failures show
/// as retriable produce and fetch errors and in the store metrics.)
#[derive(Default)]
pub(crate) struct Readiness {
    started: AtomicBool,
    store: Option<StoreProbe>,
}

struct StoreProbe {
    meta: Arc<dyn MetaStore>,
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    /// Readiness that also needs `meta` to answer.
    pub(crate) fn probing(meta: Arc<dyn MetaStore>) -> Self {
        Readiness {
            started: AtomicBool::new(false),
            store: Some(StoreProbe {
                meta,
                last: tokio::sync::Mutex::new(None),
            }),
        }
    }

    pub(crate) fn set(&self, ready: bool) {
        self.started.store(ready, Ordering::SeqCst);
    }

    /// `Ok` when ready, else why not.
    async fn check(&self) -> Result<(), String> {
        if !self.started.load(Ordering::SeqCst) {
            return Err("not ready".into());
        }
        match &self.store {
            Some(probe) => probe.check().await,
            None => Ok(()),
        }
    }
}

impl StoreProbe {
    async fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = &*last
            && at.elapsed() < STORE_PROBE_CACHE
        {
            return result.clone();
        }
        // A point read of an item that need not exist: any answer proves the store reachable.
        let key = ItemKey::new("readyz", "probe");
        let result = match tokio::time::timeout(STORE_PROBE_TIMEOUT, self.meta.get(&key)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("metadata store unreachable: {e}")),
            Err(_) => Err(format!(
                "metadata store unreachable: no answer within {STORE_PROBE_TIMEOUT:?}"
            )),
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, "not ready");
        }
        *last = Some((Instant::now(), result.clone()));
        result
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

async fn readyz(State(ready): State<Arc<Readiness>>) -> (StatusCode, String) {
    match ready.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Binds the HTTP listener and returns its address and the serving future. `extra` carries
/// the routes of the process's role (the indexer's commit API).
pub(crate) async fn serve(
    addr: SocketAddr,
    ready: Arc<Readiness>,
    extra: Router,
    tls: &HttpTlsArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, Serving)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding http listener {addr}"))?;
    serve_on(listener, ready, extra, tls, shutdown)
}

/// [`serve`] on a listener that is already bound.
pub(crate) fn serve_on(
    listener: tokio::net::TcpListener,
    ready: Arc<Readiness>,
    extra: Router,
    tls_args: &HttpTlsArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, Serving)> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ready)
        .merge(extra);
    let app = common_layers(app);
    let local = listener.local_addr()?;
    let Some(tls) = tls_args.load()? else {
        let fut = async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "http server failed");
            }
        };
        return Ok((local, Box::pin(fut)));
    };
    crate::tls::spawn_reload(&tls, "http", tls_args.reload_interval()?, &shutdown);
    tracing::info!(mutual = tls.is_mutual(), "http listener speaks tls");
    let listener = HttpsListener::start(listener, tls, shutdown.clone())?;
    let fut = async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "https server failed");
        }
    };
    Ok((local, Box::pin(fut)))
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

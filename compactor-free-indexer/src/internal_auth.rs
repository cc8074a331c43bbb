//! The indexer's guard of its cluster-internal routes: commits, DeleteRecords and the
//! watermark feed answer only callers that present the cluster's internal token.
//!
//! Why: a commit writes offsets into the index and DeleteRecords moves log starts, so whoever
//! can reach the indexer's HTTP port could otherwise rewrite any partition; the feed leaks
//! which partitions move. The token is a shared secret of the indexers and gateways
//! (`--internal-token-file`); it is compared in constant time. The guard is a layer on those
//! routes only — health, readiness, metrics and shard status stay open for probes and
//! scrapers. A refusal is 401 with a JSON body, `WWW-Authenticate: Bearer`, a counter, and —
//! at most every [`REFUSAL_LOG_INTERVAL`], so a misconfigured gateway or a prober cannot
//! flood the log — a warning naming the path and whether a token was presented, never the
//! token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use kafscale_shared::bearer::InternalToken;
use kafscale_shared::metrics as names;

/// Shortest time between two warnings about refused calls (the counter counts every one).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the guard needs: the token, and when it last warned.
struct Guard {
    token: InternalToken,
    started: Instant,
    /// Milliseconds after `started` of the last warning plus one (0: never warned).
    last_warning_ms: AtomicU64,
}

impl Guard {
    /// Whether a refusal now should be logged (at most one per [`REFUSAL_LOG_INTERVAL`]).
    fn should_warn(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= REFUSAL_LOG_INTERVAL.as_millis() as u64;
        due && self
            .last_warning_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// The body of a refusal.
const REFUSAL: &str = r#"{"error":"unauthorized","message":"missing or wrong internal token (--internal-token-file)"}"#;

/// `routes`, answering 401 to requests without `token` when one is configured; unchanged
/// (and open) without one.
pub fn require_internal_token(routes: Router, token: Option<InternalToken>) -> Router {
    match token {
        Some(token) => {
            // Registered at zero, so the series exists before the first refusal.
            metrics::counter!(names::INDEXER_INTERNAL_REFUSED).increment(0);
            let state = Arc::new(Guard {
                token,
                started: Instant::now(),
                last_warning_ms: AtomicU64::new(0),
            });
            routes.route_layer(middleware::from_fn_with_state(state, guard))
        }
        None => routes,
    }
}

async fn guard(State(state): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if state.token.admits(request.headers()) {
        return next.run(request).await;
    }
    metrics::counter!(names::INDEXER_INTERNAL_REFUSED).increment(1);
    if state.should_warn() {
        let presented = request.headers().contains_key(header::AUTHORIZATION);
        tracing::warn!(
            path = request.uri().path(),
            token_presented = presented,
            "internal request refused: missing or wrong internal token (further refusals \
             within 10 s are only counted in kafscale_indexer_internal_requests_refused_total)"
        );
    }
    refusal()
}

fn refusal() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer"),
            (header::CONTENT_TYPE, "application/json"),
        ],
        REFUSAL,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    fn app(token: Option<&str>) -> Router {
        let token = token.map(|t| InternalToken::new(t).expect("valid"));
        let internal = Router::new()
            .route("/v1/commit", post(|| async { "committed" }))
            .route("/v1/watermarks", get(|| async { "feed" }));
        require_internal_token(internal, token)
            .merge(Router::new().route("/healthz", get(|| async { "ok" })))
    }

    async fn status(app: Router, method: &str, path: &str, auth: Option<&str>) -> StatusCode {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let request = request.body(Body::empty()).expect("request");
        app.oneshot(request).await.expect("infallible").status()
    }

    #[tokio::test]
    async fn without_a_header_the_call_is_refused() {
        let app = app(Some("s3cret"));
        assert_eq!(
            status(app.clone(), "POST", "/v1/commit", None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(app, "GET", "/v1/watermarks", None).await,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn a_wrong_token_is_refused() {
        for auth in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "Bearer "] {
            assert_eq!(
                status(app(Some("s3cret")), "POST", "/v1/commit", Some(auth)).await,
                StatusCode::UNAUTHORIZED,
                "{auth}"
            );
        }
    }

    #[tokio::test]
    async fn the_right_token_passes() {
        let app = app(Some("s3cret"));
        let auth = Some("Bearer s3cret");
        assert_eq!(
            status(app.clone(), "POST", "/v1/commit", auth).await,
            StatusCode::OK
        );
        assert_eq!(
            status(app, "GET", "/v1/watermarks", auth).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn unprotected_routes_stay_open() {
        let app = app(Some("s3cret"));
        assert_eq!(
            status(app.clone(), "GET", "/healthz", None).await,
            StatusCode::OK
        );
        // An unknown path is still 404, not 401: the guard sits on the routes only.
        assert_eq!(
            status(app, "GET", "/nowhere", None).await,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn without_a_configured_token_everything_is_open() {
        assert_eq!(
            status(app(None), "POST", "/v1/commit", None).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn a_refusal_is_json_and_carries_no_token() {
        let request = Request::builder()
            .method("POST")
            .uri("/v1/commit")
            .header(header::AUTHORIZATION, "Bearer guess")
            .body(Body::empty())
            .expect("request");
        let response = app(Some("s3cret")).oneshot(request).await.expect("ok");
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE),
            Some(&header::HeaderValue::from_static("Bearer"))
        );
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"], "unauthorized");
        assert!(!body.to_string().contains("s3cret"));
    }
}

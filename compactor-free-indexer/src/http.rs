//! The indexer's HTTP API: `POST /v1/commit` carries a [`CommitRequest`] as JSON and answers
//! a [`CommitResponse`] (200) or a [`SequencerError`] (409 when this replica does not own the
//! shard or was fenced, so the gateway re-resolves the owner; 503 when the store is down; 400
//! for an invalid request; 410 for a segment too old to commit, see
//! `IndexerConfig::segment_commit_max_age`). Commits are idempotent per segment and shard, so the gateway may
//! retry any failure, including a timeout whose outcome it does not know.
//!
//! `POST /v1/delete-records` moves one partition's log start offset (Kafka's DeleteRecords),
//! with the same statuses.
//!
//! `GET /v1/watermarks?after=N&wait_ms=M` is the high-watermark change feed of this replica
//! (a long poll: it answers as soon as there is a change after number `N`, or after `M` ms,
//! with a [`WatermarkFeed`]); fetch gateways follow it so their long polls wake the moment a
//! commit lands instead of at their next store poll. Without `after` it answers the current
//! position at once.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kafscale_shared::sequencer::{CommitRequest, DeleteRecordsRequest, Sequencer, SequencerError};
use kafscale_shared::watermarks::{WatermarkFeed, Watermarks};
use serde::Deserialize;
use tracing::Instrument;

use crate::Indexer;

/// Path of the commit endpoint.
pub const COMMIT_PATH: &str = "/v1/commit";

/// Path of the DeleteRecords endpoint (a [`DeleteRecordsRequest`]; answers a
/// `DeleteRecordsResponse`, or a [`SequencerError`]: 404 unknown partition, 416 offset past
/// the high watermark, and the commit endpoint's statuses otherwise).
pub const DELETE_RECORDS_PATH: &str = "/v1/delete-records";

/// Path of the high-watermark change feed.
pub const WATERMARKS_PATH: &str = "/v1/watermarks";

/// Longest wait of one feed request, whatever is asked.
const MAX_FEED_WAIT_MS: u64 = 30_000;
/// Most changes in one feed answer.
const MAX_FEED_CHANGES: usize = 10_000;

/// Largest commit body accepted (a segment's batch list).
const MAX_COMMIT_BODY: usize = 64 * 1024 * 1024;

fn status_of(e: &SequencerError) -> StatusCode {
    match e {
        SequencerError::NotOwner { .. } | SequencerError::Fenced(_) => StatusCode::CONFLICT,
        SequencerError::StoreUnavailable(_)
        | SequencerError::ShuttingDown
        | SequencerError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
        SequencerError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        SequencerError::UnknownPartition => StatusCode::NOT_FOUND,
        SequencerError::OffsetOutOfRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        SequencerError::SegmentExpired(_) => StatusCode::GONE,
        SequencerError::Unauthorized => StatusCode::UNAUTHORIZED,
    }
}

/// Runs `work` on its own task and answers its outcome: a caller that goes away (a gateway
/// killed mid-commit closes the connection, and the server drops this handler) must not cut
/// a store write short once it may be on the way; the outcome still lands in the cache and
/// the store.
async fn detached<T: serde::Serialize + Send + 'static>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, SequencerError>> + Send + 'static,
) -> Response {
    match tokio::spawn(work.instrument(tracing::Span::current())).await {
        Ok(Ok(r)) => (StatusCode::OK, Json(r)).into_response(),
        Ok(Err(e)) => (status_of(&e), Json(e)).into_response(),
        Err(e) => {
            let e = SequencerError::Unreachable(format!("{what} task failed: {e}"));
            (status_of(&e), Json(e)).into_response()
        }
    }
}

async fn commit(
    State(indexer): State<Arc<Indexer>>,
    Json(request): Json<CommitRequest>,
) -> Response {
    detached("commit", async move { indexer.commit(request).await }).await
}

async fn delete_records(
    State(indexer): State<Arc<Indexer>>,
    Json(request): Json<DeleteRecordsRequest>,
) -> Response {
    detached("delete-records", async move {
        indexer.delete_records(request).await
    })
    .await
}

/// The routes of the commit API, to be merged into the indexer's HTTP server.
pub fn commit_routes(indexer: Arc<Indexer>) -> Router {
    Router::new()
        .route(COMMIT_PATH, post(commit))
        .route(DELETE_RECORDS_PATH, post(delete_records))
        .layer(DefaultBodyLimit::max(MAX_COMMIT_BODY))
        .with_state(indexer)
}

#[derive(Debug, Deserialize)]
struct FeedParams {
    after: Option<u64>,
    #[serde(default)]
    wait_ms: u64,
}

async fn watermark_feed(
    State(watermarks): State<Arc<Watermarks>>,
    Query(params): Query<FeedParams>,
) -> Response {
    let wait = std::time::Duration::from_millis(params.wait_ms.min(MAX_FEED_WAIT_MS));
    let wait = if params.after.is_none() {
        std::time::Duration::ZERO
    } else {
        wait
    };
    match watermarks
        .changes_after(params.after, MAX_FEED_CHANGES, wait)
        .await
    {
        Some(feed) => (StatusCode::OK, Json::<WatermarkFeed>(feed)).into_response(),
        None => (StatusCode::NOT_FOUND, "no watermark journal\n").into_response(),
    }
}

/// The route of the watermark change feed (`watermarks` must keep a journal).
pub fn watermark_routes(watermarks: Arc<Watermarks>) -> Router {
    Router::new()
        .route(WATERMARKS_PATH, get(watermark_feed))
        .with_state(watermarks)
}

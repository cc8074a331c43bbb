//! The indexer's HTTP API: `POST /v1/commit` carries a [`CommitRequest`] as JSON and answers
//! a [`CommitResponse`] (200) or a [`SequencerError`] (409 when this replica does not own the
//! shard or was fenced, so the gateway re-resolves the owner; 503 when the store is down; 400
//! for an invalid request). Commits are idempotent per segment and shard, so the gateway may
//! retry any failure, including a timeout whose outcome it does not know.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kafscale_shared::sequencer::{CommitRequest, Sequencer, SequencerError};

use crate::Indexer;

/// Path of the commit endpoint.
pub const COMMIT_PATH: &str = "/v1/commit";

/// Largest commit body accepted (a segment's batch list).
const MAX_COMMIT_BODY: usize = 64 * 1024 * 1024;

fn status_of(e: &SequencerError) -> StatusCode {
    match e {
        SequencerError::NotOwner { .. } | SequencerError::Fenced(_) => StatusCode::CONFLICT,
        SequencerError::StoreUnavailable(_)
        | SequencerError::ShuttingDown
        | SequencerError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
        SequencerError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
    }
}

async fn commit(
    State(indexer): State<Arc<Indexer>>,
    Json(request): Json<CommitRequest>,
) -> Response {
    match indexer.commit(request).await {
        Ok(r) => (StatusCode::OK, Json(r)).into_response(),
        Err(e) => (status_of(&e), Json(e)).into_response(),
    }
}

/// The routes of the commit API, to be merged into the indexer's HTTP server.
pub fn commit_routes(indexer: Arc<Indexer>) -> Router {
    Router::new()
        .route(COMMIT_PATH, post(commit))
        .layer(DefaultBodyLimit::max(MAX_COMMIT_BODY))
        .with_state(indexer)
}

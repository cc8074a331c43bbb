//! The indexer's HTTP API as an ingest gateway (or anything else that reaches its port) calls
//! it: `POST /v1/commit` and `POST /v1/delete-records` with JSON bodies, and the watermark
//! feed `GET /v1/watermarks?…`, through the same axum routes the indexer serves, on an indexer
//! that owns the one shard of a filled cluster's items (`fuzz/src/snapshot.rs`, whose topic ids
//! are fixed: `7fff0000-0000-4000-8000-00000000000N`). A new indexer per input.
//!
//! Must never panic or hang; every answer has one of the documented statuses (or axum's for
//! a body that is not the JSON asked for); a 200 commit answers one outcome per batch; and
//! after a restart, every commit that was answered 200 gets the same answer again (commits
//! are idempotent per segment and shard: a gateway retries any it did not hear back from).
//!
//! Input: a sequence of ops `route: u8, advance: u8, len: u16 BE, body: len bytes`: `route`
//! modulo 3 is a commit, a DeleteRecords or a feed request (the body is its query string);
//! `advance` moves the clock as in the other stateful targets.

#![no_main]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kafscale_fuzz::snapshot::{indexer_config, snapshot};
use kafscale_fuzz::{COMPLETION_BOUND, runtime};
use kafscale_indexer::Indexer;
use kafscale_indexer::http::{
    COMMIT_PATH, DELETE_RECORDS_PATH, WATERMARKS_PATH, commit_routes, watermark_routes,
};
use kafscale_shared::catalog::Catalog;
use kafscale_shared::meta_store::MemoryMetaStore;
use kafscale_shared::sequencer::{CommitRequest, CommitResponse, Sequencer};
use kafscale_shared::watermarks::Watermarks;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// Ops read from one input at most.
const MAX_OPS: usize = 16;
/// Largest answer body read back.
const MAX_ANSWER: usize = 16 << 20;

/// The statuses the API documents (compactor-free-indexer/src/http.rs), and axum's for a body
/// that is not JSON of the asked type (400, 415, 422) or too large (413).
const STATUSES: [u16; 11] = [200, 400, 404, 409, 410, 413, 415, 416, 422, 503, 204];

struct Op {
    route: u8,
    advance: Duration,
    body: Vec<u8>,
}

fn parse(data: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut rest = data;
    while ops.len() < MAX_OPS && rest.len() >= 4 {
        let len = (u16::from_be_bytes([rest[2], rest[3]]) as usize).min(rest.len() - 4);
        ops.push(Op {
            route: rest[0] % 3,
            advance: match rest[1] {
                0 => Duration::ZERO,
                a => Duration::from_millis(1 << (a % 19)),
            },
            body: rest[4..4 + len].to_vec(),
        });
        rest = &rest[4 + len..];
    }
    ops
}

fn http_request(op: &Op) -> Option<Request<Body>> {
    let post = |path: &str| {
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(op.body.clone()))
            .ok()
    };
    match op.route {
        0 => post(COMMIT_PATH),
        1 => post(DELETE_RECORDS_PATH),
        _ => {
            let query = String::from_utf8_lossy(&op.body);
            Request::get(format!("{WATERMARKS_PATH}?{query}"))
                .body(Body::empty())
                .ok()
        }
    }
}

/// Sends `request`; fails the run on a hang or an undocumented status.
async fn send(router: &Router, request: Request<Body>) -> (StatusCode, bytes::Bytes) {
    let answer = tokio::time::timeout(COMPLETION_BOUND, router.clone().oneshot(request))
        .await
        .expect("the indexer API never answered")
        .expect("axum routers are infallible");
    let status = answer.status();
    assert!(
        STATUSES.contains(&status.as_u16()),
        "undocumented status {status}"
    );
    let body = axum::body::to_bytes(answer.into_body(), MAX_ANSWER)
        .await
        .expect("answer body");
    (status, body)
}

async fn start(meta: &Arc<MemoryMetaStore>) -> Arc<Indexer> {
    let catalog = Arc::new(Catalog::new(meta.clone()));
    Indexer::start(catalog, Arc::new(Watermarks::new()), indexer_config())
        .await
        .expect("an indexer starts on the snapshot's items")
}

fuzz_target!(|data: &[u8]| {
    let ops = parse(data);
    if ops.is_empty() {
        return;
    }
    let snapshot = snapshot();
    runtime().block_on(async {
        let meta = Arc::new(MemoryMetaStore::with_items(snapshot.items.clone()));
        let indexer = start(&meta).await;
        let router = commit_routes(indexer.clone())
            .merge(watermark_routes(Arc::new(Watermarks::with_journal(1024))));
        let mut answered: Vec<(CommitRequest, CommitResponse)> = Vec::new();
        for op in &ops {
            let Some(request) = http_request(op) else {
                continue;
            };
            let (status, body) = send(&router, request).await;
            if op.route == 0 && status == StatusCode::OK {
                let request: CommitRequest =
                    serde_json::from_slice(&op.body).expect("a 200 commit's body is a commit");
                let response: CommitResponse =
                    serde_json::from_slice(&body).expect("a 200 commit answers a CommitResponse");
                assert_eq!(
                    response.outcomes.len(),
                    request.batches.len(),
                    "one outcome per batch"
                );
                answered.push((request, response));
            }
            if !op.advance.is_zero() {
                tokio::time::sleep(op.advance).await;
            }
        }
        drop(router);
        drop(indexer);
        let restarted = start(&meta).await;
        for (request, first) in answered {
            let segment = request.segment_key.clone();
            let again = restarted
                .commit(request)
                .await
                .unwrap_or_else(|e| panic!("retrying the commit of {segment} failed: {e}"));
            assert_eq!(
                first, again,
                "the commit of {segment} got another answer after a restart"
            );
        }
    });
});

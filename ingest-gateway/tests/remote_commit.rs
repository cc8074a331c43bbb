//! The network commit path: shard commits routed over HTTP to the indexer holding each shard's
//! lease, and re-routed when that indexer dies and another takes the shard over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafscale_indexer::http::commit_routes;
use kafscale_indexer::internal_auth::require_internal_token;
use kafscale_indexer::{Indexer, IndexerConfig};
use kafscale_ingest::{RemoteSequencer, RemoteSequencerConfig};
use kafscale_shared::bearer::InternalToken;
use kafscale_shared::catalog::Catalog;
use kafscale_shared::http_client::InternalCalls;
use kafscale_shared::meta_store::MemoryMetaStore;
use kafscale_shared::sequencer::{
    BatchOutcome, CommitBatch, CommitRequest, Sequencer, SequencerError,
};
use kafscale_shared::shards::shard_of;
use kafscale_shared::watermarks::Watermarks;
use tokio::task::JoinHandle;
use uuid::Uuid;

const SHARDS: u32 = 4;

/// An indexer replica serving the commit API on its own port.
async fn replica(
    catalog: &Arc<Catalog>,
    name: &str,
    ttl: Duration,
) -> (Arc<Indexer>, JoinHandle<()>) {
    guarded_replica(catalog, name, ttl, None).await
}

/// A replica whose commit API needs `token` (if any).
async fn guarded_replica(
    catalog: &Arc<Catalog>,
    name: &str,
    ttl: Duration,
    token: Option<InternalToken>,
) -> (Arc<Indexer>, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let indexer = Indexer::new(
        catalog.clone(),
        Arc::new(Watermarks::new()),
        IndexerConfig {
            owner_id: name.into(),
            owner_addr: addr.to_string(),
            lease_ttl: ttl,
            shard_count: SHARDS,
            ..IndexerConfig::default()
        },
    );
    let app = require_internal_token(commit_routes(indexer.clone()), token);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (indexer, server)
}

fn request(topic_id: Uuid, partition: i32, key: &str) -> CommitRequest {
    CommitRequest {
        segment_key: key.into(),
        shard: shard_of(topic_id, partition, SHARDS),
        segment_size: 1000,
        batches: vec![CommitBatch {
            topic_id,
            partition,
            byte_start: 16,
            byte_len: 100,
            offset_count: 2,
            record_count: 2,
            first_timestamp: 1,
            max_timestamp: 2,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }],
    }
}

fn base_offset(o: &BatchOutcome) -> i64 {
    match o {
        BatchOutcome::Appended { base_offset, .. } => *base_offset,
        other => panic!("not appended: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_follow_the_shard_owner_across_a_failover() {
    let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
    let topic = catalog
        .create_topic("t", 8, BTreeMap::new())
        .await
        .expect("create")
        .topic_id;
    let ttl = Duration::from_millis(400);
    let (a, a_server) = replica(&catalog, "a", ttl).await;
    let (b, _b_server) = replica(&catalog, "b", ttl).await;
    assert_eq!(a.maintain_leases(2).await.expect("a").owned, vec![0, 1]);
    assert_eq!(b.maintain_leases(2).await.expect("b").owned, vec![2, 3]);

    let remote = RemoteSequencer::new(
        catalog.clone(),
        RemoteSequencerConfig {
            request_timeout: Duration::from_secs(2),
            failover_timeout: Duration::from_secs(10),
            internal: InternalCalls::default(),
        },
    );
    for p in 0..8 {
        let r = remote
            .commit(request(topic, p, &format!("s1-{p}")))
            .await
            .expect("commit");
        assert_eq!(base_offset(&r.outcomes[0]), 0, "partition {p}");
        // A retry of the same segment is answered with the same offsets, wherever it lands.
        let again = remote
            .commit(request(topic, p, &format!("s1-{p}")))
            .await
            .expect("retry");
        assert_eq!(again, r);
    }

    // Replica a dies (its server stops answering; its leases are left to expire). b takes its
    // shards over once they expire, and the gateway's commits find b by themselves.
    a_server.abort();
    drop(a);
    let b2 = b.clone();
    let takeover = tokio::spawn(async move {
        for _ in 0..100 {
            if b2.maintain_leases(4).await.expect("b").owned.len() == 4 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let started = Instant::now();
    for p in 0..8 {
        let r = remote
            .commit(request(topic, p, &format!("s2-{p}")))
            .await
            .expect("commit after failover");
        assert_eq!(
            base_offset(&r.outcomes[0]),
            2,
            "partition {p} continues after the failover"
        );
    }
    takeover.await.expect("takeover");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(b.owned_shards().await, vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn a_shard_nobody_owns_fails_after_the_failover_timeout() {
    let (catalog, topic) = catalog_with_topic().await;
    let remote = RemoteSequencer::new(
        catalog,
        RemoteSequencerConfig {
            request_timeout: Duration::from_secs(1),
            failover_timeout: Duration::from_millis(300),
            internal: InternalCalls::default(),
        },
    );
    let err = remote
        .commit(request(topic, 0, "s"))
        .await
        .expect_err("no owner");
    assert!(matches!(err, SequencerError::NotOwner { .. }), "{err:?}");
    assert!(err.is_retryable());
}

/// An in-memory catalog holding one topic "t" of one partition.
async fn catalog_with_topic() -> (Arc<Catalog>, Uuid) {
    let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
    let topic = catalog
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create")
        .topic_id;
    (catalog, topic)
}

fn token(t: &str) -> InternalToken {
    InternalToken::new(t).expect("valid token")
}

/// A gateway whose token the indexer refuses fails at once (no failover retries: a wrong token
/// is not mended by waiting), with an error that names the problem and not the token; the
/// right token commits.
#[tokio::test]
async fn a_refused_token_fails_at_once_and_the_right_one_commits() {
    let (catalog, topic) = catalog_with_topic().await;
    let ttl = Duration::from_secs(30);
    let (indexer, _server) = guarded_replica(&catalog, "a", ttl, Some(token("right"))).await;
    assert_eq!(
        indexer
            .maintain_leases(4)
            .await
            .expect("leases")
            .owned
            .len(),
        4
    );
    for presented in [None, Some(token("wrong-secret"))] {
        let remote = RemoteSequencer::new(
            catalog.clone(),
            RemoteSequencerConfig {
                request_timeout: Duration::from_secs(2),
                failover_timeout: Duration::from_secs(20),
                internal: InternalCalls {
                    token: presented,
                    tls: None,
                },
            },
        );
        let started = Instant::now();
        let err = remote
            .commit(request(topic, 0, "s"))
            .await
            .expect_err("refused");
        assert_eq!(err, SequencerError::Unauthorized);
        assert!(started.elapsed() < Duration::from_secs(5), "retried a 401");
        assert!(err.to_string().contains("refused the internal token"));
        assert!(!err.to_string().contains("wrong-secret"));
        assert!(!format!("{remote:?}").contains("wrong-secret"));
    }
    let remote = RemoteSequencer::new(
        catalog.clone(),
        RemoteSequencerConfig {
            internal: InternalCalls {
                token: Some(token("right")),
                tls: None,
            },
            ..RemoteSequencerConfig::default()
        },
    );
    let r = remote.commit(request(topic, 0, "s")).await.expect("commit");
    assert_eq!(
        base_offset(&r.outcomes[0]),
        0,
        "nothing was committed before"
    );
}

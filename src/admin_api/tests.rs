//! The admin API on in-memory stores: authentication, error shapes, topics, groups and
//! offset resets, through the same router (and layers) the processes serve.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kafscale_fetch::{
    FetchConfig, FetchService, GroupLeaseConfig, GroupService, GroupServiceConfig,
};
use kafscale_indexer::status::status_routes;
use kafscale_indexer::{Indexer, IndexerConfig};
use kafscale_shared::catalog::{
    Catalog, CommittedOffset, ITEM_FORMAT, PartitionRecord, encode, partition_key,
};
use kafscale_shared::meta_store::{Condition, MemoryMetaStore, WriteOp};
use kafscale_shared::object_store::MemoryObjectStore;
use kafscale_shared::shards::shard_lease_name;
use kafscale_shared::topic_api::{TopicApi, TopicSettings};
use kafscale_shared::watermarks::Watermarks;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use uuid::Uuid;

use super::{AdminAuth, AdminState, router};

const TOKEN: &str = "t0ken";

struct Fixture {
    catalog: Arc<Catalog>,
    state: AdminState,
    _shutdown: tokio_util::sync::DropGuard,
}

impl Fixture {
    async fn new() -> Self {
        let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
        let fetch = FetchService::new(
            catalog.clone(),
            Arc::new(MemoryObjectStore::new()),
            Arc::new(Watermarks::new()),
            FetchConfig::default(),
        );
        let topics = TopicApi::new(
            catalog.clone(),
            TopicSettings {
                advertised_host: "127.0.0.1".into(),
                advertised_port: 9092,
                auto_create_topics: false,
                default_partitions: 3,
                cluster_id: "test".into(),
                node_id: 1,
            },
        );
        let shutdown = CancellationToken::new();
        let config = GroupServiceConfig {
            leases: GroupLeaseConfig {
                owner_id: Some("test".into()),
                ttl: Duration::from_secs(30),
                ..GroupLeaseConfig::default()
            },
            ..GroupServiceConfig::default()
        };
        let (groups, _task) = GroupService::start(topics, config, shutdown.clone()).await;
        let state = AdminState::new("standalone", catalog.clone(), 1, 3);
        state.set_tiers(fetch, groups);
        Fixture {
            catalog,
            state,
            _shutdown: shutdown.drop_guard(),
        }
    }

    fn app(&self) -> Router {
        router(self.state.clone(), AdminAuth::new(Some(TOKEN), false))
    }

    /// Sets a partition's offsets as the indexer would have written them.
    async fn set_partition(&self, topic_id: Uuid, partition: i32, start: i64, end: i64) {
        let row = PartitionRecord {
            format: ITEM_FORMAT,
            next_offset: end,
            log_start_offset: start,
            bytes: (end - start) as u64 * 100,
            max_timestamp: -1,
        };
        self.catalog
            .store()
            .write(vec![WriteOp::Put {
                key: partition_key(topic_id, partition),
                value: encode(&row),
                condition: Condition::None,
            }])
            .await
            .expect("write partition row");
    }

    async fn commit(&self, group: &str, topic: &str, topic_id: Uuid, partition: i32, offset: i64) {
        let value = CommittedOffset {
            format: ITEM_FORMAT,
            topic: topic.into(),
            offset,
            leader_epoch: -1,
            metadata: None,
            committed_at_ms: 1,
        };
        self.catalog
            .commit_offsets(group, vec![(topic_id, partition, value)], None)
            .await
            .expect("commit");
    }
}

/// One request through the router: (status, JSON body or Null, WWW-Authenticate).
async fn call(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(b) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{method} {path}: not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, json)
}

#[tokio::test]
async fn mutations_need_the_right_token_and_change_nothing_without_it() {
    let f = Fixture::new().await;
    let app = f.app();
    let create = json!({"name": "t1", "partitions": 2});
    let (status, body) = call(&app, "POST", "/v1/topics", None, Some(create.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthorized");
    let (status, body) = call(
        &app,
        "POST",
        "/v1/topics",
        Some("nope"),
        Some(create.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "forbidden");
    assert!(f.catalog.list_topics().await.expect("list").is_empty());
    let (status, body) = call(&app, "POST", "/v1/topics", Some(TOKEN), Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["partitions"], 2);
    // Reads are open unless asked otherwise.
    let (status, body) = call(&app, "GET", "/v1/topics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["topics"][0]["name"], "t1");

    let strict = router(f.state.clone(), AdminAuth::new(Some(TOKEN), true));
    assert_eq!(
        call(&strict, "GET", "/v1/topics", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&strict, "GET", "/v1/topics", Some("x"), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&strict, "GET", "/v1/topics", Some(TOKEN), None)
            .await
            .0,
        StatusCode::OK
    );

    let read_only = router(f.state.clone(), AdminAuth::new(None, false));
    let (status, body) = call(&read_only, "DELETE", "/v1/topics/t1", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "mutations_disabled");
    assert!(f.catalog.topic("t1").await.expect("read").is_some());
    // The OpenAPI document needs no token.
    let (status, doc) = call(&strict, "GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/v1/groups/{group}/offsets/reset"]["post"].is_object());
}

#[tokio::test]
async fn topics_are_described_with_their_partitions_and_bad_input_is_a_4xx() {
    let f = Fixture::new().await;
    let app = f.app();
    let configs = BTreeMap::from([("retention.ms".to_string(), "60000".to_string())]);
    let t = f
        .catalog
        .create_topic("orders", 2, configs)
        .await
        .expect("create");
    f.set_partition(t.topic_id, 1, 2, 10).await;

    let (status, d) = call(&app, "GET", "/v1/topics/orders", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d["records"], 8);
    assert_eq!(d["partitions"][1]["high_watermark"], 10);
    assert_eq!(d["partitions"][1]["log_start_offset"], 2);
    assert_eq!(d["partitions"][0]["index_entries"], 0);
    assert_eq!(d["configs"]["retention.ms"], "60000");
    let (_, c) = call(&app, "GET", "/v1/topics/orders/configs", None, None).await;
    assert_eq!(c["configs"]["retention.ms"], "60000");
    let (status, s) = call(
        &app,
        "GET",
        "/v1/topics/orders/partitions/1/segments?limit=5",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["entries"], json!([]));

    for (method, path, body, want, code) in [
        ("GET", "/v1/topics/nope", None, 404, "unknown_topic"),
        (
            "GET",
            "/v1/topics/orders/partitions/7/segments",
            None,
            404,
            "unknown_partition",
        ),
        (
            "GET",
            "/v1/topics/orders/partitions/x/segments",
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/topics/orders/partitions/0/segments?limit=0",
            None,
            400,
            "bad_request",
        ),
        ("GET", "/v1/nothing-here", None, 404, "not_found"),
        (
            "POST",
            "/v1/topics",
            Some(json!({"name": "orders"})),
            409,
            "topic_exists",
        ),
        (
            "POST",
            "/v1/topics",
            Some(json!({"name": "bad name"})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/topics",
            Some(json!({"name": "x", "partitions": 0})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/topics",
            Some(json!({"name": 5})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/topics",
            Some(json!({"name": "x", "extra": 1})),
            400,
            "bad_request",
        ),
        // Configs are checked by the same table as Kafka's CreateTopics.
        (
            "POST",
            "/v1/topics",
            Some(json!({"name": "x", "configs": {"cleanup.policy": "none"}})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/topics",
            Some(json!({"name": "x", "configs": {"no.such.config": "1"}})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/topics",
            Some(json!({"name": "x", "configs": {"retention.ms": "soon"}})),
            400,
            "bad_request",
        ),
        ("DELETE", "/v1/topics/nope", None, 404, "unknown_topic"),
    ] {
        let (status, body) = call(&app, method, path, Some(TOKEN), body).await;
        assert_eq!(status.as_u16(), want, "{method} {path}: {body}");
        assert_eq!(body["code"], code, "{method} {path}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(
        call(&app, "GET", "/v1/topics/x", None, None).await.0,
        StatusCode::NOT_FOUND,
        "a refused create wrote the topic"
    );
    let (status, body) = call(
        &app,
        "POST",
        "/v1/topics",
        Some(TOKEN),
        Some(json!({"name": "x", "configs": {"retention.ms": "-1", "segment.bytes": "1048576"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, c) = call(&app, "GET", "/v1/topics/x/configs", None, None).await;
    assert_eq!(c["configs"]["retention.ms"], "-1");
    let (status, _) = call(&app, "DELETE", "/v1/topics/orders", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&app, "GET", "/v1/topics/orders", None, None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn lag_and_offset_resets_follow_kafka_consumer_groups() {
    let f = Fixture::new().await;
    let app = f.app();
    let t = f
        .catalog
        .create_topic("events", 2, BTreeMap::new())
        .await
        .expect("create");
    f.set_partition(t.topic_id, 0, 2, 10).await;
    f.set_partition(t.topic_id, 1, 0, 5).await;
    f.commit("g1", "events", t.topic_id, 0, 4).await;
    f.commit("g1", "events", t.topic_id, 1, 5).await;

    let (status, lag) = call(&app, "GET", "/v1/groups/g1/offsets", None, None).await;
    assert_eq!(status, StatusCode::OK, "{lag}");
    assert_eq!(lag["total_lag"], 6);
    assert_eq!(lag["partitions"][0]["lag"], 6);
    assert_eq!(lag["partitions"][1]["lag"], 0);
    let (_, d) = call(&app, "GET", "/v1/groups/g1", None, None).await;
    assert_eq!(d["coordinated_here"], true);
    assert_eq!(d["state"], "Empty");

    let reset = |strategy: &str, value: Option<i64>, dry_run: bool| json!({"all_topics": true, "strategy": strategy, "value": value, "dry_run": dry_run});
    let path = "/v1/groups/g1/offsets/reset";
    let (status, plan) = call(
        &app,
        "POST",
        path,
        Some(TOKEN),
        Some(reset("earliest", None, true)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["partitions"][0]["previous_offset"], 4);
    assert_eq!(plan["partitions"][0]["new_offset"], 2);
    let committed = f
        .catalog
        .committed_offset("g1", t.topic_id, 0)
        .await
        .expect("read");
    assert_eq!(
        committed.map(|c| c.offset),
        Some(4),
        "a dry run changes nothing"
    );

    let (status, _) = call(
        &app,
        "POST",
        path,
        Some(TOKEN),
        Some(reset("earliest", None, false)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let committed = f
        .catalog
        .committed_offset("g1", t.topic_id, 0)
        .await
        .expect("read");
    assert_eq!(committed.map(|c| c.offset), Some(2));
    // Out-of-range offsets are clamped; a timestamp past every record means the end.
    let (_, r) = call(
        &app,
        "POST",
        path,
        Some(TOKEN),
        Some(reset("offset", Some(100), false)),
    )
    .await;
    assert_eq!(r["partitions"][0]["new_offset"], 10);
    assert_eq!(r["partitions"][1]["new_offset"], 5);
    let (_, r) = call(
        &app,
        "POST",
        path,
        Some(TOKEN),
        Some(reset("offset", Some(-3), true)),
    )
    .await;
    assert_eq!(r["partitions"][0]["new_offset"], 2);
    let (_, r) = call(
        &app,
        "POST",
        path,
        Some(TOKEN),
        Some(reset("timestamp", Some(i64::MAX), true)),
    )
    .await;
    assert_eq!(r["partitions"][0]["new_offset"], 10);
    // One topic's chosen partitions, to the latest offset, for a group with no offsets yet.
    let body = json!({"topics": [{"topic": "events", "partitions": [1]}], "strategy": "latest"});
    let (status, r) = call(
        &app,
        "POST",
        "/v1/groups/g2/offsets/reset",
        Some(TOKEN),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        r["partitions"],
        json!([{"topic": "events", "partition": 1, "previous_offset": null, "new_offset": 5}])
    );

    for (body, want) in [
        (json!({"strategy": "earliest"}), 400),
        (json!({"all_topics": true, "strategy": "offset"}), 400),
        (json!({"all_topics": true, "strategy": "sideways"}), 400),
        (
            json!({"topics": [{"topic": "nope"}], "strategy": "latest"}),
            404,
        ),
        (
            json!({"topics": [{"topic": "events", "partitions": [9]}], "strategy": "latest"}),
            404,
        ),
    ] {
        let (status, e) = call(&app, "POST", path, Some(TOKEN), Some(body.clone())).await;
        assert_eq!(status.as_u16(), want, "{body}: {e}");
    }

    let (status, _) = call(&app, "DELETE", "/v1/groups/g1", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&app, "GET", "/v1/groups/g1/offsets", None, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, e) = call(&app, "DELETE", "/v1/groups/g1", Some(TOKEN), None).await;
    assert_eq!(
        (status, e["code"].clone()),
        (StatusCode::NOT_FOUND, json!("group_not_found"))
    );
    let (_, d) = call(&app, "GET", "/v1/groups/g1", None, None).await;
    assert_eq!(d["state"], "Dead");
    let (_, c) = call(&app, "GET", "/v1/cluster", None, None).await;
    assert_eq!(c["mode"], "standalone");
    assert_eq!(c["coordinator_slots"].as_array().map(Vec::len), Some(16));
    assert!(
        c["processes"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["role"] == "fetch"))
    );
}

/// Serves `app` on `listener` until the returned guard is dropped.
fn serve_on_loopback(
    listener: tokio::net::TcpListener,
    app: Router,
) -> tokio_util::sync::DropGuard {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await;
    });
    stop.drop_guard()
}

fn indexer_config(owner: &str, addr: &str, shards: u32) -> IndexerConfig {
    IndexerConfig {
        owner_id: owner.into(),
        owner_addr: addr.into(),
        lease_ttl: Duration::from_secs(30),
        shard_count: shards,
        ..IndexerConfig::default()
    }
}

#[tokio::test]
async fn shards_show_the_queue_depth_and_commit_latency_of_their_owner() {
    // Standalone: the indexer in the same process.
    let f = Fixture::new().await;
    let indexer = Indexer::start(
        f.catalog.clone(),
        Arc::new(Watermarks::new()),
        indexer_config("standalone", "in-process", 1),
    )
    .await
    .expect("indexer");
    f.state.set_local_indexer(indexer);
    let (status, body) = call(&f.app(), "GET", "/v1/shards", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shard = &body["shards"][0];
    assert_eq!(shard["owner"], "standalone");
    assert_eq!(shard["figures"], "ok", "{body}");
    assert_eq!(shard["queue_depth"], 0);
    assert_eq!(shard["commit_latency"]["window_seconds"], 60);
    assert_eq!(shard["commit_latency"]["commits"], 0);
    assert!(shard["commit_latency"]["p99_seconds"].is_null());

    // Gateways: each live owner is asked over HTTP; one that does not answer is "unknown".
    let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
    // The indexer's lease names the address its status route is served at.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let served_at = listener.local_addr().expect("addr").to_string();
    let indexer = Indexer::new(
        catalog.clone(),
        Arc::new(Watermarks::new()),
        indexer_config("indexer-a", &served_at, 2),
    );
    let _server = serve_on_loopback(listener, status_routes(indexer.clone()));
    assert_eq!(
        indexer.maintain_leases(1).await.expect("lease").owned,
        vec![0]
    );
    // Shard 1's owner is gone without releasing its lease (nothing listens at its address).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr").to_string();
    drop(dead);
    catalog
        .acquire_lease(
            &shard_lease_name(1),
            "indexer-gone",
            &dead_addr,
            Duration::from_secs(30),
        )
        .await
        .expect("lease")
        .expect("free");
    let state = AdminState::new("fetch", catalog.clone(), 2, 3);
    let app = router(state, AdminAuth::new(Some(TOKEN), false));
    let (status, body) = call(&app, "GET", "/v1/shards", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let [a, gone] = [&body["shards"][0], &body["shards"][1]];
    assert_eq!(
        (&a["owner"], &a["owner_addr"], &a["figures"]),
        (&json!("indexer-a"), &json!(served_at), &json!("ok")),
        "{body}"
    );
    assert_eq!(a["queue_depth"], 0);
    assert_eq!(a["epoch"], 1);
    assert_eq!(
        (&gone["owner"], &gone["figures"]),
        (&json!("indexer-gone"), &json!("unknown")),
        "{body}"
    );
    assert!(gone["queue_depth"].is_null() && gone["commit_latency"].is_null());
}

#[tokio::test]
async fn groups_with_committed_offsets_are_listed_by_every_process() {
    let f = Fixture::new().await;
    let app = f.app();
    let t = f
        .catalog
        .create_topic("listed", 1, BTreeMap::new())
        .await
        .expect("create");
    f.set_partition(t.topic_id, 0, 0, 5).await;
    // Offsets stored through the coordinator (as an OffsetCommit would be).
    let body = json!({"all_topics": false, "topics": [{"topic": "listed"}], "strategy": "latest"});
    let (status, r) = call(
        &app,
        "POST",
        "/v1/groups/stored/offsets/reset",
        Some(TOKEN),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let (_, list) = call(&app, "GET", "/v1/groups", None, None).await;
    assert_eq!(
        list["groups"],
        json!([{"group_id": "stored", "protocol_type": "", "state": "Empty", "coordinated_here": true}])
    );

    // A process that coordinates no group (an ingest gateway) lists it too, state unknown.
    let topics = TopicApi::new(
        f.catalog.clone(),
        TopicSettings {
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9095,
            auto_create_topics: false,
            default_partitions: 3,
            cluster_id: "test".into(),
            node_id: 2,
        },
    );
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let config = GroupServiceConfig {
        leases: GroupLeaseConfig {
            coordinates: false,
            ttl: Duration::from_secs(30),
            ..GroupLeaseConfig::default()
        },
        ..GroupServiceConfig::default()
    };
    let (groups, _task) = GroupService::start(topics, config, shutdown).await;
    let elsewhere = AdminState::new("ingest", f.catalog.clone(), 1, 3);
    elsewhere.set_tiers(f.state.fetch().expect("fetch").clone(), groups);
    let ingest_app = router(elsewhere, AdminAuth::new(Some(TOKEN), false));
    let (_, list) = call(&ingest_app, "GET", "/v1/groups", None, None).await;
    assert_eq!(
        list["groups"],
        json!([{"group_id": "stored", "protocol_type": "", "state": "Unknown", "coordinated_here": false}])
    );

    // Deleting the group removes it from the list everywhere.
    let (status, _) = call(&app, "DELETE", "/v1/groups/stored", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for app in [&app, &ingest_app] {
        let (_, list) = call(app, "GET", "/v1/groups", None, None).await;
        assert_eq!(list["groups"], json!([]));
    }
}

#[tokio::test]
async fn users_are_set_listed_and_deleted_and_the_password_is_not_kept() {
    use kafscale_sasl::ScramMechanism;
    use kafscale_shared::catalog::scram_credential_key;
    use kafscale_shared::scram_credentials::CredentialStore;

    let f = Fixture::new().await;
    let app = f.app();
    let path = "/v1/users/alice/credentials/SCRAM-SHA-512";
    let body = json!({"password": "alice-secret", "iterations": 8192});
    let (status, _) = call(&app, "PUT", path, None, Some(body.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, answer) = call(&app, "PUT", path, Some(TOKEN), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({"mechanism": "SCRAM-SHA-512", "iterations": 8192})
    );
    let stored = CredentialStore::new(f.catalog.store().clone())
        .get("alice", ScramMechanism::Sha512)
        .await
        .unwrap()
        .expect("stored");
    assert!(stored.verifies_password("alice-secret"));
    assert!(!stored.verifies_password("alice-secreT"));
    let item = f
        .catalog
        .store()
        .get(&scram_credential_key("alice", "SCRAM-SHA-512"))
        .await
        .unwrap()
        .expect("item");
    assert!(!String::from_utf8_lossy(&item.value).contains("alice-secret"));

    let (status, _) = call(
        &app,
        "PUT",
        "/v1/users/alice/credentials/SCRAM-SHA-256",
        Some(TOKEN),
        Some(json!({"password": "alice-secret"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, list) = call(&app, "GET", "/v1/users", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list,
        json!({"users": [{"name": "alice", "credentials": [
            {"mechanism": "SCRAM-SHA-256", "iterations": 4096},
            {"mechanism": "SCRAM-SHA-512", "iterations": 8192},
        ]}]})
    );

    for (path, body) in [
        (
            "/v1/users/alice/credentials/SCRAM-MD5",
            json!({"password": "x"}),
        ),
        (path, json!({"password": "x", "iterations": 100})),
        (path, json!({"password": ""})),
        (path, json!({"password": "x", "salt": "y"})),
    ] {
        let (status, answer) = call(&app, "PUT", path, Some(TOKEN), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert_eq!(answer["code"], "bad_request");
    }

    let (status, _) = call(&app, "DELETE", path, Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, answer) = call(&app, "DELETE", path, Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["code"], "credential_not_found");
}

//! The DynamoDB metadata-store backend against a real DynamoDB-compatible server.
//!
//! Most tests need DynamoDB Local, which `scripts/with-dynamodb-local.sh` starts in a private
//! network namespace and announces through `KAFSCALE_TEST_DYNAMODB_ENDPOINT`:
//!
//! ```sh
//! bash scripts/install-dynamodb-local.sh
//! KAFSCALE_REQUIRE_DYNAMODB=1 bash scripts/with-dynamodb-local.sh \
//!     cargo test --release --locked --offline --workspace --test dynamodb_conformance
//! ```
//!
//! Without the variable (a plain `cargo test --workspace`), those tests print that they were
//! skipped and pass, so that the workspace tests need no Java; `scripts/test.sh` runs them
//! through the wrapper with `KAFSCALE_REQUIRE_DYNAMODB=1`, under which a missing endpoint fails.
//! The tests of unreachable servers need no server and always run. Each test uses its own table,
//! so they run in parallel on one server.

use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use bytes::Bytes;
use kafscale_shared::meta_store::dynamodb::{
    DynamoSetupError, MAX_BATCH_OPS, MAX_ITEM_BYTES, max_value_len,
};
use kafscale_shared::meta_store::metrics::MetaStoreOp;
use kafscale_shared::meta_store::{
    Condition, Direction, DynamoConfig, DynamoMetaStore, ItemKey, MetaStore, MetaStoreError, Query,
    WriteOp, conformance,
};

const ENDPOINT_VAR: &str = "KAFSCALE_TEST_DYNAMODB_ENDPOINT";

/// The server's endpoint, or `None` (after saying so) when the test is to be skipped.
fn endpoint() -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint),
        _ => {
            assert!(
                std::env::var("KAFSCALE_REQUIRE_DYNAMODB").as_deref() != Ok("1"),
                "{ENDPOINT_VAR} is unset but KAFSCALE_REQUIRE_DYNAMODB=1: run these tests via \
                 `bash scripts/with-dynamodb-local.sh cargo test --release --offline \
                 --workspace --test dynamodb_conformance`"
            );
            println!("skipped: run via scripts/with-dynamodb-local.sh ({ENDPOINT_VAR} is unset)");
            None
        }
    }
}

/// Fixed credentials and region: DynamoDB Local accepts any, and the tests must not depend on
/// (or reach out for) the machine's AWS setup.
async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(Credentials::new(
            // DynamoDB Local accepts only letters and digits in access key ids.
            "kafscaletest",
            "kafscaletest",
            None,
            None,
            "kafscale-tests",
        ))
        .region(Region::new("us-east-1"))
        .load()
        .await
}

/// A fresh table name prefix per test.
fn unique_prefix(test: &str) -> String {
    format!("{test}-{}-", uuid::Uuid::new_v4().simple())
}

fn config(endpoint: &str, test: &str) -> DynamoConfig {
    DynamoConfig {
        endpoint: Some(endpoint.to_owned()),
        request_timeout: Duration::from_secs(10),
        max_attempts: 3,
        ..DynamoConfig::with_table_prefix(&unique_prefix(test))
    }
}

/// A store on a new table of its own, or `None` when skipped.
async fn new_store(test: &str) -> Option<DynamoMetaStore> {
    let endpoint = endpoint()?;
    let store = DynamoMetaStore::from_sdk_config(config(&endpoint, test), &sdk_config().await)
        .expect("store");
    store
        .create_table_if_missing()
        .await
        .expect("create the table");
    Some(store)
}

fn put(key: &ItemKey, value: impl Into<Bytes>, condition: Condition) -> WriteOp {
    WriteOp::Put {
        key: key.clone(),
        value: value.into(),
        condition,
    }
}

fn key(pk: &str, i: usize) -> ItemKey {
    ItemKey::new(pk, format!("{i:05}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conforms_to_the_meta_store_contract() {
    let Some(store) = new_store("conformance").await else {
        return;
    };
    conformance::run_all(&store, "conformance/").await;
    // The suite cleans up after itself: a second run on the same table passes too.
    conformance::run_all(&store, "").await;

    let metrics = store.metrics();
    assert_eq!(metrics.total().errors, 0, "{:?}", metrics.snapshot());
    let update = metrics.get(MetaStoreOp::UpdateItem);
    let transact = metrics.get(MetaStoreOp::TransactWriteItems);
    assert!(
        update.requests > 0 && update.items_written > 0,
        "{update:?}"
    );
    assert!(
        update.condition_failures > 0,
        "failed CAS are counted: {update:?}"
    );
    assert!(
        transact.requests > 0 && transact.condition_failures > 0,
        "{transact:?}"
    );
    assert!(metrics.get(MetaStoreOp::GetItem).items_read > 0);
    assert!(metrics.get(MetaStoreOp::Query).items_read > 0);
}

#[tokio::test]
async fn create_table_if_missing_is_idempotent() {
    let Some(endpoint) = endpoint() else {
        return;
    };
    let sdk = sdk_config().await;
    let store = DynamoMetaStore::from_sdk_config(config(&endpoint, "create"), &sdk).expect("store");

    // Before the table exists, calls fail as retryable and say what to do.
    match store.get(&key("p", 1)).await {
        Err(e @ MetaStoreError::Unavailable(_)) => {
            assert!(e.to_string().contains("admin init"), "{e}")
        }
        other => panic!("a missing table is Unavailable, got {other:?}"),
    }

    store.create_table_if_missing().await.expect("first create");
    store
        .create_table_if_missing()
        .await
        .expect("second create");
    // And from a second store (another process) on the same table.
    let other = DynamoMetaStore::from_sdk_config(
        DynamoConfig {
            table_name: store.table_name().to_owned(),
            ..config(&endpoint, "create")
        },
        &sdk,
    )
    .expect("store");
    other.create_table_if_missing().await.expect("third create");

    store
        .write(vec![put(&key("p", 1), "x", Condition::Absent)])
        .await
        .expect("write to the new table");
    let item = other.get(&key("p", 1)).await.expect("get").expect("item");
    assert_eq!((item.value, item.version), (Bytes::from_static(b"x"), 1));
    assert!(store.metrics().get(MetaStoreOp::Admin).requests >= 3);
}

#[tokio::test]
async fn a_table_with_another_key_schema_is_refused() {
    let Some(endpoint) = endpoint() else {
        return;
    };
    let sdk = sdk_config().await;
    let config = config(&endpoint, "schema");
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(&endpoint)
            // The AWS crates are built without an HTTP client of their own.
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build(),
    );
    client
        .create_table()
        .table_name(&config.table_name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("definition"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .expect("key schema"),
        )
        .send()
        .await
        .expect("create a foreign table");
    let store = DynamoMetaStore::from_sdk_config(config, &sdk).expect("store");
    match store.create_table_if_missing().await {
        Err(DynamoSetupError::WrongKeySchema { .. }) => {}
        other => panic!("a foreign table must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_takes_credentials_and_region_from_the_standard_chain() {
    let Some(endpoint) = endpoint() else {
        return;
    };
    // scripts/with-dynamodb-local.sh exports AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    // AWS_REGION; the store finds them like it would find real ones.
    let store = DynamoMetaStore::connect(DynamoConfig {
        region: None,
        ..config(&endpoint, "chain")
    })
    .await
    .expect("connect");
    store.create_table_if_missing().await.expect("create");
    store
        .write(vec![put(&key("p", 1), "chain", Condition::Absent)])
        .await
        .expect("write");
    assert_eq!(
        store.get(&key("p", 1)).await.expect("get").map(|i| i.value),
        Some(Bytes::from_static(b"chain"))
    );
}

#[tokio::test]
async fn a_full_transaction_applies_and_one_more_operation_is_invalid() {
    let Some(store) = new_store("limits").await else {
        return;
    };
    assert_eq!(store.max_batch_ops(), 100);

    let too_many: Vec<WriteOp> = (0..=MAX_BATCH_OPS)
        .map(|i| put(&key("too-many", i), "x", Condition::Absent))
        .collect();
    match store.write(too_many).await {
        Err(MetaStoreError::InvalidBatch(msg)) => assert!(msg.contains("101"), "{msg}"),
        other => panic!("101 operations are InvalidBatch, got {other:?}"),
    }
    assert!(
        store
            .query(Query::all("too-many"))
            .await
            .expect("query")
            .is_empty(),
        "an invalid batch writes nothing"
    );

    // 100 operations of every kind: 60 creates, 20 updates, 10 deletes, 10 checks.
    let setup: Vec<WriteOp> = (60..100)
        .map(|i| put(&key("full", i), "old", Condition::Absent))
        .collect();
    store.write(setup).await.expect("setup");
    let ops: Vec<WriteOp> = (0..MAX_BATCH_OPS)
        .map(|i| match i {
            0..60 => put(&key("full", i), "new", Condition::Absent),
            60..80 => put(&key("full", i), "new", Condition::Version(1)),
            80..90 => WriteOp::Delete {
                key: key("full", i),
                condition: Condition::Exists,
            },
            _ => WriteOp::Check {
                key: key("full", i),
                condition: Condition::Version(1),
            },
        })
        .collect();
    store.write(ops).await.expect("a 100-operation transaction");
    let items = store.query(Query::all("full")).await.expect("query");
    let expected: Vec<(String, &str, u64)> = (0..100)
        .filter(|i| !(80..90).contains(i))
        .map(|i| match i {
            0..60 => (format!("{i:05}"), "new", 1),
            60..80 => (format!("{i:05}"), "new", 2),
            _ => (format!("{i:05}"), "old", 1),
        })
        .collect();
    let got: Vec<(String, &str, u64)> = items
        .iter()
        .map(|i| {
            (
                i.key.sk.clone(),
                std::str::from_utf8(&i.value).expect("utf-8"),
                i.version,
            )
        })
        .collect();
    assert_eq!(got, expected);
    let transact = store.metrics().get(MetaStoreOp::TransactWriteItems);
    assert_eq!(transact.items_written, 40 + 90, "checks are not writes");
}

#[tokio::test]
async fn a_failed_condition_deep_in_a_transaction_is_reported_by_index_and_writes_nothing() {
    let Some(store) = new_store("index").await else {
        return;
    };
    // Items 50..100 exist at version 1.
    let setup: Vec<WriteOp> = (50..100)
        .map(|i| put(&key("p", i), "old", Condition::Absent))
        .collect();
    store.write(setup).await.expect("setup");
    let before = store.query(Query::all("p")).await.expect("query");

    // The 57th operation (index 56) expects version 2 of item 56, which has version 1. In the
    // second batch operations 81 (a check) and 90 fail too: the first failure is reported.
    let ops = |failing: &[usize]| -> Vec<WriteOp> {
        (0..MAX_BATCH_OPS)
            .map(|i| {
                let k = key("p", i);
                match i {
                    _ if failing.contains(&i) && i % 2 == 0 => {
                        put(&k, "new", Condition::Version(2))
                    }
                    _ if failing.contains(&i) => WriteOp::Check {
                        key: k,
                        condition: Condition::Absent,
                    },
                    0..50 => put(&k, "new", Condition::Absent),
                    _ => put(&k, "new", Condition::Version(1)),
                }
            })
            .collect()
    };
    for failing in [&[56][..], &[56, 81, 90]] {
        match store.write(ops(failing)).await {
            Err(MetaStoreError::ConditionFailed { index, key: k }) => {
                assert_eq!((index, k), (56, key("p", 56)), "failing {failing:?}")
            }
            other => panic!("expected ConditionFailed at 56, got {other:?}"),
        }
        assert_eq!(
            store.query(Query::all("p")).await.expect("query"),
            before,
            "a failed transaction writes nothing"
        );
    }
    // Without the failing condition the same batch applies.
    store.write(ops(&[])).await.expect("the fixed batch");
    assert_eq!(
        store.query(Query::all("p")).await.expect("query").len(),
        100
    );
}

#[tokio::test]
async fn items_over_400_kb_are_rejected_before_sending() {
    let Some(store) = new_store("size").await else {
        return;
    };
    let big = key("size", 1);
    let max = max_value_len(&big);
    assert!(max > 400_000 && max < MAX_ITEM_BYTES, "{max}");
    let value = Bytes::from(vec![0xa5; max]);
    store
        .write(vec![put(&big, value.clone(), Condition::Absent)])
        .await
        .expect("a value of exactly max_value_len fits");
    assert_eq!(
        store.get(&big).await.expect("get").map(|i| i.value),
        Some(value)
    );

    let requests = store.metrics().total().requests;
    let too_big = key("size", 2);
    for ops in [
        vec![put(&too_big, vec![0u8; max + 1], Condition::None)],
        vec![
            put(&key("size", 3), "small", Condition::None),
            put(&too_big, vec![0u8; 1 << 20], Condition::None),
        ],
        // Eleven items of ~390 KB: each fits, but not the 4 MB transaction.
        (10..21)
            .map(|i| put(&key("size", i), vec![0u8; 390_000], Condition::None))
            .collect(),
    ] {
        match store.write(ops).await {
            Err(MetaStoreError::InvalidBatch(msg)) => {
                assert!(msg.contains("limit"), "{msg}")
            }
            other => panic!("an oversized item or batch is InvalidBatch, got {other:?}"),
        }
    }
    assert_eq!(
        store.metrics().total().requests,
        requests,
        "nothing was sent"
    );
    assert_eq!(
        store.query(Query::all("size")).await.expect("query").len(),
        1
    );

    // Keys DynamoDB cannot hold are refused too, and reads of them find nothing.
    for bad in [
        ItemKey::new("size", ""),
        ItemKey::new("size", "s".repeat(1025)),
    ] {
        match store.write(vec![put(&bad, "x", Condition::None)]).await {
            Err(MetaStoreError::InvalidBatch(_)) => {}
            other => panic!("key {bad:?} is InvalidBatch, got {other:?}"),
        }
        assert_eq!(store.get(&bad).await.expect("get"), None);
    }
}

#[tokio::test]
async fn queries_follow_pages_and_honour_limits() {
    let Some(store) = new_store("pages").await else {
        return;
    };
    // Six items of ~390 KB: about 2.3 MB, so DynamoDB answers a full query in several pages
    // (it stops a page at 1 MB). Written in two transactions (each under the 4 MB limit).
    const N: usize = 6;
    let value = |i: usize| Bytes::from(vec![i as u8; 390_000]);
    for range in [0..3, 3..N] {
        let ops = range
            .map(|i| put(&key("big", i), value(i), Condition::Absent))
            .collect();
        store.write(ops).await.expect("write big items");
    }
    // A neighbour that a query of "big" must not return.
    store
        .write(vec![put(&key("big2", 0), "other", Condition::Absent)])
        .await
        .expect("write");

    let run = |q: Query| {
        let store = store.clone();
        async move {
            let pages_before = store.metrics().get(MetaStoreOp::Query).requests;
            let items = store.query(q.clone()).await.expect("query");
            let pages = store.metrics().get(MetaStoreOp::Query).requests - pages_before;
            for item in &items {
                let i: usize = item.key.sk.parse().expect("numeric sort key");
                assert_eq!(item.value, value(i), "value of item {i} in {q:?}");
                assert_eq!(item.version, 1);
            }
            let sks: Vec<usize> = items
                .iter()
                .map(|i| i.key.sk.parse().expect("numeric"))
                .collect();
            (sks, pages)
        }
    };
    let range = |start, end, direction, limit| Query {
        pk: "big".to_owned(),
        start,
        end,
        direction,
        limit,
    };
    let sk = |i: usize| format!("{i:05}");
    use std::ops::Bound::{Excluded, Included, Unbounded};

    let (all, pages) = run(Query::all("big")).await;
    assert_eq!(all, (0..N).collect::<Vec<_>>());
    // DynamoDB stops a page once it has read 1 MB (DynamoDB Local: with the item that crosses
    // 1 MB, so 3 of these items), so this takes two pages or more.
    assert!(
        pages >= 2,
        "2.3 MB of items take several pages, took {pages}"
    );

    let (all, pages) = run(range(Unbounded, Unbounded, Direction::Backward, None)).await;
    assert_eq!(all, (0..N).rev().collect::<Vec<_>>());
    assert!(pages >= 2, "{pages}");

    // A limit past the first page: the query goes on to the next page and stops there.
    let (some, pages) = run(range(Unbounded, Unbounded, Direction::Forward, Some(4))).await;
    assert_eq!(some, vec![0, 1, 2, 3]);
    assert_eq!(
        pages, 2,
        "4 items of 390 KB need exactly two pages (Limit stops the second)"
    );

    let (one, pages) = run(range(Unbounded, Unbounded, Direction::Backward, Some(1))).await;
    assert_eq!((one, pages), (vec![N - 1], 1));

    // Exclusive bounds on both ends, across pages, in both directions.
    let (inner, _) = run(range(
        Excluded(sk(0)),
        Excluded(sk(N - 1)),
        Direction::Forward,
        None,
    ))
    .await;
    assert_eq!(inner, (1..N - 1).collect::<Vec<_>>());
    let (inner, _) = run(range(
        Excluded(sk(0)),
        Excluded(sk(N - 1)),
        Direction::Backward,
        Some(3),
    ))
    .await;
    assert_eq!(inner, vec![4, 3, 2]);
    let (inner, _) = run(range(
        Included(sk(1)),
        Excluded(sk(5)),
        Direction::Backward,
        Some(10),
    ))
    .await;
    assert_eq!(inner, vec![4, 3, 2, 1]);
}

/// A store whose every request fails fast: short attempts, three of them.
async fn store_at(endpoint: String) -> (DynamoMetaStore, Duration) {
    let config = DynamoConfig {
        endpoint: Some(endpoint),
        request_timeout: Duration::from_millis(250),
        max_attempts: 3,
        ..DynamoConfig::with_table_prefix("unreachable-")
    };
    let bound = config.max_call_duration() + Duration::from_secs(2);
    let store = DynamoMetaStore::from_sdk_config(config, &sdk_config().await).expect("store");
    (store, bound)
}

/// Every kind of call fails as retryable within `bound`.
async fn assert_unavailable(store: &DynamoMetaStore, bound: Duration, what: &str) {
    let k = key("p", 1);
    let calls: Vec<(&str, Result<(), MetaStoreError>)> = vec![
        ("get", store.get(&k).await.map(|_| ())),
        ("query", store.query(Query::all("p")).await.map(|_| ())),
        (
            "put",
            store.write(vec![put(&k, "x", Condition::None)]).await,
        ),
        (
            "transaction",
            store
                .write(vec![
                    put(&k, "x", Condition::None),
                    put(&key("p", 2), "y", Condition::Absent),
                ])
                .await,
        ),
    ];
    for (call, result) in calls {
        match result {
            Err(e) if e.is_retryable() => {}
            other => panic!("{what}: {call} must fail as retryable, got {other:?}"),
        }
    }
    let start = Instant::now();
    let result = store.get(&k).await;
    let took = start.elapsed();
    assert!(
        matches!(result, Err(MetaStoreError::Unavailable(_))),
        "{what}: {result:?}"
    );
    assert!(
        took <= bound,
        "{what}: a call gave up after {took:?}, bound {bound:?}"
    );
    let errors = store.metrics().total().errors;
    assert_eq!(errors, 5, "{what}: every failed call is counted");
    match store.create_table_if_missing().await {
        Err(DynamoSetupError::Store(e)) if e.is_retryable() => {}
        other => panic!("{what}: create_table_if_missing must fail as retryable, got {other:?}"),
    }
}

/// A stopped server (nothing listens on the port: connections are refused).
#[tokio::test]
async fn a_stopped_server_is_a_retryable_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let (store, bound) = store_at(format!("http://{addr}")).await;
    assert_unavailable(&store, bound, "stopped server").await;
}

/// A hung server: it accepts connections and never answers, so only the timeouts end calls.
#[tokio::test]
async fn a_hung_server_times_out_as_a_retryable_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let (store, bound) = store_at(format!("http://{addr}")).await;
    assert_unavailable(&store, bound, "hung server").await;
    hold.abort();
}

/// A server that does not speak TLS behind an `https://` endpoint: the store's own rustls client
/// is in use, a failed handshake is retried `max_attempts` times and then retryable.
#[tokio::test]
async fn a_failed_tls_handshake_is_retried_then_a_retryable_error() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&connections);
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            // Plain HTTP where a TLS ServerHello is expected.
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let (store, bound) = store_at(format!("https://{addr}")).await;
    let start = Instant::now();
    let result = store.get(&key("p", 1)).await;
    let took = start.elapsed();
    match result {
        // rustls's own words: the handshake really was attempted.
        Err(MetaStoreError::Unavailable(msg)) => assert!(msg.contains("corrupt message"), "{msg}"),
        other => panic!("a failed TLS handshake is Unavailable, got {other:?}"),
    }
    assert!(took <= bound, "gave up after {took:?}, bound {bound:?}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        3,
        "one connection per attempt (max_attempts = 3)"
    );
    server.abort();
}

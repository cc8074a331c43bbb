//! The behaviour every [`ObjectStore`] backend must show, as one executable suite.
//!
//! It is compiled into the library (not only under `cfg(test)`) so that each backend's tests,
//! integration tests and a real S3 bucket can all run the very same checks. The suite touches
//! only keys under `prefix` followed by a fresh random run id, so it can run repeatedly and
//! concurrently on a shared bucket; it deletes what it wrote when it passes.
//!
//! Failures panic with a message naming the check, like any test assertion.

use std::ops::Range;

use bytes::Bytes;
use futures::future::join_all;

use super::{ObjectMeta, ObjectStore, ObjectStoreError};

/// Runs every check against `store`, using only keys that start with `prefix`.
///
/// `prefix` is used verbatim (pass e.g. `"conformance/"`); the suite appends a random run id.
pub async fn run_all(store: &dyn ObjectStore, prefix: &str) {
    let base = format!("{prefix}{}/", uuid::Uuid::new_v4().simple());
    assert!(
        store
            .list(&base)
            .await
            .expect("list of a fresh run prefix")
            .is_empty(),
        "a fresh run prefix must hold no objects"
    );

    put_get_round_trip(store, &base).await;
    create_only(store, &base).await;
    missing_objects(store, &base).await;
    get_range_edges(store, &base).await;
    get_range_capped_edges(store, &base).await;
    list_by_prefix(store, &base).await;
    delete_is_idempotent(store, &base).await;
    delete_many(store, &base).await;
    concurrent_puts_of_one_key(store, &base).await;
    concurrent_puts_in_new_directory(store, &base).await;
    large_object(store, &base).await;

    // Clean up, which also checks that deleting every listed object empties the prefix.
    for meta in store.list(&base).await.expect("list for cleanup") {
        store
            .delete(&meta.key)
            .await
            .expect("delete during cleanup");
    }
    assert!(
        store
            .list(&base)
            .await
            .expect("list after cleanup")
            .is_empty(),
        "deleting every listed object must leave the prefix empty"
    );
}

async fn put_get_round_trip(store: &dyn ObjectStore, base: &str) {
    let cases: [(&str, Bytes); 4] = [
        (
            "round-trip/plain.bin",
            Bytes::from_static(b"hello, object store"),
        ),
        ("round-trip/empty.bin", Bytes::new()),
        (
            "round-trip/nested/deeper/obj",
            Bytes::from(vec![0xA5; 4096]),
        ),
        (
            "round-trip/spaces and ümlauts=1~x.bin",
            Bytes::from_static(b"odd key"),
        ),
    ];
    for (name, data) in cases {
        let key = format!("{base}{name}");
        store
            .put(&key, data.clone())
            .await
            .expect("put of a new key");
        assert_eq!(
            store.get(&key).await.expect("get after put"),
            data,
            "get returns what put stored ({key})"
        );
        assert_eq!(
            store.head(&key).await.expect("head after put"),
            Some(ObjectMeta {
                key: key.clone(),
                size: data.len() as u64
            }),
            "head reports key and size ({key})"
        );
    }
}

async fn create_only(store: &dyn ObjectStore, base: &str) {
    let key = format!("{base}create-only/obj");
    let original = Bytes::from_static(b"original");
    store.put(&key, original.clone()).await.expect("first put");
    match store.put(&key, Bytes::from_static(b"replacement")).await {
        Err(ObjectStoreError::AlreadyExists { key: reported }) => {
            assert_eq!(reported, key, "AlreadyExists names the key")
        }
        other => panic!("second put of {key} must fail with AlreadyExists, got {other:?}"),
    }
    // Same data again is still a second put.
    assert!(
        matches!(
            store.put(&key, original.clone()).await,
            Err(ObjectStoreError::AlreadyExists { .. })
        ),
        "a put of identical data to an existing key must fail with AlreadyExists"
    );
    assert_eq!(
        store.get(&key).await.expect("get after rejected put"),
        original,
        "a rejected put leaves the original data"
    );
}

async fn missing_objects(store: &dyn ObjectStore, base: &str) {
    let key = format!("{base}missing/never-written");
    assert_not_found(store.get(&key).await, &key, "get");
    assert_not_found(store.get_range(&key, 0..0).await, &key, "get_range");
    assert_not_found(store.get_range(&key, 0..10).await, &key, "get_range");
    assert_eq!(
        store.head(&key).await.expect("head of a missing object"),
        None,
        "head of a missing object is None"
    );
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, ObjectStoreError>, key: &str, op: &str) {
    match result {
        Err(ObjectStoreError::NotFound { key: reported }) => {
            assert_eq!(reported, key, "NotFound names the key")
        }
        other => panic!("{op} of missing {key} must fail with NotFound, got {other:?}"),
    }
}

async fn get_range_edges(store: &dyn ObjectStore, base: &str) {
    let key = format!("{base}range/hundred");
    let data: Bytes = (0..100u8).collect::<Vec<u8>>().into();
    store.put(&key, data.clone()).await.expect("put");

    let valid: [Range<u64>; 7] = [0..100, 10..20, 0..1, 99..100, 0..0, 50..50, 100..100];
    for range in valid {
        let got = store
            .get_range(&key, range.clone())
            .await
            .unwrap_or_else(|e| panic!("get_range {range:?}: {e}"));
        assert_eq!(
            got,
            data.slice(range.start as usize..range.end as usize),
            "get_range {range:?} returns those bytes"
        );
    }

    let invalid = [
        Range {
            start: 50,
            end: 101,
        },
        Range {
            start: 100,
            end: 101,
        },
        Range {
            start: 101,
            end: 101,
        },
        Range {
            start: 0,
            end: u64::MAX,
        },
        Range { start: 20, end: 10 },
    ];
    for range in invalid {
        match store.get_range(&key, range.clone()).await {
            Err(ObjectStoreError::InvalidRange {
                key: k,
                start,
                end,
                size,
            }) => {
                assert_eq!(
                    (k.as_str(), start, end, size),
                    (key.as_str(), range.start, range.end, 100),
                    "InvalidRange fields for {range:?}"
                )
            }
            other => panic!(
                "get_range {range:?} of a 100-byte object must fail with InvalidRange, got {other:?}"
            ),
        }
    }

    let empty_key = format!("{base}range/empty");
    store
        .put(&empty_key, Bytes::new())
        .await
        .expect("put empty");
    assert_eq!(
        store
            .get_range(&empty_key, 0..0)
            .await
            .expect("get_range 0..0 of empty object"),
        Bytes::new()
    );
    assert!(
        matches!(
            store.get_range(&empty_key, 0..1).await,
            Err(ObjectStoreError::InvalidRange { .. })
        ),
        "get_range 0..1 of an empty object must fail with InvalidRange"
    );
}

async fn get_range_capped_edges(store: &dyn ObjectStore, base: &str) {
    let key = format!("{base}capped/hundred");
    let data: Bytes = (0..100u8).collect::<Vec<u8>>().into();
    store.put(&key, data.clone()).await.expect("put");

    // (asked, what the object holds of it)
    let cases: [(Range<u64>, Range<usize>); 8] = [
        (0..100, 0..100),
        (10..20, 10..20),
        (0..1000, 0..100),
        (90..u64::MAX, 90..100),
        (99..101, 99..100),
        (100..200, 100..100),
        (100..100, 100..100),
        (0..0, 0..0),
    ];
    for (asked, held) in cases {
        let got = store
            .get_range_capped(&key, asked.clone())
            .await
            .unwrap_or_else(|e| panic!("get_range_capped {asked:?}: {e}"));
        assert_eq!(got, data.slice(held), "get_range_capped {asked:?}");
    }
    for asked in [101..200, 150..150] {
        assert!(
            matches!(
                store.get_range_capped(&key, asked.clone()).await,
                Err(ObjectStoreError::InvalidRange { .. })
            ),
            "get_range_capped {asked:?} starts beyond a 100-byte object: InvalidRange"
        );
    }
    let missing = format!("{base}capped/missing");
    assert_not_found(
        store.get_range_capped(&missing, 0..10).await,
        &missing,
        "get_range_capped",
    );
}

async fn list_by_prefix(store: &dyn ObjectStore, base: &str) {
    // Written out of order; sizes differ so list must report each one's own size.
    let names = [
        "list/ba",
        "list/b/d",
        "list/a",
        "lister/x",
        "list/b/c",
        "other/y",
        "list/b/c2/e",
    ];
    for (i, name) in names.iter().enumerate() {
        store
            .put(&format!("{base}{name}"), Bytes::from(vec![7; i + 1]))
            .await
            .expect("put for list");
    }
    let size_of = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .map(|i| i as u64 + 1)
            .unwrap_or(0)
    };

    let cases: [(&str, &[&str]); 7] = [
        (
            "list/",
            &["list/a", "list/b/c", "list/b/c2/e", "list/b/d", "list/ba"],
        ),
        (
            "list/b",
            &["list/b/c", "list/b/c2/e", "list/b/d", "list/ba"],
        ),
        ("list/b/", &["list/b/c", "list/b/c2/e", "list/b/d"]),
        ("list/b/c", &["list/b/c", "list/b/c2/e"]),
        (
            "list",
            &[
                "list/a",
                "list/b/c",
                "list/b/c2/e",
                "list/b/d",
                "list/ba",
                "lister/x",
            ],
        ),
        ("list/zzz", &[]),
        ("nothing/", &[]),
    ];
    for (prefix, expected) in cases {
        let listed = store.list(&format!("{base}{prefix}")).await.expect("list");
        let expected: Vec<ObjectMeta> = expected
            .iter()
            .map(|name| ObjectMeta {
                key: format!("{base}{name}"),
                size: size_of(name),
            })
            .collect();
        assert_eq!(
            listed, expected,
            "list({prefix:?}) returns exactly the matching keys, sorted byte-wise"
        );
    }
}

async fn delete_is_idempotent(store: &dyn ObjectStore, base: &str) {
    let key = format!("{base}delete/obj");
    store
        .put(&key, Bytes::from_static(b"to delete"))
        .await
        .expect("put");
    store
        .delete(&key)
        .await
        .expect("delete of an existing object");
    assert_eq!(
        store.head(&key).await.expect("head after delete"),
        None,
        "head after delete is None"
    );
    assert_not_found(store.get(&key).await, &key, "get after delete");
    store
        .delete(&key)
        .await
        .expect("second delete of the same key is Ok");
    store
        .delete(&format!("{base}delete/never-written"))
        .await
        .expect("delete of a never-written key is Ok");
    assert!(
        store
            .list(&format!("{base}delete/"))
            .await
            .expect("list after delete")
            .is_empty(),
        "a deleted object is not listed"
    );

    // Once deleted, the key is free again.
    store
        .put(&key, Bytes::from_static(b"again"))
        .await
        .expect("put after delete");
    assert_eq!(
        store.get(&key).await.expect("get after re-put"),
        Bytes::from_static(b"again")
    );
}

async fn delete_many(store: &dyn ObjectStore, base: &str) {
    let dir = format!("{base}delete-many/");
    let keys: Vec<String> = (0..12).map(|i| format!("{dir}obj-{i:02}")).collect();
    for key in &keys {
        store
            .put(key, Bytes::from_static(b"doomed"))
            .await
            .expect("put for delete_many");
    }
    let survivor = format!("{dir}survivor");
    store
        .put(&survivor, Bytes::from_static(b"kept"))
        .await
        .expect("put of the survivor");

    store
        .delete_many(&[])
        .await
        .expect("delete_many of no keys is Ok");

    // Every other key, then the rest together with a duplicate and a never-written key.
    let first: Vec<String> = keys.iter().step_by(2).cloned().collect();
    let rest: Vec<String> = keys.iter().skip(1).step_by(2).cloned().collect();
    store
        .delete_many(&first)
        .await
        .expect("delete_many of existing keys");
    for key in &first {
        assert_eq!(
            store.head(key).await.expect("head after delete_many"),
            None,
            "delete_many removed {key}"
        );
    }
    let mut second = rest.clone();
    second.push(rest[0].clone());
    second.push(format!("{dir}never-written"));
    second.push(first[0].clone());
    store
        .delete_many(&second)
        .await
        .expect("delete_many with duplicate, missing and already deleted keys");
    assert_eq!(
        store.list(&dir).await.expect("list after delete_many"),
        vec![ObjectMeta {
            key: survivor.clone(),
            size: 4
        }],
        "delete_many removes exactly the listed keys"
    );
    store
        .delete_many(std::slice::from_ref(&survivor))
        .await
        .expect("delete_many of one key");
    assert!(
        store
            .list(&dir)
            .await
            .expect("list after the last delete_many")
            .is_empty(),
        "delete_many of one key removes it"
    );
}

async fn concurrent_puts_of_one_key(store: &dyn ObjectStore, base: &str) {
    const WRITERS: u8 = 16;
    let key = format!("{base}concurrent/one-key/obj");
    let payload = |i: u8| Bytes::from(vec![i; 64 * 1024]);
    let results = join_all((0..WRITERS).map(|i| {
        let key = key.clone();
        async move { (i, store.put(&key, payload(i)).await) }
    }))
    .await;

    let mut winners = Vec::new();
    for (i, result) in results {
        match result {
            Ok(()) => winners.push(i),
            Err(ObjectStoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!(
                "concurrent put {i} of {key} failed with {e:?} instead of Ok or AlreadyExists"
            ),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {WRITERS} concurrent puts of one key succeeds, got {winners:?}"
    );
    assert_eq!(
        store.get(&key).await.expect("get after race"),
        payload(winners[0]),
        "the stored data is the winner's, whole"
    );
    assert_eq!(
        store
            .list(&format!("{base}concurrent/one-key/"))
            .await
            .expect("list after race")
            .len(),
        1,
        "a put race leaves one object and nothing else visible"
    );
}

async fn concurrent_puts_in_new_directory(store: &dyn ObjectStore, base: &str) {
    const WRITERS: usize = 16;
    let dir = format!("{base}concurrent/fresh/dir/");
    let results = join_all((0..WRITERS).map(|i| {
        let key = format!("{dir}obj-{i:02}");
        async move { store.put(&key, Bytes::from(vec![i as u8; i + 1])).await }
    }))
    .await;
    for (i, result) in results.into_iter().enumerate() {
        result.unwrap_or_else(|e| panic!("concurrent put of distinct key {i} failed: {e:?}"));
    }
    let listed = store.list(&dir).await.expect("list after concurrent puts");
    let expected: Vec<ObjectMeta> = (0..WRITERS)
        .map(|i| ObjectMeta {
            key: format!("{dir}obj-{i:02}"),
            size: i as u64 + 1,
        })
        .collect();
    assert_eq!(
        listed, expected,
        "concurrent puts of distinct keys all land"
    );
}

async fn large_object(store: &dyn ObjectStore, base: &str) {
    const SIZE: usize = 8 * 1024 * 1024;
    let key = format!("{base}large/8mib");
    // A cheap pseudo-random pattern, so misplaced or repeated blocks are detected.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let data: Bytes = (0..SIZE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into();
    store.put(&key, data.clone()).await.expect("put of 8 MiB");
    assert_eq!(
        store
            .head(&key)
            .await
            .expect("head of large object")
            .map(|m| m.size),
        Some(SIZE as u64),
        "head reports the large object's size"
    );
    let got = store.get(&key).await.expect("get of 8 MiB");
    assert!(got == data, "get returns the 8 MiB object intact");
    let range = (3 * 1024 * 1024 + 7) as u64..(5 * 1024 * 1024 + 13) as u64;
    let got = store
        .get_range(&key, range.clone())
        .await
        .expect("get_range inside large object");
    assert!(
        got == data.slice(range.start as usize..range.end as usize),
        "get_range {range:?} of the large object returns those bytes"
    );
    let tail = store
        .get_range(&key, (SIZE - 1) as u64..SIZE as u64)
        .await
        .expect("get_range of the last byte");
    assert_eq!(tail, data.slice(SIZE - 1..), "get_range of the last byte");
}

//! The behaviour every [`MetaStore`] backend must show, as one executable suite.
//!
//! It is compiled into the library (not only under `cfg(test)`) so that each backend's tests,
//! integration tests and a real DynamoDB table can all run the very same checks. The suite
//! touches only partition keys under `pk_prefix` followed by a fresh random run id, so it can run
//! repeatedly and concurrently on a shared table; it deletes what it wrote when it passes.
//!
//! Failures panic with a message naming the check, like any test assertion.

use std::ops::Bound;

use bytes::Bytes;
use futures::future::join_all;

use super::{Condition, Direction, Item, ItemKey, MetaStore, MetaStoreError, Query, WriteOp};

/// Runs every check against `store`, using only partition keys that start with `pk_prefix`.
///
/// `pk_prefix` is used verbatim; the suite appends a random run id and a name per check.
pub async fn run_all(store: &dyn MetaStore, pk_prefix: &str) {
    let base = format!("{pk_prefix}{}/", uuid::Uuid::new_v4().simple());
    let mut used_pks = Vec::new();
    let mut pk = |name: &str| {
        let pk = format!("{base}{name}");
        used_pks.push(pk.clone());
        pk
    };

    get_missing(store, &pk("missing")).await;
    put_increments_version(store, &pk("versions")).await;
    put_conditions(store, &pk("put-conditions")).await;
    delete_conditions(store, &pk("delete-conditions")).await;
    check_conditions(store, &pk("check-conditions")).await;
    failing_batch_writes_nothing(store, &pk("atomic")).await;
    multi_op_batch_applies_together(store, &pk("multi-op")).await;
    invalid_batches(store, &pk("invalid")).await;
    query_ranges(store, &pk("q"), &[pk("p"), pk("q2"), pk("q/")]).await;
    query_byte_order(store, &pk("byte-order")).await;
    concurrent_cas_increments(store, &pk("counter")).await;

    // Clean up, which also checks that deletes empty every partition key.
    for pk in used_pks {
        let items = store
            .query(Query::all(&pk))
            .await
            .expect("query for cleanup");
        for chunk in items.chunks(store.max_batch_ops().clamp(1, 25)) {
            let ops = chunk
                .iter()
                .map(|item| delete(&item.key, Condition::None))
                .collect();
            store.write(ops).await.expect("delete during cleanup");
        }
        assert!(
            store
                .query(Query::all(&pk))
                .await
                .expect("query after cleanup")
                .is_empty(),
            "deleting every item leaves partition key {pk} empty"
        );
    }
}

fn put(key: &ItemKey, value: &str, condition: Condition) -> WriteOp {
    WriteOp::Put {
        key: key.clone(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        condition,
    }
}

fn delete(key: &ItemKey, condition: Condition) -> WriteOp {
    WriteOp::Delete {
        key: key.clone(),
        condition,
    }
}

fn check(key: &ItemKey, condition: Condition) -> WriteOp {
    WriteOp::Check {
        key: key.clone(),
        condition,
    }
}

async fn get(store: &dyn MetaStore, key: &ItemKey) -> Option<Item> {
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key:?}: {e}"))
}

/// Asserts the stored value and version of `key`.
async fn assert_item(store: &dyn MetaStore, key: &ItemKey, value: &str, version: u64, what: &str) {
    let expected = Item {
        key: key.clone(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        version,
    };
    assert_eq!(get(store, key).await, Some(expected), "{what}");
}

async fn assert_absent(store: &dyn MetaStore, key: &ItemKey, what: &str) {
    assert_eq!(get(store, key).await, None, "{what}");
}

async fn write_ok(store: &dyn MetaStore, ops: Vec<WriteOp>, what: &str) {
    if let Err(e) = store.write(ops).await {
        panic!("{what}: write must succeed, got {e:?}");
    }
}

async fn write_fails(
    store: &dyn MetaStore,
    ops: Vec<WriteOp>,
    index: usize,
    key: &ItemKey,
    what: &str,
) {
    match store.write(ops).await {
        Err(MetaStoreError::ConditionFailed { index: i, key: k }) => {
            assert_eq!(
                (i, &k),
                (index, key),
                "{what}: ConditionFailed names the first failing operation"
            )
        }
        other => panic!("{what}: write must fail with ConditionFailed, got {other:?}"),
    }
}

async fn get_missing(store: &dyn MetaStore, pk: &str) {
    assert_absent(
        store,
        &ItemKey::new(pk, "never-written"),
        "get of a missing item is None",
    )
    .await;
    assert!(
        store
            .query(Query::all(pk))
            .await
            .expect("query of an empty partition key")
            .is_empty(),
        "an unused partition key has no items"
    );
}

async fn put_increments_version(store: &dyn MetaStore, pk: &str) {
    let key = ItemKey::new(pk, "item");
    write_ok(store, vec![put(&key, "one", Condition::None)], "first put").await;
    assert_item(store, &key, "one", 1, "the first put creates version 1").await;
    write_ok(store, vec![put(&key, "two", Condition::None)], "second put").await;
    assert_item(
        store,
        &key,
        "two",
        2,
        "a second put replaces the value with version 2",
    )
    .await;
    write_ok(
        store,
        vec![put(&key, "", Condition::None)],
        "put of an empty value",
    )
    .await;
    assert_item(
        store,
        &key,
        "",
        3,
        "an empty value is stored and bumps the version",
    )
    .await;

    // Delete then put starts over at version 1.
    write_ok(store, vec![delete(&key, Condition::None)], "delete").await;
    assert_absent(store, &key, "a deleted item is gone").await;
    write_ok(
        store,
        vec![put(&key, "again", Condition::Absent)],
        "put after delete",
    )
    .await;
    assert_item(
        store,
        &key,
        "again",
        1,
        "a re-created item starts at version 1",
    )
    .await;
}

async fn put_conditions(store: &dyn MetaStore, pk: &str) {
    let key = ItemKey::new(pk, "item");

    // On a missing item.
    write_fails(
        store,
        vec![put(&key, "x", Condition::Exists)],
        0,
        &key,
        "Put/Exists on a missing item",
    )
    .await;
    write_fails(
        store,
        vec![put(&key, "x", Condition::Version(1))],
        0,
        &key,
        "Put/Version on a missing item",
    )
    .await;
    assert_absent(store, &key, "failed puts create nothing").await;
    write_ok(
        store,
        vec![put(&key, "v1", Condition::Absent)],
        "Put/Absent on a missing item",
    )
    .await;
    assert_item(store, &key, "v1", 1, "Put/Absent created the item").await;

    // On an existing item at version 1.
    write_fails(
        store,
        vec![put(&key, "x", Condition::Absent)],
        0,
        &key,
        "Put/Absent on an existing item",
    )
    .await;
    write_fails(
        store,
        vec![put(&key, "x", Condition::Version(2))],
        0,
        &key,
        "Put/Version too new",
    )
    .await;
    write_fails(
        store,
        vec![put(&key, "x", Condition::Version(0))],
        0,
        &key,
        "Put/Version too old",
    )
    .await;
    assert_item(store, &key, "v1", 1, "failed puts change nothing").await;
    write_ok(
        store,
        vec![put(&key, "v2", Condition::Version(1))],
        "Put/Version exact",
    )
    .await;
    assert_item(store, &key, "v2", 2, "Put/Version applied").await;
    write_ok(
        store,
        vec![put(&key, "v3", Condition::Exists)],
        "Put/Exists on an existing item",
    )
    .await;
    assert_item(store, &key, "v3", 3, "Put/Exists applied").await;
    write_ok(
        store,
        vec![put(&key, "v4", Condition::None)],
        "Put/None on an existing item",
    )
    .await;
    assert_item(store, &key, "v4", 4, "Put/None applied").await;
    write_fails(
        store,
        vec![put(&key, "x", Condition::Version(3))],
        0,
        &key,
        "Put/Version of a stale version",
    )
    .await;
    assert_item(
        store,
        &key,
        "v4",
        4,
        "a stale compare-and-set changes nothing",
    )
    .await;
}

async fn delete_conditions(store: &dyn MetaStore, pk: &str) {
    let key = ItemKey::new(pk, "item");

    // On a missing item.
    write_ok(
        store,
        vec![delete(&key, Condition::None)],
        "Delete/None of a missing item",
    )
    .await;
    write_ok(
        store,
        vec![delete(&key, Condition::Absent)],
        "Delete/Absent of a missing item",
    )
    .await;
    write_fails(
        store,
        vec![delete(&key, Condition::Exists)],
        0,
        &key,
        "Delete/Exists of a missing item",
    )
    .await;
    write_fails(
        store,
        vec![delete(&key, Condition::Version(1))],
        0,
        &key,
        "Delete/Version of a missing item",
    )
    .await;
    assert_absent(store, &key, "deletes of a missing item create nothing").await;

    // On an existing item at version 2.
    write_ok(store, vec![put(&key, "v1", Condition::None)], "setup put").await;
    write_ok(store, vec![put(&key, "v2", Condition::None)], "setup put").await;
    write_fails(
        store,
        vec![delete(&key, Condition::Absent)],
        0,
        &key,
        "Delete/Absent of an existing item",
    )
    .await;
    write_fails(
        store,
        vec![delete(&key, Condition::Version(1))],
        0,
        &key,
        "Delete/Version stale",
    )
    .await;
    write_fails(
        store,
        vec![delete(&key, Condition::Version(3))],
        0,
        &key,
        "Delete/Version too new",
    )
    .await;
    assert_item(store, &key, "v2", 2, "failed deletes leave the item").await;
    write_ok(
        store,
        vec![delete(&key, Condition::Version(2))],
        "Delete/Version exact",
    )
    .await;
    assert_absent(store, &key, "Delete/Version removed the item").await;

    write_ok(store, vec![put(&key, "v1", Condition::None)], "setup put").await;
    write_ok(
        store,
        vec![delete(&key, Condition::Exists)],
        "Delete/Exists of an existing item",
    )
    .await;
    assert_absent(store, &key, "Delete/Exists removed the item").await;

    write_ok(store, vec![put(&key, "v1", Condition::None)], "setup put").await;
    write_ok(
        store,
        vec![delete(&key, Condition::None)],
        "Delete/None of an existing item",
    )
    .await;
    assert_absent(store, &key, "Delete/None removed the item").await;
}

async fn check_conditions(store: &dyn MetaStore, pk: &str) {
    let key = ItemKey::new(pk, "lease");

    // On a missing item.
    write_ok(
        store,
        vec![check(&key, Condition::None)],
        "Check/None of a missing item",
    )
    .await;
    write_ok(
        store,
        vec![check(&key, Condition::Absent)],
        "Check/Absent of a missing item",
    )
    .await;
    write_fails(
        store,
        vec![check(&key, Condition::Exists)],
        0,
        &key,
        "Check/Exists of a missing item",
    )
    .await;
    write_fails(
        store,
        vec![check(&key, Condition::Version(1))],
        0,
        &key,
        "Check/Version of a missing item",
    )
    .await;
    assert_absent(store, &key, "checks create nothing").await;

    // On an existing item at version 1.
    write_ok(
        store,
        vec![put(&key, "holder", Condition::Absent)],
        "setup put",
    )
    .await;
    write_ok(
        store,
        vec![check(&key, Condition::None)],
        "Check/None of an existing item",
    )
    .await;
    write_ok(
        store,
        vec![check(&key, Condition::Exists)],
        "Check/Exists of an existing item",
    )
    .await;
    write_ok(
        store,
        vec![check(&key, Condition::Version(1))],
        "Check/Version exact",
    )
    .await;
    write_fails(
        store,
        vec![check(&key, Condition::Absent)],
        0,
        &key,
        "Check/Absent of an existing item",
    )
    .await;
    write_fails(
        store,
        vec![check(&key, Condition::Version(2))],
        0,
        &key,
        "Check/Version wrong",
    )
    .await;
    assert_item(
        store,
        &key,
        "holder",
        1,
        "checks write nothing, not even a version bump",
    )
    .await;

    // Fencing: a write guarded by a Check of a lease applies only while the lease holds.
    let data = ItemKey::new(pk, "data");
    write_ok(
        store,
        vec![
            check(&key, Condition::Version(1)),
            put(&data, "fenced-1", Condition::None),
        ],
        "a put fenced by a current lease",
    )
    .await;
    assert_item(store, &data, "fenced-1", 1, "the fenced put applied").await;
    write_ok(
        store,
        vec![put(&key, "new-holder", Condition::Version(1))],
        "lease taken over",
    )
    .await;
    write_fails(
        store,
        vec![
            check(&key, Condition::Version(1)),
            put(&data, "fenced-2", Condition::None),
        ],
        0,
        &key,
        "a put fenced by a stale lease",
    )
    .await;
    assert_item(
        store,
        &data,
        "fenced-1",
        1,
        "a stale lease holder's put is fenced off",
    )
    .await;
}

async fn failing_batch_writes_nothing(store: &dyn MetaStore, pk: &str) {
    let (a, b, c) = (
        ItemKey::new(pk, "a"),
        ItemKey::new(pk, "b"),
        ItemKey::new(pk, "c"),
    );
    write_fails(
        store,
        vec![
            put(&a, "a", Condition::Absent),
            put(&b, "b", Condition::Absent),
            put(&c, "c", Condition::Version(7)),
        ],
        2,
        &c,
        "a batch whose last condition fails",
    )
    .await;
    for key in [&a, &b, &c] {
        assert_absent(store, key, "a failed batch writes none of its operations").await;
    }

    // With existing items: neither the puts nor the delete of a failing batch apply.
    write_ok(
        store,
        vec![
            put(&a, "a1", Condition::None),
            put(&b, "b1", Condition::None),
        ],
        "setup",
    )
    .await;
    write_fails(
        store,
        vec![
            put(&a, "a2", Condition::Version(1)),
            delete(&b, Condition::Exists),
            check(&c, Condition::Exists),
            put(&ItemKey::new(pk, "d"), "d", Condition::Version(5)),
        ],
        2,
        &c,
        "a batch with two failing conditions reports the first",
    )
    .await;
    assert_item(store, &a, "a1", 1, "a failed batch does not update").await;
    assert_item(store, &b, "b1", 1, "a failed batch does not delete").await;
    assert_absent(
        store,
        &ItemKey::new(pk, "d"),
        "a failed batch does not create",
    )
    .await;
}

async fn multi_op_batch_applies_together(store: &dyn MetaStore, pk: &str) {
    let (a, b, c, d) = (
        ItemKey::new(pk, "a"),
        ItemKey::new(pk, "b"),
        ItemKey::new(pk, "c"),
        ItemKey::new(pk, "d"),
    );
    write_ok(
        store,
        vec![
            put(&a, "a1", Condition::None),
            put(&b, "b1", Condition::None),
        ],
        "setup",
    )
    .await;
    write_ok(
        store,
        vec![
            put(&a, "a2", Condition::Version(1)),
            delete(&b, Condition::Version(1)),
            put(&c, "c1", Condition::Absent),
            check(&d, Condition::Absent),
        ],
        "a batch of put, delete, create and check",
    )
    .await;
    assert_item(store, &a, "a2", 2, "the batch's update applied").await;
    assert_absent(store, &b, "the batch's delete applied").await;
    assert_item(store, &c, "c1", 1, "the batch's create applied").await;
    assert_absent(store, &d, "the batch's check wrote nothing").await;

    // Keys in other partition keys are distinct keys, even with equal sort keys.
    let other = ItemKey::new(format!("{pk}-other"), "a");
    write_ok(
        store,
        vec![
            put(&a, "a3", Condition::Version(2)),
            put(&other, "o", Condition::Absent),
        ],
        "one sort key in two partition keys",
    )
    .await;
    assert_item(store, &other, "o", 1, "the other partition key's item").await;
    write_ok(store, vec![delete(&other, Condition::None)], "cleanup").await;

    write_ok(store, Vec::new(), "an empty batch is a no-op").await;
}

async fn invalid_batches(store: &dyn MetaStore, pk: &str) {
    let (a, b) = (ItemKey::new(pk, "a"), ItemKey::new(pk, "b"));
    let duplicates = [
        vec![
            put(&a, "1", Condition::None),
            put(&b, "2", Condition::None),
            put(&a, "3", Condition::None),
        ],
        vec![put(&a, "1", Condition::None), check(&a, Condition::Absent)],
        vec![delete(&a, Condition::None), put(&a, "1", Condition::None)],
    ];
    for ops in duplicates {
        match store.write(ops).await {
            Err(MetaStoreError::InvalidBatch(_)) => {}
            other => {
                panic!("a batch naming one key twice must fail with InvalidBatch, got {other:?}")
            }
        }
        assert_absent(store, &a, "an invalid batch writes nothing").await;
        assert_absent(store, &b, "an invalid batch writes nothing").await;
    }

    // Backends with a small batch limit (DynamoDB: 100) must enforce it.
    let max = store.max_batch_ops();
    if max <= 1000 {
        let batch = |n: usize| {
            (0..n)
                .map(|i| {
                    put(
                        &ItemKey::new(pk, format!("bulk-{i:05}")),
                        "x",
                        Condition::None,
                    )
                })
                .collect()
        };
        match store.write(batch(max + 1)).await {
            Err(MetaStoreError::InvalidBatch(_)) => {}
            other => panic!(
                "a batch of max_batch_ops + 1 = {} must fail with InvalidBatch, got {other:?}",
                max + 1
            ),
        }
        assert!(
            store.query(Query::all(pk)).await.expect("query").is_empty(),
            "an oversized batch writes nothing"
        );
        write_ok(store, batch(max), "a batch of exactly max_batch_ops").await;
        assert_eq!(
            store.query(Query::all(pk)).await.expect("query").len(),
            max,
            "the full batch applied"
        );
    }
}

/// Sort keys of the query checks: `{:020}` numbers sort numerically.
const NUMBERS: [u64; 7] = [0, 5, 10, 15, 100, 1000, 12_345_678_901_234];

fn sk(n: u64) -> String {
    format!("{n:020}")
}

async fn query_ranges(store: &dyn MetaStore, pk: &str, other_pks: &[String]) {
    // Out of order, one per batch and with an update, so versions and values differ.
    for n in [1000, 5, 12_345_678_901_234, 0, 100, 15, 10] {
        write_ok(
            store,
            vec![put(
                &ItemKey::new(pk, sk(n)),
                &format!("value-{n}"),
                Condition::Absent,
            )],
            "query setup",
        )
        .await;
    }
    write_ok(
        store,
        vec![put(
            &ItemKey::new(pk, sk(10)),
            "value-10",
            Condition::Version(1),
        )],
        "query setup",
    )
    .await;
    // Neighbouring partition keys, including ones that share a string prefix with `pk`.
    for other in other_pks {
        write_ok(
            store,
            vec![
                put(&ItemKey::new(other, sk(7)), "other", Condition::None),
                put(&ItemKey::new(other, sk(10)), "other", Condition::None),
            ],
            "query setup in another partition key",
        )
        .await;
    }

    let expected = |ns: &[u64]| -> Vec<Item> {
        ns.iter()
            .map(|&n| Item {
                key: ItemKey::new(pk, sk(n)),
                value: Bytes::from(format!("value-{n}")),
                version: if n == 10 { 2 } else { 1 },
            })
            .collect()
    };
    let inc = |n: u64| Bound::Included(sk(n));
    let exc = |n: u64| Bound::Excluded(sk(n));
    let query = |start: Bound<String>,
                 end: Bound<String>,
                 direction: Direction,
                 limit: Option<usize>| Query {
        pk: pk.to_owned(),
        start,
        end,
        direction,
        limit,
    };
    use Bound::Unbounded;
    use Direction::{Backward, Forward};

    let all = NUMBERS;
    let rev: Vec<u64> = all.iter().rev().copied().collect();
    let cases: Vec<(&str, Query, Vec<u64>)> = vec![
        ("all, forward", Query::all(pk), all.to_vec()),
        (
            "all, backward",
            query(Unbounded, Unbounded, Backward, None),
            rev.clone(),
        ),
        (
            "limit 3, forward",
            query(Unbounded, Unbounded, Forward, Some(3)),
            vec![0, 5, 10],
        ),
        (
            "limit 3, backward",
            query(Unbounded, Unbounded, Backward, Some(3)),
            vec![12_345_678_901_234, 1000, 100],
        ),
        (
            "limit 0",
            query(Unbounded, Unbounded, Forward, Some(0)),
            vec![],
        ),
        (
            "limit above count",
            query(Unbounded, Unbounded, Forward, Some(100)),
            all.to_vec(),
        ),
        (
            "[5, 100]",
            query(inc(5), inc(100), Forward, None),
            vec![5, 10, 15, 100],
        ),
        (
            "(5, 100]",
            query(exc(5), inc(100), Forward, None),
            vec![10, 15, 100],
        ),
        (
            "[5, 100)",
            query(inc(5), exc(100), Forward, None),
            vec![5, 10, 15],
        ),
        (
            "(5, 100)",
            query(exc(5), exc(100), Forward, None),
            vec![10, 15],
        ),
        (
            "(5, 100), backward",
            query(exc(5), exc(100), Backward, None),
            vec![15, 10],
        ),
        (
            "[5, 100], backward, limit 2",
            query(inc(5), inc(100), Backward, Some(2)),
            vec![100, 15],
        ),
        (
            "[6, 99]: bounds between items",
            query(inc(6), inc(99), Forward, None),
            vec![10, 15],
        ),
        (
            "(6, 99): bounds between items",
            query(exc(6), exc(99), Forward, None),
            vec![10, 15],
        ),
        (
            "[15, ..)",
            query(inc(15), Unbounded, Forward, None),
            vec![15, 100, 1000, 12_345_678_901_234],
        ),
        (
            "(15, ..)",
            query(exc(15), Unbounded, Forward, None),
            vec![100, 1000, 12_345_678_901_234],
        ),
        (
            "(.., 15]",
            query(Unbounded, inc(15), Forward, None),
            vec![0, 5, 10, 15],
        ),
        (
            "(.., 15)",
            query(Unbounded, exc(15), Forward, None),
            vec![0, 5, 10],
        ),
        (
            "(.., 15), backward",
            query(Unbounded, exc(15), Backward, None),
            vec![10, 5, 0],
        ),
        ("[10, 10]", query(inc(10), inc(10), Forward, None), vec![10]),
        (
            "[10, 10), empty",
            query(inc(10), exc(10), Forward, None),
            vec![],
        ),
        (
            "(10, 10], empty",
            query(exc(10), inc(10), Backward, None),
            vec![],
        ),
        (
            "(10, 10), empty",
            query(exc(10), exc(10), Forward, None),
            vec![],
        ),
        (
            "[100, 5], start after end",
            query(inc(100), inc(5), Forward, None),
            vec![],
        ),
        (
            "(100, 5), start after end",
            query(exc(100), exc(5), Backward, None),
            vec![],
        ),
        (
            "above every item",
            query(exc(12_345_678_901_234), Unbounded, Forward, None),
            vec![],
        ),
        (
            "below every item",
            query(Unbounded, exc(0), Backward, None),
            vec![],
        ),
        // The index lookup: the first item whose sort key is >= X.
        (
            "first >= 7",
            query(inc(7), Unbounded, Forward, Some(1)),
            vec![10],
        ),
        (
            "first >= 10",
            query(inc(10), Unbounded, Forward, Some(1)),
            vec![10],
        ),
        (
            "first >= 0",
            query(inc(0), Unbounded, Forward, Some(1)),
            vec![0],
        ),
        (
            "first >= 10^15",
            query(inc(1_000_000_000_000_000), Unbounded, Forward, Some(1)),
            vec![],
        ),
        // And its mirror: the last item whose sort key is <= X.
        (
            "last <= 99",
            query(Unbounded, inc(99), Backward, Some(1)),
            vec![15],
        ),
        (
            "last <= 100",
            query(Unbounded, inc(100), Backward, Some(1)),
            vec![100],
        ),
    ];
    for (what, q, ns) in cases {
        let got = store
            .query(q.clone())
            .await
            .unwrap_or_else(|e| panic!("query {what}: {e}"));
        assert_eq!(got, expected(&ns), "query {what} ({q:?})");
    }
}

async fn query_byte_order(store: &dyn MetaStore, pk: &str) {
    // Sort keys compare byte-wise (UTF-8), not by locale or length.
    let sks = ["b", "aa", "é", "Z", "a", "a b", "ab", "~", "10", "9"];
    let ops = sks
        .iter()
        .map(|s| put(&ItemKey::new(pk, *s), s, Condition::Absent))
        .collect();
    write_ok(store, ops, "byte-order setup").await;
    let mut expected: Vec<&str> = sks.to_vec();
    expected.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let got: Vec<String> = store
        .query(Query::all(pk))
        .await
        .expect("query")
        .into_iter()
        .map(|i| i.key.sk)
        .collect();
    assert_eq!(got, expected, "sort keys come back in byte-wise order");
}

async fn concurrent_cas_increments(store: &dyn MetaStore, pk: &str) {
    const WRITERS: u64 = 16;
    const MAX_ATTEMPTS: usize = 10_000;
    let key = ItemKey::new(pk, "counter");
    write_ok(
        store,
        vec![put(&key, "0", Condition::Absent)],
        "counter setup",
    )
    .await;

    let increment = |writer: u64| {
        let key = key.clone();
        async move {
            for _ in 0..MAX_ATTEMPTS {
                let current = get(store, &key).await.expect("the counter exists");
                let n: u64 = std::str::from_utf8(&current.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("counter value {:?} is not a number", current.value));
                match store
                    .write(vec![put(
                        &key,
                        &(n + 1).to_string(),
                        Condition::Version(current.version),
                    )])
                    .await
                {
                    Ok(()) => return,
                    Err(MetaStoreError::ConditionFailed { .. }) => continue,
                    Err(e) => panic!("writer {writer}: compare-and-set failed with {e:?}"),
                }
            }
            panic!("writer {writer}: no compare-and-set succeeded in {MAX_ATTEMPTS} attempts");
        }
    };
    join_all((0..WRITERS).map(increment)).await;
    assert_item(
        store,
        &key,
        &WRITERS.to_string(),
        WRITERS + 1,
        "16 concurrent CAS increments count to exactly 16",
    )
    .await;
}

//! Every metadata-store backend that needs no external service passes the shared conformance
//! suite, and the redb backend keeps committed writes across a reopen.

use async_trait::async_trait;
use bytes::Bytes;
use kafscale_shared::meta_store::{
    Condition, Item, ItemKey, MemoryMetaStore, MetaStore, MetaStoreError, Query, RedbMetaStore,
    WriteOp, conformance,
};

#[tokio::test]
async fn memory_meta_store_conforms() {
    let store = MemoryMetaStore::new();
    conformance::run_all(&store, "conformance/").await;
    // The suite cleans up after itself, and a second run on the same store passes too.
    conformance::run_all(&store, "conformance/").await;
}

/// A backend with DynamoDB's batch limit, so the suite's batch-limit checks run too.
#[derive(Debug, Default)]
struct LimitedBatches(MemoryMetaStore);

#[async_trait]
impl MetaStore for LimitedBatches {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, MetaStoreError> {
        self.0.get(key).await
    }

    async fn query(&self, query: Query) -> Result<Vec<Item>, MetaStoreError> {
        self.0.query(query).await
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
        if ops.len() > self.max_batch_ops() {
            return Err(MetaStoreError::InvalidBatch(format!(
                "{} operations",
                ops.len()
            )));
        }
        self.0.write(ops).await
    }

    fn max_batch_ops(&self) -> usize {
        100
    }
}

#[tokio::test]
async fn batch_limited_meta_store_conforms() {
    conformance::run_all(&LimitedBatches::default(), "limited/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_meta_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbMetaStore::open(&dir.path().join("meta.redb")).unwrap();
    conformance::run_all(&store, "conformance/").await;
    conformance::run_all(&store, "").await;
}

#[tokio::test]
async fn redb_meta_store_conforms_on_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbMetaStore::open(&dir.path().join("meta.redb")).unwrap();
    conformance::run_all(&store, "single/").await;
}

fn put(pk: &str, sk: &str, value: &str, condition: Condition) -> WriteOp {
    WriteOp::Put {
        key: ItemKey::new(pk, sk),
        value: Bytes::copy_from_slice(value.as_bytes()),
        condition,
    }
}

#[tokio::test]
async fn redb_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    {
        let store = RedbMetaStore::open(&path).unwrap();
        store
            .write(vec![
                put("topics", "orders", "v1", Condition::Absent),
                put("topics", "payments", "p1", Condition::Absent),
                put("leases", "partition-0", "broker-a", Condition::Absent),
            ])
            .await
            .unwrap();
        store
            .write(vec![put("topics", "orders", "v2", Condition::Version(1))])
            .await
            .unwrap();
        store
            .write(vec![WriteOp::Delete {
                key: ItemKey::new("topics", "payments"),
                condition: Condition::Exists,
            }])
            .await
            .unwrap();
        // Dropping the store closes the database file.
    }

    let store = RedbMetaStore::open(&path).unwrap();
    let orders = store
        .get(&ItemKey::new("topics", "orders"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (orders.value, orders.version),
        (Bytes::from_static(b"v2"), 2)
    );
    assert_eq!(
        store
            .get(&ItemKey::new("topics", "payments"))
            .await
            .unwrap(),
        None
    );
    let leases = store.query(Query::all("leases")).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(
        (leases[0].value.as_ref(), leases[0].version),
        (&b"broker-a"[..], 1)
    );

    // Versions keep counting from where they were, so compare-and-set works across restarts.
    store
        .write(vec![put("topics", "orders", "v3", Condition::Version(2))])
        .await
        .unwrap();
    let orders = store
        .get(&ItemKey::new("topics", "orders"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(orders.version, 3);
}

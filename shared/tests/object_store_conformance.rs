//! Every object-store backend that needs no external service passes the shared conformance suite.

use std::sync::Arc;

use kafscale_shared::object_store::{
    BlockCache, LocalFsObjectStore, MemoryObjectStore, ObjectStore, conformance,
};

#[tokio::test]
async fn memory_object_store_conforms() {
    let store = MemoryObjectStore::new();
    conformance::run_all(&store, "conformance/").await;
    // The suite cleans up after itself, and a second run on the same store passes too.
    conformance::run_all(&store, "conformance/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_fs_object_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalFsObjectStore::new(dir.path().join("objects")).unwrap();
    conformance::run_all(&store, "conformance/").await;
    conformance::run_all(&store, "").await;
    // Nothing is left behind, not even temp files.
    assert!(
        kafscale_shared::object_store::ObjectStore::list(&store, "")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .remove_stale_temp_files(std::time::Duration::ZERO)
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn local_fs_object_store_conforms_on_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalFsObjectStore::new(dir.path()).unwrap();
    conformance::run_all(&store, "single/").await;
}

/// The block cache is a transparent wrapper: with blocks far smaller than the suite's objects
/// (ranges span several blocks), with write-through and without, and with a cache too small to
/// hold anything.
#[tokio::test]
async fn block_cache_conforms() {
    for (block_bytes, capacity, write_through) in [
        (61, 1 << 20, true),
        (61, 1 << 20, false),
        (4099, 0, false),
        (1 << 20, 1 << 30, true),
    ] {
        let inner: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
        let store = BlockCache::new(inner, block_bytes, capacity, write_through);
        conformance::run_all(&store, "conformance/").await;
    }
}

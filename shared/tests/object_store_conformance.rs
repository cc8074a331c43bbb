//! Every object-store backend that needs no external service passes the shared conformance suite.

use kafscale_shared::object_store::{LocalFsObjectStore, MemoryObjectStore, conformance};

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

use std::collections::BTreeMap;

use bytes::Bytes;
use kafscale_shared::catalog::now_ms;
use kafscale_shared::keys::new_segment_key;
use kafscale_shared::meta_store::{MemoryMetaStore, MetaStore};
use kafscale_shared::object_store::MemoryObjectStore;
use kafscale_shared::sequencer::{
    BatchOutcome, CommitBatch, CommitRequest, DeleteRecordsRequest, Sequencer, SequencerError,
};
use kafscale_shared::watermarks::Watermarks;

use super::*;
use crate::{Indexer, IndexerConfig};

const MINUTE: i64 = 60_000;
const MAX_AGE: Duration = Duration::from_secs(600);
const GRACE: Duration = Duration::from_secs(300);

struct Fixture {
    catalog: Arc<Catalog>,
    objects: Arc<MemoryObjectStore>,
    indexer: Arc<Indexer>,
    gc: GarbageCollector,
    topic_id: Uuid,
}

async fn fixture(partitions: i32) -> Fixture {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let catalog = Arc::new(Catalog::new(store));
    let topic = catalog
        .create_topic("t", partitions, BTreeMap::new())
        .await
        .expect("create topic");
    let indexer = Indexer::start(
        catalog.clone(),
        Arc::new(Watermarks::new()),
        IndexerConfig {
            segment_commit_max_age: MAX_AGE,
            ..IndexerConfig::default()
        },
    )
    .await
    .expect("indexer");
    let objects = Arc::new(MemoryObjectStore::new());
    let gc = GarbageCollector::new(
        catalog.clone(),
        objects.clone(),
        GcConfig {
            grace: GRACE,
            segment_commit_max_age: MAX_AGE,
        },
    );
    Fixture {
        catalog,
        objects,
        indexer,
        gc,
        topic_id: topic.topic_id,
    }
}

fn batch(topic_id: Uuid, partition: i32, byte_start: u64) -> CommitBatch {
    CommitBatch {
        topic_id,
        partition,
        byte_start,
        byte_len: 100,
        offset_count: 10,
        record_count: 10,
        first_timestamp: 1,
        max_timestamp: 2,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    }
}

impl Fixture {
    /// Uploads and commits a segment created now with 10 records for each of `partitions`.
    async fn segment(&self, partitions: &[i32]) -> String {
        let key = new_segment_key(now_ms());
        self.objects
            .put(&key, Bytes::from(vec![0u8; 100 * partitions.len()]))
            .await
            .expect("put");
        let batches = partitions
            .iter()
            .enumerate()
            .map(|(i, p)| batch(self.topic_id, *p, 100 * i as u64))
            .collect();
        let response = self
            .indexer
            .commit(CommitRequest {
                segment_key: key.clone(),
                shard: 0,
                segment_size: 100 * partitions.len() as u64,
                batches,
            })
            .await
            .expect("commit");
        assert!(
            response
                .outcomes
                .iter()
                .all(|o| matches!(o, BatchOutcome::Appended { .. }))
        );
        key
    }

    async fn delete_records(&self, partition: i32, offset: i64) {
        self.indexer
            .delete_records(DeleteRecordsRequest {
                shard: 0,
                topic_id: self.topic_id,
                partition,
                offset,
            })
            .await
            .expect("delete records");
    }

    async fn exists(&self, key: &str) -> bool {
        self.objects.head(key).await.expect("head").is_some()
    }

    async fn records_of(&self, key: &str) -> usize {
        self.catalog
            .segment_commits_from(Bound::Unbounded, 10_000)
            .await
            .expect("records")
            .iter()
            .filter(|(sk, _)| catalog::segment_of_commit_sk(sk) == key)
            .count()
    }
}

/// A time at which segments created now are past the commit horizon by `extra_ms`.
fn past_horizon(extra_ms: i64) -> i64 {
    now_ms() + MAX_AGE.as_millis() as i64 + extra_ms
}

#[tokio::test]
async fn a_segment_goes_once_no_partition_references_it_and_its_grace_has_passed() {
    let f = fixture(2).await;
    let both = f.segment(&[0, 1]).await; // offsets 0..9 of both partitions
    let only_p1 = f.segment(&[1]).await; // offsets 10..19 of partition 1

    // Partition 0 forgets everything: `both` is still referenced by partition 1.
    f.delete_records(0, -1).await;
    let t = past_horizon(MINUTE);
    assert_eq!(f.gc.run_pass(t).await.unwrap().segments_waiting, 0);
    assert!(f.exists(&both).await);

    // Partition 1 forgets offsets below 10: `both` is unreferenced now, `only_p1` is not.
    f.delete_records(1, 10).await;
    let first = f.gc.run_pass(t).await.unwrap();
    assert_eq!((first.segments_waiting, first.segments_deleted), (1, 0));
    // A later pass inside the grace period keeps it.
    let early =
        f.gc.run_pass(t + GRACE.as_millis() as i64 - 1)
            .await
            .unwrap();
    assert_eq!((early.segments_waiting, early.segments_deleted), (1, 0));
    assert!(f.exists(&both).await);

    let done = f.gc.run_pass(t + GRACE.as_millis() as i64).await.unwrap();
    assert_eq!(done.segments_deleted, 1);
    assert_eq!(done.bytes_deleted, 200);
    assert_eq!(done.commit_records_deleted, 1);
    assert!(!f.exists(&both).await);
    assert_eq!(f.records_of(&both).await, 0);
    assert!(f.exists(&only_p1).await);
    assert_eq!(f.records_of(&only_p1).await, 1);
}

#[tokio::test]
async fn the_grace_period_counts_from_a_pass_and_a_single_pass_never_deletes() {
    let f = fixture(1).await;
    let key = f.segment(&[0]).await;
    f.delete_records(0, -1).await;
    // Even long past every horizon, the first pass that sees it only condemns it.
    let t = past_horizon(100 * MINUTE);
    let first = f.gc.run_pass(t).await.unwrap();
    assert_eq!((first.segments_waiting, first.segments_deleted), (1, 0));
    assert!(f.exists(&key).await);
    // A restarted collector (a new one) starts the grace period anew.
    let restarted =
        GarbageCollector::new(f.catalog.clone(), f.objects.clone(), f.gc.config.clone());
    let later = restarted
        .run_pass(t + GRACE.as_millis() as i64)
        .await
        .unwrap();
    assert_eq!(later.segments_deleted, 0);
    let done = restarted
        .run_pass(t + 2 * GRACE.as_millis() as i64)
        .await
        .unwrap();
    assert_eq!(done.segments_deleted, 1);
    assert!(!f.exists(&key).await);
}

#[tokio::test]
async fn young_segments_are_never_collected_even_when_unreferenced() {
    let f = fixture(1).await;
    let key = f.segment(&[0]).await;
    f.delete_records(0, -1).await;
    let t = now_ms() + MAX_AGE.as_millis() as i64 - MINUTE;
    for k in 0..3 {
        let r = f.gc.run_pass(t + k).await.unwrap();
        assert_eq!(
            r,
            GcReport {
                objects_listed: 1,
                commit_records_read: 1,
                ..GcReport::default()
            }
        );
    }
    assert!(f.exists(&key).await);
}

#[tokio::test]
async fn orphans_go_after_the_commit_horizon_and_the_grace_period() {
    let f = fixture(1).await;
    let committed = f.segment(&[0]).await;
    let orphan = new_segment_key(now_ms());
    f.objects
        .put(&orphan, Bytes::from_static(b"never committed"))
        .await
        .unwrap();
    let foreign = "segments/not-ours.bin".to_string();
    f.objects
        .put(&foreign, Bytes::from_static(b"x"))
        .await
        .unwrap();

    let t = past_horizon(0);
    let early =
        f.gc.run_pass(t + GRACE.as_millis() as i64 - 1)
            .await
            .unwrap();
    assert_eq!(early.orphans_deleted, 0);
    let r =
        f.gc.run_pass(t + GRACE.as_millis() as i64 + 1)
            .await
            .unwrap();
    assert_eq!((r.orphans_deleted, r.bytes_deleted), (1, 15));
    assert!(!f.exists(&orphan).await);
    assert!(f.exists(&committed).await, "referenced");
    assert!(
        f.exists(&foreign).await,
        "keys without a creation time are not touched"
    );
}

#[tokio::test]
async fn a_pass_cut_short_after_deleting_the_object_finishes_on_the_next() {
    let f = fixture(1).await;
    let key = f.segment(&[0]).await;
    f.delete_records(0, -1).await;
    let t = past_horizon(MINUTE);
    f.gc.run_pass(t).await.unwrap();
    // The crash: the object is gone, its commit record is not.
    f.objects.delete(&key).await.unwrap();
    let r = f.gc.run_pass(t + GRACE.as_millis() as i64).await.unwrap();
    assert_eq!((r.segments_deleted, r.commit_records_deleted), (0, 1));
    assert_eq!(f.records_of(&key).await, 0);
    let empty =
        f.gc.run_pass(t + 2 * GRACE.as_millis() as i64)
            .await
            .unwrap();
    assert_eq!(empty, GcReport::default());
}

#[tokio::test]
async fn a_deleted_topics_rows_are_removed_and_its_segments_collected() {
    let f = fixture(2).await;
    let key = f.segment(&[0, 1]).await;
    let producer = catalog::producer_key(f.topic_id, 0, 7);
    f.catalog
        .store()
        .write(vec![kafscale_shared::meta_store::WriteOp::Put {
            key: producer.clone(),
            value: Bytes::from_static(b"{}"),
            condition: kafscale_shared::meta_store::Condition::None,
        }])
        .await
        .unwrap();
    f.catalog.delete_topic("t").await.unwrap();

    let t = past_horizon(MINUTE);
    let first = f.gc.run_pass(t).await.unwrap();
    assert_eq!((first.topics_purged, first.segments_waiting), (1, 1));
    for pk in [
        catalog::partitions_pk(f.topic_id),
        catalog::index_pk(f.topic_id, 0),
        catalog::index_pk(f.topic_id, 1),
        catalog::producer_pk(f.topic_id, 0),
    ] {
        assert!(f.catalog.item_keys(&pk).await.unwrap().is_empty(), "{pk}");
    }
    let done = f.gc.run_pass(t + GRACE.as_millis() as i64).await.unwrap();
    assert_eq!((done.segments_deleted, done.topics_purged), (1, 0));
    assert!(!f.exists(&key).await);
    assert_eq!(f.records_of(&key).await, 0);
}

#[tokio::test]
async fn records_without_parts_keep_their_segments() {
    let f = fixture(1).await;
    let key = new_segment_key(now_ms());
    f.objects
        .put(&key, Bytes::from_static(b"old"))
        .await
        .unwrap();
    let record = SegmentCommitRecord {
        format: 1,
        size: 3,
        committed_at_ms: now_ms(),
        outcomes: Vec::new(),
        parts: None,
    };
    f.catalog
        .store()
        .write(vec![kafscale_shared::meta_store::WriteOp::Put {
            key: catalog::segment_commit_key(&key, 0),
            value: catalog::encode(&record),
            condition: kafscale_shared::meta_store::Condition::None,
        }])
        .await
        .unwrap();
    let t = past_horizon(100 * MINUTE);
    f.gc.run_pass(t).await.unwrap();
    f.gc.run_pass(t + GRACE.as_millis() as i64).await.unwrap();
    assert!(f.exists(&key).await);
}

#[tokio::test]
async fn an_expired_segment_is_refused_but_a_retry_of_a_landed_commit_is_answered() {
    let f = fixture(1).await;
    let old_key = new_segment_key(now_ms() - MAX_AGE.as_millis() as i64 - MINUTE);
    let request = CommitRequest {
        segment_key: old_key.clone(),
        shard: 0,
        segment_size: 100,
        batches: vec![batch(f.topic_id, 0, 0)],
    };
    let refused = f.indexer.commit(request).await;
    assert_eq!(refused, Err(SequencerError::SegmentExpired(old_key)));
    assert_eq!(
        f.catalog
            .partition(f.topic_id, 0)
            .await
            .unwrap()
            .unwrap()
            .0
            .next_offset,
        0
    );

    // A commit that landed is answered from its record even once the segment has expired
    // (a replica with no memory of it and a zero commit horizon).
    let key = f.segment(&[0]).await;
    f.indexer.release_all().await.unwrap();
    let strict = Indexer::start(
        f.catalog.clone(),
        Arc::new(Watermarks::new()),
        IndexerConfig {
            segment_commit_max_age: Duration::ZERO,
            ..IndexerConfig::default()
        },
    )
    .await
    .unwrap();
    let retry = strict
        .commit(CommitRequest {
            segment_key: key,
            shard: 0,
            segment_size: 100,
            batches: vec![batch(f.topic_id, 0, 0)],
        })
        .await
        .unwrap();
    assert_eq!(
        retry.outcomes,
        vec![BatchOutcome::Appended {
            base_offset: 0,
            log_start_offset: 0
        }]
    );
}

/// [`fixture`] with the indexer on the shard log (layout 2) and the cluster settings stored,
/// as every real cluster has them.
async fn log_fixture(partitions: i32) -> Fixture {
    let mut f = fixture(partitions).await;
    kafscale_shared::shards::load_or_init_cluster(&f.catalog, 1, 2)
        .await
        .expect("cluster");
    f.indexer.release_all().await.expect("release");
    f.indexer = Indexer::start(
        f.catalog.clone(),
        Arc::new(Watermarks::new()),
        IndexerConfig {
            segment_commit_max_age: MAX_AGE,
            shard_log: true,
            ..IndexerConfig::default()
        },
    )
    .await
    .expect("indexer");
    f
}

#[tokio::test]
async fn a_segment_named_by_an_unfolded_log_item_is_kept_and_goes_with_its_item_once_folded() {
    let f = log_fixture(1).await;
    let key = f.segment(&[0]).await;
    let far = past_horizon(100 * MINUTE);
    // No partition references it any more, but its log item is not folded yet: never an
    // orphan, never condemned (deleting the item would leave a gap above the checkpoint).
    f.delete_records(0, -1).await;
    for pass in 0..3 {
        let r =
            f.gc.run_pass(far + pass * GRACE.as_millis() as i64)
                .await
                .unwrap();
        assert_eq!((r.orphans_deleted, r.segments_waiting), (0, 0), "{r:?}");
    }
    assert!(f.exists(&key).await);
    // Folded: the item stays in the log as the segment's commit record (the fold writes none).
    let folded = f.indexer.fold_shard(0).await.expect("fold");
    assert_eq!(folded.items, 1);
    let records = f
        .catalog
        .segment_commits_in(&catalog::shard_segment_commits_pk(0), Bound::Unbounded, 10)
        .await
        .expect("records");
    assert!(records.is_empty());
    let store = f.catalog.store();
    let logged = read_items(store.as_ref(), 0, Bound::Unbounded).await;
    assert_eq!(logged.expect("log").len(), 1);
    // Unreferenced and folded: it goes after the grace period, its log item with it.
    let first = f.gc.run_pass(far).await.unwrap();
    assert_eq!(first.segments_waiting, 1);
    let done = f.gc.run_pass(far + GRACE.as_millis() as i64).await.unwrap();
    assert_eq!((done.segments_deleted, done.commit_records_deleted), (1, 1));
    assert!(!f.exists(&key).await);
    let logged = read_items(store.as_ref(), 0, Bound::Unbounded).await;
    assert!(logged.expect("log").is_empty());
}

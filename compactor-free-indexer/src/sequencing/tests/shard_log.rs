//! Layouts 2 and 3: commits appended to the shard log (see `sequencing/log_commit.rs`). The
//! tests run on layout 3 (short items) unless they say otherwise.

use kafscale_shared::catalog::IndexEntry;
use kafscale_shared::shard_log::{ShardLogItem, shard_log_key, shard_log_pk};

use super::*;

fn log_config(owner: &str) -> IndexerConfig {
    IndexerConfig {
        owner_id: owner.into(),
        shard_log: true,
        ..IndexerConfig::default()
    }
}

pub(super) async fn log_indexer(
    catalog: &Arc<Catalog>,
    watermarks: &Arc<Watermarks>,
) -> Arc<Indexer> {
    Indexer::start(catalog.clone(), watermarks.clone(), log_config("a"))
        .await
        .expect("start")
}

pub(super) async fn setup_log(
    store: Arc<dyn MetaStore>,
    partitions: i32,
) -> (Arc<Catalog>, Arc<Watermarks>, Arc<Indexer>, Uuid) {
    setup_log_on(store, partitions, kafscale_shared::shards::LAYOUT_NEWEST).await
}

pub(super) async fn setup_log_on(
    store: Arc<dyn MetaStore>,
    partitions: i32,
    layout: u32,
) -> (Arc<Catalog>, Arc<Watermarks>, Arc<Indexer>, Uuid) {
    let catalog = Arc::new(Catalog::new(store));
    // Every real process stores the cluster settings; readers find the shard logs by them.
    kafscale_shared::shards::load_or_init_cluster(&catalog, 1, layout)
        .await
        .expect("cluster");
    let topic = catalog
        .create_topic("t", partitions, BTreeMap::new())
        .await
        .expect("create");
    let watermarks = Arc::new(Watermarks::new());
    let indexer = log_indexer(&catalog, &watermarks).await;
    (catalog, watermarks, indexer, topic.topic_id)
}

/// The shard's log as stored: (sequence number, item).
pub(super) async fn logged(catalog: &Catalog, shard: u32) -> Vec<(u64, ShardLogItem)> {
    let items = catalog
        .store()
        .query(kafscale_shared::meta_store::Query::all(shard_log_pk(shard)))
        .await
        .expect("query");
    items
        .iter()
        .map(|i| {
            let seq = i.key.sk.parse().expect("seq");
            (seq, catalog::decode(&i.key, &i.value).expect("item"))
        })
        .collect()
}

#[tokio::test]
async fn a_logged_commit_is_one_item_and_assigns_offsets_as_a_transaction_would() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let (catalog, watermarks, indexer, id) = setup_log(store, 2).await;
    let r = indexer
        .commit(req(
            "s1",
            vec![
                batch(id, 0, 16, 3),
                batch(id, 0, 116, 2),
                batch(id, 1, 216, 5),
            ],
        ))
        .await
        .expect("commit");
    assert_eq!(r.outcomes, vec![appended(0), appended(3), appended(0)]);
    let r = indexer
        .commit(req("s2", vec![batch(id, 0, 16, 4)]))
        .await
        .expect("commit");
    assert_eq!(r.outcomes, vec![appended(5)]);

    let log = logged(&catalog, 0).await;
    assert_eq!(log.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);
    let first = log[0].1.index_entries().expect("topics");
    let spans: Vec<_> = first
        .iter()
        .map(|(_, p, e)| (*p, e.base_offset, e.last_offset, e.batch_count))
        .collect();
    assert_eq!(spans, [(0, 0, 4, 2), (1, 0, 4, 1)]);
    // Nothing else was written: no row moved, no index entry, no commit record.
    let (row, _) = catalog.partition(id, 0).await.expect("read").expect("row");
    assert_eq!(row.next_offset, 0);
    assert!(
        catalog
            .segment_commit("s1", 0)
            .await
            .expect("read")
            .is_none()
    );
    let index_items = catalog.item_keys(&catalog::index_pk(id, 0)).await;
    assert!(index_items.expect("read").is_empty());
    assert_eq!(watermarks.get(id, 0).map(|o| o.high_watermark), Some(9));
    assert_eq!(watermarks.get(id, 1).map(|o| o.high_watermark), Some(5));
}

#[tokio::test]
async fn a_retry_is_answered_from_the_log_after_a_restart() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let (catalog, watermarks, indexer, id) = setup_log(store, 1).await;
    let first = indexer
        .commit(req("s1", vec![batch(id, 0, 16, 3)]))
        .await
        .expect("commit");
    drop(indexer);
    let restarted = log_indexer(&catalog, &watermarks).await;
    let retry = restarted
        .commit(req("s1", vec![batch(id, 0, 16, 3)]))
        .await
        .expect("retry");
    assert_eq!(retry.outcomes, first.outcomes);
    let next = restarted
        .commit(req("s2", vec![batch(id, 0, 16, 2)]))
        .await
        .expect("commit");
    assert_eq!(next.outcomes, vec![appended(3)]);
    assert_eq!(
        logged(&catalog, 0).await.len(),
        2,
        "the retry appended nothing"
    );
    // A different batch list under a logged segment key is not a retry.
    let other = restarted
        .commit(req("s1", vec![batch(id, 0, 16, 3), batch(id, 0, 116, 1)]))
        .await;
    assert!(matches!(other, Err(SequencerError::InvalidRequest(_))));
}

#[tokio::test]
async fn two_writers_that_both_think_they_own_a_shard_never_hand_out_one_offset_twice() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let (catalog, watermarks, old, id) = setup_log(store, 1).await;
    old.commit(req("s1", vec![batch(id, 0, 16, 3)]))
        .await
        .expect("commit");
    // A second replica takes the shard over while the first still believes it owns it.
    let new = log_indexer(&catalog, &watermarks).await;
    let by_new = new
        .commit(req("s2", vec![batch(id, 0, 16, 4)]))
        .await
        .expect("commit");
    assert_eq!(by_new.outcomes, vec![appended(3)]);
    // The old owner's next append finds its sequence number taken, reads the log and goes on
    // after the new owner's offsets.
    let by_old = old
        .commit(req("s3", vec![batch(id, 0, 16, 2)]))
        .await
        .expect("commit");
    assert_eq!(by_old.outcomes, vec![appended(7)]);
    let by_new = new
        .commit(req("s4", vec![batch(id, 0, 16, 1)]))
        .await
        .expect("commit");
    assert_eq!(by_new.outcomes, vec![appended(9)]);
    let mut offsets = Vec::new();
    for (_, item) in logged(&catalog, 0).await {
        for (_, _, e) in item.index_entries().expect("topics") {
            offsets.extend(e.base_offset..=e.last_offset);
        }
    }
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_idempotent_producer_whose_state_is_only_in_the_log_is_deduplicated_after_a_takeover() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let (catalog, watermarks, old, id) = setup_log(store, 1).await;
    let r = old
        .commit(req("s1", vec![idem(batch(id, 0, 16, 5), 7, 0, 0)]))
        .await
        .expect("commit");
    assert_eq!(r.outcomes, vec![appended(0)]);
    assert!(
        catalog.producer(id, 0, 7).await.expect("read").is_none(),
        "the producer's state is in the log only"
    );
    let new = log_indexer(&catalog, &watermarks).await;
    // The same batch again, in another segment (the producer retried through another gateway).
    let retry = new
        .commit(req("s2", vec![idem(batch(id, 0, 16, 5), 7, 0, 0)]))
        .await
        .expect("commit");
    assert_eq!(
        retry.outcomes,
        vec![BatchOutcome::Duplicate {
            base_offset: 0,
            log_start_offset: 0
        }]
    );
    let gap = new
        .commit(req("s3", vec![idem(batch(id, 0, 16, 1), 7, 0, 9)]))
        .await
        .expect("commit");
    assert_eq!(
        gap.outcomes,
        vec![BatchOutcome::Rejected(RejectReason::OutOfOrderSequence)]
    );
    let next = new
        .commit(req("s4", vec![idem(batch(id, 0, 16, 1), 7, 0, 5)]))
        .await
        .expect("commit");
    assert_eq!(next.outcomes, vec![appended(5)]);
}

#[tokio::test]
async fn an_append_whose_answer_was_lost_is_found_in_the_log_and_not_repeated() {
    let store = Arc::new(HeldAnswers::default());
    let (catalog, _watermarks, indexer, id) = setup_log(store.clone(), 1).await;
    indexer
        .commit(req("s0", vec![idem(batch(id, 0, 16, 2), 7, 0, 0)]))
        .await
        .expect("commit");
    // The append of s1 lands, then its caller goes away before the answer.
    store.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let dropped = {
        let indexer = indexer.clone();
        tokio::spawn(async move {
            indexer
                .commit(req("s1", vec![idem(batch(id, 0, 16, 3), 7, 0, 2)]))
                .await
        })
    };
    store.landed.notified().await;
    dropped.abort();
    assert!(dropped.await.is_err(), "the commit was cancelled");
    store.hold.store(false, std::sync::atomic::Ordering::SeqCst);

    // The gateway retries s1: the answer comes from the log, nothing is appended twice.
    let retry = indexer
        .commit(req("s1", vec![idem(batch(id, 0, 16, 3), 7, 0, 2)]))
        .await
        .expect("retry");
    assert_eq!(retry.outcomes, vec![appended(2)]);
    let next = indexer
        .commit(req("s2", vec![idem(batch(id, 0, 16, 1), 7, 0, 5)]))
        .await
        .expect("commit");
    assert_eq!(next.outcomes, vec![appended(5)]);
    assert_eq!(logged(&catalog, 0).await.len(), 3);
}

#[tokio::test]
async fn unknown_partitions_are_rejected_in_the_log_as_in_a_transaction() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let (_catalog, _watermarks, indexer, id) = setup_log(store, 1).await;
    let r = indexer
        .commit(req("s1", vec![batch(id, 3, 16, 2), batch(id, 0, 116, 2)]))
        .await
        .expect("commit");
    assert_eq!(
        r.outcomes,
        vec![
            BatchOutcome::Rejected(RejectReason::UnknownTopicOrPartition),
            appended(0)
        ]
    );
}

async fn index_items(catalog: &Catalog, id: Uuid, partition: i32) -> usize {
    let pk = catalog::index_pk(id, partition);
    catalog.item_keys(&pk).await.expect("keys").len()
}

#[tokio::test]
async fn a_fold_writes_pages_rows_and_producer_states_a_new_owner_starts_from() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let (catalog, watermarks, indexer, id) = setup_log(store, 2).await;
    for (k, key) in ["s1", "s2"].iter().enumerate() {
        indexer
            .commit(req(
                key,
                vec![
                    idem(batch(id, 0, 16, 3), 7, 0, 3 * k as i32),
                    batch(id, 1, 116, 2),
                ],
            ))
            .await
            .expect("commit");
    }
    let report = indexer.fold_shard(0).await.expect("fold");
    assert_eq!(
        (report.items, report.pages, report.rows, report.producers),
        (2, 2, 2, 1)
    );
    // One page per partition holds both commits' entries.
    assert_eq!(index_items(&catalog, id, 0).await, 1);
    let entries = catalog
        .index_entries_from(id, 0, 0, None)
        .await
        .expect("read");
    let spans: Vec<_> = entries
        .iter()
        .map(|e| (e.base_offset, e.last_offset))
        .collect();
    assert_eq!(spans, [(0, 2), (3, 5)]);
    let (row, _) = catalog.partition(id, 1).await.expect("read").expect("row");
    assert_eq!(row.next_offset, 4);
    let (producer, _) = catalog
        .producer(id, 0, 7)
        .await
        .expect("read")
        .expect("state");
    assert_eq!(producer.batches.len(), 2);
    // Nothing new: a second fold writes nothing.
    assert_eq!(indexer.fold_shard(0).await.expect("fold").items, 0);

    indexer
        .commit(req("s3", vec![batch(id, 1, 16, 1)]))
        .await
        .expect("commit");
    drop(indexer);
    let restarted = log_indexer(&catalog, &watermarks).await;
    let r = restarted
        .commit(req(
            "s4",
            vec![idem(batch(id, 0, 16, 1), 7, 0, 6), batch(id, 1, 16, 1)],
        ))
        .await
        .expect("commit");
    assert_eq!(r.outcomes, vec![appended(6), appended(5)]);
    let retry = restarted
        .commit(req(
            "s1",
            vec![idem(batch(id, 0, 16, 3), 7, 0, 0), batch(id, 1, 116, 2)],
        ))
        .await
        .expect("retry");
    assert_eq!(retry.outcomes, vec![appended(0), appended(0)]);
}

#[tokio::test]
async fn a_fold_cut_short_is_redone_and_nothing_is_written_twice() {
    let store = Arc::new(TestStore::default());
    let (catalog, _watermarks, indexer, id) = setup_log(store.clone(), 1).await;
    indexer
        .commit(req("s1", vec![idem(batch(id, 0, 16, 3), 7, 0, 0)]))
        .await
        .expect("commit");
    // Pages and the row land, the checkpoint does not.
    *store.failing_prefix.lock().expect("lock") = Some("fold/".into());
    assert!(indexer.fold_shard(0).await.is_err());
    *store.failing_prefix.lock().expect("lock") = None;
    let r = indexer
        .commit(req("s2", vec![idem(batch(id, 0, 16, 2), 7, 0, 3)]))
        .await
        .expect("commit after a failed fold");
    assert_eq!(r.outcomes, vec![appended(3)]);
    let report = indexer.fold_shard(0).await.expect("fold again");
    assert_eq!(
        report.items, 2,
        "the fold starts again from the old checkpoint"
    );
    let entries = catalog
        .index_entries_from(id, 0, 0, None)
        .await
        .expect("read");
    let spans: Vec<_> = entries
        .iter()
        .map(|e| (e.base_offset, e.last_offset))
        .collect();
    assert_eq!(
        spans,
        [(0, 2), (3, 4)],
        "overlapping pages read as one sequence"
    );
    let (row, _) = catalog.partition(id, 0).await.expect("read").expect("row");
    assert_eq!(row.next_offset, 5);
    let (producer, _) = catalog
        .producer(id, 0, 7)
        .await
        .expect("read")
        .expect("state");
    assert_eq!(producer.batches.len(), 2);
}

#[tokio::test]
async fn folded_items_stay_in_the_log_and_an_opening_owner_reads_only_the_newest() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let (catalog, watermarks, indexer, id) = setup_log(store.clone(), 1).await;
    for key in ["s1", "s2"] {
        indexer
            .commit(req(key, vec![batch(id, 0, 16, 3)]))
            .await
            .expect("commit");
    }
    assert_eq!(indexer.fold_shard(0).await.expect("fold").items, 2);
    // The fold deletes nothing: the items are their segments' commit records.
    assert_eq!(logged(&catalog, 0).await.len(), 2);
    // Item 1 is long past the answer horizon, and below it lies something unreadable that an
    // owner reading the whole log would fail on.
    let (_, mut old) = logged(&catalog, 0).await.remove(0);
    old.committed_at_ms = 0;
    let unreadable = bytes::Bytes::from_static(b"not an item");
    let ops = vec![
        WriteOp::Put {
            key: shard_log_key(0, 1),
            value: catalog::encode(&old),
            condition: Condition::None,
        },
        WriteOp::Put {
            key: shard_log_key(0, 0),
            value: unreadable,
            condition: Condition::None,
        },
    ];
    store.write(ops).await.expect("write");
    drop(indexer);
    let restarted = log_indexer(&catalog, &watermarks).await;
    let r = restarted
        .commit(req("s3", vec![batch(id, 0, 16, 1)]))
        .await
        .expect("commit");
    assert_eq!(r.outcomes, vec![appended(6)]);
    let newest =
        kafscale_shared::shard_log::read_items(store.as_ref(), 0, std::ops::Bound::Excluded(2));
    let seqs: Vec<u64> = newest.await.expect("read").iter().map(|l| l.0).collect();
    assert_eq!(seqs, [3]);
    // Item 2 was read: its retry is still answered, not appended again.
    let retry = restarted
        .commit(req("s2", vec![batch(id, 0, 16, 3)]))
        .await
        .expect("retry");
    assert_eq!(retry.outcomes, vec![appended(3)]);
}

#[tokio::test]
async fn another_process_reads_folded_pages_and_the_log_above_them_as_one_index() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let (_catalog, _watermarks, indexer, id) = setup_log(store.clone(), 1).await;
    // A reader in another process: a catalog of its own over the same store.
    let reader = Catalog::new(store);
    let spans = |entries: Vec<IndexEntry>| -> Vec<(i64, i64)> {
        entries
            .iter()
            .map(|e| (e.base_offset, e.last_offset))
            .collect()
    };
    let commit = |key: &'static str, n: u32| {
        let indexer = indexer.clone();
        async move {
            indexer
                .commit(req(key, vec![batch(id, 0, 16, n)]))
                .await
                .expect("commit")
        }
    };
    commit("s1", 3).await;
    commit("s2", 2).await;
    // Nothing folded: the log alone has the entries and the high watermark.
    let entries = reader
        .index_entries_from(id, 0, 0, None)
        .await
        .expect("read");
    assert_eq!(spans(entries), [(0, 2), (3, 4)]);
    let row = reader
        .partition_view(id, 0)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.next_offset, 5);
    let (stored, _) = reader.partition(id, 0).await.expect("read").expect("row");
    assert_eq!(
        stored.next_offset, 0,
        "the row itself is not written by commits"
    );

    indexer.fold_shard(0).await.expect("fold");
    commit("s3", 4).await;
    // Folded pages below, the log above: one index, in order, nothing twice.
    let entries = reader
        .index_entries_from(id, 0, 0, None)
        .await
        .expect("read");
    assert_eq!(spans(entries), [(0, 2), (3, 4), (5, 8)]);
    let entries = reader
        .index_entries_from(id, 0, 4, Some(2))
        .await
        .expect("read");
    assert_eq!(spans(entries), [(3, 4), (5, 8)]);
    let entries = reader
        .index_entries_from(id, 0, 6, Some(1))
        .await
        .expect("read");
    assert_eq!(spans(entries), [(5, 8)]);
    let row = reader
        .partition_view(id, 0)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.next_offset, 9);
    assert!(
        reader
            .index_entries_from(id, 0, 9, None)
            .await
            .expect("read")
            .is_empty()
    );
}

#[tokio::test]
async fn delete_records_on_the_shard_log_hides_what_is_below_the_log_start_folded_or_not() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let (catalog, watermarks, indexer, id) = setup_log(store, 1).await;
    commit_segments(&indexer, id, 2).await; // entries 0..=2, 3..=5
    indexer.fold_shard(0).await.expect("fold");
    commit_segments_from(&indexer, id, 2, 1).await; // 6..=8, in the log only
    // Inside the second entry: the first is gone, its page stays for the rest.
    assert_eq!(indexer.move_log_start(id, 0, 4).await.expect("delete"), 4);
    let left = catalog
        .index_entries_from(id, 0, 4, None)
        .await
        .expect("read");
    let bases: Vec<i64> = left.iter().map(|e| e.base_offset).collect();
    assert_eq!(bases, [3, 6]);
    assert_eq!(watermarks.get(id, 0).map(|w| w.log_start_offset), Some(4));
    // Everything: a reader starting at the log start finds nothing, folded or not.
    assert_eq!(indexer.move_log_start(id, 0, -1).await.expect("delete"), 9);
    assert!(
        catalog
            .index_entries_from(id, 0, 9, None)
            .await
            .expect("read")
            .is_empty()
    );
    // The fold keeps the new log start, and the next commit goes on from 9.
    indexer.fold_shard(0).await.expect("fold");
    let (row, _) = catalog.partition(id, 0).await.expect("read").expect("row");
    assert_eq!((row.log_start_offset, row.next_offset), (9, 9));
    let r = indexer
        .commit(req("after", vec![batch(id, 0, 16, 1)]))
        .await
        .expect("commit");
    let after = BatchOutcome::Appended {
        base_offset: 9,
        log_start_offset: 9,
    };
    assert_eq!(r.outcomes, vec![after]);
}

/// Like [`commit_segments`], with keys `seg-{from}`, `seg-{from + 1}`, ...
async fn commit_segments_from(indexer: &Indexer, id: Uuid, from: usize, segments: usize) {
    for k in from..from + segments {
        indexer
            .commit(req(&format!("seg-{k}"), vec![batch(id, 0, 0, 3)]))
            .await
            .expect("commit");
    }
}

/// An owner that committed offsets 0..=2 of partition 0 and died before its fold (SIGKILL):
/// the row in the store still says offset 0. Returns the store's catalog, the next owner and
/// the topic.
async fn owner_died_before_its_fold() -> (Arc<Catalog>, Arc<Indexer>, Uuid) {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let (catalog, watermarks, indexer, id) = setup_log(store, 1).await;
    indexer
        .commit(req("s1", vec![batch(id, 0, 16, 3)]))
        .await
        .expect("commit");
    drop(indexer);
    let restarted = log_indexer(&catalog, &watermarks).await;
    (catalog, restarted, id)
}

#[tokio::test]
async fn rows_loaded_before_the_first_commit_after_a_takeover_include_the_unfolded_log() {
    let (_catalog, restarted, id) = owner_died_before_its_fold().await;
    // The retention pass at start reads the rows before any commit opened the log (at a time
    // when the test's batches are not expired).
    let report = restarted
        .enforce_retention(&ClusterDefaults::default(), 5_000)
        .await
        .expect("retention");
    assert_eq!(report.retained.get("t").map(|r| r.records), Some(3));
    let r = restarted
        .commit(req("s2", vec![batch(id, 0, 16, 2)]))
        .await
        .expect("commit");
    assert_eq!(
        r.outcomes,
        vec![appended(3)],
        "offsets 0..2 were handed out already"
    );
}

#[tokio::test]
async fn a_new_owner_folds_what_its_predecessor_left_before_any_commit() {
    let (catalog, restarted, id) = owner_died_before_its_fold().await;
    let report = restarted.fold_shard(0).await.expect("fold");
    assert_eq!((report.items, report.rows), (1, 1));
    let (row, _) = catalog.partition(id, 0).await.expect("read").expect("row");
    assert_eq!(row.next_offset, 3);
}

/// The raw values of a partition key's items, as text.
async fn raw_values(catalog: &Catalog, pk: String) -> Vec<String> {
    let items = catalog
        .store()
        .query(kafscale_shared::meta_store::Query::all(pk))
        .await
        .expect("query");
    items
        .iter()
        .map(|i| String::from_utf8_lossy(&i.value).into_owned())
        .collect()
}

#[tokio::test]
async fn a_layout_2_cluster_gets_items_its_old_readers_read_until_it_moves_to_short_items() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let layout_2 = kafscale_shared::shards::LAYOUT_SHARD_LOG;
    let (catalog, watermarks, indexer, id) = setup_log_on(store, 1, layout_2).await;
    commit_segments_from(&indexer, id, 0, 2).await;
    indexer.fold_shard(0).await.expect("fold");
    let whole = |v: &String| v.starts_with(r#"{"format":2,"#);
    assert!(
        raw_values(&catalog, shard_log_pk(0))
            .await
            .iter()
            .all(whole)
    );
    let pages = raw_values(&catalog, catalog::index_pk(id, 0)).await;
    assert!(
        pages.iter().all(|p| p.starts_with(r#"{"format":3,"#)),
        "{pages:?}"
    );

    // Moved; the owner writes short items from its next acquisition of the shard.
    kafscale_shared::shards::switch_to_shard_log(&catalog, None)
        .await
        .expect("move");
    drop(indexer);
    let restarted = log_indexer(&catalog, &watermarks).await;
    commit_segments_from(&restarted, id, 2, 2).await;
    restarted.fold_shard(0).await.expect("fold");
    let log = raw_values(&catalog, shard_log_pk(0)).await;
    assert_eq!(log.iter().filter(|v| whole(v)).count(), 2, "{log:?}");
    assert_eq!(
        log.iter().filter(|v| v.starts_with(r#"{"f":3,"#)).count(),
        2,
        "{log:?}"
    );
    let pages = raw_values(&catalog, catalog::index_pk(id, 0)).await;
    assert!(
        pages.iter().any(|p| p.starts_with(r#"{"f":4,"#)),
        "{pages:?}"
    );
    // Readers see one index over both forms.
    let entries = catalog
        .index_entries_from(id, 0, 0, None)
        .await
        .expect("entries");
    assert_eq!(entries.len(), 4, "{entries:?}");
}

#[tokio::test]
async fn the_fold_backlog_counts_the_items_above_the_checkpoint_until_they_are_folded() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let (_catalog, _watermarks, indexer, id) = setup_log(store, 1).await;
    assert_eq!(indexer.unfolded_items(0).await, 0);
    commit_segments_from(&indexer, id, 0, 3).await;
    assert_eq!(indexer.unfolded_items(0).await, 3);
    let reports = indexer.fold_all().await;
    assert_eq!(reports.get(&0).map(|r| r.items), Some(3));
    assert_eq!(indexer.unfolded_items(0).await, 0);
    assert_eq!(indexer.unfolded_items(99).await, 0, "no such shard");
}

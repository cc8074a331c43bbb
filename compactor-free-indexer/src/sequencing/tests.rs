use std::collections::BTreeMap;

use kafscale_shared::meta_store::{MemoryMetaStore, MetaStore};
use kafscale_shared::sequencer::RejectReason;

use kafscale_shared::shards::shard_of;
use kafscale_shared::topic_config::ClusterDefaults;

use super::*;

async fn setup(partitions: i32) -> (Arc<Catalog>, Arc<Watermarks>, Arc<Indexer>, Uuid) {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let catalog = Arc::new(Catalog::new(store));
    let topic = catalog
        .create_topic("t", partitions, BTreeMap::new())
        .await
        .expect("create");
    let watermarks = Arc::new(Watermarks::new());
    let indexer = start_as_a(&catalog, &watermarks).await;
    (catalog, watermarks, indexer, topic.topic_id)
}

/// An indexer owning every shard as owner "a" (a restart of the same replica retakes its
/// leases at once).
async fn start_as_a(catalog: &Arc<Catalog>, watermarks: &Arc<Watermarks>) -> Arc<Indexer> {
    let config = IndexerConfig {
        owner_id: "a".into(),
        ..IndexerConfig::default()
    };
    Indexer::start(catalog.clone(), watermarks.clone(), config)
        .await
        .expect("start")
}

fn batch(topic_id: Uuid, partition: i32, byte_start: u64, n: u32) -> CommitBatch {
    CommitBatch {
        topic_id,
        partition,
        byte_start,
        byte_len: 100,
        offset_count: n,
        record_count: n,
        first_timestamp: 1000 + byte_start as i64,
        max_timestamp: 2000 + byte_start as i64,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    }
}

fn idem(mut b: CommitBatch, pid: i64, epoch: i16, seq: i32) -> CommitBatch {
    b.producer_id = pid;
    b.producer_epoch = epoch;
    b.base_sequence = seq;
    b
}

fn req(key: &str, batches: Vec<CommitBatch>) -> CommitRequest {
    CommitRequest {
        segment_key: key.into(),
        shard: 0,
        segment_size: 1000,
        batches,
    }
}

fn appended(base_offset: i64) -> BatchOutcome {
    BatchOutcome::Appended {
        base_offset,
        log_start_offset: 0,
    }
}

#[tokio::test]
async fn assigns_contiguous_offsets_and_writes_index_and_watermark() {
    let (catalog, watermarks, indexer, id) = setup(2).await;
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

    let entries = catalog
        .index_entries_from(id, 0, 0, None)
        .await
        .expect("index");
    assert_eq!(
        entries.len(),
        2,
        "adjacent batches of one segment share an entry"
    );
    assert_eq!(
        (
            entries[0].base_offset,
            entries[0].last_offset,
            entries[0].batch_count
        ),
        (0, 4, 2)
    );
    assert_eq!((entries[0].byte_start, entries[0].byte_len), (16, 200));
    assert_eq!(
        (
            entries[1].base_offset,
            entries[1].last_offset,
            entries[1].segment_key.as_str()
        ),
        (5, 8, "s2")
    );
    let found = catalog
        .index_entries_from(id, 0, 6, Some(1))
        .await
        .expect("lookup");
    assert_eq!(found[0].base_offset, 5);
    let (row, _) = catalog.partition(id, 0).await.expect("read").expect("row");
    assert_eq!(row.next_offset, 9);
    assert_eq!(watermarks.get(id, 0).map(|o| o.high_watermark), Some(9));
    assert_eq!(watermarks.get(id, 1).map(|o| o.high_watermark), Some(5));
}

#[tokio::test]
async fn a_repeated_commit_returns_the_same_offsets_even_after_restart() {
    let (catalog, watermarks, indexer, id) = setup(1).await;
    let first = indexer
        .commit(req("s1", vec![batch(id, 0, 16, 3)]))
        .await
        .expect("commit");
    let again = indexer
        .commit(req("s1", vec![batch(id, 0, 16, 3)]))
        .await
        .expect("retry");
    assert_eq!(first, again);
    drop(indexer);
    let restarted = start_as_a(&catalog, &watermarks).await;
    let after = restarted
        .commit(req("s1", vec![batch(id, 0, 16, 3)]))
        .await
        .expect("retry");
    assert_eq!(first, after);
    let next = restarted
        .commit(req("s2", vec![batch(id, 0, 16, 1)]))
        .await
        .expect("commit");
    assert_eq!(next.outcomes, vec![appended(3)]);
}

/// A segment key names one object: a commit that reuses a committed key with other batches is
/// not a retry, and must not be answered with the first commit's outcomes (one per batch of
/// another list), nor sequence its batches a second time.
#[tokio::test]
async fn a_committed_segment_key_with_other_batches_is_refused() {
    let (catalog, watermarks, indexer, id) = setup(1).await;
    indexer
        .commit(req("s1", vec![batch(id, 0, 16, 3)]))
        .await
        .expect("commit");
    let other = req("s1", vec![batch(id, 0, 16, 3), batch(id, 0, 116, 2)]);
    let refused = indexer.commit(other.clone()).await;
    assert!(
        matches!(refused, Err(SequencerError::InvalidRequest(_))),
        "{refused:?}"
    );
    drop(indexer);
    let restarted = start_as_a(&catalog, &watermarks).await;
    let refused = restarted.commit(other).await;
    assert!(
        matches!(refused, Err(SequencerError::InvalidRequest(_))),
        "{refused:?}"
    );
    let next = restarted
        .commit(req("s2", vec![batch(id, 0, 16, 1)]))
        .await
        .expect("commit");
    assert_eq!(
        next.outcomes,
        vec![appended(3)],
        "nothing was sequenced twice"
    );
}

#[tokio::test]
async fn idempotent_producers_are_deduplicated_like_a_kafka_leader() {
    let (catalog, _, indexer, id) = setup(1).await;
    let r = indexer
        .commit(req(
            "s1",
            vec![
                idem(batch(id, 0, 16, 3), 7, 0, 0),
                idem(batch(id, 0, 116, 2), 7, 0, 3),
            ],
        ))
        .await
        .expect("commit");
    assert_eq!(r.outcomes, vec![appended(0), appended(3)]);
    // The retry of seq 0..2 and 3..4 in a new segment: duplicates at the original offsets,
    // and a new batch in the same segment gets the next offset. A duplicate in the middle
    // splits the index entry (its bytes are not part of the log).
    let r = indexer
        .commit(req(
            "s2",
            vec![
                batch(id, 0, 16, 1),
                idem(batch(id, 0, 116, 3), 7, 0, 0),
                batch(id, 0, 216, 1),
                idem(batch(id, 0, 316, 2), 7, 0, 3),
                idem(batch(id, 0, 416, 2), 7, 0, 5),
            ],
        ))
        .await
        .expect("commit");
    assert_eq!(
        r.outcomes,
        vec![
            appended(5),
            BatchOutcome::Duplicate {
                base_offset: 0,
                log_start_offset: 0
            },
            appended(6),
            BatchOutcome::Duplicate {
                base_offset: 3,
                log_start_offset: 0
            },
            appended(7),
        ]
    );
    let entries = catalog
        .index_entries_from(id, 0, 5, None)
        .await
        .expect("index");
    let ranges: Vec<_> = entries
        .iter()
        .map(|e| (e.base_offset, e.last_offset, e.byte_start))
        .collect();
    assert_eq!(ranges, vec![(5, 5, 16), (6, 6, 216), (7, 8, 416)]);

    // A gap is rejected; a producer the partition has no state for is accepted at whatever
    // sequence it is (Kafka 2.5+), and tracked from there.
    let r = indexer
        .commit(req(
            "s3",
            vec![
                idem(batch(id, 0, 16, 1), 7, 0, 9),
                idem(batch(id, 0, 116, 1), 8, 0, 4),
                idem(batch(id, 0, 216, 1), 8, 0, 5),
                idem(batch(id, 0, 316, 1), 8, 0, 4),
                idem(batch(id, 0, 416, 1), 8, 0, 9),
            ],
        ))
        .await
        .expect("commit");
    assert_eq!(
        r.outcomes,
        vec![
            BatchOutcome::Rejected(RejectReason::OutOfOrderSequence),
            appended(9),
            appended(10),
            BatchOutcome::Duplicate {
                base_offset: 9,
                log_start_offset: 0
            },
            BatchOutcome::Rejected(RejectReason::OutOfOrderSequence),
        ]
    );
    // A new epoch starts again at 0; then the old epoch is fenced.
    let r = indexer
        .commit(req(
            "s4",
            vec![
                idem(batch(id, 0, 16, 1), 7, 1, 0),
                idem(batch(id, 0, 116, 1), 7, 0, 7),
            ],
        ))
        .await
        .expect("commit");
    assert_eq!(
        r.outcomes,
        vec![
            appended(11),
            BatchOutcome::Rejected(RejectReason::InvalidProducerEpoch)
        ]
    );
}

#[tokio::test]
async fn unknown_partitions_are_rejected_without_touching_others() {
    let (_, _, indexer, id) = setup(1).await;
    let r = indexer
        .commit(req(
            "s1",
            vec![
                batch(id, 3, 16, 1),
                batch(Uuid::new_v4(), 0, 116, 1),
                batch(id, 0, 216, 1),
            ],
        ))
        .await
        .expect("commit");
    assert_eq!(
        r.outcomes,
        vec![
            BatchOutcome::Rejected(RejectReason::UnknownTopicOrPartition),
            BatchOutcome::Rejected(RejectReason::UnknownTopicOrPartition),
            appended(0)
        ]
    );
}

#[tokio::test]
async fn a_deposed_owner_cannot_write() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let catalog = Arc::new(Catalog::new(store));
    let id = catalog
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create")
        .topic_id;
    let short = |owner: &str| IndexerConfig {
        owner_id: owner.into(),
        owner_addr: String::new(),
        lease_ttl: Duration::from_millis(50),
        shard_count: 1,
        ..IndexerConfig::default()
    };
    let old = Indexer::start(catalog.clone(), Arc::new(Watermarks::new()), short("old"))
        .await
        .expect("start");
    old.commit(req("s1", vec![batch(id, 0, 16, 1)]))
        .await
        .expect("commit");
    assert!(matches!(
        Indexer::start(catalog.clone(), Arc::new(Watermarks::new()), short("new")).await,
        Err(IndexerError::LeaseHeld(_))
    ));
    tokio::time::sleep(Duration::from_millis(80)).await;
    let new = Indexer::start(catalog.clone(), Arc::new(Watermarks::new()), short("new"))
        .await
        .expect("takeover");
    let err = old
        .commit(req("s2", vec![batch(id, 0, 16, 1)]))
        .await
        .expect_err("fenced");
    assert!(matches!(err, SequencerError::Fenced(_)));
    assert!(
        old.owned_shards().await.is_empty(),
        "a fenced commit drops the lease"
    );
    let report = old.maintain_leases(1).await.expect("renew");
    assert!(
        report.owned.is_empty(),
        "the live new owner keeps the shard"
    );
    let r = new
        .commit(req("s3", vec![batch(id, 0, 16, 1)]))
        .await
        .expect("commit");
    assert_eq!(
        r.outcomes,
        vec![appended(1)],
        "the new owner continues after the old owner's last commit"
    );
}

#[tokio::test]
async fn replicas_split_the_shards_and_refuse_shards_they_do_not_own() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let catalog = Arc::new(Catalog::new(store));
    let id = catalog
        .create_topic("t", 8, BTreeMap::new())
        .await
        .expect("create")
        .topic_id;
    let config = |owner: &str| IndexerConfig {
        owner_id: owner.into(),
        owner_addr: format!("{owner}:1"),
        lease_ttl: Duration::from_secs(30),
        shard_count: 4,
        ..IndexerConfig::default()
    };
    let a = Indexer::new(catalog.clone(), Arc::new(Watermarks::new()), config("a"));
    let b = Indexer::new(catalog.clone(), Arc::new(Watermarks::new()), config("b"));
    assert_eq!(
        a.maintain_leases(4).await.expect("a").owned,
        vec![0, 1, 2, 3]
    );
    assert!(
        b.maintain_leases(2).await.expect("b").owned.is_empty(),
        "a holds every lease"
    );
    let report = a.maintain_leases(2).await.expect("a gives two up");
    assert_eq!((report.owned, report.released), (vec![0, 1], vec![3, 2]));
    assert_eq!(b.maintain_leases(2).await.expect("b").owned, vec![2, 3]);

    // Each partition is committed by the owner of its shard; the other replica refuses it.
    for p in 0..8 {
        let shard = shard_of(id, p, 4);
        let (owner, other) = if shard < 2 { (&a, &b) } else { (&b, &a) };
        let mut request = req(&format!("seg-{p}"), vec![batch(id, p, 16, 2)]);
        request.shard = shard;
        let err = other
            .commit(request.clone())
            .await
            .expect_err("not the owner");
        assert!(matches!(err, SequencerError::NotOwner { shard: s, .. } if s == shard));
        assert_eq!(
            owner.commit(request).await.expect("owner").outcomes,
            vec![appended(0)]
        );
    }
    // A batch of another shard in the request is refused as invalid.
    let p0 = shard_of(id, 0, 4);
    let stray = (0..8)
        .find(|p| shard_of(id, *p, 4) != p0)
        .expect("two shards in use");
    let mut mixed = req("mixed", vec![batch(id, 0, 16, 1), batch(id, stray, 116, 1)]);
    mixed.shard = p0;
    let owner = if p0 < 2 { &a } else { &b };
    assert!(matches!(
        owner.commit(mixed).await,
        Err(SequencerError::InvalidRequest(_))
    ));

    // A clean shutdown hands the shards over at once.
    a.release_all().await.expect("release");
    assert_eq!(
        b.maintain_leases(4).await.expect("b").owned,
        vec![0, 1, 2, 3]
    );
}

/// The memory store of the sequencing tests: keeps every write request it is sent (failed ones
/// too); like DynamoDB takes at most `max_ops` operations per write; and fails as unavailable
/// the write numbered `fail_write` (0-based) and any write to a key under `failing_prefix` (a
/// partition-key prefix), while they are set.
#[derive(Debug)]
pub(super) struct TestStore {
    inner: MemoryMetaStore,
    max_ops: usize,
    pub(super) writes: std::sync::Mutex<Vec<Vec<WriteOp>>>,
    pub(super) fail_write: std::sync::Mutex<Option<usize>>,
    pub(super) failing_prefix: std::sync::Mutex<Option<String>>,
}

impl Default for TestStore {
    fn default() -> Self {
        TestStore::over(MemoryMetaStore::new())
    }
}

impl TestStore {
    pub(super) fn over(inner: MemoryMetaStore) -> Self {
        TestStore {
            max_ops: inner.max_batch_ops(),
            inner,
            writes: std::sync::Mutex::default(),
            fail_write: std::sync::Mutex::default(),
            failing_prefix: std::sync::Mutex::default(),
        }
    }

    fn with_max_ops(max_ops: usize) -> Self {
        TestStore {
            max_ops,
            ..TestStore::default()
        }
    }

    /// Write requests sent so far.
    fn write_count(&self) -> usize {
        self.writes.lock().expect("lock").len()
    }

    /// Why the write numbered `n` fails, if it does.
    fn injected_failure(&self, n: usize, ops: &[WriteOp]) -> Option<MetaStoreError> {
        if ops.len() > self.max_ops {
            return Some(MetaStoreError::InvalidBatch(format!(
                "{} operations, at most {}",
                ops.len(),
                self.max_ops
            )));
        }
        let prefix = self.failing_prefix.lock().expect("lock").clone();
        let under_prefix = prefix.is_some_and(|p| ops.iter().any(|op| op.key().pk.starts_with(&p)));
        if under_prefix || *self.fail_write.lock().expect("lock") == Some(n) {
            return Some(MetaStoreError::Unavailable("injected".into()));
        }
        None
    }
}

#[async_trait]
impl MetaStore for TestStore {
    async fn get(
        &self,
        key: &ItemKey,
    ) -> Result<Option<kafscale_shared::meta_store::Item>, MetaStoreError> {
        self.inner.get(key).await
    }

    async fn query(
        &self,
        query: kafscale_shared::meta_store::Query,
    ) -> Result<Vec<kafscale_shared::meta_store::Item>, MetaStoreError> {
        self.inner.query(query).await
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
        let n = {
            let mut writes = self.writes.lock().expect("lock");
            writes.push(ops.clone());
            writes.len() - 1
        };
        match self.injected_failure(n, &ops) {
            Some(e) => Err(e),
            None => self.inner.write(ops).await,
        }
    }

    fn max_batch_ops(&self) -> usize {
        self.max_ops
    }
}

#[test]
fn chunks_fit_the_write_limit_and_keep_batches_in_order() {
    let id = Uuid::from_u128(7);
    let batches: Vec<CommitBatch> = (0..40)
        .map(|i| {
            idem(
                batch(id, i % 13, 16 + i as u64 * 100, 1),
                100 + (i % 3) as i64,
                0,
                i,
            )
        })
        .collect();
    for max_ops in [5, 10, 25, 100, usize::MAX] {
        let chunks = plan_chunks(&batches, max_ops);
        assert_eq!(chunks.first().map(|r| r.start), Some(0));
        assert_eq!(chunks.last().map(|r| r.end), Some(batches.len()));
        for w in chunks.windows(2) {
            assert_eq!(w[0].end, w[1].start, "chunks are consecutive");
        }
        for r in &chunks {
            let parts: HashSet<_> = batches[r.clone()]
                .iter()
                .map(|b| (b.topic_id, b.partition))
                .collect();
            let prods: HashSet<_> = batches[r.clone()]
                .iter()
                .map(|b| (b.topic_id, b.partition, b.producer_id))
                .collect();
            let bound = 2 + r.len() + parts.len() + prods.len();
            assert!(
                bound <= max_ops.max(5),
                "chunk {r:?} may need {bound} ops > {max_ops}"
            );
        }
    }
    assert_eq!(plan_chunks(&batches, usize::MAX), vec![0..40]);
    assert_eq!(plan_chunks(&[], 100), vec![0..0]);
}

#[tokio::test]
async fn a_commit_larger_than_one_store_write_is_split_and_stays_idempotent() {
    let limited = Arc::new(TestStore::with_max_ops(12));
    let store: Arc<dyn MetaStore> = limited.clone();
    let catalog = Arc::new(Catalog::new(store));
    let topic = catalog
        .create_topic("wide", 10, BTreeMap::new())
        .await
        .expect("create");
    let id = topic.topic_id;
    let watermarks = Arc::new(Watermarks::new());
    let indexer = start_as_a(&catalog, &watermarks).await;
    // 30 batches over 10 partitions, two of an idempotent producer: far more than 12 operations.
    let batches: Vec<CommitBatch> = (0..30)
        .map(|i| {
            let b = batch(id, i % 10, 16 + i as u64 * 100, 2);
            if i % 10 == 3 {
                idem(b, 77, 0, (i / 10) * 2)
            } else {
                b
            }
        })
        .collect();
    let expected: Vec<BatchOutcome> = (0..30).map(|i| appended((i / 10) as i64 * 2)).collect();

    // The third write of the commit fails: the produce request would get an error and be
    // retried; the retry must find the chunks already written and finish the rest.
    let before = limited.write_count();
    *limited.fail_write.lock().expect("lock") = Some(before + 2);
    let err = indexer
        .commit(req("wide-seg", batches.clone()))
        .await
        .expect_err("injected failure");
    assert!(
        matches!(err, SequencerError::StoreUnavailable(_)),
        "{err:?}"
    );
    *limited.fail_write.lock().expect("lock") = None;
    let r = indexer
        .commit(req("wide-seg", batches.clone()))
        .await
        .expect("retry");
    assert_eq!(r.outcomes, expected);
    // Again, and from a fresh indexer (nothing cached): the same answer, nothing written twice.
    let again = indexer
        .commit(req("wide-seg", batches.clone()))
        .await
        .expect("again");
    assert_eq!(again.outcomes, expected);
    indexer.release_all().await.expect("release");
    let fresh = Indexer::start(
        catalog.clone(),
        Arc::new(Watermarks::new()),
        IndexerConfig {
            owner_id: "b".into(),
            ..IndexerConfig::default()
        },
    )
    .await
    .expect("start b");
    let replay = fresh
        .commit(req("wide-seg", batches))
        .await
        .expect("replay");
    assert_eq!(replay.outcomes, expected);
    for p in 0..10 {
        let (row, _) = catalog.partition(id, p).await.expect("read").expect("row");
        assert_eq!(
            row.next_offset, 6,
            "partition {p}: three batches of two records"
        );
        let entries = catalog
            .index_entries_from(id, p, 0, Some(100))
            .await
            .expect("index");
        let covered: i64 = entries
            .iter()
            .map(|e| e.last_offset - e.base_offset + 1)
            .sum();
        assert_eq!(
            covered, 6,
            "partition {p}: the index covers each offset once"
        );
        assert!(entries.iter().all(|e| e.segment_key == "wide-seg"));
    }
    // The producer continues where the split commit left it.
    let next = fresh
        .commit(req("next-seg", vec![idem(batch(id, 3, 16, 1), 77, 0, 6)]))
        .await
        .expect("next");
    assert_eq!(next.outcomes, vec![appended(6)]);
}

/// A memory store whose writes land at once but whose answers can be held back, as when a
/// commit's caller goes away (a killed gateway closes the HTTP connection, and the commit's
/// future is dropped) after the store applied the write; or, with `hold_unapplied`, before
/// it applied it (the write then never lands).
#[derive(Debug, Default)]
struct HeldAnswers {
    inner: MemoryMetaStore,
    hold: std::sync::atomic::AtomicBool,
    hold_unapplied: std::sync::atomic::AtomicBool,
    landed: tokio::sync::Notify,
}

#[async_trait]
impl MetaStore for HeldAnswers {
    async fn get(
        &self,
        key: &ItemKey,
    ) -> Result<Option<kafscale_shared::meta_store::Item>, MetaStoreError> {
        self.inner.get(key).await
    }
    async fn query(
        &self,
        query: kafscale_shared::meta_store::Query,
    ) -> Result<Vec<kafscale_shared::meta_store::Item>, MetaStoreError> {
        self.inner.query(query).await
    }
    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
        if self
            .hold_unapplied
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.landed.notify_one();
            std::future::pending::<()>().await;
        }
        let result = self.inner.write(ops).await;
        if self.hold.load(std::sync::atomic::Ordering::SeqCst) {
            self.landed.notify_one();
            std::future::pending::<()>().await;
        }
        result
    }
    fn max_batch_ops(&self) -> usize {
        self.inner.max_batch_ops()
    }
}

#[tokio::test]
async fn a_commit_dropped_after_its_write_landed_leaves_no_stale_producer_state() {
    let store = Arc::new(HeldAnswers::default());
    let catalog = Arc::new(Catalog::new(store.clone()));
    let id = catalog
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create")
        .topic_id;
    let config = IndexerConfig {
        owner_id: "a".into(),
        ..IndexerConfig::default()
    };
    let indexer = Indexer::start(catalog.clone(), Arc::new(Watermarks::new()), config)
        .await
        .expect("start");
    // Producer 7 and producer 8 both write partition 0 (the cache now knows both).
    let r = indexer
        .commit(req(
            "s0",
            vec![
                idem(batch(id, 0, 16, 2), 7, 0, 0),
                idem(batch(id, 0, 116, 2), 8, 0, 0),
            ],
        ))
        .await
        .expect("commit");
    assert_eq!(r.outcomes, vec![appended(0), appended(2)]);

    // Producer 7's next batch: the write lands, then the caller goes away.
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

    // Producer 8 goes on; whatever the indexer had cached must not hide the landed write.
    let mut outcome = None;
    for attempt in 0..3 {
        match indexer
            .commit(req("s2", vec![idem(batch(id, 0, 16, 1), 8, 0, 2)]))
            .await
        {
            Ok(r) => {
                outcome = Some(r.outcomes);
                break;
            }
            Err(e) => assert!(e.is_retryable() && attempt < 2, "commit failed: {e}"),
        }
    }
    assert_eq!(outcome, Some(vec![appended(7)]));

    // Producer 7 retries its batch (its answer was lost): a duplicate at the original offset.
    let retry = indexer
        .commit(req("s3", vec![idem(batch(id, 0, 16, 3), 7, 0, 2)]))
        .await
        .expect("commit");
    assert_eq!(
        retry.outcomes,
        vec![BatchOutcome::Duplicate {
            base_offset: 4,
            log_start_offset: 0
        }]
    );
    let (row, _) = catalog.partition(id, 0).await.expect("read").expect("row");
    assert_eq!(row.next_offset, 8, "no batch was appended twice");
}

#[tokio::test]
async fn producer_state_is_written_only_over_the_version_it_was_read_at() {
    let (catalog, _, indexer, id) = setup(1).await;
    let r = indexer
        .commit(req("s0", vec![idem(batch(id, 0, 16, 2), 7, 0, 0)]))
        .await
        .expect("commit");
    assert_eq!(r.outcomes, vec![appended(0)]);
    // The stored state moves on behind the indexer's cache (here: rewritten as it is).
    let key = catalog::producer_key(id, 0, 7);
    let (record, version) = catalog
        .producer(id, 0, 7)
        .await
        .expect("read")
        .expect("row");
    catalog
        .store()
        .write(vec![WriteOp::Put {
            key,
            value: catalog::encode(&record),
            condition: Condition::Version(version),
        }])
        .await
        .expect("rewrite");
    // The next commit is refused (retriably) instead of writing over it, and its retry,
    // starting from the store, goes through.
    let next = || req("s1", vec![idem(batch(id, 0, 16, 1), 7, 0, 2)]);
    let refused = indexer.commit(next()).await;
    assert!(
        matches!(&refused, Err(e) if e.is_retryable()),
        "commit over a stale producer row: {refused:?}"
    );
    let r = indexer.commit(next()).await.expect("retry");
    assert_eq!(r.outcomes, vec![appended(2)]);
    let (_, after) = catalog
        .producer(id, 0, 7)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(after, version + 2);
}

/// Commits `segments` segments of one batch each (3 offsets, 100 bytes) to partition 0, the
/// k-th with max timestamp 2000 + k * 1000.
async fn commit_segments(indexer: &Indexer, id: Uuid, segments: usize) {
    for k in 0..segments {
        let mut b = batch(id, 0, 0, 3);
        b.max_timestamp = 2000 + k as i64 * 1000;
        indexer
            .commit(req(&format!("seg-{k}"), vec![b]))
            .await
            .expect("commit");
    }
}

fn retention(ms: Option<&str>, bytes: Option<&str>) -> BTreeMap<String, String> {
    let mut c = BTreeMap::new();
    if let Some(ms) = ms {
        c.insert("retention.ms".to_string(), ms.to_string());
    }
    if let Some(bytes) = bytes {
        c.insert("retention.bytes".to_string(), bytes.to_string());
    }
    c
}

async fn set_configs(catalog: &Catalog, configs: BTreeMap<String, String>) {
    catalog
        .update_topic_configs::<CatalogError>("t", |_| Ok(configs.clone()))
        .await
        .expect("configs");
}

#[tokio::test]
async fn retention_by_time_drops_whole_expired_entries_and_moves_the_log_start() {
    let (catalog, watermarks, indexer, id) = setup(1).await;
    commit_segments(&indexer, id, 5).await;
    set_configs(&catalog, retention(Some("1500"), None)).await;
    let defaults = ClusterDefaults::default();
    // Now 5000: entries whose newest record is older than 3500 go (timestamps 2000, 3000).
    let report = indexer
        .enforce_retention(&defaults, 5000)
        .await
        .expect("pass");
    assert_eq!(
        (
            report.entries_removed,
            report.bytes_removed,
            report.records_removed
        ),
        (2, 200, 6)
    );
    let (part, _) = catalog.partition(id, 0).await.expect("read").expect("row");
    assert_eq!(
        (part.log_start_offset, part.next_offset, part.bytes),
        (6, 15, 300)
    );
    let left = catalog
        .index_entries_from(id, 0, 0, None)
        .await
        .expect("index");
    assert_eq!(left.first().map(|e| e.base_offset), Some(6));
    assert_eq!(left.len(), 3);
    assert_eq!(watermarks.get(id, 0).map(|w| w.log_start_offset), Some(6));
    // A second pass at the same time removes nothing more.
    let again = indexer
        .enforce_retention(&defaults, 5000)
        .await
        .expect("pass");
    assert_eq!(
        again,
        RetentionReport {
            retained: report.retained.clone(),
            ..RetentionReport::default()
        }
    );
    // What the topic holds after the pass: offsets 6..15, three entries of 100 bytes.
    assert_eq!(
        report.retained.get("t"),
        Some(&Retained {
            bytes: 300,
            records: 9
        })
    );
    // Commits keep going and answer the new log start.
    let r = indexer
        .commit(req("after", vec![batch(id, 0, 0, 1)]))
        .await
        .expect("commit");
    assert_eq!(
        r.outcomes,
        vec![BatchOutcome::Appended {
            base_offset: 15,
            log_start_offset: 6
        }]
    );
    // Forever (-1) keeps everything.
    set_configs(&catalog, retention(Some("-1"), None)).await;
    let forever = indexer
        .enforce_retention(&defaults, i64::MAX / 2)
        .await
        .expect("pass");
    assert_eq!(forever.entries_removed, 0);
}

#[tokio::test]
async fn retention_by_size_keeps_at_least_retention_bytes() {
    let (catalog, _, indexer, id) = setup(1).await;
    commit_segments(&indexer, id, 5).await;
    set_configs(&catalog, retention(Some("-1"), Some("250"))).await;
    let report = indexer
        .enforce_retention(&ClusterDefaults::default(), 5000)
        .await
        .expect("pass");
    // 500 bytes: dropping 100 leaves 400 ≥ 250, 300 ≥ 250, then 200 < 250 stops.
    assert_eq!(report.entries_removed, 2);
    let (part, _) = catalog.partition(id, 0).await.expect("read").expect("row");
    assert_eq!((part.log_start_offset, part.bytes), (6, 300));
}

#[tokio::test]
async fn delete_records_moves_the_log_start_inside_an_entry_and_refuses_past_the_end() {
    let (catalog, watermarks, indexer, id) = setup(1).await;
    commit_segments(&indexer, id, 3).await;
    // Offset 4 is inside the second entry (3..=5): the first goes, the second stays.
    assert_eq!(indexer.move_log_start(id, 0, 4).await.expect("delete"), 4);
    let left = catalog
        .index_entries_from(id, 0, 0, None)
        .await
        .expect("index");
    assert_eq!(
        left.iter().map(|e| e.base_offset).collect::<Vec<_>>(),
        [3, 6]
    );
    assert_eq!(watermarks.get(id, 0).map(|w| w.log_start_offset), Some(4));
    // Never backwards.
    assert_eq!(indexer.move_log_start(id, 0, 2).await.expect("delete"), 4);
    assert!(matches!(
        indexer.move_log_start(id, 0, 10).await,
        Err(SequencerError::OffsetOutOfRange {
            offset: 10,
            high_watermark: 9
        })
    ));
    // -1: up to the high watermark, every entry gone.
    assert_eq!(indexer.move_log_start(id, 0, -1).await.expect("delete"), 9);
    assert!(
        catalog
            .index_entries_from(id, 0, 0, None)
            .await
            .expect("index")
            .is_empty()
    );
    assert!(matches!(
        indexer.move_log_start(id, 7, 0).await,
        Err(SequencerError::UnknownPartition)
    ));
}

#[tokio::test]
async fn a_log_start_write_of_a_deposed_owner_is_fenced() {
    let (catalog, _, indexer, id) = setup(1).await;
    commit_segments(&indexer, id, 2).await;
    // Another replica takes the shard once its owner released it.
    let lease = shard_lease_name(0);
    let (record, version) = catalog.lease(&lease).await.expect("read").expect("lease");
    assert!(
        catalog
            .release_lease(&lease, &record.owner, version)
            .await
            .expect("release")
    );
    catalog
        .acquire_lease(&lease, "b", "b:1", Duration::from_secs(30))
        .await
        .expect("take")
        .expect("free");
    assert!(matches!(
        indexer.move_log_start(id, 0, 3).await,
        Err(SequencerError::Fenced(_))
    ));
    let (part, _) = catalog.partition(id, 0).await.expect("read").expect("row");
    assert_eq!(part.log_start_offset, 0, "nothing moved");
}

#[tokio::test]
async fn an_idle_producers_state_expires_and_its_next_batch_starts_afresh() {
    let (catalog, _, indexer, id) = setup(1).await;
    // The batches' timestamps are from 1970: keep them.
    set_configs(&catalog, retention(Some("-1"), None)).await;
    let idle = |seq| idem(batch(id, 0, 0, 2), 7, 0, seq);
    let busy = |seq| idem(batch(id, 0, 100, 2), 8, 0, seq);
    let r = indexer
        .commit(req("s1", vec![idle(0), busy(0)]))
        .await
        .expect("commit");
    assert_eq!(r.outcomes, vec![appended(0), appended(2)]);
    let expiration = DEFAULT_PRODUCER_ID_EXPIRATION.as_millis() as i64;
    let stored = |pid| catalog.producer(id, 0, pid);
    let written = stored(7).await.expect("read").expect("row").0.last_write_ms;
    assert!(written > 0);

    // Just before the expiration nothing goes.
    let defaults = ClusterDefaults::default();
    let early = indexer
        .enforce_retention(&defaults, written + expiration)
        .await
        .expect("pass");
    assert_eq!(early.producers_expired, 0);
    // Producer 8 writes again, in a later millisecond; one past the expiration of producer
    // 7's last batch only 7 goes.
    let mut next = 4;
    loop {
        let r = indexer
            .commit(req(&format!("busy-{next}"), vec![busy(next as i32 - 2)]))
            .await
            .expect("commit");
        assert_eq!(r.outcomes, vec![appended(next)]);
        next += 2;
        if stored(8).await.expect("read").expect("row").0.last_write_ms > written {
            break;
        }
    }
    let later = indexer
        .enforce_retention(&defaults, written + expiration + 1)
        .await
        .expect("pass");
    assert_eq!(later.producers_expired, 1);
    assert!(stored(7).await.expect("read").is_none());
    assert!(stored(8).await.expect("read").is_some());

    // Its next batch is taken as a new producer's: any sequence, no OUT_OF_ORDER_SEQUENCE,
    // and the cache did not keep the old state.
    let r = indexer
        .commit(req("s3", vec![idle(40)]))
        .await
        .expect("commit");
    assert_eq!(r.outcomes, vec![appended(next)]);
    // And it is de-duplicated from there on.
    let r = indexer
        .commit(req("s4", vec![idle(40)]))
        .await
        .expect("commit");
    assert_eq!(
        r.outcomes,
        vec![BatchOutcome::Duplicate {
            base_offset: next,
            log_start_offset: 0
        }]
    );
}

/// DynamoDB takes at most 100 operations per transaction: moving the log start past more
/// entries than fit in one write must take several writes, not fail (found by
/// tests/e2e/bench_gc.py: DeleteRecords of 125 entries per partition answered
/// KAFKA_STORAGE_ERROR).
#[tokio::test]
async fn a_log_start_move_past_more_entries_than_one_write_holds_takes_several_writes() {
    let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::with_max_batch_ops(100));
    let catalog = Arc::new(Catalog::new(store));
    let id = catalog
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create")
        .topic_id;
    let indexer = Indexer::start(
        catalog.clone(),
        Arc::new(Watermarks::new()),
        IndexerConfig::default(),
    )
    .await
    .expect("start");
    commit_segments(&indexer, id, 250).await;
    let moved = indexer
        .delete_records(DeleteRecordsRequest {
            shard: 0,
            topic_id: id,
            partition: 0,
            offset: 3 * 240,
        })
        .await
        .expect("delete records");
    assert_eq!(moved.log_start_offset, 720);
    let left = catalog
        .index_entries_from(id, 0, 0, None)
        .await
        .expect("index");
    assert_eq!(left.len(), 10);
    assert_eq!(left[0].base_offset, 720);
}

/// A commit whose write landed but whose answer was lost: the retry is answered from the
/// commit record, and readers must see the records it acknowledges (the watermark moves).
#[tokio::test]
async fn a_retried_commit_whose_first_answer_was_lost_publishes_its_watermark() {
    use kafscale_shared::fault_injection::{FaultPlan, FaultSource, FaultyMetaStore};

    let memory: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
    let faults = FaultSource::fixed(FaultPlan::default());
    let store: Arc<dyn MetaStore> = Arc::new(FaultyMetaStore::new(memory, faults.clone()));
    let catalog = Arc::new(Catalog::new(store));
    let id = catalog
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create")
        .topic_id;
    let watermarks = Arc::new(Watermarks::new());
    let indexer = start_as_a(&catalog, &watermarks).await;
    indexer
        .commit(req("seg-0", vec![batch(id, 0, 0, 3)]))
        .await
        .expect("commit");
    assert_eq!(watermarks.get(id, 0).map(|w| w.high_watermark), Some(3));

    faults.set("lost=1,ops=meta-write".parse().expect("plan"));
    assert!(
        indexer
            .commit(req("seg-1", vec![batch(id, 0, 0, 2)]))
            .await
            .is_err()
    );
    faults.set(FaultPlan::default());
    let retried = indexer
        .commit(req("seg-1", vec![batch(id, 0, 0, 2)]))
        .await
        .expect("retry");
    assert_eq!(retried.outcomes, vec![appended(3)]);
    assert_eq!(
        watermarks.get(id, 0).map(|w| w.high_watermark),
        Some(5),
        "the acknowledged records are visible"
    );
}

mod group_commit;
mod shard_log;

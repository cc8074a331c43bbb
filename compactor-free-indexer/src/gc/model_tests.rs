//! A model test of retention and garbage collection: random interleavings of produce,
//! orphan uploads, DeleteRecords, retention by size, topic deletion, GC passes at advancing
//! times, and crashes of the collector at any store call (its pass cut short, its memory
//! lost), on in-memory stores whose writes hold at most 5 operations (so commits, trims and deletes
//! take several writes).
//!
//! After every step: no index entry names a missing object, and every offset from a
//! partition's log start to its high watermark is held by an index entry whose object has
//! the bytes (a fetch there returns its records). At the end, once time has passed the
//! horizon and the grace period and GC ran undisturbed: the bucket holds exactly the
//! segments index entries reference, and commit records exist only for them.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use kafscale_shared::catalog::now_ms;
use kafscale_shared::keys::new_segment_key;
use kafscale_shared::meta_store::WriteOp;
use kafscale_shared::meta_store::{Item, MemoryMetaStore, MetaStore, MetaStoreError, Query};
use kafscale_shared::object_store::{MemoryObjectStore, ObjectStoreError};
use kafscale_shared::sequencer::{CommitBatch, CommitRequest, DeleteRecordsRequest, Sequencer};
use kafscale_shared::topic_config::ClusterDefaults;
use kafscale_shared::watermarks::Watermarks;
use proptest::prelude::*;

use super::*;
use crate::{Indexer, IndexerConfig};

const PARTITIONS: i32 = 3;
const MAX_AGE: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(30);

/// Store calls left before the collector "crashes" (every later call fails); negative: none.
#[derive(Debug, Default)]
struct Budget(AtomicI64);

impl Budget {
    fn set(&self, calls: i64) {
        self.0.store(calls, Ordering::SeqCst);
    }
    fn spend(&self) -> bool {
        let left = self.0.load(Ordering::SeqCst);
        if left < 0 {
            return true;
        }
        self.0.store(left - 1, Ordering::SeqCst);
        left > 0
    }
}

/// The collector's view of the stores: every call spends the budget.
#[derive(Debug)]
struct Faulty<S> {
    inner: Arc<S>,
    budget: Arc<Budget>,
}

fn crashed() -> std::io::Error {
    std::io::Error::other("crashed")
}

#[async_trait]
impl MetaStore for Faulty<MemoryMetaStore> {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, MetaStoreError> {
        if !self.budget.spend() {
            return Err(MetaStoreError::Unavailable("crashed".into()));
        }
        self.inner.get(key).await
    }
    async fn query(&self, query: Query) -> Result<Vec<Item>, MetaStoreError> {
        if !self.budget.spend() {
            return Err(MetaStoreError::Unavailable("crashed".into()));
        }
        self.inner.query(query).await
    }
    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
        if !self.budget.spend() {
            return Err(MetaStoreError::Unavailable("crashed".into()));
        }
        self.inner.write(ops).await
    }
    fn max_batch_ops(&self) -> usize {
        self.inner.max_batch_ops()
    }
}

#[async_trait]
impl ObjectStore for Faulty<MemoryObjectStore> {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectStoreError> {
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        if !self.budget.spend() {
            return Err(ObjectStoreError::Io {
                key: prefix.into(),
                source: crashed(),
            });
        }
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        if !self.budget.spend() {
            return Err(ObjectStoreError::Io {
                key: key.into(),
                source: crashed(),
            });
        }
        self.inner.delete(key).await
    }
    // One call per key (the default), so a crash can cut a batch in the middle.
}

#[derive(Debug, Clone)]
enum Op {
    Produce {
        partition: i32,
        batches: u8,
    },
    Orphan,
    DeleteRecords {
        partition: i32,
        per_mille: u16,
    },
    RetentionBytes {
        max: u16,
    },
    DeleteTopic,
    Gc {
        advance_s: u16,
        crash_after: Option<u8>,
    },
    RestartCollector,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PARTITIONS, 1u8..4).prop_map(|(partition, batches)| Op::Produce { partition, batches }),
        1 => Just(Op::Orphan),
        2 => (0..PARTITIONS, 0u16..=1000).prop_map(|(partition, per_mille)| Op::DeleteRecords { partition, per_mille }),
        1 => (0u16..400).prop_map(|max| Op::RetentionBytes { max }),
        1 => Just(Op::DeleteTopic),
        4 => (0u16..120, proptest::option::of(0u8..12)).prop_map(|(advance_s, crash_after)| Op::Gc { advance_s, crash_after }),
        1 => Just(Op::RestartCollector),
    ]
}

struct Model {
    catalog: Arc<Catalog>,
    objects: Arc<MemoryObjectStore>,
    indexer: Arc<Indexer>,
    budget: Arc<Budget>,
    gc_catalog: Arc<Catalog>,
    gc_objects: Arc<Faulty<MemoryObjectStore>>,
    gc: GarbageCollector,
    topic: String,
    generation: u32,
    deleted_topics: Vec<Uuid>,
    /// The collector's clock: real time plus what the test advanced.
    now_ms: i64,
    produced: u64,
}

impl Model {
    async fn new() -> Model {
        let meta = Arc::new(MemoryMetaStore::with_max_batch_ops(5));
        let catalog = Arc::new(Catalog::new(meta.clone()));
        let indexer = Indexer::start(
            catalog.clone(),
            Arc::new(Watermarks::new()),
            IndexerConfig::default(),
        )
        .await
        .expect("indexer");
        let objects = Arc::new(MemoryObjectStore::new());
        let budget = Arc::new(Budget::default());
        budget.set(-1);
        let gc_catalog = Arc::new(Catalog::new(Arc::new(Faulty {
            inner: meta,
            budget: budget.clone(),
        })));
        let gc_objects = Arc::new(Faulty {
            inner: objects.clone(),
            budget: budget.clone(),
        });
        let gc = Self::collector(&gc_catalog, &gc_objects);
        let mut model = Model {
            catalog,
            objects,
            indexer,
            budget,
            gc_catalog,
            gc_objects,
            gc,
            topic: String::new(),
            generation: 0,
            deleted_topics: Vec::new(),
            now_ms: now_ms(),
            produced: 0,
        };
        model.new_topic().await;
        model
    }

    fn collector(
        catalog: &Arc<Catalog>,
        objects: &Arc<Faulty<MemoryObjectStore>>,
    ) -> GarbageCollector {
        GarbageCollector::new(
            catalog.clone(),
            objects.clone(),
            GcConfig {
                grace: GRACE,
                segment_commit_max_age: MAX_AGE,
            },
        )
    }

    async fn new_topic(&mut self) {
        self.generation += 1;
        self.topic = format!("t{}", self.generation);
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "-1".to_string());
        self.catalog
            .create_topic(&self.topic, PARTITIONS, configs)
            .await
            .expect("create topic");
    }

    async fn topic_id(&self) -> Uuid {
        self.catalog
            .topic_uncached(&self.topic)
            .await
            .expect("topic")
            .expect("exists")
            .topic_id
    }

    /// The live topic's id and the row of one of its partitions.
    async fn row(&self, partition: i32) -> (Uuid, catalog::PartitionRecord) {
        let topic_id = self.topic_id().await;
        let (row, _) = self
            .catalog
            .partition(topic_id, partition)
            .await
            .expect("row")
            .expect("exists");
        (topic_id, row)
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Produce { partition, batches } => self.produce(partition, batches).await,
            Op::Orphan => {
                let key = new_segment_key(now_ms());
                self.objects
                    .put(&key, Bytes::from_static(b"never committed"))
                    .await
                    .expect("put");
            }
            Op::DeleteRecords {
                partition,
                per_mille,
            } => {
                let (topic_id, row) = self.row(partition).await;
                let span = row.next_offset - row.log_start_offset;
                let offset = row.log_start_offset + span * i64::from(per_mille) / 1000;
                self.indexer
                    .delete_records(DeleteRecordsRequest {
                        shard: 0,
                        topic_id,
                        partition,
                        offset,
                    })
                    .await
                    .expect("delete records");
            }
            Op::RetentionBytes { max } => {
                let topic = self.topic.clone();
                self.catalog
                    .update_topic_configs::<catalog::CatalogError>(&topic, |c| {
                        let mut c = c.clone();
                        c.insert("retention.bytes".into(), max.to_string());
                        Ok(c)
                    })
                    .await
                    .expect("configs");
                self.indexer
                    .enforce_retention(&ClusterDefaults::default(), now_ms())
                    .await
                    .expect("retention");
            }
            Op::DeleteTopic => {
                let topic_id = self.topic_id().await;
                self.deleted_topics.push(topic_id);
                self.catalog
                    .delete_topic(&self.topic)
                    .await
                    .expect("delete topic");
                self.new_topic().await;
            }
            Op::Gc {
                advance_s,
                crash_after,
            } => {
                self.now_ms += i64::from(advance_s) * 1000;
                self.budget.set(crash_after.map_or(-1, i64::from));
                let pass = self.gc.run_pass(self.now_ms).await;
                self.budget.set(-1);
                if pass.is_err() {
                    assert!(
                        crash_after.is_some(),
                        "an undisturbed pass failed: {pass:?}"
                    );
                    self.gc = Self::collector(&self.gc_catalog, &self.gc_objects);
                }
            }
            Op::RestartCollector => {
                self.gc = Self::collector(&self.gc_catalog, &self.gc_objects);
            }
        }
    }

    /// One segment of `batches` batches of 2 records for `partition` (100 bytes each).
    async fn produce(&mut self, partition: i32, batches: u8) {
        let topic_id = self.topic_id().await;
        let key = new_segment_key(now_ms());
        let size = 100 * u64::from(batches);
        self.objects
            .put(&key, Bytes::from(vec![7u8; size as usize]))
            .await
            .expect("put");
        let batches = (0..u64::from(batches))
            .map(|i| CommitBatch {
                topic_id,
                partition,
                byte_start: 100 * i,
                byte_len: 100,
                offset_count: 2,
                record_count: 2,
                first_timestamp: 1,
                max_timestamp: 1,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
            })
            .collect();
        self.indexer
            .commit(CommitRequest {
                segment_key: key,
                shard: 0,
                segment_size: size,
                batches,
            })
            .await
            .expect("commit");
        self.produced += 1;
    }

    /// Every index entry of the live topic, with every partition's offsets checked.
    async fn check_fetchable(&self) -> BTreeSet<String> {
        let mut referenced = BTreeSet::new();
        for partition in 0..PARTITIONS {
            let (topic_id, row) = self.row(partition).await;
            let entries = self
                .catalog
                .index_entries_from(topic_id, partition, 0, None)
                .await
                .expect("index");
            let mut next = row.log_start_offset;
            for e in &entries {
                assert!(
                    e.last_offset >= row.log_start_offset,
                    "entry below the log start"
                );
                assert!(
                    e.base_offset <= next,
                    "offset {next} of {partition} has no entry"
                );
                let bytes = self
                    .objects
                    .get_range(&e.segment_key, e.byte_start..e.byte_start + e.byte_len)
                    .await
                    .unwrap_or_else(|err| {
                        panic!("offsets {}..={}: {err}", e.base_offset, e.last_offset)
                    });
                assert_eq!(bytes.len() as u64, e.byte_len);
                next = e.last_offset + 1;
                referenced.insert(e.segment_key.clone());
            }
            assert_eq!(
                next.max(row.log_start_offset),
                row.next_offset,
                "partition {partition}"
            );
        }
        referenced
    }

    /// Time passes the horizon and the grace period; GC runs undisturbed.
    async fn settle(&mut self) {
        for _ in 0..3 {
            self.now_ms += (MAX_AGE + GRACE).as_millis() as i64 + 1;
            self.gc.run_pass(self.now_ms).await.expect("pass");
        }
        let referenced = self.check_fetchable().await;
        let objects: BTreeSet<String> = self
            .objects
            .list(SEGMENT_PREFIX)
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            objects, referenced,
            "exactly the referenced segments are left"
        );
        let records: BTreeSet<String> = self
            .catalog
            .segment_commits_from(Bound::Unbounded, usize::MAX)
            .await
            .expect("records")
            .into_iter()
            .map(|(sk, _)| catalog::segment_of_commit_sk(&sk).to_string())
            .collect();
        assert_eq!(records, objects, "commit records only of the segments left");
        // Deleted topics' rows are gone, and their markers.
        for topic_id in &self.deleted_topics {
            let mut pks = vec![catalog::partitions_pk(*topic_id)];
            for p in 0..PARTITIONS {
                pks.push(catalog::index_pk(*topic_id, p));
                pks.push(catalog::producer_pk(*topic_id, p));
            }
            for pk in pks {
                let left = self.catalog.item_keys(&pk).await.expect("query");
                assert!(left.is_empty(), "{pk}: {left:?}");
            }
        }
        assert!(
            self.catalog
                .deleted_topics()
                .await
                .expect("markers")
                .is_empty()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn gc_never_deletes_what_an_index_entry_references_and_eventually_deletes_the_rest(
        ops in proptest::collection::vec(op(), 1..48)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut model = Model::new().await;
            for op in &ops {
                model.apply(op).await;
                model.check_fetchable().await;
            }
            model.settle().await;
        });
    }
}

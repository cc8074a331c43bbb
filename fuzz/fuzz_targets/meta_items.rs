//! Metadata-store items as every tier reads them: a filled cluster's items (topics,
//! partitions, index entries, idempotent producers, segment commit records, leases, a group and
//! its committed offsets; `fuzz/src/snapshot.rs`) with some replaced or removed by the input,
//! then read by the catalog (every reader), served by the fetch tier (Fetch by name and by id,
//! ListOffsets earliest, latest and by time) and used by an indexer that starts on them,
//! commits a new segment (a plain and an idempotent batch), retries that commit after a
//! restart and moves a log start offset.
//!
//! A store can hold what this version did not write (corruption, a newer format, a bad hand
//! edit): a reader must answer an error, never panic or hang, and a Kafka answer must still
//! encode. And a commit retried after a restart must get the answer it got the first time.
//!
//! Input: entries `slot: u8, len: u16 BE, value: len bytes`. `slot` picks an item (modulo the
//! number of items, in key order); `len` 0xFFFF removes it instead (no value follows).

#![no_main]

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, ListOffsetsRequest, RequestKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_fetch::{FetchConfig, FetchHandler, FetchService};
use kafscale_fuzz::snapshot::{GROUP, Snapshot, commit_batch, indexer_config, snapshot};
use kafscale_fuzz::{COMPACTED_TOPIC, Started, TOPIC, check_sendable, context, runtime};
use kafscale_indexer::Indexer;
use kafscale_shared::catalog::{Catalog, now_ms};
use kafscale_shared::keys::new_segment_key;
use kafscale_shared::meta_store::{ItemKey, MemoryMetaStore};
use kafscale_shared::object_store::ObjectStore;
use kafscale_shared::sequencer::{CommitRequest, DeleteRecordsRequest, Sequencer};
use kafscale_shared::watermarks::Watermarks;
use kafscale_shared::wire::KafkaHandler;
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

/// Partitions of [`TOPIC`] and [`COMPACTED_TOPIC`].
const TOPICS: [(&str, i32); 2] = [(TOPIC, 3), (COMPACTED_TOPIC, 2)];
/// `len` that removes the item.
const REMOVE: u16 = u16::MAX;

/// The snapshot's items with the input's entries applied.
fn rewritten(data: &[u8], snapshot: &Snapshot) -> Vec<(ItemKey, Bytes)> {
    let mut items: Vec<Option<(ItemKey, Bytes)>> =
        snapshot.items.iter().cloned().map(Some).collect();
    let mut rest = data;
    while rest.len() >= 3 && !items.is_empty() {
        let slot = rest[0] as usize % items.len();
        let len = u16::from_be_bytes([rest[1], rest[2]]);
        rest = &rest[3..];
        if len == REMOVE {
            items[slot] = None;
            continue;
        }
        let len = (len as usize).min(rest.len());
        if let Some((_, value)) = &mut items[slot] {
            *value = Bytes::copy_from_slice(&rest[..len]);
        }
        rest = &rest[len..];
    }
    items.into_iter().flatten().collect()
}

/// Every catalog reader, over every topic and partition (outcomes are not judged: only that
/// each returns).
async fn read_catalog(catalog: &Catalog, topic_ids: &[Uuid]) {
    let _ = catalog.list_topics().await;
    for (name, _) in TOPICS {
        let _ = catalog.topic_uncached(name).await;
    }
    for (id, (_, partitions)) in topic_ids.iter().zip(TOPICS) {
        let _ = catalog.topic_by_id(*id).await;
        for p in 0..partitions {
            let _ = catalog.partition(*id, p).await;
            let _ = catalog.index_entries_from(*id, p, 0, None).await;
            let _ = catalog.producers_of(*id, p).await;
            let _ = catalog.committed_offset(GROUP, *id, p).await;
        }
    }
    let _ = catalog.segment_commits_from(Bound::Unbounded, 100).await;
    let _ = catalog.deleted_topics().await;
    let _ = catalog.leases("").await;
    let _ = catalog.list_groups().await;
    let _ = catalog.committed_offsets(GROUP).await;
}

fn fetch_request(topic_ids: &[Uuid], offset: i64) -> RequestKind {
    let topics = topic_ids
        .iter()
        .zip(TOPICS)
        .map(|(id, (name, partitions))| {
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(name)))
                .with_topic_id(*id)
                .with_partitions(
                    (0..partitions)
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                )
        })
        .collect();
    RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(4 << 20)
            .with_topics(topics),
    )
}

fn list_offsets_request(timestamp: i64) -> RequestKind {
    let topics = TOPICS
        .iter()
        .map(|(name, partitions)| {
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(name)))
                .with_partitions(
                    (0..*partitions)
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )
        })
        .collect();
    RequestKind::ListOffsets(
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(topics),
    )
}

/// Fetch and ListOffsets through the fetch tier; every answer must come and encode.
async fn serve_reads(catalog: Arc<Catalog>, snapshot: &Snapshot) {
    let objects: Arc<dyn ObjectStore> = snapshot.objects.clone();
    let service = FetchService::new(
        catalog,
        objects,
        Arc::new(Watermarks::new()),
        FetchConfig {
            range_cache_bytes: 1 << 20,
            index_cache_entries: 1_000,
            ..FetchConfig::default()
        },
    );
    let handler = FetchHandler::new(service);
    let requests = [
        (ApiKey::Fetch, 12, fetch_request(&snapshot.topic_ids, 0)),
        (ApiKey::Fetch, 13, fetch_request(&snapshot.topic_ids, 4)),
        (ApiKey::ListOffsets, 7, list_offsets_request(-2)),
        (ApiKey::ListOffsets, 7, list_offsets_request(-1)),
        (
            ApiKey::ListOffsets,
            7,
            list_offsets_request(1_700_000_000_003),
        ),
    ];
    for (n, (key, version, request)) in requests.into_iter().enumerate() {
        let dispatch = handler
            .start(context(key, version, n as i32), request)
            .await;
        match Started::spawn(key, version, dispatch).finish().await {
            Some(answer) => check_sendable(key, version, answer),
            None => panic!("{key:?} v{version} got no answer"),
        }
    }
}

/// A new segment holding a plain batch for `t`/0 and the next batch of the snapshot's
/// idempotent producer (producer 0, whose 15 records `fill` wrote to `t`/0).
fn commit_request(topic_id: Uuid) -> CommitRequest {
    let batch = |byte_start, producer_id, base_sequence| {
        commit_batch(topic_id, 0, byte_start, producer_id, base_sequence)
    };
    CommitRequest {
        segment_key: new_segment_key(now_ms()),
        shard: 0,
        segment_size: 200,
        batches: vec![batch(0, -1, -1), batch(100, 0, 15)],
    }
}

/// An indexer on the items: commits, then a restarted one retries the same commit (the same
/// answer if both succeed), then a DeleteRecords.
async fn sequence(meta: Arc<MemoryMetaStore>, topic_ids: &[Uuid]) {
    let start = || async {
        let catalog = Arc::new(Catalog::new(meta.clone()));
        Indexer::start(catalog, Arc::new(Watermarks::new()), indexer_config()).await
    };
    let Ok(indexer) = start().await else {
        return;
    };
    let request = commit_request(topic_ids[0]);
    let first = indexer.commit(request.clone()).await;
    drop(indexer);
    let Ok(restarted) = start().await else {
        return;
    };
    let retried = restarted.commit(request).await;
    if let (Ok(first), Ok(retried)) = (&first, &retried) {
        assert_eq!(
            first, retried,
            "a commit retried after a restart got another answer"
        );
    }
    let _ = restarted
        .delete_records(DeleteRecordsRequest {
            shard: 0,
            topic_id: topic_ids[0],
            partition: 1,
            offset: 3,
        })
        .await;
}

fuzz_target!(|data: &[u8]| {
    let snapshot = snapshot();
    let items = rewritten(data, snapshot);
    runtime().block_on(async {
        let meta = Arc::new(MemoryMetaStore::with_items(items));
        let catalog = Arc::new(Catalog::new(meta.clone()));
        read_catalog(&catalog, &snapshot.topic_ids).await;
        serve_reads(catalog, snapshot).await;
        sequence(meta, &snapshot.topic_ids).await;
    });
});

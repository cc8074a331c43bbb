//! The stores of a filled cluster, frozen with fixed names, for the `meta_items` target: it
//! starts every input from a copy of these items, overwrites some with the input's bytes and
//! runs the readers of every tier over them.
//!
//! Why fixed names: topic ids and segment keys are random (a UUID, the creation time), and the
//! input picks the item it rewrites by its position in key order. With random names that
//! order, and so what a corpus entry means, would change from one process to the next. Every
//! topic id and segment key is therefore replaced, in keys, values and object names alike, by
//! one derived from its creation order.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use kafscale_indexer::IndexerConfig;
use kafscale_shared::catalog::{CommittedOffset, ITEM_FORMAT};
use kafscale_shared::keys::segment_created_ms;
use kafscale_shared::meta_store::ItemKey;
use kafscale_shared::object_store::{MemoryObjectStore, ObjectStore};
use kafscale_shared::sequencer::CommitBatch;
use uuid::Uuid;

use crate::{COMPACTED_TOPIC, Cluster, TOPIC, fill, runtime};

/// The consumer group whose committed offsets the snapshot holds.
pub const GROUP: &str = "g";

/// A filled cluster's metadata items and segment objects, with fixed names.
pub struct Snapshot {
    /// Every metadata item, in key order.
    pub items: Vec<(ItemKey, Bytes)>,
    /// The segment objects, under their fixed keys (read only: every input shares them).
    pub objects: Arc<MemoryObjectStore>,
    /// The ids of [`TOPIC`] and [`COMPACTED_TOPIC`].
    pub topic_ids: Vec<Uuid>,
}

/// The fixed id of the `n`-th topic created.
pub fn fixed_topic_id(n: usize) -> Uuid {
    Uuid::from_u128(0x7fff_0000_0000_4000_8000_0000_0000_0000 + n as u128)
}

/// The fixed key of the `n`-th segment object created.
fn fixed_segment_key(n: usize) -> String {
    format!("segments/00/0000000000001-{n:032x}.kseg")
}

/// A batch of 2 records (100 bytes at `byte_start`) for a commit request on the snapshot's
/// items; `producer_id` -1: not idempotent.
pub fn commit_batch(
    topic_id: Uuid,
    partition: i32,
    byte_start: u64,
    producer_id: i64,
    base_sequence: i32,
) -> CommitBatch {
    CommitBatch {
        topic_id,
        partition,
        byte_start,
        byte_len: 100,
        offset_count: 2,
        record_count: 2,
        first_timestamp: 1_700_000_000_000,
        max_timestamp: 1_700_000_000_001,
        producer_id,
        producer_epoch: 0,
        base_sequence,
    }
}

/// The configuration of an indexer on the snapshot's items.
pub fn indexer_config() -> IndexerConfig {
    IndexerConfig {
        // The owner of the snapshot's shard lease: a restart takes its own lease at once.
        owner_id: "fuzz".into(),
        owner_addr: "in-process".into(),
        lease_ttl: Duration::from_secs(30),
        shard_count: 1,
        // The snapshot's segment keys carry a fixed, old creation time.
        segment_commit_max_age: Duration::from_secs(100 * 365 * 86_400),
        ..IndexerConfig::default()
    }
}

/// The snapshot, built once per process on [`runtime`].
pub fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| runtime().block_on(take()))
}

async fn take() -> Snapshot {
    let cluster = Cluster::start().await;
    fill(&cluster).await;
    let offsets = cluster
        .topic_ids
        .iter()
        .zip([TOPIC, COMPACTED_TOPIC])
        .map(|(id, name)| (*id, 0, committed(name, 3)))
        .collect();
    cluster
        .catalog
        .register_group(GROUP, None)
        .await
        .expect("register group");
    cluster
        .catalog
        .commit_offsets(GROUP, offsets, None)
        .await
        .expect("commit offsets");

    let mut renames: Vec<(String, String)> = Vec::new();
    let objects = Arc::new(MemoryObjectStore::new());
    let mut listed = cluster.objects.list("").await.expect("list objects");
    // Creation order (the time in the key), not key order: keys start with a random spread.
    listed.sort_by_key(|o| (segment_created_ms(&o.key), o.key.clone()));
    for (n, object) in listed.iter().enumerate() {
        let fixed = fixed_segment_key(n);
        let data = cluster.objects.get(&object.key).await.expect("get object");
        objects.put(&fixed, data).await.expect("put object");
        renames.push((object.key.clone(), fixed));
    }
    let topic_ids: Vec<Uuid> = (0..cluster.topic_ids.len()).map(fixed_topic_id).collect();
    for (id, fixed) in cluster.topic_ids.iter().zip(&topic_ids) {
        renames.push((id.to_string(), fixed.to_string()));
        renames.push((id.simple().to_string(), fixed.simple().to_string()));
    }
    let rename = |text: &str| {
        renames
            .iter()
            .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
    };
    let mut items: Vec<(ItemKey, Bytes)> = cluster
        .meta
        .dump()
        .into_iter()
        .map(|(key, value)| {
            let key = ItemKey::new(rename(&key.pk), rename(&key.sk));
            let value = match std::str::from_utf8(&value) {
                Ok(text) => Bytes::from(rename(text)),
                Err(_) => value,
            };
            (key, value)
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    cluster.stop().await;
    Snapshot {
        items,
        objects,
        topic_ids,
    }
}

fn committed(topic: &str, offset: i64) -> CommittedOffset {
    CommittedOffset {
        format: ITEM_FORMAT,
        topic: topic.to_string(),
        offset,
        leader_epoch: -1,
        metadata: Some("m".into()),
        committed_at_ms: 1_700_000_000_000,
    }
}

//! Partition → indexer shard mapping and the cluster settings every process must agree on.
//!
//! Partitions hash to a fixed number of shards; each shard has exactly one sequencer at a time,
//! the holder of the shard's lease. The shard count is written once into the metadata store
//! (`meta` / `cluster`) by the first process that starts, and every later process reads it, so
//! gateways and indexers can never disagree on which shard owns a partition.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::{Catalog, CatalogError, ITEM_FORMAT, decode, encode};
use crate::meta_store::{Condition, ItemKey, MetaStore, MetaStoreError, WriteOp};

/// Default number of indexer shards of a new cluster.
pub const DEFAULT_SHARD_COUNT: u32 = 16;

/// The shard that sequences `partition` of `topic_id` (stable across processes and releases).
pub fn shard_of(topic_id: Uuid, partition: i32, shard_count: u32) -> u32 {
    let h = crc32c::crc32c_append(
        crc32c::crc32c(topic_id.as_bytes()),
        &partition.to_be_bytes(),
    );
    h % shard_count.max(1)
}

/// Prefix of every shard lease name.
pub const SHARD_LEASE_PREFIX: &str = "indexer-shard-";

/// The lease that makes an indexer the owner of `shard`.
pub fn shard_lease_name(shard: u32) -> String {
    format!("{SHARD_LEASE_PREFIX}{shard:05}")
}

/// The shard a lease name stands for.
pub fn shard_of_lease_name(name: &str) -> Option<u32> {
    name.strip_prefix(SHARD_LEASE_PREFIX)?.parse().ok()
}

/// Settings fixed at cluster creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    pub format: u32,
    pub shard_count: u32,
}

fn cluster_key() -> ItemKey {
    ItemKey::new("meta", "cluster")
}

/// Reads the cluster settings (`None`: no process has started the cluster yet).
pub async fn read_cluster(meta: &dyn MetaStore) -> Result<Option<ClusterSettings>, MetaStoreError> {
    let key = cluster_key();
    match meta.get(&key).await? {
        Some(item) => Ok(Some(decode(&key, &item.value)?)),
        None => Ok(None),
    }
}

/// Reads the cluster settings, creating them with `shard_count` if this is a new cluster.
/// Returns the settings in force (an existing cluster keeps its own shard count).
pub async fn load_or_init_cluster(
    catalog: &Catalog,
    shard_count: u32,
) -> Result<ClusterSettings, CatalogError> {
    let key = cluster_key();
    loop {
        if let Some(item) = catalog.store().get(&key).await? {
            return Ok(decode(&key, &item.value)?);
        }
        let settings = ClusterSettings {
            format: ITEM_FORMAT,
            shard_count: shard_count.max(1),
        };
        let op = WriteOp::Put {
            key: key.clone(),
            value: encode(&settings),
            condition: Condition::Absent,
        };
        match catalog.store().write(vec![op]).await {
            Ok(()) => return Ok(settings),
            // Another process created it first: read theirs.
            Err(MetaStoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::meta_store::MemoryMetaStore;

    #[test]
    fn shards_are_stable_and_spread() {
        let id = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
        assert_eq!(shard_of(id, 3, 16), shard_of(id, 3, 16));
        let used: std::collections::HashSet<u32> = (0..64).map(|p| shard_of(id, p, 16)).collect();
        assert!(
            used.len() > 8,
            "64 partitions spread over most of 16 shards: {used:?}"
        );
        assert!((0..64).all(|p| shard_of(id, p, 16) < 16));
        assert_eq!(shard_of(id, 3, 1), 0);
        assert_eq!(shard_of_lease_name(&shard_lease_name(12)), Some(12));
        assert_eq!(shard_of_lease_name("group-x"), None);
    }

    #[tokio::test]
    async fn the_first_process_fixes_the_shard_count() {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::new()));
        assert_eq!(
            load_or_init_cluster(&catalog, 8)
                .await
                .expect("init")
                .shard_count,
            8
        );
        assert_eq!(
            load_or_init_cluster(&catalog, 32)
                .await
                .expect("read")
                .shard_count,
            8
        );
    }
}

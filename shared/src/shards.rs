//! Partition → indexer shard mapping and the cluster settings every process must agree on.
//!
//! Partitions hash to a fixed number of shards; each shard has exactly one sequencer at a time,
//! the holder of the shard's lease. The shard count is written once into the metadata store
//! (`meta` / `cluster`) by the first process that starts, and every later process reads it, so
//! gateways and indexers can never disagree on which shard owns a partition.
//!
//! The settings also hold the metadata layout commits use. A new cluster starts with the one
//! its first process is configured for (the shard log by default); an existing cluster keeps
//! its own until [`switch_to_shard_log`], which refuses while a process of a release that
//! cannot read the log is alive (such a process, handed a switched shard, would sequence from
//! rows the log has moved past). Owners switch each shard as they acquire it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::{Catalog, CatalogError, ITEM_FORMAT, LeaseRecord, decode, encode};
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

/// Layout 1: a commit is one transaction of the lease check, a commit record and a row and an
/// index entry per partition.
pub const LAYOUT_TRANSACTIONS: u32 = 1;
/// Layout 2: a commit is one item appended to the shard log ([`crate::shard_log`]).
pub const LAYOUT_SHARD_LOG: u32 = 2;
/// Layout 3: the shard log with short items (log items in format 3, index pages in format 4:
/// about half the bytes, so half the write units). Releases that read only layout 2 refuse
/// these items as corrupt, so a cluster moves here only once none of them is alive.
pub const LAYOUT_SHORT_ITEMS: u32 = 3;
/// The layout new clusters get by default and [`switch_to_shard_log`] moves clusters to.
pub const LAYOUT_NEWEST: u32 = LAYOUT_SHORT_ITEMS;

fn layout_of_old_settings() -> u32 {
    LAYOUT_TRANSACTIONS
}

/// Settings fixed at cluster creation (the layout moves forward once, by
/// [`switch_to_shard_log`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    pub format: u32,
    pub shard_count: u32,
    /// [`LAYOUT_TRANSACTIONS`], [`LAYOUT_SHARD_LOG`] or [`LAYOUT_SHORT_ITEMS`]; 1 in settings
    /// written before it existed.
    #[serde(default = "layout_of_old_settings")]
    pub layout: u32,
}

impl ClusterSettings {
    /// Whether shard owners switch the shards they acquire to the shard log.
    pub fn on_shard_log(&self) -> bool {
        self.layout >= LAYOUT_SHARD_LOG
    }

    /// Whether shard owners write short log items and index pages ([`LAYOUT_SHORT_ITEMS`]).
    pub fn short_items(&self) -> bool {
        self.layout >= LAYOUT_SHORT_ITEMS
    }
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

/// Reads the cluster settings, creating them with `shard_count` and `layout` if this is a new
/// cluster. Returns the settings in force (an existing cluster keeps its own).
pub async fn load_or_init_cluster(
    catalog: &Catalog,
    shard_count: u32,
    layout: u32,
) -> Result<ClusterSettings, CatalogError> {
    let key = cluster_key();
    loop {
        if let Some(item) = catalog.store().get(&key).await? {
            return Ok(decode(&key, &item.value)?);
        }
        let settings = ClusterSettings {
            format: ITEM_FORMAT,
            shard_count: shard_count.max(1),
            layout: layout.clamp(LAYOUT_TRANSACTIONS, LAYOUT_NEWEST),
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

/// Why a cluster was not switched to the shard log.
#[derive(Debug, thiserror::Error)]
pub enum LayoutSwitchError {
    #[error("no cluster settings yet: run `kafscale admin init` first")]
    NoCluster,
    #[error(
        "processes of a release that cannot read layout {LAYOUT_NEWEST} (the shard log with short items) are alive: {}; upgrade them first",
        .0.join(", ")
    )]
    OldProcesses(Vec<String>),
    #[error(transparent)]
    Store(#[from] CatalogError),
}

/// Moves an existing cluster to the newest layout, [`LAYOUT_NEWEST`] (idempotent), after
/// checking every live lease and the live members of `member_kinds`: each must have been
/// written by a release that reads it (`None`: no check, for a caller that knows it is the
/// only process, as standalone mode holding its data directory's lock). Returns the settings
/// in force. Owners switch their shards as they acquire them; the switch is for good.
pub async fn switch_to_shard_log(
    catalog: &Catalog,
    member_kinds: Option<&[&str]>,
) -> Result<ClusterSettings, LayoutSwitchError> {
    let key = cluster_key();
    loop {
        let item = catalog
            .store()
            .get(&key)
            .await
            .map_err(CatalogError::from)?;
        let Some(item) = item else {
            return Err(LayoutSwitchError::NoCluster);
        };
        let settings: ClusterSettings = decode(&key, &item.value).map_err(CatalogError::from)?;
        if settings.layout >= LAYOUT_NEWEST {
            return Ok(settings);
        }
        if let Some(kinds) = member_kinds {
            let old = processes_without_shard_log(catalog, kinds).await?;
            if !old.is_empty() {
                return Err(LayoutSwitchError::OldProcesses(old));
            }
        }
        let switched = ClusterSettings {
            layout: LAYOUT_NEWEST,
            ..settings
        };
        let op = WriteOp::Put {
            key: key.clone(),
            value: encode(&switched),
            condition: Condition::Version(item.version),
        };
        match catalog.store().write(vec![op]).await {
            Ok(()) => return Ok(switched),
            Err(MetaStoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(CatalogError::from(e).into()),
        }
    }
}

/// The live leases and members written by a release that cannot read the newest layout, as
/// `owner (address)`.
async fn processes_without_shard_log(
    catalog: &Catalog,
    member_kinds: &[&str],
) -> Result<Vec<String>, CatalogError> {
    let now = crate::catalog::now_ms();
    let mut records: Vec<LeaseRecord> = catalog
        .leases("")
        .await?
        .into_iter()
        .map(|(_, lease, _)| lease)
        .filter(|lease| !lease.released && lease.expires_at_ms > now)
        .collect();
    for kind in member_kinds {
        records.extend(catalog.live_members(kind).await?);
    }
    let mut old: Vec<String> = records
        .iter()
        .filter(|r| !r.reads_layout(LAYOUT_NEWEST))
        .map(|r| format!("{} ({})", r.owner, r.owner_addr))
        .collect();
    old.sort();
    old.dedup();
    Ok(old)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

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

    /// A lease or member record of format `format`, live for another minute.
    fn live_record(format: u32, owner: &str, addr: &str) -> LeaseRecord {
        LeaseRecord {
            format,
            owner: owner.into(),
            owner_addr: addr.into(),
            epoch: 1,
            expires_at_ms: crate::catalog::now_ms() + 60_000,
            ttl_ms: 10_000,
            released: false,
            listeners: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_first_process_fixes_the_shard_count() {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::new()));
        assert_eq!(
            load_or_init_cluster(&catalog, 8, LAYOUT_SHARD_LOG)
                .await
                .expect("init")
                .shard_count,
            8
        );
        assert_eq!(
            load_or_init_cluster(&catalog, 32, LAYOUT_TRANSACTIONS)
                .await
                .expect("read")
                .shard_count,
            8
        );
    }

    #[tokio::test]
    async fn an_existing_cluster_keeps_its_layout_until_switched_and_the_switch_waits_for_old_processes()
     {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::new()));
        // Settings as releases before the layout field wrote them.
        let ops = vec![WriteOp::Put {
            key: cluster_key(),
            value: bytes::Bytes::from_static(br#"{"format":1,"shard_count":4}"#),
            condition: Condition::Absent,
        }];
        catalog.store().write(ops).await.expect("write");
        let settings = load_or_init_cluster(&catalog, 16, LAYOUT_SHARD_LOG)
            .await
            .expect("read");
        assert_eq!(
            (settings.shard_count, settings.layout),
            (4, LAYOUT_TRANSACTIONS)
        );
        assert!(!settings.on_shard_log());
        // An indexer of an old release holds a shard; a gateway of this release is a member.
        let old = live_record(ITEM_FORMAT, "indexer-old", "10.0.0.7:9093");
        let lease = crate::catalog::lease_key(&shard_lease_name(2));
        let ops = vec![WriteOp::Put {
            key: lease.clone(),
            value: encode(&old),
            condition: Condition::None,
        }];
        catalog.store().write(ops).await.expect("write");
        catalog
            .heartbeat_member("ingest", "gw-1", "10.0.0.8:9092", Duration::from_secs(60))
            .await
            .expect("member");
        match switch_to_shard_log(&catalog, Some(&["ingest"])).await {
            Err(LayoutSwitchError::OldProcesses(who)) => {
                assert_eq!(who, ["indexer-old (10.0.0.7:9093)"]);
            }
            other => panic!("switched with an old indexer alive: {other:?}"),
        }
        assert_eq!(
            read_cluster(catalog.store().as_ref())
                .await
                .expect("read")
                .map(|c| c.layout),
            Some(1)
        );
        // The old indexer is gone (its lease released): the switch goes through, once.
        let released = LeaseRecord {
            released: true,
            ..old
        };
        let ops = vec![WriteOp::Put {
            key: lease,
            value: encode(&released),
            condition: Condition::None,
        }];
        catalog.store().write(ops).await.expect("write");
        let switched = switch_to_shard_log(&catalog, Some(&["ingest"]))
            .await
            .expect("switch");
        assert_eq!((switched.shard_count, switched.layout), (4, LAYOUT_NEWEST));
        assert!(switched.short_items());
        let again = switch_to_shard_log(&catalog, Some(&["ingest"]))
            .await
            .expect("again");
        assert_eq!(again, switched);
        let read = load_or_init_cluster(&catalog, 16, LAYOUT_TRANSACTIONS).await;
        assert!(read.expect("read").on_shard_log());
    }

    #[tokio::test]
    async fn a_shard_log_cluster_moves_to_short_items_once_no_process_of_the_last_release_lives() {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::new()));
        let settings = load_or_init_cluster(&catalog, 4, LAYOUT_SHARD_LOG)
            .await
            .expect("init");
        assert!(settings.on_shard_log() && !settings.short_items());
        // A fetch gateway of the release before (it reads layout 2, not 3) is alive.
        let member = live_record(LAYOUT_SHARD_LOG, "coordinator-old", "10.0.0.9:9092");
        let key = ItemKey::new("member/group-coordinator", "coordinator-old");
        let ops = vec![WriteOp::Put {
            key: key.clone(),
            value: encode(&member),
            condition: Condition::None,
        }];
        catalog.store().write(ops).await.expect("write");
        let kinds = ["group-coordinator"];
        let refused = switch_to_shard_log(&catalog, Some(&kinds)).await;
        match refused {
            Err(e @ LayoutSwitchError::OldProcesses(_)) => {
                assert!(e.to_string().contains("coordinator-old"), "{e}");
            }
            other => panic!("moved with an old gateway alive: {other:?}"),
        }
        catalog
            .store()
            .write(vec![WriteOp::Delete {
                key,
                condition: Condition::None,
            }])
            .await
            .expect("delete");
        let moved = switch_to_shard_log(&catalog, Some(&kinds))
            .await
            .expect("move");
        assert_eq!((moved.shard_count, moved.layout), (4, LAYOUT_SHORT_ITEMS));
    }

    #[tokio::test]
    async fn switching_a_cluster_that_does_not_exist_says_to_init_it() {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::new()));
        let r = switch_to_shard_log(&catalog, None).await;
        assert!(matches!(r, Err(LayoutSwitchError::NoCluster)), "{r:?}");
    }
}

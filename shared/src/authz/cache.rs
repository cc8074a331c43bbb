//! The ACL set every gateway authorizes from: loaded before the listener serves, then kept
//! fresh by a background refresh.
//!
//! Why a background refresh rather than a reload on lookup (as the topic catalog does): the
//! decision is made in [`crate::wire::KafkaHandler::start`], which runs on the connection task
//! in request order and must never wait, so the current set must always be at hand. Each
//! refresh reads the version item (one strongly consistent read); only a changed version loads
//! the bindings again.
//!
//! Staleness: a gateway that changes ACLs (CreateAcls, DeleteAcls) refreshes before it answers,
//! so its own next requests see the change. Any other gateway sees it within one refresh
//! interval (`--acl-refresh-ms`) plus the duration of one refresh. While the store is
//! unreachable the last set loaded stays in force (a warning is logged per failed refresh),
//! as Kafka brokers keep their cached ACLs when ZooKeeper or the controller is away.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafscale_acl::AclIndex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::store::AclStore;
use crate::meta_store::MetaStoreError;

struct Loaded {
    version: u64,
    index: Arc<AclIndex>,
}

/// The cached ACL set of one process.
pub struct AclCache {
    store: AclStore,
    current: RwLock<Loaded>,
    /// Serialises refreshes (the periodic one and those after a change on this gateway).
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AclCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclCache").finish_non_exhaustive()
    }
}

impl AclCache {
    /// Loads the stored set.
    pub async fn load(store: AclStore) -> Result<Arc<Self>, MetaStoreError> {
        let stored = store.load().await?;
        Ok(Arc::new(AclCache {
            store,
            current: RwLock::new(Loaded {
                version: stored.version,
                index: Arc::new(AclIndex::new(stored.bindings)),
            }),
            refreshing: tokio::sync::Mutex::new(()),
        }))
    }

    /// The store the set is read from.
    pub fn store(&self) -> &AclStore {
        &self.store
    }

    /// The current set (never waits on the store).
    pub fn index(&self) -> Arc<AclIndex> {
        self.read().index.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the set again if its stored version changed.
    pub async fn refresh(&self) -> Result<(), MetaStoreError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let version = self.store.version().await?;
        if version == self.read().version {
            return Ok(());
        }
        let stored = self.store.load().await?;
        debug!(
            version = stored.version,
            acls = stored.bindings.len(),
            "acls reloaded"
        );
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Loaded {
            version: stored.version,
            index: Arc::new(AclIndex::new(stored.bindings)),
        };
        Ok(())
    }

    /// Refreshes every `interval` until `shutdown`.
    pub async fn run_refresher(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.refresh().await {
                        warn!(error = %e, "refreshing acls failed; the last loaded set stays in force");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_store::MemoryMetaStore;
    use kafscale_acl::{AclBinding, Operation, PatternType, Permission, ResourceType, Session};

    #[tokio::test]
    async fn a_change_elsewhere_shows_after_a_refresh() {
        let meta = Arc::new(MemoryMetaStore::new());
        let cache = AclCache::load(AclStore::new(meta.clone())).await.unwrap();
        let other_gateway = AclStore::new(meta);
        let alice = Session {
            principal: "User:alice",
            host: "127.0.0.1",
        };
        let read = |cache: &AclCache| {
            cache
                .index()
                .authorize(&alice, Operation::Read, ResourceType::Topic, "t")
        };
        assert!(!read(&cache));
        other_gateway
            .create(&[AclBinding {
                resource_type: ResourceType::Topic,
                resource_name: "t".into(),
                pattern: PatternType::Literal,
                principal: "User:alice".into(),
                host: "*".into(),
                operation: Operation::Read,
                permission: Permission::Allow,
            }])
            .await
            .unwrap();
        assert!(!read(&cache), "cached until refreshed");
        cache.refresh().await.unwrap();
        assert!(read(&cache));
    }
}

//! ACL bindings in the metadata store.
//!
//! Layout: `acl` / `{sha256 of the binding}` → [`AclRecord`] (JSON with a `format` field, like
//! every catalog item), and `meta` / `acl-version`, put in the same atomic batch as every
//! change, whose item version therefore grows with every change.
//!
//! Why one item per binding (Kafka's ZooKeeper layout keeps one node per resource): creating a
//! binding is a put of a key derived from the binding itself, idempotent and with no
//! read-modify-write, so CreateAcls calls on different gateways never contend; deleting is a
//! delete of known keys; loading every binding is one query. The key is a digest because a
//! binding's fields (a certificate subject as principal, a long group name) can together exceed
//! DynamoDB's 1024-byte sort key. The version item lets a gateway learn with one read whether
//! anything changed, so the refresh of every gateway costs one small read when nothing did.

use std::sync::Arc;

use kafscale_acl::AclBinding;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{ITEM_FORMAT, decode, encode};
use crate::meta_store::{Condition, ItemKey, MetaStore, MetaStoreError, Query, WriteOp};

/// The partition key of every ACL binding.
pub const ACL_PK: &str = "acl";

/// The item whose version counts changes of the ACL set.
pub fn acl_version_key() -> ItemKey {
    ItemKey::new("meta", "acl-version")
}

/// The item of one binding.
pub fn acl_key(binding: &AclBinding) -> ItemKey {
    let canonical = serde_json::to_vec(binding).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    ItemKey::new(ACL_PK, hex)
}

/// The stored form of a binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRecord {
    pub format: u32,
    pub binding: AclBinding,
}

/// The stored ACL set at one version.
#[derive(Debug, Clone, Default)]
pub struct StoredAcls {
    /// The version of [`acl_version_key`] read before the bindings (0: never changed).
    pub version: u64,
    pub bindings: Vec<AclBinding>,
}

/// ACL bindings over the metadata store.
#[derive(Debug, Clone)]
pub struct AclStore {
    store: Arc<dyn MetaStore>,
}

impl AclStore {
    pub fn new(store: Arc<dyn MetaStore>) -> Self {
        AclStore { store }
    }

    /// The change count of the ACL set (one strongly consistent read).
    pub async fn version(&self) -> Result<u64, MetaStoreError> {
        Ok(self
            .store
            .get(&acl_version_key())
            .await?
            .map_or(0, |item| item.version))
    }

    /// Every binding. The version is read first, so the bindings are at least that new: a
    /// change racing the load shows as a newer version at the next check.
    pub async fn load(&self) -> Result<StoredAcls, MetaStoreError> {
        let version = self.version().await?;
        let mut bindings = Vec::new();
        for item in self.store.query(Query::all(ACL_PK)).await? {
            let record: AclRecord = decode(&item.key, &item.value)?;
            bindings.push(record.binding);
        }
        Ok(StoredAcls { version, bindings })
    }

    /// Stores `bindings` (an existing one is left as it is), in batches the store accepts.
    pub async fn create(&self, bindings: &[AclBinding]) -> Result<(), MetaStoreError> {
        self.write_in_batches(bindings, |b| WriteOp::Put {
            key: acl_key(b),
            value: encode(&AclRecord {
                format: ITEM_FORMAT,
                binding: b.clone(),
            }),
            condition: Condition::None,
        })
        .await
    }

    /// Removes `bindings` (a missing one is fine).
    pub async fn delete(&self, bindings: &[AclBinding]) -> Result<(), MetaStoreError> {
        self.write_in_batches(bindings, |b| WriteOp::Delete {
            key: acl_key(b),
            condition: Condition::None,
        })
        .await
    }

    /// One atomic write per batch, each with the version item; a binding given twice is
    /// written once.
    async fn write_in_batches(
        &self,
        bindings: &[AclBinding],
        op: impl Fn(&AclBinding) -> WriteOp,
    ) -> Result<(), MetaStoreError> {
        let mut unique: Vec<&AclBinding> = bindings.iter().collect();
        unique.sort();
        unique.dedup();
        let per_batch = self.store.max_batch_ops().saturating_sub(1).max(1);
        for chunk in unique.chunks(per_batch) {
            let mut ops: Vec<WriteOp> = chunk.iter().map(|b| op(b)).collect();
            ops.push(WriteOp::Put {
                key: acl_version_key(),
                value: encode(&serde_json::json!({ "format": ITEM_FORMAT })),
                condition: Condition::None,
            });
            self.store.write(ops).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_store::MemoryMetaStore;
    use kafscale_acl::{Operation, PatternType, Permission, ResourceType};

    fn binding(name: &str) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    #[tokio::test]
    async fn create_load_delete_bump_the_version() {
        let store = AclStore::new(Arc::new(MemoryMetaStore::new()));
        assert_eq!(store.load().await.unwrap().version, 0);
        store
            .create(&[binding("a"), binding("b"), binding("a")])
            .await
            .unwrap();
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.version, 1);
        let mut names: Vec<_> = loaded
            .bindings
            .iter()
            .map(|b| b.resource_name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        store.create(&[binding("a")]).await.unwrap();
        store.delete(&[binding("a"), binding("zz")]).await.unwrap();
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.version, 3);
        assert_eq!(loaded.bindings, vec![binding("b")]);
    }

    #[test]
    fn golden_record() {
        let record = AclRecord {
            format: ITEM_FORMAT,
            binding: binding("orders"),
        };
        let json = String::from_utf8(encode(&record).to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"format":1,"binding":{"resource_type":"TOPIC","resource_name":"orders","pattern":"LITERAL","principal":"User:alice","host":"*","operation":"READ","permission":"ALLOW"}}"#
        );
        let key = acl_key(&record.binding);
        assert_eq!(key.sk.len(), 64);
        assert_eq!(decode::<AclRecord>(&key, json.as_bytes()).unwrap(), record);
    }
}

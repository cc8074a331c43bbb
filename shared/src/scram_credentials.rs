//! SCRAM credentials in the metadata store: one item per user and mechanism under the
//! partition key [`SCRAM_CREDENTIAL_PK`], so listing every user is one query and a user's
//! changes are one atomic write. The item is JSON like every catalog item (a `format` field,
//! binary fields in base64): salt, iteration count, StoredKey and ServerKey; never a password.
//!
//! [`CredentialStore`] is the [`CredentialSource`] the SASL exchanges read from. It has no
//! cache: a login costs one or two strongly consistent reads, and a changed or deleted
//! credential counts from the next login on.
//!
//! The cluster's decoy secret lives here too (`meta` / `sasl-decoy-secret`): the key of the
//! fake salts answered for unknown SCRAM users. It is drawn at random by the first process that
//! needs it and read by all others, so every gateway answers the same salt for the same
//! unknown user and asking several of them reveals nothing.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kafscale_sasl::{
    Authenticator, CredentialSource, MIN_ITERATIONS, Mechanism, SaslConfig, SaslError,
    ScramCredential, ScramMechanism, random_salt,
};
use serde::{Deserialize, Serialize};

use crate::catalog::{ITEM_FORMAT, SCRAM_CREDENTIAL_PK, decode, encode, scram_credential_key};
use crate::meta_store::{Condition, ItemKey, MetaStore, MetaStoreError, Query, WriteOp};

/// Longest user name accepted (the sort key, name plus mechanism, must stay far below
/// DynamoDB's 1024 bytes).
pub const MAX_USER_BYTES: usize = 512;

/// The stored form of a [`ScramCredential`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredentialRecord {
    pub format: u32,
    pub user: String,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// Base64.
    pub salt: String,
    pub iterations: u32,
    /// Base64.
    pub stored_key: String,
    /// Base64.
    pub server_key: String,
}

impl ScramCredentialRecord {
    pub fn new(user: &str, credential: &ScramCredential) -> Self {
        ScramCredentialRecord {
            format: ITEM_FORMAT,
            user: user.to_string(),
            mechanism: credential.mechanism.name().to_string(),
            salt: BASE64.encode(&credential.salt),
            iterations: credential.iterations,
            stored_key: BASE64.encode(&credential.stored_key),
            server_key: BASE64.encode(&credential.server_key),
        }
    }

    /// The credential, checked (mechanism, lengths, iteration bounds).
    pub fn credential(&self, key: &ItemKey) -> Result<ScramCredential, MetaStoreError> {
        let corrupt = |reason: String| MetaStoreError::Corrupt {
            key: key.clone(),
            reason,
        };
        let mechanism = ScramMechanism::from_name(&self.mechanism)
            .ok_or_else(|| corrupt(format!("unknown mechanism {:?}", self.mechanism)))?;
        let bytes = |field: &str, b64: &str| {
            BASE64
                .decode(b64)
                .map_err(|e| corrupt(format!("{field}: {e}")))
        };
        ScramCredential::from_parts(
            mechanism,
            bytes("salt", &self.salt)?,
            i64::from(self.iterations),
            bytes("stored_key", &self.stored_key)?,
            bytes("server_key", &self.server_key)?,
        )
        .map_err(|e| corrupt(e.to_string()))
    }
}

/// One change of a user's credentials (see [`CredentialStore::apply`]).
#[derive(Debug, Clone)]
pub enum CredentialChange {
    Upsert(ScramCredential),
    /// Fails the whole change set if the user has no credential for the mechanism.
    Delete(ScramMechanism),
}

/// Why [`CredentialStore::apply`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("user {user:?} has no {mechanism} credential")]
    NotFound {
        user: String,
        mechanism: ScramMechanism,
    },
    #[error(transparent)]
    Store(#[from] MetaStoreError),
}

/// SCRAM credentials over the metadata store.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    store: Arc<dyn MetaStore>,
}

impl CredentialStore {
    pub fn new(store: Arc<dyn MetaStore>) -> Self {
        CredentialStore { store }
    }

    /// `user`'s credential for `mechanism`.
    pub async fn get(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>, MetaStoreError> {
        let key = scram_credential_key(user, mechanism.name());
        match self.store.get(&key).await? {
            Some(item) => {
                let record: ScramCredentialRecord = decode(&key, &item.value)?;
                Ok(Some(record.credential(&key)?))
            }
            None => Ok(None),
        }
    }

    /// Every user with a credential, each with its credentials (sorted by user, then
    /// mechanism name).
    pub async fn list(&self) -> Result<BTreeMap<String, Vec<ScramCredential>>, MetaStoreError> {
        self.query(Query::all(SCRAM_CREDENTIAL_PK)).await
    }

    /// `user`'s credentials (none if the user is unknown).
    pub async fn list_user(&self, user: &str) -> Result<Vec<ScramCredential>, MetaStoreError> {
        // Sort keys `{user}/...`; `0` follows `/`. A user named `{user}/x` shares the prefix,
        // and is filtered out by the record's own name.
        let query = Query {
            start: Bound::Included(format!("{user}/")),
            end: Bound::Excluded(format!("{user}0")),
            ..Query::all(SCRAM_CREDENTIAL_PK)
        };
        Ok(self.query(query).await?.remove(user).unwrap_or_default())
    }

    async fn query(
        &self,
        query: Query,
    ) -> Result<BTreeMap<String, Vec<ScramCredential>>, MetaStoreError> {
        let mut users: BTreeMap<String, Vec<ScramCredential>> = BTreeMap::new();
        for item in self.store.query(query).await? {
            let record: ScramCredentialRecord = decode(&item.key, &item.value)?;
            let credential = record.credential(&item.key)?;
            users.entry(record.user).or_default().push(credential);
        }
        Ok(users)
    }

    /// Sets `user`'s credential for the credential's mechanism.
    pub async fn put(
        &self,
        user: &str,
        credential: &ScramCredential,
    ) -> Result<(), MetaStoreError> {
        self.store.write(vec![upsert_op(user, credential)]).await
    }

    /// Removes `user`'s credential for `mechanism`; whether there was one.
    pub async fn delete(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<bool, MetaStoreError> {
        match self
            .apply(user, &[CredentialChange::Delete(mechanism)])
            .await
        {
            Ok(()) => Ok(true),
            Err(ApplyError::NotFound { .. }) => Ok(false),
            Err(ApplyError::Store(e)) => Err(e),
        }
    }

    /// Applies `changes` (at most one per mechanism) to `user`'s credentials atomically.
    pub async fn apply(&self, user: &str, changes: &[CredentialChange]) -> Result<(), ApplyError> {
        let ops: Vec<WriteOp> = changes
            .iter()
            .map(|change| match change {
                CredentialChange::Upsert(credential) => upsert_op(user, credential),
                CredentialChange::Delete(mechanism) => WriteOp::Delete {
                    key: scram_credential_key(user, mechanism.name()),
                    condition: Condition::Exists,
                },
            })
            .collect();
        match self.store.write(ops).await {
            Ok(()) => Ok(()),
            Err(MetaStoreError::ConditionFailed { index, key }) => match changes.get(index) {
                Some(CredentialChange::Delete(mechanism)) => Err(ApplyError::NotFound {
                    user: user.to_string(),
                    mechanism: *mechanism,
                }),
                _ => Err(MetaStoreError::ConditionFailed { index, key }.into()),
            },
            Err(e) => Err(e.into()),
        }
    }
}

fn upsert_op(user: &str, credential: &ScramCredential) -> WriteOp {
    WriteOp::Put {
        key: scram_credential_key(user, credential.mechanism.name()),
        value: encode(&ScramCredentialRecord::new(user, credential)),
        condition: Condition::None,
    }
}

/// The stored decoy secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DecoySecretRecord {
    format: u32,
    /// Base64 of 32 random bytes.
    secret: String,
}

fn decoy_secret_key() -> ItemKey {
    ItemKey::new("meta", "sasl-decoy-secret")
}

/// The cluster's decoy secret, created (at random, once: a put-if-absent) if it is missing.
pub async fn load_or_init_decoy_secret(store: &dyn MetaStore) -> Result<Vec<u8>, MetaStoreError> {
    let key = decoy_secret_key();
    loop {
        if let Some(item) = store.get(&key).await? {
            let record: DecoySecretRecord = decode(&key, &item.value)?;
            return BASE64
                .decode(&record.secret)
                .map_err(|e| MetaStoreError::Corrupt {
                    key: key.clone(),
                    reason: format!("secret: {e}"),
                });
        }
        let secret = random_salt()
            .map_err(|e| MetaStoreError::Unavailable(format!("no randomness for a secret: {e}")))?;
        let op = WriteOp::Put {
            key: key.clone(),
            value: encode(&DecoySecretRecord {
                format: ITEM_FORMAT,
                secret: BASE64.encode(&secret),
            }),
            condition: Condition::Absent,
        };
        match store.write(vec![op]).await {
            Ok(()) => return Ok(secret),
            // Another process created it first: use theirs.
            Err(MetaStoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The SASL authenticator of a listener: `mechanisms` (in the order SaslHandshake lists
/// them) over the credentials in `store`, with the cluster's decoy secret.
pub async fn cluster_authenticator(
    store: Arc<dyn MetaStore>,
    mechanisms: Vec<Mechanism>,
) -> Result<Authenticator, MetaStoreError> {
    let config = SaslConfig {
        mechanisms,
        decoy_secret: load_or_init_decoy_secret(store.as_ref()).await?,
        decoy_iterations: MIN_ITERATIONS,
    };
    Ok(Authenticator::new(
        config,
        Arc::new(CredentialStore::new(store)),
    ))
}

#[async_trait]
impl CredentialSource for CredentialStore {
    async fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>, SaslError> {
        self.get(user, mechanism)
            .await
            .map_err(|e| SaslError::CredentialLookup {
                retryable: e.is_retryable(),
                source: Box::new(e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_store::MemoryMetaStore;

    fn credential(mechanism: ScramMechanism, password: &str) -> ScramCredential {
        ScramCredential::from_password(mechanism, password, b"salt".to_vec(), 4096).unwrap()
    }

    #[tokio::test]
    async fn put_get_list_delete() {
        let store = CredentialStore::new(Arc::new(MemoryMetaStore::new()));
        let alice256 = credential(ScramMechanism::Sha256, "a");
        let alice512 = credential(ScramMechanism::Sha512, "a");
        let nested = credential(ScramMechanism::Sha256, "n");
        store.put("alice", &alice256).await.unwrap();
        store.put("alice", &alice512).await.unwrap();
        store.put("alice/x", &nested).await.unwrap();

        let got = store.get("alice", ScramMechanism::Sha512).await.unwrap();
        assert_eq!(got.as_ref(), Some(&alice512));
        assert_eq!(
            store.get("bob", ScramMechanism::Sha256).await.unwrap(),
            None
        );
        assert_eq!(
            store.list_user("alice").await.unwrap(),
            vec![alice256.clone(), alice512.clone()]
        );
        assert_eq!(
            store.list_user("alice/x").await.unwrap(),
            vec![nested.clone()]
        );
        let all = store.list().await.unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["alice", "alice/x"]);

        assert!(store.delete("alice", ScramMechanism::Sha256).await.unwrap());
        assert!(!store.delete("alice", ScramMechanism::Sha256).await.unwrap());
        assert_eq!(store.list_user("alice").await.unwrap(), vec![alice512]);
    }

    #[tokio::test]
    async fn a_change_set_with_a_missing_deletion_writes_nothing() {
        let store = CredentialStore::new(Arc::new(MemoryMetaStore::new()));
        let changes = [
            CredentialChange::Upsert(credential(ScramMechanism::Sha256, "a")),
            CredentialChange::Delete(ScramMechanism::Sha512),
        ];
        assert!(matches!(
            store.apply("alice", &changes).await,
            Err(ApplyError::NotFound {
                mechanism: ScramMechanism::Sha512,
                ..
            })
        ));
        assert!(store.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_first_process_draws_the_decoy_secret_and_the_others_read_it() {
        let store = MemoryMetaStore::new();
        let first = load_or_init_decoy_secret(&store).await.unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(load_or_init_decoy_secret(&store).await.unwrap(), first);
        assert_ne!(
            load_or_init_decoy_secret(&MemoryMetaStore::new())
                .await
                .unwrap(),
            first
        );
    }

    #[test]
    fn golden_record() {
        let credential = credential(ScramMechanism::Sha256, "pencil");
        let record = ScramCredentialRecord::new("user", &credential);
        let json = String::from_utf8(encode(&record).to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"format":1,"user":"user","mechanism":"SCRAM-SHA-256","salt":"c2FsdA==","iterations":4096,"stored_key":"u+iLs9qG4xpz8n4iBFJlze/fVOjP2jhqQIXx/NAiFSQ=","server_key":"elQh4wT48epeZpwXBxlihIdim+BEkjp3sUAFd/ICyyI="}"#
        );
        let key = scram_credential_key("user", "SCRAM-SHA-256");
        let decoded: ScramCredentialRecord = decode(&key, json.as_bytes()).unwrap();
        assert_eq!(decoded.credential(&key).unwrap(), credential);
        let mut bad = decoded.clone();
        bad.mechanism = "SCRAM-MD5".into();
        assert!(matches!(
            bad.credential(&key),
            Err(MetaStoreError::Corrupt { .. })
        ));
    }
}

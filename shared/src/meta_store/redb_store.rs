//! A durable [`MetaStore`] on an embedded [`redb`] database, for standalone deployments.
//!
//! redb gives ordered keys, snapshot reads and serialized, fsynced write transactions, which is
//! exactly the DynamoDB subset kafscale needs without running a service: every `write` is one
//! redb write transaction committed with [`Durability::Immediate`], so conditions are checked
//! and operations applied atomically, and the batch is on disk when `write` returns.
//!
//! Layout: one table, [`ITEMS`]. Its key is `pk bytes, 0x00, sk bytes`, which sorts items by
//! `(pk, sk)` and keeps each partition key contiguous, so a query is one range scan. This needs
//! partition keys without NUL; writes of such keys fail with [`MetaStoreError::InvalidBatch`]
//! (and reads of them find nothing). Sort keys may hold any character. The value is the item's
//! version as 8 big-endian bytes followed by the item's value bytes.
//!
//! All redb calls run in [`tokio::task::spawn_blocking`].

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::batch::{condition_holds, condition_of, is_empty_range, validate_batch};
use super::{Direction, Item, ItemKey, MetaStore, MetaStoreError, Query, WriteOp};

/// Every item: `pk 0x00 sk` → `version (u64 big-endian) value`.
const ITEMS: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("items");

/// Separates the partition key from the sort key in an encoded key.
const SEPARATOR: u8 = 0x00;

/// Length of the version header of an encoded value.
const VERSION_LEN: usize = 8;

/// A [`MetaStore`] persisted in one redb database file.
#[derive(Debug, Clone)]
pub struct RedbMetaStore {
    db: Arc<Database>,
    path: Arc<Path>,
}

impl RedbMetaStore {
    /// Opens the database at `path`, creating the file if it does not exist.
    ///
    /// A redb file can be open only once at a time (per process and across processes); a second
    /// open fails with [`MetaStoreError::Unavailable`]. This does blocking I/O; call it at startup
    /// or from a blocking context.
    pub fn open(path: &Path) -> Result<Self, MetaStoreError> {
        let db = Database::create(path).map_err(|e| redb_error(e, &no_key()))?;
        // Create the table up front so that read transactions always find it.
        let txn = db.begin_write().map_err(|e| redb_error(e, &no_key()))?;
        txn.open_table(ITEMS)
            .map_err(|e| redb_error(e, &no_key()))?;
        txn.commit().map_err(|e| redb_error(e, &no_key()))?;
        Ok(RedbMetaStore {
            db: Arc::new(db),
            path: path.into(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the database in a blocking thread.
    async fn blocking<T, F>(&self, work: F) -> Result<T, MetaStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, MetaStoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        match tokio::task::spawn_blocking(move || work(&db)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(MetaStoreError::Unavailable(format!(
                "blocking task cancelled: {e}"
            ))),
        }
    }
}

#[async_trait]
impl MetaStore for RedbMetaStore {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, MetaStoreError> {
        if key.pk.as_bytes().contains(&SEPARATOR) {
            // Such an item can never have been written.
            return Ok(None);
        }
        let key = key.clone();
        self.blocking(move |db| {
            let err = |e: redb::Error| redb_error(e, &key);
            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let table = txn.open_table(ITEMS).map_err(|e| err(e.into()))?;
            let Some(raw) = table
                .get(encode_key(&key.pk, &key.sk).as_slice())
                .map_err(|e| err(e.into()))?
            else {
                return Ok(None);
            };
            let (version, value) = decode_value(raw.value(), &key)?;
            Ok(Some(Item {
                key,
                value,
                version,
            }))
        })
        .await
    }

    async fn query(&self, query: Query) -> Result<Vec<Item>, MetaStoreError> {
        let limit = query.limit.unwrap_or(usize::MAX);
        if limit == 0
            || is_empty_range(&query.start, &query.end)
            || query.pk.as_bytes().contains(&SEPARATOR)
        {
            return Ok(Vec::new());
        }
        self.blocking(move |db| {
            let pk = query.pk.as_str();
            let context = ItemKey::new(pk, "");
            let err = |e: redb::Error| redb_error(e, &context);
            let lower = match &query.start {
                Bound::Included(sk) => Bound::Included(encode_key(pk, sk)),
                Bound::Excluded(sk) => Bound::Excluded(encode_key(pk, sk)),
                Bound::Unbounded => Bound::Included(encode_key(pk, "")),
            };
            let upper = match &query.end {
                Bound::Included(sk) => Bound::Included(encode_key(pk, sk)),
                Bound::Excluded(sk) => Bound::Excluded(encode_key(pk, sk)),
                // Every key of `pk` starts with `pk 0x00`, so all sort before `pk 0x01`.
                Bound::Unbounded => Bound::Excluded(pk_end(pk)),
            };

            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let table = txn.open_table(ITEMS).map_err(|e| err(e.into()))?;
            let range = table
                .range::<&[u8]>((
                    lower.as_ref().map(Vec::as_slice),
                    upper.as_ref().map(Vec::as_slice),
                ))
                .map_err(|e| err(e.into()))?;
            let entries: Box<dyn Iterator<Item = _>> = match query.direction {
                Direction::Forward => Box::new(range),
                Direction::Backward => Box::new(range.rev()),
            };
            let mut items = Vec::new();
            for entry in entries.take(limit) {
                let (raw_key, raw_value) = entry.map_err(|e| err(e.into()))?;
                let key = decode_key(pk, raw_key.value())?;
                let (version, value) = decode_value(raw_value.value(), &key)?;
                items.push(Item {
                    key,
                    value,
                    version,
                });
            }
            Ok(items)
        })
        .await
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
        validate_batch(&ops, self.max_batch_ops())?;
        if let Some(op) = ops
            .iter()
            .find(|op| op.key().pk.as_bytes().contains(&SEPARATOR))
        {
            return Err(MetaStoreError::InvalidBatch(format!(
                "partition key {:?} contains NUL, which this backend cannot store",
                op.key().pk
            )));
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.blocking(move |db| write_blocking(db, ops)).await
    }

    fn max_batch_ops(&self) -> usize {
        usize::MAX
    }
}

/// Checks every condition, then applies every operation, in one durable write transaction.
fn write_blocking(db: &Database, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
    let batch_err = |e: redb::Error| redb_error(e, &no_key());
    let mut txn = db.begin_write().map_err(|e| batch_err(e.into()))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| batch_err(e.into()))?;
    let encoded: Vec<Vec<u8>> = ops
        .iter()
        .map(|op| encode_key(&op.key().pk, &op.key().sk))
        .collect();
    {
        let mut table = txn.open_table(ITEMS).map_err(|e| batch_err(e.into()))?;

        let mut current = Vec::with_capacity(ops.len());
        for (index, (op, raw_key)) in ops.iter().zip(&encoded).enumerate() {
            let err = |e: redb::Error| redb_error(e, op.key());
            let version = match table.get(raw_key.as_slice()).map_err(|e| err(e.into()))? {
                Some(raw) => Some(decode_value(raw.value(), op.key())?.0),
                None => None,
            };
            if !condition_holds(condition_of(op), version) {
                // Dropping the transaction uncommitted aborts it: nothing is written.
                return Err(MetaStoreError::ConditionFailed {
                    index,
                    key: op.key().clone(),
                });
            }
            current.push(version);
        }

        for ((op, raw_key), version) in ops.iter().zip(&encoded).zip(current) {
            let err = |e: redb::Error| redb_error(e, op.key());
            match op {
                WriteOp::Put { value, .. } => {
                    let raw_value = encode_value(version.unwrap_or(0) + 1, value);
                    table
                        .insert(raw_key.as_slice(), raw_value.as_slice())
                        .map_err(|e| err(e.into()))?;
                }
                WriteOp::Delete { .. } => {
                    table
                        .remove(raw_key.as_slice())
                        .map_err(|e| err(e.into()))?;
                }
                WriteOp::Check { .. } => {}
            }
        }
    }
    txn.commit().map_err(|e| batch_err(e.into()))
}

/// `pk 0x00 sk`: sorts by `(pk, sk)` as long as `pk` holds no NUL.
fn encode_key(pk: &str, sk: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(pk.len() + 1 + sk.len());
    key.extend_from_slice(pk.as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(sk.as_bytes());
    key
}

/// The smallest encoded key after every key of `pk`.
fn pk_end(pk: &str) -> Vec<u8> {
    let mut end = Vec::with_capacity(pk.len() + 1);
    end.extend_from_slice(pk.as_bytes());
    end.push(SEPARATOR + 1);
    end
}

/// The item key of an encoded key found while scanning the keys of `pk`.
fn decode_key(pk: &str, raw: &[u8]) -> Result<ItemKey, MetaStoreError> {
    let corrupt = |reason: &str| MetaStoreError::Corrupt {
        key: ItemKey::new(pk, String::from_utf8_lossy(raw)),
        reason: reason.to_owned(),
    };
    let sk = raw
        .strip_prefix(pk.as_bytes())
        .and_then(|rest| rest.strip_prefix(&[SEPARATOR]))
        .ok_or_else(|| corrupt("stored key lies outside its partition key"))?;
    let sk = std::str::from_utf8(sk).map_err(|_| corrupt("stored sort key is not UTF-8"))?;
    Ok(ItemKey::new(pk, sk))
}

fn encode_value(version: u64, value: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(VERSION_LEN + value.len());
    raw.extend_from_slice(&version.to_be_bytes());
    raw.extend_from_slice(value);
    raw
}

fn decode_value(raw: &[u8], key: &ItemKey) -> Result<(u64, Bytes), MetaStoreError> {
    let corrupt = |reason: &str| MetaStoreError::Corrupt {
        key: key.clone(),
        reason: reason.to_owned(),
    };
    let (header, value) = raw
        .split_first_chunk::<VERSION_LEN>()
        .ok_or_else(|| corrupt("stored value is shorter than its version header"))?;
    let version = u64::from_be_bytes(*header);
    if version == 0 {
        return Err(corrupt("stored version is 0"));
    }
    Ok((version, Bytes::copy_from_slice(value)))
}

/// The key reported by errors that concern the whole database rather than one item.
fn no_key() -> ItemKey {
    ItemKey::new("", "")
}

/// Maps a redb error: damaged or unreadable files are `Corrupt`, the rest `Unavailable`.
fn redb_error(e: impl Into<redb::Error>, key: &ItemKey) -> MetaStoreError {
    match e.into() {
        redb::Error::Corrupted(reason) => MetaStoreError::Corrupt {
            key: key.clone(),
            reason: format!("redb database corrupted: {reason}"),
        },
        redb::Error::UpgradeRequired(version) => MetaStoreError::Corrupt {
            key: key.clone(),
            reason: format!("redb file format {version} needs an upgrade"),
        },
        redb::Error::ValueTooLarge(len) => {
            MetaStoreError::InvalidBatch(format!("value of {len} bytes is too large for redb"))
        }
        other => MetaStoreError::Unavailable(format!("redb: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::meta_store::Condition;

    fn put(pk: &str, sk: &str, value: &'static [u8]) -> WriteOp {
        WriteOp::Put {
            key: ItemKey::new(pk, sk),
            value: Bytes::from_static(value),
            condition: Condition::None,
        }
    }

    proptest! {
        #[test]
        fn encoded_keys_sort_like_item_keys(
            a in ("[^\0]{0,4}", ".{0,4}"),
            b in ("[^\0]{0,4}", ".{0,4}"),
        ) {
            let (ka, kb) = (ItemKey::new(a.0, a.1), ItemKey::new(b.0, b.1));
            prop_assert_eq!(
                encode_key(&ka.pk, &ka.sk).cmp(&encode_key(&kb.pk, &kb.sk)),
                ka.cmp(&kb)
            );
            prop_assert_eq!(decode_key(&ka.pk, &encode_key(&ka.pk, &ka.sk)).unwrap(), ka);
        }
    }

    #[tokio::test]
    async fn nul_in_partition_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbMetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let err = store
            .write(vec![put("ok", "a", b"1"), put("bad\0pk", "a", b"2")])
            .await;
        assert!(
            matches!(err, Err(MetaStoreError::InvalidBatch(_))),
            "{err:?}"
        );
        assert_eq!(
            store.get(&ItemKey::new("ok", "a")).await.unwrap(),
            None,
            "nothing written"
        );
        assert_eq!(
            store.get(&ItemKey::new("bad\0pk", "a")).await.unwrap(),
            None
        );
        assert!(store.query(Query::all("bad\0pk")).await.unwrap().is_empty());
        // NUL is fine in a sort key.
        store.write(vec![put("ok", "nul\0sk", b"3")]).await.unwrap();
        let items = store.query(Query::all("ok")).await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key, ItemKey::new("ok", "nul\0sk"));
    }

    #[tokio::test]
    async fn damaged_values_are_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbMetaStore::open(&dir.path().join("meta.redb")).unwrap();
        {
            let txn = store.db.begin_write().unwrap();
            let mut table = txn.open_table(ITEMS).unwrap();
            table
                .insert(encode_key("p", "short").as_slice(), &b"\x00\x01"[..])
                .unwrap();
            drop(table);
            txn.commit().unwrap();
        }
        let key = ItemKey::new("p", "short");
        assert!(
            matches!(store.get(&key).await, Err(MetaStoreError::Corrupt { key: k, .. }) if k == key)
        );
        assert!(matches!(
            store.query(Query::all("p")).await,
            Err(MetaStoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.write(vec![put("p", "short", b"x")]).await,
            Err(MetaStoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn second_open_of_one_file_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let _first = RedbMetaStore::open(&path).unwrap();
        assert!(matches!(
            RedbMetaStore::open(&path),
            Err(MetaStoreError::Unavailable(_))
        ));
    }
}

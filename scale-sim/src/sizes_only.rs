//! An object store that remembers only the size of each object.
//!
//! The simulation writes up to hundreds of MiB a second and never reads a segment back
//! (consumers are not simulated); keeping the bodies would make memory, not the system under
//! test, the limit. The verification needs to know which segments exist, and nothing more.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;
use kafscale_shared::object_store::{ObjectMeta, ObjectStore, ObjectStoreError};

#[derive(Debug, Default)]
pub(crate) struct SizesOnlyObjectStore {
    sizes: Mutex<BTreeMap<String, u64>>,
}

impl SizesOnlyObjectStore {
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.sizes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn no_bodies(key: &str) -> ObjectStoreError {
        ObjectStoreError::Rejected {
            key: key.to_owned(),
            reason: "the scale simulation keeps object sizes only".into(),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for SizesOnlyObjectStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        let mut sizes = self.lock();
        if sizes.contains_key(key) {
            return Err(ObjectStoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        sizes.insert(key.to_owned(), data.len() as u64);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
        Err(Self::no_bodies(key))
    }

    async fn get_range(&self, key: &str, _range: Range<u64>) -> Result<Bytes, ObjectStoreError> {
        Err(Self::no_bodies(key))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        Ok(self.lock().get(key).map(|&size| ObjectMeta {
            key: key.to_owned(),
            size,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        Ok(self
            .lock()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, &size)| ObjectMeta {
                key: k.clone(),
                size,
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.lock().remove(key);
        Ok(())
    }
}

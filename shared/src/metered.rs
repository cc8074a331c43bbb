//! Wrappers that count the requests of a store that keeps no counters of its own (the local
//! filesystem object store and the embedded metadata store of standalone mode) in the same
//! [`ObjectStoreMetrics`] and [`MetaStoreMetrics`] the remote backends fill, so every mode
//! exports the same `kafscale_object_store_*` and `kafscale_meta_store_*` series.
//!
//! The remote backends (S3, DynamoDB) count inside, once per attempt; they are not wrapped,
//! or each request would be counted twice.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use crate::meta_store::capacity;
use crate::meta_store::metrics::{MetaStoreOp, Outcome, WriteCharge};
use crate::meta_store::{
    Item, ItemKey, MetaStore, MetaStoreError, MetaStoreMetrics, Query, WriteOp,
};
use crate::object_store::{
    ObjectMeta, ObjectStore, ObjectStoreError, ObjectStoreMetrics, ObjectStoreOp,
};

/// An object store whose requests are counted and timed.
#[derive(Debug)]
pub struct MeteredObjectStore {
    inner: Arc<dyn ObjectStore>,
    metrics: Arc<ObjectStoreMetrics>,
}

impl MeteredObjectStore {
    /// Wraps `inner` and exports its counters.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        let metrics = Arc::new(ObjectStoreMetrics::new());
        metrics.export();
        MeteredObjectStore { inner, metrics }
    }

    pub fn metrics(&self) -> &Arc<ObjectStoreMetrics> {
        &self.metrics
    }

    fn count<T>(&self, op: ObjectStoreOp, started: Instant, r: &Result<T, ObjectStoreError>) {
        self.metrics.request(op);
        self.metrics.observe(op, started.elapsed());
        if let Err(ObjectStoreError::Io { .. } | ObjectStoreError::Rejected { .. }) = r {
            self.metrics.error(op);
        }
    }

    fn count_read(&self, op: ObjectStoreOp, started: Instant, r: &Result<Bytes, ObjectStoreError>) {
        self.count(op, started, r);
        if let Ok(b) = r {
            self.metrics.bytes_in(op, b.len() as u64);
        }
    }
}

#[async_trait]
impl ObjectStore for MeteredObjectStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        let (started, n) = (Instant::now(), data.len() as u64);
        let r = self.inner.put(key, data).await;
        self.count(ObjectStoreOp::Put, started, &r);
        self.metrics.bytes_out(ObjectStoreOp::Put, n);
        r
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
        let started = Instant::now();
        let r = self.inner.get(key).await;
        self.count_read(ObjectStoreOp::Get, started, &r);
        r
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectStoreError> {
        let started = Instant::now();
        let r = self.inner.get_range(key, range).await;
        self.count_read(ObjectStoreOp::GetRange, started, &r);
        r
    }

    async fn get_range_capped(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, ObjectStoreError> {
        let started = Instant::now();
        let r = self.inner.get_range_capped(key, range).await;
        self.count_read(ObjectStoreOp::GetRange, started, &r);
        r
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        let started = Instant::now();
        let r = self.inner.head(key).await;
        self.count(ObjectStoreOp::Head, started, &r);
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        let started = Instant::now();
        let r = self.inner.list(prefix).await;
        self.count(ObjectStoreOp::List, started, &r);
        r
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        let started = Instant::now();
        let r = self.inner.delete(key).await;
        self.count(ObjectStoreOp::Delete, started, &r);
        r
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), ObjectStoreError> {
        let started = Instant::now();
        let r = self.inner.delete_many(keys).await;
        self.count(ObjectStoreOp::DeleteMany, started, &r);
        r
    }
}

/// A metadata store whose requests are counted and timed, under the DynamoDB operation the
/// request would be there.
#[derive(Debug)]
pub struct MeteredMetaStore {
    inner: Arc<dyn MetaStore>,
    metrics: Arc<MetaStoreMetrics>,
}

impl MeteredMetaStore {
    /// Wraps `inner` and exports its counters.
    pub fn new(inner: Arc<dyn MetaStore>) -> Self {
        let metrics = Arc::new(MetaStoreMetrics::new());
        metrics.export();
        MeteredMetaStore { inner, metrics }
    }

    pub fn metrics(&self) -> &Arc<MetaStoreMetrics> {
        &self.metrics
    }

    fn count<T>(
        &self,
        op: MetaStoreOp,
        started: Instant,
        r: &Result<T, MetaStoreError>,
        read: u64,
        written: u64,
    ) {
        self.metrics.observe(op, started.elapsed());
        let outcome = match r {
            Ok(_) => Outcome::Ok,
            Err(MetaStoreError::ConditionFailed { .. }) => Outcome::ConditionFailed,
            Err(_) => Outcome::Error,
        };
        let (read, written) = if r.is_ok() { (read, written) } else { (0, 0) };
        self.metrics.record(op, outcome, read, written);
    }
}

#[async_trait]
impl MetaStore for MeteredMetaStore {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, MetaStoreError> {
        let started = Instant::now();
        let r = self.inner.get(key).await;
        let read = r.as_ref().map_or(0, |i| u64::from(i.is_some()));
        self.count(MetaStoreOp::GetItem, started, &r, read, 0);
        if let Ok(item) = &r {
            let units = capacity::get_units(item.as_ref());
            self.metrics.charge(MetaStoreOp::GetItem, units, 0);
        }
        r
    }

    async fn query(&self, query: Query) -> Result<Vec<Item>, MetaStoreError> {
        let started = Instant::now();
        let r = self.inner.query(query).await;
        let read = r.as_ref().map_or(0, |items| items.len() as u64);
        self.count(MetaStoreOp::Query, started, &r, read, 0);
        if let Ok(items) = &r {
            // Counted as one page: the embedded stores do not page.
            let units = capacity::query_page_units(items);
            self.metrics.charge(MetaStoreOp::Query, units, 0);
        }
        r
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
        let started = Instant::now();
        let written = ops
            .iter()
            .filter(|o| !matches!(o, WriteOp::Check { .. }))
            .count() as u64;
        let charge = WriteCharge::of(&ops.iter().collect::<Vec<_>>());
        let r = self.inner.write(ops).await;
        self.count(charge.op, started, &r, 0, written);
        if r.is_ok() {
            self.metrics.charge_write(&charge);
        }
        r
    }

    fn max_batch_ops(&self) -> usize {
        self.inner.max_batch_ops()
    }
}

//! Store wrappers that add the latency of a real cloud service, so one machine shows how the
//! system behaves against S3 or DynamoDB (tail latency, request pipelining, group commit)
//! without an account, and counts requests by type for a cost model (requests per GiB).
//!
//! Each request waits a delay drawn from a log-normal distribution fitted to a p50 and a p99
//! (service latencies are heavy-tailed; a log-normal is the usual first fit), plus transfer
//! time per MiB moved, then goes to the wrapped store. The presets are round figures from
//! public measurements, not promises:
//!
//! | preset | operation | p50 | p99 | per MiB |
//! | --- | --- | --- | --- | --- |
//! | S3 Standard | PUT | 30 ms | 150 ms | 8 ms |
//! | S3 Standard | GET (first byte) | 15 ms | 80 ms | 8 ms |
//! | S3 Standard | HEAD, LIST, DELETE | 10 ms | 60 ms | – |
//! | S3 Express One Zone | PUT | 5 ms | 15 ms | 4 ms |
//! | S3 Express One Zone | GET | 3 ms | 10 ms | 4 ms |
//! | S3 Express One Zone | HEAD, LIST, DELETE | 3 ms | 10 ms | – |
//! | DynamoDB | GetItem | 4 ms | 12 ms | – |
//! | DynamoDB | Query | 6 ms | 18 ms | – |
//! | DynamoDB | UpdateItem, DeleteItem | 6 ms | 18 ms | – |
//! | DynamoDB | TransactWriteItems | 12 ms | 35 ms | – |
//!
//! The DynamoDB preset also limits each partition key to one DynamoDB partition's throughput
//! (1,000 write and 3,000 read units a second; [`crate::simulated_throughput`]) and refuses
//! what is beyond it as a throttled, retriable request. The S3 Standard preset limits each key
//! prefix (up to the last `/`) to 3,500 PUT-class and 5,500 GET-class requests a second and
//! answers beyond that with a retriable SlowDown error; S3 Express directory buckets have no
//! per-prefix limit.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::meta_store::metrics::{MetaStoreOp, Outcome};
use crate::meta_store::{
    Item, ItemKey, MetaStore, MetaStoreError, MetaStoreMetrics, Query, WriteOp,
};
use crate::object_store::{
    ObjectMeta, ObjectStore, ObjectStoreError, ObjectStoreMetrics, ObjectStoreOp,
};
use crate::simulated_throughput::Class;
use crate::simulated_throughput::{KeyBuckets, Throttled};
pub use crate::simulated_throughput::{KeyThroughput, KeyUsage};

/// One operation's latency: log-normal through `p50` and `p99`, plus `per_mib` of payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyModel {
    pub p50: Duration,
    pub p99: Duration,
    pub per_mib: Duration,
}

/// z of the 99th percentile of the standard normal distribution.
const Z99: f64 = 2.326_347_874;

impl LatencyModel {
    pub const fn new(p50_ms: u64, p99_ms: u64, per_mib_ms: u64) -> Self {
        LatencyModel {
            p50: Duration::from_millis(p50_ms),
            p99: Duration::from_millis(p99_ms),
            per_mib: Duration::from_millis(per_mib_ms),
        }
    }

    /// The delay of one request moving `bytes`, from two uniform numbers in (0, 1].
    fn delay(&self, bytes: u64, u1: f64, u2: f64) -> Duration {
        let p50 = self.p50.as_secs_f64().max(1e-9);
        let mu = p50.ln();
        let sigma = ((self.p99.as_secs_f64().max(p50) / p50).ln() / Z99).max(0.0);
        // Box-Muller: one standard normal sample.
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let base = (mu + sigma * z).exp();
        let transfer = self.per_mib.as_secs_f64() * bytes as f64 / (1024.0 * 1024.0);
        // Bounded, so one unlucky draw cannot stall a test for minutes.
        Duration::from_secs_f64((base + transfer).min(60.0))
    }
}

/// Latencies of an object store's operations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectStoreLatency {
    pub put: LatencyModel,
    pub get: LatencyModel,
    /// HEAD, LIST and DELETE.
    pub other: LatencyModel,
    /// The requests one key prefix may take a second (`None`: unlimited).
    pub per_prefix: Option<KeyThroughput>,
}

impl ObjectStoreLatency {
    pub const S3_STANDARD: ObjectStoreLatency = ObjectStoreLatency {
        put: LatencyModel::new(30, 150, 8),
        get: LatencyModel::new(15, 80, 8),
        other: LatencyModel::new(10, 60, 0),
        per_prefix: Some(KeyThroughput::S3_PREFIX),
    };
    pub const S3_EXPRESS: ObjectStoreLatency = ObjectStoreLatency {
        put: LatencyModel::new(5, 15, 4),
        get: LatencyModel::new(3, 10, 4),
        other: LatencyModel::new(3, 10, 0),
        per_prefix: None,
    };
}

/// The S3 prefix `key` counts against: everything up to its last `/`.
fn prefix_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

/// Latencies of a metadata store's requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetaStoreLatency {
    pub get: LatencyModel,
    pub query: LatencyModel,
    /// A single put or delete.
    pub write_one: LatencyModel,
    /// An atomic multi-item write.
    pub transaction: LatencyModel,
    /// The throughput one partition key may take (`None`: unlimited).
    pub per_key: Option<KeyThroughput>,
}

impl MetaStoreLatency {
    pub const DYNAMODB: MetaStoreLatency = MetaStoreLatency {
        get: LatencyModel::new(4, 12, 0),
        query: LatencyModel::new(6, 18, 0),
        write_one: LatencyModel::new(6, 18, 0),
        transaction: LatencyModel::new(12, 35, 0),
        per_key: Some(KeyThroughput::DYNAMODB),
    };
}

/// Lock-free pseudo-random numbers (SplitMix64): the delays need spread, not cryptography.
#[derive(Debug)]
pub(crate) struct Dice(AtomicU64);

impl Dice {
    pub(crate) fn new(seed: u64) -> Self {
        Dice(AtomicU64::new(seed))
    }

    /// A uniform number in (0, 1].
    pub(crate) fn roll(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    async fn wait(&self, model: &LatencyModel, bytes: u64) {
        let delay = model.delay(bytes, self.roll(), self.roll());
        tokio::time::sleep(delay).await;
    }
}

/// An object store with simulated service latency and request counters.
#[derive(Debug)]
pub struct SimulatedObjectStore {
    inner: Arc<dyn ObjectStore>,
    latency: ObjectStoreLatency,
    dice: Dice,
    metrics: Arc<ObjectStoreMetrics>,
    limits: Option<KeyBuckets>,
}

impl SimulatedObjectStore {
    pub fn new(inner: Arc<dyn ObjectStore>, latency: ObjectStoreLatency) -> Self {
        SimulatedObjectStore {
            inner,
            latency,
            dice: Dice::new(0x5eed_0b1e),
            metrics: Arc::new(ObjectStoreMetrics::new()),
            limits: latency.per_prefix.map(KeyBuckets::new),
        }
    }

    /// Refuses a request whose key prefix is over its request rate, as S3 does (503 SlowDown,
    /// which clients retry).
    fn check_limit(
        &self,
        op: ObjectStoreOp,
        key: &str,
        class: Class,
    ) -> Result<(), ObjectStoreError> {
        let Some(limits) = &self.limits else {
            return Ok(());
        };
        limits
            .take_request(prefix_of(key), class)
            .map_err(|Throttled { pk }| {
                self.metrics.request(op);
                self.metrics.error(op);
                ObjectStoreError::Io {
                    key: key.to_owned(),
                    source: std::io::Error::other(format!(
                        "SlowDown: prefix {pk:?} is over S3's request rate per prefix (simulated)"
                    )),
                }
            })
    }

    /// Requests granted and refused per key prefix (empty without a per-prefix limit).
    pub fn prefix_usage(&self) -> Vec<(String, KeyUsage)> {
        self.limits
            .as_ref()
            .map_or_else(Vec::new, KeyBuckets::usage)
    }

    /// Requests by operation, since start.
    pub fn metrics(&self) -> Arc<ObjectStoreMetrics> {
        self.metrics.clone()
    }

    fn count<T>(&self, op: ObjectStoreOp, r: &Result<T, ObjectStoreError>) {
        self.metrics.request(op);
        if r.is_err() {
            self.metrics.error(op);
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for SimulatedObjectStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        let n = data.len() as u64;
        self.check_limit(ObjectStoreOp::Put, key, Class::Write)?;
        self.dice.wait(&self.latency.put, n).await;
        let r = self.inner.put(key, data).await;
        self.count(ObjectStoreOp::Put, &r);
        self.metrics.bytes_out(ObjectStoreOp::Put, n);
        r
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
        self.check_limit(ObjectStoreOp::Get, key, Class::Read)?;
        let r = self.inner.get(key).await;
        let n = r.as_ref().map_or(0, |b| b.len() as u64);
        self.dice.wait(&self.latency.get, n).await;
        self.count(ObjectStoreOp::Get, &r);
        self.metrics.bytes_in(ObjectStoreOp::Get, n);
        r
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectStoreError> {
        self.check_limit(ObjectStoreOp::GetRange, key, Class::Read)?;
        self.dice
            .wait(&self.latency.get, range.end.saturating_sub(range.start))
            .await;
        let r = self.inner.get_range(key, range).await;
        self.count(ObjectStoreOp::GetRange, &r);
        self.metrics.bytes_in(
            ObjectStoreOp::GetRange,
            r.as_ref().map_or(0, |b| b.len() as u64),
        );
        r
    }

    async fn get_range_capped(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, ObjectStoreError> {
        self.check_limit(ObjectStoreOp::GetRange, key, Class::Read)?;
        // The transfer time is that of the bytes the object actually holds.
        let r = self.inner.get_range_capped(key, range).await;
        let n = r.as_ref().map_or(0, |b| b.len() as u64);
        self.dice.wait(&self.latency.get, n).await;
        self.count(ObjectStoreOp::GetRange, &r);
        self.metrics.bytes_in(ObjectStoreOp::GetRange, n);
        r
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        self.check_limit(ObjectStoreOp::Head, key, Class::Read)?;
        self.dice.wait(&self.latency.other, 0).await;
        let r = self.inner.head(key).await;
        self.count(ObjectStoreOp::Head, &r);
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        self.check_limit(ObjectStoreOp::List, prefix, Class::Write)?;
        self.dice.wait(&self.latency.other, 0).await;
        let r = self.inner.list(prefix).await;
        self.count(ObjectStoreOp::List, &r);
        r
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.check_limit(ObjectStoreOp::Delete, key, Class::Write)?;
        self.dice.wait(&self.latency.other, 0).await;
        let r = self.inner.delete(key).await;
        self.count(ObjectStoreOp::Delete, &r);
        r
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), ObjectStoreError> {
        // One DeleteObjects request, counted against the prefix of its first key.
        if let Some(first) = keys.first() {
            self.check_limit(ObjectStoreOp::DeleteMany, first, Class::Write)?;
        }
        self.dice.wait(&self.latency.other, 0).await;
        let r = self.inner.delete_many(keys).await;
        self.count(ObjectStoreOp::DeleteMany, &r);
        r
    }
}

/// A metadata store with simulated service latency and request counters.
#[derive(Debug)]
pub struct SimulatedMetaStore {
    inner: Arc<dyn MetaStore>,
    latency: MetaStoreLatency,
    dice: Dice,
    metrics: Arc<MetaStoreMetrics>,
    limits: Option<KeyBuckets>,
}

impl SimulatedMetaStore {
    pub fn new(inner: Arc<dyn MetaStore>, latency: MetaStoreLatency) -> Self {
        SimulatedMetaStore {
            inner,
            latency,
            dice: Dice::new(0x5eed_d1ce),
            metrics: Arc::new(MetaStoreMetrics::new()),
            limits: latency.per_key.map(KeyBuckets::new),
        }
    }

    /// Refuses a request whose partition key is over its throughput, as DynamoDB does.
    fn check_limit(
        &self,
        op: MetaStoreOp,
        take: impl FnOnce(&KeyBuckets) -> Result<(), Throttled>,
    ) -> Result<(), MetaStoreError> {
        let Some(limits) = &self.limits else {
            return Ok(());
        };
        take(limits).map_err(|Throttled { pk }| {
            self.metrics.record(op, Outcome::Error, 0, 0);
            MetaStoreError::Unavailable(format!(
                "{}: throttled, partition key {pk} is over one DynamoDB partition's throughput (simulated)",
                op.name()
            ))
        })
    }

    /// Requests by DynamoDB operation, since start.
    pub fn metrics(&self) -> Arc<MetaStoreMetrics> {
        self.metrics.clone()
    }

    /// The same store, never refusing requests to the partition keys `pks` (their units are
    /// still tallied): for what-if runs that stand for a key design spreading them.
    pub fn with_unlimited_keys(mut self, pks: impl IntoIterator<Item = String>) -> Self {
        self.limits = self.limits.map(|l| l.with_unlimited(pks));
        self
    }

    /// Units granted and requests refused per partition key, busiest writer first (empty
    /// without a per-key limit).
    pub fn key_usage(&self) -> Vec<(String, KeyUsage)> {
        self.limits
            .as_ref()
            .map_or_else(Vec::new, KeyBuckets::usage)
    }
}

fn outcome<T>(r: &Result<T, MetaStoreError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(MetaStoreError::ConditionFailed { .. }) => Outcome::ConditionFailed,
        Err(_) => Outcome::Error,
    }
}

#[async_trait::async_trait]
impl MetaStore for SimulatedMetaStore {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, MetaStoreError> {
        self.dice.wait(&self.latency.get, 0).await;
        let r = self.inner.get(key).await;
        if let Ok(item) = &r {
            self.check_limit(MetaStoreOp::GetItem, |l| l.take_get(key, item.as_ref()))?;
        }
        let read = r.as_ref().map_or(0, |i| u64::from(i.is_some()));
        self.metrics
            .record(MetaStoreOp::GetItem, outcome(&r), read, 0);
        r
    }

    async fn query(&self, query: Query) -> Result<Vec<Item>, MetaStoreError> {
        self.dice.wait(&self.latency.query, 0).await;
        let pk = query.pk.clone();
        let r = self.inner.query(query).await;
        if let Ok(items) = &r {
            self.check_limit(MetaStoreOp::Query, |l| l.take_reads(&pk, items))?;
        }
        let read = r.as_ref().map_or(0, |items| items.len() as u64);
        self.metrics
            .record(MetaStoreOp::Query, outcome(&r), read, 0);
        r
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
        let op = MetaStoreOp::of_write(&ops.iter().collect::<Vec<_>>());
        let model = match op {
            MetaStoreOp::TransactWriteItems => &self.latency.transaction,
            _ => &self.latency.write_one,
        };
        let written = ops
            .iter()
            .filter(|o| !matches!(o, WriteOp::Check { .. }))
            .count() as u64;
        self.dice.wait(model, 0).await;
        self.check_limit(op, |l| l.take_writes(&ops))?;
        let r = self.inner.write(ops).await;
        self.metrics.record(op, outcome(&r), 0, written);
        r
    }

    fn max_batch_ops(&self) -> usize {
        self.inner.max_batch_ops()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_store::MemoryMetaStore;
    use crate::object_store::MemoryObjectStore;

    #[test]
    fn delays_follow_the_model_percentiles() {
        let model = LatencyModel::new(30, 150, 8);
        let dice = Dice::new(42);
        let mut samples: Vec<f64> = (0..20_000)
            .map(|_| model.delay(0, dice.roll(), dice.roll()).as_secs_f64() * 1000.0)
            .collect();
        samples.sort_by(f64::total_cmp);
        let p50 = samples[samples.len() / 2];
        let p99 = samples[samples.len() * 99 / 100];
        assert!((27.0..33.0).contains(&p50), "p50 {p50} ms");
        assert!((125.0..180.0).contains(&p99), "p99 {p99} ms");
        // Transfer time adds per MiB.
        let one = model.delay(1 << 20, 0.5, 0.25);
        let none = model.delay(0, 0.5, 0.25);
        assert_eq!((one - none).as_millis(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn an_s3_prefix_past_its_request_rate_answers_slow_down() {
        let instant = LatencyModel::new(0, 0, 0);
        let objects = SimulatedObjectStore::new(
            Arc::new(MemoryObjectStore::new()),
            ObjectStoreLatency {
                put: instant,
                get: instant,
                other: instant,
                ..ObjectStoreLatency::S3_STANDARD
            },
        );
        // All at once: each request is counted before its (simulated) service time.
        let keys: Vec<String> = (0..3501).map(|i| format!("segments/0a/{i}")).collect();
        let answers = futures::future::join_all(
            keys.iter()
                .map(|k| objects.put(k, Bytes::from_static(b"x"))),
        )
        .await;
        let refused: Vec<_> = answers.into_iter().filter_map(Result::err).collect();
        assert_eq!(refused.len(), 1, "one request over the prefix's rate");
        let refused = &refused[0];
        assert!(refused.is_retryable(), "{refused}");
        assert!(refused.to_string().contains("SlowDown"), "{refused}");
        objects
            .put("segments/0b/elsewhere", Bytes::from_static(b"x"))
            .await
            .expect("another prefix has its own rate");
        objects
            .get("segments/0a/0")
            .await
            .expect("reads have their own rate");
        let usage = objects.prefix_usage();
        assert_eq!(usage[0].0, "segments/0a/");
        assert_eq!(usage[0].1.throttled, 1);
        assert_eq!(objects.metrics().get(ObjectStoreOp::Put).errors, 1);
    }

    #[tokio::test]
    async fn the_wrappers_delegate_and_count_requests_by_type() {
        let objects = SimulatedObjectStore::new(
            Arc::new(MemoryObjectStore::new()),
            ObjectStoreLatency::S3_EXPRESS,
        );
        objects
            .put("a", Bytes::from_static(b"hello"))
            .await
            .expect("put");
        assert_eq!(
            objects.get_range("a", 1..3).await.expect("range"),
            Bytes::from_static(b"el")
        );
        assert!(objects.put("a", Bytes::new()).await.is_err(), "create-only");
        let m = objects.metrics();
        assert_eq!(m.get(ObjectStoreOp::Put).requests, 2);
        assert_eq!(m.get(ObjectStoreOp::Put).errors, 1);
        assert_eq!(m.get(ObjectStoreOp::GetRange).bytes_in, 2);

        let meta =
            SimulatedMetaStore::new(Arc::new(MemoryMetaStore::new()), MetaStoreLatency::DYNAMODB);
        let key = ItemKey::new("p", "s");
        meta.write(vec![WriteOp::Put {
            key: key.clone(),
            value: Bytes::from_static(b"v"),
            condition: crate::meta_store::Condition::Absent,
        }])
        .await
        .expect("write");
        assert!(meta.get(&key).await.expect("get").is_some());
        let m = meta.metrics();
        assert_eq!(m.get(MetaStoreOp::UpdateItem).requests, 1);
        assert_eq!(m.get(MetaStoreOp::GetItem).requests, 1);
    }
}

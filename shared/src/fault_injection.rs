//! Store wrappers that inject faults, so crash and chaos tests can prove that a failing S3 or
//! DynamoDB never loses an acknowledged record: requests fail, hang until a client-side
//! timeout, slow down, or succeed with the answer lost (the write happened, the caller sees an
//! error — the case that tempts a retry into a duplicate).
//!
//! A [`FaultPlan`] gives each kind of fault a probability, restricted to some operations, and
//! a seed; a [`FaultSource`] holds the plan in force, fixed or re-read from a file so a test can
//! start and stop an outage while processes run. A fault never falls back to anything: the
//! caller sees the error a real store would give (retryable), and nothing is kept in memory.

use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tracing::{info, warn};

use crate::meta_store::{Item, ItemKey, MetaStore, MetaStoreError, Query, WriteOp};
use crate::metrics as names;
use crate::object_store::{ObjectMeta, ObjectStore, ObjectStoreError};
use crate::simulated_latency::Dice;

/// The operations a plan may target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// Object PUT.
    Put,
    /// Object GET (whole or ranged).
    Get,
    /// Object HEAD.
    Head,
    /// Object LIST.
    List,
    /// Object DELETE (one or many).
    Delete,
    /// Metadata-store point read.
    MetaGet,
    /// Metadata-store query.
    MetaQuery,
    /// Metadata-store write (single or transaction).
    MetaWrite,
}

impl FaultOp {
    const ALL: [FaultOp; 8] = [
        FaultOp::Put,
        FaultOp::Get,
        FaultOp::Head,
        FaultOp::List,
        FaultOp::Delete,
        FaultOp::MetaGet,
        FaultOp::MetaQuery,
        FaultOp::MetaWrite,
    ];

    fn name(self) -> &'static str {
        match self {
            FaultOp::Put => "put",
            FaultOp::Get => "get",
            FaultOp::Head => "head",
            FaultOp::List => "list",
            FaultOp::Delete => "delete",
            FaultOp::MetaGet => "meta-get",
            FaultOp::MetaQuery => "meta-query",
            FaultOp::MetaWrite => "meta-write",
        }
    }

    fn bit(self) -> u8 {
        1 << FaultOp::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails at once, the store untouched.
    Error,
    /// Hangs for the plan's timeout, then fails, the store untouched.
    Timeout,
    /// Waits the plan's spike delay, then goes through.
    Spike,
    /// Goes through, then the answer is lost: the caller sees an error.
    LostResponse,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Error => "error",
            Fault::Timeout => "timeout",
            Fault::Spike => "spike",
            Fault::LostResponse => "lost_response",
        }
    }
}

/// Probabilities of each fault per request of the targeted operations. Parsed from
/// `error=0.05,lost=0.05,timeout=0.01,spike=0.1,spike-ms=500,timeout-ms=2000,seed=7,ops=put+meta-write`
/// (every key optional; `ops` defaults to every operation).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    pub error: f64,
    pub lost_response: f64,
    pub timeout: f64,
    pub spike: f64,
    pub spike_delay: Duration,
    pub timeout_delay: Duration,
    pub seed: u64,
    ops: u8,
}

impl Default for FaultPlan {
    /// No faults.
    fn default() -> Self {
        FaultPlan {
            error: 0.0,
            lost_response: 0.0,
            timeout: 0.0,
            spike: 0.0,
            spike_delay: Duration::from_millis(500),
            timeout_delay: Duration::from_secs(2),
            seed: 0x0fa1_75ee,
            ops: u8::MAX,
        }
    }
}

impl FaultPlan {
    /// Whether this plan can inject anything at all.
    pub fn is_quiet(&self) -> bool {
        self.error + self.lost_response + self.timeout + self.spike <= 0.0
    }

    /// Which fault, if any, a request of `op` gets for the uniform number `u` in (0, 1].
    pub fn pick(&self, op: FaultOp, u: f64) -> Option<Fault> {
        if self.ops & op.bit() == 0 {
            return None;
        }
        let mut edge = 0.0;
        for (p, fault) in [
            (self.error, Fault::Error),
            (self.timeout, Fault::Timeout),
            (self.lost_response, Fault::LostResponse),
            (self.spike, Fault::Spike),
        ] {
            edge += p;
            if u <= edge {
                return Some(fault);
            }
        }
        None
    }
}

impl FromStr for FaultPlan {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let mut plan = FaultPlan::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            let probability = || -> Result<f64, String> {
                match value.parse::<f64>() {
                    Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
                    _ => Err(format!("{key}={value}: a probability between 0 and 1")),
                }
            };
            let millis = || -> Result<Duration, String> {
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{key}={value}: milliseconds"))
            };
            match key {
                "error" => plan.error = probability()?,
                "lost" => plan.lost_response = probability()?,
                "timeout" => plan.timeout = probability()?,
                "spike" => plan.spike = probability()?,
                "spike-ms" => plan.spike_delay = millis()?,
                "timeout-ms" => plan.timeout_delay = millis()?,
                "seed" => {
                    plan.seed = value
                        .parse()
                        .map_err(|_| format!("seed={value}: an integer"))?;
                }
                "ops" => plan.ops = parse_ops(value)?,
                other => return Err(format!("unknown fault setting {other:?}")),
            }
        }
        if plan.error + plan.lost_response + plan.timeout + plan.spike > 1.0 {
            return Err("the fault probabilities add up to more than 1".into());
        }
        Ok(plan)
    }
}

fn parse_ops(value: &str) -> Result<u8, String> {
    let mut ops = 0;
    for name in value.split('+').map(str::trim) {
        let op = FaultOp::ALL
            .iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = FaultOp::ALL.iter().map(|o| o.name()).collect();
                format!("unknown operation {name:?}; one of {}", known.join(", "))
            })?;
        ops |= op.bit();
    }
    Ok(ops)
}

/// The plan in force and the dice: shared by the wrappers of one process.
#[derive(Debug)]
pub struct FaultSource {
    plan: RwLock<Arc<FaultPlan>>,
    dice: Dice,
}

impl FaultSource {
    /// A source that keeps `plan`.
    pub fn fixed(plan: FaultPlan) -> Arc<Self> {
        Arc::new(FaultSource {
            dice: Dice::new(plan.seed),
            plan: RwLock::new(Arc::new(plan)),
        })
    }

    /// A source whose plan is the content of `path`, re-read every `every` until `shutdown`
    /// (a missing or empty file: no faults; a file that does not parse keeps the last plan).
    pub fn watched(
        path: PathBuf,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Arc<Self> {
        let source = FaultSource::fixed(read_plan(&path).unwrap_or_default());
        let watcher = source.clone();
        tokio::spawn(async move {
            crate::periodic::run_every(every, &shutdown, || async {
                if let Some(plan) = read_plan(&path) {
                    watcher.set(plan);
                }
            })
            .await;
        });
        source
    }

    /// Puts `plan` in force (logged when it changes).
    pub fn set(&self, plan: FaultPlan) {
        let mut current = self.plan.write().unwrap_or_else(|e| e.into_inner());
        if **current != plan {
            info!(?plan, "fault plan changed");
            *current = Arc::new(plan);
        }
    }

    /// The fault a request of `op` to the `store` ("object" or "meta") gets, counted.
    fn draw(&self, store: &'static str, op: FaultOp) -> Option<(Fault, Arc<FaultPlan>)> {
        let plan = self.plan.read().unwrap_or_else(|e| e.into_inner()).clone();
        if plan.is_quiet() {
            return None;
        }
        let fault = plan.pick(op, self.dice.roll())?;
        metrics::counter!(names::FAULTS_INJECTED, "store" => store, "fault" => fault.name())
            .increment(1);
        Some((fault, plan))
    }
}

/// The plan in `path`: `None` when the file does not parse (logged), the quiet plan when it is
/// missing or empty.
fn read_plan(path: &PathBuf) -> Option<FaultPlan> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match text.trim().parse() {
        Ok(plan) => Some(plan),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "fault plan not understood; keeping the last");
            None
        }
    }
}

/// Runs `request` under the fault drawn for `op`; `injected` makes the error a fault returns.
async fn under_fault<T, E>(
    faults: &FaultSource,
    store: &'static str,
    op: FaultOp,
    injected: impl Fn(Fault) -> E,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some((fault, plan)) = faults.draw(store, op) else {
        return request.await;
    };
    match fault {
        Fault::Error => Err(injected(fault)),
        Fault::Timeout => {
            tokio::time::sleep(plan.timeout_delay).await;
            Err(injected(fault))
        }
        Fault::Spike => {
            tokio::time::sleep(plan.spike_delay).await;
            request.await
        }
        Fault::LostResponse => {
            let _ = request.await;
            Err(injected(fault))
        }
    }
}

/// An object store whose requests get the faults of a [`FaultSource`].
#[derive(Debug)]
pub struct FaultyObjectStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<FaultSource>,
}

impl FaultyObjectStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Arc<FaultSource>) -> Self {
        FaultyObjectStore { inner, faults }
    }

    async fn run<T>(
        &self,
        op: FaultOp,
        key: &str,
        request: impl std::future::Future<Output = Result<T, ObjectStoreError>>,
    ) -> Result<T, ObjectStoreError> {
        let injected = |fault: Fault| ObjectStoreError::Io {
            key: key.to_string(),
            source: std::io::Error::other(format!("injected fault: {}", fault.name())),
        };
        under_fault(&self.faults, "object", op, injected, request).await
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyObjectStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        self.run(FaultOp::Put, key, self.inner.put(key, data)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
        self.run(FaultOp::Get, key, self.inner.get(key)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectStoreError> {
        self.run(FaultOp::Get, key, self.inner.get_range(key, range))
            .await
    }

    async fn get_range_capped(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, ObjectStoreError> {
        self.run(FaultOp::Get, key, self.inner.get_range_capped(key, range))
            .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        self.run(FaultOp::Head, key, self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        self.run(FaultOp::List, prefix, self.inner.list(prefix))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.run(FaultOp::Delete, key, self.inner.delete(key)).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), ObjectStoreError> {
        let first = keys.first().map_or("", String::as_str);
        self.run(FaultOp::Delete, first, self.inner.delete_many(keys))
            .await
    }
}

/// A metadata store whose requests get the faults of a [`FaultSource`].
#[derive(Debug)]
pub struct FaultyMetaStore {
    inner: Arc<dyn MetaStore>,
    faults: Arc<FaultSource>,
}

impl FaultyMetaStore {
    pub fn new(inner: Arc<dyn MetaStore>, faults: Arc<FaultSource>) -> Self {
        FaultyMetaStore { inner, faults }
    }

    async fn run<T>(
        &self,
        op: FaultOp,
        request: impl std::future::Future<Output = Result<T, MetaStoreError>>,
    ) -> Result<T, MetaStoreError> {
        let injected =
            |fault: Fault| MetaStoreError::Unavailable(format!("injected fault: {}", fault.name()));
        under_fault(&self.faults, "meta", op, injected, request).await
    }
}

#[async_trait::async_trait]
impl MetaStore for FaultyMetaStore {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, MetaStoreError> {
        self.run(FaultOp::MetaGet, self.inner.get(key)).await
    }

    async fn query(&self, query: Query) -> Result<Vec<Item>, MetaStoreError> {
        self.run(FaultOp::MetaQuery, self.inner.query(query)).await
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
        self.run(FaultOp::MetaWrite, self.inner.write(ops)).await
    }

    fn max_batch_ops(&self) -> usize {
        self.inner.max_batch_ops()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_store::{Condition, MemoryMetaStore};
    use crate::object_store::MemoryObjectStore;

    #[test]
    fn plans_parse_and_refuse_what_they_cannot_mean() {
        let plan: FaultPlan = "error=0.1, lost=0.2,timeout=0.05,spike=0.1,spike-ms=20,timeout-ms=30,seed=9,ops=put+meta-write"
            .parse()
            .unwrap();
        assert_eq!(plan.spike_delay, Duration::from_millis(20));
        assert_eq!(
            plan.pick(FaultOp::Get, 0.01),
            None,
            "not a targeted operation"
        );
        assert_eq!(plan.pick(FaultOp::Put, 0.05), Some(Fault::Error));
        assert_eq!(plan.pick(FaultOp::Put, 0.12), Some(Fault::Timeout));
        assert_eq!(
            plan.pick(FaultOp::MetaWrite, 0.3),
            Some(Fault::LostResponse)
        );
        assert_eq!(plan.pick(FaultOp::MetaWrite, 0.4), Some(Fault::Spike));
        assert_eq!(plan.pick(FaultOp::MetaWrite, 0.5), None);
        assert!("".parse::<FaultPlan>().unwrap().is_quiet());
        for bad in [
            "error=2",
            "lost",
            "ops=put+teleport",
            "error=0.6,lost=0.6",
            "nope=1",
        ] {
            assert!(bad.parse::<FaultPlan>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_lost_response_writes_and_an_error_does_not() {
        let meta = Arc::new(MemoryMetaStore::new());
        let key = ItemKey::new("p", "s");
        let put = |v: &'static [u8]| {
            vec![WriteOp::Put {
                key: key.clone(),
                value: Bytes::from_static(v),
                condition: Condition::None,
            }]
        };
        let lost =
            FaultyMetaStore::new(meta.clone(), FaultSource::fixed("lost=1".parse().unwrap()));
        assert!(lost.write(put(b"a")).await.unwrap_err().is_retryable());
        assert_eq!(
            meta.get(&key).await.unwrap().unwrap().value,
            Bytes::from_static(b"a")
        );
        let failing =
            FaultyMetaStore::new(meta.clone(), FaultSource::fixed("error=1".parse().unwrap()));
        assert!(failing.write(put(b"b")).await.is_err());
        assert_eq!(
            meta.get(&key).await.unwrap().unwrap().value,
            Bytes::from_static(b"a")
        );

        let objects = Arc::new(MemoryObjectStore::new());
        let source = FaultSource::fixed("lost=1,ops=put".parse().unwrap());
        let faulty = FaultyObjectStore::new(objects.clone(), source.clone());
        assert!(faulty.put("k", Bytes::from_static(b"x")).await.is_err());
        assert_eq!(
            faulty.get("k").await.unwrap(),
            Bytes::from_static(b"x"),
            "gets untouched"
        );
        source.set(FaultPlan::default());
        assert!(
            faulty.put("k2", Bytes::from_static(b"y")).await.is_ok(),
            "faults stopped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_wait_then_fail_and_spikes_wait_then_succeed() {
        let objects = Arc::new(MemoryObjectStore::new());
        let source = FaultSource::fixed("timeout=1,timeout-ms=2000".parse().unwrap());
        let faulty = FaultyObjectStore::new(objects.clone(), source.clone());
        let started = tokio::time::Instant::now();
        assert!(faulty.put("k", Bytes::from_static(b"x")).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(objects.head("k").await.unwrap().is_none());
        source.set("spike=1,spike-ms=300".parse().unwrap());
        let started = tokio::time::Instant::now();
        faulty.put("k", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_watched_file_starts_and_stops_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let source =
            FaultSource::watched(path.clone(), Duration::from_millis(10), shutdown.clone());
        let meta = FaultyMetaStore::new(Arc::new(MemoryMetaStore::new()), source);
        let key = ItemKey::new("p", "s");
        assert!(meta.get(&key).await.is_ok(), "no file: no faults");
        std::fs::write(&path, "error=1").unwrap();
        let mut outage = false;
        for _ in 0..500 {
            if meta.get(&key).await.is_err() {
                outage = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(outage, "the plan in the file took effect");
        std::fs::write(&path, "error=1,ops=teleport").unwrap();
        assert_eq!(
            read_plan(&path),
            None,
            "a bad file is not a plan: the last one stays"
        );
        std::fs::write(&path, "").unwrap();
        let mut recovered = false;
        for _ in 0..500 {
            if meta.get(&key).await.is_ok() {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(recovered, "an empty file ends the outage");
        shutdown.cancel();
    }
}

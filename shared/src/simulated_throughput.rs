//! DynamoDB's throughput limit per partition key, for the simulated metadata store.
//!
//! DynamoDB spreads a table over partitions by the hash of the partition key, and one
//! partition serves at most about 1,000 write units and 3,000 read units a second, however much
//! the table as a whole may take (on-demand or provisioned). Adaptive capacity can give a hot
//! key a partition of its own, but not more than one: one partition key's items can never take
//! more than that. A request beyond it is refused with a throttling error, which the SDK
//! retries and the store reports as `Unavailable` (retriable).
//!
//! So a key design that sends every write of a busy topic to one partition key throttles long
//! before the gateways are busy; simulating the limit on one machine shows where. The limit
//! is a token bucket per partition key, refilled continuously and holding one second of
//! throughput (DynamoDB's burst capacity is larger for provisioned tables, and absent for a key
//! that is already hot).
//!
//! S3 has the same shape of limit per key prefix (3,500 PUT, COPY, POST, DELETE or LIST and
//! 5,500 GET or HEAD requests a second, answered beyond that with 503 SlowDown), so the
//! simulated object store uses the same buckets, counting requests instead of units. Every
//! bucket also tallies what it granted and refused ([`KeyUsage`]), which is how the scale
//! simulation names the first key to saturate.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::time::Instant;

use crate::meta_store::capacity;
use crate::meta_store::{Item, ItemKey, WriteOp};

/// Units a second one partition key may consume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyThroughput {
    pub write_units_per_sec: f64,
    pub read_units_per_sec: f64,
}

impl KeyThroughput {
    /// One DynamoDB partition's limits.
    pub const DYNAMODB: KeyThroughput = KeyThroughput {
        write_units_per_sec: 1000.0,
        read_units_per_sec: 3000.0,
    };
    /// One S3 prefix's limits, in requests: PUT-class ("writes") and GET-class ("reads").
    pub const S3_PREFIX: KeyThroughput = KeyThroughput {
        write_units_per_sec: 3500.0,
        read_units_per_sec: 5500.0,
    };
}

/// What one key was granted and refused since start.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeyUsage {
    pub write_units: f64,
    pub read_units: f64,
    /// Requests refused because the key was over its throughput.
    pub throttled: u64,
}

#[derive(Debug)]
struct Bucket {
    write_tokens: f64,
    read_tokens: f64,
    refilled: Instant,
    usage: KeyUsage,
}

/// Which of a bucket's two limits a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Write,
    Read,
}

/// The buckets of every partition key seen so far.
#[derive(Debug)]
pub(crate) struct KeyBuckets {
    limit: KeyThroughput,
    by_pk: Mutex<HashMap<String, Bucket>>,
    /// Keys never refused (their usage is still tallied): what-if runs of the scale
    /// simulation, standing for a key design that spreads them.
    unlimited: HashSet<String>,
}

/// A request refused because a partition key is over its throughput.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Throttled {
    pub pk: String,
}

impl KeyBuckets {
    pub(crate) fn new(limit: KeyThroughput) -> Self {
        KeyBuckets {
            limit,
            by_pk: Mutex::new(HashMap::new()),
            unlimited: HashSet::new(),
        }
    }

    /// The same buckets, never refusing `keys`.
    pub(crate) fn with_unlimited(mut self, keys: impl IntoIterator<Item = String>) -> Self {
        self.unlimited.extend(keys);
        self
    }

    /// Takes the write units of `ops` from their keys' buckets, all or none.
    pub(crate) fn take_writes(&self, ops: &[WriteOp]) -> Result<(), Throttled> {
        let transaction = capacity::is_transaction(&ops.iter().collect::<Vec<_>>());
        let mut units: HashMap<&str, f64> = HashMap::new();
        for op in ops {
            *units.entry(op.key().pk.as_str()).or_default() +=
                capacity::item_write_units(op, transaction) as f64;
        }
        self.take(units, Class::Write)
    }

    /// Takes the read units of a read of `items` under partition key `pk`.
    pub(crate) fn take_reads(&self, pk: &str, items: &[Item]) -> Result<(), Throttled> {
        let units = capacity::query_page_units(items) as f64;
        self.take(HashMap::from([(pk, units)]), Class::Read)
    }

    /// Takes the read units of a `GetItem` of `key`.
    pub(crate) fn take_get(&self, key: &ItemKey, item: Option<&Item>) -> Result<(), Throttled> {
        let units = capacity::get_units(item) as f64;
        self.take(HashMap::from([(key.pk.as_str(), units)]), Class::Read)
    }

    /// Takes one request of `class` from `key`'s bucket (the object store's prefixes).
    pub(crate) fn take_request(&self, key: &str, class: Class) -> Result<(), Throttled> {
        self.take(HashMap::from([(key, 1.0)]), class)
    }

    /// What every key seen so far was granted and refused, busiest writer first.
    pub(crate) fn usage(&self) -> Vec<(String, KeyUsage)> {
        let buckets = self.by_pk.lock().unwrap_or_else(|e| e.into_inner());
        let mut usage: Vec<_> = buckets.iter().map(|(k, b)| (k.clone(), b.usage)).collect();
        usage.sort_by(|a, b| {
            b.1.write_units
                .total_cmp(&a.1.write_units)
                .then(a.0.cmp(&b.0))
        });
        usage
    }

    fn take(&self, units: HashMap<&str, f64>, class: Class) -> Result<(), Throttled> {
        let now = Instant::now();
        let mut buckets = self.by_pk.lock().unwrap_or_else(|e| e.into_inner());
        for (pk, wanted) in &units {
            let bucket = buckets
                .entry((*pk).to_owned())
                .or_insert_with(|| self.full_bucket(now));
            self.refill(bucket, now);
            if *bucket.tokens(class) < *wanted && !self.unlimited.contains(*pk) {
                bucket.usage.throttled += 1;
                return Err(Throttled {
                    pk: (*pk).to_owned(),
                });
            }
        }
        for (pk, wanted) in units {
            if let Some(bucket) = buckets.get_mut(pk) {
                let tokens = bucket.tokens(class);
                *tokens = (*tokens - wanted).max(0.0);
                match class {
                    Class::Write => bucket.usage.write_units += wanted,
                    Class::Read => bucket.usage.read_units += wanted,
                }
            }
        }
        Ok(())
    }

    fn full_bucket(&self, now: Instant) -> Bucket {
        Bucket {
            write_tokens: self.limit.write_units_per_sec,
            read_tokens: self.limit.read_units_per_sec,
            refilled: now,
            usage: KeyUsage::default(),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let seconds = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.refilled = now;
        bucket.write_tokens = (bucket.write_tokens + seconds * self.limit.write_units_per_sec)
            .min(self.limit.write_units_per_sec);
        bucket.read_tokens = (bucket.read_tokens + seconds * self.limit.read_units_per_sec)
            .min(self.limit.read_units_per_sec);
    }
}

impl Bucket {
    fn tokens(&mut self, class: Class) -> &mut f64 {
        match class {
            Class::Write => &mut self.write_tokens,
            Class::Read => &mut self.read_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::meta_store::Condition;

    fn puts(pk: &str, count: usize) -> Vec<WriteOp> {
        (0..count)
            .map(|i| WriteOp::Put {
                key: ItemKey::new(pk, format!("{i:05}")),
                value: Bytes::from_static(b"row"),
                condition: Condition::None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn one_partition_key_gets_a_thousand_write_units_a_second() {
        let buckets = KeyBuckets::new(KeyThroughput::DYNAMODB);
        // Five transactions of 100 items: 200 units each, the key's whole second.
        for _ in 0..5 {
            buckets
                .take_writes(&puts("part/hot", 100))
                .expect("within the limit");
        }
        let refused = buckets.take_writes(&puts("part/hot", 1)).unwrap_err();
        assert_eq!(refused.pk, "part/hot");
        // A transaction touching the hot key and a cold one is refused whole, and takes
        // nothing from the cold one.
        let mut mixed = puts("part/cold", 50);
        mixed.extend(puts("part/hot", 1));
        assert!(buckets.take_writes(&mixed).is_err());
        for _ in 0..10 {
            buckets
                .take_writes(&puts("part/cold", 50))
                .expect("other keys are not limited");
        }
        // Half a second later, half a second of throughput is back.
        tokio::time::advance(Duration::from_millis(500)).await;
        for _ in 0..2 {
            buckets
                .take_writes(&puts("part/hot", 100))
                .expect("refilled");
        }
        assert!(buckets.take_writes(&puts("part/hot", 100)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn reads_have_a_limit_of_their_own() {
        let buckets = KeyBuckets::new(KeyThroughput::DYNAMODB);
        let key = ItemKey::new("idx/t/0", "0");
        for _ in 0..3000 {
            buckets.take_get(&key, None).expect("within the limit");
        }
        assert!(buckets.take_get(&key, None).is_err());
        assert!(buckets.take_reads("idx/t/1", &[]).is_ok());
        buckets
            .take_writes(&puts("idx/t/0", 1))
            .expect("writes are apart");
    }

    #[tokio::test(start_paused = true)]
    async fn a_condition_check_in_a_transaction_costs_its_key_two_units() {
        // An indexer commit's shape: the lease check and a row.
        let buckets = KeyBuckets::new(KeyThroughput::DYNAMODB);
        let mut ops = vec![WriteOp::Check {
            key: ItemKey::new("lease", "indexer-shard-00000"),
            condition: Condition::Version(3),
        }];
        ops.extend(puts("part/t", 1));
        buckets.take_writes(&ops).expect("within the limit");
        let usage: HashMap<String, KeyUsage> = buckets.usage().into_iter().collect();
        assert_eq!(usage["lease"].write_units, 2.0);
        assert_eq!(usage["part/t"].write_units, 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unlimited_key_is_never_refused_but_still_tallied() {
        let buckets = KeyBuckets::new(KeyThroughput::DYNAMODB).with_unlimited(["lease".to_owned()]);
        for _ in 0..20 {
            buckets
                .take_writes(&puts("lease", 100))
                .expect("never refused");
        }
        assert!(
            buckets.take_writes(&puts("part/t", 600)).is_err(),
            "others are"
        );
        assert_eq!(buckets.usage()[0].1.write_units, 4000.0);
    }

    #[tokio::test(start_paused = true)]
    async fn usage_tallies_grants_and_refusals_per_key() {
        let buckets = KeyBuckets::new(KeyThroughput::S3_PREFIX);
        for _ in 0..3500 {
            buckets
                .take_request("segments/0a/", Class::Write)
                .expect("within the limit");
        }
        assert!(buckets.take_request("segments/0a/", Class::Write).is_err());
        buckets
            .take_request("segments/0b/", Class::Read)
            .expect("another prefix");
        let usage = buckets.usage();
        assert_eq!(usage[0].0, "segments/0a/", "busiest writer first");
        assert_eq!(
            usage[0].1,
            KeyUsage {
                write_units: 3500.0,
                read_units: 0.0,
                throttled: 1
            }
        );
        assert_eq!(usage[1].1.read_units, 1.0);
    }
}

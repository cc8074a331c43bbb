//! Request counters of a metadata-store backend, by backend operation.
//!
//! A plain seam rather than a metrics library: the counters are atomics that a backend bumps on
//! every request, and [`MetaStoreMetrics::snapshot`] copies them out. The Prometheus exporter
//! reads them at scrape time ([`MetaStoreMetrics::export`]); the backends do not need to know
//! about it.
//!
//! Operations are named after the DynamoDB API calls because that is what they cost there: one
//! [`MetaStore::query`](super::MetaStore::query) may be several `Query` requests (pages), and a
//! one-operation write is an `UpdateItem` or `DeleteItem` rather than a transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{ItemKey, WriteOp, capacity};
use crate::metrics::{self as names, AtomicHistogram, ScrapeSource, TextWriter};

/// A backend request type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaStoreOp {
    GetItem,
    /// One page of a query.
    Query,
    /// A single put (an `UpdateItem`, so that the version is incremented server-side).
    UpdateItem,
    /// A single delete.
    DeleteItem,
    /// An atomic multi-operation write (or a lone condition check).
    TransactWriteItems,
    /// Table management: `DescribeTable` and `CreateTable`.
    Admin,
}

impl MetaStoreOp {
    /// Every operation, in a fixed order.
    pub const ALL: [MetaStoreOp; 6] = [
        MetaStoreOp::GetItem,
        MetaStoreOp::Query,
        MetaStoreOp::UpdateItem,
        MetaStoreOp::DeleteItem,
        MetaStoreOp::TransactWriteItems,
        MetaStoreOp::Admin,
    ];

    /// A stable name for exporters (the DynamoDB API name, or `Admin`).
    pub fn name(self) -> &'static str {
        match self {
            MetaStoreOp::GetItem => "GetItem",
            MetaStoreOp::Query => "Query",
            MetaStoreOp::UpdateItem => "UpdateItem",
            MetaStoreOp::DeleteItem => "DeleteItem",
            MetaStoreOp::TransactWriteItems => "TransactWriteItems",
            MetaStoreOp::Admin => "Admin",
        }
    }

    /// The request a write batch is sent as on DynamoDB: a lone `Put` or `Delete` is a
    /// single-item request, anything else a transaction.
    pub fn of_write(ops: &[&WriteOp]) -> MetaStoreOp {
        match ops {
            [WriteOp::Put { .. }] => MetaStoreOp::UpdateItem,
            [WriteOp::Delete { .. }] => MetaStoreOp::DeleteItem,
            _ => MetaStoreOp::TransactWriteItems,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one operation at one point in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Requests sent (an SDK call, including its internal retries, counts once).
    pub requests: u64,
    /// Requests that failed for another reason than a condition (throttling, timeouts, ...).
    pub errors: u64,
    /// Requests rejected because a write condition did not hold (expected under contention).
    pub condition_failures: u64,
    /// Items returned by reads.
    pub items_read: u64,
    /// Items put or deleted by successful writes (condition checks are not counted).
    pub items_written: u64,
    /// DynamoDB read units these requests would consume ([`super::capacity`]).
    pub read_units: u64,
    /// DynamoDB write units these requests would consume ([`super::capacity`]).
    pub write_units: u64,
}

impl std::ops::AddAssign for OpStats {
    fn add_assign(&mut self, other: OpStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.condition_failures += other.condition_failures;
        self.items_read += other.items_read;
        self.items_written += other.items_written;
        self.read_units += other.read_units;
        self.write_units += other.write_units;
    }
}

#[derive(Debug, Default)]
struct OpCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    condition_failures: AtomicU64,
    items_read: AtomicU64,
    items_written: AtomicU64,
    read_units: AtomicU64,
    write_units: AtomicU64,
}

/// How a request ended, for [`MetaStoreMetrics::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ConditionFailed,
    Error,
}

/// Request counters of one store, by operation. Cheap to update from many tasks at once.
#[derive(Debug, Default)]
pub struct MetaStoreMetrics {
    ops: [OpCounters; MetaStoreOp::ALL.len()],
    latency: [AtomicHistogram; MetaStoreOp::ALL.len()],
    /// Write units by item family ([`ItemFamily`]), to show where the cost goes.
    family_write_units: [AtomicU64; ItemFamily::ALL.len()],
}

/// What a write would cost, worked out before it is sent (the operations move into the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteCharge {
    pub op: MetaStoreOp,
    pub units: u64,
    /// Units by item family, one entry per operation.
    pub families: Vec<(ItemFamily, u64)>,
}

impl WriteCharge {
    /// The charge of sending `ops` as one write request.
    pub fn of(ops: &[&WriteOp]) -> WriteCharge {
        let transaction = capacity::is_transaction(ops);
        let families: Vec<(ItemFamily, u64)> = ops
            .iter()
            .map(|op| {
                (
                    ItemFamily::of(op.key()),
                    capacity::item_write_units(op, transaction),
                )
            })
            .collect();
        WriteCharge {
            op: MetaStoreOp::of_write(ops),
            units: families.iter().map(|(_, u)| u).sum(),
            families,
        }
    }
}

/// What kind of item a write touched, from its key: the first part of the partition key
/// (`slog/00003` is `slog`), leases by what they guard. A fixed list, so the label stays
/// bounded; anything else is `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemFamily {
    /// Shard-log items (one per commit).
    ShardLog,
    /// Fold checkpoints.
    FoldCheckpoint,
    /// Index entries and pages.
    Index,
    /// Partition rows.
    Partition,
    /// Idempotent producers' states.
    Producer,
    /// Segment commit records.
    Segment,
    /// Committed group offsets.
    GroupOffset,
    /// Member heartbeats.
    Member,
    /// Group-coordinator slot leases.
    GroupLease,
    /// Indexer shard leases.
    ShardLease,
    /// Other leases (garbage collection).
    OtherLease,
    /// Topics, groups, settings and everything else.
    Other,
}

impl ItemFamily {
    pub const ALL: [ItemFamily; 12] = [
        ItemFamily::ShardLog,
        ItemFamily::FoldCheckpoint,
        ItemFamily::Index,
        ItemFamily::Partition,
        ItemFamily::Producer,
        ItemFamily::Segment,
        ItemFamily::GroupOffset,
        ItemFamily::Member,
        ItemFamily::GroupLease,
        ItemFamily::ShardLease,
        ItemFamily::OtherLease,
        ItemFamily::Other,
    ];

    /// The family of the item at `key`.
    pub fn of(key: &ItemKey) -> ItemFamily {
        let head = key.pk.split('/').next().unwrap_or("");
        match head {
            "slog" => ItemFamily::ShardLog,
            "fold" => ItemFamily::FoldCheckpoint,
            "idx" => ItemFamily::Index,
            "part" => ItemFamily::Partition,
            "prod" => ItemFamily::Producer,
            "seg" => ItemFamily::Segment,
            "goff" => ItemFamily::GroupOffset,
            "member" => ItemFamily::Member,
            "lease" if key.sk.starts_with("groups/") => ItemFamily::GroupLease,
            "lease" if key.sk.starts_with("indexer-shard-") => ItemFamily::ShardLease,
            "lease" => ItemFamily::OtherLease,
            _ => ItemFamily::Other,
        }
    }

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            ItemFamily::ShardLog => "shard_log",
            ItemFamily::FoldCheckpoint => "fold_checkpoint",
            ItemFamily::Index => "index",
            ItemFamily::Partition => "partition",
            ItemFamily::Producer => "producer",
            ItemFamily::Segment => "segment",
            ItemFamily::GroupOffset => "group_offset",
            ItemFamily::Member => "member",
            ItemFamily::GroupLease => "group_lease",
            ItemFamily::ShardLease => "shard_lease",
            ItemFamily::OtherLease => "other_lease",
            ItemFamily::Other => "other",
        }
    }
}

impl MetaStoreMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request of `op` that ended with `outcome`, having read and written that many
    /// items.
    pub fn record(&self, op: MetaStoreOp, outcome: Outcome, items_read: u64, items_written: u64) {
        let c = &self.ops[op.index()];
        c.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Ok => {}
            Outcome::ConditionFailed => {
                c.condition_failures.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Error => {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if items_read > 0 {
            c.items_read.fetch_add(items_read, Ordering::Relaxed);
        }
        if items_written > 0 {
            c.items_written.fetch_add(items_written, Ordering::Relaxed);
        }
    }

    /// Counts the capacity units a successful request of `op` would consume on DynamoDB.
    pub fn charge(&self, op: MetaStoreOp, read_units: u64, write_units: u64) {
        let c = &self.ops[op.index()];
        c.read_units.fetch_add(read_units, Ordering::Relaxed);
        c.write_units.fetch_add(write_units, Ordering::Relaxed);
    }

    /// Counts the write units of a successful write ([`WriteCharge::of`]), by request and by
    /// item family.
    pub fn charge_write(&self, charge: &WriteCharge) {
        for (family, units) in &charge.families {
            self.family_write_units[*family as usize].fetch_add(*units, Ordering::Relaxed);
        }
        self.charge(charge.op, 0, charge.units);
    }

    /// Write units charged to items of `family` so far.
    pub fn family_write_units(&self, family: ItemFamily) -> u64 {
        self.family_write_units[family as usize].load(Ordering::Relaxed)
    }

    /// Records the latency of one request of `op`.
    pub fn observe(&self, op: MetaStoreOp, elapsed: Duration) {
        self.latency[op.index()].observe(elapsed);
    }

    /// Makes these counters part of the process's `/metrics` page.
    pub fn export(self: &Arc<Self>) {
        names::add_source(self.clone());
    }

    /// The counters of one operation.
    pub fn get(&self, op: MetaStoreOp) -> OpStats {
        let c = &self.ops[op.index()];
        OpStats {
            requests: c.requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            condition_failures: c.condition_failures.load(Ordering::Relaxed),
            items_read: c.items_read.load(Ordering::Relaxed),
            items_written: c.items_written.load(Ordering::Relaxed),
            read_units: c.read_units.load(Ordering::Relaxed),
            write_units: c.write_units.load(Ordering::Relaxed),
        }
    }

    /// Every operation's counters.
    pub fn snapshot(&self) -> Vec<(MetaStoreOp, OpStats)> {
        MetaStoreOp::ALL
            .iter()
            .map(|&op| (op, self.get(op)))
            .collect()
    }

    /// The sum over all operations.
    pub fn total(&self) -> OpStats {
        let mut total = OpStats::default();
        for op in MetaStoreOp::ALL {
            total += self.get(op);
        }
        total
    }
}

#[async_trait::async_trait]
impl ScrapeSource for MetaStoreMetrics {
    async fn collect(&self, out: &mut TextWriter) {
        for op in MetaStoreOp::ALL {
            let c = self.get(op);
            let label = [("op", op.name())];
            out.sample(names::META_STORE_REQUESTS, &label, c.requests as f64);
            out.sample(names::META_STORE_ERRORS, &label, c.errors as f64);
            out.sample(
                names::META_STORE_CONDITION_FAILURES,
                &label,
                c.condition_failures as f64,
            );
            out.sample(names::META_STORE_READ_UNITS, &label, c.read_units as f64);
            out.sample(names::META_STORE_WRITE_UNITS, &label, c.write_units as f64);
            let latency = self.latency[op.index()].snapshot();
            out.histogram(names::META_STORE_DURATION, &label, &latency);
        }
        for family in ItemFamily::ALL {
            out.sample(
                names::META_STORE_FAMILY_WRITE_UNITS,
                &[("family", family.name())],
                self.family_write_units(family) as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_operation() {
        let m = MetaStoreMetrics::new();
        m.record(MetaStoreOp::Query, Outcome::Ok, 3, 0);
        m.record(MetaStoreOp::Query, Outcome::Error, 0, 0);
        m.record(MetaStoreOp::UpdateItem, Outcome::ConditionFailed, 0, 0);
        m.record(MetaStoreOp::TransactWriteItems, Outcome::Ok, 0, 7);
        m.charge(MetaStoreOp::TransactWriteItems, 0, 14);
        m.charge(MetaStoreOp::Query, 2, 0);
        assert_eq!(
            m.get(MetaStoreOp::Query),
            OpStats {
                requests: 2,
                errors: 1,
                items_read: 3,
                read_units: 2,
                ..OpStats::default()
            }
        );
        assert_eq!(m.get(MetaStoreOp::UpdateItem).condition_failures, 1);
        assert_eq!(m.get(MetaStoreOp::GetItem), OpStats::default());
        let total = m.total();
        assert_eq!((total.requests, total.items_written), (4, 7));
        assert_eq!((total.read_units, total.write_units), (2, 14));
        assert_eq!(m.snapshot().len(), MetaStoreOp::ALL.len());
        for (i, op) in MetaStoreOp::ALL.iter().enumerate() {
            assert_eq!(op.index(), i, "ALL is in declaration order");
        }
    }

    #[test]
    fn write_units_are_charged_to_the_families_of_the_items_written() {
        let put = |pk: &str, sk: &str, len: usize| WriteOp::Put {
            key: ItemKey::new(pk, sk),
            value: bytes::Bytes::from(vec![b'x'; len]),
            condition: crate::meta_store::Condition::None,
        };
        let m = MetaStoreMetrics::new();
        let log = put("slog/00001", "00000000000000000007", 1500);
        m.charge_write(&WriteCharge::of(&[&log]));
        let lease = put("lease", "groups/003", 100);
        let shard = put("lease", "indexer-shard-00001", 100);
        let rows = put("part/t/0", "row", 100);
        m.charge_write(&WriteCharge::of(&[&lease, &shard, &rows]));
        let family = |f| m.family_write_units(f);
        assert_eq!(family(ItemFamily::ShardLog), 2, "1.5 KB alone: 2 units");
        assert_eq!(family(ItemFamily::GroupLease), 2, "in a transaction: twice");
        assert_eq!(family(ItemFamily::ShardLease), 2);
        assert_eq!(family(ItemFamily::Partition), 2);
        assert_eq!(family(ItemFamily::Other), 0);
        assert_eq!(m.total().write_units, 8, "the families add up to the total");
        assert_eq!(
            ItemFamily::of(&ItemKey::new("topic", "orders")),
            ItemFamily::Other
        );
    }
}

//! Request counters of an object store, per operation.
//!
//! Object-store requests are what a disk-less broker pays for (S3 bills per request and per
//! byte moved) and where it waits, so a backend that talks to a remote store counts, for each
//! trait operation, the requests it sent, how many of them failed, and the payload bytes moved.
//! The counters are plain atomics behind a shared [`Arc`](std::sync::Arc): cheap enough to bump on
//! every request, and readable at any time with [`ObjectStoreMetrics::snapshot`]. They are
//! exported to Prometheus as they are, read at scrape time ([`ObjectStoreMetrics::export`]):
//! one set of counters, not a copy in a second registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::{self as names, AtomicHistogram, ScrapeSource, TextWriter};

/// The operations of [`ObjectStore`](super::ObjectStore) that metrics are kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectStoreOp {
    Put,
    Get,
    GetRange,
    Head,
    List,
    Delete,
    DeleteMany,
}

impl ObjectStoreOp {
    /// Every operation, in a fixed order.
    pub const ALL: [ObjectStoreOp; 7] = [
        ObjectStoreOp::Put,
        ObjectStoreOp::Get,
        ObjectStoreOp::GetRange,
        ObjectStoreOp::Head,
        ObjectStoreOp::List,
        ObjectStoreOp::Delete,
        ObjectStoreOp::DeleteMany,
    ];

    /// A stable lower-case name, suitable as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            ObjectStoreOp::Put => "put",
            ObjectStoreOp::Get => "get",
            ObjectStoreOp::GetRange => "get_range",
            ObjectStoreOp::Head => "head",
            ObjectStoreOp::List => "list",
            ObjectStoreOp::Delete => "delete",
            ObjectStoreOp::DeleteMany => "delete_many",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The counters of one operation at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Requests sent to the store (every attempt counts: retries, each page of a listing, each
    /// part of a multipart upload).
    pub requests: u64,
    /// Requests that failed with a transport or server error. Answers that are part of the
    /// contract (not found, already exists, invalid range) are not errors.
    pub errors: u64,
    /// Payload bytes received from the store.
    pub bytes_in: u64,
    /// Payload bytes sent to the store.
    pub bytes_out: u64,
}

#[derive(Debug, Default)]
struct OpCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// Per-operation request counters, updated lock-free by a backend.
#[derive(Debug, Default)]
pub struct ObjectStoreMetrics {
    ops: [OpCounters; ObjectStoreOp::ALL.len()],
    latency: [AtomicHistogram; ObjectStoreOp::ALL.len()],
}

impl ObjectStoreMetrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request of `op` (sent, whatever its outcome).
    pub fn request(&self, op: ObjectStoreOp) {
        self.ops[op.index()]
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records the latency of one request of `op`.
    pub fn observe(&self, op: ObjectStoreOp, elapsed: Duration) {
        self.latency[op.index()].observe(elapsed);
    }

    /// Makes these counters part of the process's `/metrics` page.
    pub fn export(self: &Arc<Self>) {
        names::add_source(self.clone());
    }

    /// Counts one failed request of `op`.
    pub fn error(&self, op: ObjectStoreOp) {
        self.ops[op.index()].errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds payload bytes received for `op`.
    pub fn bytes_in(&self, op: ObjectStoreOp, bytes: u64) {
        self.ops[op.index()]
            .bytes_in
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds payload bytes sent for `op`.
    pub fn bytes_out(&self, op: ObjectStoreOp, bytes: u64) {
        self.ops[op.index()]
            .bytes_out
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// The current counters of `op`.
    pub fn get(&self, op: ObjectStoreOp) -> OpCounts {
        let c = &self.ops[op.index()];
        OpCounts {
            requests: c.requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// The current counters of every operation, in [`ObjectStoreOp::ALL`] order.
    pub fn snapshot(&self) -> Vec<(ObjectStoreOp, OpCounts)> {
        ObjectStoreOp::ALL
            .iter()
            .map(|&op| (op, self.get(op)))
            .collect()
    }
}

#[async_trait::async_trait]
impl ScrapeSource for ObjectStoreMetrics {
    async fn collect(&self, out: &mut TextWriter) {
        for op in ObjectStoreOp::ALL {
            let c = self.get(op);
            let label = [("op", op.name())];
            out.sample(names::OBJECT_STORE_REQUESTS, &label, c.requests as f64);
            out.sample(names::OBJECT_STORE_ERRORS, &label, c.errors as f64);
            for (direction, bytes) in [("in", c.bytes_in), ("out", c.bytes_out)] {
                let labels = [("op", op.name()), ("direction", direction)];
                out.sample(names::OBJECT_STORE_BYTES, &labels, bytes as f64);
            }
            let latency = self.latency[op.index()].snapshot();
            out.histogram(names::OBJECT_STORE_DURATION, &label, &latency);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_kept_per_operation() {
        let m = ObjectStoreMetrics::new();
        m.request(ObjectStoreOp::Put);
        m.request(ObjectStoreOp::Put);
        m.error(ObjectStoreOp::Put);
        m.bytes_out(ObjectStoreOp::Put, 10);
        m.request(ObjectStoreOp::GetRange);
        m.bytes_in(ObjectStoreOp::GetRange, 7);
        assert_eq!(
            m.get(ObjectStoreOp::Put),
            OpCounts {
                requests: 2,
                errors: 1,
                bytes_in: 0,
                bytes_out: 10
            }
        );
        assert_eq!(m.get(ObjectStoreOp::GetRange).bytes_in, 7);
        assert_eq!(m.get(ObjectStoreOp::Get), OpCounts::default());
        let snap = m.snapshot();
        assert_eq!(snap.len(), ObjectStoreOp::ALL.len());
        for (i, (op, _)) in snap.iter().enumerate() {
            assert_eq!(op.index(), i, "ALL is in discriminant order");
        }
        assert_eq!(ObjectStoreOp::DeleteMany.name(), "delete_many");
    }
}

//! Simulated producers: each one appends one record batch at a time to its gateway's buffer
//! at a steady pace, with a bounded number of batches waiting for their answer (as a Kafka
//! producer's `max.in.flight`), and notes what every batch got.
//!
//! All producers send copies of one pre-built batch (a non-idempotent producer's batch is
//! given its offsets by the indexer, so identical bytes are fine). Producer `j` of gateway `g`
//! writes to one topic and moves to its next partition after every batch, so the load covers
//! every partition and every shard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafscale_ingest::{FlushOutcome, SegmentBuffer};
use kafscale_shared::batch::{ValidatedBatch, validate_batches};
use kafscale_shared::sequencer::BatchOutcome;
use tokio::time::Instant;
use tracing::Span;
use uuid::Uuid;

use crate::error::SimError;

/// A partition the producers write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub topic_id: Uuid,
    pub partition: i32,
}

/// One acknowledged batch: where it went and the offsets it got.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ack {
    pub target: usize,
    pub base_offset: i64,
    pub offsets: i64,
}

/// What a group of producers saw.
#[derive(Debug)]
pub(crate) struct Tally {
    pub acks: Vec<Ack>,
    /// Microseconds from the append to the answer, acknowledged batches only.
    pub latency_us: Histogram<u64>,
    /// Failed batches by their (normalized) error.
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            acks: Vec::new(),
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("valid histogram bounds"),
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.acks.extend(other.acks);
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        for (e, n) in other.errors {
            *self.errors.entry(e).or_default() += n;
        }
    }

    fn fail(&mut self, error: &str) {
        *self.errors.entry(normalize(error)).or_default() += 1;
    }

    fn record(&mut self, target: usize, batch_offsets: i64, started: Instant, got: FlushOutcome) {
        match got {
            Ok(outcomes) => match outcomes.first() {
                Some(BatchOutcome::Appended { base_offset, .. })
                | Some(BatchOutcome::Duplicate { base_offset, .. }) => {
                    let waited = started.elapsed().as_micros() as u64;
                    let _ = self.latency_us.record(waited.max(1));
                    self.acks.push(Ack {
                        target,
                        base_offset: *base_offset,
                        offsets: batch_offsets,
                    });
                }
                Some(BatchOutcome::Rejected(reason)) => self.fail(&format!("{reason:?}")),
                None => self.fail("no outcome for the batch"),
            },
            Err(e) => self.fail(&e.to_string()),
        }
    }
}

/// Error texts with their numbers and ids replaced, so that like errors count together.
fn normalize(error: &str) -> String {
    error
        .split_whitespace()
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) {
                "#"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The batch every producer sends: `records` records of `record_bytes` value bytes.
pub(crate) fn build_batch(records: usize, record_bytes: usize) -> Result<ValidatedBatch, SimError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let value = Bytes::from(vec![b'x'; record_bytes]);
    let encoded: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: now,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(value.clone()),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &encoded,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| SimError::Batch(e.to_string()))?;
    let mut batches =
        validate_batches(&buf.freeze(), usize::MAX).map_err(|e| SimError::Batch(e.to_string()))?;
    match batches.len() {
        1 => Ok(batches.remove(0)),
        n => Err(SimError::Batch(format!("the encoder made {n} batches"))),
    }
}

/// How one producer behaves.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    /// Time between two batches.
    pub period: Duration,
    /// Offset of the first batch, so producers do not all send at once.
    pub phase: Duration,
    pub max_in_flight: usize,
    /// When the producer stops sending (it then waits for its answers).
    pub until: Instant,
}

/// The partitions of one producer: a topic's, from `targets[topic_start..]`, starting with
/// its partition `first`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    pub topic_start: usize,
    pub partitions: usize,
    pub first: usize,
}

/// Runs one producer until `pace.until`, then until every batch it sent has its answer.
pub(crate) async fn produce(
    gateway: Arc<SegmentBuffer>,
    batch: ValidatedBatch,
    targets: Arc<[Target]>,
    route: Route,
    pace: Pace,
) -> Tally {
    let mut tally = Tally::new();
    let offsets = i64::from(batch.header.offset_count());
    let mut in_flight = FuturesUnordered::new();
    let mut next = Instant::now() + pace.phase;
    let mut turn = route.first;
    loop {
        let may_send = in_flight.len() < pace.max_in_flight;
        tokio::select! {
            _ = tokio::time::sleep_until(next), if may_send => {
                if Instant::now() >= pace.until {
                    break;
                }
                let target = route.topic_start + turn % route.partitions;
                turn += 1;
                let t = targets[target];
                let started = Instant::now();
                match gateway.append(t.topic_id, t.partition, vec![batch.clone()], &Span::none()).await {
                    Ok(answer) => in_flight.push(async move {
                        let got = answer
                            .await
                            .unwrap_or(Err(kafscale_ingest::IngestError::ShuttingDown));
                        (target, started, got)
                    }),
                    Err(e) => tally.fail(&e.to_string()),
                }
                // A producer that was held back does not catch up in a burst.
                next = (next + pace.period).max(Instant::now());
            }
            Some((target, started, got)) = in_flight.next(), if !in_flight.is_empty() => {
                tally.record(target, offsets, started, got);
            }
        }
    }
    while let Some((target, started, got)) = in_flight.next().await {
        tally.record(target, offsets, started, got);
    }
    tally
}

/// Waits for every producer and adds up what they saw.
pub(crate) async fn collect(producers: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::new();
    for p in producers {
        match p.await {
            Ok(t) => total.merge(t),
            Err(e) => total.fail(&format!("producer task failed: {e}")),
        }
    }
    total
}

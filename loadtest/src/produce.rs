//! Producers: each sends its share of the records, batched per partition and per leader,
//! with at most `max_in_flight` requests outstanding, paced to a target rate or flat out.
//!
//! Latency is measured from the moment a record was *due* (its place in the paced schedule,
//! or when it was created when flat out) to its acknowledgement, so a stalled broker shows up
//! as latency instead of silently slowing the schedule (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::time::Instant;
use tracing::warn;

use crate::cluster::{Connections, TopicLayout, topic_name};
use crate::error::LoadtestError;
use crate::payload::{HEADER_BYTES, Stamp, now_us};

const PRODUCE_V: i16 = 8;

/// How one producer sends.
#[derive(Debug, Clone)]
pub(crate) struct ProducerConfig {
    pub(crate) run: u32,
    pub(crate) records: u64,
    pub(crate) record_size: usize,
    pub(crate) acks: i16,
    pub(crate) compression: Compression,
    pub(crate) linger: Duration,
    /// Largest record batch per partition (librdkafka's `batch.size`).
    pub(crate) batch_bytes: usize,
    /// Records per second for this producer; `None`: flat out.
    pub(crate) rate: Option<f64>,
    /// Stop creating records after this long.
    pub(crate) duration: Option<Duration>,
    pub(crate) max_in_flight: usize,
    /// Keys drawn from this many distinct values (partition = key's hash), or no keys.
    pub(crate) key_space: Option<u64>,
}

/// What one producer did.
pub(crate) struct ProducerResult {
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    pub(crate) errors: u64,
    /// (partition, offset) of every acknowledged record, by sequence number.
    pub(crate) offsets: Vec<Option<(i32, i64)>>,
    /// Microseconds from due to acknowledged.
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) first_error: Option<String>,
}

struct Pending {
    seq: u64,
    due: Instant,
    key: Option<Bytes>,
    value: Bytes,
    timestamp_ms: i64,
}

/// A latency histogram in microseconds: 1 µs to 1 hour, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant, valid bounds")
}

/// One in-flight produce request: which records of which partition it carries.
type Sent = Vec<(i32, Vec<(u64, Instant)>)>;

fn partition_of(
    cfg: &ProducerConfig,
    producer: u32,
    seq: u64,
    partitions: usize,
) -> (i32, Option<Bytes>) {
    match cfg.key_space {
        Some(space) if space > 0 => {
            let key = (seq.wrapping_mul(0x9e37_79b9) ^ u64::from(producer)) % space;
            let key_bytes = Bytes::from(format!("key-{key}"));
            let p = (crc(&key_bytes) as usize % partitions) as i32;
            (p, Some(key_bytes))
        }
        // Round robin, offset by producer so producers spread from the start.
        _ => (
            ((seq + u64::from(producer)) % partitions as u64) as i32,
            None,
        ),
    }
}

fn crc(b: &[u8]) -> u32 {
    // FNV-1a: stable, and good enough to spread keys.
    b.iter().fold(0x811c_9dc5u32, |h, x| {
        (h ^ u32::from(*x)).wrapping_mul(0x0100_0193)
    })
}

fn encode_batch(records: &[Pending], compression: Compression) -> Result<Bytes, LoadtestError> {
    let encoded: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder cuts a new batch when offset - sequence changes: count up with it.
            sequence: i as i32,
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: Some(r.value.clone()),
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
            compression,
        },
    )
    .map_err(|e| LoadtestError::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

/// Runs one producer to completion. `produced` counts records sent, for progress.
pub(crate) async fn run_producer(
    producer: u32,
    layout: Arc<TopicLayout>,
    cfg: ProducerConfig,
    produced: Arc<AtomicU64>,
) -> ProducerResult {
    let partitions = layout.leaders.len();
    let conns = Connections::default();
    let mut result = ProducerResult {
        sent: 0,
        acked: 0,
        errors: 0,
        offsets: vec![None; cfg.records as usize],
        latency_us: new_histogram(),
        first_error: None,
    };
    let start = Instant::now();
    let interval = cfg
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut pending: BTreeMap<i32, Vec<Pending>> = BTreeMap::new();
    let mut pending_bytes = 0usize;
    let mut partition_bytes = vec![0usize; partitions];
    // The next record, already placed, when its partition's batch was full.
    let mut held: Option<(i32, Option<Bytes>)> = None;
    let mut oldest: Option<Instant> = None;
    let mut next_seq = 0u64;
    let mut in_flight = FuturesUnordered::new();
    let mut creating = true;
    loop {
        let now = Instant::now();
        if creating && (next_seq >= cfg.records || cfg.duration.is_some_and(|d| now - start >= d)) {
            creating = false;
        }
        // 1. Create the records that are due, until one finds its partition's batch full.
        let mut full = false;
        while creating && next_seq < cfg.records {
            let due = match interval {
                Some(i) => start + i.mul_f64(next_seq as f64),
                None => now,
            };
            if due > now {
                break;
            }
            let (p, key) = held
                .take()
                .unwrap_or_else(|| partition_of(&cfg, producer, next_seq, partitions));
            // Value, key and per-record framing.
            let size = cfg.record_size.max(HEADER_BYTES) + key.as_ref().map_or(0, |k| k.len()) + 16;
            if partition_bytes[p as usize] > 0
                && partition_bytes[p as usize] + size > cfg.batch_bytes
            {
                held = Some((p, key));
                full = true;
                break;
            }
            partition_bytes[p as usize] += size;
            // The stamp carries the due time, so end-to-end latency counts from it too.
            let sent_us = now_us() - (now - due).as_micros() as i64;
            let value = Stamp {
                run: cfg.run,
                producer,
                seq: next_seq,
                sent_us,
            }
            .encode(cfg.record_size);
            pending_bytes += value.len() + key.as_ref().map_or(0, |k| k.len());
            pending.entry(p).or_default().push(Pending {
                seq: next_seq,
                due,
                key,
                value,
                timestamp_ms: sent_us / 1000,
            });
            oldest = Some(oldest.map_or(due, |o| o.min(due)));
            next_seq += 1;
        }
        // 2. Send when a batch is full, has lingered long enough, or nothing more will come.
        let ready = full
            || oldest.is_some_and(|o| now >= o + cfg.linger)
            || (!creating && pending_bytes > 0);
        if ready && in_flight.len() < cfg.max_in_flight.max(1) && pending_bytes > 0 {
            let batches = std::mem::take(&mut pending);
            pending_bytes = 0;
            partition_bytes.iter_mut().for_each(|b| *b = 0);
            oldest = None;
            // One request per leader.
            let mut by_leader: BTreeMap<&str, Vec<(i32, Vec<Pending>)>> = BTreeMap::new();
            for (p, records) in batches {
                by_leader
                    .entry(layout.leaders[p as usize].as_str())
                    .or_default()
                    .push((p, records));
            }
            for (leader, parts) in by_leader {
                let mut data = Vec::with_capacity(parts.len());
                let mut sent: Sent = Vec::with_capacity(parts.len());
                for (p, records) in parts {
                    match encode_batch(&records, cfg.compression) {
                        Ok(batch) => data.push(
                            PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(batch)),
                        ),
                        Err(e) => {
                            result.errors += records.len() as u64;
                            result.first_error.get_or_insert(e.to_string());
                            continue;
                        }
                    }
                    result.sent += records.len() as u64;
                    produced.fetch_add(records.len() as u64, Ordering::Relaxed);
                    sent.push((p, records.iter().map(|r| (r.seq, r.due)).collect()));
                }
                let request = ProduceRequest::default()
                    .with_acks(cfg.acks)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![
                        TopicProduceData::default()
                            .with_name(topic_name(&layout.topic))
                            .with_partition_data(data),
                    ]);
                let sending = async {
                    let conn = conns.get(leader).await?;
                    conn.send(PRODUCE_V, &request, cfg.acks != 0).await
                };
                match sending.await {
                    Ok(Some(response)) => {
                        in_flight.push(async move { (sent, response.wait().await) })
                    }
                    Ok(None) => {} // acks=0: nothing will come back
                    Err(e) => {
                        let n: usize = sent.iter().map(|(_, r)| r.len()).sum();
                        result.errors += n as u64;
                        result.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            continue;
        }
        if !creating && pending_bytes == 0 && in_flight.is_empty() {
            break;
        }
        // 3. Wait for the next due record, the linger deadline, or a response.
        let mut wake = now + Duration::from_millis(50);
        if let Some(o) = oldest {
            wake = wake.min(o + cfg.linger);
        }
        if creating && held.is_none() && in_flight.len() < cfg.max_in_flight {
            if let Some(i) = interval {
                wake = wake.min(start + i.mul_f64(next_seq as f64));
            } else {
                wake = now;
            }
        }
        tokio::select! {
            Some((sent, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                settle(&mut result, sent, answer);
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    result
}

/// Records the outcome of one produce request.
fn settle(
    result: &mut ProducerResult,
    sent: Sent,
    answer: Result<kafka_protocol::messages::ProduceResponse, LoadtestError>,
) {
    let acked_at = Instant::now();
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            let n: usize = sent.iter().map(|(_, r)| r.len()).sum();
            result.errors += n as u64;
            result.first_error.get_or_insert(e.to_string());
            return;
        }
    };
    for (p, records) in sent {
        let part = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|r| r.index == p);
        let Some(part) = part else {
            result.errors += records.len() as u64;
            result
                .first_error
                .get_or_insert(format!("no answer for partition {p}"));
            continue;
        };
        if let Some(e) = ResponseError::try_from_code(part.error_code) {
            result.errors += records.len() as u64;
            if result.first_error.is_none() {
                warn!(partition = p, error = ?e, "produce refused");
            }
            result
                .first_error
                .get_or_insert(format!("partition {p}: {e:?}"));
            continue;
        }
        for (i, (seq, due)) in records.into_iter().enumerate() {
            result.acked += 1;
            if let Some(slot) = result.offsets.get_mut(seq as usize) {
                *slot = Some((p, part.base_offset + i as i64));
            }
            let us = (acked_at - due).as_micros().max(1) as u64;
            let _ = result.latency_us.record(us);
        }
    }
}

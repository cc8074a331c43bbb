//! Consumers: each reads its share of the partitions (partition % consumers) from the offsets
//! the run started at, decodes every record, and keeps what it saw for the exactly-once check
//! and the end-to-end latency (due time in the record to now).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use bytes::{Buf, Bytes};
use hdrhistogram::Histogram;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::records::RecordBatchDecoder;
use tokio::time::Instant;

use crate::cluster::{Connections, TopicLayout, topic_name};
use crate::error::LoadtestError;
use crate::payload::{Stamp, now_us};
use crate::produce::new_histogram;

const FETCH_V: i16 = 11;

/// One record as a consumer saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub(crate) producer: u32,
    pub(crate) seq: u64,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// What one consumer read.
pub(crate) struct ConsumerResult {
    pub(crate) seen: Vec<Seen>,
    pub(crate) bytes: u64,
    pub(crate) e2e_us: Histogram<u64>,
    pub(crate) first: Option<Instant>,
    pub(crate) last: Option<Instant>,
    pub(crate) error: Option<String>,
}

/// What the consumers tell the run while they read.
#[derive(Clone)]
pub(crate) struct ConsumeProgress {
    /// This run's records read, for progress.
    pub(crate) consumed: Arc<AtomicU64>,
    /// Each partition's next offset to read, for knowing when everything arrived (a count
    /// alone cannot tell: records whose produce failed may arrive too).
    pub(crate) reached: Arc<Vec<AtomicI64>>,
}

/// Reads until `stop` is set, reporting to `progress`.
pub(crate) async fn run_consumer(
    index: usize,
    consumers: usize,
    layout: Arc<TopicLayout>,
    run: u32,
    start_offsets: Vec<i64>,
    progress: ConsumeProgress,
    stop: Arc<AtomicBool>,
) -> ConsumerResult {
    let ConsumeProgress { consumed, reached } = progress;
    let mut result = ConsumerResult {
        seen: Vec::new(),
        bytes: 0,
        e2e_us: new_histogram(),
        first: None,
        last: None,
        error: None,
    };
    let mine: Vec<i32> = (0..layout.leaders.len() as i32)
        .filter(|p| *p as usize % consumers == index)
        .collect();
    if mine.is_empty() {
        return result;
    }
    let mut positions: Vec<i64> = mine.iter().map(|p| start_offsets[*p as usize]).collect();
    let conns = Connections::default();
    while !stop.load(Ordering::Relaxed) {
        // One fetch per leader, covering this consumer's partitions it leads.
        let mut progressed = false;
        let mut leaders: Vec<&str> = mine
            .iter()
            .map(|p| layout.leaders[*p as usize].as_str())
            .collect();
        leaders.sort_unstable();
        leaders.dedup();
        for leader in leaders {
            let wanted: Vec<usize> = (0..mine.len())
                .filter(|i| layout.leaders[mine[*i] as usize] == leader)
                .collect();
            match fetch_once(&conns, leader, &layout.topic, &mine, &wanted, &positions).await {
                Ok(parts) => {
                    for (i, records) in parts {
                        let now = Instant::now();
                        for (offset, value) in records {
                            positions[i] = offset + 1;
                            reached[mine[i] as usize].store(offset + 1, Ordering::Relaxed);
                            progressed = true;
                            let Some(stamp) = Stamp::decode(&value) else {
                                continue;
                            };
                            if stamp.run != run {
                                continue;
                            }
                            result.bytes += value.len() as u64;
                            let _ = result
                                .e2e_us
                                .record((now_us() - stamp.sent_us).max(1) as u64);
                            result.first.get_or_insert(now);
                            result.last = Some(now);
                            result.seen.push(Seen {
                                producer: stamp.producer,
                                seq: stamp.seq,
                                partition: mine[i],
                                offset,
                            });
                            consumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(e) => {
                    result.error.get_or_insert(e.to_string());
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
        if !progressed {
            tokio::task::yield_now().await;
        }
    }
    result
}

/// One Fetch of the partitions `wanted` (indexes into `mine`): (index, [(offset, value)]).
async fn fetch_once(
    conns: &Connections,
    leader: &str,
    topic: &str,
    mine: &[i32],
    wanted: &[usize],
    positions: &[i64],
) -> Result<Vec<(usize, Vec<(i64, Bytes)>)>, LoadtestError> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(200)
        .with_min_bytes(1)
        .with_max_bytes(64 << 20)
        .with_isolation_level(0)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(
                    wanted
                        .iter()
                        .map(|i| {
                            FetchPartition::default()
                                .with_partition(mine[*i])
                                .with_fetch_offset(positions[*i])
                                .with_partition_max_bytes(16 << 20)
                        })
                        .collect(),
                ),
        ]);
    let response = conns.get(leader).await?.call(FETCH_V, &request).await?;
    if let Some(e) = ResponseError::try_from_code(response.error_code) {
        return Err(LoadtestError::Kafka(format!("fetch: {e:?}")));
    }
    let mut out = Vec::new();
    for t in response.responses {
        for p in t.partitions {
            let Some(i) = wanted
                .iter()
                .copied()
                .find(|i| mine[*i] == p.partition_index)
            else {
                continue;
            };
            if let Some(e) = ResponseError::try_from_code(p.error_code) {
                return Err(LoadtestError::Kafka(format!(
                    "fetch of partition {}: {e:?}",
                    p.partition_index
                )));
            }
            let mut records = Vec::new();
            let mut data = p.records.unwrap_or_default();
            while data.remaining() >= 12 {
                let size = 12 + i32::from_be_bytes([data[8], data[9], data[10], data[11]]) as usize;
                if data.remaining() < size {
                    break; // a partial batch at the end of the response: fetched again next time
                }
                let mut one = data.split_to(size);
                let set = RecordBatchDecoder::decode(&mut one)
                    .map_err(|e| LoadtestError::Protocol(format!("record batch: {e}")))?;
                for r in set.records {
                    if r.offset >= positions[i] {
                        records.push((r.offset, r.value.unwrap_or_default()));
                    }
                }
            }
            out.push((i, records));
        }
    }
    Ok(out)
}

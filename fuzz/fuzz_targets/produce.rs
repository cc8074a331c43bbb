//! The ingest tier end to end in process: a sequence of Produce, InitProducerId and
//! DeleteRecords requests (see the input format in the harness, `fuzz/src/lib.rs`) through
//! `IngestHandler` into the segment buffer, its flusher, the in-memory object store and the
//! in-process indexer, as standalone mode wires them, on a fresh cluster per input.
//!
//! Must never panic, every request must complete (acks=0 ones included), a Produce answer
//! must name every topic and partition of the request, in order, each with a Kafka error code
//! (and a base offset when it succeeded), and every answer must encode at the request's
//! version. Then every acknowledged batch is read back through the fetch tier: it must be
//! there, at the offset it was acknowledged with, as it was sent (only the base offset
//! rewritten; for an idempotent producer's batch, which may have been a retry of an earlier
//! one, its header).

#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, RequestKind, ResponseKind, TopicName};
use kafscale_fuzz::{
    Cluster, Started, check_sendable, context, decode_op, known_error_code, parse_ops, runtime,
    verbose, with_fixed_crcs,
};
use kafscale_ingest::INGEST_APIS;
use kafscale_shared::batch::{BATCH_LOG_OVERHEAD, BatchHeader};
use libfuzzer_sys::fuzz_target;

/// Kafka's OFFSET_OUT_OF_RANGE.
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// One partition of a Produce request as sent.
struct Sent {
    index: i32,
    records: Option<Bytes>,
}

/// An acknowledged batch.
struct Acked {
    topic: TopicName,
    partition: i32,
    base_offset: i64,
    records: Bytes,
}

/// Reads `acked` back at its offset through the fetch tier. `deletes`: some DeleteRecords
/// request ran, so the offset may lie below the log start now.
async fn check_readable(cluster: &Cluster, acked: &Acked, deletes: bool) {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(16 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(acked.topic.clone())
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(acked.partition)
                        .with_fetch_offset(acked.base_offset)
                        .with_partition_max_bytes(8 << 20),
                ]),
        ]);
    let response = cluster.fetch.fetch(request, 12).await;
    let what = format!(
        "acknowledged batch {:?}/{} at {}",
        acked.topic, acked.partition, acked.base_offset
    );
    let [topic] = &response.responses[..] else {
        panic!("{what}: fetch answered {response:?}");
    };
    let [partition] = &topic.partitions[..] else {
        panic!("{what}: fetch answered {response:?}");
    };
    if deletes && partition.error_code == OFFSET_OUT_OF_RANGE {
        return;
    }
    assert_eq!(
        partition.error_code, 0,
        "{what}: fetch failed: {partition:?}"
    );
    let records = partition.records.clone().unwrap_or_default();
    let sent = BatchHeader::parse(&acked.records).expect("an accepted batch parses");
    let stored = BatchHeader::parse(&records)
        .unwrap_or_else(|e| panic!("{what}: fetched no batch ({e}): {partition:?}"));
    assert_eq!(
        stored.base_offset, acked.base_offset,
        "{what}: fetched {stored:?}"
    );
    if sent.producer_id >= 0 {
        // A retry is acknowledged with the offsets of the batch it repeats.
        for (field, s, f) in [
            (
                "last_offset_delta",
                sent.last_offset_delta,
                stored.last_offset_delta,
            ),
            ("base_sequence", sent.base_sequence, stored.base_sequence),
            ("record_count", sent.record_count, stored.record_count),
        ] {
            assert_eq!(
                s, f,
                "{what}: {field} differs: sent {sent:?}, fetched {stored:?}"
            );
        }
        assert_eq!(sent.producer_id, stored.producer_id, "{what}");
        return;
    }
    let total = stored.batch_length as usize + BATCH_LOG_OVERHEAD;
    assert!(records.len() >= total, "{what}: fetched a partial batch");
    assert_eq!(
        &records[8..total],
        &acked.records[8..],
        "{what}: fetched bytes differ from the batch sent"
    );
    if verbose() {
        eprintln!("{what}: read back");
    }
}

fuzz_target!(|data: &[u8]| {
    let ops = parse_ops(data, &INGEST_APIS);
    if ops.is_empty() {
        return;
    }
    runtime().block_on(async {
        let cluster = Cluster::start().await;
        let mut started = Vec::new();
        let mut deletes = false;
        for (n, op) in ops.iter().enumerate() {
            let Some(mut request) = decode_op(op) else {
                continue;
            };
            if op.fix_crcs
                && let RequestKind::Produce(produce) = &mut request
            {
                for topic in &mut produce.topic_data {
                    for partition in &mut topic.partition_data {
                        if let Some(records) = &mut partition.records {
                            *records = with_fixed_crcs(records);
                        }
                    }
                }
            }
            deletes |= matches!(request, RequestKind::DeleteRecords(_));
            let sent = match &request {
                RequestKind::Produce(p) => Some((
                    p.acks,
                    p.topic_data
                        .iter()
                        .map(|t| {
                            let partitions = t
                                .partition_data
                                .iter()
                                .map(|p| Sent {
                                    index: p.index,
                                    records: p.records.clone(),
                                })
                                .collect::<Vec<_>>();
                            (t.name.clone(), partitions)
                        })
                        .collect::<Vec<_>>(),
                )),
                _ => None,
            };
            let dispatch = cluster
                .ingest
                .start(context(op.key, op.version, n as i32), request)
                .await;
            started.push((Started::spawn(op.key, op.version, dispatch), sent));
            if !op.advance.is_zero() {
                tokio::time::sleep(op.advance).await;
            }
        }
        let mut acked = Vec::new();
        for (request, sent) in started {
            let (key, version) = (request.key, request.version);
            let answer = request.finish().await;
            if let (ApiKey::Produce, Some((acks, topics))) = (key, &sent) {
                match (&answer, acks) {
                    (None, 0) => continue,
                    (None, _) => panic!("Produce v{version} with acks={acks} got no answer"),
                    (Some(_), 0) => panic!("Produce v{version} with acks=0 got an answer"),
                    (Some(Ok(ResponseKind::Produce(response))), _) => {
                        assert_eq!(response.responses.len(), topics.len(), "topics answered");
                        for (topic, (name, partitions)) in response.responses.iter().zip(topics) {
                            assert_eq!(&topic.name, name);
                            let answered: Vec<i32> =
                                topic.partition_responses.iter().map(|p| p.index).collect();
                            let asked: Vec<i32> = partitions.iter().map(|p| p.index).collect();
                            assert_eq!(answered, asked, "partitions answered in {name:?}");
                            for (p, sent) in topic.partition_responses.iter().zip(partitions) {
                                assert!(
                                    known_error_code(p.error_code),
                                    "unknown error code {} for {name:?}/{}",
                                    p.error_code,
                                    p.index
                                );
                                if p.error_code == 0 {
                                    assert!(p.base_offset >= 0, "success without an offset: {p:?}");
                                    acked.push(Acked {
                                        topic: name.clone(),
                                        partition: p.index,
                                        base_offset: p.base_offset,
                                        records: sent.records.clone().unwrap_or_default(),
                                    });
                                }
                            }
                        }
                    }
                    (Some(other), _) => panic!("Produce v{version} answered with {other:?}"),
                }
            }
            match answer {
                Some(answer) => check_sendable(key, version, answer),
                None => assert_eq!(key, ApiKey::Produce, "{key:?} v{version} got no answer"),
            }
        }
        for a in &acked {
            check_readable(&cluster, a, deletes).await;
        }
        cluster.stop().await;
    });
});

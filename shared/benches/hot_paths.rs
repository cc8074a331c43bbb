//! The per-byte work of the produce and fetch paths: validating a produce request's batches
//! (CRC-32C over every byte), decoding a Produce frame and encoding a Fetch response, and
//! patching base offsets into fetched batches. Run: `cargo bench -p kafscale-shared`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafscale_shared::batch::{patch_base_offsets, validate_batches};

const RUN_BYTES: usize = 1024 * 1024;
const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;

/// About 1 MiB of record batches of 16 × 1 KiB records, as a producer sends them.
fn batches() -> Bytes {
    let mut buf = BytesMut::new();
    let mut i = 0usize;
    while buf.len() < RUN_BYTES {
        let records: Vec<Record> = (0..RECORDS_PER_BATCH)
            .map(|r| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: r as i64,
                sequence: r as i32,
                timestamp: 1_700_000_000_000 + i as i64,
                key: None,
                value: Some(Bytes::from(vec![(i + r) as u8; RECORD_BYTES])),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("encode batch");
        i += 1;
    }
    buf.freeze()
}

fn hot_paths(c: &mut Criterion) {
    let run = batches();
    let mut group = c.benchmark_group("produce");
    group.throughput(Throughput::Bytes(run.len() as u64));
    group.bench_function("validate_1MiB_of_16x1KiB_batches", |b| {
        b.iter(|| black_box(validate_batches(&run, 1 << 20).expect("valid")))
    });
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("bench")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(run.clone())),
                ]),
        ]);
    let mut frame = BytesMut::new();
    request.encode(&mut frame, 9).expect("encode produce");
    let frame = frame.freeze();
    group.bench_function("decode_produce_v9_1MiB", |b| {
        b.iter(|| {
            let mut buf = frame.clone();
            black_box(ProduceRequest::decode(&mut buf, 9).expect("decode"))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("fetch");
    group.throughput(Throughput::Bytes(run.len() as u64));
    group.bench_function("patch_base_offsets_1MiB", |b| {
        let mut buf = run.to_vec();
        b.iter(|| black_box(patch_base_offsets(&mut buf, 1_000_000)))
    });
    let mut partition = PartitionData::default();
    partition.records = Some(run.clone());
    let mut topic = FetchableTopicResponse::default();
    topic.topic = TopicName(StrBytes::from_static_str("bench"));
    topic.partitions = vec![partition];
    let mut response = FetchResponse::default();
    response.responses = vec![topic];
    group.bench_function("encode_fetch_v12_1MiB", |b| {
        b.iter(|| {
            let mut out = BytesMut::with_capacity(run.len() + 256);
            response.encode(&mut out, 12).expect("encode fetch");
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);

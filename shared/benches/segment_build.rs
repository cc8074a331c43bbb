//! Cost of laying out a segment: 4 MiB of 1 KiB record batches spread over 16 partitions,
//! appended round-robin (the ingest gateway's worst case for run grouping), then `finish`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafscale_shared::buffer_pool::BufferPool;
use kafscale_shared::segment::{BatchMeta, SegmentBuilder};
use uuid::Uuid;

const SEGMENT_BYTES: usize = 4 * 1024 * 1024;
const BATCH_BYTES: usize = 1024;
const PARTITIONS: i32 = 16;

fn segment_build(c: &mut Criterion) {
    let topic = Uuid::from_u128(0x5e97_e000_0000_4000_8000_0000_0000_0001);
    let batches: Vec<(i32, Bytes)> = (0..SEGMENT_BYTES / BATCH_BYTES)
        .map(|i| {
            let partition = i as i32 % PARTITIONS;
            (partition, Bytes::from(vec![i as u8; BATCH_BYTES]))
        })
        .collect();
    let meta = BatchMeta {
        record_count: 10,
        first_timestamp: 1_700_000_000_000,
        max_timestamp: 1_700_000_000_009,
    };

    // As the ingest tier builds them: into pooled buffers, reused from the second build on.
    let pool = BufferPool::new(2);
    let mut group = c.benchmark_group("segment");
    group.throughput(Throughput::Bytes(SEGMENT_BYTES as u64));
    group.bench_function("build_4MiB_1KiB_batches_16_partitions", |b| {
        b.iter(|| {
            let mut builder = SegmentBuilder::new();
            for (partition, batch) in &batches {
                builder.append(topic, *partition, batch.clone(), meta);
            }
            black_box(builder.finish_in(&pool))
        })
    });
    group.finish();
}

criterion_group!(benches, segment_build);
criterion_main!(benches);

//! Offset-index lookups: "which segment range holds offset X of this partition", the store
//! query behind every Fetch whose entries are not cached yet, against the standalone
//! metadata store (redb) holding 100,000 index entries for one partition (a partition of about
//! 100 GB at 1 MiB per entry). Run: `cargo bench -p kafscale-shared --bench index_lookup`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use kafscale_shared::catalog::{self, Catalog, IndexEntry};
use kafscale_shared::meta_store::{Condition, MetaStore, RedbMetaStore, WriteOp};
use uuid::Uuid;

const ENTRIES: i64 = 100_000;
const RECORDS_PER_ENTRY: i64 = 1_000;
const WRITE_BATCH: i64 = 1_000;

fn entry(topic_id: Uuid, i: i64) -> IndexEntry {
    IndexEntry {
        format: catalog::ITEM_FORMAT,
        base_offset: i * RECORDS_PER_ENTRY,
        last_offset: (i + 1) * RECORDS_PER_ENTRY - 1,
        segment_key: format!("segments/{topic_id}/{i:020}.seg"),
        byte_start: 16,
        byte_len: 1024 * 1024,
        batch_count: 64,
        record_count: RECORDS_PER_ENTRY as u64,
        first_timestamp: 1_700_000_000_000 + i,
        max_timestamp: 1_700_000_000_000 + i,
        running_max_timestamp: Some(1_700_000_000_000 + i),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn MetaStore> =
        Arc::new(RedbMetaStore::open(&dir.path().join("meta.redb")).expect("open redb"));
    let topic_id = Uuid::from_u128(7);
    runtime.block_on(async {
        for start in (0..ENTRIES).step_by(WRITE_BATCH as usize) {
            let ops = (start..start + WRITE_BATCH)
                .map(|i| {
                    let e = entry(topic_id, i);
                    WriteOp::Put {
                        key: catalog::index_key(topic_id, 0, e.last_offset),
                        value: catalog::encode(&e),
                        condition: Condition::None,
                    }
                })
                .collect();
            store.write(ops).await.expect("write index entries");
        }
    });
    let catalog = Catalog::new(store);
    let mut group = c.benchmark_group("index_lookup");
    // Offsets spread over the whole partition (xorshift), so lookups do not hit one page.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut random_offset = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % (ENTRIES * RECORDS_PER_ENTRY) as u64) as i64
    };
    group.bench_function("redb_100k_entries_first_entry_at_offset", |b| {
        b.iter(|| {
            let offset = random_offset();
            let found = runtime
                .block_on(catalog.index_entries_from(topic_id, 0, offset, Some(1)))
                .expect("lookup");
            assert!(found[0].base_offset <= offset && offset <= found[0].last_offset);
            black_box(found)
        })
    });
    group.bench_function("redb_100k_entries_page_of_64_at_offset", |b| {
        b.iter(|| {
            let offset = random_offset();
            black_box(
                runtime
                    .block_on(catalog.index_entries_from(topic_id, 0, offset, Some(64)))
                    .expect("lookup"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

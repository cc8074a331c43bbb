//! Segment format v1: golden bytes, round-trip and decoder-robustness properties, and
//! `read_footer` against an in-memory object store.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use kafscale_shared::object_store::{ObjectMeta, ObjectStore, ObjectStoreError};
use kafscale_shared::segment::{
    BatchMeta, BuiltSegment, FOOTER_PREFETCH, HEADER_LEN, MIN_SEGMENT_LEN, RUN_ENTRY_LEN, RunEntry,
    SEGMENT_FORMAT_VERSION, SEGMENT_MAGIC, SegmentBuilder, SegmentError, TRAILER_LEN,
    encode_footer, encode_header, footer_len, parse_segment, read_footer, read_footer_sized,
};
use proptest::prelude::*;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Golden file
// ---------------------------------------------------------------------------------------------

const TOPIC_A: Uuid = Uuid::from_u128(0x0a0a_0a0a_0000_4000_8000_0000_0000_00aa);
const TOPIC_B: Uuid = Uuid::from_u128(0x0b0b_0b0b_0000_4000_8000_0000_0000_00bb);

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/segment-v1.golden")
}

/// 2 topics x 2 partitions, appended interleaved (B before A, partition 1 before 0) so the
/// golden bytes also pin the run ordering.
fn golden_segment() -> BuiltSegment {
    let mut b = SegmentBuilder::new();
    let m = |records, first, max| BatchMeta {
        record_count: records,
        first_timestamp: first,
        max_timestamp: max,
    };
    b.append(
        TOPIC_B,
        1,
        Bytes::from(vec![0xB1; 12]),
        m(3, 1_700_000_000_300, 1_700_000_000_310),
    );
    b.append(
        TOPIC_A,
        0,
        Bytes::from(vec![0xA0; 9]),
        m(1, 1_700_000_000_000, 1_700_000_000_000),
    );
    b.append(
        TOPIC_A,
        1,
        Bytes::from(vec![0xA1; 7]),
        m(2, 1_700_000_000_100, 1_700_000_000_150),
    );
    b.append(
        TOPIC_B,
        0,
        Bytes::from(vec![0xB0; 5]),
        m(4, 1_700_000_000_200, 1_700_000_000_260),
    );
    b.append(
        TOPIC_A,
        0,
        Bytes::from(vec![0xA2; 6]),
        m(5, 1_700_000_000_010, 1_700_000_000_090),
    );
    b.append(
        TOPIC_B,
        1,
        Bytes::from(vec![0xB3; 3]),
        m(1, 1_700_000_000_290, 1_700_000_000_299),
    );
    b.finish()
}

fn golden_runs() -> Vec<RunEntry> {
    let run = |topic_id, partition, byte_start, byte_len, batch_count, record_count, first, max| {
        RunEntry {
            topic_id,
            partition,
            byte_start,
            byte_len,
            batch_count,
            record_count,
            first_timestamp: first,
            max_timestamp: max,
        }
    };
    vec![
        run(
            TOPIC_A,
            0,
            16,
            15,
            2,
            6,
            1_700_000_000_000,
            1_700_000_000_090,
        ),
        run(
            TOPIC_A,
            1,
            31,
            7,
            1,
            2,
            1_700_000_000_100,
            1_700_000_000_150,
        ),
        run(
            TOPIC_B,
            0,
            38,
            5,
            1,
            4,
            1_700_000_000_200,
            1_700_000_000_260,
        ),
        run(
            TOPIC_B,
            1,
            43,
            15,
            2,
            4,
            1_700_000_000_300,
            1_700_000_000_310,
        ),
    ]
}

#[test]
fn golden_v1_bytes() {
    let built = golden_segment();
    let path = golden_path();
    if std::env::var("KAFSCALE_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(&path, &built.data).expect("write golden file");
    }
    let golden = std::fs::read(&path).expect("golden file (KAFSCALE_BLESS=1 regenerates it)");
    assert_eq!(
        built.data.as_ref(),
        golden.as_slice(),
        "builder output differs from {}; if the format changed on purpose, bump the version",
        path.display()
    );

    // Independent of the builder: the file itself parses to the hand-written directory.
    assert_eq!(
        parse_segment(&golden).expect("golden parses"),
        golden_runs()
    );
    assert_eq!(built.runs, golden_runs());
    assert_eq!(built.batch_starts, vec![43, 16, 31, 38, 25, 55]);

    // Spot-check the documented byte layout.
    assert_eq!(golden.len(), 16 + 42 + 4 + 4 * 64 + 12);
    assert_eq!(&golden[0..4], b"KSEG");
    assert_eq!(&golden[4..6], &[0, 1]);
    assert_eq!(&golden[6..16], &[0; 10]);
    assert_eq!(&golden[16..25], &[0xA0; 9]);
    let footer = &golden[58..58 + 4 + 4 * 64];
    assert_eq!(&footer[0..4], &4u32.to_be_bytes());
    assert_eq!(&footer[4..20], TOPIC_A.as_bytes());
    let trailer = &golden[golden.len() - 12..];
    assert_eq!(&trailer[0..4], &260u32.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&golden[..16]), footer);
    assert_eq!(&trailer[4..8], &crc.to_be_bytes());
    assert_eq!(&trailer[8..12], b"KSEG");
}

#[test]
fn constants_match_the_documented_layout() {
    assert_eq!(SEGMENT_MAGIC, *b"KSEG");
    assert_eq!(SEGMENT_FORMAT_VERSION, 1);
    assert_eq!((HEADER_LEN, TRAILER_LEN, RUN_ENTRY_LEN), (16, 12, 64));
    assert_eq!(MIN_SEGMENT_LEN, 32);
    assert_eq!(
        encode_header(),
        *b"KSEG\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    );
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Append {
    topic: usize,
    partition: i32,
    batch: Vec<u8>,
    meta: BatchMeta,
}

fn append_strategy(topics: usize) -> impl Strategy<Value = Append> {
    (
        0..topics,
        prop_oneof![4 => 0..6i32, 1 => any::<i32>()],
        prop::collection::vec(any::<u8>(), 0..96),
        any::<u32>(),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(
            |(topic, partition, batch, record_count, first, max)| Append {
                topic,
                partition,
                batch,
                meta: BatchMeta {
                    record_count,
                    first_timestamp: first,
                    max_timestamp: max,
                },
            },
        )
}

fn build(topics: &[Uuid], appends: &[Append]) -> BuiltSegment {
    let mut b = SegmentBuilder::new();
    let mut expected_len = HEADER_LEN + footer_len(0) + TRAILER_LEN;
    for (i, a) in appends.iter().enumerate() {
        let h = b.append(
            topics[a.topic],
            a.partition,
            Bytes::from(a.batch.clone()),
            a.meta,
        );
        assert_eq!(h, i);
        expected_len += a.batch.len();
    }
    assert_eq!(b.batch_count(), appends.len());
    assert_eq!(b.is_empty(), appends.is_empty());
    assert_eq!(
        b.data_bytes(),
        appends.iter().map(|a| a.batch.len()).sum::<usize>()
    );
    let encoded_len = b.encoded_len();
    let built = b.finish();
    assert_eq!(built.data.len(), encoded_len);
    assert_eq!(
        built.data.len(),
        expected_len + built.runs.len() * RUN_ENTRY_LEN
    );
    built
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip(
        topics in prop::collection::vec(any::<u128>().prop_map(Uuid::from_u128), 1..4),
        appends in prop::collection::vec(append_strategy(3), 0..40),
    ) {
        let appends: Vec<Append> = appends
            .into_iter()
            .map(|mut a| { a.topic %= topics.len(); a })
            .collect();
        let built = build(&topics, &appends);
        let data = &built.data;

        prop_assert_eq!(parse_segment(data).expect("valid segment"), built.runs.clone());

        // Every batch lies, byte for byte, where batch_starts says.
        prop_assert_eq!(built.batch_starts.len(), appends.len());
        for (h, a) in appends.iter().enumerate() {
            let s = built.batch_starts[h] as usize;
            prop_assert_eq!(&data[s..s + a.batch.len()], a.batch.as_slice());
        }

        // Runs ordered, contiguous, covering the body exactly.
        let body_end = data.len() - TRAILER_LEN - footer_len(built.runs.len());
        let mut cursor = HEADER_LEN as u64;
        for w in built.runs.windows(2) {
            prop_assert!((w[0].topic_id, w[0].partition) < (w[1].topic_id, w[1].partition));
        }
        for r in &built.runs {
            prop_assert_eq!(r.byte_start, cursor);
            cursor += r.byte_len;
        }
        prop_assert_eq!(cursor, body_end as u64);

        // Each run matches a model of its partition's appends, in append order.
        let mut model: HashMap<(Uuid, i32), Vec<usize>> = HashMap::new();
        for (h, a) in appends.iter().enumerate() {
            model.entry((topics[a.topic], a.partition)).or_default().push(h);
        }
        prop_assert_eq!(model.len(), built.runs.len());
        for r in &built.runs {
            let hs = &model[&(r.topic_id, r.partition)];
            prop_assert_eq!(r.batch_count as usize, hs.len());
            let mut pos = r.byte_start;
            for &h in hs {
                prop_assert_eq!(built.batch_starts[h], pos);
                pos += appends[h].batch.len() as u64;
            }
            prop_assert_eq!(pos, r.byte_start + r.byte_len);
            let records: u64 = hs.iter().map(|&h| u64::from(appends[h].meta.record_count)).sum();
            prop_assert_eq!(r.record_count, records);
            prop_assert_eq!(r.first_timestamp, appends[hs[0]].meta.first_timestamp);
            let max = hs.iter().map(|&h| appends[h].meta.max_timestamp).max();
            prop_assert_eq!(Some(r.max_timestamp), max);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder robustness ("fuzz the decoders")
// ---------------------------------------------------------------------------------------------

fn small_segment_strategy() -> impl Strategy<Value = BuiltSegment> {
    (
        prop::collection::vec(any::<u128>().prop_map(Uuid::from_u128), 1..3),
        prop::collection::vec(append_strategy(2), 0..12),
    )
        .prop_map(|(topics, appends)| {
            let mut b = SegmentBuilder::new();
            for a in appends {
                b.append(
                    topics[a.topic % topics.len()],
                    a.partition,
                    Bytes::from(a.batch),
                    a.meta,
                );
            }
            b.finish()
        })
}

/// A v1 header, an arbitrary body and an arbitrary footer, sealed with a correct trailer: gets
/// random directories past the magic and CRC checks to the structural ones.
fn sealed_random_footer(body: &[u8], footer: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&encode_header());
    out.extend_from_slice(body);
    out.extend_from_slice(footer);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&encode_header()), footer);
    out.put_u32(footer.len() as u32);
    out.put_u32(crc);
    out.extend_from_slice(&SEGMENT_MAGIC);
    out
}

/// What a successful parse must guarantee, whatever the input.
fn assert_valid_directory(data: &[u8], runs: &[RunEntry]) {
    let body_end = (data.len() - TRAILER_LEN - footer_len(runs.len())) as u64;
    let mut cursor = HEADER_LEN as u64;
    for (i, r) in runs.iter().enumerate() {
        assert!(r.batch_count > 0);
        assert_eq!(r.byte_start, cursor);
        cursor = r.byte_start + r.byte_len;
        if i > 0 {
            assert!((runs[i - 1].topic_id, runs[i - 1].partition) < (r.topic_id, r.partition));
        }
    }
    assert_eq!(cursor, body_end);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_are_rejected(data in prop::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(parse_segment(&data).is_err());
    }

    #[test]
    fn arbitrary_bytes_between_magics_are_rejected(
        middle in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut data = encode_header().to_vec();
        data.extend_from_slice(&middle);
        data.extend_from_slice(&SEGMENT_MAGIC);
        prop_assert!(parse_segment(&data).is_err());
    }

    #[test]
    fn random_directories_with_valid_crc_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..64),
        count in prop_oneof![0..4u32, any::<u32>()],
        entries in prop::collection::vec(any::<u8>(), 0..(3 * RUN_ENTRY_LEN)),
        align in any::<bool>(),
    ) {
        let mut footer = count.to_be_bytes().to_vec();
        footer.extend_from_slice(&entries);
        if align {
            footer.truncate(4 + (footer.len() - 4) / RUN_ENTRY_LEN * RUN_ENTRY_LEN);
        }
        let data = sealed_random_footer(&body, &footer);
        if let Ok(runs) = parse_segment(&data) {
            assert_valid_directory(&data, &runs);
        }
    }

    #[test]
    fn plausible_directories_with_valid_crc_are_judged_exactly(
        entries in prop::collection::vec(
            (0..3u8, -1..3i32, 0..20u64, prop_oneof![1 => Just(0u32), 6 => 1..4u32], any::<u64>(), any::<i64>()),
            0..5,
        ),
        sorted in prop::bool::weighted(0.8),
        tamper in prop::option::weighted(0.4, (any::<prop::sample::Index>(), 0..4u8, any::<u64>())),
        slack in prop_oneof![4 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64)],
    ) {
        // Mostly valid directories, some with one field tampered with: both the accepting and
        // every rejecting path get exercised, and the verdict must match a simple oracle.
        let mut runs: Vec<RunEntry> = entries
            .into_iter()
            .map(|(t, partition, byte_len, batch_count, record_count, ts)| RunEntry {
                topic_id: Uuid::from_u128(u128::from(t)),
                partition,
                byte_start: 0,
                byte_len,
                batch_count,
                record_count,
                first_timestamp: ts,
                max_timestamp: ts,
            })
            .collect();
        if sorted {
            runs.sort_by_key(|r| (r.topic_id, r.partition));
            runs.dedup_by_key(|r| (r.topic_id, r.partition));
        }
        let mut cursor = HEADER_LEN as u64;
        for r in &mut runs {
            r.byte_start = cursor;
            cursor += r.byte_len;
        }
        let body_len = ((cursor - HEADER_LEN as u64) as i64 + slack).max(0) as usize;
        if let (Some((which, field, value)), false) = (tamper, runs.is_empty()) {
            let n = runs.len();
            let r = &mut runs[which.index(n)];
            match field {
                0 => r.byte_start = r.byte_start.wrapping_add(1),
                1 => r.byte_start = value,
                2 => r.byte_len = value,
                _ => r.byte_len = r.byte_len.wrapping_sub(1),
            }
        }
        let mut data = BytesMut::new();
        data.put_slice(&encode_header());
        data.put_bytes(0x5A, body_len);
        encode_footer(&runs, &mut data);

        // The oracle, in u128 so that it cannot overflow.
        let body_end = (HEADER_LEN + body_len) as u128;
        let mut at = HEADER_LEN as u128;
        let mut valid = true;
        for (i, r) in runs.iter().enumerate() {
            valid &= r.batch_count > 0 && u128::from(r.byte_start) == at;
            valid &= i == 0 || (runs[i - 1].topic_id, runs[i - 1].partition) < (r.topic_id, r.partition);
            at = u128::from(r.byte_start) + u128::from(r.byte_len);
        }
        valid &= at == body_end;

        match parse_segment(&data) {
            Ok(parsed) => {
                prop_assert!(valid, "accepted an invalid directory {runs:?}");
                prop_assert_eq!(&parsed, &runs);
                assert_valid_directory(&data, &parsed);
            }
            Err(e) => {
                prop_assert!(!valid, "rejected a valid directory: {e}");
                prop_assert!(matches!(e, SegmentError::Corrupt(_)), "only the structure is wrong: {e}");
            }
        }
    }

    #[test]
    fn single_byte_corruption_outside_the_body_is_rejected(
        seg in small_segment_strategy(),
        pos in any::<prop::sample::Index>(),
        xor in 1..=255u8,
    ) {
        let mut data = seg.data.to_vec();
        let i = pos.index(data.len());
        data[i] ^= xor;
        let body = HEADER_LEN..data.len() - TRAILER_LEN - footer_len(seg.runs.len());
        match parse_segment(&data) {
            // By design the body is covered by the batches' own CRCs, not the segment's.
            Ok(runs) => {
                prop_assert!(body.contains(&i), "corruption at {i} accepted");
                prop_assert_eq!(runs, seg.runs);
            }
            Err(e) => {
                prop_assert!(!body.contains(&i), "body corruption at {i} rejected: {e}");
                prop_assert!(!e.is_retryable());
            }
        }
    }

    #[test]
    fn truncations_and_extensions_are_rejected(
        seg in small_segment_strategy(),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..20),
    ) {
        let data = &seg.data;
        let k = cut.index(data.len());
        prop_assert!(parse_segment(&data[..k]).is_err(), "prefix of {k} bytes accepted");
        prop_assert!(parse_segment(&data[k + 1..]).is_err(), "suffix from {} accepted", k + 1);
        let mut longer = data.to_vec();
        longer.extend_from_slice(&extra);
        prop_assert!(parse_segment(&longer).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// read_footer against an in-memory store
// ---------------------------------------------------------------------------------------------

/// Minimal in-memory `ObjectStore` that records the ranges read.
#[derive(Debug, Default)]
struct TestStore {
    objects: Mutex<HashMap<String, Bytes>>,
    ranges: Mutex<Vec<Range<u64>>>,
    fail_io: AtomicBool,
}

impl TestStore {
    fn with(key: &str, data: Bytes) -> Self {
        let s = Self::default();
        s.objects.lock().expect("lock").insert(key.to_owned(), data);
        s
    }

    fn ranges(&self) -> Vec<Range<u64>> {
        self.ranges.lock().expect("lock").clone()
    }

    fn check_io(&self, key: &str) -> Result<(), ObjectStoreError> {
        if self.fail_io.load(Ordering::SeqCst) {
            return Err(ObjectStoreError::Io {
                key: key.to_owned(),
                source: std::io::Error::other("injected"),
            });
        }
        Ok(())
    }

    fn object(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
        self.check_io(key)?;
        self.objects
            .lock()
            .expect("lock")
            .get(key)
            .cloned()
            .ok_or_else(|| ObjectStoreError::NotFound {
                key: key.to_owned(),
            })
    }
}

#[async_trait]
impl ObjectStore for TestStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        let mut objects = self.objects.lock().expect("lock");
        if objects.contains_key(key) {
            return Err(ObjectStoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        objects.insert(key.to_owned(), data);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
        self.object(key)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectStoreError> {
        let data = self.object(key)?;
        let size = data.len() as u64;
        if range.start > range.end || range.end > size {
            return Err(ObjectStoreError::InvalidRange {
                key: key.to_owned(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        self.ranges.lock().expect("lock").push(range.clone());
        Ok(data.slice(range.start as usize..range.end as usize))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        self.check_io(key)?;
        Ok(self
            .objects
            .lock()
            .expect("lock")
            .get(key)
            .map(|d| ObjectMeta {
                key: key.to_owned(),
                size: d.len() as u64,
            }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        let mut out: Vec<ObjectMeta> = self
            .objects
            .lock()
            .expect("lock")
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, d)| ObjectMeta {
                key: k.clone(),
                size: d.len() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.objects.lock().expect("lock").remove(key);
        Ok(())
    }
}

/// A segment with `partitions` runs of one `batch_len`-byte batch each.
fn segment(partitions: i32, batch_len: usize) -> BuiltSegment {
    let mut b = SegmentBuilder::new();
    for p in 0..partitions {
        let meta = BatchMeta {
            record_count: 1,
            first_timestamp: 7,
            max_timestamp: 9,
        };
        b.append(TOPIC_A, p, Bytes::from(vec![p as u8; batch_len]), meta);
    }
    b.finish()
}

const KEY: &str = "segments/0001.kseg";

#[tokio::test]
async fn read_footer_small_object_is_one_read() {
    let seg = golden_segment();
    let store = TestStore::with(KEY, seg.data.clone());
    assert_eq!(read_footer(&store, KEY).await.expect("read"), seg.runs);
    assert_eq!(store.ranges(), vec![0..seg.data.len() as u64]);
}

#[tokio::test]
async fn read_footer_large_body_skips_the_body() {
    let seg = segment(8, 64 * 1024);
    let len = seg.data.len() as u64;
    let store = TestStore::with(KEY, seg.data.clone());
    assert_eq!(read_footer(&store, KEY).await.expect("read"), seg.runs);
    let mut ranges = store.ranges();
    ranges.sort_by_key(|r| r.start);
    assert_eq!(
        ranges,
        vec![0..HEADER_LEN as u64, len - FOOTER_PREFETCH..len]
    );
}

#[tokio::test]
async fn read_footer_large_footer_costs_one_more_read() {
    // 300 runs: a 19,204-byte footer, larger than the prefetch.
    let seg = segment(300, 100);
    let len = seg.data.len() as u64;
    let footer_start = len - (footer_len(300) + TRAILER_LEN) as u64;
    let store = TestStore::with(KEY, seg.data.clone());
    assert_eq!(read_footer(&store, KEY).await.expect("read"), seg.runs);
    let mut ranges = store.ranges();
    ranges.sort_by_key(|r| r.start);
    let tail_start = len - FOOTER_PREFETCH;
    assert_eq!(
        ranges,
        vec![
            0..HEADER_LEN as u64,
            footer_start..tail_start,
            tail_start..len
        ]
    );
}

#[tokio::test]
async fn read_footer_sized_matches_read_footer_at_every_size_boundary() {
    // Objects around the one-read / prefetch boundaries.
    let base = segment(1, 0).data.len();
    let limit = HEADER_LEN + FOOTER_PREFETCH as usize;
    for body in [0, limit - base - 1, limit - base, limit - base + 1, limit] {
        let seg = segment(1, body);
        let store = TestStore::with(KEY, seg.data.clone());
        let runs = read_footer_sized(&store, KEY, seg.data.len() as u64)
            .await
            .expect("read");
        assert_eq!(runs, seg.runs, "body {body}");
    }
}

#[tokio::test]
async fn read_footer_reports_damage() {
    // Corrupt footer byte in a large object.
    let seg = segment(8, 64 * 1024);
    let mut data = seg.data.to_vec();
    let n = data.len();
    data[n - TRAILER_LEN - 10] ^= 0xFF;
    let store = TestStore::with(KEY, Bytes::from(data));
    let err = read_footer(&store, KEY).await.expect_err("corrupt");
    assert!(matches!(err, SegmentError::CrcMismatch { .. }), "{err}");
    assert!(!err.is_retryable());

    // A footer length larger than the object: rejected before reading more.
    let mut data = seg.data.to_vec();
    data[n - TRAILER_LEN..n - TRAILER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    let store = TestStore::with(KEY, Bytes::from(data));
    let err = read_footer(&store, KEY).await.expect_err("corrupt");
    assert!(matches!(err, SegmentError::Corrupt(_)), "{err}");
    assert_eq!(store.ranges().len(), 2);

    // Too small to be a segment.
    let store = TestStore::with(KEY, Bytes::from_static(b"KSEG"));
    let err = read_footer(&store, KEY).await.expect_err("tiny");
    assert!(matches!(err, SegmentError::Truncated), "{err}");

    // Not a segment at all.
    let store = TestStore::with(KEY, Bytes::from(vec![0u8; 40_000]));
    let err = read_footer(&store, KEY).await.expect_err("zeros");
    assert!(matches!(err, SegmentError::BadMagic), "{err}");
}

#[tokio::test]
async fn read_footer_store_errors() {
    let store = TestStore::default();
    let err = read_footer(&store, KEY).await.expect_err("missing");
    assert!(
        matches!(err, SegmentError::Store(ObjectStoreError::NotFound { .. })),
        "{err}"
    );
    assert!(!err.is_retryable());

    let store = TestStore::with(KEY, segment(2, 10).data);
    store.fail_io.store(true, Ordering::SeqCst);
    let err = read_footer(&store, KEY).await.expect_err("io");
    assert!(
        matches!(err, SegmentError::Store(ObjectStoreError::Io { .. })),
        "{err}"
    );
    assert!(err.is_retryable());
}

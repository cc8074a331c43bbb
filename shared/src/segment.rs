//! Segment object format v1: how the ingest gateway packs record batches from many partitions
//! into one immutable object, and how everyone else finds them again.
//!
//! Why it looks like this (the byte-by-byte layout is in `docs/segment-format.md`):
//!
//! * **Batches are stored exactly as the producer sent them.** The body is a sequence of
//!   *partition runs*, one per `(topic_id, partition)`, each the concatenation of that
//!   partition's record batches in append order. Nothing is re-encoded, so the fetch gateway
//!   serves a byte range straight from the object and only patches each batch's 8-byte base
//!   offset; the producer's own CRC-32C over each batch keeps protecting the record data.
//! * **A footer is the segment's directory.** It lists every run (where it lies, how many
//!   batches and records it holds, its timestamps). It sits at the end, so a writer can stream
//!   the body first, and a fixed-size trailer says how long it is: GC, orphan scans and admin
//!   tools learn what a segment holds with ranged reads of a few KiB instead of fetching the
//!   whole object ([`read_footer`]).
//! * **The checksum covers only header + footer.** Every Kafka batch already carries a
//!   CRC-32C over its records, so checksumming the body again would double the CPU cost of
//!   every flush for no gain; what nothing else protects is the directory, and a corrupt
//!   directory would point readers at the wrong bytes.
//!
//! Decoders never panic and never trust a count or an offset before checking it against the
//! bytes actually present: a segment is untrusted input as soon as it leaves the process that
//! wrote it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::buffer_pool::BufferPool;
use crate::object_store::{ObjectStore, ObjectStoreError};

/// Magic bytes at the start and at the very end of every segment object.
pub const SEGMENT_MAGIC: [u8; 4] = *b"KSEG";
/// The format version this module writes, and the only one it reads.
pub const SEGMENT_FORMAT_VERSION: u16 = 1;
/// Size of the fixed header: magic, version, flags, 8 reserved bytes.
pub const HEADER_LEN: usize = 16;
/// Size of the fixed trailer: footer length, CRC-32C, magic.
pub const TRAILER_LEN: usize = 12;
/// Size of the footer's run count field.
pub const FOOTER_COUNT_LEN: usize = 4;
/// Size of one run entry in the footer.
pub const RUN_ENTRY_LEN: usize = 64;
/// Size of the smallest valid segment: header, an empty footer and the trailer.
pub const MIN_SEGMENT_LEN: usize = HEADER_LEN + FOOTER_COUNT_LEN + TRAILER_LEN;
/// How many bytes at the end of an object [`read_footer`] fetches on its first try. Enough for
/// the footer of a segment with 255 runs; larger footers cost one more ranged read.
pub const FOOTER_PREFETCH: u64 = 16 * 1024;

/// What the caller already knows about a batch it appends (it parsed the batch header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Number of records in the batch (Kafka's `recordsCount`).
    pub record_count: u32,
    /// The batch's first (base) timestamp.
    pub first_timestamp: i64,
    /// The batch's max timestamp.
    pub max_timestamp: i64,
}

/// One partition run as listed in the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunEntry {
    /// Topic of the run.
    pub topic_id: Uuid,
    /// Partition of the run.
    pub partition: i32,
    /// Absolute byte offset of the run's first batch in the object.
    pub byte_start: u64,
    /// Length of the run in bytes (its batches back to back).
    pub byte_len: u64,
    /// Number of record batches in the run (at least 1).
    pub batch_count: u32,
    /// Sum of the batches' record counts.
    pub record_count: u64,
    /// First timestamp of the run's first batch (in append order).
    pub first_timestamp: i64,
    /// Largest max timestamp of any batch in the run.
    pub max_timestamp: i64,
}

impl RunEntry {
    /// The run's absolute byte range in the object. Saturates instead of overflowing; entries
    /// returned by the decoders never need to.
    pub fn byte_range(&self) -> Range<u64> {
        self.byte_start..self.byte_start.saturating_add(self.byte_len)
    }
}

/// Errors reading a segment object.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The object (or the part of it handed to a decoder) is too short to hold what its
    /// trailer promises.
    #[error("segment is truncated")]
    Truncated,
    /// The leading or trailing magic is not `KSEG`: this is not a segment object.
    #[error("not a segment object (bad magic)")]
    BadMagic,
    /// A segment of a format version this code does not read.
    #[error("unsupported segment format version {0}")]
    UnsupportedVersion(u16),
    /// Header flags this code does not understand.
    #[error("unsupported segment flags {0:#06x}")]
    UnsupportedFlags(u16),
    /// The CRC-32C over header and footer does not match: the directory is damaged.
    #[error("segment header/footer CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// The checksum matched but the structure is invalid (runs overlapping, out of order, ...).
    #[error("corrupt segment: {0}")]
    Corrupt(String),
    /// Reading the object failed.
    #[error(transparent)]
    Store(#[from] ObjectStoreError),
}

impl SegmentError {
    /// Whether retrying the same read may succeed (only transient store failures).
    pub fn is_retryable(&self) -> bool {
        match self {
            SegmentError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// The v1 header, the same for every segment this module writes.
pub fn encode_header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..6].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_be_bytes());
    // flags (6..8) and reserved (8..16) stay zero.
    h
}

/// Length of a footer (count + entries, without trailer) listing `run_count` runs.
pub fn footer_len(run_count: usize) -> usize {
    FOOTER_COUNT_LEN + run_count * RUN_ENTRY_LEN
}

/// Appends the footer listing `runs` and the trailer to `out`.
///
/// The CRC is computed over the v1 header ([`encode_header`]) followed by the footer, so the
/// result is only valid behind that header. `runs` are written as given and not validated (the
/// decoders validate); [`SegmentBuilder::finish`] always passes a valid directory.
///
/// # Panics
/// If the footer would not fit the u32 length field (more than 67 million runs).
pub fn encode_footer(runs: &[RunEntry], out: &mut BytesMut) {
    let len = footer_len(runs.len());
    let len32 = u32::try_from(len).expect("segment footer larger than 4 GiB");
    let count = u32::try_from(runs.len()).expect("more than u32::MAX runs");
    out.reserve(len + TRAILER_LEN);
    let footer_start = out.len();
    out.put_u32(count);
    for r in runs {
        out.put_slice(r.topic_id.as_bytes());
        out.put_i32(r.partition);
        out.put_u64(r.byte_start);
        out.put_u64(r.byte_len);
        out.put_u32(r.batch_count);
        out.put_u64(r.record_count);
        out.put_i64(r.first_timestamp);
        out.put_i64(r.max_timestamp);
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&encode_header()), &out[footer_start..]);
    out.put_u32(len32);
    out.put_u32(crc);
    out.put_slice(&SEGMENT_MAGIC);
}

/// The fixed-size trailer at the end of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Length of the footer that precedes the trailer.
    pub footer_len: u32,
    /// CRC-32C (Castagnoli) over header bytes followed by footer bytes.
    pub crc: u32,
}

/// Decodes the trailer from the last [`TRAILER_LEN`] bytes of `tail` (any suffix of the object
/// at least that long). Checks only the trailing magic.
pub fn decode_trailer(tail: &[u8]) -> Result<Trailer, SegmentError> {
    let start = tail
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or(SegmentError::Truncated)?;
    let t = &tail[start..];
    if t[8..12] != SEGMENT_MAGIC {
        return Err(SegmentError::BadMagic);
    }
    Ok(Trailer {
        footer_len: be_u32(&t[0..4]),
        crc: be_u32(&t[4..8]),
    })
}

/// Decodes and verifies a segment's directory.
///
/// * `header`: the object's first [`HEADER_LEN`] bytes (a longer slice is fine, only the first
///   16 bytes are read);
/// * `tail`: any suffix of the object that contains the whole footer and trailer, up to the
///   whole object;
/// * `object_len`: the object's total size, which places `tail` and the runs.
///
/// Checks magic, version, the CRC over header + footer, flags, and that the runs are ordered by
/// `(topic_id, partition)` without duplicates, each non-empty in batches, and tile the body
/// exactly (no gap, no overlap, nothing outside it). Returns [`SegmentError::Truncated`] if
/// `tail` does not reach back to the start of the footer.
pub fn decode_footer(
    header: &[u8],
    tail: &[u8],
    object_len: u64,
) -> Result<Vec<RunEntry>, SegmentError> {
    if object_len < MIN_SEGMENT_LEN as u64 || (tail.len() as u64) > object_len {
        return Err(SegmentError::Truncated);
    }
    let header = header.get(..HEADER_LEN).ok_or(SegmentError::Truncated)?;
    if header[0..4] != SEGMENT_MAGIC {
        return Err(SegmentError::BadMagic);
    }
    let trailer = decode_trailer(tail)?;
    // Anything else about a future version (even where its footer is) may differ.
    let version = be_u16(&header[4..6]);
    if version != SEGMENT_FORMAT_VERSION {
        return Err(SegmentError::UnsupportedVersion(version));
    }

    let footer_len = u64::from(trailer.footer_len);
    if footer_len < FOOTER_COUNT_LEN as u64 {
        return Err(SegmentError::Corrupt(format!(
            "footer length {footer_len} is too small"
        )));
    }
    // Absolute position where the footer (and so the body) ends.
    let body_end = object_len
        .checked_sub(TRAILER_LEN as u64)
        .and_then(|v| v.checked_sub(footer_len))
        .filter(|&v| v >= HEADER_LEN as u64)
        .ok_or_else(|| {
            SegmentError::Corrupt(format!(
                "footer length {footer_len} does not fit an object of {object_len} bytes"
            ))
        })?;
    let tail_start = object_len - tail.len() as u64;
    if body_end < tail_start {
        return Err(SegmentError::Truncated);
    }
    // Both fit in usize: they are bounded by tail.len().
    let footer_off = (body_end - tail_start) as usize;
    let footer = &tail[footer_off..tail.len() - TRAILER_LEN];

    let computed = crc32c::crc32c_append(crc32c::crc32c(header), footer);
    if computed != trailer.crc {
        return Err(SegmentError::CrcMismatch {
            stored: trailer.crc,
            computed,
        });
    }

    let flags = be_u16(&header[6..8]);
    if flags != 0 {
        return Err(SegmentError::UnsupportedFlags(flags));
    }
    if header[8..16].iter().any(|&b| b != 0) {
        return Err(SegmentError::Corrupt(
            "reserved header bytes are not zero".into(),
        ));
    }

    let count = be_u32(&footer[0..4]);
    let expected_len = u64::from(count) * RUN_ENTRY_LEN as u64 + FOOTER_COUNT_LEN as u64;
    if expected_len != footer_len {
        return Err(SegmentError::Corrupt(format!(
            "footer of {footer_len} bytes cannot list {count} runs"
        )));
    }
    // Safe to allocate: `count` entries are present in `footer`.
    let mut runs = Vec::with_capacity(count as usize);
    let mut cursor = HEADER_LEN as u64;
    let mut prev: Option<(Uuid, i32)> = None;
    for (i, e) in footer[FOOTER_COUNT_LEN..]
        .chunks_exact(RUN_ENTRY_LEN)
        .enumerate()
    {
        let mut topic = [0u8; 16];
        topic.copy_from_slice(&e[0..16]);
        let run = RunEntry {
            topic_id: Uuid::from_bytes(topic),
            partition: be_u32(&e[16..20]) as i32,
            byte_start: be_u64(&e[20..28]),
            byte_len: be_u64(&e[28..36]),
            batch_count: be_u32(&e[36..40]),
            record_count: be_u64(&e[40..48]),
            first_timestamp: be_u64(&e[48..56]) as i64,
            max_timestamp: be_u64(&e[56..64]) as i64,
        };
        let key = (run.topic_id, run.partition);
        if prev.is_some_and(|p| p >= key) {
            return Err(SegmentError::Corrupt(format!(
                "run {i} ({}, {}) is out of order or duplicated",
                run.topic_id, run.partition
            )));
        }
        prev = Some(key);
        if run.batch_count == 0 {
            return Err(SegmentError::Corrupt(format!("run {i} has no batches")));
        }
        if run.byte_start != cursor {
            return Err(SegmentError::Corrupt(format!(
                "run {i} starts at {} instead of {cursor}",
                run.byte_start
            )));
        }
        cursor = run
            .byte_start
            .checked_add(run.byte_len)
            .filter(|&end| end <= body_end)
            .ok_or_else(|| SegmentError::Corrupt(format!("run {i} extends past the body")))?;
        runs.push(run);
    }
    if cursor != body_end {
        return Err(SegmentError::Corrupt(format!(
            "runs end at {cursor} but the body ends at {body_end}"
        )));
    }
    Ok(runs)
}

/// Parses and verifies a whole segment object held in memory, returning its runs.
pub fn parse_segment(data: &[u8]) -> Result<Vec<RunEntry>, SegmentError> {
    decode_footer(data, data, data.len() as u64)
}

/// Reads and verifies the footer of a stored segment without fetching its body.
///
/// One `head` for the size, then [`read_footer_sized`].
pub async fn read_footer(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Vec<RunEntry>, SegmentError> {
    let meta = store
        .head(key)
        .await?
        .ok_or_else(|| ObjectStoreError::NotFound {
            key: key.to_owned(),
        })?;
    read_footer_sized(store, key, meta.size).await
}

/// Like [`read_footer`] for a caller that already knows the object's size (from `list`).
///
/// Small objects (up to [`HEADER_LEN`] + [`FOOTER_PREFETCH`] bytes) are read whole in one
/// ranged read. Otherwise the header and the last [`FOOTER_PREFETCH`] bytes are read
/// concurrently, and only a footer longer than that costs a second, exact read of its missing
/// front part.
pub async fn read_footer_sized(
    store: &dyn ObjectStore,
    key: &str,
    object_len: u64,
) -> Result<Vec<RunEntry>, SegmentError> {
    if object_len < MIN_SEGMENT_LEN as u64 {
        return Err(SegmentError::Truncated);
    }
    if object_len <= HEADER_LEN as u64 + FOOTER_PREFETCH {
        let data = get_exact(store, key, 0..object_len).await?;
        return parse_segment(&data);
    }
    let tail_start = object_len - FOOTER_PREFETCH;
    let (header, tail) = futures::try_join!(
        get_exact(store, key, 0..HEADER_LEN as u64),
        get_exact(store, key, tail_start..object_len),
    )?;
    let trailer = decode_trailer(&tail)?;
    let needed = u64::from(trailer.footer_len) + TRAILER_LEN as u64;
    if needed <= FOOTER_PREFETCH {
        return decode_footer(&header, &tail, object_len);
    }
    // The footer starts before the prefetched tail; it must still start after the header.
    let footer_start = object_len
        .checked_sub(needed)
        .filter(|&s| s >= HEADER_LEN as u64)
        .ok_or_else(|| {
            SegmentError::Corrupt(format!(
                "footer length {} does not fit an object of {object_len} bytes",
                trailer.footer_len
            ))
        })?;
    let front = get_exact(store, key, footer_start..tail_start).await?;
    let mut whole = Vec::with_capacity(front.len() + tail.len());
    whole.extend_from_slice(&front);
    whole.extend_from_slice(&tail);
    decode_footer(&header, &whole, object_len)
}

/// A ranged read that also checks the backend returned exactly the requested length.
async fn get_exact(
    store: &dyn ObjectStore,
    key: &str,
    range: Range<u64>,
) -> Result<Bytes, SegmentError> {
    let want = range.end - range.start;
    let data = store.get_range(key, range).await?;
    if data.len() as u64 != want {
        return Err(SegmentError::Truncated);
    }
    Ok(data)
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// One run being accumulated.
#[derive(Debug)]
struct RunAcc {
    /// Append handles of the run's batches, in append order.
    handles: Vec<usize>,
    byte_len: u64,
    record_count: u64,
    first_timestamp: i64,
    max_timestamp: i64,
}

/// Collects record batches of many partitions and lays them out as one segment object.
///
/// Appending only keeps a reference to each batch (`Bytes` is reference counted); the bytes are
/// copied once, by [`finish`](Self::finish), into a buffer of the exact final size.
#[derive(Debug, Default)]
pub struct SegmentBuilder {
    batches: Vec<Bytes>,
    runs: BTreeMap<(Uuid, i32), RunAcc>,
    data_bytes: usize,
}

impl SegmentBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one record batch to the run of (topic_id, partition). Returns a handle (append
    /// index, 0, 1, 2, ...) under which [`BuiltSegment::batch_starts`] gives where it landed.
    pub fn append(
        &mut self,
        topic_id: Uuid,
        partition: i32,
        batch: Bytes,
        meta: BatchMeta,
    ) -> usize {
        let handle = self.batches.len();
        let len = batch.len() as u64;
        self.data_bytes += batch.len();
        self.batches.push(batch);
        self.runs
            .entry((topic_id, partition))
            .and_modify(|r| {
                r.handles.push(handle);
                r.byte_len += len;
                r.record_count += u64::from(meta.record_count);
                r.max_timestamp = r.max_timestamp.max(meta.max_timestamp);
            })
            .or_insert_with(|| RunAcc {
                handles: vec![handle],
                byte_len: len,
                record_count: u64::from(meta.record_count),
                first_timestamp: meta.first_timestamp,
                max_timestamp: meta.max_timestamp,
            });
        handle
    }

    /// Whether no batch was appended yet.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Number of batches appended so far.
    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    /// Number of distinct (topic, partition) runs so far.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Body bytes appended so far (the sum of the batch lengths).
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    /// Size the object would have if finished now: header, body, footer and trailer.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.data_bytes + footer_len(self.runs.len()) + TRAILER_LEN
    }

    /// Lays out the object. One allocation of the exact final size; each batch copied once.
    ///
    /// An empty builder yields a valid segment with no runs.
    ///
    /// # Panics
    /// If a run holds more than `u32::MAX` batches or the footer exceeds 4 GiB (tens of
    /// millions of runs), which no real flush comes near.
    pub fn finish(self) -> BuiltSegment {
        let total = self.encoded_len();
        let mut buf = vec![0u8; total];
        let (runs, batch_starts) = self.write_into(&mut buf);
        BuiltSegment {
            data: Bytes::from(buf),
            runs,
            batch_starts,
        }
    }

    /// [`finish`](Self::finish) into a buffer of `pool` (reused memory, page-aligned start):
    /// what the ingest tier does on every flush.
    pub fn finish_in(self, pool: &Arc<BufferPool>) -> BuiltSegment {
        let total = self.encoded_len();
        let mut layout = None;
        let data = pool.build(total, |buf| layout = Some(self.write_into(buf)));
        let (runs, batch_starts) = layout.unwrap_or_default();
        BuiltSegment {
            data,
            runs,
            batch_starts,
        }
    }

    /// Writes the object into `buf` (exactly [`encoded_len`](Self::encoded_len) bytes, each
    /// batch copied once); returns the runs and each batch's start.
    fn write_into(self, buf: &mut [u8]) -> (Vec<RunEntry>, Vec<u64>) {
        let mut out = SliceSink { buf, pos: 0 };
        out.put(&encode_header());
        let mut batch_starts = vec![0u64; self.batches.len()];
        let mut runs = Vec::with_capacity(self.runs.len());
        for ((topic_id, partition), acc) in self.runs {
            let byte_start = out.pos as u64;
            for &h in &acc.handles {
                batch_starts[h] = out.pos as u64;
                out.put(&self.batches[h]);
            }
            runs.push(RunEntry {
                topic_id,
                partition,
                byte_start,
                byte_len: acc.byte_len,
                batch_count: u32::try_from(acc.handles.len())
                    .expect("more than u32::MAX batches in one run"),
                record_count: acc.record_count,
                first_timestamp: acc.first_timestamp,
                max_timestamp: acc.max_timestamp,
            });
        }
        let mut footer = BytesMut::with_capacity(footer_len(runs.len()) + TRAILER_LEN);
        encode_footer(&runs, &mut footer);
        out.put(&footer);
        debug_assert_eq!(out.pos, out.buf.len());
        (runs, batch_starts)
    }
}

/// A slice of exactly the object's size, filled from the start.
struct SliceSink<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl SliceSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}

/// A finished segment object, ready to be `put`.
#[derive(Debug, Clone)]
pub struct BuiltSegment {
    /// The whole object.
    pub data: Bytes,
    /// Its directory, as written to the footer.
    pub runs: Vec<RunEntry>,
    /// Absolute byte start of each appended batch, indexed by append handle.
    pub batch_starts: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(records: u32, ts: i64) -> BatchMeta {
        BatchMeta {
            record_count: records,
            first_timestamp: ts,
            max_timestamp: ts + 5,
        }
    }

    fn sample() -> BuiltSegment {
        sample_builder().finish()
    }

    fn sample_builder() -> SegmentBuilder {
        let mut b = SegmentBuilder::new();
        let t1 = Uuid::from_u128(2);
        let t0 = Uuid::from_u128(1);
        b.append(t1, 0, Bytes::from_static(b"aaaa"), meta(1, 100));
        b.append(t0, 3, Bytes::from_static(b"bb"), meta(2, 50));
        b.append(t1, 0, Bytes::from_static(b"ccc"), meta(3, 90));
        b.append(t0, 1, Bytes::from_static(b"d"), meta(4, 10));
        b
    }

    #[test]
    fn a_pooled_build_is_the_same_object_page_aligned() {
        let pool = BufferPool::new(1);
        let plain = sample();
        let pooled = sample_builder().finish_in(&pool);
        assert_eq!(pooled.data, plain.data);
        assert_eq!(pooled.runs, plain.runs);
        assert_eq!(pooled.batch_starts, plain.batch_starts);
        assert_eq!(pooled.data.as_ptr().align_offset(4096), 0);
    }

    /// Re-encodes a segment's directory with `runs` (a valid CRC around an invalid directory).
    fn with_runs(seg: &BuiltSegment, runs: &[RunEntry], body_len: usize) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_slice(&seg.data[..HEADER_LEN + body_len]);
        encode_footer(runs, &mut out);
        out.to_vec()
    }

    fn body_len(seg: &BuiltSegment) -> usize {
        seg.data.len() - HEADER_LEN - footer_len(seg.runs.len()) - TRAILER_LEN
    }

    #[test]
    fn layout_orders_runs_and_aggregates() {
        let seg = sample();
        assert_eq!(seg.data.len(), HEADER_LEN + 10 + 4 + 3 * 64 + TRAILER_LEN);
        let keys: Vec<_> = seg
            .runs
            .iter()
            .map(|r| (r.topic_id.as_u128(), r.partition))
            .collect();
        assert_eq!(keys, vec![(1, 1), (1, 3), (2, 0)]);
        assert_eq!(&seg.data[16..26], b"dbbaaaaccc");
        assert_eq!(seg.batch_starts, vec![19, 17, 23, 16]);
        let r = seg.runs[2];
        assert_eq!(
            (r.byte_start, r.byte_len, r.batch_count, r.record_count),
            (19, 7, 2, 4)
        );
        assert_eq!((r.first_timestamp, r.max_timestamp), (100, 105));
        assert_eq!(parse_segment(&seg.data).expect("valid"), seg.runs);
    }

    #[test]
    fn empty_builder_yields_valid_empty_segment() {
        let b = SegmentBuilder::new();
        assert!(b.is_empty());
        let seg = b.finish();
        assert_eq!(seg.data.len(), MIN_SEGMENT_LEN);
        assert_eq!(parse_segment(&seg.data).expect("valid"), vec![]);
    }

    #[test]
    fn header_checks() {
        let seg = sample();
        let mut d = seg.data.to_vec();
        d[0] = b'X';
        assert!(matches!(parse_segment(&d), Err(SegmentError::BadMagic)));
        let mut d = seg.data.to_vec();
        let n = d.len();
        d[n - 1] = b'X';
        assert!(matches!(parse_segment(&d), Err(SegmentError::BadMagic)));
        let mut d = seg.data.to_vec();
        d[5] = 2;
        assert!(matches!(
            parse_segment(&d),
            Err(SegmentError::UnsupportedVersion(2))
        ));
        let mut d = seg.data.to_vec();
        d[7] = 1;
        assert!(matches!(
            parse_segment(&d),
            Err(SegmentError::CrcMismatch { .. })
        ));
        assert!(matches!(
            parse_segment(&seg.data[..MIN_SEGMENT_LEN - 1]),
            Err(SegmentError::Truncated)
        ));
    }

    #[test]
    fn flags_and_reserved_checked_after_crc() {
        // Build a header with flags set and a matching CRC.
        let seg = sample();
        let body = body_len(&seg);
        for (idx, expect_flags) in [(7usize, true), (12usize, false)] {
            let mut d = with_runs(&seg, &seg.runs, body);
            d[idx] = 1;
            let footer_start = HEADER_LEN + body;
            let footer_end = d.len() - TRAILER_LEN;
            let crc = crc32c::crc32c_append(
                crc32c::crc32c(&d[..HEADER_LEN]),
                &d[footer_start..footer_end],
            );
            d[footer_end + 4..footer_end + 8].copy_from_slice(&crc.to_be_bytes());
            let err = parse_segment(&d).expect_err("must reject");
            if expect_flags {
                assert!(matches!(err, SegmentError::UnsupportedFlags(1)), "{err}");
            } else {
                assert!(matches!(err, SegmentError::Corrupt(_)), "{err}");
            }
        }
    }

    fn assert_corrupt(d: &[u8]) {
        match parse_segment(d) {
            Err(SegmentError::Corrupt(_)) => {}
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn structural_checks_behind_valid_crc() {
        let seg = sample();
        let body = body_len(&seg);
        let runs = seg.runs.clone();

        let mut swapped = runs.clone();
        swapped.swap(0, 1);
        assert_corrupt(&with_runs(&seg, &swapped, body));

        let mut dup = runs.clone();
        dup[1].topic_id = dup[0].topic_id;
        dup[1].partition = dup[0].partition;
        assert_corrupt(&with_runs(&seg, &dup, body));

        let mut zero = runs.clone();
        zero[1].batch_count = 0;
        assert_corrupt(&with_runs(&seg, &zero, body));

        let mut gap = runs.clone();
        gap[1].byte_start += 1;
        assert_corrupt(&with_runs(&seg, &gap, body));

        let mut overflow = runs.clone();
        overflow[2].byte_len = u64::MAX;
        assert_corrupt(&with_runs(&seg, &overflow, body));

        let mut short = runs.clone();
        short[2].byte_len -= 1;
        assert_corrupt(&with_runs(&seg, &short, body));

        // Runs that claim less body than there is.
        assert_corrupt(&with_runs(&seg, &runs[..2], body));
        // Runs that point into the footer.
        assert_corrupt(&with_runs(&seg, &runs, body - 1));
    }

    #[test]
    fn huge_counts_and_lengths_are_rejected_without_allocating() {
        let seg = sample();
        let body = body_len(&seg);
        // Count field claims u32::MAX runs; fix up the CRC so only the structure is wrong.
        let mut d = seg.data.to_vec();
        let fs = HEADER_LEN + body;
        d[fs..fs + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let fe = d.len() - TRAILER_LEN;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&d[..HEADER_LEN]), &d[fs..fe]);
        d[fe + 4..fe + 8].copy_from_slice(&crc.to_be_bytes());
        assert_corrupt(&d);

        // Footer length larger than the object.
        let mut d = seg.data.to_vec();
        d[fe..fe + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_corrupt(&d);
        // Footer length too small to hold a count.
        d[fe..fe + 4].copy_from_slice(&3u32.to_be_bytes());
        assert_corrupt(&d);
    }

    #[test]
    fn decode_footer_from_tail_only() {
        let seg = sample();
        let n = seg.data.len();
        let fl = footer_len(seg.runs.len()) + TRAILER_LEN;
        let runs =
            decode_footer(&seg.data[..HEADER_LEN], &seg.data[n - fl..], n as u64).expect("valid");
        assert_eq!(runs, seg.runs);
        // One byte too few: the footer start is missing.
        let err = decode_footer(&seg.data[..HEADER_LEN], &seg.data[n - fl + 1..], n as u64);
        assert!(matches!(err, Err(SegmentError::Truncated)));
        // Tail longer than the object.
        let err = decode_footer(&seg.data, &seg.data, n as u64 - 1);
        assert!(matches!(err, Err(SegmentError::Truncated)));
    }
}

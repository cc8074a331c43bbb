//! Views over Kafka record batches (message format v2) as they arrive in Produce requests.
//!
//! The ingest tier validates every batch here (magic 2, size, CRC-32C) and keeps the bytes
//! exactly as received; the fetch tier later rewrites only the 8-byte base offset, which the
//! batch CRC does not cover (the CRC starts at the attributes field). Parsing reads the fixed
//! 61-byte header only; records are never decoded on the hot path.

use bytes::Bytes;

/// Length of the fixed record-batch header (v2), up to and including the record count.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before the `batch_length` field's coverage starts (base offset + batch length).
pub const BATCH_LOG_OVERHEAD: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
/// `producerId` of a batch that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;
/// `baseSequence` of a batch that carries no sequence.
pub const NO_SEQUENCE: i32 = -1;

/// Why a batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported record batch magic {0} (only message format v2 is accepted)")]
    UnsupportedMagic(i8),
    #[error("record batch crc mismatch: header says {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch of {size} bytes is over the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("invalid record batch: {0}")]
    Invalid(&'static str),
    #[error("record batch decompresses to more than {max} bytes")]
    DecompressedTooLarge { max: usize },
}

/// The fixed header fields of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (which may hold more than one batch).
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < MAGIC_OFFSET + 1 {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        let magic = buf[MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: be_i32(buf, CRC_OFFSET) as u32,
            attributes: be_i16(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            record_count: be_i32(buf, 57),
        })
    }

    /// Size of the whole batch on the wire (header included).
    pub fn total_len(&self) -> usize {
        self.batch_length.max(0) as usize + BATCH_LOG_OVERHEAD
    }
    /// Number of offsets the batch occupies.
    pub fn offset_count(&self) -> u32 {
        (self.last_offset_delta as u32).wrapping_add(1)
    }
    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
    /// Sequence number of the batch's last record (wrapping like Kafka's).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }
}

/// One validated batch: its header and its exact bytes (a zero-copy slice of the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedBatch {
    pub header: BatchHeader,
    pub bytes: Bytes,
}

/// Splits the `records` field of one produce partition into batches and validates each:
/// magic 2, lengths consistent, size ≤ `max_batch_bytes`, CRC-32C, at least one record, not a
/// control or transactional batch (transactions are a non-goal).
pub fn validate_batches(
    records: &Bytes,
    max_batch_bytes: usize,
) -> Result<Vec<ValidatedBatch>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    if records.is_empty() {
        return Err(BatchError::Invalid("empty record set"));
    }
    while pos < records.len() {
        let rest = &records[pos..];
        let header = BatchHeader::parse(rest)?;
        if header.batch_length < (BATCH_HEADER_LEN - BATCH_LOG_OVERHEAD) as i32 {
            return Err(BatchError::Invalid(
                "batch length smaller than the batch header",
            ));
        }
        let total = header.total_len();
        if total > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size: total,
                max: max_batch_bytes,
            });
        }
        if rest.len() < total {
            return Err(BatchError::Truncated {
                needed: total,
                available: rest.len(),
            });
        }
        let actual = crc32c::crc32c(&rest[ATTRIBUTES_OFFSET..total]);
        if actual != header.crc {
            return Err(BatchError::CrcMismatch {
                expected: header.crc,
                actual,
            });
        }
        if header.record_count <= 0 || header.last_offset_delta < 0 {
            return Err(BatchError::Invalid("batch holds no records"));
        }
        // As Kafka's validator: a v2 batch's offsets and record count must agree. The count is
        // also bounded by the batch size (a record takes at least one byte even compressed),
        // so nothing that later decodes the batch can be made to reserve memory for billions
        // of records.
        if header.last_offset_delta as i64 + 1 != header.record_count as i64 {
            return Err(BatchError::Invalid(
                "record count does not match the batch's offset range",
            ));
        }
        if header.record_count as usize > total {
            return Err(BatchError::Invalid("record count larger than the batch"));
        }
        if header.is_control() {
            return Err(BatchError::Invalid("control batches cannot be produced"));
        }
        if header.is_transactional() {
            return Err(BatchError::Invalid(
                "transactional batches are not supported",
            ));
        }
        out.push(ValidatedBatch {
            header,
            bytes: records.slice(pos..pos + total),
        });
        pos += total;
    }
    Ok(out)
}

/// Validates the `records` of one partition of a Produce request, which must hold exactly one
/// batch: Kafka refuses more than one v2 batch per partition and request (INVALID_RECORD), so
/// a partition's answer is always about one batch, appended or not, never about some of them.
pub fn validate_produce_batch(
    records: &Bytes,
    max_batch_bytes: usize,
) -> Result<ValidatedBatch, BatchError> {
    let mut batches = validate_batches(records, max_batch_bytes)?;
    match batches.len() {
        1 => Ok(batches.remove(0)),
        _ => Err(BatchError::Invalid(
            "a produce request may carry only one record batch per partition",
        )),
    }
}

/// Rewrites the base offset of every batch in `buf` (a run of whole batches), starting at
/// `base_offset` and advancing by each batch's offset count. Returns the next offset.
/// Stops at the first incomplete batch (callers pass whole runs; a short tail is left as is).
pub fn patch_base_offsets(buf: &mut [u8], mut base_offset: i64) -> i64 {
    let mut pos = 0usize;
    while buf.len() - pos >= BATCH_HEADER_LEN {
        let batch_length = be_i32(buf, pos + 8);
        let last_offset_delta = be_i32(buf, pos + 23);
        if batch_length < 0 {
            break;
        }
        let total = batch_length as usize + BATCH_LOG_OVERHEAD;
        if buf.len() - pos < total {
            break;
        }
        buf[pos..pos + 8].copy_from_slice(&base_offset.to_be_bytes());
        base_offset += last_offset_delta as i64 + 1;
        pos += total;
    }
    base_offset
}

/// Iterates the headers and byte ranges of the whole batches in `buf`.
pub fn iter_batches(
    buf: &[u8],
) -> impl Iterator<Item = (BatchHeader, std::ops::Range<usize>)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(&buf[pos..]).ok()?;
        let total = header.total_len();
        if total < BATCH_HEADER_LEN || buf.len() - pos < total {
            return None;
        }
        let range = pos..pos + total;
        pos += total;
        Some((header, range))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Encodes a batch of `n` records with the kafka-protocol crate (an independent encoder).
    pub(crate) fn encode_batch(
        n: usize,
        compression: Compression,
        producer_id: i64,
        base_sequence: i32,
    ) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch whenever offset - sequence changes, so
                // non-idempotent records still count up (the base sequence is then 0, not -1).
                sequence: base_sequence.max(0) + i as i32,
                timestamp: 1_700_000_000_000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    #[test]
    fn a_produce_partition_must_hold_exactly_one_batch() {
        let one = encode_batch(3, Compression::None, 7, 0);
        let v = validate_produce_batch(&one, 1 << 20).expect("one batch");
        assert_eq!(v.header.record_count, 3);
        let mut two = bytes::BytesMut::new();
        two.extend_from_slice(&one);
        two.extend_from_slice(&encode_batch(2, Compression::None, 7, 3));
        assert!(matches!(
            validate_produce_batch(&two.freeze(), 1 << 20),
            Err(BatchError::Invalid(_))
        ));
        assert!(matches!(
            validate_produce_batch(&Bytes::new(), 1 << 20),
            Err(BatchError::Invalid(_))
        ));
    }

    #[test]
    fn validates_batches_from_an_independent_encoder() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = encode_batch(10, c, 7, 0);
            let v = validate_batches(&b, 1 << 20).expect("valid");
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].header.record_count, 10);
            assert_eq!(v[0].header.offset_count(), 10);
            assert_eq!(v[0].header.producer_id, 7);
            assert_eq!(v[0].header.last_sequence(), 9);
            assert_eq!(v[0].header.compression(), c as i16);
            assert_eq!(v[0].bytes.len(), b.len());
        }
    }

    #[test]
    fn rejects_bad_crc_size_magic_and_truncation() {
        let b = encode_batch(3, Compression::None, -1, -1);
        let mut bad = b.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            validate_batches(&Bytes::from(bad), 1 << 20),
            Err(BatchError::CrcMismatch { .. })
        ));
        assert!(matches!(
            validate_batches(&b, 10),
            Err(BatchError::TooLarge { .. })
        ));
        let mut m1 = b.to_vec();
        m1[16] = 1;
        assert_eq!(
            validate_batches(&Bytes::from(m1), 1 << 20),
            Err(BatchError::UnsupportedMagic(1))
        );
        assert!(matches!(
            validate_batches(&b.slice(..b.len() - 1), 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate_batches(&b.slice(..20), 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn patching_base_offsets_keeps_crc_valid() {
        let mut run = Vec::new();
        run.extend_from_slice(&encode_batch(3, Compression::None, -1, -1));
        run.extend_from_slice(&encode_batch(5, Compression::Lz4, -1, -1));
        let next = patch_base_offsets(&mut run, 100);
        assert_eq!(next, 108);
        let run = Bytes::from(run);
        let v = validate_batches(&run, 1 << 20).expect("still valid");
        assert_eq!(v[0].header.base_offset, 100);
        assert_eq!(v[1].header.base_offset, 103);
        assert_eq!(iter_batches(&run).count(), 2);
    }

    #[test]
    fn rejects_record_counts_that_disagree_with_offsets_or_size() {
        fn reseal(mut b: Vec<u8>) -> Bytes {
            let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
            b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
            Bytes::from(b)
        }
        let b = encode_batch(2, Compression::None, -1, -1).to_vec();
        let mut huge = b.clone();
        huge[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            validate_batches(&reseal(huge), 1 << 20),
            Err(BatchError::Invalid(_))
        ));
        let mut both = b.clone();
        both[57..61].copy_from_slice(&100_000i32.to_be_bytes());
        both[23..27].copy_from_slice(&99_999i32.to_be_bytes());
        assert!(matches!(
            validate_batches(&reseal(both), 1 << 20),
            Err(BatchError::Invalid(_))
        ));
        assert!(validate_batches(&reseal(b), 1 << 20).is_ok());
    }

    #[test]
    fn sequence_wraps_like_kafka() {
        let mut h = BatchHeader::parse(&encode_batch(3, Compression::None, 1, 0)).expect("parse");
        h.base_sequence = i32::MAX - 1;
        assert_eq!(h.last_sequence(), 0);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let b = Bytes::from(data.clone());
            let _ = validate_batches(&b, 1 << 20);
            let mut d = data;
            let _ = patch_base_offsets(&mut d, 5);
            let _ = iter_batches(&d).count();
        }
    }
}

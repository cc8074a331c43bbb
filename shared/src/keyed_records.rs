//! The one produce-time check of a compacted topic (`cleanup.policy` lists `compact`): every
//! record must carry a key, because a compacted log is defined per key. Kafka refuses a batch
//! holding a key-less record with INVALID_RECORD and names each offending record by its index
//! in the batch, so clients can fail exactly those records; this module finds those indexes.
//!
//! Keys sit inside the (possibly compressed) records, so the batch is decoded. Decompression
//! of client input is bounded: a small compressed batch can expand enormously, and a batch
//! that decompresses to more than the limit is refused instead of filling memory.

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Snappy};
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use crate::batch::{BatchError, ValidatedBatch};

/// Most bytes one batch may decompress to while its keys are checked.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// The indexes (within the batch, from 0) of the records of `batch` that have no key.
pub fn records_without_key(
    batch: &ValidatedBatch,
    max_decompressed: usize,
) -> Result<Vec<i32>, BatchError> {
    let mut buf = batch.bytes.clone();
    let decompress =
        |data: &mut Bytes, codec: Compression| decompress(data, codec, max_decompressed);
    let set = RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress))
        .map_err(|e| {
            if e.is::<TooLarge>() {
                BatchError::DecompressedTooLarge {
                    max: max_decompressed,
                }
            } else {
                BatchError::Invalid("records could not be decoded")
            }
        })?;
    Ok(set
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| i as i32)
        .collect())
}

/// A batch decompressed past the limit (told apart from a decoding error by type).
#[derive(Debug, thiserror::Error)]
#[error("decompressed batch over the limit")]
struct TooLarge;

/// Decompresses one batch's records with `codec`, refusing more than `max` bytes of output.
fn decompress(data: &mut Bytes, codec: Compression, max: usize) -> anyhow::Result<Bytes> {
    let input = std::mem::take(data);
    let out = match codec {
        Compression::None => input,
        // The vendored snappy decoder already refuses a declared length snappy cannot reach.
        Compression::Snappy => {
            Snappy::decompress(&mut input.clone(), |b: &mut Bytes| Ok(b.clone()))?
        }
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(&input[..]), max)?,
        Compression::Lz4 => read_bounded(lz4::Decoder::new(&input[..])?, max)?,
        Compression::Zstd => read_bounded(zstd::stream::read::Decoder::new(&input[..])?, max)?,
    };
    if out.len() > max {
        return Err(TooLarge.into());
    }
    Ok(out)
}

/// Reads `reader` to its end, but never more than `max` + 1 bytes (one more tells "too much").
fn read_bounded(reader: impl Read, max: usize) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    reader.take(max as u64 + 1).read_to_end(&mut out)?;
    if out.len() > max {
        return Err(TooLarge.into());
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BATCH_HEADER_LEN, validate_produce_batch};
    use bytes::BytesMut;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    fn batch(keys: &[Option<&str>], value_len: usize, compression: Compression) -> ValidatedBatch {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: 1_700_000_000_000,
                key: key.map(|k| Bytes::from(k.to_string())),
                value: Some(Bytes::from(vec![b'v'; value_len])),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        validate_produce_batch(&buf.freeze(), usize::MAX).unwrap()
    }

    #[test]
    fn finds_the_key_less_records_whatever_the_codec() {
        let keys = [Some("a"), None, Some("c"), None];
        for codec in CODECS {
            let found = records_without_key(&batch(&keys, 10, codec), MAX_DECOMPRESSED_BYTES);
            assert_eq!(found.unwrap(), vec![1, 3], "{codec:?}");
            let all_keyed = batch(&[Some("a"), Some("")], 10, codec);
            assert!(
                records_without_key(&all_keyed, MAX_DECOMPRESSED_BYTES)
                    .unwrap()
                    .is_empty()
            );
        }
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256, ..proptest::prelude::ProptestConfig::default()
        })]

        /// Client bytes reach the decoder once the batch's CRC holds, so the CRC is fixed after
        /// each mutation: whatever the records section holds, the answer is a list or an
        /// error, never a panic; unmutated, it is exactly the key-less records.
        #[test]
        fn any_records_section_is_answered_without_a_panic(
            keyed in proptest::collection::vec(proptest::prelude::any::<bool>(), 1..20),
            codec in 0usize..5,
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..8),
        ) {
            let keys: Vec<Option<&str>> = keyed.iter().map(|k| k.then_some("k")).collect();
            let valid = batch(&keys, 3, CODECS[codec]);
            let expected: Vec<i32> = (0..keys.len() as i32).filter(|i| !keyed[*i as usize]).collect();
            proptest::prop_assert_eq!(records_without_key(&valid, MAX_DECOMPRESSED_BYTES).unwrap(), expected);
            let mut bytes = valid.bytes.to_vec();
            for (at, value) in &flips {
                let i = BATCH_HEADER_LEN + at % (bytes.len() - BATCH_HEADER_LEN).max(1);
                if i < bytes.len() {
                    bytes[i] ^= value;
                }
            }
            let crc = crc32c::crc32c(&bytes[21..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            if let Ok(mutated) = validate_produce_batch(&Bytes::from(bytes), usize::MAX) {
                let _ = records_without_key(&mutated, 1 << 20);
            }
        }
    }

    /// A base offset or first timestamp near the end of i64 plus a record's delta passes
    /// i64::MAX. Kafka wraps (Java's long arithmetic); the vendored decoder added with `+`,
    /// which panics wherever overflow checks are on (debug builds, the fuzz targets: found by
    /// the `record_batch` target, whose crash input is kept in its corpus). Release builds
    /// wrapped already, so this test fails before the fix only under overflow checks
    /// (`cargo test -p kafscale-shared keyed_records`, debug profile).
    #[test]
    fn offset_and_timestamp_deltas_past_i64_max_wrap_instead_of_panicking() {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: 1_700_000_000_000 + i * 1000,
                key: (i != 1).then(|| Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        let mut bytes = buf.to_vec();
        // Base offset (bytes 0..8, outside the CRC) and first timestamp (27..35).
        bytes[0..8].copy_from_slice(&i64::MAX.to_be_bytes());
        bytes[27..35].copy_from_slice(&(i64::MAX - 500).to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        let batch = validate_produce_batch(&Bytes::from(bytes), usize::MAX).unwrap();
        assert_eq!(
            records_without_key(&batch, MAX_DECOMPRESSED_BYTES).unwrap(),
            vec![1]
        );
    }

    #[test]
    fn a_batch_that_expands_past_the_limit_is_refused() {
        for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            let big = batch(&[Some("k")], 1 << 20, codec);
            assert!(big.bytes.len() < 64 * 1024, "{codec:?} compresses zeros");
            let refused = records_without_key(&big, 100_000).unwrap_err();
            assert_eq!(
                refused,
                BatchError::DecompressedTooLarge { max: 100_000 },
                "{codec:?}"
            );
            assert!(records_without_key(&big, 2 << 20).unwrap().is_empty());
        }
    }
}

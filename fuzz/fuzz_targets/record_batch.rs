//! The produce-time record-batch checks (`shared/src/batch.rs`) and the compacted topic's key
//! check (`shared/src/keyed_records.rs`, which decodes and decompresses the records) on
//! arbitrary bytes. The first input byte holds flags: bit 0 recomputes every batch's CRC-32C
//! (so mutations reach the checks behind the checksum). Must never panic; what the validator
//! accepts must be whole batches that tile the input and that the other readers agree on.

#![no_main]

use bytes::Bytes;
use kafscale_fuzz::with_fixed_crcs;
use kafscale_shared::batch::{
    BatchHeader, iter_batches, patch_base_offsets, validate_batches, validate_produce_batch,
};
use kafscale_shared::keyed_records::records_without_key;
use libfuzzer_sys::fuzz_target;

/// Kafka's default `max.message.bytes` (as the ingest tier's).
const MAX_BATCH_BYTES: usize = 1024 * 1024 + 12;
/// Decompression bound for the key check: well above what an input of a few KiB holds
/// uncompressed, low enough that a decompression bomb stands out.
const MAX_DECOMPRESSED: usize = 4 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut records = Bytes::copy_from_slice(rest);
    if flags & 1 != 0 {
        records = with_fixed_crcs(&records);
    }
    let _ = BatchHeader::parse(&records);
    let single = validate_produce_batch(&records, MAX_BATCH_BYTES);
    match validate_batches(&records, MAX_BATCH_BYTES) {
        Ok(batches) => {
            let total: usize = batches.iter().map(|b| b.bytes.len()).sum();
            assert_eq!(
                total,
                records.len(),
                "validated batches do not tile the input"
            );
            let walked: Vec<_> = iter_batches(&records).collect();
            assert_eq!(
                walked.len(),
                batches.len(),
                "iter_batches disagrees with the validator"
            );
            for (batch, (header, range)) in batches.iter().zip(&walked) {
                assert_eq!(&batch.header, header);
                assert_eq!(&records[range.clone()], &batch.bytes[..]);
                assert_eq!(header.total_len(), batch.bytes.len());
                if let Ok(keyless) = records_without_key(batch, MAX_DECOMPRESSED) {
                    assert!(keyless.iter().all(|&i| i >= 0));
                }
            }
            assert_eq!(single.is_ok(), batches.len() == 1);
            let mut copy = records.to_vec();
            let next = patch_base_offsets(&mut copy, 1000);
            let expected: i64 = batches.iter().map(|b| b.header.offset_count() as i64).sum();
            assert_eq!(next, 1000 + expected);
        }
        Err(_) => {
            assert!(single.is_err());
            // The readers of stored data must still not panic on it (with a real base
            // offset: offsets never come near i64::MAX).
            let mut copy = records.to_vec();
            let _ = patch_base_offsets(&mut copy, 1 << 40);
            for _ in iter_batches(&records) {}
        }
    }
});

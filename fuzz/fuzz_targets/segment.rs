//! The segment-object decoders (`shared/src/segment.rs`): the trailer, the footer from a
//! whole object and from a suffix of it, and `read_footer_sized` through an object store, on
//! arbitrary bytes. The first input byte holds flags: bit 0 recomputes the footer's CRC-32C
//! (so mutations reach the run checks). Must never panic; the decoders must agree, and the
//! runs they return must lie inside the object's body.

#![no_main]

use bytes::Bytes;
use kafscale_fuzz::runtime;
use kafscale_shared::object_store::{MemoryObjectStore, ObjectStore};
use kafscale_shared::segment::{
    HEADER_LEN, TRAILER_LEN, decode_footer, decode_trailer, parse_segment, read_footer_sized,
};
use libfuzzer_sys::fuzz_target;

/// Recomputes the trailer's CRC (over the header and the footer it declares), if the object
/// is long enough to have them.
fn fix_footer_crc(data: &mut [u8]) {
    let len = data.len();
    if len < HEADER_LEN + TRAILER_LEN {
        return;
    }
    let trailer = len - TRAILER_LEN;
    let footer_len = u32::from_be_bytes([
        data[trailer],
        data[trailer + 1],
        data[trailer + 2],
        data[trailer + 3],
    ]) as usize;
    let Some(footer_start) = trailer.checked_sub(footer_len) else {
        return;
    };
    if footer_start < HEADER_LEN {
        return;
    }
    let mut crc = crc32c::crc32c(&data[..HEADER_LEN]);
    crc = crc32c::crc32c_append(crc, &data[footer_start..trailer]);
    data[trailer + 4..trailer + 8].copy_from_slice(&crc.to_be_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut object = rest.to_vec();
    if flags & 1 != 0 {
        fix_footer_crc(&mut object);
    }
    let _ = decode_trailer(&object);
    let whole = parse_segment(&object);
    if let Ok(runs) = &whole {
        let body_end = object.len() as u64 - TRAILER_LEN as u64;
        for run in runs {
            let range = run.byte_range();
            assert!(
                range.start >= HEADER_LEN as u64 && range.end <= body_end,
                "{run:?} outside the body"
            );
            assert!(run.batch_count >= 1, "{run:?} without batches");
        }
    }
    // Every suffix long enough to hold the footer decodes the same; shorter ones say Truncated.
    let split = (flags as usize >> 1).min(object.len());
    let suffix = decode_footer(&object, &object[split..], object.len() as u64);
    match (&whole, &suffix) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "a suffix decodes differently"),
        (Err(_), Ok(runs)) => panic!("a suffix decodes ({runs:?}) where the whole object does not"),
        _ => {}
    }
    // Through an object store, as the fetch tier reads footers.
    let store = MemoryObjectStore::new();
    let read = runtime().block_on(async {
        store
            .put("s", Bytes::from(object.clone()))
            .await
            .expect("put");
        read_footer_sized(&store, "s", object.len() as u64).await
    });
    match (&whole, &read) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "read_footer_sized disagrees with parse_segment"),
        (Err(_), Ok(runs)) => {
            panic!("read_footer_sized accepts ({runs:?}) what parse_segment refuses")
        }
        (Ok(runs), Err(e)) => {
            panic!("read_footer_sized refuses ({e}) what parse_segment accepts ({runs:?})")
        }
        (Err(_), Err(_)) => {}
    }
});

//! A request frame (its 4-byte length prefix removed) through the wire core's decoder: the
//! fixed header fields, the version check against every API and version the listener serves,
//! the request header and the body, at every served (and unserved) key and version. Must
//! never panic, and never allocate much more than the frame (libFuzzer's -malloc_limit_mb
//! catches a declared collection count that reserves memory).

#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use kafscale_fuzz::served_apis;
use kafscale_shared::wire::{ApiSupport, RequestFrame, decode_request_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static APIS: OnceLock<Vec<ApiSupport>> = OnceLock::new();
    let apis = APIS.get_or_init(served_apis);
    let served = |key, version| apis.iter().any(|a| a.key == key && a.contains(version));
    match decode_request_frame(Bytes::copy_from_slice(data), served) {
        Ok(RequestFrame::Request { header, body: _ }) => {
            // What was accepted is what was asked for.
            assert_eq!(
                header.request_api_key,
                i16::from_be_bytes([data[0], data[1]])
            );
            assert_eq!(
                header.request_api_version,
                i16::from_be_bytes([data[2], data[3]])
            );
        }
        Ok(RequestFrame::UnsupportedApiVersions { .. }) | Err(_) => {}
    }
});

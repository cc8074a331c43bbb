//! Fetch response frames whose record data is never copied.
//!
//! A Fetch response is almost entirely record bytes that the fetch tier already holds in its
//! cache. Encoding it the ordinary way copies every byte into a fresh response buffer (on the
//! 2-core test machine that copy, with the page faults of the new buffer, was 15% of the server's
//! CPU in a produce-and-tail-consume run). Instead the response is encoded with each large
//! `records` field replaced by a 16-byte marker (a random secret of the process, a
//! per-response counter and the field's index); the small encoded frame is then cut at the markers and the cached `Bytes` are put in
//! their place, with the length prefix rewritten. The frame goes out as a list of chunks
//! (vectored writes), so records are copied only by the kernel.
//!
//! This works for every Fetch version because nothing in a Fetch response counts bytes except
//! the length prefix of each `records` field and the frame's own length: arrays count elements.
//! If a marker is not where it must be (which would be a bug), the ordinary encoding is used.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;

/// Records shorter than this are copied into the frame: splicing them saves less than the
/// bookkeeping costs.
const SPLICE_MIN_BYTES: usize = 4096;

/// First Fetch version with flexible encoding (compact bytes: unsigned-varint length + 1).
const FIRST_FLEXIBLE_VERSION: i16 = 12;

const MARKER_LEN: usize = 16;

/// The frame of `response` (4-byte length, header, body) as chunks to write in order.
pub fn encode_fetch_frame(
    header: &ResponseHeader,
    header_version: i16,
    mut response: FetchResponse,
    version: i16,
) -> Result<Vec<Bytes>, String> {
    let nonce = marker_nonce();
    let mut spliced: Vec<Bytes> = Vec::new();
    for topic in &mut response.responses {
        for partition in &mut topic.partitions {
            match partition.records.take() {
                Some(r) if r.len() >= SPLICE_MIN_BYTES && spliced.len() < u32::MAX as usize => {
                    let mut marker = BytesMut::with_capacity(MARKER_LEN);
                    marker.put_slice(&nonce);
                    marker.put_u32(spliced.len() as u32);
                    partition.records = Some(marker.freeze());
                    spliced.push(r);
                }
                other => partition.records = other,
            }
        }
    }
    let mut buf = BytesMut::with_capacity(256);
    buf.put_u32(0); // the frame length, set below
    encode_into(&mut buf, header, header_version, &response, version)?;
    let Some(chunks) = splice(&mut buf, &nonce, &spliced, version) else {
        // Not where they must be: put the records back and encode the ordinary way.
        restore(&mut response, spliced);
        let mut whole = BytesMut::with_capacity(256 + response.compute_size(version).unwrap_or(0));
        whole.put_u32(0);
        encode_into(&mut whole, header, header_version, &response, version)?;
        let len = whole.len() - 4;
        set_frame_length(&mut whole, len)?;
        return Ok(vec![whole.freeze()]);
    };
    Ok(chunks)
}

/// The first 12 bytes of this response's markers: a random secret of the process (drawn once,
/// so producers cannot forge it) and a per-response counter, without a random draw per Fetch.
fn marker_nonce() -> [u8; 12] {
    static PROCESS_SECRET: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
    static RESPONSES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let secret = PROCESS_SECRET.get_or_init(|| {
        let id = uuid::Uuid::new_v4();
        let mut secret = [0u8; 8];
        secret.copy_from_slice(&id.as_bytes()[..8]);
        secret
    });
    let n = RESPONSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(secret);
    nonce[8..].copy_from_slice(&n.to_be_bytes());
    nonce
}

fn encode_into(
    buf: &mut BytesMut,
    header: &ResponseHeader,
    header_version: i16,
    response: &FetchResponse,
    version: i16,
) -> Result<(), String> {
    header
        .encode(buf, header_version)
        .map_err(|e| format!("encoding Fetch response header: {e}"))?;
    response
        .encode(buf, version)
        .map_err(|e| format!("encoding Fetch v{version} response: {e:#}"))
}

fn set_frame_length(buf: &mut BytesMut, len: usize) -> Result<(), String> {
    let len = u32::try_from(len).map_err(|_| format!("Fetch response of {len} bytes"))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Cuts `buf` at each marker and puts the spliced records in its place; `None` if a marker is
/// missing or not preceded by the length prefix it must have.
fn splice(
    buf: &mut BytesMut,
    nonce: &[u8; 12],
    spliced: &[Bytes],
    version: i16,
) -> Option<Vec<Bytes>> {
    if spliced.is_empty() {
        let len = buf.len() - 4;
        set_frame_length(buf, len).ok()?;
        return Some(vec![buf.split().freeze()]);
    }
    let flexible = version >= FIRST_FLEXIBLE_VERSION;
    let old_prefix: &[u8] = if flexible {
        &[MARKER_LEN as u8 + 1] // unsigned varint of length + 1
    } else {
        &[0, 0, 0, MARKER_LEN as u8]
    };
    // (start of the old prefix, end of the marker, new prefix) of each spliced field
    let mut cuts = Vec::with_capacity(spliced.len());
    let mut from = 0;
    let mut frame_len = buf.len() - 4;
    for (index, records) in spliced.iter().enumerate() {
        let mut marker = [0u8; MARKER_LEN];
        marker[..12].copy_from_slice(nonce);
        marker[12..].copy_from_slice(&(index as u32).to_be_bytes());
        let at = from + find(&buf[from..], &marker)?;
        let prefix_start = at.checked_sub(old_prefix.len())?;
        if prefix_start < from || &buf[prefix_start..at] != old_prefix {
            return None;
        }
        let mut prefix = BytesMut::with_capacity(5);
        if flexible {
            put_unsigned_varint(&mut prefix, u32::try_from(records.len() + 1).ok()?);
        } else {
            prefix.put_i32(i32::try_from(records.len()).ok()?);
        }
        frame_len = frame_len - old_prefix.len() - MARKER_LEN + prefix.len() + records.len();
        cuts.push((prefix_start, at + MARKER_LEN, prefix.freeze()));
        from = at + MARKER_LEN;
    }
    set_frame_length(buf, frame_len).ok()?;
    let frame = buf.split().freeze();
    let mut chunks = Vec::with_capacity(3 * spliced.len() + 1);
    let mut pos = 0;
    for ((prefix_start, marker_end, prefix), records) in cuts.into_iter().zip(spliced) {
        chunks.push(frame.slice(pos..prefix_start));
        chunks.push(prefix);
        chunks.push(records.clone());
        pos = marker_end;
    }
    chunks.push(frame.slice(pos..));
    chunks.retain(|c| !c.is_empty());
    Some(chunks)
}

fn restore(response: &mut FetchResponse, spliced: Vec<Bytes>) {
    let mut spliced = spliced.into_iter();
    for topic in &mut response.responses {
        for partition in &mut topic.partitions {
            if partition
                .records
                .as_ref()
                .is_some_and(|r| r.len() == MARKER_LEN)
                && let Some(records) = spliced.next()
            {
                partition.records = Some(records);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn put_unsigned_varint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    use super::*;

    fn plain(header: &ResponseHeader, hv: i16, response: &FetchResponse, version: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        buf.put_u32(0);
        encode_into(&mut buf, header, hv, response, version).unwrap();
        let len = buf.len() - 4;
        set_frame_length(&mut buf, len).unwrap();
        buf.to_vec()
    }

    fn response(sizes: &[Vec<Option<usize>>], leader: bool, version: i16) -> FetchResponse {
        let mut r = FetchResponse::default().with_throttle_time_ms(7);
        if version >= 7 {
            r.session_id = 3;
        }
        for (t, partitions) in sizes.iter().enumerate() {
            let mut topic = FetchableTopicResponse::default();
            if version >= 13 {
                topic.topic_id = uuid::Uuid::from_u128(t as u128 + 1);
            } else {
                topic.topic = TopicName(StrBytes::from_string(format!("topic-{t}")));
            }
            for (p, size) in partitions.iter().enumerate() {
                let mut part = PartitionData::default()
                    .with_partition_index(p as i32)
                    .with_high_watermark(1000 + p as i64)
                    .with_last_stable_offset(1000)
                    .with_aborted_transactions(Some(vec![AbortedTransaction::default()]));
                if version >= 5 {
                    part.log_start_offset = 5;
                }
                part.records = size.map(|n| {
                    (0..n)
                        .map(|i| (i * 7 + p) as u8)
                        .collect::<Vec<u8>>()
                        .into()
                });
                if leader && version >= 12 {
                    part.current_leader = LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(4))
                        .with_leader_epoch(2);
                }
                topic.partitions.push(part);
            }
            r.responses.push(topic);
        }
        r
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The chunks, concatenated, are exactly the ordinary encoding, for every version
        /// served, with null, small and large records and tagged fields set.
        #[test]
        fn chunks_concatenate_to_the_ordinary_encoding(
            version in 4i16..=16,
            sizes in prop::collection::vec(
                prop::collection::vec(prop::option::of(prop_oneof![0usize..100, 4096usize..70_000]), 0..4),
                0..4,
            ),
            leader in any::<bool>(),
        ) {
            let hv = if version >= 12 { 1 } else { 0 };
            let header = ResponseHeader::default().with_correlation_id(42);
            let r = response(&sizes, leader, version);
            let expected = plain(&header, hv, &r, version);
            let chunks = encode_fetch_frame(&header, hv, r, version).unwrap();
            let got: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn large_records_are_not_copied() {
        let header = ResponseHeader::default().with_correlation_id(1);
        let r = response(&[vec![Some(100_000), Some(10)]], false, 16);
        let big = r.responses[0].partitions[0].records.clone().unwrap();
        let chunks = encode_fetch_frame(&header, 1, r, 16).unwrap();
        assert!(
            chunks
                .iter()
                .any(|c| c.as_ptr() == big.as_ptr() && c.len() == big.len()),
            "the records go out as the cached Bytes themselves"
        );
    }
}

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
//!
//! A partition's records need not be one `Bytes` either: the fetch tier serves batches as they
//! are stored, each with its real base offset put in front as a separate 8-byte chunk (the
//! stored bytes are shared by every reader and hold no offsets), so its records are a chain of
//! chunks. A `records` field has room for one `Bytes` only, so the handler registers the chain
//! in the request's [`RecordSplices`] and puts a 16-byte ticket in the field; the encoder
//! splices the whole chain where the ticket was. Tickets carry the process's secret, and no
//! record batch is 16 bytes long (a batch header alone is 61), so stored data is never taken
//! for a ticket.

use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;

/// Records shorter than this are copied into the frame: splicing them saves less than the
/// bookkeeping costs.
const SPLICE_MIN_BYTES: usize = 4096;

/// First Fetch version with flexible encoding (compact bytes: unsigned-varint length + 1).
const FIRST_FLEXIBLE_VERSION: i16 = 12;

const MARKER_LEN: usize = 16;

/// Record chains of one request's Fetch response, by ticket (see the module docs). Cloning
/// shares the table: the handler fills it, the encoder of the same request empties it.
#[derive(Clone, Default)]
pub struct RecordSplices(Arc<Mutex<Vec<Option<Vec<Bytes>>>>>);

impl std::fmt::Debug for RecordSplices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSplices").finish_non_exhaustive()
    }
}

impl RecordSplices {
    /// The `records` field for `chunks` in order: the chunk itself when there is at most
    /// one, else a ticket the encoder replaces with all of them.
    pub fn records(&self, mut chunks: Vec<Bytes>) -> Bytes {
        chunks.retain(|c| !c.is_empty());
        if chunks.len() <= 1 {
            return chunks.pop().unwrap_or_default();
        }
        let mut table = self.lock();
        let mut ticket = BytesMut::with_capacity(MARKER_LEN);
        ticket.put_slice(&TICKET_TAG);
        ticket.put_slice(process_secret());
        ticket.put_u32(table.len() as u32);
        table.push(Some(chunks));
        ticket.freeze()
    }

    /// The chain `records` stands for, if it is one of this table's tickets (taken out: a
    /// ticket is spliced once).
    fn take(&self, records: &Bytes) -> Option<Vec<Bytes>> {
        if records.len() != MARKER_LEN
            || records[..4] != TICKET_TAG
            || &records[4..12] != process_secret()
        {
            return None;
        }
        let index = u32::from_be_bytes(records[12..].try_into().ok()?) as usize;
        self.lock().get_mut(index)?.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Vec<Bytes>>>> {
        // Every critical section leaves the table consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// First bytes of a ticket (markers start with the secret itself, so the two never meet).
const TICKET_TAG: [u8; 4] = *b"\0rcs";

/// One partition's records as they go out: a single `Bytes` or a registered chain.
struct Spliced {
    chunks: Vec<Bytes>,
    len: usize,
}

/// The frame of `response` (4-byte length, header, body) as chunks to write in order;
/// `splices` holds the chains its tickets stand for.
pub fn encode_fetch_frame(
    header: &ResponseHeader,
    header_version: i16,
    mut response: FetchResponse,
    version: i16,
    splices: &RecordSplices,
) -> Result<Vec<Bytes>, String> {
    let nonce = marker_nonce();
    let mut spliced: Vec<Spliced> = Vec::new();
    for topic in &mut response.responses {
        for partition in &mut topic.partitions {
            let Some(records) = partition.records.take() else {
                continue;
            };
            let chunks = splices.take(&records).unwrap_or_else(|| vec![records]);
            let len = chunks.iter().map(Bytes::len).sum::<usize>();
            if len < SPLICE_MIN_BYTES || spliced.len() == u32::MAX as usize {
                partition.records = Some(concat(chunks));
                continue;
            }
            let mut marker = BytesMut::with_capacity(MARKER_LEN);
            marker.put_slice(&nonce);
            marker.put_u32(spliced.len() as u32);
            partition.records = Some(marker.freeze());
            spliced.push(Spliced { chunks, len });
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
    static RESPONSES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RESPONSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(process_secret());
    nonce[8..].copy_from_slice(&n.to_be_bytes());
    nonce
}

/// A random secret of the process, drawn once.
fn process_secret() -> &'static [u8; 8] {
    static PROCESS_SECRET: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
    PROCESS_SECRET.get_or_init(|| {
        let id = uuid::Uuid::new_v4();
        let mut secret = [0u8; 8];
        secret.copy_from_slice(&id.as_bytes()[..8]);
        secret
    })
}

/// `chunks` as one `Bytes`: copied only when there are several.
pub fn concat(mut chunks: Vec<Bytes>) -> Bytes {
    if chunks.len() <= 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut whole = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in &chunks {
        whole.extend_from_slice(chunk);
    }
    whole.freeze()
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
    spliced: &[Spliced],
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
            put_unsigned_varint(&mut prefix, u32::try_from(records.len + 1).ok()?);
        } else {
            prefix.put_i32(i32::try_from(records.len).ok()?);
        }
        frame_len = frame_len - old_prefix.len() - MARKER_LEN + prefix.len() + records.len;
        cuts.push((prefix_start, at + MARKER_LEN, prefix.freeze()));
        from = at + MARKER_LEN;
    }
    set_frame_length(buf, frame_len).ok()?;
    let frame = buf.split().freeze();
    let record_chunks: usize = spliced.iter().map(|s| s.chunks.len()).sum();
    let mut chunks = Vec::with_capacity(2 * spliced.len() + record_chunks + 1);
    let mut pos = 0;
    for ((prefix_start, marker_end, prefix), records) in cuts.into_iter().zip(spliced) {
        chunks.push(frame.slice(pos..prefix_start));
        chunks.push(prefix);
        chunks.extend(records.chunks.iter().cloned());
        pos = marker_end;
    }
    chunks.push(frame.slice(pos..));
    chunks.retain(|c| !c.is_empty());
    Some(chunks)
}

fn restore(response: &mut FetchResponse, spliced: Vec<Spliced>) {
    let mut spliced = spliced.into_iter();
    for topic in &mut response.responses {
        for partition in &mut topic.partitions {
            if partition
                .records
                .as_ref()
                .is_some_and(|r| r.len() == MARKER_LEN)
                && let Some(records) = spliced.next()
            {
                partition.records = Some(concat(records.chunks));
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
            let mut r = response(&sizes, leader, version);
            let expected = plain(&header, hv, &r, version);
            let splices = chain_every_other(&mut r);
            let chunks = encode_fetch_frame(&header, hv, r, version, &splices).unwrap();
            let got: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            prop_assert_eq!(got, expected);
        }
    }

    /// Replaces the records of every other partition by a ticket for the same bytes in three
    /// chunks.
    fn chain_every_other(r: &mut FetchResponse) -> RecordSplices {
        let splices = RecordSplices::default();
        let partitions = r.responses.iter_mut().flat_map(|t| t.partitions.iter_mut());
        for part in partitions.step_by(2) {
            if let Some(records) = part.records.take() {
                let (a, b) = (records.len() / 3, 2 * records.len() / 3);
                let chunks = vec![records.slice(..a), records.slice(a..b), records.slice(b..)];
                part.records = Some(splices.records(chunks));
            }
        }
        splices
    }

    #[test]
    fn a_chain_goes_out_as_its_chunks_and_a_ticket_is_spliced_once() {
        let header = ResponseHeader::default().with_correlation_id(1);
        let mut r = response(&[vec![Some(50_000), Some(5_000)]], false, 16);
        let expected = plain(&header, 1, &r, 16);
        let big = r.responses[0].partitions[0].records.clone().unwrap();
        let splices = chain_every_other(&mut r);
        let ticket = r.responses[0].partitions[0].records.clone().unwrap();
        assert_eq!(ticket.len(), MARKER_LEN);
        let chunks = encode_fetch_frame(&header, 1, r.clone(), 16, &splices).unwrap();
        let got: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(got, expected);
        let third = big.slice(big.len() / 3..2 * big.len() / 3);
        assert!(
            chunks
                .iter()
                .any(|c| c.as_ptr() == third.as_ptr() && c.len() == third.len()),
            "the chain's chunks go out as they are"
        );
        assert!(
            splices.take(&ticket).is_none(),
            "the ticket was spliced once"
        );
        // A ticket of another request's table, or bytes that only look like one, are records.
        let other = RecordSplices::default();
        assert!(other.take(&ticket).is_none());
        assert!(splices.take(&Bytes::from(vec![0u8; MARKER_LEN])).is_none());
    }

    #[test]
    fn a_single_chunk_needs_no_ticket() {
        let splices = RecordSplices::default();
        let one = Bytes::from(vec![7u8; 100]);
        let records = splices.records(vec![Bytes::new(), one.clone(), Bytes::new()]);
        assert_eq!(records.as_ptr(), one.as_ptr());
        assert!(splices.records(Vec::new()).is_empty());
    }

    #[test]
    fn large_records_are_not_copied() {
        let header = ResponseHeader::default().with_correlation_id(1);
        let r = response(&[vec![Some(100_000), Some(10)]], false, 16);
        let big = r.responses[0].partitions[0].records.clone().unwrap();
        let chunks = encode_fetch_frame(&header, 1, r, 16, &RecordSplices::default()).unwrap();
        assert!(
            chunks
                .iter()
                .any(|c| c.as_ptr() == big.as_ptr() && c.len() == big.len()),
            "the records go out as the cached Bytes themselves"
        );
    }
}

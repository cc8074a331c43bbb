//! The record value every load-test record carries: who sent it, its sequence number and when,
//! so a consumer can compute end-to-end latency and check exactly-once delivery at the
//! acknowledged offset. The rest of the value is filler up to the requested record size.

use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: u32 = 0x4b53_4c54; // "KSLT"

/// Bytes of the header; a record is never smaller.
pub(crate) const HEADER_BYTES: usize = 4 + 4 + 4 + 8 + 8;

/// What a record value says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Distinguishes this run's records from any other run's in the same topic.
    pub(crate) run: u32,
    pub(crate) producer: u32,
    pub(crate) seq: u64,
    /// When the record was due to be sent (microseconds since the Unix epoch).
    pub(crate) sent_us: i64,
}

impl Stamp {
    /// A value of `size` bytes (at least [`HEADER_BYTES`]) carrying this stamp.
    pub(crate) fn encode(&self, size: usize) -> Bytes {
        let mut b = BytesMut::with_capacity(size.max(HEADER_BYTES));
        b.put_u32(MAGIC);
        b.put_u32(self.run);
        b.put_u32(self.producer);
        b.put_u64(self.seq);
        b.put_i64(self.sent_us);
        // Filler that compresses about as well as typical JSON, not perfectly: a slice of a
        // fixed pseudo-random text at an offset that varies with the sequence number (copying
        // beats generating it per byte: the generator must not be what a run measures).
        let filler = filler();
        let mut at = (self.seq.wrapping_mul(0x9e37_79b9) % (FILLER_BYTES as u64 / 2)) as usize;
        while b.len() < size {
            let n = (size - b.len()).min(FILLER_BYTES - at);
            b.put_slice(&filler[at..at + n]);
            at = 0;
        }
        b.freeze()
    }

    /// The stamp of a value, if it is one of ours.
    pub(crate) fn decode(value: &[u8]) -> Option<Stamp> {
        if value.len() < HEADER_BYTES {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes(value[i..i + 4].try_into().unwrap_or([0; 4]));
        if u32_at(0) != MAGIC {
            return None;
        }
        Some(Stamp {
            run: u32_at(4),
            producer: u32_at(8),
            seq: u64::from_be_bytes(value[12..20].try_into().unwrap_or([0; 8])),
            sent_us: i64::from_be_bytes(value[20..28].try_into().unwrap_or([0; 8])),
        })
    }
}

const FILLER_BYTES: usize = 64 * 1024;

fn filler() -> &'static [u8] {
    static FILLER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILLER.get_or_init(|| {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..FILLER_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefghijklmnopqrstuvwxyz{}:,\"0123456789"[(x % 41) as usize]
            })
            .collect()
    })
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_encoding_at_every_size() {
        let s = Stamp {
            run: 7,
            producer: 3,
            seq: 123_456_789,
            sent_us: 1_700_000_000_000_000,
        };
        for size in [0, HEADER_BYTES, 100, 1024] {
            let v = s.encode(size);
            assert_eq!(v.len(), size.max(HEADER_BYTES));
            assert_eq!(Stamp::decode(&v), Some(s));
        }
        assert_eq!(Stamp::decode(b"not ours, not ours, not ours!"), None);
        assert_eq!(Stamp::decode(b"short"), None);
    }
}

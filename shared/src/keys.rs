//! Object key layout.
//!
//! Segment keys are `segments/{xx}/{unix_ms:013}-{uuid}.kseg`: the two-hex-digit `xx` spreads
//! writes over 256 prefixes (S3 scales request rates per prefix), and inside a prefix keys sort
//! by creation time, which is what retention and orphan scans walk. The UUID makes every key
//! unique, so create-only puts never collide.

use uuid::Uuid;

/// Prefix under which every segment object lives.
pub const SEGMENT_PREFIX: &str = "segments/";

/// A fresh, unique segment key created at `now_ms`.
pub fn new_segment_key(now_ms: i64) -> String {
    let id = Uuid::new_v4();
    let spread = id.as_bytes()[15];
    format!(
        "{SEGMENT_PREFIX}{spread:02x}/{now_ms:013}-{}.kseg",
        id.simple()
    )
}

/// When the segment `key` was created (ms since the epoch), read back from the key.
pub fn segment_created_ms(key: &str) -> Option<i64> {
    let name = key.strip_prefix(SEGMENT_PREFIX)?.split_once('/')?.1;
    name.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_keys_are_unique_spread_and_time_sortable() {
        let a = new_segment_key(1_700_000_000_000);
        let b = new_segment_key(1_700_000_000_000);
        assert_ne!(a, b);
        assert!(a.starts_with(SEGMENT_PREFIX));
        assert!(a.contains("/1700000000000-"));
        assert!(a.ends_with(".kseg"));
        assert_eq!(segment_created_ms(&a), Some(1_700_000_000_000));
        assert_eq!(segment_created_ms("segments/ab/nonsense"), None);
        assert_eq!(segment_created_ms("other/1-x.kseg"), None);
    }
}

//! Object key layout.
//!
//! Segment keys are `segments/{xx}/{unix_ms:013}-{uuid}.kseg`: the two-hex-digit `xx` spreads
//! writes over 256 prefixes (S3 scales request rates per prefix), and inside a prefix keys sort
//! by creation time, which is what retention and orphan scans walk. The UUID makes every key
//! unique, so create-only puts never collide.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Prefix under which every segment object lives.
pub const SEGMENT_PREFIX: &str = "segments/";

/// A fresh, unique segment key created at `now_ms`.
pub fn new_segment_key(now_ms: i64) -> String {
    segment_key(now_ms, Uuid::new_v4())
}

/// The key of the segment created at `ms` with id `id` (the spread is the id's last byte).
fn segment_key(ms: i64, id: Uuid) -> String {
    let spread = id.as_bytes()[15];
    format!("{SEGMENT_PREFIX}{spread:02x}/{ms:013}-{}.kseg", id.simple())
}

/// A segment key as metadata items store it when they name many segments (index pages, shard
/// log items): `[ms, id]`, the creation time and the id in base64 (22 characters), which is
/// all a key made by [`new_segment_key`] holds: 30 bytes of JSON instead of 66. Times may be
/// stored as differences from the previous key's (`[151, "..."]`). A key of any other shape
/// is stored whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredSegmentKey {
    Short(i64, String),
    Whole(String),
}

impl StoredSegmentKey {
    /// `key` in its short form if it has one, its time made relative to `base_ms` (wrapping;
    /// 0 for an absolute time).
    pub fn of(key: &str, base_ms: i64) -> StoredSegmentKey {
        match short_parts(key) {
            Some((ms, id)) => StoredSegmentKey::Short(
                ms.wrapping_sub(base_ms),
                URL_SAFE_NO_PAD.encode(id.as_bytes()),
            ),
            None => StoredSegmentKey::Whole(key.to_string()),
        }
    }

    /// The key back, with `base_ms` the time the short form is relative to; an error for an
    /// id that is not 16 bytes of base64.
    pub fn key(&self, base_ms: i64) -> Result<String, String> {
        match self {
            StoredSegmentKey::Whole(key) => Ok(key.clone()),
            StoredSegmentKey::Short(delta, id) => {
                let bytes = URL_SAFE_NO_PAD
                    .decode(id)
                    .map_err(|e| format!("segment id {id:?}: {e}"))?;
                let id = Uuid::from_slice(&bytes).map_err(|e| format!("segment id {id:?}: {e}"))?;
                Ok(segment_key(base_ms.wrapping_add(*delta), id))
            }
        }
    }

    /// The absolute creation time of a short key (`None` for a whole one).
    pub fn ms(&self, base_ms: i64) -> Option<i64> {
        match self {
            StoredSegmentKey::Short(delta, _) => Some(base_ms.wrapping_add(*delta)),
            StoredSegmentKey::Whole(_) => None,
        }
    }
}

/// The time and id of a key that [`segment_key`] rebuilds exactly; `None` for other keys.
fn short_parts(key: &str) -> Option<(i64, Uuid)> {
    let name = key.strip_prefix(SEGMENT_PREFIX)?.split_once('/')?.1;
    let (ms, rest) = name.split_once('-')?;
    let id = Uuid::try_parse(rest.strip_suffix(".kseg")?).ok()?;
    let ms: i64 = ms.parse().ok()?;
    (segment_key(ms, id) == key).then_some((ms, id))
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

    #[test]
    fn a_segment_key_comes_back_exactly_from_its_short_form() {
        let key = new_segment_key(1_796_456_652_756);
        let short = StoredSegmentKey::of(&key, 0);
        let json = serde_json::to_string(&short).unwrap();
        assert!(json.len() <= 40, "{json}");
        let back: StoredSegmentKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back.key(0).unwrap(), key);
        assert_eq!(back.ms(0), Some(1_796_456_652_756));
        // Relative to an earlier key's time: a small number.
        let relative = StoredSegmentKey::of(&key, 1_796_456_652_600);
        assert!(matches!(relative, StoredSegmentKey::Short(156, _)));
        assert_eq!(relative.key(1_796_456_652_600).unwrap(), key);
    }

    #[test]
    fn keys_of_another_shape_are_stored_whole() {
        for key in [
            "segments/ab/nonsense",
            "other/1700000000000-0123456789abcdef0123456789abcdef.kseg",
            // Right shape, wrong spread: rebuilding would change it.
            "segments/00/1700000000000-0123456789abcdef0123456789abcdef.kseg",
            // Upper-case hex rebuilds in lower case.
            "segments/ef/1700000000000-0123456789ABCDEF0123456789ABCDEF.kseg",
            "segments/ef/17-0123456789abcdef0123456789abcdef.kseg",
        ] {
            let stored = StoredSegmentKey::of(key, 0);
            assert_eq!(stored, StoredSegmentKey::Whole(key.to_string()));
            assert_eq!(stored.key(5).unwrap(), key);
        }
        let bad = StoredSegmentKey::Short(1, "not base64!".into());
        assert!(bad.key(0).is_err());
    }
}

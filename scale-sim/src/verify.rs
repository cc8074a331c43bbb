//! The check after every run: each acknowledged batch is in the store where its answer said,
//! exactly once.
//!
//! Read from the bare metadata store (no simulated latency or throttling), after every gateway
//! has stopped. Per partition the acknowledged ranges must not overlap, must lie below the
//! partition row's next offset, and must be covered by index entries whose segments exist;
//! the index entries themselves must be contiguous up to the next offset.

use std::collections::BTreeMap;

use kafscale_shared::catalog::Catalog;

use crate::error::SimError;
use crate::producers::{Ack, Target};
use crate::sizes_only::SizesOnlyObjectStore;

/// What the check found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Check {
    /// Acknowledged batches not found in the store (must be 0).
    pub lost: u64,
    /// Acknowledged batches whose offsets overlap another's (must be 0).
    pub overlapping: u64,
    /// Partitions whose index entries skip offsets below the next offset (must be 0).
    pub gaps: u64,
    /// Offsets in the store that no acknowledgement names: batches whose commit landed but
    /// whose answer was an error (a retry by a real producer makes them duplicates).
    pub unacknowledged_offsets: u64,
}

pub(crate) async fn check(
    catalog: &Catalog,
    objects: &SizesOnlyObjectStore,
    targets: &[Target],
    acks: &[Ack],
) -> Result<Check, SimError> {
    let mut by_target: BTreeMap<usize, Vec<(i64, i64)>> = BTreeMap::new();
    for a in acks {
        by_target
            .entry(a.target)
            .or_default()
            .push((a.base_offset, a.base_offset + a.offsets));
    }
    let mut found = Check::default();
    for (i, t) in targets.iter().enumerate() {
        let mut acked = by_target.remove(&i).unwrap_or_default();
        acked.sort_unstable();
        found.overlapping += acked.windows(2).filter(|w| w[1].0 < w[0].1).count() as u64;
        let next_offset = match catalog.partition_view(t.topic_id, t.partition).await? {
            Some(row) => row.next_offset,
            None => 0,
        };
        let entries = catalog
            .index_entries_from(t.topic_id, t.partition, 0, None)
            .await?;
        let mut covered: Vec<(i64, i64)> = Vec::new();
        let mut expected_base = 0;
        for e in &entries {
            if e.base_offset != expected_base {
                found.gaps += 1;
            }
            expected_base = e.last_offset + 1;
            if objects.contains(&e.segment_key) {
                covered.push((e.base_offset, e.last_offset + 1));
            }
        }
        if expected_base != next_offset {
            found.gaps += 1;
        }
        found.lost += acked
            .iter()
            .filter(|(start, end)| *end > next_offset || !inside(&covered, *start, *end))
            .count() as u64;
        let acked_offsets: i64 = acked.iter().map(|(s, e)| e - s).sum();
        found.unacknowledged_offsets += (next_offset - acked_offsets).max(0) as u64;
    }
    Ok(found)
}

/// Whether `start..end` lies within the union of `covered` (sorted, disjoint ranges).
fn inside(covered: &[(i64, i64)], start: i64, end: i64) -> bool {
    let mut at = start;
    let from = covered.partition_point(|&(_, e)| e <= start);
    for &(s, e) in &covered[from..] {
        if s > at {
            return false;
        }
        at = at.max(e);
        if at >= end {
            return true;
        }
    }
    at >= end
}

#[cfg(test)]
mod tests {
    use super::inside;

    #[test]
    fn a_range_is_inside_only_when_every_offset_is_covered() {
        let covered = [(0, 10), (10, 20), (30, 40)];
        assert!(inside(&covered, 0, 10));
        assert!(inside(&covered, 5, 15), "across two entries");
        assert!(inside(&covered, 35, 40));
        assert!(!inside(&covered, 15, 25), "runs into a hole");
        assert!(!inside(&covered, 20, 30), "wholly in a hole");
        assert!(!inside(&covered, 38, 41), "past the end");
        assert!(!inside(&[], 0, 1));
    }
}

//! Rules every backend applies the same way: batch validation, condition checks, empty ranges.
//!
//! Keeping them in one place means the memory reference and the durable backends cannot drift
//! apart on what a condition or a bound means.

use std::collections::HashSet;
use std::ops::Bound;

use super::{Condition, MetaStoreError, WriteOp};

/// Rejects a batch with more than `max_ops` operations or with one key named twice.
pub(crate) fn validate_batch(ops: &[WriteOp], max_ops: usize) -> Result<(), MetaStoreError> {
    if ops.len() > max_ops {
        return Err(MetaStoreError::InvalidBatch(format!(
            "{} operations, at most {max_ops} allowed",
            ops.len()
        )));
    }
    let mut seen = HashSet::with_capacity(ops.len());
    for op in ops {
        if !seen.insert(op.key()) {
            return Err(MetaStoreError::InvalidBatch(format!(
                "key {:?} appears more than once",
                op.key()
            )));
        }
    }
    Ok(())
}

/// The condition of an operation.
pub(crate) fn condition_of(op: &WriteOp) -> Condition {
    match op {
        WriteOp::Put { condition, .. }
        | WriteOp::Delete { condition, .. }
        | WriteOp::Check { condition, .. } => *condition,
    }
}

/// Whether `condition` holds on an item whose current version is `current` (`None`: absent).
pub(crate) fn condition_holds(condition: Condition, current: Option<u64>) -> bool {
    match condition {
        Condition::None => true,
        Condition::Absent => current.is_none(),
        Condition::Exists => current.is_some(),
        Condition::Version(expected) => current == Some(expected),
    }
}

/// Whether the sort-key range `start..end` can hold no key at all (start after end, or equal
/// bounds that are not both inclusive). Ordered maps panic or misbehave on such ranges.
pub(crate) fn is_empty_range(start: &Bound<String>, end: &Bound<String>) -> bool {
    match (start, end) {
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
            s > e || (s == e && !matches!((start, end), (Bound::Included(_), Bound::Included(_))))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(s: &str) -> Bound<String> {
        Bound::Included(s.to_owned())
    }

    fn exc(s: &str) -> Bound<String> {
        Bound::Excluded(s.to_owned())
    }

    #[test]
    fn empty_ranges() {
        assert!(!is_empty_range(&Bound::Unbounded, &Bound::Unbounded));
        assert!(!is_empty_range(&inc("a"), &Bound::Unbounded));
        assert!(!is_empty_range(&Bound::Unbounded, &exc("a")));
        assert!(!is_empty_range(&inc("a"), &inc("a")));
        assert!(is_empty_range(&inc("a"), &exc("a")));
        assert!(is_empty_range(&exc("a"), &inc("a")));
        assert!(is_empty_range(&exc("a"), &exc("a")));
        assert!(is_empty_range(&inc("b"), &inc("a")));
        assert!(!is_empty_range(&exc("a"), &exc("b")));
    }

    #[test]
    fn conditions() {
        assert!(condition_holds(Condition::None, None));
        assert!(condition_holds(Condition::None, Some(3)));
        assert!(condition_holds(Condition::Absent, None));
        assert!(!condition_holds(Condition::Absent, Some(1)));
        assert!(!condition_holds(Condition::Exists, None));
        assert!(condition_holds(Condition::Exists, Some(1)));
        assert!(condition_holds(Condition::Version(2), Some(2)));
        assert!(!condition_holds(Condition::Version(2), Some(3)));
        assert!(!condition_holds(Condition::Version(2), None));
    }
}

//! DynamoDB's capacity accounting, applied to our requests.
//!
//! What a metadata-store request costs on DynamoDB depends on the size of the items it reads or
//! writes, not on the request count: a write unit covers 1 KB of one item, a (strongly
//! consistent) read unit 4 KB, and every item of a transaction costs twice. Counting the units
//! here, from the same requests on every backend, lets the embedded store of a standalone (with
//! or without simulated latency) report what its traffic would cost on DynamoDB, and lets
//! `kafscale cost` price a run without asking AWS.
//!
//! The figures follow DynamoDB's published rules with two approximations: a delete or a
//! condition check is charged for an item of at most 1 KB (the store's own items are far
//! smaller, except commit records of very large segments), and a put is charged for its new
//! size (DynamoDB charges the larger of the old and the new). Failed requests are not charged.

use super::metrics::MetaStoreOp;
use super::{Item, ItemKey, WriteOp};

/// Bytes one write unit covers (per item).
pub const WRITE_UNIT_BYTES: usize = 1024;
/// Bytes one strongly consistent read unit covers.
pub const READ_UNIT_BYTES: usize = 4096;
/// The attribute names (`pk`, `sk`, `v`, `ver`) and the version number's few bytes.
const ITEM_OVERHEAD_BYTES: usize = 2 + 2 + 1 + 3 + 2;

/// The size DynamoDB counts for an item: attribute names plus values.
pub fn item_size(key: &ItemKey, value_len: usize) -> usize {
    key.pk.len() + key.sk.len() + value_len + ITEM_OVERHEAD_BYTES
}

fn units(bytes: usize, unit: usize) -> u64 {
    bytes.div_ceil(unit).max(1) as u64
}

/// Write units of one write batch as the DynamoDB backend sends it: a lone `Put` or `Delete`
/// is a single-item request, anything else one transaction (two units per KB of every item,
/// condition checks included).
/// (What a store charges per request and item family is
/// [`super::metrics::WriteCharge::of`], built on the functions below.)
pub fn write_units(ops: &[WriteOp]) -> u64 {
    let ops: Vec<&WriteOp> = ops.iter().collect();
    let transaction = is_transaction(&ops);
    ops.iter().map(|op| item_write_units(op, transaction)).sum()
}

/// Whether the DynamoDB backend sends `ops` as a transaction (anything but a lone `Put` or
/// `Delete`).
pub fn is_transaction(ops: &[&WriteOp]) -> bool {
    MetaStoreOp::of_write(ops) == MetaStoreOp::TransactWriteItems
}

/// Write units of one operation: one per started KB of a put item, one for a delete or a
/// condition check, and twice that inside a transaction.
pub fn item_write_units(op: &WriteOp, in_transaction: bool) -> u64 {
    let one = match op {
        WriteOp::Put { key, value, .. } => units(item_size(key, value.len()), WRITE_UNIT_BYTES),
        WriteOp::Delete { .. } | WriteOp::Check { .. } => 1,
    };
    if in_transaction { 2 * one } else { one }
}

/// Read units of a strongly consistent `GetItem` (one unit even when the item is missing).
pub fn get_units(item: Option<&Item>) -> u64 {
    let size = item.map_or(0, |i| item_size(&i.key, i.value.len()));
    units(size, READ_UNIT_BYTES)
}

/// Read units of one strongly consistent `Query` page: its items' sizes summed, then rounded
/// up to 4 KB (one unit for an empty page).
pub fn query_page_units(items: &[Item]) -> u64 {
    let size = items.iter().map(|i| item_size(&i.key, i.value.len())).sum();
    units(size, READ_UNIT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_store::Condition;
    use bytes::Bytes;

    fn put(value_len: usize) -> WriteOp {
        WriteOp::Put {
            key: ItemKey::new("part/t", "0000000001"),
            value: Bytes::from(vec![b'x'; value_len]),
            condition: Condition::None,
        }
    }

    fn check() -> WriteOp {
        WriteOp::Check {
            key: ItemKey::new("lease", "indexer-shard-00000"),
            condition: Condition::Version(3),
        }
    }

    #[test]
    fn a_single_put_costs_one_unit_per_started_kilobyte() {
        let key_bytes = "part/t".len() + "0000000001".len() + ITEM_OVERHEAD_BYTES;
        assert_eq!(write_units(&[put(0)]), 1);
        assert_eq!(write_units(&[put(1024 - key_bytes)]), 1);
        assert_eq!(write_units(&[put(1025 - key_bytes)]), 2);
    }

    #[test]
    fn a_transaction_costs_twice_per_item_checks_included() {
        // The shape of an indexer commit: lease check, commit record, one row and one index
        // entry of one partition.
        let ops = [check(), put(300), put(100), put(2000)];
        assert_eq!(write_units(&ops), 2 * (1 + 1 + 1 + 2));
        // A lone check is a transaction too.
        assert_eq!(write_units(&[check()]), 2);
    }

    #[test]
    fn reads_round_up_to_four_kilobytes() {
        let item = |len: usize| Item {
            key: ItemKey::new("idx/t/0", "00000000000000000010"),
            value: Bytes::from(vec![0u8; len]),
            version: 1,
        };
        assert_eq!(get_units(None), 1);
        assert_eq!(get_units(Some(&item(5000))), 2);
        assert_eq!(query_page_units(&[]), 1);
        let page: Vec<Item> = (0..40).map(|_| item(200)).collect();
        let bytes: usize = page.iter().map(|i| item_size(&i.key, 200)).sum();
        assert_eq!(query_page_units(&page), bytes.div_ceil(4096) as u64);
    }
}

//! Counted requests times prices, per GiB produced.

use std::fmt;

use serde::Serialize;

use crate::prices::{
    EXPRESS_FREE_BYTES_PER_REQUEST, MetaStorePrices, ObjectStorePrices, kafka_network_per_gib,
};
use crate::{CostError, Usage};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const META_WRITE_LINE: &str = "metadata write units";

/// How a family of items reads in the table (the metric's label values).
fn family_label(family: &str) -> &'static str {
    match family {
        "shard_log" => "of which shard-log items",
        "fold_checkpoint" => "of which fold checkpoints",
        "index" => "of which index pages and entries",
        "partition" => "of which partition rows",
        "producer" => "of which producer states",
        "segment" => "of which segment commit records",
        "group_offset" => "of which committed group offsets",
        "member" => "of which member heartbeats",
        "group_lease" => "of which group-coordinator leases",
        "shard_lease" => "of which indexer shard leases",
        "other_lease" => "of which other leases",
        _ => "of which other items",
    }
}

/// One priced kind of request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub what: &'static str,
    /// How many the window counted (requests, capacity units or GiB).
    pub counted: f64,
    /// The same, per GiB produced.
    pub per_gib: f64,
    /// Dollars per GiB produced.
    pub dollars_per_gib: f64,
}

/// The cost of a window per GiB produced, line by line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub produced_gib: f64,
    pub object_store: &'static str,
    pub meta_store: &'static str,
    pub lines: Vec<Line>,
    /// The metadata write units by item family, largest first (not priced separately: they
    /// make up the "metadata write units" line).
    pub write_units_by_family: Vec<Line>,
    /// Requests only: the sum of `lines`.
    pub dollars_per_gib: f64,
    /// Storing one GiB for a month in this object store (apart: it depends on retention).
    pub storage_per_gib_month: f64,
    /// What a three-replica Kafka pays for cross-zone traffic for the same bytes.
    pub kafka_network_per_gib: f64,
}

impl Estimate {
    /// Prices `usage` (a window's growth, see [`Usage::since`]).
    pub fn new(
        usage: &Usage,
        object: &ObjectStorePrices,
        meta: &MetaStorePrices,
    ) -> Result<Estimate, CostError> {
        if usage.produced_bytes <= 0.0 {
            return Err(CostError::NothingProduced);
        }
        let produced_gib = usage.produced_bytes / GIB;
        // Exact when every request is above 512 KiB (segments usually are); otherwise a
        // lower bound, as the counters hold totals, not sizes.
        let charged_upload = (usage.object_bytes_written
            - usage.object_put_class * EXPRESS_FREE_BYTES_PER_REQUEST)
            .max(0.0);
        let charged_read = (usage.object_bytes_read
            - usage.object_get_class * EXPRESS_FREE_BYTES_PER_REQUEST)
            .max(0.0);
        let priced = [
            (
                "object PUT and LIST requests",
                usage.object_put_class,
                object.put_class_per_1000 / 1000.0,
            ),
            (
                "object GET and HEAD requests",
                usage.object_get_class,
                object.get_class_per_1000 / 1000.0,
            ),
            ("object DELETE requests (free)", usage.object_deletes, 0.0),
            (
                "object GiB uploaded above 512 KiB a request",
                charged_upload / GIB,
                object.upload_per_gib,
            ),
            (
                "object GiB read above 512 KiB a request",
                charged_read / GIB,
                object.retrieval_per_gib,
            ),
            (
                META_WRITE_LINE,
                usage.meta_write_units,
                meta.per_million_write_units / 1e6,
            ),
            (
                "metadata read units",
                usage.meta_read_units,
                meta.per_million_read_units / 1e6,
            ),
        ];
        let lines: Vec<Line> = priced
            .into_iter()
            .map(|(what, counted, unit_price)| Line {
                what,
                counted,
                per_gib: counted / produced_gib,
                dollars_per_gib: counted * unit_price / produced_gib,
            })
            .collect();
        let mut write_units_by_family: Vec<Line> = usage
            .meta_write_units_by_family
            .iter()
            .filter(|(_, units)| **units > 0.0)
            .map(|(family, units)| Line {
                what: family_label(family),
                counted: *units,
                per_gib: units / produced_gib,
                dollars_per_gib: units * meta.per_million_write_units / 1e6 / produced_gib,
            })
            .collect();
        write_units_by_family.sort_by(|a, b| b.counted.total_cmp(&a.counted));
        Ok(Estimate {
            produced_gib,
            write_units_by_family,
            object_store: object.name,
            meta_store: meta.name,
            dollars_per_gib: lines.iter().map(|l| l.dollars_per_gib).sum(),
            lines,
            storage_per_gib_month: object.storage_per_gib_month,
            kafka_network_per_gib: kafka_network_per_gib(),
        })
    }

    /// Kafka's network cost divided by ours (above 1: we are cheaper).
    pub fn cheaper_than_kafka_by(&self) -> f64 {
        self.kafka_network_per_gib / self.dollars_per_gib
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:.3} MiB produced; {} and {}",
            self.produced_gib * 1024.0,
            self.object_store,
            self.meta_store
        )?;
        writeln!(
            f,
            "{:<46} {:>14} {:>14} {:>12}",
            "", "counted", "per GiB", "$ per GiB"
        )?;
        for line in &self.lines {
            writeln!(
                f,
                "{:<46} {:>14.1} {:>14.1} {:>12.5}",
                line.what, line.counted, line.per_gib, line.dollars_per_gib
            )?;
            if line.what == META_WRITE_LINE {
                for part in &self.write_units_by_family {
                    writeln!(
                        f,
                        "  {:<44} {:>14.1} {:>14.1} {:>12.5}",
                        part.what, part.counted, part.per_gib, part.dollars_per_gib
                    )?;
                }
            }
        }
        writeln!(
            f,
            "{:<46} {:>14} {:>14} {:>12.5}",
            "requests in all", "", "", self.dollars_per_gib
        )?;
        let ratio = self.cheaper_than_kafka_by();
        let compared = if ratio >= 1.0 {
            format!("{ratio:.1} times what these requests cost")
        } else {
            format!("these requests cost {:.1} times as much", 1.0 / ratio)
        };
        writeln!(
            f,
            "three-replica Kafka's cross-zone traffic for the same bytes: ${:.5} per GiB ({compared})",
            self.kafka_network_per_gib,
        )?;
        write!(
            f,
            "storage, apart: ${:.3} per GiB-month retained",
            self.storage_per_gib_month
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::{DYNAMODB_ON_DEMAND, S3_EXPRESS_ONE_ZONE, S3_STANDARD};

    /// The S3 Standard preset run of docs/benchmarks.md: 29.3 MiB in 317 PUTs.
    fn run() -> Usage {
        Usage {
            produced_bytes: 29.3 * 1024.0 * 1024.0,
            object_put_class: 317.0,
            object_bytes_written: 29.3 * 1024.0 * 1024.0,
            meta_write_units: 10_796.0,
            meta_read_units: 2_000.0,
            meta_write_units_by_family: [
                ("index".to_string(), 10_000.0),
                ("group_lease".to_string(), 796.0),
            ]
            .into(),
            ..Usage::default()
        }
    }

    #[test]
    fn prices_each_request_per_gib_produced() {
        let e = Estimate::new(&run(), &S3_STANDARD, &DYNAMODB_ON_DEMAND).unwrap();
        let gib = 29.3 / 1024.0;
        let puts = &e.lines[0];
        assert!((puts.per_gib - 317.0 / gib).abs() < 1e-6);
        assert!((puts.dollars_per_gib - 317.0 * 0.005 / 1000.0 / gib).abs() < 1e-9);
        let writes = &e.lines[5];
        assert!((writes.dollars_per_gib - 10_796.0 * 0.625e-6 / gib).abs() < 1e-9);
        let sum: f64 = e.lines.iter().map(|l| l.dollars_per_gib).sum();
        assert!((e.dollars_per_gib - sum).abs() < 1e-12);
        // About $0.29 per GiB, as issue 16 worked out by hand.
        assert!((0.25..0.33).contains(&e.dollars_per_gib), "{e}");
        assert!(e.cheaper_than_kafka_by() < 1.0);
        assert!(e.to_string().contains("three-replica Kafka"));
        let families: Vec<(&str, f64)> = e
            .write_units_by_family
            .iter()
            .map(|l| (l.what, l.counted))
            .collect();
        assert_eq!(
            families,
            [
                ("of which index pages and entries", 10_000.0),
                ("of which group-coordinator leases", 796.0)
            ]
        );
        let text = e.to_string();
        let writes_at = text.find("metadata write units").unwrap();
        assert!(
            text[writes_at..].contains("of which group-coordinator leases"),
            "{text}"
        );
    }

    #[test]
    fn express_charges_the_bytes_of_large_requests() {
        let usage = Usage {
            produced_bytes: GIB,
            object_put_class: 256.0,
            object_bytes_written: GIB,
            ..Usage::default()
        };
        let e = Estimate::new(&usage, &S3_EXPRESS_ONE_ZONE, &DYNAMODB_ON_DEMAND).unwrap();
        // 256 requests of 4 MiB: 3.5 MiB of each is charged.
        let charged = &e.lines[3];
        assert!((charged.counted - 256.0 * 3.5 / 1024.0).abs() < 1e-9);
        assert!((charged.dollars_per_gib - 0.875 * 0.0032).abs() < 1e-9);
    }

    #[test]
    fn nothing_produced_has_no_cost_per_gib() {
        let err = Estimate::new(&Usage::default(), &S3_STANDARD, &DYNAMODB_ON_DEMAND);
        assert!(matches!(err, Err(CostError::NothingProduced)));
    }
}

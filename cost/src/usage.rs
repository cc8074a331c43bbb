//! The counted requests that cost money, summed over every scraped process.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::CostError;
use crate::exposition::Sample;

const PRODUCE_BYTES: &str = "kafscale_produce_bytes_total";
const OBJECT_REQUESTS: &str = "kafscale_object_store_requests_total";
const OBJECT_BYTES: &str = "kafscale_object_store_bytes_total";
const META_REQUESTS: &str = "kafscale_meta_store_requests_total";
const META_READ_UNITS: &str = "kafscale_meta_store_read_units_total";
const META_WRITE_UNITS: &str = "kafscale_meta_store_write_units_total";
const META_FAMILY_WRITE_UNITS: &str = "kafscale_meta_store_item_write_units_total";

/// Counters of one or more processes at one moment, or their growth over a window.
///
/// Object-store requests are grouped by how S3 bills them: PUT, COPY, POST and LIST at one
/// price; GET, HEAD and the rest at another; DELETE free.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Record-batch bytes accepted from producers.
    pub produced_bytes: f64,
    /// Object PUTs (multipart parts included) and LISTs.
    pub object_put_class: f64,
    /// Object GETs (whole and ranged) and HEADs.
    pub object_get_class: f64,
    /// Object DELETEs, single and batched (free on S3).
    pub object_deletes: f64,
    /// Bytes sent to the object store.
    pub object_bytes_written: f64,
    /// Bytes read from the object store.
    pub object_bytes_read: f64,
    /// Metadata-store requests of any kind.
    pub meta_requests: f64,
    /// DynamoDB read units those requests would consume.
    pub meta_read_units: f64,
    /// DynamoDB write units those requests would consume.
    pub meta_write_units: f64,
    /// The same write units by the kind of item written (shard_log, index, group_lease, ...);
    /// empty for processes of releases that did not count them.
    #[serde(default)]
    pub meta_write_units_by_family: BTreeMap<String, f64>,
}

impl Usage {
    /// Sums the counters of one `/metrics` page (call [`Usage::add`] for the next process).
    pub fn from_samples(samples: &[Sample]) -> Usage {
        let mut usage = Usage::default();
        for s in samples {
            if s.name == META_FAMILY_WRITE_UNITS {
                let family = s.label("family").unwrap_or("other").to_string();
                *usage.meta_write_units_by_family.entry(family).or_default() += s.value;
                continue;
            }
            let op = s.label("op").unwrap_or("");
            let slot = match s.name.as_str() {
                PRODUCE_BYTES => &mut usage.produced_bytes,
                OBJECT_REQUESTS => match op {
                    "put" | "list" => &mut usage.object_put_class,
                    "delete" | "delete_many" => &mut usage.object_deletes,
                    _ => &mut usage.object_get_class,
                },
                OBJECT_BYTES => match s.label("direction") {
                    Some("out") => &mut usage.object_bytes_written,
                    _ => &mut usage.object_bytes_read,
                },
                META_REQUESTS => &mut usage.meta_requests,
                META_READ_UNITS => &mut usage.meta_read_units,
                META_WRITE_UNITS => &mut usage.meta_write_units,
                _ => continue,
            };
            *slot += s.value;
        }
        usage
    }

    /// Adds another process's counters.
    pub fn add(&mut self, other: &Usage) {
        for (mine, theirs) in self.fields_mut().into_iter().zip(other.fields()) {
            *mine += theirs.1;
        }
        for (family, units) in &other.meta_write_units_by_family {
            *self
                .meta_write_units_by_family
                .entry(family.clone())
                .or_default() += units;
        }
    }

    /// What grew since `earlier` (taken from the same processes). A counter that went down
    /// means a process restarted in between, and the window cannot be priced.
    pub fn since(&self, earlier: &Usage) -> Result<Usage, CostError> {
        let mut grown = self.clone();
        for (family, units) in grown.meta_write_units_by_family.iter_mut() {
            *units -= earlier
                .meta_write_units_by_family
                .get(family)
                .unwrap_or(&0.0);
        }
        for ((name, before), now) in earlier.fields().into_iter().zip(grown.fields_mut()) {
            if *now < before {
                return Err(CostError::CounterReset {
                    name,
                    earlier: before,
                    later: *now,
                });
            }
            *now -= before;
        }
        Ok(grown)
    }

    fn fields(&self) -> [(&'static str, f64); 9] {
        [
            (PRODUCE_BYTES, self.produced_bytes),
            (OBJECT_REQUESTS, self.object_put_class),
            (OBJECT_REQUESTS, self.object_get_class),
            (OBJECT_REQUESTS, self.object_deletes),
            (OBJECT_BYTES, self.object_bytes_written),
            (OBJECT_BYTES, self.object_bytes_read),
            (META_REQUESTS, self.meta_requests),
            (META_READ_UNITS, self.meta_read_units),
            (META_WRITE_UNITS, self.meta_write_units),
        ]
    }

    /// The same fields as [`Usage::fields`], in the same order.
    fn fields_mut(&mut self) -> [&mut f64; 9] {
        [
            &mut self.produced_bytes,
            &mut self.object_put_class,
            &mut self.object_get_class,
            &mut self.object_deletes,
            &mut self.object_bytes_written,
            &mut self.object_bytes_read,
            &mut self.meta_requests,
            &mut self.meta_read_units,
            &mut self.meta_write_units,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::parse;

    const PAGE: &str = "\
kafscale_produce_bytes_total{topic=\"a\"} 1000
kafscale_produce_bytes_total{topic=\"b\"} 24
kafscale_object_store_requests_total{op=\"put\"} 10
kafscale_object_store_requests_total{op=\"list\"} 2
kafscale_object_store_requests_total{op=\"get_range\"} 7
kafscale_object_store_requests_total{op=\"head\"} 1
kafscale_object_store_requests_total{op=\"delete_many\"} 3
kafscale_object_store_bytes_total{op=\"put\",direction=\"out\"} 5000
kafscale_object_store_bytes_total{op=\"get_range\",direction=\"in\"} 700
kafscale_meta_store_requests_total{op=\"TransactWriteItems\"} 11
kafscale_meta_store_write_units_total{op=\"TransactWriteItems\"} 90
kafscale_meta_store_write_units_total{op=\"UpdateItem\"} 4
kafscale_meta_store_read_units_total{op=\"Query\"} 6
kafscale_meta_store_item_write_units_total{family=\"shard_log\"} 60
kafscale_meta_store_item_write_units_total{family=\"group_lease\"} 34
kafscale_fetch_bytes_total{topic=\"a\"} 99999
";

    #[test]
    fn sums_what_costs_money_by_billing_class() {
        let usage = Usage::from_samples(&parse(PAGE).unwrap());
        assert_eq!(
            usage,
            Usage {
                produced_bytes: 1024.0,
                object_put_class: 12.0,
                object_get_class: 8.0,
                object_deletes: 3.0,
                object_bytes_written: 5000.0,
                object_bytes_read: 700.0,
                meta_requests: 11.0,
                meta_read_units: 6.0,
                meta_write_units: 94.0,
                meta_write_units_by_family: [
                    ("group_lease".to_string(), 34.0),
                    ("shard_log".to_string(), 60.0)
                ]
                .into(),
            }
        );
    }

    #[test]
    fn a_window_is_the_growth_of_every_counter() {
        let later = Usage::from_samples(&parse(PAGE).unwrap());
        let mut earlier = later.clone();
        earlier.object_put_class = 2.0;
        earlier.produced_bytes = 24.0;
        earlier
            .meta_write_units_by_family
            .insert("shard_log".into(), 50.0);
        let grown = later.since(&earlier).unwrap();
        assert_eq!(grown.object_put_class, 10.0);
        assert_eq!(grown.produced_bytes, 1000.0);
        assert_eq!(grown.meta_write_units, 0.0);
        assert_eq!(grown.meta_write_units_by_family["shard_log"], 10.0);
        assert_eq!(grown.meta_write_units_by_family["group_lease"], 0.0);
        let mut two = later.clone();
        two.add(&later);
        assert_eq!(two.meta_write_units, 188.0);
        assert_eq!(two.meta_write_units_by_family["shard_log"], 120.0);
        let err = earlier.since(&later).unwrap_err();
        assert!(err.to_string().contains("restarted"), "{err}");
    }

    #[test]
    fn a_baseline_survives_json() {
        let usage = Usage::from_samples(&parse(PAGE).unwrap());
        let text = serde_json::to_string(&usage).unwrap();
        assert_eq!(serde_json::from_str::<Usage>(&text).unwrap(), usage);
    }
}

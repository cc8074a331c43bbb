//! What one simulation measured, and how it is printed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafscale_shared::meta_store::MetaStoreMetrics;
use kafscale_shared::meta_store::metrics::MetaStoreOp;
use kafscale_shared::object_store::{ObjectStoreMetrics, ObjectStoreOp};
use kafscale_shared::simulated_latency::KeyUsage;
use serde::Serialize;
use uuid::Uuid;

use crate::producers::Tally;
use crate::verify::Check;
use crate::world::SimConfig;

const MIB: f64 = 1024.0 * 1024.0;

/// Everything a run leaves behind, before it is summarized.
pub(crate) struct Measured {
    pub elapsed: Duration,
    pub batch_bytes: usize,
    pub tally: Tally,
    pub check: Check,
    /// Commits the indexers answered without an error.
    pub commits: u64,
    pub meta: Arc<MetaStoreMetrics>,
    pub meta_keys: Vec<(String, KeyUsage)>,
    pub objects: Arc<ObjectStoreMetrics>,
    pub object_prefixes: Vec<(String, KeyUsage)>,
}

/// The load on one partition key (or S3 prefix) over the run.
#[derive(Debug, Clone, Serialize)]
pub struct KeyLoad {
    pub key: String,
    /// The key with topic ids and numbers replaced: which item kind it is.
    pub kind: String,
    pub write_units_per_s: f64,
    pub read_units_per_s: f64,
    pub throttled: u64,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub gateways: usize,
    pub indexers: usize,
    pub shards: u32,
    pub partitions: usize,
    pub producers: usize,
    pub seconds: f64,
    pub offered_mib_per_s: f64,
    pub acked_mib_per_s: f64,
    pub acked_batches: u64,
    pub failed_batches: u64,
    pub errors: BTreeMap<String, u64>,
    pub produce_p50_ms: f64,
    pub produce_p99_ms: f64,
    pub produce_max_ms: f64,
    pub commits_per_s: f64,
    pub puts_per_s: f64,
    pub write_units_per_s: f64,
    pub read_units_per_s: f64,
    pub meta_throttled: u64,
    pub object_throttled: u64,
    /// The busiest partition keys by write units.
    pub hottest_keys: Vec<KeyLoad>,
    /// The partition keys refused most often.
    pub most_throttled_keys: Vec<KeyLoad>,
    pub lost: u64,
    pub overlapping: u64,
    pub gaps: u64,
    pub unacknowledged_offsets: u64,
    pub first_bottleneck: String,
}

impl Report {
    pub(crate) fn new(config: &SimConfig, m: Measured) -> Report {
        let seconds = m.elapsed.as_secs_f64().max(1e-9);
        let per_s = |n: u64| n as f64 / seconds;
        let latency = &m.tally.latency_us;
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        let transactions = m.meta.get(MetaStoreOp::TransactWriteItems);
        let puts = m.objects.get(ObjectStoreOp::Put);
        let loads = |usage: &[(String, KeyUsage)]| -> Vec<KeyLoad> {
            usage.iter().map(|(k, u)| key_load(k, u, seconds)).collect()
        };
        let meta_keys = loads(&m.meta_keys);
        let mut most_throttled: Vec<KeyLoad> = meta_keys
            .iter()
            .filter(|k| k.throttled > 0)
            .cloned()
            .collect();
        most_throttled.sort_by(|a, b| b.throttled.cmp(&a.throttled).then(a.key.cmp(&b.key)));
        most_throttled.truncate(3);
        let prefixes = loads(&m.object_prefixes);
        let acked_batches = m.tally.acks.len() as u64;
        let mut report = Report {
            gateways: config.gateways,
            indexers: config.indexers,
            shards: config.shards,
            partitions: config.topics * config.partitions_per_topic as usize,
            producers: config.gateways * config.producers_per_gateway,
            seconds,
            offered_mib_per_s: config.rate_per_gateway * config.gateways as f64 / MIB,
            acked_mib_per_s: per_s(acked_batches * m.batch_bytes as u64) / MIB,
            acked_batches,
            failed_batches: m.tally.errors.values().sum(),
            errors: m.tally.errors,
            produce_p50_ms: ms(0.5),
            produce_p99_ms: ms(0.99),
            produce_max_ms: latency.max() as f64 / 1000.0,
            // A transaction per commit (or chunk), or on the shard log a commit answered.
            commits_per_s: per_s(if config.shard_log {
                m.commits
            } else {
                transactions.requests - transactions.errors
            }),
            puts_per_s: per_s(puts.requests - puts.errors),
            write_units_per_s: meta_keys.iter().map(|k| k.write_units_per_s).sum(),
            read_units_per_s: meta_keys.iter().map(|k| k.read_units_per_s).sum(),
            meta_throttled: meta_keys.iter().map(|k| k.throttled).sum(),
            object_throttled: prefixes.iter().map(|k| k.throttled).sum(),
            hottest_keys: meta_keys.into_iter().take(3).collect(),
            most_throttled_keys: most_throttled,
            lost: m.check.lost,
            overlapping: m.check.overlapping,
            gaps: m.check.gaps,
            unacknowledged_offsets: m.check.unacknowledged_offsets,
            first_bottleneck: String::new(),
        };
        report.first_bottleneck = bottleneck(&report, &prefixes);
        report
    }

    /// The header of [`Report::row`]'s table.
    pub fn header() -> String {
        "| gateways | indexers | shards | partitions | offered MiB/s | acked MiB/s | p50 ms | p99 ms | commits/s | PUTs/s | WU/s | throttled (DynamoDB / S3) | failed | lost | first bottleneck |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
            .into()
    }

    /// The run as one Markdown table row.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} / {} | {} | {} | {} |",
            self.gateways,
            self.indexers,
            self.shards,
            self.partitions,
            self.offered_mib_per_s,
            self.acked_mib_per_s,
            self.produce_p50_ms,
            self.produce_p99_ms,
            self.commits_per_s,
            self.puts_per_s,
            self.write_units_per_s,
            self.meta_throttled,
            self.object_throttled,
            self.failed_batches,
            self.lost,
            self.first_bottleneck,
        )
    }
}

fn key_load(key: &str, usage: &KeyUsage, seconds: f64) -> KeyLoad {
    KeyLoad {
        key: key.to_owned(),
        kind: key_kind(key),
        write_units_per_s: usage.write_units / seconds,
        read_units_per_s: usage.read_units / seconds,
        throttled: usage.throttled,
    }
}

/// `part/1f0e…` → `part/{topic}`, `idx/1f0e…/7` → `idx/{topic}/{n}`.
fn key_kind(key: &str) -> String {
    key.split('/')
        .map(|part| {
            if Uuid::parse_str(part).is_ok() {
                "{topic}"
            } else if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                "{n}"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The first limit the run ran into, in words.
fn bottleneck(r: &Report, prefixes: &[KeyLoad]) -> String {
    if let Some(k) = r.most_throttled_keys.first() {
        return format!(
            "DynamoDB key {} ({} throttled, {:.0} WU/s granted)",
            k.kind, k.throttled, k.write_units_per_s
        );
    }
    if let Some(p) = prefixes
        .iter()
        .filter(|p| p.throttled > 0)
        .max_by_key(|p| p.throttled)
    {
        return format!("S3 prefix {} ({} SlowDown)", p.key, p.throttled);
    }
    if r.acked_mib_per_s < 0.9 * r.offered_mib_per_s {
        // Each shard's owner runs one commit at a time; a shard whose commits follow each
        // other back to back is the limit when no key is throttled.
        return format!(
            "none in the stores: producers held back ({:.0} commits/s per shard, one at a time; or CPU)",
            r.commits_per_s / f64::from(r.shards.max(1))
        );
    }
    "none reached".into()
}

#[cfg(test)]
mod tests {
    use super::key_kind;

    #[test]
    fn key_kinds_hide_topic_ids_and_numbers() {
        assert_eq!(
            key_kind("idx/67e55044-10b1-426f-9247-bb680e5fe0c8/12"),
            "idx/{topic}/{n}"
        );
        assert_eq!(key_kind("seg"), "seg");
        assert_eq!(key_kind("lease"), "lease");
    }
}

//! The short form of the scale simulation that runs in CI: a few gateways and indexers, a
//! partition-key limit low enough that commits are throttled, and the check that throttling
//! slowed commits down without losing or duplicating an acknowledged batch.

use std::time::Duration;

use kafscale_scale_sim::{SimConfig, run};
use kafscale_shared::simulated_latency::{KeyThroughput, MetaStoreLatency, ObjectStoreLatency};

/// A few gateways and indexers for three seconds, with every partition key limited to
/// `write_units_per_sec`.
fn short(write_units_per_sec: f64, shard_log: bool) -> SimConfig {
    SimConfig {
        gateways: 4,
        indexers: 2,
        shards: 4,
        topics: 4,
        partitions_per_topic: 8,
        producers_per_gateway: 4,
        rate_per_gateway: 256.0 * 1024.0,
        record_bytes: 256,
        records_per_batch: 8,
        max_in_flight: 5,
        duration: Duration::from_secs(3),
        flush_interval: Duration::from_millis(50),
        upload_hedge_after: Some(Duration::from_millis(100)),
        object_store: ObjectStoreLatency::S3_STANDARD,
        meta_store: MetaStoreLatency {
            per_key: Some(KeyThroughput {
                write_units_per_sec,
                ..KeyThroughput::DYNAMODB
            }),
            ..MetaStoreLatency::DYNAMODB
        },
        unlimited_keys: Vec::new(),
        shard_log,
    }
}

async fn throttled_run_loses_nothing(config: SimConfig) {
    let report = run(&config).await.expect("the simulation runs");
    println!(
        "{}\n{}\n{report:#?}",
        kafscale_scale_sim::Report::header(),
        report.row()
    );
    assert!(report.acked_batches > 0, "nothing was acknowledged");
    assert!(
        report.meta_throttled > 0,
        "the low key limit never throttled"
    );
    assert!(
        report.first_bottleneck.starts_with("DynamoDB key"),
        "{}",
        report.first_bottleneck
    );
    assert_eq!(
        (report.lost, report.overlapping, report.gaps),
        (0, 0, 0),
        "acknowledged batches must be in the store exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_commits_are_retried_and_no_acknowledged_batch_is_lost() {
    throttled_run_loses_nothing(short(60.0, false)).await;
}

/// The same with the indexers on the shard log: each commit is one small item on its shard's
/// key, so the limit is lower to throttle it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_appends_to_the_shard_log_lose_nothing() {
    throttled_run_loses_nothing(short(10.0, true)).await;
}

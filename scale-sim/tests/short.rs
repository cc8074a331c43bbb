//! The short form of the scale simulation that runs in CI: a few gateways and indexers, a
//! partition-key limit low enough that commits are throttled, and the check that throttling
//! slowed commits down without losing or duplicating an acknowledged batch.

use std::time::Duration;

use kafscale_scale_sim::{SimConfig, run};
use kafscale_shared::simulated_latency::{KeyThroughput, MetaStoreLatency, ObjectStoreLatency};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_commits_are_retried_and_no_acknowledged_batch_is_lost() {
    let report = run(&SimConfig {
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
                write_units_per_sec: 60.0,
                ..KeyThroughput::DYNAMODB
            }),
            ..MetaStoreLatency::DYNAMODB
        },
        unlimited_keys: Vec::new(),
    })
    .await
    .expect("the simulation runs");
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

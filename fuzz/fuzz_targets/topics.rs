//! The topic APIs, stateful: a sequence of Metadata, CreateTopics, DeleteTopics,
//! CreatePartitions, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs and DescribeCluster
//! requests (see the input format in the harness, `fuzz/src/lib.rs`) through `TopicHandler`
//! on a fresh in-memory catalog per input holding the topics `t` (3 partitions) and `c` (2,
//! compacted). Requests run one after another, as the wire core orders a connection's writes.
//!
//! Must never panic, every request must complete, every answer must encode at the request's
//! version; and what the catalog holds at the end must still read back: every topic listed
//! decodes, has at least one partition, and a topic's partition count never went down.

#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use kafscale_fuzz::{
    Started, check_sendable, context, create_topics, decode_op, parse_ops, runtime, topic_settings,
};
use kafscale_shared::catalog::Catalog;
use kafscale_shared::meta_store::MemoryMetaStore;
use kafscale_shared::topic_api::TopicApi;
use kafscale_shared::topic_handler::{TOPIC_APIS, TopicHandler};
use kafscale_shared::wire::KafkaHandler;
use libfuzzer_sys::fuzz_target;

/// Partition counts by topic id.
async fn partition_counts(catalog: &Catalog) -> BTreeMap<uuid::Uuid, i32> {
    catalog
        .list_topics()
        .await
        .expect("the catalog's topics read back")
        .into_iter()
        .map(|t| (t.topic_id, t.partitions))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let ops = parse_ops(data, &TOPIC_APIS);
    if ops.is_empty() {
        return;
    }
    runtime().block_on(async {
        let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
        create_topics(&catalog).await;
        let handler = TopicHandler::new(TopicApi::new(catalog.clone(), topic_settings()));
        let mut counts = partition_counts(&catalog).await;
        for (n, op) in ops.iter().enumerate() {
            let Some(request) = decode_op(op) else {
                continue;
            };
            let dispatch = handler
                .start(context(op.key, op.version, n as i32), request)
                .await;
            match Started::spawn(op.key, op.version, dispatch).finish().await {
                Some(answer) => check_sendable(op.key, op.version, answer),
                None => panic!("{:?} v{} got no answer", op.key, op.version),
            }
            if !op.advance.is_zero() {
                tokio::time::sleep(op.advance).await;
            }
            let now = partition_counts(&catalog).await;
            for (id, partitions) in &now {
                assert!(*partitions >= 1, "topic {id} has {partitions} partitions");
                if let Some(before) = counts.get(id) {
                    assert!(
                        partitions >= before,
                        "topic {id} went from {before} to {partitions} partitions"
                    );
                }
            }
            counts = now;
        }
    });
});

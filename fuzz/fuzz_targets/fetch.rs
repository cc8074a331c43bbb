//! The fetch tier: a sequence of Fetch and ListOffsets requests (see the input format in the
//! harness, `fuzz/src/lib.rs`) through `FetchHandler` over in-memory stores holding real
//! segments: the topics `t` (3 partitions) and `c` (2), filled once per process through the
//! ingest tier with batches in every compression, from a plain and an idempotent producer,
//! over several segment objects.
//!
//! A topic id whose first 15 bytes are zero stands for the id of topic `last byte % 2` (`t`,
//! `c`), so inputs can name the real, random ids. Must never panic, every request must
//! complete (long polls included), and every answer must encode at the request's version.

#![no_main]

use std::sync::OnceLock;

use kafka_protocol::messages::RequestKind;
use kafscale_fetch::FETCH_APIS;
use kafscale_fuzz::{
    Cluster, Started, check_sendable, context, decode_op, fill, parse_ops, runtime,
};
use libfuzzer_sys::fuzz_target;

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        runtime().block_on(async {
            let cluster = Cluster::start().await;
            fill(&cluster).await;
            cluster
        })
    })
}

/// Replaces placeholder topic ids (first 15 bytes zero) with real ones.
fn real_id(id: &mut uuid::Uuid, ids: &[uuid::Uuid]) {
    let bytes = id.as_bytes();
    if bytes[..15].iter().all(|b| *b == 0) {
        *id = ids[bytes[15] as usize % ids.len()];
    }
}

fuzz_target!(|data: &[u8]| {
    let ops = parse_ops(data, &FETCH_APIS);
    if ops.is_empty() {
        return;
    }
    let cluster = cluster();
    runtime().block_on(async {
        let mut started = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            let Some(mut request) = decode_op(op) else {
                continue;
            };
            if let RequestKind::Fetch(fetch) = &mut request {
                for topic in &mut fetch.topics {
                    real_id(&mut topic.topic_id, &cluster.topic_ids);
                }
                for topic in &mut fetch.forgotten_topics_data {
                    real_id(&mut topic.topic_id, &cluster.topic_ids);
                }
            }
            let dispatch = cluster
                .fetch_handler
                .start(context(op.key, op.version, n as i32), request)
                .await;
            started.push(Started::spawn(op.key, op.version, dispatch));
            if !op.advance.is_zero() {
                tokio::time::sleep(op.advance).await;
            }
        }
        for request in started {
            let (key, version) = (request.key, request.version);
            match request.finish().await {
                Some(answer) => check_sendable(key, version, answer),
                None => panic!("{key:?} v{version} got no answer"),
            }
        }
    });
});

//! The wire core applies one connection's requests with side effects in arrival order, as a
//! Kafka broker does, while responses stay pipelined and reads stay concurrent.
//!
//! The handler here keeps a ledger: OffsetCommit (a write applied when its future completes)
//! sleeps for the delay named in its commit metadata and then stores the offset; Produce (a
//! write applied when it is started, like the ingest buffer's append) logs itself at start and
//! answers later; OffsetFetch (a read) returns the ledger's value. Later requests are given
//! shorter delays, so any overtaking shows up in the ledger.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use common::{TestServer, decode_response, encode_request, expect_frame, write_all};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ProduceRequest, ProduceResponse, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafscale_shared::wire::{
    ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext, WireConfig,
};

/// What the handler observed, in the order it happened.
#[derive(Debug, Default)]
struct Ledger {
    /// The last committed offset.
    committed: i64,
    /// Every effect in the order applied: `c{offset}` for commits, `p{n}` for produces.
    applied: Vec<String>,
    /// Produce requests started but not yet answered, and the most at once.
    produce_in_flight: usize,
    produce_max_in_flight: usize,
}

#[derive(Debug, Default)]
struct LedgerHandler {
    ledger: Arc<Mutex<Ledger>>,
}

const LEDGER_APIS: [ApiSupport; 3] = [
    ApiSupport::new(ApiKey::Produce, 3, 3),
    ApiSupport::new(ApiKey::OffsetFetch, 1, 1),
    ApiSupport::new(ApiKey::OffsetCommit, 2, 2),
];

fn delay_of(metadata: &str) -> Duration {
    Duration::from_millis(
        metadata
            .strip_prefix("delay-")
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0),
    )
}

impl LedgerHandler {
    fn commit(&self, request: OffsetCommitRequest) -> Dispatch {
        let ledger = self.ledger.clone();
        Dispatch::Respond(Box::pin(async move {
            let p = &request.topics[0].partitions[0];
            let (offset, metadata) = (p.committed_offset, p.committed_metadata.clone());
            tokio::time::sleep(delay_of(metadata.as_deref().unwrap_or(""))).await;
            {
                let mut l = ledger.lock().expect("ledger");
                l.committed = offset;
                l.applied.push(format!("c{offset}"));
            }
            let response = OffsetCommitResponse::default().with_topics(vec![
                OffsetCommitResponseTopic::default()
                    .with_name(request.topics[0].name.clone())
                    .with_partitions(vec![OffsetCommitResponsePartition::default()]),
            ]);
            Ok(response.into())
        }))
    }

    fn fetch(&self, request: OffsetFetchRequest) -> Dispatch {
        let ledger = self.ledger.clone();
        Dispatch::Respond(Box::pin(async move {
            let committed = ledger.lock().expect("ledger").committed;
            let name = request.topics.unwrap_or_default()[0].name.clone();
            let response = OffsetFetchResponse::default().with_topics(vec![
                OffsetFetchResponseTopic::default()
                    .with_name(name)
                    .with_partitions(vec![
                        OffsetFetchResponsePartition::default().with_committed_offset(committed),
                    ]),
            ]);
            Ok(response.into())
        }))
    }

    /// Applied at start (logged now); the answer comes after the delay in the transactional
    /// id field (unused otherwise here).
    fn produce(&self, request: ProduceRequest) -> Dispatch {
        let tag = request.timeout_ms;
        let delay = delay_of(request.transactional_id.as_ref().map_or("", |t| &t.0));
        {
            let mut l = self.ledger.lock().expect("ledger");
            l.applied.push(format!("p{tag}"));
            l.produce_in_flight += 1;
            l.produce_max_in_flight = l.produce_max_in_flight.max(l.produce_in_flight);
        }
        let ledger = self.ledger.clone();
        Dispatch::Respond(Box::pin(async move {
            tokio::time::sleep(delay).await;
            ledger.lock().expect("ledger").produce_in_flight -= 1;
            Ok(ProduceResponse::default().into())
        }))
    }
}

#[async_trait::async_trait]
impl KafkaHandler for LedgerHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        LEDGER_APIS.to_vec()
    }

    async fn start(&self, _ctx: RequestContext, request: RequestKind) -> Dispatch {
        match request {
            RequestKind::OffsetCommit(r) => self.commit(r),
            RequestKind::OffsetFetch(r) => self.fetch(r),
            RequestKind::Produce(r) => self.produce(r),
            _ => Dispatch::Respond(Box::pin(async {
                Err(HandlerError::Fatal("not served".into()))
            })),
        }
    }
}

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str("t"))
}

fn commit_request(offset: i64, delay_ms: u64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(StrBytes::from_static_str("g").into())
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_committed_offset(offset)
                        .with_committed_metadata(Some(StrBytes::from_string(format!(
                            "delay-{delay_ms}"
                        )))),
                ]),
        ])
}

fn fetch_request() -> OffsetFetchRequest {
    OffsetFetchRequest::default()
        .with_group_id(StrBytes::from_static_str("g").into())
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(topic())
                .with_partition_indexes(vec![0]),
        ]))
}

fn produce_request(tag: i32, delay_ms: u64) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(tag)
        .with_transactional_id(Some(
            StrBytes::from_string(format!("delay-{delay_ms}")).into(),
        ))
}

/// Appends one framed request to `buf`.
fn push<R: Request>(buf: &mut BytesMut, version: i16, correlation_id: i32, request: &R) {
    let frame = encode_request(version, correlation_id, request);
    buf.put_u32(frame.len() as u32);
    buf.put_slice(&frame);
}

/// A deterministic jitter in 0..5 ms.
fn jitter(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed % 5
}

async fn ledger_server() -> (TestServer, Arc<Mutex<Ledger>>) {
    let handler = Arc::new(LedgerHandler::default());
    let ledger = handler.ledger.clone();
    let config = WireConfig {
        max_inflight_per_connection: 64,
        ..WireConfig::default()
    };
    (TestServer::start(handler, config).await, ledger)
}

#[tokio::test]
async fn pipelined_offset_commits_take_effect_in_arrival_order() {
    const ROUNDS: usize = 5;
    const COMMITS: i64 = 200;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..ROUNDS {
        let (server, ledger) = ledger_server().await;
        let mut stream = server.connect().await;
        let mut all = BytesMut::new();
        for offset in 1..=COMMITS {
            // Earlier commits are slower: without ordering, later ones would land first.
            let delay = if offset % 7 == 1 { 8 } else { 0 } + jitter(&mut seed);
            push(&mut all, 2, offset as i32, &commit_request(offset, delay));
        }
        write_all(&mut stream, &all).await;
        for offset in 1..=COMMITS {
            let frame = expect_frame(&mut stream).await;
            let (correlation_id, _) = decode_response::<OffsetCommitRequest>(2, frame);
            assert_eq!(
                correlation_id, offset as i32,
                "round {round}: response order"
            );
        }
        {
            let l = ledger.lock().expect("ledger");
            assert_eq!(
                l.committed, COMMITS,
                "round {round}: the last commit must win"
            );
            let expected: Vec<String> = (1..=COMMITS).map(|o| format!("c{o}")).collect();
            assert_eq!(
                l.applied, expected,
                "round {round}: commits applied out of order"
            );
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn a_read_pipelined_after_a_write_sees_it() {
    let (server, _ledger) = ledger_server().await;
    let mut stream = server.connect().await;
    let mut all = BytesMut::new();
    push(&mut all, 2, 1, &commit_request(41, 0));
    push(&mut all, 2, 2, &commit_request(42, 60));
    push(&mut all, 1, 3, &fetch_request());
    write_all(&mut stream, &all).await;
    for correlation_id in 1..=2 {
        let frame = expect_frame(&mut stream).await;
        assert_eq!(
            decode_response::<OffsetCommitRequest>(2, frame).0,
            correlation_id
        );
    }
    let frame = expect_frame(&mut stream).await;
    let (correlation_id, response) = decode_response::<OffsetFetchRequest>(1, frame);
    assert_eq!(correlation_id, 3);
    assert_eq!(response.topics[0].partitions[0].committed_offset, 42);
    server.stop().await;
}

#[tokio::test]
async fn produce_requests_stay_pipelined_but_wait_for_an_earlier_commit() {
    let (server, ledger) = ledger_server().await;
    let mut stream = server.connect().await;
    let mut all = BytesMut::new();
    push(&mut all, 3, 1, &produce_request(1, 100));
    push(&mut all, 3, 2, &produce_request(2, 100));
    push(&mut all, 2, 3, &commit_request(7, 30));
    push(&mut all, 3, 4, &produce_request(4, 100));
    push(&mut all, 3, 5, &produce_request(5, 100));
    write_all(&mut stream, &all).await;
    for correlation_id in 1..=5 {
        let frame = expect_frame(&mut stream).await;
        let got = if correlation_id == 3 {
            decode_response::<OffsetCommitRequest>(2, frame).0
        } else {
            decode_response::<ProduceRequest>(3, frame).0
        };
        assert_eq!(got, correlation_id);
    }
    {
        let l = ledger.lock().expect("ledger");
        assert_eq!(l.applied, ["p1", "p2", "c7", "p4", "p5"]);
        // Produce is applied when started, so the commit waited for neither produce's answer,
        // and the produces after it did not wait for each other's answers either.
        assert!(
            l.produce_max_in_flight >= 3,
            "produce requests were serialized: at most {} in flight",
            l.produce_max_in_flight
        );
    }
    server.stop().await;
}

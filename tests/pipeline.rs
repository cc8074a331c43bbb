//! The whole produce → sequence → fetch pipeline in one process, wired as `kafscale
//! standalone` wires it (ingest buffer and flusher, indexer, fetch service, one Router on one
//! Kafka listener) but on in-memory stores, driven over real sockets with requests encoded by
//! the `kafka-protocol` crate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiVersionsRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DescribeGroupsRequest, FetchRequest, FetchResponse,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafscale_fetch::{
    FetchConfig, FetchHandler, FetchService, GroupConfig, GroupHandler, GroupService,
    GroupServiceConfig,
};
use kafscale_indexer::{Indexer, IndexerConfig};
use kafscale_ingest::{IngestConfig, IngestHandler, SegmentBuffer};
use kafscale_shared::catalog::Catalog;
use kafscale_shared::meta_store::{MemoryMetaStore, MetaStore};
use kafscale_shared::object_store::{MemoryObjectStore, ObjectStore};
use kafscale_shared::sequencer::Sequencer;
use kafscale_shared::topic_api::{TopicApi, TopicSettings, node_id_for_addr};
use kafscale_shared::topic_handler::TopicHandler;
use kafscale_shared::watermarks::Watermarks;
use kafscale_shared::wire::{KafkaHandler, KafkaServer, Router, WireConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bound on any single exchange with the server.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;
const LIST_OFFSETS_V: i16 = 7;
const METADATA_V: i16 = 12;
const CREATE_TOPICS_V: i16 = 7;

// Kafka error codes.
const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REQUIRED_ACKS: i16 = 21;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_RECORD: i16 = 87;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;

// ---------------------------------------------------------------------------------------------
// The in-process cluster
// ---------------------------------------------------------------------------------------------

struct Options {
    auto_create_topics: bool,
    default_partitions: i32,
    fetch: FetchConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            auto_create_topics: true,
            default_partitions: 1,
            fetch: FetchConfig::default(),
        }
    }
}

/// Every tier of standalone mode on in-memory stores, serving one listener.
struct Pipeline {
    addr: SocketAddr,
    catalog: Arc<Catalog>,
    objects: Arc<dyn ObjectStore>,
    indexer: Arc<Indexer>,
    shutdown: CancellationToken,
    flusher_shutdown: CancellationToken,
    server: JoinHandle<()>,
    flusher: JoinHandle<()>,
}

impl Pipeline {
    async fn start(options: Options) -> Pipeline {
        let objects: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
        let meta: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
        let catalog = Arc::new(Catalog::new(meta));
        let watermarks = Arc::new(Watermarks::new());
        let indexer = Indexer::start(
            catalog.clone(),
            watermarks.clone(),
            IndexerConfig {
                owner_id: "pipeline-test".into(),
                owner_addr: "in-process".into(),
                lease_ttl: Duration::from_secs(30),
                shard_count: 1,
                ..IndexerConfig::default()
            },
        )
        .await
        .expect("indexer");
        let buffer = SegmentBuffer::new(IngestConfig::default());
        let fetch = FetchService::new(
            catalog.clone(),
            objects.clone(),
            watermarks.clone(),
            options.fetch.clone(),
        );
        // The advertised address needs the port, as in standalone mode: bind first.
        let server = KafkaServer::bind("127.0.0.1:0".parse().expect("addr"), WireConfig::default())
            .await
            .expect("bind kafka listener");
        let addr = server.local_addr().expect("local addr");
        let topics = TopicApi::new(
            catalog.clone(),
            TopicSettings {
                advertised_host: addr.ip().to_string(),
                advertised_port: addr.port() as i32,
                auto_create_topics: options.auto_create_topics,
                default_partitions: options.default_partitions,
                cluster_id: "kafscale-pipeline-test".into(),
                node_id: node_id_for_addr(&addr.to_string()),
            },
        );
        let shutdown = CancellationToken::new();
        // No initial rebalance delay: single-member groups form at once.
        let group_config = GroupServiceConfig {
            groups: GroupConfig {
                initial_rebalance_delay: Duration::ZERO,
                ..GroupConfig::default()
            },
            ..GroupServiceConfig::default()
        };
        let (groups, _groups_task) =
            GroupService::start(topics.clone(), group_config, shutdown.clone()).await;
        let sequencer: Arc<dyn Sequencer> = indexer.clone();
        let router: Arc<dyn KafkaHandler> = Arc::new(Router::new(vec![
            Arc::new(TopicHandler::new(topics.clone())),
            Arc::new(IngestHandler::new(
                topics,
                buffer.clone(),
                sequencer.clone(),
            )),
            Arc::new(FetchHandler::new(fetch)),
            Arc::new(GroupHandler::new(groups)),
        ]));
        let flusher_shutdown = CancellationToken::new();
        let flusher =
            tokio::spawn(buffer.run_flusher(objects.clone(), sequencer, flusher_shutdown.clone()));
        let server = tokio::spawn(server.run(router, shutdown.clone()));
        Pipeline {
            addr,
            catalog,
            objects,
            indexer,
            shutdown,
            flusher_shutdown,
            server,
            flusher,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Stops as standalone mode does: connections stop reading, the flusher flushes, all
    /// tasks end.
    async fn stop(self) {
        self.shutdown.cancel();
        self.flusher_shutdown.cancel();
        tokio::time::timeout(IO_TIMEOUT, async {
            self.flusher.await.expect("flusher task");
            self.server.await.expect("server task");
        })
        .await
        .expect("the pipeline did not stop");
    }
}

// ---------------------------------------------------------------------------------------------
// A raw Kafka client
// ---------------------------------------------------------------------------------------------

struct Client {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Client {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Sends a request without waiting; returns its correlation id.
    async fn send<R: Request>(&mut self, version: i16, request: &R) -> i32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("pipeline-test")))
            .encode(&mut body, R::header_version(version))
            .expect("encode header");
        request.encode(&mut body, version).expect("encode request");
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_u32(body.len() as u32);
        frame.put_slice(&body);
        tokio::time::timeout(IO_TIMEOUT, self.stream.write_all(&frame))
            .await
            .expect("write timed out")
            .expect("write");
        correlation_id
    }

    async fn read_frame(&mut self) -> Bytes {
        tokio::time::timeout(IO_TIMEOUT, async {
            let len = self.stream.read_u32().await.expect("response length");
            let mut frame = vec![0u8; len as usize];
            self.stream
                .read_exact(&mut frame)
                .await
                .expect("response body");
            Bytes::from(frame)
        })
        .await
        .expect("no response within the timeout")
    }

    /// Reads the next response, which must answer `correlation_id`.
    async fn recv<R: Request>(&mut self, version: i16, correlation_id: i32) -> R::Response {
        let mut frame = self.read_frame().await;
        let header = ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .expect("response header");
        assert_eq!(header.correlation_id, correlation_id, "response order");
        let response =
            <R::Response as Decodable>::decode(&mut frame, version).expect("response body");
        assert_eq!(frame.remaining(), 0, "bytes left after the response");
        response
    }

    async fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        let correlation_id = self.send(version, request).await;
        self.recv::<R>(version, correlation_id).await
    }

    async fn create_topic(&mut self, topic: &str, partitions: i32) {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(name(topic))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1),
            ])
            .with_timeout_ms(5000);
        let response = self.call(CREATE_TOPICS_V, &request).await;
        assert_eq!(response.topics.len(), 1);
        let t = &response.topics[0];
        assert_eq!(t.error_code, 0, "create {topic}: {:?}", t.error_message);
        assert_eq!(t.num_partitions, partitions);
    }

    async fn produce(
        &mut self,
        acks: i16,
        topic: &str,
        parts: Vec<(i32, Bytes)>,
    ) -> ProduceResponse {
        self.call(PRODUCE_V, &produce_request(acks, topic, parts))
            .await
    }

    /// Produces one batch with acks=-1 and returns (error code, base offset).
    async fn produce_one(&mut self, topic: &str, partition: i32, batch: Bytes) -> (i16, i64) {
        let response = self.produce(-1, topic, vec![(partition, batch)]).await;
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(p.index, partition);
        (p.error_code, p.base_offset)
    }

    async fn fetch(&mut self, request: &FetchRequest) -> FetchResponse {
        self.call(FETCH_V, request).await
    }

    /// ListOffsets for one partition: (error code, offset, timestamp).
    async fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> (i16, i64, i64) {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_timestamp(timestamp),
                    ]),
            ]);
        let response = self.call(LIST_OFFSETS_V, &request).await;
        let p = &response.topics[0].partitions[0];
        assert_eq!(p.partition_index, partition);
        (p.error_code, p.offset, p.timestamp)
    }

    /// Every record of a partition from `from` up to the high watermark, fetched in pieces.
    async fn fetch_all(&mut self, topic: &str, partition: i32, from: i64) -> Vec<FetchedBatch> {
        let (_, high_watermark, _) = self.list_offset(topic, partition, -1).await;
        let mut out: Vec<FetchedBatch> = Vec::new();
        let mut next = from;
        while next < high_watermark {
            let response = self
                .fetch(&fetch_request(
                    10,
                    1,
                    1 << 20,
                    vec![(topic, partition, next, 64 * 1024)],
                ))
                .await;
            let p = partition_data(&response, 0);
            assert_eq!(p.error_code, 0, "fetch {topic}/{partition} at {next}");
            let batches = decode_batches(p.records.clone().unwrap_or_default());
            assert!(
                !batches.is_empty(),
                "no progress at offset {next} below {high_watermark}"
            );
            for b in batches {
                next = b.next_offset();
                out.push(b);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and records
// ---------------------------------------------------------------------------------------------

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    key: Option<Bytes>,
    value: Option<Bytes>,
    timestamp: i64,
}

fn rec(key: &str, value: &str, timestamp: i64) -> Rec {
    Rec {
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        timestamp,
    }
}

/// The idempotence fields of a batch.
#[derive(Debug, Clone, Copy)]
struct Idempotence {
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
}

/// Encodes `records` as one v2 batch with the independent `kafka-protocol` encoder.
fn batch(records: &[Rec], idempotence: Option<Idempotence>) -> Bytes {
    let encoded: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: idempotence.map(|p| p.producer_id).unwrap_or(-1),
            producer_epoch: idempotence.map(|p| p.epoch).unwrap_or(-1),
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder cuts a new batch when offset - sequence changes: count up always.
            sequence: idempotence.map(|p| p.base_sequence).unwrap_or(0) + i as i32,
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &encoded,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    let bytes = buf.freeze();
    assert_eq!(
        u32::from_be_bytes([bytes[57], bytes[58], bytes[59], bytes[60]]) as usize,
        records.len(),
        "the encoder produced more than one batch"
    );
    bytes
}

/// `n` records whose keys name them (`tag-i`), with `value_len`-byte values.
fn tagged(tag: &str, n: usize, value_len: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec {
            key: Some(Bytes::from(format!("{tag}-{i}"))),
            value: Some(Bytes::from(vec![b'a' + (i % 26) as u8; value_len])),
            timestamp: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

fn produce_request(acks: i16, topic: &str, parts: Vec<(i32, Bytes)>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(
                    parts
                        .into_iter()
                        .map(|(index, records)| {
                            PartitionProduceData::default()
                                .with_index(index)
                                .with_records(Some(records))
                        })
                        .collect(),
                ),
        ])
}

/// A Fetch of (topic, partition, offset, partition_max_bytes) entries.
fn fetch_request(
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
    partitions: Vec<(&str, i32, i64, i32)>,
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (topic, partition, offset, partition_max_bytes) in partitions {
        let p = FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(partition_max_bytes);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(name(topic))
                    .with_partitions(vec![p]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// The base offsets of the batches in the `i`-th partition of the response.
fn bases(r: &FetchResponse, i: usize) -> Vec<i64> {
    decode_batches(partition_data(r, i).records.clone().unwrap_or_default())
        .iter()
        .map(|b| b.base_offset)
        .collect()
}

/// The `i`-th partition of the response, across topics in order.
fn partition_data(
    response: &FetchResponse,
    i: usize,
) -> &kafka_protocol::messages::fetch_response::PartitionData {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .nth(i)
        .expect("partition in the fetch response")
}

/// A batch as fetched: the base offset on the wire and its decoded records.
#[derive(Debug)]
struct FetchedBatch {
    base_offset: i64,
    size: usize,
    records: Vec<Record>,
}

impl FetchedBatch {
    fn next_offset(&self) -> i64 {
        self.records
            .last()
            .map(|r| r.offset + 1)
            .unwrap_or(self.base_offset)
    }
}

/// Splits fetched record bytes into whole batches and decodes each (checking its CRC).
fn decode_batches(mut records: Bytes) -> Vec<FetchedBatch> {
    let mut out = Vec::new();
    while records.has_remaining() {
        assert!(
            records.len() >= 12,
            "partial batch header in a fetch response"
        );
        let base_offset = i64::from_be_bytes(records[..8].try_into().expect("8 bytes"));
        let size = 12 + i32::from_be_bytes(records[8..12].try_into().expect("4 bytes")) as usize;
        assert!(records.len() >= size, "partial batch in a fetch response");
        let mut one = records.split_to(size);
        let set = RecordBatchDecoder::decode(&mut one).expect("fetched batch decodes");
        assert!(!one.has_remaining());
        assert_eq!(
            set.records.first().map(|r| r.offset),
            Some(base_offset),
            "record offsets follow the patched base offset"
        );
        out.push(FetchedBatch {
            base_offset,
            size,
            records: set.records,
        });
    }
    out
}

fn as_rec(r: &Record) -> Rec {
    Rec {
        key: r.key.clone(),
        value: r.value.clone(),
        timestamp: r.timestamp,
    }
}

/// The records of `batches` with their offsets, in order.
fn offsets_and_records(batches: &[FetchedBatch]) -> Vec<(i64, Rec)> {
    batches
        .iter()
        .flat_map(|b| b.records.iter().map(|r| (r.offset, as_rec(r))))
        .collect()
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 30s"))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_produce_gets_contiguous_offsets_and_fetch_returns_exactly_what_was_produced() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut admin = pipeline.client().await;
    admin.create_topic("orders", 3).await;

    // Two connections, each pipelining 12 produce requests; each request carries a batch for
    // two of the three partitions, of 1-5 records.
    let mut producers = Vec::new();
    for conn in 0..2usize {
        let mut client = pipeline.client().await;
        producers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut ids = Vec::new();
            for req in 0..12usize {
                let mut parts = Vec::new();
                for k in 0..2usize {
                    let partition = ((req + k + conn) % 3) as i32;
                    let n = 1 + (req * 7 + k * 3 + conn) % 5;
                    let records = tagged(&format!("c{conn}-r{req}-p{partition}"), n, 20 + req);
                    parts.push((partition, batch(&records, None)));
                    sent.push((partition, records));
                }
                let request = produce_request(-1, "orders", parts);
                ids.push(client.send(PRODUCE_V, &request).await);
            }
            // Answers come back in request order; collect (partition, base offset, count).
            let mut acked = Vec::new();
            for id in ids {
                let response = client.recv::<ProduceRequest>(PRODUCE_V, id).await;
                for p in &response.responses[0].partition_responses {
                    assert_eq!(p.error_code, 0, "{:?}", p.error_message);
                    acked.push((p.index, p.base_offset));
                }
            }
            (sent, acked)
        }));
    }
    // (partition, base offset) -> records produced at that offset.
    let mut produced: BTreeMap<(i32, i64), Vec<Rec>> = BTreeMap::new();
    for task in producers {
        let (sent, acked) = timed("producers", task).await.expect("producer task");
        assert_eq!(sent.len(), acked.len());
        // One connection's batches to one partition are appended in request order.
        let mut last_per_partition: BTreeMap<i32, i64> = BTreeMap::new();
        for ((partition, records), (index, base)) in sent.into_iter().zip(acked) {
            assert_eq!(partition, index);
            if let Some(prev) = last_per_partition.insert(partition, base) {
                assert!(base > prev, "offsets of one connection went backwards");
            }
            assert!(
                produced.insert((partition, base), records).is_none(),
                "offset {base} acked twice"
            );
        }
    }
    for partition in 0..3 {
        // Base offsets tile the partition from 0 with no gap and no overlap.
        let mut expected_next = 0;
        for ((_, base), records) in produced.range((partition, 0)..(partition, i64::MAX)) {
            assert_eq!(
                *base, expected_next,
                "partition {partition}: gap or overlap"
            );
            expected_next += records.len() as i64;
        }
        let (error, latest, _) = admin.list_offset("orders", partition, -1).await;
        assert_eq!((error, latest), (0, expected_next));

        // Fetch returns every batch with its real base offset and the records as produced.
        let batches = admin.fetch_all("orders", partition, 0).await;
        let want: Vec<(i64, Rec)> = produced
            .range((partition, 0)..(partition, i64::MAX))
            .flat_map(|((_, base), records)| {
                records
                    .iter()
                    .enumerate()
                    .map(move |(i, r)| (base + i as i64, r.clone()))
            })
            .collect();
        let bases: Vec<i64> = batches.iter().map(|b| b.base_offset).collect();
        let want_bases: Vec<i64> = produced
            .range((partition, 0)..(partition, i64::MAX))
            .map(|((_, base), _)| *base)
            .collect();
        assert_eq!(
            bases, want_bases,
            "partition {partition}: batch base offsets"
        );
        assert_eq!(
            offsets_and_records(&batches),
            want,
            "partition {partition}: records"
        );
    }
    pipeline.stop().await;
}

#[tokio::test]
async fn fetch_honours_partition_max_bytes_and_max_bytes_with_whole_batches() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("sized", 2).await;
    // Five batches of equal size in each partition.
    for partition in 0..2 {
        for i in 0..5 {
            let (error, base) = c
                .produce_one(
                    "sized",
                    partition,
                    batch(&tagged(&format!("b{i}"), 10, 100), None),
                )
                .await;
            assert_eq!((error, base), (0, i * 10));
        }
    }
    let one = c.fetch_all("sized", 0, 0).await;
    assert_eq!(one.len(), 5);
    let size = one[0].size as i32;
    assert!(one.iter().all(|b| b.size as i32 == size));

    fn fetch(parts: Vec<(&str, i32, i64, i32)>, max_bytes: i32) -> FetchRequest {
        fetch_request(0, 1, max_bytes, parts)
    }

    // partition_max_bytes of 2.5 batches: two whole batches.
    let r = c
        .fetch(&fetch(vec![("sized", 0, 0, size * 5 / 2)], 1 << 20))
        .await;
    assert_eq!(bases(&r, 0), vec![0, 10]);
    // Exactly two batches' worth: still two.
    let r = c
        .fetch(&fetch(vec![("sized", 0, 0, size * 2)], 1 << 20))
        .await;
    assert_eq!(bases(&r, 0), vec![0, 10]);
    // Less than one batch in the first partition: that one batch anyway.
    let r = c.fetch(&fetch(vec![("sized", 0, 20, 1)], 1 << 20)).await;
    assert_eq!(bases(&r, 0), vec![20]);
    // ... but not in a later partition once the response holds data.
    let r = c
        .fetch(&fetch(
            vec![("sized", 0, 0, size), ("sized", 1, 0, 1)],
            1 << 20,
        ))
        .await;
    assert_eq!(bases(&r, 0), vec![0]);
    assert_eq!(bases(&r, 1), Vec::<i64>::new());
    assert_eq!(partition_data(&r, 1).error_code, 0);
    assert_eq!(partition_data(&r, 1).high_watermark, 50);
    // A fetch offset inside a batch returns that whole batch.
    let r = c.fetch(&fetch(vec![("sized", 1, 13, size)], 1 << 20)).await;
    assert_eq!(bases(&r, 0), vec![10]);

    // max_bytes bounds the whole response: 2.5 batches over two partitions.
    let r = c
        .fetch(&fetch(
            vec![("sized", 0, 0, 1 << 20), ("sized", 1, 0, 1 << 20)],
            size * 5 / 2,
        ))
        .await;
    assert_eq!(bases(&r, 0), vec![0, 10]);
    assert_eq!(bases(&r, 1), Vec::<i64>::new());
    // 3.5 batches: the second partition gets what is left, in whole batches.
    let r = c
        .fetch(&fetch(
            vec![("sized", 0, 30, 1 << 20), ("sized", 1, 0, 1 << 20)],
            size * 7 / 2,
        ))
        .await;
    assert_eq!(bases(&r, 0), vec![30, 40]);
    assert_eq!(bases(&r, 1), vec![0]);
    // max_bytes below one batch: the first batch still comes back.
    let r = c.fetch(&fetch(vec![("sized", 0, 40, 1 << 20)], 10)).await;
    assert_eq!(bases(&r, 0), vec![40]);
    pipeline.stop().await;
}

#[tokio::test]
async fn a_batch_over_the_limits_comes_first_and_alone() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("big", 3).await;
    for partition in 1..3 {
        let (error, _) = c
            .produce_one("big", partition, batch(&tagged("b", 10, 100), None))
            .await;
        assert_eq!(error, 0);
    }
    let size = c.fetch_all("big", 1, 0).await[0].size as i32;
    // Partition 0 is empty; partition 1's batch exceeds its limit; partition 2's fits. Kafka
    // returns partition 1's batch (the first partition with records) and nothing after it.
    let r = c
        .fetch(&fetch_request(
            0,
            1,
            1 << 20,
            vec![
                ("big", 0, 0, 1 << 20),
                ("big", 1, 0, size / 2),
                ("big", 2, 0, 1 << 20),
            ],
        ))
        .await;
    assert_eq!(bases(&r, 0), Vec::<i64>::new());
    assert_eq!(bases(&r, 1), vec![0]);
    assert_eq!(bases(&r, 2), Vec::<i64>::new());
    assert_eq!(partition_data(&r, 2).high_watermark, 10);
    pipeline.stop().await;
}

#[tokio::test]
async fn the_process_fetch_memory_bounds_a_response() {
    let size = batch(&tagged("b0", 10, 100), None).len();
    // Room for two and a half batches in the whole process: a fetch that asks for 1 MiB gets
    // two, from the same data.
    let small = Pipeline::start(Options {
        fetch: FetchConfig {
            memory_bytes: size * 5 / 2,
            ..FetchConfig::default()
        },
        ..Options::default()
    })
    .await;
    let mut c = small.client().await;
    c.create_topic("sized", 1).await;
    for i in 0..5 {
        let (error, _) = c
            .produce_one("sized", 0, batch(&tagged(&format!("b{i}"), 10, 100), None))
            .await;
        assert_eq!(error, 0);
    }
    let r = c
        .fetch(&fetch_request(
            0,
            1,
            1 << 20,
            vec![("sized", 0, 0, 1 << 20)],
        ))
        .await;
    assert_eq!(bases(&r, 0), vec![0, 10]);
    assert_eq!(r.throttle_time_ms, 0);
    small.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_when_another_connection_produces() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut admin = pipeline.client().await;
    admin.create_topic("wake", 1).await;
    let mut consumer = pipeline.client().await;
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let r = consumer
            .fetch(&fetch_request(
                5000,
                1,
                1 << 20,
                vec![("wake", 0, 0, 1 << 20)],
            ))
            .await;
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the fetch returned before any data existed"
    );
    let (error, base) = admin
        .produce_one("wake", 0, batch(&[rec("k", "woken", 42)], None))
        .await;
    assert_eq!((error, base), (0, 0));
    let (response, elapsed) = timed("long poll", poll).await.expect("consumer task");
    let p = partition_data(&response, 0);
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 1);
    let batches = decode_batches(p.records.clone().unwrap_or_default());
    assert_eq!(
        offsets_and_records(&batches),
        vec![(0, rec("k", "woken", 42))]
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "the long poll was not woken by the produce (returned after {elapsed:?} of 5 s)"
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn a_long_poll_with_nothing_arriving_returns_empty_after_max_wait() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("quiet", 1).await;
    c.produce_one("quiet", 0, batch(&[rec("k", "v", 1)], None))
        .await;
    let started = Instant::now();
    let r = c
        .fetch(&fetch_request(
            200,
            1,
            1 << 20,
            vec![("quiet", 0, 1, 1 << 20)],
        ))
        .await;
    let elapsed = started.elapsed();
    let p = partition_data(&r, 0);
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 1);
    assert!(p.records.as_ref().is_none_or(|r| r.is_empty()));
    assert!(
        elapsed >= Duration::from_millis(190),
        "returned after {elapsed:?}, before max_wait_ms=200"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "returned after {elapsed:?}"
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn fetching_past_the_high_watermark_is_offset_out_of_range() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("edge", 1).await;
    c.produce_one("edge", 0, batch(&tagged("x", 3, 5), None))
        .await;
    for offset in [4i64, 1000, -1] {
        let r = c
            .fetch(&fetch_request(
                0,
                1,
                1 << 20,
                vec![("edge", 0, offset, 1 << 20)],
            ))
            .await;
        let p = partition_data(&r, 0);
        assert_eq!(p.error_code, OFFSET_OUT_OF_RANGE, "offset {offset}");
        assert_eq!(p.high_watermark, 3, "offset {offset}");
        assert!(p.records.as_ref().is_none_or(|r| r.is_empty()));
    }
    // At the high watermark: no error, nothing yet.
    let r = c
        .fetch(&fetch_request(0, 1, 1 << 20, vec![("edge", 0, 3, 1 << 20)]))
        .await;
    let p = partition_data(&r, 0);
    assert_eq!(p.error_code, 0);
    assert!(p.records.as_ref().is_none_or(|r| r.is_empty()));
    // Unknown partition and topic.
    let r = c
        .fetch(&fetch_request(
            0,
            1,
            1 << 20,
            vec![("edge", 1, 0, 1 << 20), ("no-such-topic", 0, 0, 1 << 20)],
        ))
        .await;
    assert_eq!(partition_data(&r, 0).error_code, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(partition_data(&r, 1).error_code, UNKNOWN_TOPIC_OR_PARTITION);
    pipeline.stop().await;
}

#[tokio::test]
async fn list_offsets_earliest_latest_and_by_timestamp() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("times", 1).await;
    // Offsets 0-2 at 1000-1002, 3-7 at 2000-2004 (out of order inside), 8 at 3000.
    let b1: Vec<Rec> = (0..3).map(|i| rec("a", "1", 1000 + i)).collect();
    let b2: Vec<Rec> = [2000, 2003, 2001, 2004, 2002]
        .into_iter()
        .map(|t| rec("b", "2", t))
        .collect();
    let b3 = vec![rec("c", "3", 3000)];
    for (b, want_base) in [(b1, 0), (b2, 3), (b3, 8)] {
        assert_eq!(
            c.produce_one("times", 0, batch(&b, None)).await,
            (0, want_base)
        );
    }
    assert_eq!(c.list_offset("times", 0, -2).await, (0, 0, -1));
    assert_eq!(c.list_offset("times", 0, -1).await, (0, 9, -1));
    // The first offset whose timestamp is at or after the target, with that timestamp.
    for (target, offset, timestamp) in [
        (0i64, 0i64, 1000i64),
        (1000, 0, 1000),
        (1001, 1, 1001),
        (1500, 3, 2000),
        (2002, 4, 2003),
        (2004, 6, 2004),
        (2005, 8, 3000),
        (3000, 8, 3000),
    ] {
        assert_eq!(
            c.list_offset("times", 0, target).await,
            (0, offset, timestamp),
            "timestamp {target}"
        );
    }
    // Past every record: no offset.
    assert_eq!(c.list_offset("times", 0, 3001).await, (0, -1, -1));
    // Max timestamp (v7+): the record holding the largest timestamp.
    assert_eq!(c.list_offset("times", 0, -3).await, (0, 8, 3000));
    // Unknown partition.
    assert_eq!(
        c.list_offset("times", 5, -1).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn a_batch_with_a_bad_crc_is_corrupt_message_and_nothing_is_appended() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("crc", 2).await;
    let good = batch(&tagged("ok", 4, 10), None);
    let mut bad = BytesMut::from(&batch(&tagged("bad", 4, 10), None)[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0x5a;
    // The corrupt batch alone, and beside a good one in the same request.
    assert_eq!(
        c.produce_one("crc", 0, bad.clone().freeze()).await.0,
        CORRUPT_MESSAGE
    );
    let response = c
        .produce(-1, "crc", vec![(0, bad.freeze()), (1, good.clone())])
        .await;
    let parts = &response.responses[0].partition_responses;
    assert_eq!((parts[0].index, parts[0].error_code), (0, CORRUPT_MESSAGE));
    assert_eq!(parts[0].base_offset, -1);
    assert_eq!(
        (parts[1].index, parts[1].error_code, parts[1].base_offset),
        (1, 0, 0)
    );
    assert_eq!(c.list_offset("crc", 0, -1).await, (0, 0, -1));
    assert_eq!(c.list_offset("crc", 1, -1).await, (0, 4, -1));
    let r = c
        .fetch(&fetch_request(0, 1, 1 << 20, vec![("crc", 0, 0, 1 << 20)]))
        .await;
    assert!(
        partition_data(&r, 0)
            .records
            .as_ref()
            .is_none_or(|r| r.is_empty())
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn produce_with_acks_0_gets_no_response_but_the_data_is_stored() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("fire", 1).await;
    let records = tagged("f", 3, 8);
    c.send(
        PRODUCE_V,
        &produce_request(0, "fire", vec![(0, batch(&records, None))]),
    )
    .await;
    // The next frame on the connection answers the next request, not the produce.
    let id = c.send(0, &ApiVersionsRequest::default()).await;
    let response = c.recv::<ApiVersionsRequest>(0, id).await;
    assert_eq!(response.error_code, 0);
    // The data arrives without an acknowledgement.
    let deadline = Instant::now() + IO_TIMEOUT;
    while c.list_offset("fire", 0, -1).await.1 < 3 {
        assert!(
            Instant::now() < deadline,
            "acks=0 data never became visible"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let batches = c.fetch_all("fire", 0, 0).await;
    let want: Vec<(i64, Rec)> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as i64, r))
        .collect();
    assert_eq!(offsets_and_records(&batches), want);
    pipeline.stop().await;
}

#[tokio::test]
async fn produce_to_an_unknown_topic_without_auto_create_is_unknown_topic() {
    let pipeline = Pipeline::start(Options {
        auto_create_topics: false,
        ..Options::default()
    })
    .await;
    let mut c = pipeline.client().await;
    let (error, base) = c
        .produce_one("missing", 0, batch(&[rec("k", "v", 1)], None))
        .await;
    assert_eq!((error, base), (UNKNOWN_TOPIC_OR_PARTITION, -1));
    // Metadata does not create it either.
    let response: MetadataResponse = c
        .call(
            METADATA_V,
            &MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name("missing"))),
                ]))
                .with_allow_auto_topic_creation(true),
        )
        .await;
    assert_eq!(response.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    // A partition out of range of an existing topic.
    c.create_topic("small", 1).await;
    assert_eq!(
        c.produce_one("small", 1, batch(&[rec("k", "v", 1)], None))
            .await
            .0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn metadata_for_an_unknown_topic_creates_it_when_auto_create_is_on() {
    let pipeline = Pipeline::start(Options {
        default_partitions: 4,
        ..Options::default()
    })
    .await;
    let mut c = pipeline.client().await;
    let ask = |topic: &str, allow: bool| {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic))),
            ]))
            .with_allow_auto_topic_creation(allow)
    };
    // A client that does not allow auto-creation gets UNKNOWN_TOPIC_OR_PARTITION.
    let response: MetadataResponse = c.call(METADATA_V, &ask("fresh", false)).await;
    assert_eq!(response.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);

    let response: MetadataResponse = c.call(METADATA_V, &ask("fresh", true)).await;
    assert_eq!(response.brokers.len(), 1);
    assert_eq!(response.brokers[0].port, pipeline.addr.port() as i32);
    let t = &response.topics[0];
    assert_eq!(t.error_code, 0);
    assert_eq!(t.name.as_ref().map(|n| n.0.as_str()), Some("fresh"));
    assert_eq!(t.partitions.len(), 4);
    assert!(!t.topic_id.is_nil());
    let topic_id = t.topic_id;
    // It exists now: listed with every topic, same id, and usable.
    let all: MetadataResponse = c
        .call(METADATA_V, &MetadataRequest::default().with_topics(None))
        .await;
    let listed: Vec<_> = all
        .topics
        .iter()
        .filter(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("fresh"))
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].topic_id, topic_id);
    assert_eq!(
        c.produce_one("fresh", 3, batch(&[rec("k", "v", 1)], None))
            .await,
        (0, 0)
    );
    // Fetch v13+ addresses the topic by id.
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(3)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let r: FetchResponse = c.call(16, &request).await;
    assert_eq!(r.responses[0].topic_id, topic_id);
    let p = partition_data(&r, 0);
    assert_eq!(p.error_code, 0);
    let batches = decode_batches(p.records.clone().unwrap_or_default());
    assert_eq!(offsets_and_records(&batches), vec![(0, rec("k", "v", 1))]);
    pipeline.stop().await;
}

#[tokio::test]
async fn an_idempotent_producer_is_deduplicated_and_a_sequence_gap_is_rejected() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("idem", 1).await;
    let init = c
        .call(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        )
        .await;
    assert_eq!(init.error_code, 0);
    assert!(init.producer_id.0 >= 0);
    assert_eq!(init.producer_epoch, 0);
    let producer = |base_sequence| {
        Some(Idempotence {
            producer_id: init.producer_id.0,
            epoch: init.producer_epoch,
            base_sequence,
        })
    };
    let first = batch(&tagged("s0", 5, 10), producer(0));
    assert_eq!(c.produce_one("idem", 0, first.clone()).await, (0, 0));
    // The same batch again (a retry after a lost answer): same offset, not appended twice.
    assert_eq!(c.produce_one("idem", 0, first.clone()).await, (0, 0));
    let second = batch(&tagged("s5", 3, 10), producer(5));
    assert_eq!(c.produce_one("idem", 0, second.clone()).await, (0, 5));
    assert_eq!(c.produce_one("idem", 0, first).await, (0, 0));
    assert_eq!(c.list_offset("idem", 0, -1).await, (0, 8, -1));
    // A gap in the sequence: OUT_OF_ORDER_SEQUENCE_NUMBER, nothing appended.
    let gap = batch(&tagged("s20", 2, 10), producer(20));
    let (error, _) = c.produce_one("idem", 0, gap).await;
    assert_eq!(error, OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(c.list_offset("idem", 0, -1).await, (0, 8, -1));
    // The log holds each batch once.
    let batches = c.fetch_all("idem", 0, 0).await;
    assert_eq!(
        batches.iter().map(|b| b.base_offset).collect::<Vec<_>>(),
        vec![0, 5]
    );
    let keys: Vec<String> = batches
        .iter()
        .flat_map(|b| &b.records)
        .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(
        keys,
        [
            "s0-0", "s0-1", "s0-2", "s0-3", "s0-4", "s5-0", "s5-1", "s5-2"
        ]
    );
    assert!(
        batches
            .iter()
            .flat_map(|b| &b.records)
            .all(|r| r.producer_id == init.producer_id.0)
    );
    // The next in-order batch still goes through.
    assert_eq!(
        c.produce_one("idem", 0, batch(&tagged("s8", 1, 10), producer(8)))
            .await,
        (0, 8)
    );
    // InitProducerId naming this producer's id and epoch (as librdkafka does to start over)
    // gets a fresh producer id, as from Kafka: without a transactional id nobody can bump,
    // and so fence, another client's producer.
    let again = c
        .call(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(init.producer_id)
                .with_producer_epoch(init.producer_epoch),
        )
        .await;
    assert_eq!(again.error_code, 0);
    assert_ne!(again.producer_id, init.producer_id);
    assert_eq!(again.producer_epoch, 0);
    let fresh = Some(Idempotence {
        producer_id: again.producer_id.0,
        epoch: 0,
        base_sequence: 0,
    });
    assert_eq!(
        c.produce_one("idem", 0, batch(&tagged("e1", 2, 10), fresh))
            .await,
        (0, 9)
    );
    // The first producer was not fenced: it goes on where it was.
    assert_eq!(
        c.produce_one("idem", 0, batch(&tagged("s9", 1, 10), producer(9)))
            .await,
        (0, 11)
    );
    // A producer the partition never saw may start at any sequence (Kafka 2.5+).
    let unseen = Some(Idempotence {
        producer_id: again.producer_id.0 + 1000,
        epoch: 3,
        base_sequence: 42,
    });
    assert_eq!(
        c.produce_one("idem", 0, batch(&tagged("u42", 1, 10), unseen))
            .await,
        (0, 12)
    );
    // A known producer's new epoch starts at sequence 0 and fences the old epoch.
    let next_epoch = Some(Idempotence {
        producer_id: init.producer_id.0,
        epoch: 1,
        base_sequence: 0,
    });
    assert_eq!(
        c.produce_one("idem", 0, batch(&tagged("n0", 1, 10), next_epoch))
            .await,
        (0, 13)
    );
    let (error, _) = c
        .produce_one("idem", 0, batch(&tagged("stale", 1, 10), producer(10)))
        .await;
    assert_eq!(error, INVALID_PRODUCER_EPOCH);
    assert_eq!(c.list_offset("idem", 0, -1).await, (0, 14, -1));
    pipeline.stop().await;
}

#[tokio::test]
async fn several_batches_in_one_partition_entry_and_invalid_acks() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("multi", 1).await;
    // Two batches back to back in one partition's records: refused whole, as Kafka refuses
    // more than one v2 batch per partition (INVALID_RECORD), and nothing is appended.
    let mut two = BytesMut::new();
    two.put_slice(&batch(&tagged("one", 2, 4), None));
    two.put_slice(&batch(&tagged("two", 3, 4), None));
    let (error, _) = c.produce_one("multi", 0, two.freeze()).await;
    assert_eq!(error, INVALID_RECORD);
    assert_eq!(c.list_offset("multi", 0, -1).await, (0, 0, -1));
    assert_eq!(
        c.produce_one("multi", 0, batch(&tagged("three", 1, 4), None))
            .await,
        (0, 0)
    );
    let batches = c.fetch_all("multi", 0, 0).await;
    assert_eq!(
        batches.iter().map(|b| b.base_offset).collect::<Vec<_>>(),
        vec![0]
    );
    // acks must be -1, 0 or 1.
    let response = c
        .produce(2, "multi", vec![(0, batch(&tagged("x", 1, 4), None))])
        .await;
    assert_eq!(
        response.responses[0].partition_responses[0].error_code,
        INVALID_REQUIRED_ACKS
    );
    assert_eq!(c.list_offset("multi", 0, -1).await, (0, 1, -1));
    pipeline.stop().await;
}

#[tokio::test]
async fn every_advertised_version_of_every_api_is_answered_and_decodes() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;

    // The advertised table of the standalone router.
    let versions = c.call(3, &ApiVersionsRequest::default()).await;
    assert_eq!(versions.error_code, 0);
    let table: Vec<(i16, i16, i16)> = versions
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect();
    assert_eq!(
        table,
        vec![
            (0, 3, 11), // Produce
            (1, 4, 16), // Fetch
            (2, 1, 8),  // ListOffsets
            (3, 0, 12), // Metadata
            (8, 2, 9),  // OffsetCommit
            (9, 1, 9),  // OffsetFetch
            (10, 0, 6), // FindCoordinator
            (11, 0, 9), // JoinGroup
            (12, 0, 4), // Heartbeat
            (13, 0, 5), // LeaveGroup
            (14, 0, 5), // SyncGroup
            (15, 0, 6), // DescribeGroups
            (16, 0, 5), // ListGroups
            (18, 0, 4), // ApiVersions
            (19, 2, 7), // CreateTopics
            (20, 1, 6), // DeleteTopics
            (21, 0, 2), // DeleteRecords
            (22, 0, 4), // InitProducerId
            (32, 1, 4), // DescribeConfigs
            (33, 0, 2), // AlterConfigs
            (37, 0, 3), // CreatePartitions
            (42, 0, 2), // DeleteGroups
            (44, 0, 1), // IncrementalAlterConfigs
            (47, 0, 0), // OffsetDelete
            (50, 0, 0), // DescribeUserScramCredentials
            (51, 0, 0), // AlterUserScramCredentials
            (60, 0, 2), // DescribeCluster
        ]
    );

    config_api_sweep(&mut c).await;
    scram_credentials_sweep(&mut c).await;
    delete_records_sweep(&mut c).await;

    // CreatePartitions at every version (a topic of 1 partition, one more per version).
    c.create_topic("grow", 1).await;
    for v in 0..=3i16 {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(name("grow"))
                    .with_count(v as i32 + 2),
            ])
            .with_timeout_ms(5000);
        let response = c.call(v, &request).await;
        assert_eq!(response.results[0].error_code, 0, "CreatePartitions v{v}");
    }

    // CreateTopics and DeleteTopics at every version.
    for v in 2..=7i16 {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(name(&format!("sweep-{v}")))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ])
            .with_timeout_ms(5000);
        let response = c.call(v, &request).await;
        assert_eq!(response.topics[0].error_code, 0, "CreateTopics v{v}");
    }
    for v in 1..=6i16 {
        let topic = name(&format!("sweep-{}", v + 1));
        let mut request =
            kafka_protocol::messages::DeleteTopicsRequest::default().with_timeout_ms(5000);
        if v >= 6 {
            request.topics = vec![
                kafka_protocol::messages::delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(topic)),
            ];
        } else {
            request.topic_names = vec![topic];
        }
        let response = c.call(v, &request).await;
        assert_eq!(response.responses.len(), 1, "DeleteTopics v{v}");
        assert_eq!(response.responses[0].error_code, 0, "DeleteTopics v{v}");
    }

    c.create_topic("sweep", 1).await;
    let mut topic_id = None;
    for v in 0..=12i16 {
        let request = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("sweep"))),
        ]));
        let response = c.call(v, &request).await;
        assert_eq!(response.topics.len(), 1, "Metadata v{v}");
        assert_eq!(response.topics[0].error_code, 0, "Metadata v{v}");
        assert_eq!(response.topics[0].partitions.len(), 1, "Metadata v{v}");
        assert_eq!(response.brokers.len(), 1, "Metadata v{v}");
        if v >= 10 {
            topic_id = Some(response.topics[0].topic_id);
        }
    }
    let topic_id = topic_id.expect("topic id from Metadata v10+");
    assert!(!topic_id.is_nil());

    let mut next = 0i64;
    for v in 3..=11i16 {
        let request = produce_request(
            -1,
            "sweep",
            vec![(0, batch(&tagged(&format!("v{v}"), 2, 3), None))],
        );
        let response = c.call(v, &request).await;
        let p = &response.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, next), "Produce v{v}");
        next += 2;
    }
    for v in 1..=8i16 {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name("sweep"))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1),
                    ]),
            ]);
        let response = c.call(v, &request).await;
        let p = &response.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset), (0, next), "ListOffsets v{v}");
    }
    for v in 4..=16i16 {
        let mut request = fetch_request(0, 1, 1 << 20, vec![("sweep", 0, 2, 1 << 20)]);
        if v >= 13 {
            request.topics[0].topic = TopicName::default();
            request.topics[0].topic_id = topic_id;
        }
        let response: FetchResponse = c.call(v, &request).await;
        let p = partition_data(&response, 0);
        assert_eq!((p.error_code, p.high_watermark), (0, next), "Fetch v{v}");
        let batches = decode_batches(p.records.clone().unwrap_or_default());
        assert_eq!(
            batches.first().map(|b| b.base_offset),
            Some(2),
            "Fetch v{v}"
        );
        assert_eq!(batches.len() as i64, (next - 2) / 2, "Fetch v{v}");
    }
    for v in 0..=6i16 {
        let mut request = FindCoordinatorRequest::default().with_key_type(0);
        if v >= 4 {
            request.coordinator_keys = vec![StrBytes::from_static_str("sweep-group")];
        } else {
            request.key = StrBytes::from_static_str("sweep-group");
        }
        let response = c.call(v, &request).await;
        let (error, port) = if v >= 4 {
            assert_eq!(response.coordinators.len(), 1, "FindCoordinator v{v}");
            (
                response.coordinators[0].error_code,
                response.coordinators[0].port,
            )
        } else {
            (response.error_code, response.port)
        };
        assert_eq!(error, 0, "FindCoordinator v{v}");
        assert_eq!(port, pipeline.addr.port() as i32, "FindCoordinator v{v}");
    }
    for v in 2..=9i16 {
        let mut request = commit_request("sweep-group", -1, "", v as i64);
        request.topics[0].partitions[0].committed_metadata = Some(StrBytes::from_static_str("m"));
        let response = c.call(v, &request).await;
        assert_eq!(
            response.topics[0].partitions[0].error_code, 0,
            "OffsetCommit v{v}"
        );
    }
    for v in 1..=9i16 {
        let request = if v >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("sweep-group")))
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopics::default()
                            .with_name(name("sweep"))
                            .with_partition_indexes(vec![0]),
                    ])),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("sweep-group")))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(name("sweep"))
                        .with_partition_indexes(vec![0]),
                ]))
        };
        let response = c.call(v, &request).await;
        let (error, offset) = if v >= 8 {
            let p = &response.groups[0].topics[0].partitions[0];
            (p.error_code, p.committed_offset)
        } else {
            let p = &response.topics[0].partitions[0];
            (p.error_code, p.committed_offset)
        };
        assert_eq!((error, offset), (0, 9), "OffsetFetch v{v}");
    }
    group_membership_sweep(&mut c).await;
    for v in 0..=4i16 {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000);
        let response = c.call(v, &request).await;
        assert_eq!(response.error_code, 0, "InitProducerId v{v}");
        assert!(response.producer_id.0 >= 0, "InitProducerId v{v}");
    }
    pipeline.stop().await;
}

/// AlterUserScramCredentials and DescribeUserScramCredentials (v0 only): an upserted
/// credential is described with its mechanism and iterations, a deleted one is gone.
async fn scram_credentials_sweep(c: &mut Client) {
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    use kafka_protocol::messages::{
        AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
    };
    let user = StrBytes::from_static_str("sweep-user");
    let upsert = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(user.clone())
            .with_mechanism(2)
            .with_iterations(8192)
            .with_salt(Bytes::from_static(b"salt"))
            .with_salted_password(Bytes::from(vec![1u8; 64])),
    ]);
    let altered = c.call(0, &upsert).await;
    assert_eq!(altered.results.len(), 1);
    assert_eq!(altered.results[0].error_code, 0);
    let described = c
        .call(0, &DescribeUserScramCredentialsRequest::default())
        .await;
    assert_eq!(described.error_code, 0);
    assert_eq!(described.results.len(), 1);
    assert_eq!(described.results[0].user, user);
    let infos = &described.results[0].credential_infos;
    assert_eq!(
        infos
            .iter()
            .map(|i| (i.mechanism, i.iterations))
            .collect::<Vec<_>>(),
        [(2, 8192)]
    );
    let delete = AlterUserScramCredentialsRequest::default().with_deletions(vec![
        ScramCredentialDeletion::default()
            .with_name(user)
            .with_mechanism(2),
    ]);
    assert_eq!(c.call(0, &delete).await.results[0].error_code, 0);
    let described = c
        .call(0, &DescribeUserScramCredentialsRequest::default())
        .await;
    assert!(described.results.is_empty());
}

/// DescribeConfigs, AlterConfigs, IncrementalAlterConfigs and DescribeCluster at every
/// advertised version, each one's effect seen through the next.
/// DeleteRecords at every version: each moves the log start one record further (it answers
/// the new low watermark, and ListOffsets earliest agrees); past the high watermark is
/// OFFSET_OUT_OF_RANGE, an unknown partition UNKNOWN_TOPIC_OR_PARTITION, -1 the high watermark.
async fn delete_records_sweep(c: &mut Client) {
    use kafka_protocol::messages::DeleteRecordsRequest;
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    c.create_topic("trim", 1).await;
    for i in 0..5 {
        let (error, base) = c
            .produce_one("trim", 0, batch(&[rec("k", &format!("v{i}"), 1)], None))
            .await;
        assert_eq!((error, base), (0, i));
    }
    async fn delete(c: &mut Client, v: i16, partition: i32, offset: i64) -> (i16, i64) {
        let request = DeleteRecordsRequest::default()
            .with_topics(vec![
                DeleteRecordsTopic::default()
                    .with_name(name("trim"))
                    .with_partitions(vec![
                        DeleteRecordsPartition::default()
                            .with_partition_index(partition)
                            .with_offset(offset),
                    ]),
            ])
            .with_timeout_ms(5000);
        let response = c.call(v, &request).await;
        let p = &response.topics[0].partitions[0];
        assert_eq!(p.partition_index, partition);
        (p.error_code, p.low_watermark)
    }
    for v in 0..=2i16 {
        let offset = v as i64 + 1;
        assert_eq!(
            delete(c, v, 0, offset).await,
            (0, offset),
            "DeleteRecords v{v}"
        );
        assert_eq!(c.list_offset("trim", 0, -2).await, (0, offset, -1));
    }
    assert_eq!(delete(c, 2, 0, 6).await, (1, -1), "past the high watermark");
    assert_eq!(delete(c, 2, 1, 0).await, (3, -1), "unknown partition");
    assert_eq!(
        delete(c, 2, 0, -1).await,
        (0, 5),
        "-1: up to the high watermark"
    );
}

async fn config_api_sweep(c: &mut Client) {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{
        AlterConfigsRequest, DescribeClusterRequest, DescribeConfigsRequest,
        IncrementalAlterConfigsRequest, alter_configs_request as alter,
        incremental_alter_configs_request as incremental,
    };
    c.create_topic("configs", 1).await;
    async fn retention(c: &mut Client, v: i16) -> Option<String> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text("configs"))
                .with_configuration_keys(Some(vec![text("retention.ms")])),
        ]);
        let response = c.call(v, &request).await;
        let r = &response.results[0];
        assert_eq!(
            (r.error_code, r.configs.len()),
            (0, 1),
            "DescribeConfigs v{v}"
        );
        r.configs[0].value.as_ref().map(|v| v.to_string())
    }
    for v in 1..=4i16 {
        assert_eq!(retention(c, v).await.as_deref(), Some("604800000"));
    }
    for v in 0..=2i16 {
        let value = format!("{}", 1000 + v);
        let request = AlterConfigsRequest::default().with_resources(vec![
            alter::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text("configs"))
                .with_configs(vec![
                    alter::AlterableConfig::default()
                        .with_name(text("retention.ms"))
                        .with_value(Some(text(&value))),
                ]),
        ]);
        let response = c.call(v, &request).await;
        assert_eq!(response.responses[0].error_code, 0, "AlterConfigs v{v}");
        assert_eq!(retention(c, 4).await, Some(value), "AlterConfigs v{v}");
    }
    for v in 0..=1i16 {
        let value = format!("{}", 2000 + v);
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text("configs"))
                .with_configs(vec![
                    incremental::AlterableConfig::default()
                        .with_name(text("retention.ms"))
                        .with_config_operation(0)
                        .with_value(Some(text(&value))),
                ]),
        ]);
        let response = c.call(v, &request).await;
        assert_eq!(
            response.responses[0].error_code, 0,
            "IncrementalAlterConfigs v{v}"
        );
        assert_eq!(
            retention(c, 4).await,
            Some(value),
            "IncrementalAlterConfigs v{v}"
        );
    }
    for v in 0..=2i16 {
        let response = c
            .call(v, &DescribeClusterRequest::default().with_endpoint_type(1))
            .await;
        assert_eq!(response.error_code, 0, "DescribeCluster v{v}");
        assert_eq!(response.brokers.len(), 1, "DescribeCluster v{v}");
    }
}

fn group(id: &str) -> GroupId {
    GroupId(StrBytes::from_string(id.to_string()))
}

/// An OffsetCommit of partition 0 of topic "sweep".
fn commit_request(g: &str, generation: i32, member: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(group(g))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(text(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(name("sweep"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                ]),
        ])
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Every version of the membership APIs, one single-member group per JoinGroup version: join
/// (v4+ after MEMBER_ID_REQUIRED), sync, heartbeat, describe, list, commit as a member,
/// OffsetDelete, leave, delete.
async fn group_membership_sweep(c: &mut Client) {
    const MEMBER_ID_REQUIRED: i16 = 79;
    const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    let mut members = Vec::new();
    for v in 0..=9i16 {
        let mut request = JoinGroupRequest::default()
            .with_group_id(group(&format!("sweep-g{v}")))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(text("range"))
                    .with_metadata(Bytes::from_static(b"subscription")),
            ]);
        let mut response = c.call(v, &request).await;
        if v >= 4 {
            assert_eq!(response.error_code, MEMBER_ID_REQUIRED, "JoinGroup v{v}");
            assert!(!response.member_id.is_empty(), "JoinGroup v{v}");
            request.member_id = response.member_id.clone();
            response = c.call(v, &request).await;
        }
        assert_eq!(response.error_code, 0, "JoinGroup v{v}");
        assert_eq!(response.generation_id, 1, "JoinGroup v{v}");
        assert_eq!(response.leader, response.member_id, "JoinGroup v{v}");
        assert_eq!(response.members.len(), 1, "JoinGroup v{v}");
        assert_eq!(
            response.members[0].metadata,
            Bytes::from_static(b"subscription"),
            "JoinGroup v{v}"
        );
        if v >= 7 {
            assert_eq!(response.protocol_type.as_deref(), Some("consumer"));
        }
        assert_eq!(response.protocol_name.as_deref(), Some("range"));
        members.push(response.member_id);
    }
    // SyncGroup: the leader's assignment at v0, then every version reads it back.
    let g = "sweep-g9";
    let me = members[9].clone();
    for v in 0..=5i16 {
        let mut request = SyncGroupRequest::default()
            .with_group_id(group(g))
            .with_generation_id(1)
            .with_member_id(me.clone())
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(me.clone())
                    .with_assignment(Bytes::from_static(b"everything")),
            ]);
        if v >= 5 {
            request.protocol_type = Some(text("consumer"));
            request.protocol_name = Some(text("range"));
        }
        let response = c.call(v, &request).await;
        assert_eq!(response.error_code, 0, "SyncGroup v{v}");
        assert_eq!(response.assignment, Bytes::from_static(b"everything"));
        if v >= 5 {
            assert_eq!(response.protocol_name.as_deref(), Some("range"));
        }
    }
    for v in 0..=4i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(group(g))
            .with_generation_id(1)
            .with_member_id(me.clone());
        assert_eq!(c.call(v, &request).await.error_code, 0, "Heartbeat v{v}");
        let stale = request.with_generation_id(0);
        assert_eq!(
            c.call(v, &stale).await.error_code,
            ResponseError::IllegalGeneration.code(),
            "Heartbeat v{v}"
        );
    }
    for v in 0..=6i16 {
        let request = DescribeGroupsRequest::default().with_groups(vec![group(g), group("nobody")]);
        let response = c.call(v, &request).await;
        let d = &response.groups[0];
        assert_eq!(
            (d.error_code, d.group_state.as_str()),
            (0, "Stable"),
            "DescribeGroups v{v}"
        );
        assert_eq!(d.protocol_data.as_str(), "range", "DescribeGroups v{v}");
        assert_eq!(d.members.len(), 1, "DescribeGroups v{v}");
        assert_eq!(d.members[0].member_id, me, "DescribeGroups v{v}");
        assert_eq!(
            d.members[0].member_assignment,
            Bytes::from_static(b"everything"),
            "DescribeGroups v{v}"
        );
        assert_eq!(
            response.groups[1].group_state.as_str(),
            "Dead",
            "DescribeGroups v{v}"
        );
    }
    for v in 0..=5i16 {
        let mut request = ListGroupsRequest::default();
        if v >= 4 {
            request.states_filter = vec![text("Stable")];
        }
        let response = c.call(v, &request).await;
        assert_eq!(response.error_code, 0, "ListGroups v{v}");
        let listed: Vec<&str> = response
            .groups
            .iter()
            .map(|l| l.group_id.0.as_str())
            .collect();
        assert!(listed.contains(&g), "ListGroups v{v}: {listed:?}");
        if v >= 4 {
            assert!(
                !listed.contains(&"sweep-g0"),
                "ListGroups v{v} state filter: {listed:?}"
            );
        }
    }
    // A member's commit (generation and id), and one that names a stale generation.
    for (generation, expected) in [(1, 0), (7, ResponseError::IllegalGeneration.code())] {
        let request = commit_request(g, generation, &me, 5);
        let response = c.call(9, &request).await;
        assert_eq!(
            response.topics[0].partitions[0].error_code, expected,
            "generation {generation}"
        );
    }
    let offset_delete = |g: &str| {
        OffsetDeleteRequest::default()
            .with_group_id(group(g))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(name("sweep"))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                    ]),
            ])
    };
    // The member's metadata is not a consumer subscription: nothing is subscribed.
    let response = c.call(0, &offset_delete(g)).await;
    assert_eq!(
        (
            response.error_code,
            response.topics[0].partitions[0].error_code
        ),
        (0, 0),
        "OffsetDelete v0"
    );
    assert_ne!(GROUP_SUBSCRIBED_TO_TOPIC, 0);
    for v in 0..=5i16 {
        let g = format!("sweep-g{v}");
        let mut request = LeaveGroupRequest::default().with_group_id(group(&g));
        if v >= 3 {
            request.members =
                vec![MemberIdentity::default().with_member_id(members[v as usize].clone())];
        } else {
            request.member_id = members[v as usize].clone();
        }
        let response = c.call(v, &request).await;
        assert_eq!(response.error_code, 0, "LeaveGroup v{v}");
        if v >= 3 {
            assert_eq!(response.members.len(), 1, "LeaveGroup v{v}");
            assert_eq!(response.members[0].error_code, 0, "LeaveGroup v{v}");
        }
    }
    for v in 0..=2i16 {
        let request = DeleteGroupsRequest::default()
            .with_groups_names(vec![group(&format!("sweep-g{v}")), group("sweep-g9")]);
        let response = c.call(v, &request).await;
        assert_eq!(response.results[0].error_code, 0, "DeleteGroups v{v}");
        assert_eq!(
            response.results[1].error_code,
            ResponseError::NonEmptyGroup.code(),
            "DeleteGroups v{v}"
        );
    }
}

#[tokio::test]
async fn fetch_with_min_bytes_0_answers_at_once_when_there_is_nothing_to_read() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("eager", 1).await;
    let started = Instant::now();
    let r = c
        .fetch(&fetch_request(
            2000,
            0,
            1 << 20,
            vec![("eager", 0, 0, 1 << 20)],
        ))
        .await;
    let elapsed = started.elapsed();
    let p = partition_data(&r, 0);
    assert_eq!((p.error_code, p.high_watermark), (0, 0));
    assert!(p.records.as_ref().is_none_or(|r| r.is_empty()));
    assert!(
        elapsed < Duration::from_millis(1000),
        "Fetch(min_bytes=0, max_wait_ms=2000) of an empty partition was answered after \
         {elapsed:?}; Kafka answers at once when the bytes available (0) reach min_bytes (0)"
    );
    pipeline.stop().await;
}

/// A batch whose header claims i32::MAX records (CRC re-sealed) used to be accepted, and a
/// later ListOffsets by timestamp decoded it and aborted the process reserving memory for
/// two billion records. It must be refused as Kafka refuses it (INVALID_RECORD).
#[tokio::test]
async fn a_batch_claiming_two_billion_records_is_refused_and_reads_survive() {
    const INVALID_RECORD: i16 = 87;
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("poison", 1).await;
    let mut b = BytesMut::from(&batch(&[rec("k", "v", 5000)], None)[..]);
    b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let (error, _) = c.produce_one("poison", 0, b.freeze()).await;
    assert_eq!(error, INVALID_RECORD);
    let (error, offset, _) = c.list_offset("poison", 0, 0).await;
    assert_eq!((error, offset), (0, -1), "nothing was appended");
    let (error, base) = c
        .produce_one("poison", 0, batch(&[rec("k", "v", 5000)], None))
        .await;
    assert_eq!((error, base), (0, 0));
    assert_eq!(c.list_offset("poison", 0, 0).await, (0, 0, 5000));
    pipeline.stop().await;
}

#[tokio::test]
async fn create_partitions_grows_a_topic_and_refuses_what_kafka_refuses() {
    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("widen", 2).await;
    let grow = |topic: &str, count: i32, validate_only: bool, assign: bool| {
        let mut t = CreatePartitionsTopic::default()
            .with_name(name(topic))
            .with_count(count);
        if assign {
            t.assignments = Some(vec![Default::default(); (count - 2).max(0) as usize]);
        }
        CreatePartitionsRequest::default()
            .with_topics(vec![t])
            .with_timeout_ms(5000)
            .with_validate_only(validate_only)
    };
    let error = |r: kafka_protocol::messages::CreatePartitionsResponse| r.results[0].error_code;
    // Validate only: accepted, nothing changes.
    assert_eq!(error(c.call(3, &grow("widen", 4, true, false)).await), 0);
    let (e, _) = c
        .produce_one("widen", 3, batch(&tagged("x", 1, 4), None))
        .await;
    assert_eq!(e, UNKNOWN_TOPIC_OR_PARTITION);
    // Grow to 4: the new partitions take records at once.
    assert_eq!(error(c.call(3, &grow("widen", 4, false, false)).await), 0);
    assert_eq!(
        c.produce_one("widen", 3, batch(&tagged("p3", 2, 4), None))
            .await,
        (0, 0)
    );
    assert_eq!(c.list_offset("widen", 3, -1).await, (0, 2, -1));
    // Not more than now, an unknown topic, replica assignments: refused.
    assert_eq!(
        error(c.call(3, &grow("widen", 4, false, false)).await),
        INVALID_PARTITIONS
    );
    assert_eq!(
        error(c.call(3, &grow("nope", 4, false, false)).await),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        error(c.call(3, &grow("widen", 6, false, true)).await),
        INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(
        c.list_offset("widen", 5, -1).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    pipeline.stop().await;
}

/// Retention and GC under readers whose view is older (as fetch gateways in other processes
/// without news from the indexer): one cached the index entries and the log start of a
/// partition (and no segment bytes), the other only its log start. DeleteRecords moves the log
/// start and garbage collection deletes the segment. The first finds the object gone, the
/// second finds no index entry for the offset; both re-read the partition and answer
/// OFFSET_OUT_OF_RANGE with the new log start, never a storage error or an empty answer, and
/// what is above the log start is still read.
#[tokio::test]
async fn a_reader_whose_index_entry_outlived_its_segment_rereads_the_index() {
    use kafscale_indexer::gc::{GarbageCollector, GcConfig};
    use kafscale_shared::keys::SEGMENT_PREFIX;
    use kafscale_shared::sequencer::DeleteRecordsRequest;

    let pipeline = Pipeline::start(Options::default()).await;
    let mut c = pipeline.client().await;
    c.create_topic("gone", 1).await;
    for tag in ["a", "b"] {
        let (error, _) = c
            .produce_one("gone", 0, batch(&tagged(tag, 3, 10), None))
            .await;
        assert_eq!(error, 0);
    }
    let segments = pipeline.objects.list(SEGMENT_PREFIX).await.expect("list");
    assert_eq!(segments.len(), 2, "one segment per acknowledged produce");

    let stale_reader = || {
        FetchService::new(
            pipeline.catalog.clone(),
            pipeline.objects.clone(),
            Arc::new(Watermarks::new()),
            FetchConfig {
                range_cache_bytes: 0,
                ..FetchConfig::default()
            },
        )
    };
    let read = |offset: i64| fetch_request(0, 1, 1 << 20, vec![("gone", 0, offset, 1 << 20)]);
    let cached_index = stale_reader();
    let first = cached_index.fetch(read(0), FETCH_V).await;
    assert_eq!(partition_data(&first, 0).error_code, 0);
    let records = partition_data(&first, 0)
        .records
        .clone()
        .unwrap_or_default();
    assert_eq!(decode_batches(records).len(), 2);
    let offsets_only = stale_reader();
    let at_end = offsets_only.fetch(read(6), FETCH_V).await;
    assert_eq!(partition_data(&at_end, 0).log_start_offset, 0);

    let topic = pipeline.catalog.topic("gone").await.expect("topic");
    let topic_id = topic.expect("exists").topic_id;
    let first_entry = pipeline
        .catalog
        .index_entries_from(topic_id, 0, 0, Some(1))
        .await
        .expect("index");
    let first_segment = first_entry[0].segment_key.clone();
    let moved = pipeline
        .indexer
        .delete_records(DeleteRecordsRequest {
            shard: 0,
            topic_id,
            partition: 0,
            offset: 3,
        })
        .await
        .expect("delete records");
    assert_eq!(moved.log_start_offset, 3);
    let gc = GarbageCollector::new(
        pipeline.catalog.clone(),
        pipeline.objects.clone(),
        GcConfig {
            grace: Duration::ZERO,
            segment_commit_max_age: Duration::ZERO,
        },
    );
    let later = kafscale_shared::catalog::now_ms() + 1;
    assert_eq!(gc.run_pass(later).await.expect("pass").segments_waiting, 1);
    assert_eq!(gc.run_pass(later).await.expect("pass").segments_deleted, 1);
    let left = pipeline.objects.list(SEGMENT_PREFIX).await.expect("list");
    let kept: Vec<_> = segments
        .into_iter()
        .filter(|o| o.key != first_segment)
        .collect();
    assert_eq!(left, kept, "the segment of offsets 0-2 went, and only it");

    for (name, reader) in [
        ("cached index", &cached_index),
        ("offsets only", &offsets_only),
    ] {
        let again = reader.fetch(read(0), FETCH_V).await;
        let p = partition_data(&again, 0);
        assert_eq!(
            (p.error_code, p.log_start_offset),
            (OFFSET_OUT_OF_RANGE, 3),
            "{name}"
        );
        let above = reader.fetch(read(3), FETCH_V).await;
        let p = partition_data(&above, 0);
        assert_eq!(p.error_code, 0, "{name}");
        let records = p.records.clone().unwrap_or_default();
        let offsets: Vec<i64> = offsets_and_records(&decode_batches(records))
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(offsets, vec![3, 4, 5], "{name}");
    }
    pipeline.stop().await;
}

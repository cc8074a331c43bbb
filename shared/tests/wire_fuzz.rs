//! Robustness of the wire server against arbitrary frames, end to end over a real socket: a
//! property test (proptest) next to the coverage-guided fuzz targets (fuzz/, docs/fuzzing.md),
//! which drive the decoders and handlers in process but never a connection.
//!
//! The server runs in this process on runtime threads of its own, with a panic hook that
//! records any panic on them (a panicking connection task would otherwise only close its
//! connection, and the property could not tell it from a deliberate close); an abort, such as
//! a failed allocation, ends the test binary and so fails the test too. Each case sends one or
//! two generated frames (a random real API key or any key, a random version, a valid or random
//! header, a valid request body mutated or random bytes, a declared length that may lie),
//! half-closes, and requires that the connection either answers or closes within a bound, that
//! no server thread panicked, and that a fresh connection still gets ApiVersions answered.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use bytes::{BufMut, Bytes, BytesMut};
use common::{IO_TIMEOUT, Read, TestServer, call, read_frame};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterConfigsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, alter_configs_request, incremental_alter_configs_request,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, RequestHeader,
    RequestKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafscale_shared::catalog::Catalog;
use kafscale_shared::meta_store::MemoryMetaStore;
use kafscale_shared::topic_api::{TopicApi, TopicSettings};
use kafscale_shared::topic_handler::TopicHandler;
use kafscale_shared::wire::{
    ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext, Router, WireConfig,
};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Prefix of the names of the servers' runtime threads (the panic hook watches these).
const SERVER_THREAD: &str = "wire-fuzz-server-";

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// Serves every API the protocol knows, at every version, and closes the connection after
/// decoding (so every decoder is reachable); the topic APIs go to the real [`TopicHandler`].
struct DecodeEverything;

#[async_trait::async_trait]
impl KafkaHandler for DecodeEverything {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        ApiKey::iter()
            .filter(|k| *k != ApiKey::ApiVersions)
            .map(|k| {
                let v = k.valid_versions();
                ApiSupport::new(k, v.min, v.max)
            })
            .collect()
    }

    async fn start(&self, ctx: RequestContext, _request: RequestKind) -> Dispatch {
        let api = ctx.api_key;
        Dispatch::Respond(Box::pin(async move {
            Err(HandlerError::Fatal(format!("{api:?} decoded; not served")))
        }))
    }
}

/// Panics seen on server threads: the thread's name and the message.
static SERVER_PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Records panics on server threads (and still reports them as the default hook does).
fn watch_server_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if let Some(name) = thread.name().filter(|n| n.starts_with(SERVER_THREAD)) {
                SERVER_PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((name.to_string(), info.to_string()));
            }
            previous(info);
        }));
    });
}

/// The panics recorded on `server`'s threads since the last call (each case starts with none,
/// so shrinking blames the case that caused a panic).
fn take_server_panics(server: &Server) -> Vec<String> {
    let mut all = SERVER_PANICS.lock().unwrap_or_else(|e| e.into_inner());
    let (ours, others) = std::mem::take(&mut *all)
        .into_iter()
        .partition::<Vec<_>, _>(|(thread, _)| *thread == server.thread_name);
    *all = others;
    ours.into_iter().map(|(_, message)| message).collect()
}

/// The real wire server with the topic handler and [`DecodeEverything`], on a runtime of its
/// own.
struct Server {
    /// Runs the server (which stops when this is dropped).
    _runtime: Runtime,
    /// The client side's runtime (its tasks never run on the server's threads).
    client: Runtime,
    addr: SocketAddr,
    /// The name of its runtime's threads.
    thread_name: String,
}

impl Server {
    fn start() -> Server {
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        watch_server_panics();
        let thread_name = format!("{SERVER_THREAD}{}", SERVERS.fetch_add(1, Ordering::Relaxed));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(thread_name.clone())
            .enable_all()
            .build()
            .expect("runtime");
        let server = runtime.block_on(async {
            let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
            let topics = TopicApi::new(
                catalog,
                TopicSettings {
                    advertised_host: "127.0.0.1".into(),
                    advertised_port: 9092,
                    auto_create_topics: true,
                    default_partitions: 2,
                    cluster_id: "fuzz".into(),
                    node_id: 1,
                },
            );
            let router: Arc<dyn KafkaHandler> = Arc::new(Router::new(vec![
                Arc::new(TopicHandler::new(topics)),
                Arc::new(DecodeEverything),
            ]));
            TestServer::start(
                router,
                WireConfig {
                    max_frame_bytes: MAX_FRAME_BYTES,
                    ..WireConfig::default()
                },
            )
            .await
        });
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        Server {
            addr: server.addr,
            _runtime: runtime,
            client,
            thread_name,
        }
    }
}

/// Responses the fuzzed connections got (the generator must reach the handlers, not only the
/// framing checks).
static ANSWERED: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------------------------
// Generated input
// ---------------------------------------------------------------------------------------------

/// The APIs kafscale serves (most cases go to them).
const SERVED: [ApiKey; 12] = [
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::Produce,
    ApiKey::InitProducerId,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeCluster,
];

/// Largest byte value in generated random bytes, flips and tails: any byte, so collection
/// counts read from the wire can be anything (the vendored kafka-protocol no longer reserves
/// memory from them; see vendor/kafka-protocol/VENDORED.md).
const BYTE_CEILING: u8 = 0xff;

fn fuzz_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0..=BYTE_CEILING, 0..max_len)
}

fn arb_key() -> impl Strategy<Value = i16> {
    let real: Vec<i16> = ApiKey::iter().map(|k| k as i16).collect();
    prop_oneof![
        6 => proptest::sample::select(SERVED.map(|k| k as i16).to_vec()),
        2 => proptest::sample::select(real),
        1 => any::<i16>(),
    ]
}

/// A version of `key`: mostly within (or just outside) the protocol's range.
fn arb_version(key: i16) -> BoxedStrategy<i16> {
    match ApiKey::try_from(key) {
        Ok(k) => {
            let v = k.valid_versions();
            prop_oneof![
                8 => (v.min - 1)..=(v.max + 1),
                1 => any::<i16>(),
            ]
            .boxed()
        }
        Err(_) => any::<i16>().boxed(),
    }
}

/// How a generated header is built.
#[derive(Debug, Clone)]
enum Header {
    /// The protocol's header for the key and version, with this client id.
    Valid(Option<String>),
    /// The 8 fixed bytes, then arbitrary bytes.
    Raw(Vec<u8>),
}

/// How a generated body is built.
#[derive(Debug, Clone)]
enum Body {
    Random(Vec<u8>),
    /// A valid request for the key and version (where one is known), with byte flips, a
    /// truncation and an arbitrary tail.
    Mutated {
        flips: Vec<(usize, u8)>,
        truncate: Option<usize>,
        tail: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
struct FuzzFrame {
    api_key: i16,
    version: i16,
    correlation_id: i32,
    header: Header,
    body: Body,
    /// Added to the true length in the length prefix (0 most of the time).
    length_lie: i64,
}

fn arb_frame() -> impl Strategy<Value = FuzzFrame> {
    let key_version = arb_key().prop_flat_map(|k| (Just(k), arb_version(k)));
    let header = prop_oneof![
        6 => proptest::option::of("[a-z0-9._-]{0,12}").prop_map(Header::Valid),
        1 => fuzz_bytes(12).prop_map(Header::Raw),
    ];
    let body = prop_oneof![
        1 => fuzz_bytes(200).prop_map(Body::Random),
        3 => (
            proptest::collection::vec((any::<usize>(), 1..=BYTE_CEILING), 0..4),
            proptest::option::of(any::<usize>()),
            fuzz_bytes(8),
        )
            .prop_map(|(flips, truncate, tail)| Body::Mutated {
                flips,
                truncate,
                tail,
            }),
    ];
    let length_lie = prop_oneof![
        12 => Just(0i64),
        2 => -4i64..=4,
        1 => Just(1i64 << 20),
        1 => Just(1i64 << 40),
    ];
    (key_version, any::<i32>(), header, body, length_lie).prop_map(
        |((api_key, version), correlation_id, header, body, length_lie)| FuzzFrame {
            api_key,
            version,
            correlation_id,
            header,
            body,
            length_lie,
        },
    )
}

/// Topic names of bytes below 4 (see [`BYTE_CEILING`]); the topic APIs reject them as invalid.
fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

const NAME: &str = "\u{1}\u{2}";
const ID: uuid::Uuid = uuid::Uuid::from_bytes([1; 16]);

/// A valid body of `key` at `version`, for the APIs kafscale serves, inside the bounded-count
/// domain (every numeric field small and non-negative).
fn template(key: ApiKey, version: i16) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    let ok = match key {
        ApiKey::ApiVersions => ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("\u{1}"))
            .with_client_software_version(StrBytes::from_static_str("\u{2}"))
            .encode(&mut buf, version),
        ApiKey::Metadata => MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(Some(name(NAME)))
                    .with_topic_id(ID),
            ]))
            .with_allow_auto_topic_creation(true)
            .encode(&mut buf, version),
        ApiKey::CreateTopics => CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(name(NAME))
                    .with_num_partitions(2)
                    .with_replication_factor(1),
            ])
            .with_timeout_ms(0x100)
            .encode(&mut buf, version),
        ApiKey::DeleteTopics => {
            let mut r = DeleteTopicsRequest::default().with_timeout_ms(0x100);
            if version >= 6 {
                r.topics = vec![
                    DeleteTopicState::default()
                        .with_name(Some(name(NAME)))
                        .with_topic_id(ID),
                ];
            } else {
                r.topic_names = vec![name(NAME)];
            }
            r.encode(&mut buf, version)
        }
        ApiKey::Produce => ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(1)
            .with_timeout_ms(0x100)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name(NAME))
                    .with_topic_id(ID)
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(Bytes::from_static(&[1, 2]))),
                    ]),
            ])
            .encode(&mut buf, version),
        ApiKey::Fetch => {
            let mut partition = FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(0)
                .with_fetch_offset(0)
                .with_log_start_offset(0)
                .with_partition_max_bytes(0x0001_0000);
            if version >= 12 {
                partition.last_fetched_epoch = 0;
            }
            let mut r = FetchRequest::default()
                .with_max_wait_ms(0x300)
                .with_min_bytes(1)
                .with_max_bytes(0x0001_0000)
                .with_session_epoch(0)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(name(NAME))
                        .with_topic_id(ID)
                        .with_partitions(vec![partition]),
                ]);
            if version < 15 {
                r.replica_id = kafka_protocol::messages::BrokerId(0);
            }
            r.encode(&mut buf, version)
        }
        ApiKey::ListOffsets => ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(0))
            .with_timeout_ms(0x100)
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name(NAME))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_current_leader_epoch(0)
                            .with_timestamp(0x100),
                    ]),
            ])
            .encode(&mut buf, version),
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(0x100);
            if version >= 3 {
                r.producer_id = kafka_protocol::messages::ProducerId(1);
                r.producer_epoch = 0;
            }
            r.encode(&mut buf, version)
        }
        ApiKey::DescribeConfigs => DescribeConfigsRequest::default()
            .with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str(NAME))
                    .with_configuration_keys(Some(vec![StrBytes::from_static_str("\u{1}")])),
            ])
            .with_include_synonyms(true)
            .encode(&mut buf, version),
        ApiKey::AlterConfigs => AlterConfigsRequest::default()
            .with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str(NAME))
                    .with_configs(vec![
                        alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("\u{1}"))
                            .with_value(Some(StrBytes::from_static_str("\u{2}"))),
                    ]),
            ])
            .encode(&mut buf, version),
        ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::default()
            .with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str(NAME))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("\u{1}"))
                            .with_config_operation(0)
                            .with_value(Some(StrBytes::from_static_str("\u{2}"))),
                    ]),
            ])
            .encode(&mut buf, version),
        ApiKey::DescribeCluster => DescribeClusterRequest::default()
            .with_endpoint_type(1)
            .encode(&mut buf, version),
        _ => return None,
    };
    ok.ok().map(|_| buf.freeze())
}

impl FuzzFrame {
    /// The bytes on the wire: length prefix, header, body. Only the last frame of a case may
    /// lie about its length, so a lie never makes the server read a header's bytes (client id,
    /// correlation id) as a body.
    fn wire(&self, last: bool) -> Vec<u8> {
        let mut payload = BytesMut::new();
        match (&self.header, ApiKey::try_from(self.api_key)) {
            (Header::Valid(client_id), Ok(key)) => {
                let header = RequestHeader::default()
                    .with_request_api_key(self.api_key)
                    .with_request_api_version(self.version)
                    .with_correlation_id(self.correlation_id)
                    .with_client_id(client_id.clone().map(StrBytes::from_string));
                let header_version = key.request_header_version(self.version);
                if header.encode(&mut payload, header_version).is_err() {
                    payload.clear();
                    payload.put_i16(self.api_key);
                    payload.put_i16(self.version);
                    payload.put_i32(self.correlation_id);
                }
            }
            (Header::Valid(_), Err(_)) | (Header::Raw(_), _) => {
                payload.put_i16(self.api_key);
                payload.put_i16(self.version);
                payload.put_i32(self.correlation_id);
                if let Header::Raw(rest) = &self.header {
                    payload.put_slice(rest);
                }
            }
        }
        let mut decoded_as_body: Vec<u8> = match &self.header {
            Header::Raw(rest) => rest.clone(),
            Header::Valid(_) => Vec::new(),
        };
        match &self.body {
            Body::Random(bytes) => {
                payload.put_slice(bytes);
                decoded_as_body.extend_from_slice(bytes);
            }
            Body::Mutated {
                flips,
                truncate,
                tail,
            } => {
                let base = ApiKey::try_from(self.api_key)
                    .ok()
                    .and_then(|k| template(k, self.version))
                    .unwrap_or_default();
                let mut body = base.to_vec();
                if !body.is_empty() {
                    for (at, xor) in flips {
                        let i = at % body.len();
                        body[i] ^= xor;
                    }
                }
                if let Some(t) = truncate
                    && !body.is_empty()
                {
                    body.truncate(t % (body.len() + 1));
                }
                body.extend_from_slice(tail);
                payload.put_slice(&body);
                decoded_as_body.extend_from_slice(&body);
            }
        }
        let lie = if last { self.length_lie } else { 0 };
        let declared = (payload.len() as i64 + lie).clamp(0, u32::MAX as i64) as u32;
        let mut out = Vec::with_capacity(payload.len() + 4);
        out.extend_from_slice(&declared.to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }
}

/// What the connection did with the frames.
#[derive(Debug)]
enum Outcome {
    /// Responses that arrived, then the close.
    AnsweredOrClosed,
    /// Neither an answer nor a close within the bound.
    Hung,
}

async fn send_frames(addr: SocketAddr, frames: &[FuzzFrame]) -> Outcome {
    let Ok(Ok(mut stream)) = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await
    else {
        return Outcome::Hung;
    };
    let mut wire = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        wire.extend_from_slice(&f.wire(i + 1 == frames.len()));
    }
    // The server may close before reading everything; write errors are fine.
    let _ = stream.write_all(&wire).await;
    let _ = stream.shutdown().await;
    let bounded = tokio::time::timeout(IO_TIMEOUT, async {
        while let Read::Frame(_) = read_frame(&mut stream).await {
            ANSWERED.fetch_add(1, Ordering::Relaxed);
        }
    });
    match bounded.await {
        Ok(()) => Outcome::AnsweredOrClosed,
        Err(_) => Outcome::Hung,
    }
}

async fn api_versions_answered(addr: SocketAddr) -> bool {
    let probe = async move {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let response = call(&mut stream, 3, 4242, &ApiVersionsRequest::default()).await;
        Some(response.error_code == 0 && !response.api_keys.is_empty())
    };
    // `call` panics on a closed connection; treat that as "not answered" without unwinding
    // through proptest's runner by running it as a task.
    matches!(
        tokio::time::timeout(IO_TIMEOUT, tokio::spawn(probe)).await,
        Ok(Ok(Some(true)))
    )
}

fn check_case(server: &Server, frames: Vec<FuzzFrame>) -> Result<(), TestCaseError> {
    let addr = server.addr;
    take_server_panics(server);
    let outcome = server.client.block_on(send_frames(addr, &frames));
    let panics = take_server_panics(server);
    prop_assert!(
        panics.is_empty(),
        "the server panicked on {frames:?}: {panics:?}"
    );
    prop_assert!(
        server.client.block_on(api_versions_answered(addr)),
        "a fresh connection got no ApiVersions answer after {frames:?}"
    );
    prop_assert!(
        matches!(outcome, Outcome::AnsweredOrClosed),
        "the connection neither answered nor closed within {IO_TIMEOUT:?}: {frames:?}"
    );
    Ok(())
}

/// The versions the crate can encode for a served API.
fn message_versions(key: ApiKey) -> kafka_protocol::protocol::VersionRange {
    use kafka_protocol::protocol::Message;
    match key {
        ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
        ApiKey::Metadata => MetadataRequest::VERSIONS,
        ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
        ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
        ApiKey::Produce => ProduceRequest::VERSIONS,
        ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
        ApiKey::Fetch => FetchRequest::VERSIONS,
        ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
        other => other.valid_versions(),
    }
}

/// A request declaring a collection of 2^31 - 1 elements in a 15-byte frame (found by this
/// fuzzer: it used to abort the process on a 150 GB allocation, which here would end the test
/// binary).
#[test]
fn a_huge_declared_array_count_does_not_take_the_server_down() {
    let server = Server::start();
    // Metadata v1: header (client id "t"), then topics: array count 0x7fffffff and no topics.
    let mut body = BytesMut::new();
    body.put_i16(1);
    body.put_slice(b"t");
    body.put_i32(i32::MAX);
    let frame = common::raw_request(3, 1, 7, &body);
    let outcome = server.client.block_on(async {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        common::write_frame(&mut stream, &frame).await;
        read_frame(&mut stream).await
    });
    assert!(
        matches!(outcome, Read::Closed { .. }),
        "an undecodable Metadata v1 was answered: {outcome:?}"
    );
    assert_eq!(take_server_panics(&server), Vec::<String>::new());
    assert!(
        server.client.block_on(api_versions_answered(server.addr)),
        "Metadata v1 with a topics count of 0x7fffffff left the server unable to answer"
    );
}

#[test]
fn arbitrary_frames_never_take_the_server_down() {
    // 64 cases keep the run to seconds; KAFSCALE_WIRE_FUZZ_CASES asks for a deeper run.
    let cases = std::env::var("KAFSCALE_WIRE_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let config = ProptestConfig {
        cases,
        // Integration tests have no lib.rs beside them: keep failures next to this file.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    let server = Server::start();
    // The unmutated templates reach the handlers (so the cases below are not all stopped by
    // the framing checks).
    for (key, version) in [
        (ApiKey::ApiVersions, 3),
        (ApiKey::Metadata, 12),
        (ApiKey::CreateTopics, 7),
    ] {
        let frame = FuzzFrame {
            api_key: key as i16,
            version,
            correlation_id: 1,
            header: Header::Valid(Some("probe".into())),
            body: Body::Mutated {
                flips: Vec::new(),
                truncate: None,
                tail: Vec::new(),
            },
            length_lie: 0,
        };
        let before = ANSWERED.load(Ordering::Relaxed);
        check_case(&server, vec![frame])
            .unwrap_or_else(|e| panic!("{key:?} v{version} template: {e}"));
        assert_eq!(
            ANSWERED.load(Ordering::Relaxed),
            before + 1,
            "{key:?} v{version} template was not answered"
        );
    }
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(arb_frame(), 1..=2), |frames| {
        check_case(&server, frames)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "{cases} cases, {} responses",
        ANSWERED.load(Ordering::Relaxed)
    );
}

#[test]
fn every_served_version_has_a_request_template() {
    let mut checked = 0;
    for key in SERVED {
        let range = message_versions(key);
        for version in range.min..=range.max {
            assert!(
                template(key, version).is_some(),
                "no template for {key:?} v{version}"
            );
            checked += 1;
        }
    }
    assert!(checked > 60);
}

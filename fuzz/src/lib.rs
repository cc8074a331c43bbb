//! The harness shared by the fuzz targets (`fuzz_targets/`, see docs/fuzzing.md): a tokio
//! runtime on a paused clock, the tiers of standalone mode wired on in-memory stores, and the
//! op-sequence input of the stateful targets.
//!
//! The clock is tokio's paused test clock: whenever every task waits, it jumps to the next
//! timer, so flush intervals, long polls, rebalance and session timeouts pass at once and a
//! run is as fast as the code. A request that never completes still shows: each is awaited
//! under a bound on that clock, and one that outlives it fails the run as a hang.
//!
//! # Input of the stateful targets
//!
//! A sequence of ops, each `api: u8, version: u8, advance: u8, len: u16 (big-endian), body:
//! len bytes`. `api` picks one of the target's APIs (modulo their number), `version` one of its
//! served versions (modulo the range; bit 7 asks the harness to recompute the CRC-32C of
//! every record batch in the request, so mutated records get past the checksum), `advance`
//! how far the clock moves once the request has started (`0`: not at all, else 2^(advance %
//! 19) ms) and `body` is the request body at that version, decoded by the same code the
//! server decodes with. An op whose body does not decode is skipped (the `request_frame`
//! target covers decoding). [`op`] writes one (for the seed corpora).

pub mod snapshot;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafscale_fetch::{FetchConfig, FetchHandler, FetchService};
use kafscale_indexer::{Indexer, IndexerConfig};
use kafscale_ingest::{IngestConfig, IngestHandler, SegmentBuffer};
use kafscale_shared::batch::{BATCH_HEADER_LEN, BATCH_LOG_OVERHEAD};
use kafscale_shared::catalog::Catalog;
use kafscale_shared::meta_store::MemoryMetaStore;
use kafscale_shared::object_store::{MemoryObjectStore, ObjectStore};
use kafscale_shared::sequencer::Sequencer;
use kafscale_shared::topic_api::{TopicApi, TopicSettings, node_id_for_addr};
use kafscale_shared::watermarks::Watermarks;
use kafscale_shared::wire::fetch_frame::encode_fetch_frame;
use kafscale_shared::wire::{ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The fixed server part of every SCRAM nonce of the `sasl` target, so recorded exchanges
/// replay.
pub const SASL_SERVER_NONCE: &str = "fuzz-server-nonce";

/// The `sasl` target's authenticator: every mechanism, user `user` with password `pencil`
/// for both SCRAM mechanisms (salt `fuzz salt`, 4096 iterations), [`SASL_SERVER_NONCE`].
pub fn sasl_authenticator() -> kafscale_sasl::Authenticator {
    use kafscale_sasl::{
        Authenticator, Mechanism, MemoryCredentials, SaslConfig, ScramCredential, ScramMechanism,
    };
    let credentials = MemoryCredentials::new();
    for mechanism in ScramMechanism::ALL {
        let credential =
            ScramCredential::from_password(mechanism, "pencil", b"fuzz salt".to_vec(), 4096)
                .expect("a valid credential");
        credentials.insert("user", credential);
    }
    let config = SaslConfig {
        mechanisms: Mechanism::ALL.to_vec(),
        decoy_secret: b"fuzz decoy secret".to_vec(),
        decoy_iterations: 4096,
    };
    Authenticator::new(config, Arc::new(credentials))
        .with_nonce_generator(Arc::new(|| Ok(SASL_SERVER_NONCE.to_string())))
}

/// Ops read from one input at most (a longer input is cut).
pub const MAX_OPS: usize = 32;

/// How long (on the paused clock) a started request may take to complete. Far above any
/// deadline the handlers keep for a well-formed request (produce answers within its
/// timeout or 1 s, a long poll within 30 s), far below "forever".
pub const COMPLETION_BOUND: Duration = Duration::from_secs(600);

/// The runtime every target runs on: one thread, paused clock.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    })
}

/// Every API and version the Kafka listener serves (standalone's router: topic, ingest, fetch
/// and group handlers; ApiVersions is served by the wire core itself).
pub fn served_apis() -> Vec<ApiSupport> {
    let mut apis: Vec<ApiSupport> = Vec::new();
    for api in kafscale_shared::topic_handler::TOPIC_APIS
        .iter()
        .chain(kafscale_ingest::INGEST_APIS.iter())
        .chain(kafscale_fetch::FETCH_APIS.iter())
        .chain(kafscale_fetch::GROUP_APIS.iter())
    {
        if !apis.iter().any(|a| a.key == api.key) {
            apis.push(*api);
        }
    }
    apis
}

/// One request of a stateful target's input.
#[derive(Debug)]
pub struct Op {
    pub key: ApiKey,
    pub version: i16,
    /// Recompute the CRC-32C of the request's record batches before it is handled.
    pub fix_crcs: bool,
    /// How far the clock moves after the request started.
    pub advance: Duration,
    pub body: Bytes,
}

/// Reads the ops of `data` for a target serving `apis` (see the module note).
pub fn parse_ops(data: &[u8], apis: &[ApiSupport]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut rest = data;
    while ops.len() < MAX_OPS && rest.len() >= 5 && !apis.is_empty() {
        let api = apis[rest[0] as usize % apis.len()];
        let span = (api.max_version - api.min_version) as usize + 1;
        let version = api.min_version + ((rest[1] & 0x7f) as usize % span) as i16;
        let fix_crcs = rest[1] & 0x80 != 0;
        let advance = match rest[2] {
            0 => Duration::ZERO,
            a => Duration::from_millis(1 << (a % 19)),
        };
        let len = (u16::from_be_bytes([rest[3], rest[4]]) as usize).min(rest.len() - 5);
        let body = Bytes::copy_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        ops.push(Op {
            key: api.key,
            version,
            fix_crcs,
            advance,
            body,
        });
    }
    ops
}

/// One op in the input format (for the seed corpora): `key` must be in `apis` and `version`
/// served; `advance` as in the input (0: the clock stays).
pub fn op(apis: &[ApiSupport], key: ApiKey, version: i16, advance: u8, body: &[u8]) -> Vec<u8> {
    let index = apis
        .iter()
        .position(|a| a.key == key)
        .unwrap_or_else(|| panic!("{key:?} is not among the target's APIs"));
    let api = apis[index];
    assert!(api.contains(version), "{key:?} v{version} is not served");
    let len = u16::try_from(body.len()).expect("op body over 64 KiB");
    let mut out = vec![index as u8, (version - api.min_version) as u8, advance];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The request of `op`, or `None` if its body does not decode at its version.
pub fn decode_op(op: &Op) -> Option<RequestKind> {
    let mut body = op.body.clone();
    RequestKind::decode(op.key, &mut body, op.version).ok()
}

/// What the wire core passes a handler besides the request.
pub fn context(key: ApiKey, version: i16, correlation_id: i32) -> RequestContext {
    RequestContext {
        api_key: key,
        api_version: version,
        correlation_id,
        client_id: Some("fuzz".into()),
        peer: SocketAddr::from(([127, 0, 0, 1], 40_000)),
        connection_id: 1,
        principal: None,
        record_splices: Default::default(),
    }
}

/// A started request: the handler's future, running on its own task.
pub struct Started {
    pub key: ApiKey,
    pub version: i16,
    task: JoinHandle<Option<Result<ResponseKind, HandlerError>>>,
}

impl Started {
    /// Runs `dispatch` to completion on a task of its own.
    pub fn spawn(key: ApiKey, version: i16, dispatch: Dispatch) -> Started {
        let task = match dispatch {
            Dispatch::Respond(f) => tokio::spawn(async move { Some(f.await) }),
            Dispatch::NoResponse(f) => tokio::spawn(async move {
                f.await;
                None
            }),
        };
        Started { key, version, task }
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The handler's answer (`None`: no response, as for acks=0). Fails the run if the
    /// request does not complete within [`COMPLETION_BOUND`] (a hung connection) or its task
    /// panicked.
    pub async fn finish(self) -> Option<Result<ResponseKind, HandlerError>> {
        match tokio::time::timeout(COMPLETION_BOUND, self.task).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("{:?} v{} request task failed: {e}", self.key, self.version),
            Err(_) => panic!(
                "{:?} v{} request still unanswered after {COMPLETION_BOUND:?}: the connection \
                 would hang",
                self.key, self.version
            ),
        }
    }
}

/// Checks that a handler's answer can be sent: the wire core closes the connection instead
/// of answering when a response does not encode at the request's version, so a request that
/// decoded must get a response that encodes. `HandlerError` (the handler itself asks to
/// close) is only for requests a handler does not serve, which never reach it here.
pub fn check_sendable(key: ApiKey, version: i16, answer: Result<ResponseKind, HandlerError>) {
    if verbose() {
        eprintln!("{key:?} v{version} answered: {answer:?}");
    }
    let response = match answer {
        Ok(r) => r,
        Err(e) => panic!("{key:?} v{version}: the handler closes the connection: {e}"),
    };
    let header = ResponseHeader::default().with_correlation_id(7);
    let header_version = key.response_header_version(version);
    if let ResponseKind::Fetch(fetch) = response {
        if let Err(e) = encode_fetch_frame(&header, header_version, fetch, version, &Default::default()) {
            panic!("Fetch v{version} response cannot be sent: {e}");
        }
        return;
    }
    let mut buf = BytesMut::new();
    if let Err(e) = header.encode(&mut buf, header_version) {
        panic!("{key:?} v{version} response header cannot be sent: {e}");
    }
    if let Err(e) = response.encode(&mut buf, version) {
        panic!("{key:?} v{version} response cannot be sent: {e:#}");
    }
}

/// Whether `KAFSCALE_FUZZ_VERBOSE` is set: the targets then print every answer (to see what
/// an input reaches, e.g. `KAFSCALE_FUZZ_VERBOSE=1 …/release/groups fuzz/corpus/groups/seed-…`).
pub fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("KAFSCALE_FUZZ_VERBOSE").is_some())
}

/// Rewrites the CRC-32C of every whole record batch in `buf` (a run of batches), so that a
/// mutated batch is judged on what follows the checksum.
pub fn fix_batch_crcs(buf: &mut [u8]) {
    const CRC_OFFSET: usize = 17;
    const ATTRIBUTES_OFFSET: usize = 21;
    let mut pos = 0usize;
    while buf.len() - pos >= BATCH_HEADER_LEN {
        let length = i32::from_be_bytes([buf[pos + 8], buf[pos + 9], buf[pos + 10], buf[pos + 11]]);
        let Ok(length) = usize::try_from(length) else {
            return;
        };
        let total = length.saturating_add(BATCH_LOG_OVERHEAD);
        if total < BATCH_HEADER_LEN || buf.len() - pos < total {
            return;
        }
        let crc = crc32c::crc32c(&buf[pos + ATTRIBUTES_OFFSET..pos + total]);
        buf[pos + CRC_OFFSET..pos + ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
        pos += total;
    }
}

/// [`fix_batch_crcs`] on a copy of `records`.
pub fn with_fixed_crcs(records: &Bytes) -> Bytes {
    let mut copy = records.to_vec();
    fix_batch_crcs(&mut copy);
    Bytes::from(copy)
}

/// The topic every cluster has: 3 partitions.
pub const TOPIC: &str = "t";
/// A compacted topic (produce checks every record's key): 2 partitions.
pub const COMPACTED_TOPIC: &str = "c";

/// The topic settings of every target's cluster: one broker at 127.0.0.1:9092, topics
/// created on first use with 2 partitions.
pub fn topic_settings() -> TopicSettings {
    TopicSettings {
        advertised_host: "127.0.0.1".into(),
        advertised_port: 9092,
        auto_create_topics: true,
        default_partitions: 2,
        cluster_id: "kafscale-fuzz".into(),
        node_id: node_id_for_addr("127.0.0.1:9092"),
    }
}

/// Creates [`TOPIC`] (3 partitions) and [`COMPACTED_TOPIC`] (2, `cleanup.policy=compact`);
/// returns their ids in that order.
pub async fn create_topics(catalog: &Catalog) -> Vec<uuid::Uuid> {
    let mut topic_ids = Vec::new();
    for (name, partitions, configs) in [
        (TOPIC, 3, vec![]),
        (COMPACTED_TOPIC, 2, vec![("cleanup.policy", "compact")]),
    ] {
        let configs = configs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let topic = catalog
            .create_topic(name, partitions, configs)
            .await
            .expect("create topic");
        topic_ids.push(topic.topic_id);
    }
    topic_ids
}

/// Standalone mode's tiers on in-memory stores: catalog, indexer (the in-process sequencer),
/// the ingest buffer with its flusher, the fetch service, and the ingest and fetch handlers.
pub struct Cluster {
    pub meta: Arc<MemoryMetaStore>,
    pub catalog: Arc<Catalog>,
    pub objects: Arc<MemoryObjectStore>,
    pub topics: TopicApi,
    pub indexer: Arc<Indexer>,
    pub fetch: Arc<FetchService>,
    pub ingest: Arc<dyn KafkaHandler>,
    pub fetch_handler: Arc<dyn KafkaHandler>,
    /// Topic ids of [`TOPIC`] and [`COMPACTED_TOPIC`].
    pub topic_ids: Vec<uuid::Uuid>,
    flusher_shutdown: CancellationToken,
    flusher: JoinHandle<()>,
}

impl Cluster {
    /// Wires the tiers as `kafscale standalone` does (src/standalone.rs, src/tiers.rs) and
    /// creates [`TOPIC`] and [`COMPACTED_TOPIC`]. Must run on [`runtime`].
    pub async fn start() -> Cluster {
        let objects = Arc::new(MemoryObjectStore::new());
        let meta = Arc::new(MemoryMetaStore::new());
        let catalog = Arc::new(Catalog::new(meta.clone()));
        let watermarks = Arc::new(Watermarks::new());
        let indexer = Indexer::start(
            catalog.clone(),
            watermarks.clone(),
            IndexerConfig {
                owner_id: "fuzz".into(),
                owner_addr: "in-process".into(),
                lease_ttl: Duration::from_secs(30),
                shard_count: 1,
                ..IndexerConfig::default()
            },
        )
        .await
        .expect("indexer");
        let topics = TopicApi::new(catalog.clone(), topic_settings());
        let topic_ids = create_topics(&catalog).await;
        let buffer = SegmentBuffer::new(IngestConfig::default());
        let sequencer: Arc<dyn Sequencer> = indexer.clone();
        let fetch = FetchService::new(
            catalog.clone(),
            objects.clone() as Arc<dyn ObjectStore>,
            watermarks,
            FetchConfig {
                range_cache_bytes: 8 * 1024 * 1024,
                index_cache_entries: 10_000,
                ..FetchConfig::default()
            },
        );
        let ingest: Arc<dyn KafkaHandler> = Arc::new(IngestHandler::new(
            topics.clone(),
            buffer.clone(),
            sequencer.clone(),
        ));
        let fetch_handler: Arc<dyn KafkaHandler> = Arc::new(FetchHandler::new(fetch.clone()));
        let flusher_shutdown = CancellationToken::new();
        let flusher =
            tokio::spawn(buffer.run_flusher(objects.clone(), sequencer, flusher_shutdown.clone()));
        Cluster {
            meta,
            catalog,
            objects,
            topics,
            indexer,
            fetch,
            ingest,
            fetch_handler,
            topic_ids,
            flusher_shutdown,
            flusher,
        }
    }

    /// Stops the flusher (it flushes what is buffered first); fails the run if it does not
    /// stop.
    pub async fn stop(self) {
        self.flusher_shutdown.cancel();
        self.fetch.stop_waiting();
        match tokio::time::timeout(COMPLETION_BOUND, self.flusher).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("flusher task failed: {e}"),
            Err(_) => panic!("the flusher did not stop"),
        }
    }
}

/// Whether `code` is a Kafka error code (0 or one the protocol defines).
pub fn known_error_code(code: i16) -> bool {
    code == 0 || kafka_protocol::error::ResponseError::try_from_code(code).is_some()
}

/// One record batch of `n` (at least 1) records, one header each, a key on every record or
/// (`keyless_odd`) on every other one, encoded by the kafka-protocol crate (an encoder
/// independent of ours). `producer_id` -1: not idempotent.
pub fn record_batch(
    n: usize,
    compression: Compression,
    producer_id: i64,
    base_sequence: i32,
    keyless_odd: bool,
) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever offset - sequence changes, so the
            // records of a plain producer count up too (the batch's base sequence is then 0).
            sequence: base_sequence.max(0) + i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: (!keyless_odd || i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'v'; 10 + i * 7])),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"x")),
            )]
            .into_iter()
            .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode record batch");
    buf.freeze()
}

/// Fills the cluster: three rounds, each flushed (and so its own segment object) before the
/// next, over every partition, in every compression.
pub async fn fill(cluster: &Cluster) {
    let compressions = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let mut sequence = 0;
    for round in 0..3usize {
        let mut topics = Vec::new();
        for (name, partitions) in [(TOPIC, 3), (COMPACTED_TOPIC, 2)] {
            let mut data = Vec::new();
            for p in 0..partitions {
                let compression = compressions[(round + p as usize) % compressions.len()];
                // Partition 0 of `t` gets an idempotent producer's batches.
                let (pid, seq) = if name == TOPIC && p == 0 {
                    (0, sequence)
                } else {
                    (-1, -1)
                };
                data.push(
                    PartitionProduceData::default()
                        .with_index(p)
                        .with_records(Some(record_batch(
                            2 + round * 3,
                            compression,
                            pid,
                            seq,
                            name == TOPIC,
                        ))),
                );
            }
            topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(name)))
                    .with_partition_data(data),
            );
        }
        sequence += 2 + round as i32 * 3;
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(topics);
        let dispatch = cluster
            .ingest
            .start(
                context(ApiKey::Produce, 9, round as i32),
                RequestKind::Produce(request),
            )
            .await;
        let answer = Started::spawn(ApiKey::Produce, 9, dispatch).finish().await;
        let Some(Ok(kafka_protocol::messages::ResponseKind::Produce(response))) = answer else {
            panic!("fill: produce got {answer:?}");
        };
        for t in &response.responses {
            for p in &t.partition_responses {
                assert_eq!(
                    p.error_code, 0,
                    "fill: {:?}/{} refused: {p:?}",
                    t.name, p.index
                );
            }
        }
    }
}

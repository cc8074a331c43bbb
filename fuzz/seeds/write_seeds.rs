//! Writes the seed corpora (`fuzz/corpus/<target>/`): a few valid inputs per target, built
//! with the kafka-protocol crate's encoders, so fuzzing starts from requests the handlers
//! accept instead of from nothing. Run by `scripts/fuzz.sh --write-seeds` (the files are
//! checked in; rerun after changing the input format or the served versions).
//!
//! Not a fuzz target: a plain program, built by cargo-fuzz with the targets (so it is built
//! with their instrumentation, whose runtime libFuzzer provides).

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
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
    ApiKey, ApiVersionsRequest, BrokerId, DeleteGroupsRequest, DeleteRecordsRequest,
    DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, ProduceRequest, RequestHeader, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;
use kafscale_fetch::{FETCH_APIS, GROUP_APIS};
use kafscale_fuzz::{op, record_batch, served_apis};
use kafscale_ingest::INGEST_APIS;
use kafscale_shared::segment::{BatchMeta, SegmentBuilder};
use kafscale_shared::topic_handler::TOPIC_APIS;
// Links libFuzzer, whose runtime the instrumented code calls into.
use libfuzzer_sys as _;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn topic(name: &str) -> TopicName {
    TopicName(s(name))
}

fn group(name: &str) -> GroupId {
    GroupId(s(name))
}

/// `request` encoded at `version`, or `None` where it uses a field that version lacks.
fn body<R: Encodable>(request: &R, version: i16) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    request.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

struct Corpus {
    dir: PathBuf,
    written: usize,
}

impl Corpus {
    fn new(root: &Path, target: &str) -> Corpus {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        // Regenerate from scratch: stale seeds of an older input format are worse than none.
        for entry in std::fs::read_dir(&dir).expect("read corpus dir") {
            let path = entry.expect("corpus entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            {
                std::fs::remove_file(path).expect("remove old seed");
            }
        }
        Corpus { dir, written: 0 }
    }

    fn write(&mut self, name: &str, data: &[u8]) {
        std::fs::write(self.dir.join(format!("seed-{name}")), data).expect("write seed");
        self.written += 1;
    }
}

fn produce(version: i16, acks: i16, topics: &[(&str, Vec<(i32, Bytes)>)]) -> Option<Vec<u8>> {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(
            topics
                .iter()
                .map(|(name, partitions)| {
                    TopicProduceData::default()
                        .with_name(topic(name))
                        .with_partition_data(
                            partitions
                                .iter()
                                .map(|(p, records)| {
                                    PartitionProduceData::default()
                                        .with_index(*p)
                                        .with_records(Some(records.clone()))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    body(&request, version)
}

/// A placeholder topic id the fetch target replaces with topic `n`'s real id.
fn topic_id(n: u8) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    bytes[15] = n;
    uuid::Uuid::from_bytes(bytes)
}

fn fetch(version: i16, max_wait_ms: i32, parts: &[(u8, &str, i32, i64)]) -> Option<Vec<u8>> {
    let mut request = FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(0)
        .with_topics(
            parts
                .iter()
                .map(|(n, name, partition, offset)| {
                    let mut t = FetchTopic::default().with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(*partition)
                            .with_fetch_offset(*offset)
                            .with_partition_max_bytes(1 << 16),
                    ]);
                    if version >= 13 {
                        t.topic_id = topic_id(*n);
                    } else {
                        t.topic = topic(name);
                    }
                    t
                })
                .collect(),
        );
    if version < 15 {
        request.replica_id = BrokerId(-1);
    }
    body(&request, version)
}

fn list_offsets(version: i16, timestamps: &[(&str, i32, i64)]) -> Option<Vec<u8>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            timestamps
                .iter()
                .map(|(name, p, ts)| {
                    ListOffsetsTopic::default()
                        .with_name(topic(name))
                        .with_partitions(vec![
                            ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(*ts),
                        ])
                })
                .collect(),
        );
    body(&request, version)
}

fn join(version: i16, member: &str, instance: Option<&str>) -> Option<Vec<u8>> {
    let mut request = JoinGroupRequest::default()
        .with_group_id(group("g"))
        .with_session_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"\x00\x01\x00\x00\x00\x01\x00\x01t")),
            JoinGroupRequestProtocol::default()
                .with_name(s("roundrobin"))
                .with_metadata(Bytes::from_static(b"\x00\x01")),
        ]);
    if version >= 1 {
        request.rebalance_timeout_ms = 20_000;
    }
    if version >= 5 {
        request.group_instance_id = instance.map(s);
    }
    body(&request, version)
}

fn sync(version: i16, member: &str, generation: i32, leader: bool) -> Option<Vec<u8>> {
    let mut request = SyncGroupRequest::default()
        .with_group_id(group("g"))
        .with_generation_id(generation)
        .with_member_id(s(member));
    if leader {
        request.assignments = vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(s(member))
                .with_assignment(Bytes::from_static(b"\x00\x01\x00\x00\x00\x01\x00\x01t")),
        ];
    }
    if version >= 5 {
        request.protocol_type = Some(s("consumer"));
        request.protocol_name = Some(s("range"));
    }
    body(&request, version)
}

fn heartbeat(version: i16, member: &str, generation: i32) -> Option<Vec<u8>> {
    body(
        &HeartbeatRequest::default()
            .with_group_id(group("g"))
            .with_generation_id(generation)
            .with_member_id(s(member)),
        version,
    )
}

fn leave(version: i16, member: &str) -> Option<Vec<u8>> {
    let mut request = LeaveGroupRequest::default().with_group_id(group("g"));
    if version >= 3 {
        request.members = vec![MemberIdentity::default().with_member_id(s(member))];
    } else {
        request.member_id = s(member);
    }
    body(&request, version)
}

fn offset_commit(version: i16, member: &str, generation: i32) -> Option<Vec<u8>> {
    let mut request = OffsetCommitRequest::default()
        .with_group_id(group("g"))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic("t"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(5)
                        .with_committed_metadata(Some(s("m"))),
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(2)
                        .with_committed_offset(0),
                ]),
        ]);
    if (2..=4).contains(&version) {
        request.retention_time_ms = -1;
    }
    body(&request, version)
}

fn offset_fetch(version: i16, member: Option<&str>) -> Option<Vec<u8>> {
    let request = if version >= 8 {
        OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(group("g"))
                .with_member_id(if version >= 9 { member.map(s) } else { None })
                .with_member_epoch(-1)
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(topic("t"))
                        .with_partition_indexes(vec![0, 1, 2]),
                ])),
        ])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(group("g"))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(topic("t"))
                    .with_partition_indexes(vec![0, 1, 2]),
            ]))
    };
    body(&request, version)
}

fn groups_seeds(root: &Path) -> usize {
    let apis = &GROUP_APIS;
    let mut corpus = Corpus::new(root, "groups");
    let max = |key: ApiKey| apis.iter().find(|a| a.key == key).map(|a| a.max_version);
    for version in [0i16, 3, 5, 9] {
        let Some(jv) = max(ApiKey::JoinGroup).map(|m| version.min(m)) else {
            continue;
        };
        let sv = jv.min(5);
        let hv = jv.min(4);
        let lv = jv.min(5);
        // A whole consumer's life: join (v4+: twice, the first answer hands out the member
        // id), sync as leader, heartbeat, commit, fetch offsets, describe, list, leave.
        let mut ops = Vec::new();
        let mut push = |key, v, advance, b: Option<Vec<u8>>| {
            if let Some(b) = b {
                ops.extend(op(apis, key, v, advance, &b));
            }
        };
        if jv >= 4 {
            push(ApiKey::JoinGroup, jv, 1, join(jv, "", None));
        }
        push(ApiKey::JoinGroup, jv, 9, join(jv, "$0", None));
        push(ApiKey::SyncGroup, sv, 0, sync(sv, "$0", 1, true));
        push(ApiKey::Heartbeat, hv, 10, heartbeat(hv, "$0", 1));
        push(ApiKey::OffsetCommit, 7, 0, offset_commit(7, "$0", 1));
        push(ApiKey::OffsetFetch, 8, 0, offset_fetch(8, Some("$0")));
        push(
            ApiKey::DescribeGroups,
            5,
            0,
            body(
                &DescribeGroupsRequest::default().with_groups(vec![group("g")]),
                5,
            ),
        );
        push(
            ApiKey::ListGroups,
            4,
            0,
            body(&ListGroupsRequest::default(), 4),
        );
        push(ApiKey::LeaveGroup, lv, 0, leave(lv, "$0"));
        corpus.write(&format!("consumer-v{jv}"), &ops);
    }
    // Two members and a rebalance, one of them static, one session expiring.
    let mut ops = Vec::new();
    for b in [
        op(
            apis,
            ApiKey::JoinGroup,
            5,
            0,
            &join(5, "", Some("static-1")).expect("join"),
        ),
        op(
            apis,
            ApiKey::JoinGroup,
            5,
            1,
            &join(5, "", None).expect("join"),
        ),
        op(
            apis,
            ApiKey::JoinGroup,
            5,
            0,
            &join(5, "$1", None).expect("join"),
        ),
        op(
            apis,
            ApiKey::JoinGroup,
            5,
            9,
            &join(5, "$0", Some("static-1")).expect("join"),
        ),
        op(
            apis,
            ApiKey::SyncGroup,
            5,
            0,
            &sync(5, "$0", 1, true).expect("sync"),
        ),
        op(
            apis,
            ApiKey::SyncGroup,
            5,
            9,
            &sync(5, "$1", 1, false).expect("sync"),
        ),
        op(
            apis,
            ApiKey::Heartbeat,
            4,
            15,
            &heartbeat(4, "$1", 1).expect("heartbeat"),
        ),
        op(
            apis,
            ApiKey::Heartbeat,
            4,
            0,
            &heartbeat(4, "$0", 1).expect("heartbeat"),
        ),
    ] {
        ops.extend(b);
    }
    corpus.write("rebalance", &ops);
    // Admin-side requests on an empty coordinator.
    let mut ops = Vec::new();
    for (key, v, b) in [
        (
            ApiKey::FindCoordinator,
            3,
            body(&FindCoordinatorRequest::default().with_key(s("g")), 3),
        ),
        (
            ApiKey::FindCoordinator,
            4,
            body(
                &FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")]),
                4,
            ),
        ),
        (ApiKey::OffsetCommit, 2, offset_commit(2, "", -1)),
        (ApiKey::OffsetFetch, 1, offset_fetch(1, None)),
        (ApiKey::OffsetFetch, 9, offset_fetch(9, None)),
        (
            ApiKey::OffsetDelete,
            0,
            body(
                &OffsetDeleteRequest::default()
                    .with_group_id(group("g"))
                    .with_topics(vec![
                        OffsetDeleteRequestTopic::default()
                            .with_name(topic("t"))
                            .with_partitions(vec![OffsetDeleteRequestPartition::default()]),
                    ]),
                0,
            ),
        ),
        (
            ApiKey::DeleteGroups,
            2,
            body(
                &DeleteGroupsRequest::default().with_groups_names(vec![group("g")]),
                2,
            ),
        ),
        (
            ApiKey::ListGroups,
            0,
            body(&ListGroupsRequest::default(), 0),
        ),
        (
            ApiKey::DescribeGroups,
            0,
            body(
                &DescribeGroupsRequest::default().with_groups(vec![group("g")]),
                0,
            ),
        ),
    ] {
        ops.extend(op(apis, key, v, 0, &b.expect("encode")));
    }
    corpus.write("admin", &ops);
    corpus.written
}

fn produce_seeds(root: &Path) -> usize {
    let apis = &INGEST_APIS;
    let mut corpus = Corpus::new(root, "produce");
    let compressions = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];
    for (i, (name, compression)) in compressions.iter().enumerate() {
        let version = [3i16, 7, 9, 11, 5][i];
        let b = produce(
            version,
            -1,
            &[
                ("t", vec![(0, record_batch(3, *compression, -1, -1, true))]),
                ("c", vec![(1, record_batch(2, *compression, -1, -1, false))]),
            ],
        )
        .expect("produce");
        corpus.write(
            &format!("produce-v{version}-{name}"),
            &op(apis, ApiKey::Produce, version, 0, &b),
        );
    }
    // An idempotent producer: its id, two batches in sequence, a duplicate, a gap; then
    // DeleteRecords and a batch to an auto-created topic with acks=0.
    let mut ops = Vec::new();
    let init = body(
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(-1),
        4,
    )
    .expect("init");
    ops.extend(op(apis, ApiKey::InitProducerId, 4, 0, &init));
    for (seq, advance) in [(0, 0), (3, 5), (3, 0), (9, 0)] {
        let b = produce(
            9,
            -1,
            &[(
                "t",
                vec![(2, record_batch(3, Compression::None, 0, seq, true))],
            )],
        )
        .expect("produce");
        ops.extend(op(apis, ApiKey::Produce, 9, advance, &b));
    }
    let delete = body(
        &DeleteRecordsRequest::default()
            .with_timeout_ms(1_000)
            .with_topics(vec![
                DeleteRecordsTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![
                        DeleteRecordsPartition::default()
                            .with_partition_index(2)
                            .with_offset(2),
                    ]),
            ]),
        2,
    )
    .expect("delete records");
    ops.extend(op(apis, ApiKey::DeleteRecords, 2, 0, &delete));
    let b = produce(
        8,
        0,
        &[(
            "new-topic",
            vec![(1, record_batch(1, Compression::Lz4, -1, -1, true))],
        )],
    )
    .expect("produce");
    ops.extend(op(apis, ApiKey::Produce, 8, 0, &b));
    corpus.write("idempotent-and-delete", &ops);
    // A keyless record to the compacted topic, a bad partition, two batches in one partition.
    let mut two = record_batch(1, Compression::None, -1, -1, true).to_vec();
    two.extend_from_slice(&record_batch(1, Compression::None, -1, -1, true));
    let mut keyless = produce(
        11,
        1,
        &[
            (
                "c",
                vec![(0, record_batch(2, Compression::Zstd, -1, -1, true))],
            ),
            (
                "t",
                vec![
                    (7, record_batch(1, Compression::None, -1, -1, true)),
                    (1, Bytes::from(two)),
                ],
            ),
        ],
    )
    .expect("produce");
    // Ask for CRC fix-ups (bit 7 of the version byte).
    let mut o = op(apis, ApiKey::Produce, 11, 0, &keyless);
    o[1] |= 0x80;
    corpus.write("refusals", &o);
    keyless.truncate(keyless.len() / 2);
    corpus.write("truncated", &op(apis, ApiKey::Produce, 11, 0, &keyless));
    corpus.written
}

fn fetch_seeds(root: &Path) -> usize {
    let apis = &FETCH_APIS;
    let mut corpus = Corpus::new(root, "fetch");
    for version in [4i16, 7, 11, 12, 13, 16] {
        let mut ops = Vec::new();
        let b = fetch(
            version,
            0,
            &[(0, "t", 0, 0), (0, "t", 1, 3), (1, "c", 0, 0)],
        )
        .expect("fetch");
        ops.extend(op(apis, ApiKey::Fetch, version, 0, &b));
        // A long poll past the end, then offsets out of range on both sides.
        let b = fetch(version, 500, &[(0, "t", 2, 1_000)]).expect("fetch");
        ops.extend(op(apis, ApiKey::Fetch, version, 3, &b));
        let b = fetch(version, 0, &[(0, "t", 0, -5), (1, "c", 1, 7)]).expect("fetch");
        ops.extend(op(apis, ApiKey::Fetch, version, 0, &b));
        corpus.write(&format!("fetch-v{version}"), &ops);
    }
    for version in [1i16, 4, 6, 8] {
        let b = list_offsets(
            version,
            &[
                ("t", 0, -1),
                ("t", 1, -2),
                ("c", 0, 1_700_000_000_003),
                ("t", 2, -3),
                ("x", 0, -1),
            ],
        )
        .expect("list offsets");
        corpus.write(
            &format!("list-offsets-v{version}"),
            &op(apis, ApiKey::ListOffsets, version, 0, &b),
        );
    }
    corpus.written
}

/// Request frames (header and body, no length prefix) at every served version of the APIs
/// with a seed body above, and an all-zero body (often a valid, empty request) for the rest.
fn request_frame_seeds(root: &Path) -> usize {
    let mut corpus = Corpus::new(root, "request_frame");
    for api in served_apis().into_iter().chain(
        [kafka_protocol::messages::ApiKey::ApiVersions]
            .map(|k| kafscale_shared::wire::ApiSupport::new(k, 0, 4)),
    ) {
        for version in api.min_version..=api.max_version {
            let b = match api.key {
                ApiKey::Produce => produce(
                    version,
                    1,
                    &[(
                        "t",
                        vec![(0, record_batch(2, Compression::Gzip, -1, -1, true))],
                    )],
                ),
                ApiKey::Fetch => fetch(version, 100, &[(0, "t", 0, 0)]),
                ApiKey::ListOffsets => list_offsets(version, &[("t", 0, -1)]),
                ApiKey::JoinGroup => join(version, "", None),
                ApiKey::SyncGroup => sync(version, "m", 1, true),
                ApiKey::Heartbeat => heartbeat(version, "m", 1),
                ApiKey::LeaveGroup => leave(version, "m"),
                ApiKey::OffsetCommit => offset_commit(version, "m", 1),
                ApiKey::OffsetFetch => offset_fetch(version, Some("m")),
                ApiKey::Metadata => body(
                    &MetadataRequest::default().with_topics(Some(vec![
                        MetadataRequestTopic::default().with_name(Some(topic("t"))),
                    ])),
                    version,
                ),
                ApiKey::ApiVersions => body(
                    &ApiVersionsRequest::default()
                        .with_client_software_name(s("fuzz"))
                        .with_client_software_version(s("1")),
                    version,
                ),
                _ => Some(vec![0u8; 24]),
            };
            let Some(b) = b else { continue };
            let mut frame = BytesMut::new();
            let header = RequestHeader::default()
                .with_request_api_key(api.key as i16)
                .with_request_api_version(version)
                .with_correlation_id(version as i32)
                .with_client_id(Some(s("fuzz")));
            if header
                .encode(&mut frame, api.key.request_header_version(version))
                .is_err()
            {
                continue;
            }
            let mut frame = frame.to_vec();
            frame.extend_from_slice(&b);
            corpus.write(&format!("{:?}-v{version}", api.key), &frame);
        }
    }
    corpus.written
}

fn record_batch_seeds(root: &Path) -> usize {
    let mut corpus = Corpus::new(root, "record_batch");
    for (name, compression) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        // Flags byte first: 1 asks for CRC fix-ups.
        let mut data = vec![1u8];
        data.extend_from_slice(&record_batch(4, compression, -1, -1, true));
        corpus.write(name, &data);
    }
    let mut two = vec![0u8];
    two.extend_from_slice(&record_batch(2, Compression::None, 7, 0, true));
    two.extend_from_slice(&record_batch(3, Compression::Zstd, 7, 2, true));
    corpus.write("two-idempotent", &two);
    corpus.written
}

fn segment_seeds(root: &Path) -> usize {
    let mut corpus = Corpus::new(root, "segment");
    let meta = |records, ts| BatchMeta {
        record_count: records,
        first_timestamp: ts,
        max_timestamp: ts + 5,
    };
    let a = uuid::Uuid::from_u128(0xa);
    let b = uuid::Uuid::from_u128(0xb);
    let mut builder = SegmentBuilder::new();
    builder.append(
        a,
        0,
        record_batch(2, Compression::None, -1, -1, true),
        meta(2, 1_000),
    );
    builder.append(
        b,
        1,
        record_batch(1, Compression::Lz4, -1, -1, true),
        meta(1, 2_000),
    );
    builder.append(
        a,
        0,
        record_batch(3, Compression::None, -1, -1, true),
        meta(3, 3_000),
    );
    let segment = builder.finish();
    let bytes: Vec<u8> = segment.data.to_vec();
    // Flags byte first: 1 asks for the footer CRC fix-up; the rest of it picks a suffix.
    for (name, flags) in [("whole", 0u8), ("fix-crc", 1), ("suffix", 0x41)] {
        let mut data = vec![flags];
        data.extend_from_slice(&bytes);
        corpus.write(name, &data);
    }
    let mut empty = SegmentBuilder::new();
    empty.append(
        a,
        3,
        record_batch(1, Compression::None, -1, -1, true),
        meta(1, 0),
    );
    let mut data = vec![0u8];
    data.extend_from_slice(&empty.finish().data);
    corpus.write("one-run", &data);
    corpus.written
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    for (target, write) in [
        ("request_frame", request_frame_seeds as fn(&Path) -> usize),
        ("produce", produce_seeds),
        ("fetch", fetch_seeds),
        ("groups", groups_seeds),
        ("record_batch", record_batch_seeds),
        ("segment", segment_seeds),
        ("topics", topics_seeds),
        ("commit", commit_seeds),
        ("meta_items", meta_items_seeds),
        ("sasl", sasl_seeds),
    ] {
        let n = write(&root);
        println!("{target}: {n} seeds");
    }
}

/// SASL exchanges against the `sasl` target's authenticator: PLAIN right and wrong, complete
/// SCRAM exchanges of both mechanisms (made by the crate's client against the real server),
/// an unknown user, and a message after the end.
fn sasl_seeds(root: &Path) -> usize {
    use kafscale_sasl::{ScramClient, ScramMechanism};
    fn input(mechanism: u8, messages: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![mechanism];
        for m in messages {
            out.extend_from_slice(&(m.len() as u16).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }
    let mut corpus = Corpus::new(root, "sasl");
    corpus.write("plain", &input(0, &[b"\0user\0pencil"]));
    corpus.write("plain-authzid", &input(0, &[b"user\0user\0pencil"]));
    corpus.write(
        "plain-wrong",
        &input(0, &[b"\0user\0pencil!", b"\0user\0pencil"]),
    );
    let auth = kafscale_fuzz::sasl_authenticator();
    for (pick, mechanism) in [(1u8, ScramMechanism::Sha256), (2, ScramMechanism::Sha512)] {
        for (name, user) in [("known", "user"), ("unknown", "nobody")] {
            let mut client = ScramClient::new(mechanism, user, "pencil", "rOprNGfwEbeRWgbNEkqO");
            let mut session = auth.start(mechanism.name()).expect("enabled");
            let first = client.client_first();
            let server_first = kafscale_fuzz::runtime()
                .block_on(session.step(first.as_bytes()))
                .expect("a server-first message");
            let server_first = String::from_utf8(server_first.response.to_vec()).expect("text");
            let last = client
                .client_final(&server_first)
                .expect("a client-final message");
            corpus.write(
                &format!("{}-{name}", mechanism.name()),
                &input(pick, &[first.as_bytes(), last.as_bytes(), b"n,,n=user,r=x"]),
            );
        }
    }
    corpus.written
}

/// A topic's life through the topic APIs at each version: create (with configs), describe,
/// alter, grow, list, delete; and the same APIs on the compacted topic and a missing one.
fn topics_seeds(root: &Path) -> usize {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{
        AlterConfigsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
        DescribeClusterRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
        alter_configs_request as alter, incremental_alter_configs_request as incremental,
    };
    const TOPIC_RESOURCE: i8 = 2;
    const BROKER_RESOURCE: i8 = 4;
    let apis = &TOPIC_APIS;
    let mut corpus = Corpus::new(root, "topics");
    let version_of = |key: ApiKey, wanted: i16| {
        let api = apis.iter().find(|a| a.key == key).expect("a topic API");
        wanted.clamp(api.min_version, api.max_version)
    };
    for level in [0i16, 2, 4, 7, 12] {
        let mut ops = Vec::new();
        let mut push = |key: ApiKey, advance: u8, make: &dyn Fn(i16) -> Option<Vec<u8>>| {
            let v = version_of(key, level);
            if let Some(b) = make(v) {
                ops.extend(op(apis, key, v, advance, &b));
            }
        };
        push(ApiKey::CreateTopics, 0, &|v| {
            let created = CreatableTopic::default()
                .with_name(topic("n"))
                .with_num_partitions(4)
                .with_replication_factor(-1)
                .with_configs(
                    [
                        ("retention.ms", "60000"),
                        ("cleanup.policy", "compact,delete"),
                    ]
                    .map(|(name, value)| {
                        CreatableTopicConfig::default()
                            .with_name(s(name))
                            .with_value(Some(s(value)))
                    })
                    .to_vec(),
                );
            let bad = CreatableTopic::default()
                .with_name(topic("bad/name"))
                .with_num_partitions(0)
                .with_replication_factor(3);
            body(
                &CreateTopicsRequest::default()
                    .with_topics(vec![created, bad])
                    .with_timeout_ms(30_000),
                v,
            )
        });
        push(ApiKey::Metadata, 0, &|v| {
            let topics = (v >= 1).then(|| {
                ["t", "n", "absent"]
                    .iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(topic(n))))
                    .collect()
            });
            body(&MetadataRequest::default().with_topics(topics), v)
        });
        push(ApiKey::DescribeConfigs, 0, &|v| {
            let resources = vec![
                DescribeConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(s("n")),
                DescribeConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(s("c"))
                    .with_configuration_keys(Some(vec![s("cleanup.policy"), s("retention.bytes")])),
                DescribeConfigsResource::default()
                    .with_resource_type(BROKER_RESOURCE)
                    .with_resource_name(s("")),
            ];
            body(
                &DescribeConfigsRequest::default()
                    .with_resources(resources)
                    .with_include_synonyms(v >= 1),
                v,
            )
        });
        push(ApiKey::AlterConfigs, 0, &|v| {
            let resource = alter::AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(s("t"))
                .with_configs(vec![
                    alter::AlterableConfig::default()
                        .with_name(s("retention.bytes"))
                        .with_value(Some(s("1048576"))),
                ]);
            body(
                &AlterConfigsRequest::default().with_resources(vec![resource]),
                v,
            )
        });
        push(ApiKey::IncrementalAlterConfigs, 0, &|v| {
            let resource = incremental::AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(s("c"))
                .with_configs(vec![
                    incremental::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_config_operation(0)
                        .with_value(Some(s("-1"))),
                    incremental::AlterableConfig::default()
                        .with_name(s("cleanup.policy"))
                        .with_config_operation(1),
                ]);
            body(
                &IncrementalAlterConfigsRequest::default().with_resources(vec![resource]),
                v,
            )
        });
        push(ApiKey::CreatePartitions, 0, &|v| {
            let grow = |name: &str, count| {
                CreatePartitionsTopic::default()
                    .with_name(topic(name))
                    .with_count(count)
            };
            body(
                &CreatePartitionsRequest::default()
                    .with_topics(vec![grow("t", 5), grow("c", 1), grow("absent", 3)])
                    .with_timeout_ms(30_000),
                v,
            )
        });
        push(ApiKey::DescribeCluster, 0, &|v| {
            body(&DescribeClusterRequest::default(), v)
        });
        push(ApiKey::DeleteTopics, 0, &|v| {
            let request = if v >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![
                    DeleteTopicState::default().with_name(Some(topic("n"))),
                ])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![topic("n"), topic("absent")])
            };
            body(&request.with_timeout_ms(30_000), v)
        });
        corpus.write(&format!("life-v{level}"), &ops);
    }
    corpus.written
}

/// The commit API's routes with valid bodies: a new segment (a plain batch in every
/// partition of `t`, the next batch of the snapshot's idempotent producer), a segment the
/// snapshot already committed, DeleteRecords, and feed queries.
fn commit_seeds(root: &Path) -> usize {
    use kafscale_fuzz::snapshot::{commit_batch, fixed_topic_id};
    use kafscale_shared::sequencer::{CommitBatch, CommitRequest, DeleteRecordsRequest};
    let mut corpus = Corpus::new(root, "commit");
    let entry = |route: u8, advance: u8, body: &[u8]| {
        let mut out = vec![route, advance];
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    };
    let batch = |partition, byte_start, producer_id, base_sequence| {
        commit_batch(
            fixed_topic_id(0),
            partition,
            byte_start,
            producer_id,
            base_sequence,
        )
    };
    let commit = |key: &str, batches: Vec<CommitBatch>| {
        let request = CommitRequest {
            segment_key: key.to_string(),
            shard: 0,
            segment_size: 100 * batches.len() as u64,
            batches,
        };
        serde_json::to_vec(&request).expect("json")
    };
    let fresh = "segments/7f/1800000000000-0123456789abcdef0123456789abcdef.kseg";
    let plain = commit(
        fresh,
        vec![
            batch(0, 0, -1, -1),
            batch(1, 100, -1, -1),
            batch(2, 200, -1, -1),
        ],
    );
    let idempotent = commit(
        "segments/7f/1800000000001-0123456789abcdef0123456789abcdee.kseg",
        vec![batch(0, 0, 0, 15), batch(0, 100, 0, 17)],
    );
    let known = commit(
        "segments/00/0000000000001-00000000000000000000000000000000.kseg",
        vec![batch(0, 0, -1, -1)],
    );
    let delete = serde_json::to_vec(&DeleteRecordsRequest {
        shard: 0,
        topic_id: fixed_topic_id(0),
        partition: 1,
        offset: 2,
    })
    .expect("json");
    let mut all = Vec::new();
    for (name, data) in [
        ("commit", entry(0, 0, &plain)),
        (
            "commit-twice",
            [entry(0, 0, &plain), entry(0, 5, &plain)].concat(),
        ),
        ("idempotent", entry(0, 0, &idempotent)),
        ("known-segment", entry(0, 0, &known)),
        ("delete-records", entry(1, 0, &delete)),
        ("feed", entry(2, 0, b"after=0&wait_ms=100")),
        ("feed-now", entry(2, 0, b"")),
    ] {
        all.extend_from_slice(&data);
        corpus.write(name, &data);
    }
    corpus.write("all", &all);
    corpus.written
}

/// `text` with every number outside a JSON string replaced by `by`.
fn numbers_replaced(text: &str, by: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped, mut in_number) = (false, false, false);
    for ch in text.chars() {
        if in_string {
            out.push(ch);
            in_string = !(ch == '"' && !escaped);
            escaped = ch == '\\' && !escaped;
            continue;
        }
        let numeric = ch.is_ascii_digit() || ch == '-';
        if numeric {
            if !in_number {
                out.push_str(by);
            }
            in_number = true;
            continue;
        }
        in_number = false;
        in_string = ch == '"';
        out.push(ch);
    }
    out
}

/// For every item of the snapshot: its removal, and its value with every number at i64's
/// extremes (what a corrupt or hostile store would hold).
fn meta_items_seeds(root: &Path) -> usize {
    let snapshot = kafscale_fuzz::snapshot::snapshot();
    let mut corpus = Corpus::new(root, "meta_items");
    let entry = |slot: usize, value: Option<&[u8]>| {
        let mut out = vec![slot as u8];
        match value {
            Some(v) => {
                out.extend_from_slice(&(v.len() as u16).to_be_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&u16::MAX.to_be_bytes()),
        }
        out
    };
    assert!(snapshot.items.len() <= 256, "slots are one byte");
    for (slot, (key, value)) in snapshot.items.iter().enumerate() {
        let label: String = format!("{}-{}", key.pk, key.sk)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(60)
            .collect();
        corpus.write(&format!("{slot:03}-remove-{label}"), &entry(slot, None));
        let text = String::from_utf8_lossy(value);
        for (name, by) in [
            ("max", "9223372036854775807"),
            ("min", "-9223372036854775808"),
        ] {
            let changed = numbers_replaced(&text, by);
            corpus.write(
                &format!("{slot:03}-{name}-{label}"),
                &entry(slot, Some(changed.as_bytes())),
            );
        }
    }
    corpus.written
}

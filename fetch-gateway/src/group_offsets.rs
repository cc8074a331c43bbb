//! Committed offsets of consumer groups: FindCoordinator, OffsetCommit and OffsetFetch.
//!
//! Offsets live in the metadata store (keyed by group, topic id and partition), so any fetch
//! replica can serve them and they survive every process. This is the part of group
//! coordination that consumers with manually assigned partitions need (`assign()` + `commit()`,
//! `kcat` with stored offsets): commits that carry no generation. Group membership (JoinGroup,
//! SyncGroup, Heartbeat, ...) is not served yet, so a commit naming a generation is refused
//! with `ILLEGAL_GENERATION`, as Kafka refuses it for a group that has no members.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, RequestKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_shared::catalog::{
    CommittedOffset, ITEM_FORMAT, MAX_GROUP_ID_BYTES, TopicRecord, now_ms,
};
use kafscale_shared::topic_api::{NODE_ID, TopicApi};
use kafscale_shared::wire::{ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext};
use tracing::{Instrument, debug, warn};
use uuid::Uuid;

/// FindCoordinator v0-6 (v4+ batched keys), OffsetCommit v2-9, OffsetFetch v1-9 (v8+ batched
/// groups).
pub const GROUP_OFFSET_APIS: [ApiSupport; 3] = [
    ApiSupport::new(ApiKey::OffsetCommit, 2, 9),
    ApiSupport::new(ApiKey::OffsetFetch, 1, 9),
    ApiSupport::new(ApiKey::FindCoordinator, 0, 6),
];

/// Kafka's default `offset.metadata.max.bytes`.
const MAX_METADATA_BYTES: usize = 4096;

/// Serves committed offsets from the catalog.
pub struct GroupOffsetsHandler {
    topics: TopicApi,
}

impl GroupOffsetsHandler {
    pub fn new(topics: TopicApi) -> Self {
        GroupOffsetsHandler { topics }
    }
}

fn code(e: Option<ResponseError>) -> i16 {
    e.map_or(0, |e| e.code())
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn valid_group(group: &str) -> bool {
    !group.is_empty() && group.len() <= MAX_GROUP_ID_BYTES
}

impl GroupOffsetsHandler {
    fn find_coordinator(
        &self,
        request: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let settings = self.topics.settings();
        let answer = |key: &str, key_type: i8| -> (Option<ResponseError>, Option<&'static str>) {
            match key_type {
                0 if valid_group(key) => (None, None),
                0 => (
                    Some(ResponseError::InvalidGroupId),
                    Some("invalid group id"),
                ),
                // Transactions are not supported (docs/protocol.md), nor share groups.
                _ => (
                    Some(ResponseError::CoordinatorNotAvailable),
                    Some("only consumer-group coordinators are served"),
                ),
            }
        };
        let mut response = FindCoordinatorResponse::default();
        if version >= 4 {
            response.coordinators = request
                .coordinator_keys
                .iter()
                .map(|key| {
                    let (error, message) = answer(key, request.key_type);
                    Coordinator::default()
                        .with_key(key.clone())
                        .with_node_id(BrokerId(if error.is_some() { -1 } else { NODE_ID }))
                        .with_host(str_bytes(if error.is_some() {
                            ""
                        } else {
                            &settings.advertised_host
                        }))
                        .with_port(if error.is_some() {
                            -1
                        } else {
                            settings.advertised_port
                        })
                        .with_error_code(code(error))
                        .with_error_message(message.map(str_bytes))
                })
                .collect();
        } else {
            let (error, message) = answer(&request.key, request.key_type);
            response.error_code = code(error);
            response.error_message = message.map(str_bytes);
            if error.is_none() {
                response.node_id = BrokerId(NODE_ID);
                response.host = str_bytes(&settings.advertised_host);
                response.port = settings.advertised_port;
            } else {
                response.node_id = BrokerId(-1);
                response.port = -1;
            }
        }
        response
    }

    async fn offset_commit(&self, request: OffsetCommitRequest) -> OffsetCommitResponse {
        let group = request.group_id.0.to_string();
        let whole_error = if !valid_group(&group) {
            Some(ResponseError::InvalidGroupId)
        } else if request.generation_id_or_member_epoch >= 0 || !request.member_id.is_empty() {
            // Only "simple" commits exist until group membership is served.
            Some(ResponseError::IllegalGeneration)
        } else {
            None
        };
        let mut answers: Vec<OffsetCommitResponseTopic> = Vec::new();
        let mut writes = Vec::new();
        // (topic index, partition index) of each write, to report a store failure.
        let mut written = Vec::new();
        for topic in &request.topics {
            let name = topic.name.0.to_string();
            let record = match whole_error {
                Some(_) => None,
                None => match self.topics.catalog().topic(&name).await {
                    Ok(t) => t,
                    Err(e) => {
                        warn!(group, topic = name, error = %e, "offset commit: topic lookup failed");
                        None
                    }
                },
            };
            let mut partitions = Vec::new();
            for p in &topic.partitions {
                let error = whole_error.or_else(|| match &record {
                    Some(t) if p.partition_index >= 0 && p.partition_index < t.partitions => {
                        let too_long = p
                            .committed_metadata
                            .as_ref()
                            .is_some_and(|m| m.len() > MAX_METADATA_BYTES);
                        too_long.then_some(ResponseError::OffsetMetadataTooLarge)
                    }
                    _ => Some(ResponseError::UnknownTopicOrPartition),
                });
                if error.is_none()
                    && let Some(t) = &record
                {
                    written.push((answers.len(), partitions.len()));
                    writes.push((
                        t.topic_id,
                        p.partition_index,
                        CommittedOffset {
                            format: ITEM_FORMAT,
                            topic: name.clone(),
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                            committed_at_ms: now_ms(),
                        },
                    ));
                }
                partitions.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(error)),
                );
            }
            answers.push(
                OffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions),
            );
        }
        if !writes.is_empty() {
            let count = writes.len();
            if let Err(e) = self.topics.catalog().commit_offsets(&group, writes).await {
                warn!(group, error = %e, "offset commit failed");
                // Retriable: the client looks the coordinator up again and retries.
                for (t, p) in written {
                    answers[t].partitions[p].error_code =
                        ResponseError::CoordinatorNotAvailable.code();
                }
            } else {
                debug!(group, partitions = count, "offsets committed");
            }
        }
        OffsetCommitResponse::default().with_topics(answers)
    }

    /// The committed offsets of one group: for the named topics and partitions, or all.
    async fn fetch_group(
        &self,
        group: &str,
        wanted: Option<Vec<(TopicName, Vec<i32>)>>,
    ) -> Result<Vec<(TopicName, Vec<(i32, Option<CommittedOffset>)>)>, ResponseError> {
        if !valid_group(group) {
            return Err(ResponseError::InvalidGroupId);
        }
        let catalog = self.topics.catalog();
        let unavailable = |e: kafscale_shared::catalog::CatalogError| {
            warn!(group, error = %e, "offset fetch failed");
            ResponseError::CoordinatorNotAvailable
        };
        match wanted {
            Some(topics) => {
                let mut out = Vec::with_capacity(topics.len());
                for (name, partitions) in topics {
                    let record: Option<TopicRecord> =
                        catalog.topic(&name.0).await.map_err(unavailable)?;
                    let mut found = Vec::with_capacity(partitions.len());
                    for p in partitions {
                        let offset = match &record {
                            Some(t) => catalog
                                .committed_offset(group, t.topic_id, p)
                                .await
                                .map_err(unavailable)?,
                            None => None,
                        };
                        found.push((p, offset));
                    }
                    out.push((name, found));
                }
                Ok(out)
            }
            None => {
                let all = catalog
                    .committed_offsets(group)
                    .await
                    .map_err(unavailable)?;
                let mut by_topic: HashMap<Uuid, Vec<(i32, Option<CommittedOffset>)>> =
                    HashMap::new();
                for (topic_id, partition, offset) in all {
                    by_topic
                        .entry(topic_id)
                        .or_default()
                        .push((partition, Some(offset)));
                }
                let mut out = Vec::new();
                for (topic_id, partitions) in by_topic {
                    // Offsets of deleted topics are not reported.
                    if let Some(t) = catalog.topic_by_id(topic_id).await.map_err(unavailable)? {
                        out.push((TopicName(str_bytes(&t.name)), partitions));
                    }
                }
                out.sort_by(|a, b| a.0.0.cmp(&b.0.0));
                Ok(out)
            }
        }
    }

    async fn offset_fetch(&self, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        let mut response = OffsetFetchResponse::default();
        if version >= 8 {
            for g in request.groups {
                let group = g.group_id.0.to_string();
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let mut answer = OffsetFetchResponseGroup::default().with_group_id(g.group_id);
                match self.fetch_group(&group, wanted).await {
                    Ok(topics) => {
                        answer.topics = topics
                            .into_iter()
                            .map(|(name, partitions)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(name)
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|(p, o)| {
                                                let (offset, epoch, metadata) = position(o);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(&metadata)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect();
                    }
                    Err(e) => answer.error_code = e.code(),
                }
                response.groups.push(answer);
            }
        } else {
            let group = request.group_id.0.to_string();
            let wanted: Option<Vec<(TopicName, Vec<i32>)>> = request.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let asked = wanted.clone().unwrap_or_default();
            match self.fetch_group(&group, wanted).await {
                Ok(topics) => {
                    response.topics = topics
                        .into_iter()
                        .map(|(name, partitions)| {
                            OffsetFetchResponseTopic::default()
                                .with_name(name)
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|(p, o)| {
                                            let (offset, epoch, metadata) = position(o);
                                            OffsetFetchResponsePartition::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(Some(str_bytes(&metadata)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                }
                // v1 has no top-level error code: report it on every partition asked for.
                Err(e) if version < 2 => {
                    response.topics = asked
                        .into_iter()
                        .map(|(name, partitions)| {
                            OffsetFetchResponseTopic::default()
                                .with_name(name)
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|p| {
                                            OffsetFetchResponsePartition::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(-1)
                                                .with_metadata(Some(str_bytes("")))
                                                .with_error_code(e.code())
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                }
                Err(e) => response.error_code = e.code(),
            }
        }
        response
    }
}

/// (offset, leader epoch, metadata) of a committed position, or Kafka's "none" (-1, -1, "").
fn position(offset: Option<CommittedOffset>) -> (i64, i32, String) {
    match offset {
        Some(o) => (o.offset, o.leader_epoch, o.metadata.unwrap_or_default()),
        None => (-1, -1, String::new()),
    }
}

#[async_trait::async_trait]
impl KafkaHandler for GroupOffsetsHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        GROUP_OFFSET_APIS.to_vec()
    }

    async fn start(&self, ctx: RequestContext, request: RequestKind) -> Dispatch {
        let this = GroupOffsetsHandler {
            topics: self.topics.clone(),
        };
        let v = ctx.api_version;
        let span = tracing::info_span!("group_offsets_api", api = ?ctx.api_key, connection = ctx.connection_id);
        match request {
            RequestKind::FindCoordinator(r) => Dispatch::ready(this.find_coordinator(r, v)),
            RequestKind::OffsetCommit(r) => Dispatch::Respond(Box::pin(
                async move { Ok(this.offset_commit(r).await.into()) }.instrument(span),
            )),
            RequestKind::OffsetFetch(r) => Dispatch::Respond(Box::pin(
                async move { Ok(this.offset_fetch(r, v).await.into()) }.instrument(span),
            )),
            _ => {
                let api = ctx.api_key;
                Dispatch::Respond(Box::pin(async move {
                    Err(HandlerError::Fatal(format!(
                        "group offsets handler cannot serve {api:?}"
                    )))
                }))
            }
        }
    }
}

//! The rules of the topic APIs (see [`super::enforce`]): Produce (WRITE), Fetch (READ),
//! ListOffsets and Metadata (DESCRIBE), CreateTopics (CREATE on the cluster or the topic),
//! DeleteTopics and DeleteRecords (DELETE), CreatePartitions (ALTER) and the config APIs
//! (DESCRIBE_CONFIGS / ALTER_CONFIGS on the topic, or on the cluster for broker configs).

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    FetchRequest, FetchResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_acl::{CLUSTER_NAME, Operation, ResourceType};
use uuid::Uuid;

use super::authorizer::RequestAuthz;
use super::enforce::{Context, Plan, Resolved, fixup, narrowed, resolve_ids};
use crate::topic_api::catalog_error_code;

const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;

fn may(cx: &Context, operation: Operation, topic: &str) -> bool {
    cx.authz.allowed(operation, ResourceType::Topic, topic)
}

fn message(code: ResponseError) -> Option<StrBytes> {
    Some(StrBytes::from_static_str(match code {
        ResponseError::TopicAuthorizationFailed => "Topic authorization failed.",
        ResponseError::ClusterAuthorizationFailed => "Cluster authorization failed.",
        _ => "Authorization check could not be made.",
    }))
}

pub(super) fn produce(cx: &Context, mut r: ProduceRequest) -> Plan {
    let txn_denied = r.transactional_id.as_ref().is_some_and(|id| {
        !cx.authz.allowed(
            Operation::Write,
            ResourceType::TransactionalId,
            id.0.as_str(),
        )
    });
    let code = if txn_denied {
        ResponseError::TransactionalIdAuthorizationFailed
    } else {
        TOPIC_DENIED
    };
    let (allowed, denied): (Vec<TopicProduceData>, Vec<TopicProduceData>) =
        std::mem::take(&mut r.topic_data)
            .into_iter()
            .partition(|t| !txn_denied && may(cx, Operation::Write, t.name.0.as_str()));
    let refused: Vec<TopicProduceResponse> =
        denied.iter().map(|t| produce_refusal(t, code)).collect();
    if allowed.is_empty() && !refused.is_empty() {
        if r.acks == 0 {
            return Plan::Silent;
        }
        let mut response = ProduceResponse::default();
        response.responses = refused;
        return Plan::Answer(response.into());
    }
    r.topic_data = allowed;
    Plan::Forward(
        r.into(),
        fixup!(Produce, move |p: &mut ProduceResponse| p
            .responses
            .extend(refused)),
    )
}

fn produce_refusal(t: &TopicProduceData, code: ResponseError) -> TopicProduceResponse {
    let mut out = TopicProduceResponse::default();
    out.name = t.name.clone();
    out.topic_id = t.topic_id;
    out.partition_responses = t
        .partition_data
        .iter()
        .map(|p| {
            let mut r = PartitionProduceResponse::default();
            r.index = p.index;
            r.error_code = code.code();
            r.error_message = message(code);
            r.base_offset = -1;
            r.log_append_time_ms = -1;
            r.log_start_offset = -1;
            r
        })
        .collect();
    out
}

pub(super) fn fetch(cx: Context, r: FetchRequest) -> Plan {
    if cx.version < 13 {
        return fetch_named(&cx, r, &HashMap::new());
    }
    Plan::Defer(Box::pin(async move {
        let ids: Vec<Uuid> = r.topics.iter().map(|t| t.topic_id).collect();
        let names = resolve_ids(&cx.catalog, ids).await;
        fetch_named(&cx, r, &names)
    }))
}

/// Fetch with every topic's name known (`ids` for v13+).
fn fetch_named(cx: &Context, mut r: FetchRequest, ids: &HashMap<Uuid, Resolved>) -> Plan {
    let mut refused = Vec::new();
    let by_id = cx.version >= 13;
    let had_topics = !r.topics.is_empty();
    r.topics.retain(|t| {
        let resolved = if by_id {
            Resolved::of(ids, t.topic_id)
        } else {
            Resolved::Name(t.topic.0.to_string())
        };
        let code = match resolved {
            Resolved::Unknown => return true,
            Resolved::Name(name) if may(cx, Operation::Read, &name) => return true,
            Resolved::Name(_) => TOPIC_DENIED,
            Resolved::Failed => ResponseError::KafkaStorageError,
        };
        refused.push(fetch_refusal(t, code));
        false
    });
    narrowed!(
        r,
        had_topics && r.topics.is_empty(),
        Fetch,
        FetchResponse,
        responses,
        refused
    )
}

fn fetch_refusal(t: &FetchTopic, code: ResponseError) -> FetchableTopicResponse {
    let mut out = FetchableTopicResponse::default();
    out.topic = t.topic.clone();
    out.topic_id = t.topic_id;
    out.partitions = t
        .partitions
        .iter()
        .map(|p| {
            let mut d = PartitionData::default();
            d.partition_index = p.partition;
            d.error_code = code.code();
            d.high_watermark = -1;
            d.last_stable_offset = -1;
            d.log_start_offset = -1;
            d
        })
        .collect();
    out
}

pub(super) fn list_offsets(cx: &Context, mut r: ListOffsetsRequest) -> Plan {
    let mut refused = Vec::new();
    let had_topics = !r.topics.is_empty();
    r.topics.retain(|t| {
        if may(cx, Operation::Describe, t.name.0.as_str()) {
            return true;
        }
        let mut out = ListOffsetsTopicResponse::default();
        out.name = t.name.clone();
        out.partitions = t
            .partitions
            .iter()
            .map(|p| {
                let mut o = ListOffsetsPartitionResponse::default();
                o.partition_index = p.partition_index;
                o.error_code = TOPIC_DENIED.code();
                o.timestamp = -1;
                o.offset = -1;
                o.leader_epoch = -1;
                o
            })
            .collect();
        refused.push(out);
        false
    });
    narrowed!(
        r,
        had_topics && r.topics.is_empty(),
        ListOffsets,
        ListOffsetsResponse,
        topics,
        refused
    )
}

fn metadata_refusal(
    name: Option<TopicName>,
    topic_id: Uuid,
    code: ResponseError,
) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = name;
    out.topic_id = topic_id;
    out.error_code = code.code();
    out
}

/// Metadata: a listing of every topic leaves out those the client may not describe; a named
/// topic it may not describe is TOPIC_AUTHORIZATION_FAILED; an unknown topic it may describe
/// but not create (CREATE on the cluster or the topic) is not auto-created and is
/// TOPIC_AUTHORIZATION_FAILED too, as in Kafka.
pub(super) fn metadata(cx: Context, mut r: MetadataRequest) -> Plan {
    let all = match &r.topics {
        None => true,
        Some(list) => list.is_empty() && cx.version == 0,
    };
    if all {
        let authz = cx.authz.clone();
        return Plan::Forward(
            r.into(),
            fixup!(Metadata, move |m: &mut MetadataResponse| m.topics.retain(
                |t| {
                    t.name.as_ref().is_none_or(|n| {
                        authz.allowed_quietly(
                            Operation::Describe,
                            ResourceType::Topic,
                            n.0.as_str(),
                        )
                    })
                }
            )),
        );
    }
    let creating = cx.auto_create && (cx.version < 4 || r.allow_auto_topic_creation);
    let may_create_all = creating
        && cx
            .authz
            .allowed_quietly(Operation::Create, ResourceType::Cluster, CLUSTER_NAME);
    let mut refused = Vec::new();
    let mut unsure = Vec::new();
    let list = r.topics.take().unwrap_or_default();
    let mut kept = Vec::with_capacity(list.len());
    for t in list {
        if let Some(name) = &t.name {
            let name = name.0.as_str();
            if !may(&cx, Operation::Describe, name) {
                refused.push(metadata_refusal(t.name.clone(), Uuid::nil(), TOPIC_DENIED));
                continue;
            }
            if creating
                && !may_create_all
                && !cx
                    .authz
                    .allowed_quietly(Operation::Create, ResourceType::Topic, name)
            {
                unsure.push(name.to_string());
            }
        }
        kept.push(t);
    }
    r.topics = Some(kept);
    if unsure.is_empty() {
        return metadata_forward(cx.authz, r, refused);
    }
    Plan::Defer(Box::pin(async move {
        let mut missing = Vec::new();
        for name in unsure {
            match cx.catalog.topic_strict(&name).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    cx.authz
                        .denied(Operation::Create, ResourceType::Topic, &name);
                    missing.push((name, TOPIC_DENIED));
                }
                Err(e) => missing.push((name, catalog_error_code(&e))),
            }
        }
        if let Some(list) = r.topics.as_mut() {
            list.retain(|t| {
                t.name
                    .as_ref()
                    .is_none_or(|n| !missing.iter().any(|(m, _)| m == n.0.as_str()))
            });
        }
        for (name, code) in missing {
            let name = TopicName(StrBytes::from_string(name));
            refused.push(metadata_refusal(Some(name), Uuid::nil(), code));
        }
        metadata_forward(cx.authz, r, refused)
    }))
}

/// Forwards a Metadata request for named topics; topics asked for by id are checked by the
/// name in the answer.
fn metadata_forward(
    authz: RequestAuthz,
    r: MetadataRequest,
    refused: Vec<MetadataResponseTopic>,
) -> Plan {
    Plan::Forward(
        r.into(),
        fixup!(Metadata, move |m: &mut MetadataResponse| {
            for t in m.topics.iter_mut() {
                let denied = t.name.as_ref().is_some_and(|n| {
                    !authz.allowed(Operation::Describe, ResourceType::Topic, n.0.as_str())
                });
                if denied {
                    *t = metadata_refusal(None, t.topic_id, TOPIC_DENIED);
                }
            }
            m.topics.extend(refused);
        }),
    )
}

pub(super) fn create_topics(cx: &Context, mut r: CreateTopicsRequest) -> Plan {
    let cluster = cx
        .authz
        .allowed_quietly(Operation::Create, ResourceType::Cluster, CLUSTER_NAME);
    let mut refused = Vec::new();
    let had_topics = !r.topics.is_empty();
    r.topics.retain(|t| {
        if cluster || may(cx, Operation::Create, t.name.0.as_str()) {
            return true;
        }
        let mut out = CreatableTopicResult::default();
        out.name = t.name.clone();
        out.error_code = TOPIC_DENIED.code();
        out.error_message = message(TOPIC_DENIED);
        out.num_partitions = -1;
        out.replication_factor = -1;
        refused.push(out);
        false
    });
    if had_topics && r.topics.is_empty() {
        let mut response = CreateTopicsResponse::default();
        response.topics = refused;
        return Plan::Answer(response.into());
    }
    let authz = cx.authz.clone();
    Plan::Forward(
        r.into(),
        fixup!(CreateTopics, move |c: &mut CreateTopicsResponse| {
            // The configs of a created topic are shown only to who may describe them.
            for t in c.topics.iter_mut().filter(|t| t.error_code == 0) {
                let name = t.name.0.as_str();
                if !authz.allowed_quietly(Operation::DescribeConfigs, ResourceType::Topic, name) {
                    t.configs = None;
                    t.topic_config_error_code = TOPIC_DENIED.code();
                }
            }
            c.topics.extend(refused);
        }),
    )
}

pub(super) fn delete_topics(cx: Context, r: DeleteTopicsRequest) -> Plan {
    if r.topics.iter().all(|t| t.name.is_some()) {
        return delete_topics_named(&cx, r, &HashMap::new());
    }
    Plan::Defer(Box::pin(async move {
        let ids = r
            .topics
            .iter()
            .filter(|t| t.name.is_none())
            .map(|t| t.topic_id);
        let names = resolve_ids(&cx.catalog, ids.collect::<Vec<_>>()).await;
        delete_topics_named(&cx, r, &names)
    }))
}

fn deletable_refusal(
    name: Option<TopicName>,
    topic_id: Uuid,
    code: ResponseError,
) -> DeletableTopicResult {
    let mut out = DeletableTopicResult::default();
    out.name = name;
    out.topic_id = topic_id;
    out.error_code = code.code();
    out.error_message = message(code);
    out
}

fn delete_topics_named(
    cx: &Context,
    mut r: DeleteTopicsRequest,
    ids: &HashMap<Uuid, Resolved>,
) -> Plan {
    let mut refused = Vec::new();
    let had_topics = !r.topics.is_empty() || !r.topic_names.is_empty();
    r.topic_names.retain(|n| {
        let ok = may(cx, Operation::Delete, n.0.as_str());
        if !ok {
            refused.push(deletable_refusal(
                Some(n.clone()),
                Uuid::nil(),
                TOPIC_DENIED,
            ));
        }
        ok
    });
    r.topics.retain(|t| {
        let resolved = match &t.name {
            Some(n) => Resolved::Name(n.0.to_string()),
            None => Resolved::of(ids, t.topic_id),
        };
        let code = match resolved {
            Resolved::Unknown => return true,
            Resolved::Name(name) if may(cx, Operation::Delete, &name) => return true,
            Resolved::Name(_) => TOPIC_DENIED,
            Resolved::Failed => ResponseError::KafkaStorageError,
        };
        refused.push(deletable_refusal(t.name.clone(), t.topic_id, code));
        false
    });
    narrowed!(
        r,
        had_topics && r.topics.is_empty() && r.topic_names.is_empty(),
        DeleteTopics,
        DeleteTopicsResponse,
        responses,
        refused
    )
}

pub(super) fn create_partitions(cx: &Context, mut r: CreatePartitionsRequest) -> Plan {
    let mut refused = Vec::new();
    let had_topics = !r.topics.is_empty();
    r.topics.retain(|t| {
        if may(cx, Operation::Alter, t.name.0.as_str()) {
            return true;
        }
        let mut out = CreatePartitionsTopicResult::default();
        out.name = t.name.clone();
        out.error_code = TOPIC_DENIED.code();
        out.error_message = message(TOPIC_DENIED);
        refused.push(out);
        false
    });
    narrowed!(
        r,
        had_topics && r.topics.is_empty(),
        CreatePartitions,
        CreatePartitionsResponse,
        results,
        refused
    )
}

pub(super) fn delete_records(cx: &Context, mut r: DeleteRecordsRequest) -> Plan {
    let mut refused = Vec::new();
    let had_topics = !r.topics.is_empty();
    r.topics.retain(|t| {
        if may(cx, Operation::Delete, t.name.0.as_str()) {
            return true;
        }
        let mut out = DeleteRecordsTopicResult::default();
        out.name = t.name.clone();
        out.partitions = t
            .partitions
            .iter()
            .map(|p| {
                let mut o = DeleteRecordsPartitionResult::default();
                o.partition_index = p.partition_index;
                o.low_watermark = -1;
                o.error_code = TOPIC_DENIED.code();
                o
            })
            .collect();
        refused.push(out);
        false
    });
    narrowed!(
        r,
        had_topics && r.topics.is_empty(),
        DeleteRecords,
        DeleteRecordsResponse,
        topics,
        refused
    )
}

/// The config resource types Kafka authorizes: TOPIC (2) on the topic, BROKER (4) and
/// BROKER_LOGGER (8) on the cluster. Others are left to the handler.
fn config_refusal(
    cx: &Context,
    operation: Operation,
    resource_type: i8,
    name: &str,
) -> Option<ResponseError> {
    let (target, code) = match resource_type {
        2 => ((ResourceType::Topic, name), TOPIC_DENIED),
        4 | 8 => (
            (ResourceType::Cluster, CLUSTER_NAME),
            ResponseError::ClusterAuthorizationFailed,
        ),
        _ => return None,
    };
    (!cx.authz.allowed(operation, target.0, target.1)).then_some(code)
}

/// The rule of the three config APIs, alike but for their types: each resource the principal
/// may not `$operation` is answered with its refusal in `$field`.
macro_rules! config_rule {
    ($cx:expr, $request:expr, $operation:expr, $result:ty, $variant:ident, $response:ty, $field:ident) => {{
        let mut r = $request;
        let mut refused = Vec::new();
        let had = !r.resources.is_empty();
        r.resources.retain(|res| {
            let name = res.resource_name.as_str();
            let Some(code) = config_refusal($cx, $operation, res.resource_type, name) else {
                return true;
            };
            let mut out = <$result>::default();
            out.error_code = code.code();
            out.error_message = message(code);
            out.resource_type = res.resource_type;
            out.resource_name = res.resource_name.clone();
            refused.push(out);
            false
        });
        narrowed!(
            r,
            had && r.resources.is_empty(),
            $variant,
            $response,
            $field,
            refused
        )
    }};
}

pub(super) fn describe_configs(cx: &Context, r: DescribeConfigsRequest) -> Plan {
    config_rule!(
        cx,
        r,
        Operation::DescribeConfigs,
        DescribeConfigsResult,
        DescribeConfigs,
        DescribeConfigsResponse,
        results
    )
}

pub(super) fn alter_configs(cx: &Context, r: AlterConfigsRequest) -> Plan {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    config_rule!(
        cx,
        r,
        Operation::AlterConfigs,
        AlterConfigsResourceResponse,
        AlterConfigs,
        AlterConfigsResponse,
        responses
    )
}

pub(super) fn incremental_alter_configs(cx: &Context, r: IncrementalAlterConfigsRequest) -> Plan {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    config_rule!(
        cx,
        r,
        Operation::AlterConfigs,
        AlterConfigsResourceResponse,
        IncrementalAlterConfigs,
        IncrementalAlterConfigsResponse,
        responses
    )
}

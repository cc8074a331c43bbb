//! The rules of the group, coordinator, producer-id and SCRAM APIs (see [`super::enforce`]):
//! FindCoordinator (DESCRIBE on the group or transactional id), JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup (READ group), OffsetCommit (READ group and topic), OffsetFetch
//! (READ group, DESCRIBE topic), DescribeGroups and ListGroups (DESCRIBE group), DeleteGroups
//! and OffsetDelete (DELETE group; READ topic), InitProducerId (WRITE on the transactional
//! id; without one IDEMPOTENT_WRITE on the cluster or WRITE on any topic), and the SCRAM APIs
//! (DESCRIBE / ALTER on the cluster).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, ProducerId, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_acl::{CLUSTER_NAME, Operation, ResourceType};

use super::enforce::{Context, Plan, fixup, narrowed};

const GROUP_DENIED: ResponseError = ResponseError::GroupAuthorizationFailed;
const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;
/// Kafka's "authorized operations not asked for".
const NO_AUTHORIZED_OPERATIONS: i32 = i32::MIN;

fn group(cx: &Context, operation: Operation, group: &str) -> bool {
    cx.authz.allowed(operation, ResourceType::Group, group)
}

fn topic(cx: &Context, operation: Operation, name: &str) -> bool {
    cx.authz.allowed(operation, ResourceType::Topic, name)
}

/// FindCoordinator: key type 0 is a group, 1 a transactional id; others are left to the
/// handler. v4+ asks for several keys at once.
pub(super) fn find_coordinator(cx: &Context, mut r: FindCoordinatorRequest) -> Plan {
    let (resource_type, code) = match r.key_type {
        0 => (ResourceType::Group, GROUP_DENIED),
        1 => (
            ResourceType::TransactionalId,
            ResponseError::TransactionalIdAuthorizationFailed,
        ),
        _ => return Plan::forward(r),
    };
    let allowed = |key: &StrBytes| {
        cx.authz
            .allowed(Operation::Describe, resource_type, key.as_str())
    };
    if cx.version < 4 {
        if allowed(&r.key) {
            return Plan::forward(r);
        }
        let mut response = FindCoordinatorResponse::default();
        response.error_code = code.code();
        response.node_id = (-1).into();
        response.port = -1;
        return Plan::Answer(response.into());
    }
    let (kept, denied): (Vec<StrBytes>, Vec<StrBytes>) = std::mem::take(&mut r.coordinator_keys)
        .into_iter()
        .partition(allowed);
    let refused: Vec<Coordinator> = denied
        .into_iter()
        .map(|key| {
            let mut c = Coordinator::default();
            c.key = key;
            c.node_id = (-1).into();
            c.port = -1;
            c.error_code = code.code();
            c
        })
        .collect();
    if kept.is_empty() && !refused.is_empty() {
        let mut response = FindCoordinatorResponse::default();
        response.coordinators = refused;
        return Plan::Answer(response.into());
    }
    r.coordinator_keys = kept;
    Plan::Forward(
        r.into(),
        fixup!(FindCoordinator, move |f: &mut FindCoordinatorResponse| f
            .coordinators
            .extend(refused)),
    )
}

pub(super) fn join_group(cx: &Context, r: JoinGroupRequest) -> Plan {
    if group(cx, Operation::Read, r.group_id.0.as_str()) {
        return Plan::forward(r);
    }
    let mut response = JoinGroupResponse::default();
    response.error_code = GROUP_DENIED.code();
    response.generation_id = -1;
    Plan::Answer(response.into())
}

pub(super) fn sync_group(cx: &Context, r: SyncGroupRequest) -> Plan {
    if group(cx, Operation::Read, r.group_id.0.as_str()) {
        return Plan::forward(r);
    }
    let mut response = SyncGroupResponse::default();
    response.error_code = GROUP_DENIED.code();
    Plan::Answer(response.into())
}

pub(super) fn heartbeat(cx: &Context, r: HeartbeatRequest) -> Plan {
    if group(cx, Operation::Read, r.group_id.0.as_str()) {
        return Plan::forward(r);
    }
    let mut response = HeartbeatResponse::default();
    response.error_code = GROUP_DENIED.code();
    Plan::Answer(response.into())
}

pub(super) fn leave_group(cx: &Context, r: LeaveGroupRequest) -> Plan {
    if group(cx, Operation::Read, r.group_id.0.as_str()) {
        return Plan::forward(r);
    }
    let mut response = LeaveGroupResponse::default();
    response.error_code = GROUP_DENIED.code();
    Plan::Answer(response.into())
}

/// OffsetCommit: without READ on the group every partition is GROUP_AUTHORIZATION_FAILED;
/// a topic without READ is TOPIC_AUTHORIZATION_FAILED.
pub(super) fn offset_commit(cx: &Context, mut r: OffsetCommitRequest) -> Plan {
    let group_ok = group(cx, Operation::Read, r.group_id.0.as_str());
    let mut refused = Vec::new();
    let had_topics = !r.topics.is_empty();
    r.topics.retain(|t| {
        let code = if !group_ok {
            GROUP_DENIED
        } else if topic(cx, Operation::Read, t.name.0.as_str()) {
            return true;
        } else {
            TOPIC_DENIED
        };
        let mut out = OffsetCommitResponseTopic::default();
        out.name = t.name.clone();
        out.topic_id = t.topic_id;
        out.partitions = t
            .partitions
            .iter()
            .map(|p| {
                let mut o = OffsetCommitResponsePartition::default();
                o.partition_index = p.partition_index;
                o.error_code = code.code();
                o
            })
            .collect();
        refused.push(out);
        false
    });
    narrowed!(
        r,
        !group_ok || (had_topics && r.topics.is_empty()),
        OffsetCommit,
        OffsetCommitResponse,
        topics,
        refused
    )
}

/// OffsetFetch: a group without READ is GROUP_AUTHORIZATION_FAILED; a named topic without
/// DESCRIBE is TOPIC_AUTHORIZATION_FAILED; asking for every topic leaves those out.
pub(super) fn offset_fetch(cx: &Context, r: OffsetFetchRequest) -> Plan {
    if cx.version >= 8 {
        return offset_fetch_groups(cx, r);
    }
    if !group(cx, Operation::Read, r.group_id.0.as_str()) {
        let mut response = OffsetFetchResponse::default();
        response.error_code = GROUP_DENIED.code();
        return Plan::Answer(response.into());
    }
    let mut r = r;
    let mut refused = Vec::new();
    if let Some(topics) = r.topics.as_mut() {
        topics.retain(|t| {
            if topic(cx, Operation::Describe, t.name.0.as_str()) {
                return true;
            }
            let mut out = OffsetFetchResponseTopic::default();
            out.name = t.name.clone();
            out.partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let mut o = OffsetFetchResponsePartition::default();
                    o.partition_index = p;
                    o.committed_offset = -1;
                    o.committed_leader_epoch = -1;
                    o.error_code = TOPIC_DENIED.code();
                    o
                })
                .collect();
            refused.push(out);
            false
        });
    }
    let authz = cx.authz.clone();
    Plan::Forward(
        r.into(),
        fixup!(OffsetFetch, move |o: &mut OffsetFetchResponse| {
            o.topics.retain(|t| {
                authz.allowed_quietly(Operation::Describe, ResourceType::Topic, t.name.0.as_str())
            });
            o.topics.extend(refused);
        }),
    )
}

/// OffsetFetch v8+: several groups per request.
fn offset_fetch_groups(cx: &Context, mut r: OffsetFetchRequest) -> Plan {
    let mut refused_groups = Vec::new();
    let mut refused_topics: Vec<(StrBytes, Vec<OffsetFetchResponseTopics>)> = Vec::new();
    let had_groups = !r.groups.is_empty();
    r.groups.retain_mut(|g| {
        if !group(cx, Operation::Read, g.group_id.0.as_str()) {
            let mut out = OffsetFetchResponseGroup::default();
            out.group_id = g.group_id.clone();
            out.error_code = GROUP_DENIED.code();
            refused_groups.push(out);
            return false;
        }
        let mut refused = Vec::new();
        if let Some(topics) = g.topics.as_mut() {
            topics.retain(|t| {
                if topic(cx, Operation::Describe, t.name.0.as_str()) {
                    return true;
                }
                let mut out = OffsetFetchResponseTopics::default();
                out.name = t.name.clone();
                out.topic_id = t.topic_id;
                out.partitions = t
                    .partition_indexes
                    .iter()
                    .map(|&p| {
                        let mut o = OffsetFetchResponsePartitions::default();
                        o.partition_index = p;
                        o.committed_offset = -1;
                        o.committed_leader_epoch = -1;
                        o.error_code = TOPIC_DENIED.code();
                        o
                    })
                    .collect();
                refused.push(out);
                false
            });
        }
        refused_topics.push((g.group_id.0.clone(), refused));
        true
    });
    if had_groups && r.groups.is_empty() {
        let mut response = OffsetFetchResponse::default();
        response.groups = refused_groups;
        return Plan::Answer(response.into());
    }
    let authz = cx.authz.clone();
    Plan::Forward(
        r.into(),
        fixup!(OffsetFetch, move |o: &mut OffsetFetchResponse| {
            for g in o.groups.iter_mut() {
                g.topics.retain(|t| {
                    authz.allowed_quietly(
                        Operation::Describe,
                        ResourceType::Topic,
                        t.name.0.as_str(),
                    )
                });
                if let Some((_, refused)) = refused_topics
                    .iter_mut()
                    .find(|(id, _)| *id == g.group_id.0)
                {
                    g.topics.append(refused);
                }
            }
            o.groups.extend(refused_groups);
        }),
    )
}

pub(super) fn describe_groups(cx: &Context, mut r: DescribeGroupsRequest) -> Plan {
    let mut refused = Vec::new();
    let had = !r.groups.is_empty();
    r.groups.retain(|g| {
        if group(cx, Operation::Describe, g.0.as_str()) {
            return true;
        }
        let mut out = DescribedGroup::default();
        out.group_id = g.clone();
        out.error_code = GROUP_DENIED.code();
        out.authorized_operations = NO_AUTHORIZED_OPERATIONS;
        refused.push(out);
        false
    });
    narrowed!(
        r,
        had && r.groups.is_empty(),
        DescribeGroups,
        DescribeGroupsResponse,
        groups,
        refused
    )
}

/// ListGroups: every group with DESCRIBE on the cluster, else those the client may describe.
pub(super) fn list_groups(cx: &Context, r: ListGroupsRequest) -> Plan {
    let authz = cx.authz.clone();
    Plan::Forward(
        r.into(),
        fixup!(ListGroups, move |l: &mut ListGroupsResponse| {
            if authz.allowed_quietly(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME) {
                return;
            }
            l.groups.retain(|g| {
                authz.allowed_quietly(
                    Operation::Describe,
                    ResourceType::Group,
                    g.group_id.0.as_str(),
                )
            });
        }),
    )
}

pub(super) fn delete_groups(cx: &Context, mut r: DeleteGroupsRequest) -> Plan {
    let mut refused = Vec::new();
    let had = !r.groups_names.is_empty();
    r.groups_names.retain(|g| {
        if group(cx, Operation::Delete, g.0.as_str()) {
            return true;
        }
        let mut out = DeletableGroupResult::default();
        out.group_id = g.clone();
        out.error_code = GROUP_DENIED.code();
        refused.push(out);
        false
    });
    narrowed!(
        r,
        had && r.groups_names.is_empty(),
        DeleteGroups,
        DeleteGroupsResponse,
        results,
        refused
    )
}

pub(super) fn offset_delete(cx: &Context, mut r: OffsetDeleteRequest) -> Plan {
    if !group(cx, Operation::Delete, r.group_id.0.as_str()) {
        let mut response = OffsetDeleteResponse::default();
        response.error_code = GROUP_DENIED.code();
        return Plan::Answer(response.into());
    }
    let mut refused = Vec::new();
    r.topics.retain(|t| {
        if topic(cx, Operation::Read, t.name.0.as_str()) {
            return true;
        }
        let mut out = OffsetDeleteResponseTopic::default();
        out.name = t.name.clone();
        out.partitions = t
            .partitions
            .iter()
            .map(|p| {
                let mut o = OffsetDeleteResponsePartition::default();
                o.partition_index = p.partition_index;
                o.error_code = TOPIC_DENIED.code();
                o
            })
            .collect();
        refused.push(out);
        false
    });
    Plan::Forward(
        r.into(),
        fixup!(OffsetDelete, move |o: &mut OffsetDeleteResponse| o
            .topics
            .extend(refused)),
    )
}

/// InitProducerId: WRITE on the transactional id when there is one; else IDEMPOTENT_WRITE on
/// the cluster, which WRITE on any topic implies (Kafka 2.8+).
pub(super) fn init_producer_id(cx: &Context, r: InitProducerIdRequest) -> Plan {
    let refusal = match &r.transactional_id {
        Some(id) => (!cx.authz.allowed(
            Operation::Write,
            ResourceType::TransactionalId,
            id.0.as_str(),
        ))
        .then_some(ResponseError::TransactionalIdAuthorizationFailed),
        None => (!cx.authz.allowed_quietly(
            Operation::IdempotentWrite,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ) && !cx
            .authz
            .allowed_on_any(Operation::Write, ResourceType::Topic))
        .then_some(ResponseError::ClusterAuthorizationFailed),
    };
    let Some(code) = refusal else {
        return Plan::forward(r);
    };
    let mut response = InitProducerIdResponse::default();
    response.error_code = code.code();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    Plan::Answer(response.into())
}

pub(super) fn describe_scram(cx: &Context, r: DescribeUserScramCredentialsRequest) -> Plan {
    if cx.authz.cluster(Operation::Describe) {
        return Plan::forward(r);
    }
    let mut response = DescribeUserScramCredentialsResponse::default();
    response.error_code = ResponseError::ClusterAuthorizationFailed.code();
    response.error_message = Some(StrBytes::from_static_str("Cluster authorization failed."));
    Plan::Answer(response.into())
}

pub(super) fn alter_scram(cx: &Context, r: AlterUserScramCredentialsRequest) -> Plan {
    if cx.authz.cluster(Operation::Alter) {
        return Plan::forward(r);
    }
    let mut users: Vec<StrBytes> = r
        .deletions
        .iter()
        .map(|d| d.name.clone())
        .chain(r.upsertions.iter().map(|u| u.name.clone()))
        .collect();
    users.sort();
    users.dedup();
    let mut response = AlterUserScramCredentialsResponse::default();
    response.results = users
        .into_iter()
        .map(|user| {
            let mut out = AlterUserScramCredentialsResult::default();
            out.user = user;
            out.error_code = ResponseError::ClusterAuthorizationFailed.code();
            out
        })
        .collect();
    Plan::Answer(response.into())
}

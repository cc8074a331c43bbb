//! FindCoordinator and the membership APIs of the classic group protocol: JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, DescribeGroups, ListGroups, DeleteGroups. They translate
//! between the wire and the state machine in [`crate::groups`]; the coordinator never looks
//! inside protocol metadata or assignments.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafscale_shared::topic_api::BrokerAddr;
use tracing::{debug, info, warn};

use crate::group_api::{GroupService, code, millis, str_bytes, valid_group};
use crate::groups::{GroupState, Join, MemberRef};

impl GroupService {
    async fn coordinator_for(&self, key: &str, key_type: i8) -> Result<BrokerAddr, ResponseError> {
        match key_type {
            0 if valid_group(key) => self
                .leases
                .coordinator(key)
                .await
                .ok_or(ResponseError::CoordinatorNotAvailable),
            0 => Err(ResponseError::InvalidGroupId),
            // Transactions are not supported (docs/protocol.md), nor share groups.
            _ => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    pub(crate) async fn find_coordinator(
        &self,
        request: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let message = |e: ResponseError| match e {
            ResponseError::InvalidGroupId => "invalid group id",
            ResponseError::CoordinatorNotAvailable if request.key_type != 0 => {
                "only consumer-group coordinators are served"
            }
            _ => "no live coordinator for this group yet; retry",
        };
        // (node id, host, port, error code, error message) of one key's answer.
        let answer = |found: Result<BrokerAddr, ResponseError>| match found {
            Ok(b) => (BrokerId(b.node_id), str_bytes(&b.host), b.port, 0, None),
            Err(e) => (
                BrokerId(-1),
                str_bytes(""),
                -1,
                e.code(),
                Some(str_bytes(message(e))),
            ),
        };
        let mut response = FindCoordinatorResponse::default();
        if version >= 4 {
            for key in &request.coordinator_keys {
                let (node_id, host, port, error_code, error_message) =
                    answer(self.coordinator_for(key, request.key_type).await);
                response.coordinators.push(
                    Coordinator::default()
                        .with_key(key.clone())
                        .with_node_id(node_id)
                        .with_host(host)
                        .with_port(port)
                        .with_error_code(error_code)
                        .with_error_message(error_message),
                );
            }
        } else {
            let (node_id, host, port, error_code, error_message) =
                answer(self.coordinator_for(&request.key, request.key_type).await);
            response.node_id = node_id;
            response.host = host;
            response.port = port;
            response.error_code = error_code;
            response.error_message = error_message;
        }
        response
    }

    pub(crate) async fn join_group(
        &self,
        request: JoinGroupRequest,
        version: i16,
        client_id: String,
        client_host: String,
    ) -> JoinGroupResponse {
        let group = request.group_id.0.to_string();
        let mut response = JoinGroupResponse::default()
            .with_generation_id(-1)
            .with_member_id(request.member_id.clone());
        // v0-6 have no nullable protocol name.
        if version < 7 {
            response.protocol_name = Some(str_bytes(""));
        }
        if let Some(e) = self.refuse(&group) {
            response.error_code = e.code();
            return response;
        }
        let session_timeout = millis(request.session_timeout_ms);
        let join = Join {
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id,
            client_host,
            session_timeout,
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout: if version == 0 {
                session_timeout
            } else {
                millis(request.rebalance_timeout_ms)
            },
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            require_known_member_id: version >= 4,
        };
        let joined = self.groups.join(&group, join).await;
        debug!(group, member = joined.member_id, generation = joined.generation, error = ?joined.error, "join group");
        if joined.error.is_none() {
            info!(group, member = joined.member_id, generation = joined.generation, leader = joined.leader, protocol = ?joined.protocol_name, "member joined");
        }
        response.error_code = code(joined.error);
        response.generation_id = joined.generation;
        response.member_id = str_bytes(&joined.member_id);
        response.leader = str_bytes(&joined.leader);
        response.protocol_type = joined.protocol_type.map(|s| str_bytes(&s));
        response.protocol_name = match joined.protocol_name {
            Some(p) => Some(str_bytes(&p)),
            None if version < 7 => Some(str_bytes("")),
            None => None,
        };
        response.members = joined
            .members
            .into_iter()
            .map(|(id, instance, metadata)| {
                JoinGroupResponseMember::default()
                    .with_member_id(str_bytes(&id))
                    .with_group_instance_id(instance.map(|s| str_bytes(&s)))
                    .with_metadata(metadata)
            })
            .collect();
        response
    }

    pub(crate) async fn sync_group(
        &self,
        request: SyncGroupRequest,
        version: i16,
    ) -> SyncGroupResponse {
        let group = request.group_id.0.to_string();
        let mut response = SyncGroupResponse::default();
        if let Some(e) = self.refuse(&group) {
            response.error_code = e.code();
            return response;
        }
        let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
        let member = MemberRef::new(&request.member_id, instance.as_deref());
        let assignments = request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect();
        match self
            .groups
            .sync(&group, member, request.generation_id, assignments)
            .await
        {
            Ok(assignment) => {
                response.assignment = assignment;
                if version >= 5
                    && let Some(d) = self.groups.describe(&group)
                {
                    response.protocol_type = Some(str_bytes(&d.protocol_type));
                    response.protocol_name = Some(str_bytes(&d.protocol_name));
                }
            }
            Err(e) => response.error_code = e.code(),
        }
        response
    }

    pub(crate) fn heartbeat(&self, request: HeartbeatRequest) -> HeartbeatResponse {
        let group = request.group_id.0.to_string();
        let error = self.refuse(&group).or_else(|| {
            let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
            self.groups.heartbeat(
                &group,
                MemberRef::new(&request.member_id, instance.as_deref()),
                request.generation_id,
            )
        });
        HeartbeatResponse::default().with_error_code(code(error))
    }

    pub(crate) fn leave_group(
        &self,
        request: LeaveGroupRequest,
        version: i16,
    ) -> LeaveGroupResponse {
        let group = request.group_id.0.to_string();
        let mut response = LeaveGroupResponse::default();
        if let Some(e) = self.refuse(&group) {
            response.error_code = e.code();
            return response;
        }
        if version < 3 {
            let left = self
                .groups
                .leave(&group, MemberRef::new(&request.member_id, None));
            if let Ok(id) = &left {
                info!(group, member = id, "member left");
            }
            response.error_code = code(left.err());
            return response;
        }
        for m in &request.members {
            let instance = m.group_instance_id.as_ref().map(|s| s.to_string());
            let left = self
                .groups
                .leave(&group, MemberRef::new(&m.member_id, instance.as_deref()));
            if let Ok(id) = &left {
                info!(group, member = id, reason = ?m.reason, "member left");
            }
            response.members.push(
                MemberResponse::default()
                    .with_member_id(m.member_id.clone())
                    .with_group_instance_id(m.group_instance_id.clone())
                    .with_error_code(code(left.err())),
            );
        }
        response
    }

    pub(crate) fn describe_groups(&self, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let mut response = DescribeGroupsResponse::default();
        for group_id in request.groups {
            let group = group_id.0.to_string();
            let mut described = DescribedGroup::default()
                .with_group_id(group_id)
                // Kafka's "no authorized operations requested".
                .with_authorized_operations(i32::MIN);
            if let Some(e) = self.refuse(&group) {
                described.error_code = e.code();
                described.group_state = str_bytes("");
                response.groups.push(described);
                continue;
            }
            match self.groups.describe(&group) {
                Some(d) => {
                    described.group_state = str_bytes(d.state.name());
                    described.protocol_type = str_bytes(&d.protocol_type);
                    // Kafka reports the protocol only once the members have it.
                    described.protocol_data = str_bytes(if d.state == GroupState::Stable {
                        &d.protocol_name
                    } else {
                        ""
                    });
                    described.members = d
                        .members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_group_instance_id(m.group_instance_id.map(|s| str_bytes(&s)))
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect();
                }
                // Kafka describes an unknown group as "Dead", without an error.
                None => described.group_state = str_bytes("Dead"),
            }
            response.groups.push(described);
        }
        response
    }

    pub(crate) fn list_groups(&self, request: ListGroupsRequest) -> ListGroupsResponse {
        let wanted_state = |s: GroupState| {
            request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(s.name()))
        };
        let wanted_type = request.types_filter.is_empty()
            || request
                .types_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case("classic"));
        let groups = if wanted_type {
            self.groups
                .list()
                .into_iter()
                .filter(|(g, _, s)| wanted_state(*s) && self.leases.owns(g))
                .map(|(g, protocol_type, state)| {
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(&g)))
                        .with_protocol_type(str_bytes(&protocol_type))
                        .with_group_state(str_bytes(state.name()))
                        .with_group_type(str_bytes("classic"))
                })
                .collect()
        } else {
            Vec::new()
        };
        ListGroupsResponse::default().with_groups(groups)
    }

    pub(crate) async fn delete_groups(&self, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let mut response = DeleteGroupsResponse::default();
        for group_id in request.groups_names {
            let group = group_id.0.to_string();
            let error = match self.refuse(&group) {
                Some(e) => Some(e),
                None => self.delete_group(&group).await.err(),
            };
            response.results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(code(error)),
            );
        }
        response
    }

    /// Deletes an empty group: its in-memory state and every committed offset.
    pub(crate) async fn delete_group(&self, group: &str) -> Result<(), ResponseError> {
        let catalog = self.topics.catalog();
        let offsets = catalog.committed_offsets(group).await.map_err(|e| {
            warn!(group, error = %e, "delete group: reading offsets failed");
            ResponseError::CoordinatorNotAvailable
        })?;
        let known = self.groups.describe(group).is_some();
        if offsets.is_empty() && !known {
            // A directory entry whose offsets OffsetDelete removed one by one goes too.
            self.registered.forget(group);
            if let Some(fence) = self.leases.fence(group)
                && let Err(e) = catalog.delete_group(group, Vec::new(), Some(&fence)).await
            {
                warn!(group, error = %e, "delete group: removing its directory entry failed");
            }
            return Err(ResponseError::GroupIdNotFound);
        }
        self.groups.delete(group)?;
        let partitions: Vec<_> = offsets.into_iter().map(|(t, p, _)| (t, p)).collect();
        self.registered.forget(group);
        self.fenced_write(group, |fence, _| {
            let partitions = partitions.clone();
            async move { catalog.delete_group(group, partitions, Some(&fence)).await }
        })
        .await?;
        info!(group, "group deleted");
        Ok(())
    }
}

//! Narrow access to consumer groups for operators (the admin HTTP API of the `kafscale`
//! binary): list and describe the groups this process coordinates, name the coordinator of
//! the others, reset an inactive group's committed offsets and delete a group.
//!
//! Membership lives only in the coordinating process's memory, so everything that needs it
//! answers for the groups coordinated here and otherwise says who coordinates them. Offset
//! writes go through the same lease fence and the same membership check as an OffsetCommit
//! without a member id (what `kafka-consumer-groups --reset-offsets` sends): they are refused
//! while the group has members.

use bytes::Buf;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use kafscale_shared::catalog::{CommittedOffset, ITEM_FORMAT, now_ms};
use tracing::info;
use uuid::Uuid;

use crate::error::FetchError;
use crate::group_api::{GroupService, valid_group};
use crate::groups::{GroupDescription, MemberRef};

/// A group as listed: its id, protocol type ("consumer" for Kafka consumers) and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

/// One member of a group and the partitions assigned to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberInfo {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// (topic, partitions) as the leader assigned them (consumer protocol only).
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A group as its coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Kafka's state name: Empty, PreparingRebalance, CompletingRebalance, Stable or Dead (a
    /// group with neither members nor committed offsets).
    pub state: String,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<GroupMemberInfo>,
}

/// The answer to a describe: the group, or the process that coordinates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupLookup {
    Coordinated(GroupInfo),
    /// Another process coordinates the group ("host:port" of its Kafka listener; `None` while
    /// no live process holds the group's slot).
    Elsewhere {
        coordinator: Option<String>,
    },
}

/// One partition's new committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetReset {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
    pub offset: i64,
}

impl GroupService {
    /// The groups this process coordinates, sorted by id.
    pub fn list_coordinated_groups(&self) -> Vec<GroupSummary> {
        self.groups
            .list()
            .into_iter()
            .filter(|(g, _, _)| self.leases.owns(g))
            .map(|(group_id, protocol_type, state)| GroupSummary {
                group_id,
                protocol_type,
                state: state.name().to_string(),
            })
            .collect()
    }

    /// Whether this process coordinates `group` right now.
    pub fn coordinates(&self, group: &str) -> bool {
        self.leases.owns(group)
    }

    /// "host:port" of `group`'s coordinator (this process or another), if one is live.
    pub async fn coordinator_of(&self, group: &str) -> Option<String> {
        self.leases
            .coordinator(group)
            .await
            .map(|b| format_host_port(&b.host, b.port))
    }

    /// Describes `group` if this process coordinates it. A group known only by its committed
    /// offsets (no member since this process took it over) is `Empty`, one with neither is
    /// `Dead`, as Kafka reports them.
    pub async fn describe_group(&self, group: &str) -> Result<GroupLookup, FetchError> {
        self.check_coordinated(group).await?;
        if let Some(d) = self.groups.describe(group) {
            return Ok(GroupLookup::Coordinated(group_info(d)));
        }
        let offsets = self.topics.catalog().committed_offsets(group).await?;
        Ok(GroupLookup::Coordinated(GroupInfo {
            state: if offsets.is_empty() { "Dead" } else { "Empty" }.to_string(),
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        }))
    }

    /// Stores new committed offsets for an inactive group (no members), fenced by this
    /// process's coordinator lease: Kafka's rules for `kafka-consumer-groups --reset-offsets`.
    pub async fn reset_offsets(
        &self,
        group: &str,
        offsets: Vec<OffsetReset>,
    ) -> Result<(), FetchError> {
        self.check_coordinated(group).await?;
        if self
            .groups
            .check_commit(group, MemberRef::new("", None), -1)
            .is_some()
        {
            let state = self
                .groups
                .describe(group)
                .map_or("unknown", |d| d.state.name());
            return Err(FetchError::GroupNotEmpty {
                group: group.to_string(),
                state: state.to_string(),
            });
        }
        let count = offsets.len();
        let writes = offsets
            .into_iter()
            .map(|o| {
                let value = CommittedOffset {
                    format: ITEM_FORMAT,
                    topic: o.topic,
                    offset: o.offset,
                    leader_epoch: -1,
                    metadata: Some(String::new()),
                    committed_at_ms: now_ms(),
                };
                (o.topic_id, o.partition, value)
            })
            .collect();
        self.store_offsets(group, writes)
            .await
            .map_err(|e| self.group_error(group, e))?;
        info!(group, partitions = count, "offsets reset by an operator");
        Ok(())
    }

    /// Deletes an inactive group: its in-memory state and every committed offset.
    pub async fn delete_group_as_operator(&self, group: &str) -> Result<(), FetchError> {
        self.check_coordinated(group).await?;
        self.delete_group(group)
            .await
            .map_err(|e| self.group_error(group, e))
    }

    /// Ok if this process coordinates `group`, else the error naming the coordinator.
    async fn check_coordinated(&self, group: &str) -> Result<(), FetchError> {
        if !valid_group(group) {
            return Err(FetchError::InvalidGroupId);
        }
        if self.leases.owns(group) {
            return Ok(());
        }
        Err(FetchError::NotCoordinator {
            coordinator: self.coordinator_of(group).await,
        })
    }

    fn group_error(&self, group: &str, e: ResponseError) -> FetchError {
        match e {
            ResponseError::NonEmptyGroup | ResponseError::UnknownMemberId => {
                FetchError::GroupNotEmpty {
                    group: group.to_string(),
                    state: self
                        .groups
                        .describe(group)
                        .map_or("unknown", |d| d.state.name())
                        .to_string(),
                }
            }
            ResponseError::GroupIdNotFound => FetchError::GroupNotFound(group.to_string()),
            ResponseError::NotCoordinator => FetchError::NotCoordinator { coordinator: None },
            other => FetchError::Metadata(format!("group {group}: {other:?}")),
        }
    }
}

fn group_info(d: GroupDescription) -> GroupInfo {
    let consumer = d.protocol_type == "consumer";
    GroupInfo {
        state: d.state.name().to_string(),
        generation: d.generation,
        protocol_type: d.protocol_type,
        protocol: d.protocol_name,
        members: d
            .members
            .into_iter()
            .map(|m| GroupMemberInfo {
                assignment: if consumer {
                    decode_assignment(m.assignment)
                } else {
                    Vec::new()
                },
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
            })
            .collect(),
    }
}

/// The (topic, partitions) of a consumer-protocol assignment; empty if it does not decode
/// (the coordinator relays assignments untouched, so they are the clients' bytes).
fn decode_assignment(mut bytes: bytes::Bytes) -> Vec<(String, Vec<i32>)> {
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = bytes.get_i16();
    match ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .map(|tp| (tp.topic.0.to_string(), tp.partitions))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn format_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    #[test]
    fn consumer_assignments_decode_and_garbage_is_empty() {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("demo")))
                .with_partitions(vec![0, 2]),
        ]);
        let mut buf = BytesMut::new();
        buf.put_i16(1);
        assignment.encode(&mut buf, 1).expect("encode");
        assert_eq!(
            decode_assignment(buf.freeze()),
            vec![("demo".to_string(), vec![0, 2])]
        );
        assert!(decode_assignment(bytes::Bytes::from_static(b"\x00\x01\xff")).is_empty());
        assert!(decode_assignment(bytes::Bytes::new()).is_empty());
        assert_eq!(format_host_port("::1", 9092), "[::1]:9092");
    }
}

//! `/v1/groups...`: consumer groups. Membership (state, members, assignments) exists only in
//! the memory of the group's coordinator, so describe answers for the groups this process
//! coordinates and otherwise names the coordinator; the list merges the store's group
//! directory (every group with committed offsets, whoever coordinates it) with the groups
//! coordinated here. Committed offsets and lag come from
//! the store and any process answers them. Resetting offsets follows
//! `kafka-consumer-groups --reset-offsets`: only while the group has no members, to the
//! earliest or latest offset, the first offset at a timestamp (latest if none is that recent)
//! or a given offset (clamped into [log start, high watermark]); a dry run shows the plan.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kafscale_fetch::{GroupInfo, GroupLookup, OffsetReset};
use kafscale_shared::catalog::TopicRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AdminState;
use super::error::{ApiError, ApiJson, ErrorBody};
use super::topics::known_topic;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct GroupListing {
    pub(crate) group_id: String,
    /// "consumer" for Kafka consumers; empty when no member is known here.
    pub(crate) protocol_type: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead for groups this process
    /// coordinates (Empty: committed offsets but no members); Unknown for groups another
    /// process coordinates (describe the group there for its state).
    pub(crate) state: String,
    /// Whether this process coordinates the group.
    pub(crate) coordinated_here: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct GroupList {
    /// Every group with committed offsets in the store, and every group this process
    /// coordinates in memory (members but no commit yet), sorted by id.
    pub(crate) groups: Vec<GroupListing>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TopicPartitions {
    pub(crate) topic: String,
    pub(crate) partitions: Vec<i32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct MemberInfo {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) assignment: Vec<TopicPartitions>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct GroupDescription {
    pub(crate) group_id: String,
    /// Whether this process coordinates the group; if not, the other fields but
    /// `coordinator` are empty.
    pub(crate) coordinated_here: bool,
    /// "host:port" (Kafka listener) of the group's coordinator, if one is live.
    pub(crate) coordinator: Option<String>,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead.
    pub(crate) state: Option<String>,
    pub(crate) generation: Option<i32>,
    pub(crate) protocol_type: Option<String>,
    /// The assignor the members agreed on (e.g. range).
    pub(crate) protocol: Option<String>,
    pub(crate) members: Vec<MemberInfo>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct PartitionLag {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) committed_offset: i64,
    pub(crate) log_start_offset: i64,
    pub(crate) high_watermark: i64,
    /// High watermark minus committed offset (0 if the commit is ahead).
    pub(crate) lag: i64,
    pub(crate) metadata: Option<String>,
    /// The member the partition is assigned to (when this process coordinates the group).
    pub(crate) member_id: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_host: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct GroupOffsets {
    pub(crate) group_id: String,
    pub(crate) partitions: Vec<PartitionLag>,
    pub(crate) total_lag: i64,
}

/// Where to move the committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ResetStrategy {
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first offset whose timestamp is ≥ `value` (ms since the epoch); the high
    /// watermark if none is.
    Timestamp,
    /// `value`, clamped into [log start offset, high watermark].
    Offset,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicSelection {
    pub(crate) topic: String,
    /// Default: every partition of the topic.
    pub(crate) partitions: Option<Vec<i32>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"all_topics": true, "strategy": "earliest", "dry_run": true}))]
pub(crate) struct ResetOffsets {
    /// The partitions to reset; exactly one of `topics` and `all_topics`.
    pub(crate) topics: Option<Vec<TopicSelection>>,
    /// Every partition the group has committed offsets for.
    #[serde(default)]
    pub(crate) all_topics: bool,
    pub(crate) strategy: ResetStrategy,
    /// The timestamp or offset of those strategies.
    pub(crate) value: Option<i64>,
    /// Only compute the new offsets (Kafka's default without --execute).
    #[serde(default)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct PartitionReset {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) previous_offset: Option<i64>,
    pub(crate) new_offset: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ResetResult {
    pub(crate) group_id: String,
    pub(crate) dry_run: bool,
    pub(crate) partitions: Vec<PartitionReset>,
}

#[utoipa::path(
    get, path = "/v1/groups", tag = "groups",
    summary = "Consumer groups: every group with committed offsets, and those coordinated here",
    responses(
        (status = 200, body = GroupList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn list(State(s): State<AdminState>) -> Result<Json<GroupList>, ApiError> {
    let service = s.groups()?;
    let mut groups: BTreeMap<String, GroupListing> = BTreeMap::new();
    for group_id in s.catalog().list_groups().await? {
        let coordinated_here = service.coordinates(&group_id);
        let state = if coordinated_here { "Empty" } else { "Unknown" };
        groups.insert(
            group_id.clone(),
            GroupListing {
                group_id,
                protocol_type: String::new(),
                state: state.to_string(),
                coordinated_here,
            },
        );
    }
    // Membership known here overrides what the directory alone says.
    for g in service.list_coordinated_groups() {
        groups.insert(
            g.group_id.clone(),
            GroupListing {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                state: g.state,
                coordinated_here: true,
            },
        );
    }
    Ok(Json(GroupList {
        groups: groups.into_values().collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/groups/{group}", tag = "groups",
    summary = "State, protocol and members with their assignments (or the coordinator's address)",
    params(("group" = String, Path, description = "Group id", example = "demo-group")),
    responses(
        (status = 200, body = GroupDescription),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
#[tracing::instrument(skip(s))]
pub(crate) async fn describe(
    State(s): State<AdminState>,
    Path(group): Path<String>,
) -> Result<Json<GroupDescription>, ApiError> {
    let service = s.groups()?;
    let mut out = GroupDescription {
        group_id: group.clone(),
        coordinated_here: false,
        coordinator: None,
        state: None,
        generation: None,
        protocol_type: None,
        protocol: None,
        members: Vec::new(),
    };
    match service.describe_group(&group).await {
        Ok(GroupLookup::Coordinated(info)) => {
            out.coordinated_here = true;
            out.coordinator = service.coordinator_of(&group).await;
            fill(&mut out, info);
        }
        Ok(GroupLookup::Elsewhere { coordinator })
        | Err(kafscale_fetch::FetchError::NotCoordinator { coordinator }) => {
            out.coordinator = coordinator;
        }
        Err(e) => return Err(ApiError::from_group(&group, e)),
    }
    Ok(Json(out))
}

fn fill(out: &mut GroupDescription, info: GroupInfo) {
    out.state = Some(info.state);
    out.generation = Some(info.generation);
    out.protocol_type = Some(info.protocol_type);
    out.protocol = Some(info.protocol);
    out.members = info
        .members
        .into_iter()
        .map(|m| MemberInfo {
            member_id: m.member_id,
            group_instance_id: m.group_instance_id,
            client_id: m.client_id,
            client_host: m.client_host,
            assignment: m
                .assignment
                .into_iter()
                .map(|(topic, partitions)| TopicPartitions { topic, partitions })
                .collect(),
        })
        .collect();
}

#[utoipa::path(
    delete, path = "/v1/groups/{group}", tag = "groups",
    summary = "Delete an inactive group and its committed offsets",
    params(("group" = String, Path, description = "Group id", example = "demo-group")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip(s))]
pub(crate) async fn delete(
    State(s): State<AdminState>,
    Path(group): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.groups()?
        .delete_group_as_operator(&group)
        .await
        .map_err(|e| ApiError::from_group(&group, e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/groups/{group}/offsets", tag = "groups",
    summary = "Committed offsets, high watermarks and lag per partition",
    params(("group" = String, Path, description = "Group id", example = "demo-group")),
    responses(
        (status = 200, body = GroupOffsets),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
#[tracing::instrument(skip(s))]
pub(crate) async fn offsets(
    State(s): State<AdminState>,
    Path(group): Path<String>,
) -> Result<Json<GroupOffsets>, ApiError> {
    let committed = s.catalog().committed_offsets(&group).await?;
    let members = local_members(&s, &group).await;
    if committed.is_empty() && members.is_none() {
        return Err(ApiError::GroupNotFound(group));
    }
    let owners = members.map(|m| assignment_owners(&m)).unwrap_or_default();
    let mut partitions = Vec::new();
    let mut topics: HashMap<Uuid, Option<TopicRecord>> = HashMap::new();
    for (topic_id, partition, offset) in committed {
        if let std::collections::hash_map::Entry::Vacant(e) = topics.entry(topic_id) {
            e.insert(s.catalog().topic_by_id(topic_id).await?);
        }
        // Offsets of deleted topics are not reported (as OffsetFetch does).
        let Some(Some(t)) = topics.get(&topic_id) else {
            continue;
        };
        let (log_start_offset, high_watermark) = watermarks(&s, topic_id, partition).await?;
        let owner = owners.get(&(t.name.clone(), partition));
        partitions.push(PartitionLag {
            topic: t.name.clone(),
            partition,
            committed_offset: offset.offset,
            log_start_offset,
            high_watermark,
            lag: (high_watermark - offset.offset).max(0),
            metadata: offset.metadata,
            member_id: owner.map(|o| o.0.clone()),
            client_id: owner.map(|o| o.1.clone()),
            client_host: owner.map(|o| o.2.clone()),
        });
    }
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let total_lag = partitions.iter().map(|p| p.lag).sum();
    Ok(Json(GroupOffsets {
        group_id: group,
        partitions,
        total_lag,
    }))
}

/// The group's description if this process coordinates it and it is not Dead.
async fn local_members(s: &AdminState, group: &str) -> Option<GroupInfo> {
    match s.groups().ok()?.describe_group(group).await {
        Ok(GroupLookup::Coordinated(info)) if info.state != "Dead" => Some(info),
        _ => None,
    }
}

/// (topic, partition) → (member id, client id, client host).
fn assignment_owners(info: &GroupInfo) -> HashMap<(String, i32), (String, String, String)> {
    let mut out = HashMap::new();
    for m in &info.members {
        for (topic, partitions) in &m.assignment {
            for p in partitions {
                out.insert(
                    (topic.clone(), *p),
                    (
                        m.member_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                    ),
                );
            }
        }
    }
    out
}

async fn watermarks(
    s: &AdminState,
    topic_id: Uuid,
    partition: i32,
) -> Result<(i64, i64), ApiError> {
    Ok(
        match s.catalog().partition_view(topic_id, partition).await? {
            Some(r) => (r.log_start_offset, r.next_offset),
            None => (0, 0),
        },
    )
}

#[utoipa::path(
    post, path = "/v1/groups/{group}/offsets/reset", tag = "groups",
    summary = "Reset an inactive group's committed offsets (kafka-consumer-groups --reset-offsets)",
    params(("group" = String, Path, description = "Group id", example = "demo-group")),
    request_body = ResetOffsets,
    responses(
        (status = 200, body = ResetResult),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip(s, body))]
pub(crate) async fn reset(
    State(s): State<AdminState>,
    Path(group): Path<String>,
    ApiJson(body): ApiJson<ResetOffsets>,
) -> Result<Json<ResetResult>, ApiError> {
    let service = s.groups()?;
    // As Kafka's tool: refuse an active group (or one coordinated elsewhere), dry run or not.
    match service.describe_group(&group).await {
        Ok(GroupLookup::Coordinated(info)) if info.state == "Empty" || info.state == "Dead" => {}
        Ok(GroupLookup::Coordinated(info)) => {
            return Err(ApiError::GroupNotEmpty {
                group,
                state: info.state,
            });
        }
        Ok(GroupLookup::Elsewhere { coordinator }) => {
            return Err(ApiError::NotCoordinator { group, coordinator });
        }
        Err(e) => return Err(ApiError::from_group(&group, e)),
    }
    let targets = selected_partitions(&s, &group, &body).await?;
    let mut plan = Vec::with_capacity(targets.len());
    for (t, partition, previous) in targets {
        let new_offset = target_offset(&s, &t, partition, body.strategy, body.value).await?;
        plan.push((t, partition, previous, new_offset));
    }
    if !body.dry_run {
        let writes = plan
            .iter()
            .map(|(t, partition, _, offset)| OffsetReset {
                topic: t.name.clone(),
                topic_id: t.topic_id,
                partition: *partition,
                offset: *offset,
            })
            .collect();
        service
            .reset_offsets(&group, writes)
            .await
            .map_err(|e| ApiError::from_group(&group, e))?;
    }
    Ok(Json(ResetResult {
        group_id: group,
        dry_run: body.dry_run,
        partitions: plan
            .into_iter()
            .map(
                |(t, partition, previous_offset, new_offset)| PartitionReset {
                    topic: t.name,
                    partition,
                    previous_offset,
                    new_offset,
                },
            )
            .collect(),
    }))
}

/// (topic, partition, committed offset) of every partition the request selects.
async fn selected_partitions(
    s: &AdminState,
    group: &str,
    body: &ResetOffsets,
) -> Result<Vec<(TopicRecord, i32, Option<i64>)>, ApiError> {
    let committed: HashMap<(Uuid, i32), i64> = s
        .catalog()
        .committed_offsets(group)
        .await?
        .into_iter()
        .map(|(t, p, o)| ((t, p), o.offset))
        .collect();
    let mut out = Vec::new();
    match (&body.topics, body.all_topics) {
        (Some(topics), false) if !topics.is_empty() => {
            for sel in topics {
                let t = known_topic(s, &sel.topic).await?;
                let partitions: BTreeSet<i32> = match &sel.partitions {
                    Some(ps) => ps.iter().copied().collect(),
                    None => (0..t.partitions).collect(),
                };
                for p in partitions {
                    if !(0..t.partitions).contains(&p) {
                        return Err(ApiError::UnknownPartition {
                            topic: t.name.clone(),
                            partition: p,
                        });
                    }
                    out.push((t.clone(), p, committed.get(&(t.topic_id, p)).copied()));
                }
            }
        }
        (None, true) => {
            let mut keys: Vec<&(Uuid, i32)> = committed.keys().collect();
            keys.sort();
            for &(topic_id, p) in keys {
                if let Some(t) = s.catalog().topic_by_id(topic_id).await? {
                    out.push((t, p, committed.get(&(topic_id, p)).copied()));
                }
            }
        }
        _ => {
            return Err(ApiError::BadRequest(
                "name the partitions: either a non-empty `topics` or `all_topics: true`".into(),
            ));
        }
    }
    Ok(out)
}

/// The new committed offset of one partition under `strategy`.
async fn target_offset(
    s: &AdminState,
    t: &TopicRecord,
    partition: i32,
    strategy: ResetStrategy,
    value: Option<i64>,
) -> Result<i64, ApiError> {
    let (start, end) = watermarks(s, t.topic_id, partition).await?;
    let needs_value = || {
        value.ok_or_else(|| {
            ApiError::BadRequest(format!("strategy {strategy:?} needs a `value`").to_lowercase())
        })
    };
    Ok(match strategy {
        ResetStrategy::Earliest => start,
        ResetStrategy::Latest => end,
        ResetStrategy::Offset => needs_value()?.clamp(start, end.max(start)),
        ResetStrategy::Timestamp => {
            let ts = needs_value()?;
            match s
                .fetch()?
                .offset_for_timestamp(t.topic_id, partition, ts)
                .await
            {
                Ok(found) => found.unwrap_or(end).clamp(start, end.max(start)),
                Err(e) => return Err(ApiError::Fetch(e)),
            }
        }
    })
}

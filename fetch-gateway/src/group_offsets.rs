//! Committed offsets of consumer groups: OffsetCommit, OffsetFetch and OffsetDelete.
//!
//! Offsets live in the metadata store (keyed by group, topic id and partition), so they
//! survive every process and a new coordinator finds them without any hand-over. Only the
//! group's coordinator reads and writes them; its writes carry a check of its lease version,
//! so a deposed coordinator cannot overwrite what the new one stored. A commit is checked
//! against the group's membership first (generation and member id, Kafka's rules in
//! [`crate::groups::GroupCoordinator::check_commit`]).
//!
//! Before a group's first commit under a coordinator lease, the coordinator enters the group in
//! the store's group directory ([`Catalog::register_group`]), so operators can list every group
//! with committed offsets, not only those in some coordinator's memory. It remembers the lease
//! epoch it did so under: the epoch changes whenever another replica held the slot in between
//! (and may have deleted the group), and then the group is entered again.
//!
//! [`Catalog::register_group`]: kafscale_shared::catalog::Catalog::register_group

use std::collections::HashMap;
use std::sync::Mutex;

use kafka_protocol::error::ResponseError;
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
    ConsumerProtocolSubscription, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::Decodable;
use kafscale_shared::catalog::{
    CatalogError, CommittedOffset, ITEM_FORMAT, LeaseFence, TopicRecord, now_ms,
};
use kafscale_shared::meta_store::MetaStoreError;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::group_api::{GroupService, code, str_bytes};
use crate::groups::MemberRef;

/// Most groups remembered as entered in the directory (beyond, the memory starts over: a
/// group is then merely entered once more).
const REGISTERED_KEPT: usize = 100_000;

/// Groups entered in the group directory → the coordinator lease epoch they were entered under.
#[derive(Debug, Default)]
pub(crate) struct Registered(Mutex<HashMap<String, u64>>);

impl Registered {
    fn get(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_current(&self, group: &str, epoch: u64) -> bool {
        self.get().get(group) == Some(&epoch)
    }

    fn insert(&self, group: &str, epoch: u64) {
        let mut map = self.get();
        if map.len() >= REGISTERED_KEPT {
            map.clear();
        }
        map.insert(group.to_string(), epoch);
    }

    pub(crate) fn forget(&self, group: &str) {
        self.get().remove(group);
    }
}

/// The topics of an OffsetFetch answer from (topic, [(partition, committed offset)]): v0-7 and
/// v8+ answer with different generated types that have the same fields.
macro_rules! committed_topics {
    ($topics:expr, $topic:ident, $partition:ident) => {
        $topics
            .into_iter()
            .map(|(name, partitions)| {
                $topic::default().with_name(name).with_partitions(
                    partitions
                        .into_iter()
                        .map(|(p, o)| {
                            let (offset, epoch, metadata) = position(o);
                            $partition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(str_bytes(&metadata)))
                        })
                        .collect(),
                )
            })
            .collect()
    };
}

/// Kafka's default `offset.metadata.max.bytes`.
const MAX_METADATA_BYTES: usize = 4096;

/// How often a commit is retried when the coordinator's own lease renewal raced it.
const FENCE_RETRIES: usize = 3;

impl GroupService {
    pub(crate) async fn offset_commit(&self, request: OffsetCommitRequest) -> OffsetCommitResponse {
        let group = request.group_id.0.to_string();
        let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
        let whole_error = self.refuse(&group).or_else(|| {
            self.groups.check_commit(
                &group,
                MemberRef::new(&request.member_id, instance.as_deref()),
                request.generation_id_or_member_epoch,
            )
        });
        let mut answers: Vec<OffsetCommitResponseTopic> = Vec::new();
        let mut writes = Vec::new();
        // (topic index, partition index) of each write, to report a store failure.
        let mut written = Vec::new();
        for topic in &request.topics {
            let name = topic.name.0.to_string();
            // A store that cannot answer gets a retriable error, not "unknown topic".
            let (record, lookup_error) = match whole_error {
                Some(_) => (None, None),
                None => match self.topics.catalog().topic(&name).await {
                    Ok(t) => (t, None),
                    Err(e) => {
                        warn!(group, topic = name, error = %e, "offset commit: topic lookup failed");
                        (None, Some(ResponseError::CoordinatorNotAvailable))
                    }
                },
            };
            let mut partitions = Vec::new();
            for p in &topic.partitions {
                let error = whole_error.or(lookup_error).or_else(|| match &record {
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
            if let Err(e) = self.store_offsets(&group, writes).await {
                for (t, p) in written {
                    answers[t].partitions[p].error_code = e.code();
                }
            } else {
                debug!(group, partitions = count, "offsets committed");
            }
        }
        OffsetCommitResponse::default().with_topics(answers)
    }

    /// Writes offsets under this coordinator's lease fence (entering the group in the
    /// directory first under a new lease epoch).
    pub(crate) async fn store_offsets(
        &self,
        group: &str,
        writes: Vec<(Uuid, i32, CommittedOffset)>,
    ) -> Result<(), ResponseError> {
        let catalog = self.topics.catalog();
        self.fenced_write(group, |fence, epoch| {
            let writes = writes.clone();
            async move {
                if !self.registered.is_current(group, epoch) {
                    catalog.register_group(group, Some(&fence)).await?;
                    self.registered.insert(group, epoch);
                }
                catalog.commit_offsets(group, writes, Some(&fence)).await
            }
        })
        .await
    }

    /// Runs `write` under the fence of `group`'s coordinator lease. A write refused by the
    /// store is retried when the lease is still this replica's (its own renewal raced the
    /// write); if another replica holds it, the answer is NOT_COORDINATOR (the client finds
    /// the new coordinator and writes there). Store failures answer COORDINATOR_NOT_AVAILABLE.
    pub(crate) async fn fenced_write<F, Fut>(
        &self,
        group: &str,
        write: F,
    ) -> Result<(), ResponseError>
    where
        F: Fn(LeaseFence, u64) -> Fut,
        Fut: std::future::Future<Output = Result<(), CatalogError>>,
    {
        let (Some(mut fence), Some(epoch)) = (self.leases.fence(group), self.leases.epoch(group))
        else {
            return Err(ResponseError::NotCoordinator);
        };
        let unavailable = |e: CatalogError| {
            warn!(group, error = %e, "group write failed");
            ResponseError::CoordinatorNotAvailable
        };
        for _ in 0..FENCE_RETRIES {
            match write(fence.clone(), epoch).await {
                Ok(()) => return Ok(()),
                Err(CatalogError::Store(MetaStoreError::ConditionFailed { .. })) => {
                    debug!(
                        group,
                        "group write raced a lease change; checking the lease"
                    );
                    match self.leases.confirm_fence(group, &fence).await {
                        Ok(Some(current)) => fence = current,
                        Ok(None) => return Err(ResponseError::NotCoordinator),
                        Err(e) => return Err(unavailable(e)),
                    }
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(ResponseError::NotCoordinator)
    }

    /// The committed offsets of one group: for the named topics and partitions, or all.
    async fn fetch_group(
        &self,
        group: &str,
        wanted: Option<Vec<(TopicName, Vec<i32>)>>,
    ) -> Result<Vec<(TopicName, Vec<(i32, Option<CommittedOffset>)>)>, ResponseError> {
        if let Some(e) = self.refuse(group) {
            return Err(e);
        }
        let catalog = self.topics.catalog();
        // COORDINATOR_LOAD_IN_PROGRESS, the one answer every client retries here: librdkafka
        // does not retry an OffsetFetch answered COORDINATOR_NOT_AVAILABLE or NOT_COORDINATOR
        // by the coordinator it knows, and the partitions waiting for it then never start.
        let unavailable = |e: kafscale_shared::catalog::CatalogError| {
            warn!(group, error = %e, "offset fetch failed");
            ResponseError::CoordinatorLoadInProgress
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

    pub(crate) async fn offset_fetch(
        &self,
        request: OffsetFetchRequest,
        version: i16,
    ) -> OffsetFetchResponse {
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
                        answer.topics = committed_topics!(
                            topics,
                            OffsetFetchResponseTopics,
                            OffsetFetchResponsePartitions
                        );
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
                    response.topics = committed_topics!(
                        topics,
                        OffsetFetchResponseTopic,
                        OffsetFetchResponsePartition
                    );
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

impl GroupService {
    pub(crate) async fn offset_delete(&self, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
        let group = request.group_id.0.to_string();
        let mut response = OffsetDeleteResponse::default();
        if let Some(e) = self.refuse(&group) {
            response.error_code = e.code();
            return response;
        }
        let catalog = self.topics.catalog();
        let subscribed = self.subscribed_topics(&group);
        let mut deletes = Vec::new();
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let record = catalog.topic(&name).await;
            let mut partitions = Vec::new();
            for p in topic.partitions {
                let error = if subscribed.contains(&name) {
                    Some(ResponseError::GroupSubscribedToTopic)
                } else {
                    match &record {
                        Ok(Some(t))
                            if p.partition_index >= 0 && p.partition_index < t.partitions =>
                        {
                            deletes.push((t.topic_id, p.partition_index));
                            None
                        }
                        Err(_) => Some(ResponseError::CoordinatorNotAvailable),
                        Ok(_) => Some(ResponseError::UnknownTopicOrPartition),
                    }
                };
                partitions.push(
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(error)),
                );
            }
            response.topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        if !deletes.is_empty() {
            let deleted = self
                .fenced_write(&group, |fence, _| {
                    let (group, deletes) = (&group, deletes.clone());
                    async move { catalog.delete_offsets(group, deletes, Some(&fence)).await }
                })
                .await;
            if let Err(e) = deleted {
                response.error_code = e.code();
            }
        }
        response
    }

    /// The topics the group's members subscribe to (consumer protocol only).
    fn subscribed_topics(&self, group: &str) -> Vec<String> {
        let (protocol_type, metadata) = self.groups.member_metadata(group);
        if protocol_type != "consumer" {
            return Vec::new();
        }
        let mut topics = Vec::new();
        for md in metadata {
            let mut buf = md.clone();
            if buf.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            let _ = bytes::Buf::get_i16(&mut buf);
            if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
                topics.extend(sub.topics.into_iter().map(|t| t.to_string()));
            }
        }
        topics
    }
}

/// (offset, leader epoch, metadata) of a committed position, or Kafka's "none" (-1, -1, "").
fn position(offset: Option<CommittedOffset>) -> (i64, i32, String) {
    match offset {
        Some(o) => (o.offset, o.leader_epoch, o.metadata.unwrap_or_default()),
        None => (-1, -1, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use kafscale_shared::catalog::Catalog;
    use kafscale_shared::meta_store::MemoryMetaStore;
    use kafscale_shared::topic_api::{TopicApi, TopicSettings};

    use super::*;
    use crate::group_leases::{GroupLeaseConfig, GroupLeases};
    use crate::groups::GroupCoordinator;

    fn replica(catalog: &Arc<Catalog>, port: i32) -> GroupService {
        let topics = TopicApi::new(
            catalog.clone(),
            TopicSettings {
                advertised_host: "127.0.0.1".into(),
                advertised_port: port,
                auto_create_topics: false,
                default_partitions: 1,
                cluster_id: "t".into(),
                node_id: port,
            },
        );
        let leases = GroupLeases::new(
            catalog.clone(),
            topics.settings().broker(),
            GroupLeaseConfig {
                ttl: Duration::from_secs(30),
                ..GroupLeaseConfig::default()
            },
        );
        GroupService {
            topics,
            groups: Arc::new(GroupCoordinator::new(Default::default())),
            leases: Arc::new(leases),
            registered: Registered::default(),
        }
    }

    fn offset(n: i64) -> Vec<(Uuid, i32, CommittedOffset)> {
        let value = CommittedOffset {
            format: ITEM_FORMAT,
            topic: "t".into(),
            offset: n,
            leader_epoch: -1,
            metadata: None,
            committed_at_ms: 0,
        };
        vec![(Uuid::from_u128(1), 0, value)]
    }

    /// A store read that fails is answered with the code librdkafka retries: given
    /// COORDINATOR_NOT_AVAILABLE it never asks again and its partitions never start.
    #[tokio::test]
    async fn an_offset_fetch_the_store_cannot_answer_is_retried_by_clients() {
        use kafka_protocol::messages::GroupId;
        use kafka_protocol::messages::offset_fetch_request::{
            OffsetFetchRequestGroup, OffsetFetchRequestTopics,
        };
        use kafscale_shared::fault_injection::{FaultSource, FaultyMetaStore};

        let faults = FaultSource::fixed(Default::default());
        let store = FaultyMetaStore::new(Arc::new(MemoryMetaStore::new()), faults.clone());
        let catalog = Arc::new(Catalog::new(Arc::new(store)));
        let a = replica(&catalog, 1001);
        a.leases.maintain(16).await;
        catalog
            .create_topic("t", 1, Default::default())
            .await
            .expect("create");
        faults.set("error=1,ops=meta-get".parse().expect("plan"));
        let topics = OffsetFetchRequestTopics::default()
            .with_name(TopicName(str_bytes("t")))
            .with_partition_indexes(vec![0]);
        let request = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(str_bytes("g")))
                .with_topics(Some(vec![topics])),
        ]);
        let response = a.offset_fetch(request, 9).await;
        assert_eq!(
            response.groups[0].error_code,
            ResponseError::CoordinatorLoadInProgress.code()
        );
    }

    #[tokio::test]
    async fn a_group_is_entered_in_the_directory_again_after_another_coordinator_deleted_it() {
        let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
        let (a, b) = (replica(&catalog, 1001), replica(&catalog, 1002));
        a.leases.maintain(16).await;
        a.store_offsets("g", offset(1)).await.expect("a commits");
        assert_eq!(catalog.list_groups().await.expect("list"), ["g"]);

        // b takes the slots over and deletes the group.
        a.leases.release_all().await;
        b.leases.maintain(16).await;
        b.delete_group("g").await.expect("b deletes");
        assert!(catalog.list_groups().await.expect("list").is_empty());

        // a coordinates again (a new lease epoch): its next commit enters the group again,
        // although a had entered it before.
        b.leases.release_all().await;
        a.leases.maintain(16).await;
        a.store_offsets("g", offset(2)).await.expect("a commits");
        assert_eq!(catalog.list_groups().await.expect("list"), ["g"]);
    }

    /// The renewal round writes the lease (a new item version) before it records the new
    /// version in memory. A commit between the two carries the old version, is refused by the
    /// store, and must find the lease still its own rather than answer NOT_COORDINATOR (seen
    /// under CPU load, where the round task waits to be scheduled after its write).
    #[tokio::test]
    async fn a_commit_racing_the_coordinators_own_renewal_is_stored() {
        let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::new())));
        let a = replica(&catalog, 1001);
        a.leases.maintain(16).await;
        let before = a.leases.fence("g").expect("a coordinates g");
        a.leases.renew_in_store_only("g").await;
        a.store_offsets("g", offset(7)).await.expect("a commits");
        let stored = catalog
            .committed_offset("g", Uuid::from_u128(1), 0)
            .await
            .expect("read");
        assert_eq!(stored.map(|o| o.offset), Some(7));
        assert_eq!(
            a.leases.fence("g").as_ref(),
            Some(&before),
            "the round records renewals, not commits"
        );

        // Another replica's lease is not mistaken for a renewal of ours.
        let b = replica(&catalog, 1002);
        a.leases.renew_in_store_only("g").await;
        catalog
            .release_lease(
                &before.name,
                &a.leases.owner_id,
                catalog
                    .lease(&before.name)
                    .await
                    .expect("read")
                    .expect("lease")
                    .1,
            )
            .await
            .expect("release");
        b.leases.maintain(16).await;
        assert!(b.leases.owns("g"));
        assert_eq!(
            a.store_offsets("g", offset(8)).await,
            Err(ResponseError::NotCoordinator)
        );
    }
}

//! The consumer-group APIs: one service per process, served on every Kafka listener.
//!
//! Membership (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) lives in memory at the group's
//! coordinator ([`GroupCoordinator`]); committed offsets live in the metadata store, written
//! only by the coordinator and fenced by its lease ([`GroupLeases`]). Any process answers
//! FindCoordinator; every other group API is answered by the coordinator only (elsewhere:
//! NOT_COORDINATOR, and the client looks the coordinator up again).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::protocol::StrBytes;
use kafscale_shared::catalog::MAX_GROUP_ID_BYTES;
use kafscale_shared::topic_api::TopicApi;
use kafscale_shared::wire::{ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::group_leases::{GroupLeaseConfig, GroupLeases};
use crate::group_metrics::GroupMetrics;
use crate::groups::{GroupConfig, GroupCoordinator};

/// The group APIs and the versions served (what Kafka 2.x-4.x clients use).
pub const GROUP_APIS: [ApiSupport; 11] = [
    ApiSupport::new(ApiKey::OffsetCommit, 2, 9),
    ApiSupport::new(ApiKey::OffsetFetch, 1, 9),
    ApiSupport::new(ApiKey::FindCoordinator, 0, 6),
    ApiSupport::new(ApiKey::JoinGroup, 0, 9),
    ApiSupport::new(ApiKey::Heartbeat, 0, 4),
    ApiSupport::new(ApiKey::LeaveGroup, 0, 5),
    ApiSupport::new(ApiKey::SyncGroup, 0, 5),
    ApiSupport::new(ApiKey::DescribeGroups, 0, 6),
    ApiSupport::new(ApiKey::ListGroups, 0, 5),
    ApiSupport::new(ApiKey::DeleteGroups, 0, 2),
    ApiSupport::new(ApiKey::OffsetDelete, 0, 0),
];

/// Settings of group coordination.
#[derive(Debug, Clone, Default)]
pub struct GroupServiceConfig {
    pub groups: GroupConfig,
    pub leases: GroupLeaseConfig,
}

/// Group membership, coordinator leases and committed offsets of one process.
pub struct GroupService {
    pub(crate) topics: TopicApi,
    pub(crate) groups: Arc<GroupCoordinator>,
    pub(crate) leases: Arc<GroupLeases>,
    /// Groups entered in the store's group directory, with the epoch of the coordinator lease
    /// they were entered under (see `GroupService::store_offsets`).
    pub(crate) registered: crate::group_offsets::Registered,
}

impl GroupService {
    /// Takes this process's first share of coordinator slots (so FindCoordinator works from
    /// the first request), then keeps the leases and the groups' deadlines on a task that ends
    /// (releasing the leases) at `shutdown`.
    pub async fn start(
        topics: TopicApi,
        config: GroupServiceConfig,
        shutdown: CancellationToken,
    ) -> (Arc<GroupService>, JoinHandle<()>) {
        let groups = Arc::new(GroupCoordinator::new(config.groups));
        let leases = Arc::new(
            GroupLeases::new(
                topics.catalog().clone(),
                topics.settings().broker(),
                config.leases,
            )
            .with_listeners(
                topics.listeners().clone(),
                topics.listener_addresses().clone(),
            ),
        );
        leases.round(&groups, &topics).await;
        let task = tokio::spawn(leases.clone().run(groups.clone(), topics.clone(), shutdown));
        let service = Arc::new(GroupService {
            topics,
            groups,
            leases,
            registered: Default::default(),
        });
        kafscale_shared::metrics::add_source(Arc::new(GroupMetrics(Arc::downgrade(&service))));
        metrics::counter!(kafscale_shared::metrics::GROUP_REBALANCES).increment(0);
        (service, task)
    }

    /// The error for a request about `group` that this process must not serve: an invalid
    /// group id, or a group another replica coordinates.
    pub(crate) fn refuse(&self, group: &str) -> Option<ResponseError> {
        if !valid_group(group) {
            Some(ResponseError::InvalidGroupId)
        } else if !self.leases.owns(group) {
            Some(ResponseError::NotCoordinator)
        } else {
            None
        }
    }
}

pub(crate) fn valid_group(group: &str) -> bool {
    !group.is_empty() && group.len() <= MAX_GROUP_ID_BYTES
}

pub(crate) fn code(e: Option<ResponseError>) -> i16 {
    e.map_or(0, |e| e.code())
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn millis(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// Serves [`GROUP_APIS`] from a [`GroupService`].
pub struct GroupHandler {
    service: Arc<GroupService>,
}

impl GroupHandler {
    pub fn new(service: Arc<GroupService>) -> Self {
        GroupHandler { service }
    }
}

#[async_trait::async_trait]
impl KafkaHandler for GroupHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        GROUP_APIS.to_vec()
    }

    async fn start(&self, ctx: RequestContext, request: RequestKind) -> Dispatch {
        let s = self.service.clone();
        let v = ctx.api_version;
        let span = tracing::info_span!(parent: None, "group_api", api = ?ctx.api_key, connection = ctx.connection_id);
        let client_id = ctx.client_id.clone().unwrap_or_default();
        let client_host = format!("/{}", ctx.peer.ip());
        let api = ctx.api_key;
        let response: futures::future::BoxFuture<
            'static,
            Result<kafka_protocol::messages::ResponseKind, HandlerError>,
        > = match request {
            RequestKind::FindCoordinator(r) => {
                Box::pin(async move { Ok(s.find_coordinator(r, v).await.into()) })
            }
            RequestKind::JoinGroup(r) => {
                Box::pin(async move { Ok(s.join_group(r, v, client_id, client_host).await.into()) })
            }
            RequestKind::SyncGroup(r) => {
                Box::pin(async move { Ok(s.sync_group(r, v).await.into()) })
            }
            RequestKind::Heartbeat(r) => Box::pin(async move { Ok(s.heartbeat(r).into()) }),
            RequestKind::LeaveGroup(r) => Box::pin(async move { Ok(s.leave_group(r, v).into()) }),
            RequestKind::DescribeGroups(r) => {
                Box::pin(async move { Ok(s.describe_groups(r).into()) })
            }
            RequestKind::ListGroups(r) => Box::pin(async move { Ok(s.list_groups(r).into()) }),
            RequestKind::DeleteGroups(r) => {
                Box::pin(async move { Ok(s.delete_groups(r).await.into()) })
            }
            RequestKind::OffsetCommit(r) => {
                Box::pin(async move { Ok(s.offset_commit(r).await.into()) })
            }
            RequestKind::OffsetFetch(r) => {
                Box::pin(async move { Ok(s.offset_fetch(r, v).await.into()) })
            }
            RequestKind::OffsetDelete(r) => {
                Box::pin(async move { Ok(s.offset_delete(r).await.into()) })
            }
            _ => Box::pin(async move {
                Err(HandlerError::Fatal(format!(
                    "group handler cannot serve {api:?}"
                )))
            }),
        };
        Dispatch::Respond(Box::pin(response.instrument(span)))
    }
}

//! `/v1/cluster` and `/v1/shards`: who is alive and who owns what, read from the lease and
//! member items in the metadata store (the same items the processes coordinate through, so
//! the answer is as current as the store). `/v1/shards` adds each owner's live queue depth and
//! commit latency ([`shard_status`]).

use axum::Json;
use axum::extract::State;
use kafscale_fetch::{
    COORDINATOR_MEMBER_KIND, GROUP_LEASE_PREFIX, GROUP_SLOTS, NON_COORDINATOR_MEMBER_KIND,
};
use kafscale_indexer::status::CommitLatency;
use kafscale_shared::catalog::{LeaseRecord, now_ms};
use kafscale_shared::shards::{SHARD_LEASE_PREFIX, shard_of_lease_name};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::{AdminState, shard_status};

/// The member kinds processes heartbeat under, reported as their roles: indexers with their
/// shard leases, fetch gateways (and standalone) with their coordinator slots, ingest gateways
/// with the same lease round although they hold no lease.
const ROLES: [(&str, &str); 3] = [
    ("indexer", "indexer"),
    (COORDINATOR_MEMBER_KIND, "fetch"),
    (NON_COORDINATOR_MEMBER_KIND, "ingest"),
];

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ClusterInfo {
    /// How the answering process runs: standalone, ingest or fetch.
    pub(crate) mode: String,
    /// kafscale version of the answering process.
    pub(crate) version: String,
    /// Indexer shards of the cluster (fixed at creation).
    pub(crate) shard_count: u32,
    /// Live processes by role, from their heartbeats (items with an expiry that each process
    /// renews): `indexer` (sequencers), `fetch` (group coordinators: fetch gateways and
    /// standalone) and `ingest` (ingest gateways). A process that stops renewing drops out
    /// after its lease time.
    pub(crate) processes: Vec<ProcessInfo>,
    /// The owner of every indexer shard.
    pub(crate) shards: Vec<LeaseInfo>,
    /// The owner of every consumer-group coordinator slot.
    pub(crate) coordinator_slots: Vec<LeaseInfo>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ProcessInfo {
    pub(crate) role: String,
    pub(crate) id: String,
    /// Address the process serves its role at ("host:port").
    pub(crate) addr: String,
    /// When its heartbeat expires (ms since the epoch).
    pub(crate) expires_at_ms: i64,
}

/// One lease: an indexer shard or a group coordinator slot.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LeaseInfo {
    /// The shard or slot number.
    pub(crate) index: u32,
    /// Lease holder's id; null if nobody ever held it.
    pub(crate) owner: Option<String>,
    pub(crate) owner_addr: Option<String>,
    /// Grows on every change of owner (the fencing epoch).
    pub(crate) epoch: Option<u64>,
    pub(crate) expires_at_ms: Option<i64>,
    /// Whether the lease is held right now (not expired).
    pub(crate) live: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ShardList {
    pub(crate) shard_count: u32,
    pub(crate) shards: Vec<ShardInfo>,
}

/// One indexer shard: its lease, and the owner's live figures for it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ShardInfo {
    /// The shard's lease (the owner's address is "in-process" in standalone).
    #[serde(flatten)]
    pub(crate) lease: LeaseInfo,
    /// `ok`: the figures below come from the owner. `unknown`: the shard has no live owner,
    /// or the owner did not answer within a second; the figures are null.
    pub(crate) figures: FiguresState,
    /// Commits waiting for or inside the shard's sequencing lock at the owner right now (the
    /// indexer tier's scaling signal, per shard).
    pub(crate) queue_depth: Option<u64>,
    /// The owner's commit latency for the shard over the last minute.
    pub(crate) commit_latency: Option<CommitLatencyInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FiguresState {
    Ok,
    Unknown,
}

/// Commit latency over a sliding window (request in to answer out at the indexer, failed
/// commits included; at most the newest 1024 commits of the window). The statistics are null
/// when no commit finished in the window; percentiles are nearest-rank.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CommitLatencyInfo {
    /// The window's length (60).
    pub(crate) window_seconds: u64,
    /// Commits that finished in the window.
    pub(crate) commits: u64,
    pub(crate) mean_seconds: Option<f64>,
    pub(crate) p50_seconds: Option<f64>,
    pub(crate) p99_seconds: Option<f64>,
    pub(crate) max_seconds: Option<f64>,
}

impl From<CommitLatency> for CommitLatencyInfo {
    fn from(l: CommitLatency) -> Self {
        CommitLatencyInfo {
            window_seconds: l.window_seconds,
            commits: l.commits,
            mean_seconds: l.mean_seconds,
            p50_seconds: l.p50_seconds,
            p99_seconds: l.p99_seconds,
            max_seconds: l.max_seconds,
        }
    }
}

#[utoipa::path(
    get, path = "/v1/cluster", tag = "cluster",
    summary = "Mode, version, live processes by role, shard and coordinator slot owners",
    responses(
        (status = 200, body = ClusterInfo),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn cluster(State(s): State<AdminState>) -> Result<Json<ClusterInfo>, ApiError> {
    let mut processes = Vec::new();
    for (kind, role) in ROLES {
        for m in s.catalog().live_members(kind).await? {
            processes.push(ProcessInfo {
                role: role.to_string(),
                id: m.owner,
                addr: m.owner_addr,
                expires_at_ms: m.expires_at_ms,
            });
        }
    }
    let shards = shard_leases(&s).await?;
    let slots = s.catalog().leases(GROUP_LEASE_PREFIX).await?;
    let coordinator_slots = lease_table(GROUP_SLOTS, slots, |name| {
        name.strip_prefix(GROUP_LEASE_PREFIX)?.parse().ok()
    });
    Ok(Json(ClusterInfo {
        mode: s.inner.mode.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        shard_count: s.inner.shard_count,
        processes,
        shards,
        coordinator_slots,
    }))
}

#[utoipa::path(
    get, path = "/v1/shards", tag = "cluster",
    summary = "Indexer shards: owner, address and epoch of each shard's lease, with the owner's queue depth and commit latency",
    responses(
        (status = 200, body = ShardList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn shards(State(s): State<AdminState>) -> Result<Json<ShardList>, ApiError> {
    let leases = shard_leases(&s).await?;
    let mut figures = shard_status::collect(&s.shard_figures(), &leases).await;
    let shards = leases
        .into_iter()
        .map(|l| {
            let status = figures.remove(&l.index);
            ShardInfo {
                lease: l,
                figures: if status.is_some() {
                    FiguresState::Ok
                } else {
                    FiguresState::Unknown
                },
                queue_depth: status.as_ref().map(|s| s.queue_depth),
                commit_latency: status.map(|s| s.commit_latency.into()),
            }
        })
        .collect();
    Ok(Json(ShardList {
        shard_count: s.inner.shard_count,
        shards,
    }))
}

async fn shard_leases(s: &AdminState) -> Result<Vec<LeaseInfo>, ApiError> {
    let leases = s.catalog().leases(SHARD_LEASE_PREFIX).await?;
    Ok(lease_table(
        s.inner.shard_count,
        leases,
        shard_of_lease_name,
    ))
}

/// One row per index below `count`, filled from the leases whose name `index_of` parses.
fn lease_table(
    count: u32,
    leases: Vec<(String, LeaseRecord, u64)>,
    index_of: impl Fn(&str) -> Option<u32>,
) -> Vec<LeaseInfo> {
    let now = now_ms();
    let mut rows: Vec<LeaseInfo> = (0..count)
        .map(|index| LeaseInfo {
            index,
            owner: None,
            owner_addr: None,
            epoch: None,
            expires_at_ms: None,
            live: false,
        })
        .collect();
    for (name, lease, _) in leases {
        if let Some(row) = index_of(&name).and_then(|i| rows.get_mut(i as usize)) {
            row.live = lease.expires_at_ms > now;
            row.owner = Some(lease.owner);
            row.owner_addr = Some(lease.owner_addr);
            row.epoch = Some(lease.epoch);
            row.expires_at_ms = Some(lease.expires_at_ms);
        }
    }
    rows
}

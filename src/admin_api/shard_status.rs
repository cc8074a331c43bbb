//! The live figures of the indexer shards (queue depth, recent commit latency) for
//! `/v1/shards`. They exist only in the memory of each shard's owner, and the admin API runs on
//! gateways and standalone, not on indexers: so a gateway asks every live owner named by the
//! shard leases (`GET /v1/shards` on the owner's HTTP address, all owners at once, each within
//! [`OWNER_TIMEOUT`]), and standalone reads its in-process indexer directly. An owner that does
//! not answer in time, answers garbage, or answers as a different replica than the lease names
//! leaves its shards' figures `unknown`: the lease columns are still right, and one slow
//! indexer never holds up the answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafscale_indexer::Indexer;
use kafscale_indexer::status::{SHARDS_PATH, ShardStatus, ShardStatusList};
use kafscale_shared::http_client::{HttpClient, InternalCalls};
use tokio::task::JoinSet;

use super::cluster::LeaseInfo;

/// How long one indexer may take to answer.
pub(crate) const OWNER_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the shard figures come from.
#[derive(Clone)]
pub(crate) enum ShardFigures {
    /// Standalone: the indexer runs in this process.
    Local(Arc<Indexer>),
    /// Gateways: ask the owners over HTTP(S), as the gateway calls indexers.
    Remote(InternalCalls),
}

/// The figures of every live, owned shard whose owner answered as the lease's holder, by
/// shard index.
pub(crate) async fn collect(
    source: &ShardFigures,
    leases: &[LeaseInfo],
) -> HashMap<u32, ShardStatus> {
    let answers = match source {
        ShardFigures::Local(indexer) => vec![indexer.shard_status()],
        ShardFigures::Remote(calls) => ask_owners(calls, leases).await,
    };
    matching(leases, answers)
}

/// Keeps each answer's figures for the shards whose live lease names the answering replica.
fn matching(leases: &[LeaseInfo], answers: Vec<ShardStatusList>) -> HashMap<u32, ShardStatus> {
    let mut out = HashMap::new();
    for answer in answers {
        let mut by_shard: HashMap<u32, ShardStatus> =
            answer.shards.into_iter().map(|s| (s.shard, s)).collect();
        for lease in leases {
            if lease.live
                && lease.owner.as_deref() == Some(answer.owner.as_str())
                && let Some(status) = by_shard.remove(&lease.index)
            {
                out.insert(lease.index, status);
            }
        }
    }
    out
}

/// Asks every distinct live owner at once; the ones that fail are left out.
async fn ask_owners(calls: &InternalCalls, leases: &[LeaseInfo]) -> Vec<ShardStatusList> {
    let mut addrs: Vec<String> = leases
        .iter()
        .filter(|l| l.live)
        .filter_map(|l| l.owner_addr.clone())
        .collect();
    addrs.sort();
    addrs.dedup();
    let client = calls.client(OWNER_TIMEOUT);
    let mut asks = JoinSet::new();
    for addr in addrs {
        let client = client.clone();
        asks.spawn(async move {
            match ask(&client, &addr).await {
                Ok(list) => Some(list),
                Err(e) => {
                    tracing::debug!(addr, error = %e, "indexer shard status unavailable");
                    None
                }
            }
        });
    }
    let mut out = Vec::new();
    while let Some(done) = asks.join_next().await {
        if let Ok(Some(list)) = done {
            out.push(list);
        }
    }
    out
}

async fn ask(client: &HttpClient, addr: &str) -> Result<ShardStatusList, String> {
    let answer = client
        .get(&client.url(addr, SHARDS_PATH), OWNER_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if !answer.status().is_success() {
        return Err(format!("status {}", answer.status()));
    }
    serde_json::from_slice(answer.body()).map_err(|e| e.to_string())
}

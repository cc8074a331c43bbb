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

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kafscale_indexer::Indexer;
use kafscale_indexer::status::{SHARDS_PATH, ShardStatus, ShardStatusList};
use tokio::task::JoinSet;

use super::cluster::LeaseInfo;

/// How long one indexer may take to answer.
pub(crate) const OWNER_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest status answer read (a few hundred bytes per shard).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Where the shard figures come from.
#[derive(Clone)]
pub(crate) enum ShardFigures {
    /// Standalone: the indexer runs in this process.
    Local(Arc<Indexer>),
    /// Gateways: ask the owners over HTTP.
    Remote,
}

/// The figures of every live, owned shard whose owner answered as the lease's holder, by
/// shard index.
pub(crate) async fn collect(
    source: &ShardFigures,
    leases: &[LeaseInfo],
) -> HashMap<u32, ShardStatus> {
    let answers = match source {
        ShardFigures::Local(indexer) => vec![indexer.shard_status()],
        ShardFigures::Remote => ask_owners(leases).await,
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
async fn ask_owners(leases: &[LeaseInfo]) -> Vec<ShardStatusList> {
    let mut addrs: Vec<String> = leases
        .iter()
        .filter(|l| l.live)
        .filter_map(|l| l.owner_addr.clone())
        .collect();
    addrs.sort();
    addrs.dedup();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(OWNER_TIMEOUT));
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let mut asks = JoinSet::new();
    for addr in addrs {
        let client = client.clone();
        asks.spawn(async move {
            let answer = tokio::time::timeout(OWNER_TIMEOUT, ask(&client, &addr)).await;
            match answer {
                Ok(Ok(list)) => Some(list),
                Ok(Err(e)) => {
                    tracing::debug!(addr, error = %e, "indexer shard status unavailable");
                    None
                }
                Err(_) => {
                    tracing::debug!(addr, "indexer shard status timed out");
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

async fn ask(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: &str,
) -> Result<ShardStatusList, String> {
    let uri: hyper::Uri = format!("http://{addr}{SHARDS_PATH}")
        .parse()
        .map_err(|e| format!("bad owner address: {e}"))?;
    let response = client.get(uri).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

//! Following the indexers' high-watermark change feeds (`GET /v1/watermarks` on each indexer).
//!
//! A fetch gateway in its own process learns that a commit moved a watermark either from the
//! store (polled, see `FetchService::run_store_poller`) or, much sooner, from the indexer that
//! made the commit. This module finds the live indexers through the shard leases, keeps one
//! long poll open to each, and applies the changes to the gateway's [`Watermarks`] — only for
//! partitions the gateway already serves — which wakes the long polls waiting on them.
//!
//! The feed is an accelerator, never the source of truth: a lost answer, a restarted indexer or
//! a reader that fell behind the journal only means waiting for the next store poll. Every
//! value it carries was committed before it was published, and watermarks only move forward,
//! so applying a stale or repeated change is harmless.
//!
//! Requests carry the cluster-internal token when one is configured. A refused token (401)
//! is warned about once per indexer followed (never with the token) and retried with the
//! usual growing backoff, so a misconfigured gateway still serves fetches from the store
//! polls and never spins on the feed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kafscale_shared::catalog::{Catalog, now_ms};
use kafscale_shared::http_client::{HttpClient, InternalCalls};
use kafscale_shared::shards::SHARD_LEASE_PREFIX;
use kafscale_shared::watermarks::{WatermarkFeed, Watermarks};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Path of the indexer's feed (see `kafscale_indexer::http`).
const WATERMARKS_PATH: &str = "/v1/watermarks";

/// How a gateway follows the feeds.
#[derive(Debug, Clone)]
pub struct FeedFollowerConfig {
    /// How often the set of live indexers is re-read from the leases.
    pub discovery_interval: Duration,
    /// How long one feed request waits for a change.
    pub wait: Duration,
    /// The token sent on every feed request (redacted in `Debug`) and HTTPS to the indexers.
    pub internal: InternalCalls,
}

impl Default for FeedFollowerConfig {
    fn default() -> Self {
        FeedFollowerConfig {
            discovery_interval: Duration::from_secs(2),
            wait: Duration::from_secs(10),
            internal: InternalCalls::default(),
        }
    }
}

/// Follows the feed of every live indexer until `shutdown`.
pub async fn follow_indexer_feeds(
    catalog: Arc<Catalog>,
    watermarks: Arc<Watermarks>,
    config: FeedFollowerConfig,
    shutdown: CancellationToken,
) {
    let client = config.internal.client(Duration::from_secs(2));
    let mut followed: HashMap<String, CancellationToken> = HashMap::new();
    let mut tick = tokio::time::interval(config.discovery_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let live: HashSet<String> = match catalog.leases(SHARD_LEASE_PREFIX).await {
            Ok(leases) => {
                let now = now_ms();
                leases
                    .into_iter()
                    .filter(|(_, lease, _)| {
                        lease.expires_at_ms > now && !lease.owner_addr.is_empty()
                    })
                    .map(|(_, lease, _)| lease.owner_addr)
                    .collect()
            }
            Err(e) => {
                debug!(error = %e, "cannot list indexers; keeping the feeds followed so far");
                continue;
            }
        };
        followed.retain(|addr, token| {
            let keep = live.contains(addr);
            if !keep {
                info!(indexer = %addr, "no longer following the watermark feed of a gone indexer");
                token.cancel();
            }
            keep
        });
        for addr in live {
            if followed.contains_key(&addr) {
                continue;
            }
            info!(indexer = %addr, "following the indexer's watermark feed");
            let token = shutdown.child_token();
            followed.insert(addr.clone(), token.clone());
            tokio::spawn(follow_one(
                client.clone(),
                addr,
                watermarks.clone(),
                config.wait,
                token,
            ));
        }
    }
    for token in followed.values() {
        token.cancel();
    }
}

/// Why one feed request failed.
enum FeedError {
    /// 401: the indexer refused the internal token.
    Refused,
    Other(String),
}

/// Long-polls one indexer's feed until `stop`.
async fn follow_one(
    client: HttpClient,
    addr: String,
    watermarks: Arc<Watermarks>,
    wait: Duration,
    stop: CancellationToken,
) {
    let mut after: Option<u64> = None;
    let mut backoff = Duration::from_millis(100);
    let mut refusal_warned = false;
    loop {
        let uri = match after {
            Some(seq) => client.url(
                &addr,
                &format!("{WATERMARKS_PATH}?after={seq}&wait_ms={}", wait.as_millis()),
            ),
            None => client.url(&addr, WATERMARKS_PATH),
        };
        let request = async {
            let answer = client
                .get(&uri, wait + Duration::from_secs(5))
                .await
                .map_err(|e| FeedError::Other(e.to_string()))?;
            if answer.status().as_u16() == 401 {
                return Err(FeedError::Refused);
            }
            if !answer.status().is_success() {
                return Err(FeedError::Other(format!("answered {}", answer.status())));
            }
            serde_json::from_slice::<WatermarkFeed>(answer.body())
                .map_err(|e| FeedError::Other(e.to_string()))
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = request => r,
        };
        match outcome {
            Ok(feed) => {
                for c in &feed.changes {
                    watermarks.advance_known(c.topic_id, c.partition, c.offsets);
                }
                after = Some(feed.seq);
                backoff = Duration::from_millis(100);
            }
            Err(FeedError::Refused) => {
                if !std::mem::replace(&mut refusal_warned, true) {
                    warn!(indexer = %addr, "indexer refused the internal token on its watermark feed; check --internal-token-file (fetches still see new data through store polls)");
                }
                after = None;
            }
            Err(FeedError::Other(e)) => {
                debug!(indexer = %addr, error = %e, "watermark feed request failed");
                after = None;
            }
        }
        if after.is_none() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

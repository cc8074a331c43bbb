//! What an operator asks an indexer replica about its shards: how many commits are waiting on
//! each (queue depth, the indexer tier's scaling signal) and how long recent commits took.
//!
//! The figures are the per-shard counterparts of the process-wide metrics
//! `kafscale_indexer_commit_queue_depth` and `kafscale_indexer_commit_duration_seconds`, kept
//! beside them on the commit path ([`ShardStats`]). Latency is summarised over a sliding window
//! of the last [`LATENCY_WINDOW`] (at most [`LATENCY_SAMPLES`] commits per shard, the newest
//! kept): count, mean, p50, p99 and max, computed when asked, so the commit path only appends.
//!
//! `GET /v1/shards` on the indexer's HTTP listener answers a [`ShardStatusList`] for every
//! shard of the cluster, whoever owns it: the admin API of the gateways pairs the figures with
//! the shard leases and keeps only those of the replica the lease names (its `owner`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::Indexer;

/// Path of the shard status endpoint.
pub const SHARDS_PATH: &str = "/v1/shards";

/// How far back commit latencies are summarised.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(60);

/// Most commit latencies kept per shard (the newest).
pub const LATENCY_SAMPLES: usize = 1024;

/// One replica's figures for every shard of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardStatusList {
    /// The replica's id, as written into the shard leases it holds.
    pub owner: String,
    pub shards: Vec<ShardStatus>,
}

/// One shard's figures at this replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardStatus {
    pub shard: u32,
    /// Commits waiting for or inside the shard's sequencing lock right now.
    pub queue_depth: u64,
    pub commit_latency: CommitLatency,
}

/// Commit latency of one shard over the last `window_seconds` (request in to answer out,
/// failed commits included). The statistics are null when no commit finished in the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitLatency {
    pub window_seconds: u64,
    /// Commits that finished in the window (at most the samples kept).
    pub commits: u64,
    pub mean_seconds: Option<f64>,
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
}

/// The commit-path figures of one shard.
#[derive(Debug, Default)]
pub(crate) struct ShardStats {
    queued: AtomicU64,
    latencies: Mutex<VecDeque<(Instant, Duration)>>,
}

/// Keeps a commit counted in its shard's queue until dropped (done or cancelled).
pub(crate) struct QueuedOnShard<'a>(&'a ShardStats);

impl Drop for QueuedOnShard<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ShardStats {
    /// Counts a commit in the queue until the guard is dropped.
    pub(crate) fn enter(&self) -> QueuedOnShard<'_> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        QueuedOnShard(self)
    }

    /// Records one finished commit's latency.
    pub(crate) fn record(&self, now: Instant, latency: Duration) {
        let mut window = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        if window.len() >= LATENCY_SAMPLES {
            window.pop_front();
        }
        window.push_back((now, latency));
    }

    /// The shard's figures as of `now`.
    pub(crate) fn status(&self, shard: u32, now: Instant) -> ShardStatus {
        let mut recent: Vec<f64> = {
            let mut window = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
            while window
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > LATENCY_WINDOW)
            {
                window.pop_front();
            }
            window.iter().map(|(_, d)| d.as_secs_f64()).collect()
        };
        recent.sort_by(f64::total_cmp);
        ShardStatus {
            shard,
            queue_depth: self.queued.load(Ordering::Relaxed),
            commit_latency: summarise(&recent),
        }
    }
}

/// Count, mean, p50, p99 and max of sorted latencies (nearest-rank percentiles).
fn summarise(sorted: &[f64]) -> CommitLatency {
    let rank = |q: f64| {
        let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[i - 1]
    };
    let some = !sorted.is_empty();
    CommitLatency {
        window_seconds: LATENCY_WINDOW.as_secs(),
        commits: sorted.len() as u64,
        mean_seconds: some.then(|| sorted.iter().sum::<f64>() / sorted.len() as f64),
        p50_seconds: some.then(|| rank(0.50)),
        p99_seconds: some.then(|| rank(0.99)),
        max_seconds: sorted.last().copied(),
    }
}

async fn shards(State(indexer): State<Arc<Indexer>>) -> Json<ShardStatusList> {
    Json(indexer.shard_status())
}

/// The route of the shard status endpoint, to be merged into the indexer's HTTP server.
pub fn status_routes(indexer: Arc<Indexer>) -> Router {
    Router::new()
        .route(SHARDS_PATH, get(shards))
        .with_state(indexer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_summarised_over_the_window_and_the_queue_counts_guards() {
        let stats = ShardStats::default();
        let start = Instant::now();
        let empty = stats.status(3, start);
        assert_eq!((empty.shard, empty.queue_depth), (3, 0));
        assert_eq!(empty.commit_latency.commits, 0);
        assert_eq!(empty.commit_latency.p99_seconds, None);

        // An old commit that falls out of the window, then 1..=100 ms.
        stats.record(start, Duration::from_secs(5));
        let later = start + LATENCY_WINDOW + Duration::from_secs(1);
        for ms in 1..=100 {
            stats.record(later, Duration::from_millis(ms));
        }
        let s = stats.status(3, later);
        let l = &s.commit_latency;
        assert_eq!(l.commits, 100);
        assert_eq!(l.p50_seconds, Some(0.050));
        assert_eq!(l.p99_seconds, Some(0.099));
        assert_eq!(l.max_seconds, Some(0.100));
        assert!(
            (l.mean_seconds.unwrap_or(0.0) - 0.0505).abs() < 1e-9,
            "{l:?}"
        );

        let a = stats.enter();
        let b = stats.enter();
        assert_eq!(stats.status(3, later).queue_depth, 2);
        drop(a);
        assert_eq!(stats.status(3, later).queue_depth, 1);
        drop(b);
        assert_eq!(stats.status(3, later).queue_depth, 0);
    }

    #[test]
    fn only_the_newest_samples_are_kept() {
        let stats = ShardStats::default();
        let now = Instant::now();
        for _ in 0..LATENCY_SAMPLES {
            stats.record(now, Duration::from_secs(1));
        }
        stats.record(now, Duration::from_millis(1));
        let l = stats.status(0, now).commit_latency;
        assert_eq!(l.commits, LATENCY_SAMPLES as u64);
        assert!(l.mean_seconds.is_some_and(|m| m < 1.0));
    }
}

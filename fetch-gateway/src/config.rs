//! Settings of the fetch tier.

use std::time::Duration;

/// How the fetch gateway reads and caches.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Bytes of index-entry ranges kept in memory with their batches' real base offsets.
    pub range_cache_bytes: usize,
    /// The object store caches whole blocks itself (the block cache): ranges read from it
    /// are slices of its blocks, so the range cache keeps only their base offsets (keeping the
    /// slices would hold whole blocks in memory after the block cache let them go).
    pub store_caches_blocks: bool,
    /// Index entries kept in memory across all partitions.
    pub index_cache_entries: usize,
    /// Upper bound on a long poll, whatever the client asks.
    pub max_wait_cap: Duration,
    /// When the indexer runs in another process: how old known offsets may get before a read
    /// asks the store again, and how often waited-on partitions are polled. `None` when the
    /// indexer publishes to this process directly (standalone).
    pub store_poll_interval: Option<Duration>,
    /// Largest Fetch response, whatever the client asks (Kafka's broker `fetch.max.bytes`);
    /// also the bound for v0–v2 requests, which carry no response limit of their own.
    pub max_response_bytes: usize,
    /// Bytes all Fetch requests of this process may hold in memory at once while reading; a
    /// request that cannot get its share answers with what it has and a throttle time.
    pub memory_bytes: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            range_cache_bytes: 256 * 1024 * 1024,
            store_caches_blocks: false,
            index_cache_entries: 1_000_000,
            max_wait_cap: Duration::from_secs(30),
            store_poll_interval: None,
            max_response_bytes: 55 * 1024 * 1024,
            memory_bytes: 512 * 1024 * 1024,
        }
    }
}

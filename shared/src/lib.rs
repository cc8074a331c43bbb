//! Code shared by every kafscale tier: the Kafka wire server core, the segment object format,
//! record-batch validation, the object-store and metadata-store traits with their backends,
//! the typed catalog over the metadata store, the sequencer (commit) contract and config.
//!
//! Tier crates (`kafscale-ingest`, `kafscale-fetch`, `kafscale-indexer`) depend on this crate
//! and never on each other; the `kafscale` binary wires them together.

pub mod authz;
pub mod batch;
pub mod bearer;
pub mod buffer_pool;
pub mod catalog;
pub mod config_api;
pub mod fault_injection;
pub mod http_client;
pub mod keyed_records;
pub mod keys;
pub mod lease_observations;
pub mod listener_addresses;
pub mod loading_cache;
pub mod meta_store;
pub mod metered;
pub mod metrics;
pub mod object_store;
pub mod periodic;
pub mod scram_api;
pub mod scram_credentials;
pub mod segment;
pub mod sequencer;
pub mod shard_log;
pub mod shards;
pub mod simulated_latency;
pub mod simulated_throughput;
pub mod tls_reload;
pub mod topic_api;
pub mod topic_config;
pub mod topic_handler;
pub mod trace_context;
pub mod watermarks;
pub mod wire;

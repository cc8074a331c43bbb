//! The scale simulation: many ingest gateways and indexers in one process, against an object
//! store and a metadata store that behave like S3 and DynamoDB in the ways that limit scale.
//!
//! A real cluster of 100 gateways cannot run on one 2-core machine, but what stops a cluster
//! from scaling is rarely CPU: it is a key that every commit writes (DynamoDB serves about
//! 1,000 write units a second per partition key), a prefix every upload lands in (S3 serves
//! 3,500 PUTs a second per prefix), or a lane that serializes commits. Those limits are
//! simulated by `kafscale_shared::simulated_latency` (service latency plus per-key and
//! per-prefix token buckets), so running the real gateway and indexer code against them shows
//! where throughput stops growing, which key saturates first, and that throttling ends in
//! retriable errors, never in a lost acknowledged batch: after every run the acknowledged
//! batches are checked against the partition rows and index entries.
//!
//! What is not simulated: the network between gateways and indexers (commits are function
//! calls, with no HTTP), Kafka clients (producers append validated batches to a gateway's
//! buffer directly) and the fetch tier. Object bodies are dropped after their size is noted.

mod error;
mod producers;
mod report;
mod routing;
mod sizes_only;
mod verify;
mod world;

pub use error::SimError;
pub use report::{KeyLoad, Report};
pub use world::{SimConfig, run};

//! What storing data in kafscale costs, per GiB produced, from the requests it counted.
//!
//! Putting Kafka on object storage is about cost: no disks to replicate to, no cross-zone
//! replication traffic. What it costs instead is requests: a PUT per segment, DynamoDB write
//! units per commit. Those depend on traffic (light traffic makes small segments) and on the
//! flush policy, so the only honest figure is one measured: every process counts its
//! object-store requests and the DynamoDB capacity units its metadata requests would consume
//! (`kafscale_object_store_*`, `kafscale_meta_store_*_units_total`), and this crate turns two
//! scrapes of those counters into dollars per GiB at published prices, next to what a
//! three-replica Kafka pays for cross-zone traffic for the same bytes.
//!
//! It does no I/O: `kafscale cost` scrapes the `/metrics` pages and saves baselines; this
//! crate parses the text ([`exposition`]), sums what it needs ([`Usage`]) and prices it
//! ([`Estimate`]). docs/cost.md has the prices, their date and measured runs.

mod error;
mod estimate;
pub mod exposition;
pub mod prices;
mod usage;

pub use error::CostError;
pub use estimate::{Estimate, Line};
pub use usage::Usage;

//! The fetch gateway: the stateless consume tier.
//!
//! Fetch and ListOffsets are served from segment objects through the offset index: an index
//! lookup names the segment and exact byte range holding an offset, the range is read once
//! (coalesced and cached, with every stored batch's base offset patched to its real offset),
//! and slices of it are returned without re-encoding a single record. Long polls
//! (`max_wait_ms`/`min_bytes`) wake as soon as a requested partition's high watermark moves.

mod config;
mod error;
mod fetch;
mod group_admin;
mod group_api;
mod group_leases;
mod group_membership;
mod group_metrics;
mod group_offsets;
mod groups;
mod handler;
mod index_cache;
mod list_offsets;
mod range_cache;
#[cfg(test)]
mod sim_rng;
mod watermark_feed;

pub use config::FetchConfig;
pub use error::FetchError;
pub use fetch::FetchService;
pub use group_admin::{GroupInfo, GroupLookup, GroupMemberInfo, GroupSummary, OffsetReset};
pub use group_api::{GROUP_APIS, GroupHandler, GroupService, GroupServiceConfig};
pub use group_leases::{
    COORDINATOR_MEMBER_KIND, GROUP_LEASE_PREFIX, GROUP_SLOTS, GroupLeaseConfig,
    NON_COORDINATOR_MEMBER_KIND, group_slot,
};
pub use groups::GroupConfig;
pub use handler::{FETCH_APIS, FetchHandler};
pub use watermark_feed::{FeedFollowerConfig, follow_indexer_feeds};

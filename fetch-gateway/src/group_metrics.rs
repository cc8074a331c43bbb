//! Consumer-group metrics, read at scrape time: the groups this process coordinates, their
//! members, and each group's lag per partition (high watermark minus committed offset).
//!
//! Lag is computed when Prometheus scrapes, from the store (one query for a group's committed
//! offsets, one read per committed partition's high watermark), only for the groups whose
//! coordinator lease this process holds: each group is reported by exactly one process, and a
//! group that moves away stops being reported here (no stale series). The label set is bounded
//! by the groups and the partitions they commit.

use std::sync::Weak;

use kafscale_shared::metrics::{self as names, ScrapeSource, TextWriter};
use tracing::debug;

use crate::group_api::GroupService;

/// The scrape-time source of the group metrics of one [`GroupService`].
pub(crate) struct GroupMetrics(pub(crate) Weak<GroupService>);

#[async_trait::async_trait]
impl ScrapeSource for GroupMetrics {
    async fn collect(&self, out: &mut TextWriter) {
        let Some(service) = self.0.upgrade() else {
            return;
        };
        let groups: Vec<(String, usize)> = service
            .groups
            .member_counts()
            .into_iter()
            .filter(|(id, _)| service.leases.owns(id))
            .collect();
        out.sample(names::GROUPS, &[], groups.len() as f64);
        let members: usize = groups.iter().map(|(_, n)| n).sum();
        out.sample(names::GROUP_MEMBERS, &[], members as f64);
        for (group, _) in &groups {
            lag_of(&service, group, out).await;
        }
    }
}

/// Writes the lag of every partition `group` has committed an offset for.
async fn lag_of(service: &GroupService, group: &str, out: &mut TextWriter) {
    let catalog = service.topics.catalog();
    let committed = match catalog.committed_offsets(group).await {
        Ok(c) => c,
        Err(e) => {
            debug!(group, error = %e, "no lag: committed offsets unreadable");
            return;
        }
    };
    for (topic_id, partition, offset) in committed {
        let Ok(Some(record)) = catalog.partition_view(topic_id, partition).await else {
            continue;
        };
        let topic = match catalog.topic_by_id(topic_id).await {
            Ok(Some(t)) => t.name,
            _ => offset.topic.clone(),
        };
        let lag = (record.next_offset - offset.offset).max(0);
        let partition = partition.to_string();
        let labels = [
            ("group", group),
            ("topic", topic.as_str()),
            ("partition", partition.as_str()),
        ];
        out.sample(names::GROUP_LAG, &labels, lag as f64);
    }
}

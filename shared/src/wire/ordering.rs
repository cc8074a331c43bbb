//! Arrival-order effects on one connection.
//!
//! A Kafka broker applies one connection's requests in the order they arrived (it reads the
//! next request only after answering the current one). Clients rely on it: librdkafka sends
//! asynchronous OffsetCommits back to back and expects the last one to stick. This server
//! pipelines instead (requests are read ahead and handled concurrently, answers go out in
//! order), so the order of *effects* is kept here, by API, for every handler at once:
//!
//! - [`Effect::None`] (Fetch, Metadata, OffsetFetch, ...): runs at once, concurrently with
//!   other reads, but only after the writes before it took effect, so a read sees them.
//! - [`Effect::AtStart`] (Produce): the handler's `start` applies it (the ingest buffer takes
//!   the batches in order); its answer (the acknowledgement) may come later, and later requests
//!   do not wait for it. Pipelined produce requests therefore stay pipelined.
//! - [`Effect::AtCompletion`] (OffsetCommit, group and topic APIs, ...): the request's future
//!   does the work, so the next write starts only when that future has completed.
//!
//! Unknown or new APIs default to [`Effect::AtCompletion`], the safe choice.

use kafka_protocol::messages::ApiKey;
use tokio_util::sync::CancellationToken;

/// When a request's side effects are in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// A read: no side effects.
    None,
    /// Applied once the handler's `start` returned.
    AtStart,
    /// Applied once the request's future completed.
    AtCompletion,
}

/// The effect class of an API.
pub(crate) fn effect_of(api: ApiKey) -> Effect {
    use ApiKey::*;
    match api {
        Produce => Effect::AtStart,
        Fetch
        | ListOffsets
        | Metadata
        | OffsetFetch
        | FindCoordinator
        | DescribeGroups
        | ListGroups
        | ApiVersions
        | DescribeConfigs
        | DescribeCluster
        | DescribeAcls
        | DescribeLogDirs
        | DescribeProducers
        | DescribeTransactions
        | ListTransactions
        | DescribeUserScramCredentials
        | DescribeClientQuotas
        | DescribeTopicPartitions
        | ConsumerGroupDescribe => Effect::None,
        _ => Effect::AtCompletion,
    }
}

/// The connection's write fence: the token of the last write, cancelled once that write has
/// taken effect (or was dropped: a connection that closes releases everything behind it).
#[derive(Debug, Default)]
pub(crate) struct WriteFence {
    last: Option<CancellationToken>,
}

impl WriteFence {
    /// What a new request must wait for before it starts, if anything: the previous write,
    /// unless it already took effect.
    pub(crate) fn pending(&self) -> Option<CancellationToken> {
        self.last.clone().filter(|t| !t.is_cancelled())
    }

    /// Makes `token` the write later requests wait for.
    pub(crate) fn advance(&mut self, token: CancellationToken) {
        self.last = Some(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_produce_are_told_apart() {
        assert_eq!(effect_of(ApiKey::Fetch), Effect::None);
        assert_eq!(effect_of(ApiKey::OffsetFetch), Effect::None);
        assert_eq!(effect_of(ApiKey::Produce), Effect::AtStart);
        assert_eq!(effect_of(ApiKey::OffsetCommit), Effect::AtCompletion);
        assert_eq!(effect_of(ApiKey::JoinGroup), Effect::AtCompletion);
        assert_eq!(effect_of(ApiKey::CreateTopics), Effect::AtCompletion);
        assert_eq!(effect_of(ApiKey::InitProducerId), Effect::AtCompletion);
    }

    #[test]
    fn a_fence_is_pending_until_its_write_took_effect() {
        let mut fence = WriteFence::default();
        assert!(fence.pending().is_none());
        let token = CancellationToken::new();
        fence.advance(token.clone());
        assert!(fence.pending().is_some());
        token.cancel();
        assert!(fence.pending().is_none());
    }
}

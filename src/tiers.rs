//! The Kafka-facing part every serving mode shares: one listener whose router serves the topic,
//! produce and fetch APIs, the produce flusher behind it, and the order they stop in. Standalone
//! plugs in the in-process indexer and local stores, the gateways the network sequencer and S3;
//! the rest is this one code path.

use std::sync::Arc;

use kafscale_fetch::{FetchHandler, FetchService, GroupHandler, GroupService, GroupServiceConfig};
use kafscale_ingest::{IngestHandler, SegmentBuffer};
use kafscale_shared::authz::{AclHandler, Authorizer, AuthorizingHandler};
use kafscale_shared::object_store::ObjectStore;
use kafscale_shared::sequencer::Sequencer;
use kafscale_shared::topic_api::TopicApi;
use kafscale_shared::topic_handler::TopicHandler;
use kafscale_shared::wire::{KafkaHandler, KafkaServer, Router};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the Kafka listener serves with.
pub(crate) struct KafkaTiers {
    pub(crate) buffer: Arc<SegmentBuffer>,
    pub(crate) fetch: Arc<FetchService>,
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) sequencer: Arc<dyn Sequencer>,
    pub(crate) groups: GroupServiceConfig,
    /// Set when ACLs are enforced (`--acl-enabled`).
    pub(crate) authorizer: Option<Arc<Authorizer>>,
}

/// The running listener and flusher, stopped in order by [`RunningTiers::stop`].
pub(crate) struct RunningTiers {
    flusher_shutdown: CancellationToken,
    flusher: JoinHandle<()>,
    kafka: JoinHandle<()>,
    groups: JoinHandle<()>,
    fetch: Arc<FetchService>,
    group_service: Arc<GroupService>,
}

impl KafkaTiers {
    /// Starts group coordination (its first lease round before the listener answers), the
    /// flusher and the listener; the listener stops accepting at `shutdown`.
    pub(crate) async fn start(
        self,
        servers: Vec<KafkaServer>,
        topics: TopicApi,
        shutdown: &CancellationToken,
    ) -> RunningTiers {
        let (groups, groups_task) =
            GroupService::start(topics.clone(), self.groups, shutdown.clone()).await;
        // With ACLs on, only Metadata creates topics (where CREATE is checked), as in Kafka.
        let produce_topics = match self.authorizer {
            Some(_) => topics.clone().without_auto_create(),
            None => topics.clone(),
        };
        let router: Arc<dyn KafkaHandler> = Arc::new(Router::new(vec![
            Arc::new(TopicHandler::new(topics.clone())),
            Arc::new(IngestHandler::new(
                produce_topics,
                self.buffer.clone(),
                self.sequencer.clone(),
            )),
            Arc::new(FetchHandler::new(self.fetch.clone())),
            Arc::new(GroupHandler::new(groups.clone())),
            Arc::new(AclHandler::new(self.authorizer.clone())),
        ]));
        let router: Arc<dyn KafkaHandler> = match self.authorizer {
            Some(authorizer) => Arc::new(AuthorizingHandler::new(
                router,
                authorizer,
                topics.catalog().clone(),
                topics.settings().auto_create_topics,
            )),
            None => router,
        };
        // The flusher has its own token: it must outlive the listener's shutdown to answer
        // the produce requests still buffered.
        let flusher_shutdown = CancellationToken::new();
        let flusher = tokio::spawn(self.buffer.clone().run_flusher(
            self.objects,
            self.sequencer,
            flusher_shutdown.clone(),
        ));
        // One task per listener, all on the same handlers; `kafka` ends when they all have.
        let listeners: Vec<JoinHandle<()>> = servers
            .into_iter()
            .map(|server| tokio::spawn(server.run(router.clone(), shutdown.clone())))
            .collect();
        let kafka = tokio::spawn(async move {
            for listener in listeners {
                let _ = listener.await;
            }
        });
        RunningTiers {
            flusher_shutdown,
            flusher,
            kafka,
            groups: groups_task,
            fetch: self.fetch,
            group_service: groups,
        }
    }
}

impl RunningTiers {
    /// The fetch and group services (for the admin API).
    pub(crate) fn services(&self) -> (Arc<FetchService>, Arc<GroupService>) {
        (self.fetch.clone(), self.group_service.clone())
    }

    /// Call once shutdown has fired. Connections have stopped reading; the flusher seals and
    /// commits what is buffered so in-flight produce requests get their answers; long polls
    /// answer at once; then the connections drain and close. Waits (bounded) for those and
    /// for `others`.
    pub(crate) async fn stop(self, others: Vec<JoinHandle<()>>) {
        self.flusher_shutdown.cancel();
        self.fetch.stop_waiting();
        let mut tasks = vec![self.flusher, self.kafka, self.groups];
        tasks.extend(others);
        crate::drain_within(tasks).await;
    }
}

#[cfg(test)]
mod tests {
    use kafscale_fetch::{FETCH_APIS, GROUP_APIS};
    use kafscale_ingest::INGEST_APIS;
    use kafscale_shared::authz::{ACL_APIS, AUTHORIZED_APIS};
    use kafscale_shared::topic_handler::{SCRAM_APIS, TOPIC_APIS};

    /// The authorizing layer refuses an API it has no rule for: every API the listener
    /// serves must have one.
    #[test]
    fn every_served_api_has_an_authorization_rule() {
        let served = TOPIC_APIS
            .iter()
            .chain(&SCRAM_APIS)
            .chain(&INGEST_APIS)
            .chain(&FETCH_APIS)
            .chain(&GROUP_APIS)
            .chain(&ACL_APIS);
        for api in served {
            assert!(
                AUTHORIZED_APIS.contains(&api.key),
                "{:?} has no rule",
                api.key
            );
        }
    }
}

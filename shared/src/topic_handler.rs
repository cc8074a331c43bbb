//! The [`KafkaHandler`] for the topic APIs (Metadata, CreateTopics, DeleteTopics,
//! CreatePartitions) and the config and cluster APIs (DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, DescribeCluster) and the SCRAM credential APIs
//! (DescribeUserScramCredentials, AlterUserScramCredentials). Each request runs in its own
//! `topic_api` span.

use futures::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use tracing::{Instrument, info_span};

use crate::scram_api::ScramApi;
use crate::scram_credentials::CredentialStore;
use crate::topic_api::TopicApi;
use crate::wire::{ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext};

/// Metadata v0-12, CreateTopics v2-7, DeleteTopics v1-6, CreatePartitions v0-3,
/// DescribeConfigs v1-4, AlterConfigs v0-2, IncrementalAlterConfigs v0-1, DescribeCluster v0-2
/// (every version the vendored kafka-protocol decodes).
pub const TOPIC_APIS: [ApiSupport; 8] = [
    ApiSupport::new(ApiKey::Metadata, 0, 12),
    ApiSupport::new(ApiKey::CreateTopics, 2, 7),
    ApiSupport::new(ApiKey::DeleteTopics, 1, 6),
    ApiSupport::new(ApiKey::CreatePartitions, 0, 3),
    ApiSupport::new(ApiKey::DescribeConfigs, 1, 4),
    ApiSupport::new(ApiKey::AlterConfigs, 0, 2),
    ApiSupport::new(ApiKey::IncrementalAlterConfigs, 0, 1),
    ApiSupport::new(ApiKey::DescribeCluster, 0, 2),
];

/// DescribeUserScramCredentials v0 and AlterUserScramCredentials v0 (the only versions).
/// Separate from [`TOPIC_APIS`] so the fuzz corpora that index into that list keep their
/// meaning.
pub const SCRAM_APIS: [ApiSupport; 2] = [
    ApiSupport::new(ApiKey::DescribeUserScramCredentials, 0, 0),
    ApiSupport::new(ApiKey::AlterUserScramCredentials, 0, 0),
];

/// Serves the topic and SCRAM credential APIs; every gateway role includes it.
pub struct TopicHandler {
    api: TopicApi,
    scram: ScramApi,
}

impl TopicHandler {
    /// Serves SCRAM credentials from the catalog's metadata store.
    pub fn new(api: TopicApi) -> Self {
        let scram = ScramApi::new(CredentialStore::new(api.catalog().store().clone()));
        TopicHandler { api, scram }
    }
}

#[async_trait::async_trait]
impl KafkaHandler for TopicHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        TOPIC_APIS.iter().chain(&SCRAM_APIS).copied().collect()
    }

    async fn start(&self, ctx: RequestContext, request: RequestKind) -> Dispatch {
        let v = ctx.api_version;
        let api = self.api.clone();
        let scram = self.scram.clone();
        let span = info_span!(parent: None, "topic_api", api = ?ctx.api_key, connection = ctx.connection_id);
        let respond = |f: BoxFuture<'static, ResponseKind>| {
            Dispatch::Respond(Box::pin(async move { Ok(f.await) }.instrument(span)))
        };
        match request {
            RequestKind::Metadata(r) => {
                respond(Box::pin(async move { api.metadata(r, v).await.into() }))
            }
            RequestKind::CreateTopics(r) => {
                respond(Box::pin(
                    async move { api.create_topics(r, v).await.into() },
                ))
            }
            RequestKind::CreatePartitions(r) => {
                respond(Box::pin(
                    async move { api.create_partitions(r).await.into() },
                ))
            }
            RequestKind::DeleteTopics(r) => {
                respond(Box::pin(
                    async move { api.delete_topics(r, v).await.into() },
                ))
            }
            RequestKind::DescribeConfigs(r) => {
                respond(Box::pin(
                    async move { api.describe_configs(r, v).await.into() },
                ))
            }
            RequestKind::AlterConfigs(r) => {
                respond(Box::pin(
                    async move { api.alter_configs(r, v).await.into() },
                ))
            }
            RequestKind::IncrementalAlterConfigs(r) => respond(Box::pin(async move {
                api.incremental_alter_configs(r, v).await.into()
            })),
            RequestKind::DescribeCluster(r) => {
                respond(Box::pin(
                    async move { api.describe_cluster(r, v).await.into() },
                ))
            }
            RequestKind::DescribeUserScramCredentials(r) => {
                respond(Box::pin(async move { scram.describe(r).await.into() }))
            }
            RequestKind::AlterUserScramCredentials(r) => {
                respond(Box::pin(async move { scram.alter(r).await.into() }))
            }
            _ => {
                let api = ctx.api_key;
                Dispatch::Respond(Box::pin(async move {
                    Err(HandlerError::Fatal(format!(
                        "topic handler cannot serve {api:?}"
                    )))
                }))
            }
        }
    }
}

//! The [`KafkaHandler`] for the topic APIs (Metadata, CreateTopics, DeleteTopics,
//! CreatePartitions).

use kafka_protocol::messages::{ApiKey, RequestKind};

use crate::topic_api::TopicApi;
use crate::wire::{ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext};

/// Metadata v0-12, CreateTopics v2-7, DeleteTopics v1-6, CreatePartitions v0-3.
pub const TOPIC_APIS: [ApiSupport; 4] = [
    ApiSupport::new(ApiKey::Metadata, 0, 12),
    ApiSupport::new(ApiKey::CreateTopics, 2, 7),
    ApiSupport::new(ApiKey::DeleteTopics, 1, 6),
    ApiSupport::new(ApiKey::CreatePartitions, 0, 3),
];

/// Serves the topic APIs; every gateway role includes it.
pub struct TopicHandler {
    api: TopicApi,
}

impl TopicHandler {
    pub fn new(api: TopicApi) -> Self {
        TopicHandler { api }
    }
}

#[async_trait::async_trait]
impl KafkaHandler for TopicHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        TOPIC_APIS.to_vec()
    }

    async fn start(&self, ctx: RequestContext, request: RequestKind) -> Dispatch {
        let v = ctx.api_version;
        let api = self.api.clone();
        match request {
            RequestKind::Metadata(r) => {
                Dispatch::Respond(Box::pin(async move { Ok(api.metadata(r, v).await.into()) }))
            }
            RequestKind::CreateTopics(r) => {
                Dispatch::Respond(Box::pin(
                    async move { Ok(api.create_topics(r, v).await.into()) },
                ))
            }
            RequestKind::CreatePartitions(r) => Dispatch::Respond(Box::pin(async move {
                Ok(api.create_partitions(r).await.into())
            })),
            RequestKind::DeleteTopics(r) => {
                Dispatch::Respond(Box::pin(
                    async move { Ok(api.delete_topics(r, v).await.into()) },
                ))
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

//! The fetch role's Kafka APIs: Fetch and ListOffsets.

use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestKind};
use kafscale_shared::wire::{ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext};
use tracing::Instrument;

use crate::fetch::FetchService;

/// Fetch v4-16 (v13+ by topic id), ListOffsets v1-8.
pub const FETCH_APIS: [ApiSupport; 2] = [
    ApiSupport::new(ApiKey::Fetch, 4, 16),
    ApiSupport::new(ApiKey::ListOffsets, 1, 8),
];

/// Serves Fetch and ListOffsets.
pub struct FetchHandler {
    service: Arc<FetchService>,
}

impl FetchHandler {
    pub fn new(service: Arc<FetchService>) -> Self {
        FetchHandler { service }
    }
}

#[async_trait::async_trait]
impl KafkaHandler for FetchHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        FETCH_APIS.to_vec()
    }

    async fn start(&self, ctx: RequestContext, request: RequestKind) -> Dispatch {
        let service = self.service.clone();
        let v = ctx.api_version;
        let span = tracing::info_span!(parent: None, "fetch_api", api = ?ctx.api_key, connection = ctx.connection_id);
        match request {
            RequestKind::Fetch(r) => {
                let splices = ctx.record_splices.clone();
                Dispatch::Respond(Box::pin(
                    async move { Ok(service.fetch_spliced(r, v, Some(&splices)).await.into()) }
                        .instrument(span),
                ))
            }
            RequestKind::ListOffsets(r) => Dispatch::Respond(Box::pin(
                async move { Ok(service.list_offsets(r, v).await.into()) }.instrument(span),
            )),
            _ => {
                let api = ctx.api_key;
                Dispatch::Respond(Box::pin(async move {
                    Err(HandlerError::Fatal(format!(
                        "fetch handler cannot serve {api:?}"
                    )))
                }))
            }
        }
    }
}

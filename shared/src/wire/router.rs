//! Composes several handlers into one listener (standalone serves every API on one port).

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::RequestKind;

use super::{ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext};

/// Routes each API key to the first handler that serves it.
pub struct Router {
    routes: HashMap<i16, (ApiSupport, Arc<dyn KafkaHandler>)>,
}

impl Router {
    pub fn new(handlers: Vec<Arc<dyn KafkaHandler>>) -> Self {
        let mut routes = HashMap::new();
        for h in handlers {
            for api in h.supported_apis() {
                routes.entry(api.key as i16).or_insert((api, h.clone()));
            }
        }
        Router { routes }
    }
}

#[async_trait::async_trait]
impl KafkaHandler for Router {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        let mut apis: Vec<ApiSupport> = self.routes.values().map(|(a, _)| *a).collect();
        apis.sort_by_key(|a| a.key as i16);
        apis
    }

    async fn start(&self, ctx: RequestContext, request: RequestKind) -> Dispatch {
        match self.routes.get(&(ctx.api_key as i16)) {
            Some((_, handler)) => handler.start(ctx, request).await,
            None => {
                let api = ctx.api_key;
                Dispatch::Respond(Box::pin(async move {
                    Err(HandlerError::Fatal(format!("no handler serves {api:?}")))
                }))
            }
        }
    }
}

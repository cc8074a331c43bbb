//! The Kafka wire server core shared by every tier.
//!
//! A connection reads length-prefixed frames (the length is checked against a maximum before
//! anything is allocated), decodes the request header, and hands each request to a
//! [`KafkaHandler`] in two steps: [`KafkaHandler::start`] runs in request order (so a produce
//! request is appended to the ingest buffer before the next one on the same connection is
//! looked at), and the future it returns completes concurrently with later requests. Requests
//! with side effects take effect in arrival order: a write starts only once the writes before
//! it on the connection took effect, and a read once they did (see [`ordering`]); reads run
//! concurrently. Responses are written strictly in request order, as Kafka clients require
//! when they pipeline. ApiVersions is answered here from the handler's [`ApiSupport`] table, so
//! a tier advertises exactly the APIs it serves.
//!
//! On a SASL listener the core also serves SaslHandshake and SaslAuthenticate, and refuses
//! every other request (except ApiVersions) until the connection has authenticated (see
//! [`sasl`]); handlers only ever see authenticated requests, with their principal.
//!
//! Malformed input never panics: an unparsable frame, an unknown API key or an unsupported
//! version of a non-ApiVersions request closes that one connection (as a Kafka broker does);
//! an unsupported ApiVersions version gets `UNSUPPORTED_VERSION` with the supported list so the
//! client can downgrade.

mod api_versions;
pub mod fetch_frame;
mod metrics;
mod ordering;
mod router;
mod sasl;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

pub use api_versions::api_versions_response;
pub use router::Router;
pub use sasl::SaslSettings;
pub use server::{KafkaServer, RequestFrame, WireConfig, decode_request_frame};

/// One API a handler serves, with the version range it advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiSupport {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

impl ApiSupport {
    pub const fn new(key: ApiKey, min_version: i16, max_version: i16) -> Self {
        ApiSupport {
            key,
            min_version,
            max_version,
        }
    }
    pub fn contains(&self, version: i16) -> bool {
        (self.min_version..=self.max_version).contains(&version)
    }
}

/// What the wire core knows about a request besides its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub peer: SocketAddr,
    pub connection_id: u64,
    /// The client's principal when its connection authenticated: with SASL `User:<name>`;
    /// else, with a TLS client certificate, `User:CN=...` (Kafka's default form); `None` on
    /// a listener without either. For authorization.
    pub principal: Option<Arc<str>>,
    /// Record chains a Fetch response refers to by ticket, encoded with this request's
    /// response (see [`fetch_frame`]); unused by every other request.
    pub record_splices: fetch_frame::RecordSplices,
}

/// Why a request could not be answered; the connection is closed after logging it.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The handler cannot express the failure as a Kafka error code in this response.
    #[error("request cannot be answered: {0}")]
    Fatal(String),
}

/// The outcome of starting a request.
pub enum Dispatch {
    /// A response will be written when the future completes (in request order).
    Respond(BoxFuture<'static, Result<ResponseKind, HandlerError>>),
    /// No response is sent (Produce with acks=0); the future still runs to completion so the
    /// connection waits for it before reading beyond the pipeline bound.
    NoResponse(BoxFuture<'static, ()>),
}

impl Dispatch {
    /// A response that is already known.
    pub fn ready(response: impl Into<ResponseKind>) -> Self {
        let response = response.into();
        Dispatch::Respond(Box::pin(async move { Ok(response) }))
    }
}

/// A tier's request handler.
#[async_trait::async_trait]
pub trait KafkaHandler: Send + Sync + 'static {
    /// Every API (except ApiVersions, which the core serves) and the versions advertised.
    fn supported_apis(&self) -> Vec<ApiSupport>;
    /// Starts handling one decoded request. Called in request order per connection: on the
    /// connection task before the next request is read, or (when an earlier write on the
    /// connection has not taken effect yet) from the request's own future once it has. It
    /// should only do quick work (validate, enqueue) and leave waiting to the returned
    /// [`Dispatch`] future, whose completion is when a write other than Produce counts as
    /// applied. It must never wait for anything a request future may hold (a lock, a
    /// single-flight load): while `start` waits on the connection task, that connection's
    /// request futures are not polled.
    async fn start(&self, ctx: RequestContext, request: RequestKind) -> Dispatch;
}

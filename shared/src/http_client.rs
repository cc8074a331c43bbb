//! The one HTTP client setup of every process: the ingest gateway's commit calls, the fetch
//! gateway's watermark feed, the admin CLI and the OpenTelemetry exporter all go through it.
//!
//! Plain HTTP/1.1 over hyper-util's pooled client (the calls go to other kafscale processes
//! inside the cluster network), `TCP_NODELAY` on, a bounded connect time, a deadline for each
//! exchange including reading the body, a cap on the body read, and the caller's trace context
//! in `traceparent` (see [`crate::trace_context`]). A client built [`HttpClient::with_bearer`]
//! sends the cluster-internal token as `Authorization: Bearer` on every request (the header
//! is marked sensitive, and the token appears in no error: errors name only the URI).
//!
//! HTTPS when built with a [`ClientTls`] ([`HttpClient::with_tls`]): the peer's certificate
//! is checked against the configured CA bundle (and server name), never the system's roots, and
//! [`HttpClient::url`] names `https://` peers. Without one, `https://` URIs fail with an
//! unknown-issuer error. [`InternalCalls`] bundles what a gateway needs to call indexers:
//! the token and the TLS settings.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::http::{Method, Request, Response, header};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kafscale_tls::ClientTls;

use crate::bearer::InternalToken;

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("invalid request to {uri}: {source}")]
    Request {
        uri: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("cannot reach {uri}: {source}")]
    Unreachable {
        uri: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading the answer of {uri}: {message}")]
    Body { uri: String, message: String },
    #[error("no answer from {uri} in {timeout:?}")]
    Timeout { uri: String, timeout: Duration },
}

/// Largest answer body read, unless a call says otherwise.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// How a gateway calls the indexers (commits, DeleteRecords, the watermark feed, shard status):
/// with the cluster-internal token and over HTTPS, each when configured.
#[derive(Debug, Clone, Default)]
pub struct InternalCalls {
    pub token: Option<InternalToken>,
    pub tls: Option<ClientTls>,
}

impl InternalCalls {
    /// A client for these calls, connecting within `connect_timeout`.
    pub fn client(&self, connect_timeout: Duration) -> HttpClient {
        HttpClient::with_tls(connect_timeout, self.tls.as_ref()).with_bearer(self.token.clone())
    }
}

/// A pooled HTTP/1.1 client; cheap to clone (clones share the pool).
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    max_answer_bytes: usize,
    /// Sent on every request that has no `Authorization` of its own (redacted in `Debug`).
    bearer: Option<InternalToken>,
    /// Whether peers are reached over HTTPS ([`HttpClient::url`]).
    https: bool,
}

impl HttpClient {
    /// A plain HTTP client whose connections are set up within `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self::with_tls(connect_timeout, None)
    }

    /// A client that reaches peers over HTTPS with `tls` (plain HTTP without).
    pub fn with_tls(connect_timeout: Duration, tls: Option<&ClientTls>) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.enforce_http(false);
        let config = match tls {
            Some(tls) => tls.config().clone(),
            None => untrusting_config(),
        };
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http();
        let builder = match tls.and_then(ClientTls::server_name) {
            Some(name) => {
                builder.with_server_name_resolver(FixedServerNameResolver::new(name.clone()))
            }
            None => builder,
        };
        HttpClient {
            inner: Client::builder(TokioExecutor::new())
                .build(builder.enable_http1().wrap_connector(tcp)),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            bearer: None,
            https: tls.is_some(),
        }
    }

    /// The URL of `path` (with its query, if any) on the peer at `addr` (`host:port`), over
    /// HTTPS when this client has TLS settings.
    pub fn url(&self, addr: &str, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{addr}{path}")
    }

    /// This client, sending `token` (if any) as `Authorization: Bearer` on every request.
    pub fn with_bearer(mut self, token: Option<InternalToken>) -> Self {
        self.bearer = token;
        self
    }

    /// `GET uri`.
    pub async fn get(
        &self,
        uri: &str,
        timeout: Duration,
    ) -> Result<Response<Bytes>, HttpClientError> {
        self.send(self.request(Method::GET, uri, None, Bytes::new())?, timeout)
            .await
    }

    /// `POST uri` with a JSON body.
    pub async fn post_json(
        &self,
        uri: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response<Bytes>, HttpClientError> {
        let request = self.request(Method::POST, uri, Some("application/json"), body)?;
        self.send(request, timeout).await
    }

    /// A request with `content_type` (if any) and nothing else set.
    pub fn request(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Request<Bytes>, HttpClientError> {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder
            .body(body)
            .map_err(|source| HttpClientError::Request {
                uri: uri.to_string(),
                source,
            })
    }

    /// Sends `request` with the current trace context and reads the whole answer, all within
    /// `timeout`. Any status is an answer; only transport failures are errors.
    pub async fn send(
        &self,
        request: Request<Bytes>,
        timeout: Duration,
    ) -> Result<Response<Bytes>, HttpClientError> {
        let uri = request.uri().to_string();
        let (mut parts, body) = request.into_parts();
        crate::trace_context::inject(&mut parts.headers);
        if let Some(token) = &self.bearer {
            parts
                .headers
                .entry(header::AUTHORIZATION)
                .or_insert_with(|| token.header_value());
        }
        let request = Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|source| {
                HttpClientError::Unreachable {
                    uri: uri.clone(),
                    source,
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_answer_bytes)
                .collect()
                .await
                .map_err(|e| HttpClientError::Body {
                    uri: uri.clone(),
                    message: e.to_string(),
                })?
                .to_bytes();
            Ok(Response::from_parts(parts, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(HttpClientError::Timeout { uri, timeout }),
        }
    }
}

/// The TLS configuration of a client without TLS settings: it trusts nothing, so an
/// `https://` URI fails its handshake (unknown issuer) instead of trusting anything.
fn untrusting_config() -> rustls::ClientConfig {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

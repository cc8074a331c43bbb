//! Accept loop and per-connection request pipeline.
//!
//! Bounds: connections ([`WireConfig::max_connections`]), requests read ahead per connection,
//! and one Fetch in flight per connection (a second one is read but started only once the
//! first's answer is written, so a connection holds at most one Fetch response's memory; Kafka
//! clients send one at a time anyway). Idle connections and clients that stop reading their
//! answers are closed.
//!
//! TLS (optional, [`KafkaServer::with_tls`]): the handshake runs on the connection's own task,
//! never in the accept loop, bounded by [`WireConfig::tls_handshake_timeout`]; a connection
//! whose handshake fails or times out is closed and counted. After the handshake the TLS
//! stream goes through exactly the same pipeline as a plaintext one (the pipeline is generic
//! over the read and write halves), and the client certificate's principal, if any, is in
//! every [`RequestContext`] of the connection.
//!
//! SASL (optional, [`KafkaServer::with_sasl`]): SaslHandshake and SaslAuthenticate are answered
//! here, on the connection task, in request order (see [`super::sasl`]); every other request is
//! admitted or refused by the connection's SASL state when it is decoded, so a request read
//! after a successful authentication carries its principal and one read before it closes the
//! connection.
//!
//! Cancellation: when the shutdown token fires, the listener stops accepting and every
//! connection stops reading new requests, finishes the ones in flight (so acknowledged produce
//! requests get their answers after the final flush) and closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use std::io::IoSlice;

use kafscale_tls::ServerTls;
use metrics::Counter;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, debug, info, info_span, warn};

use super::api_versions::{API_VERSIONS_SUPPORT, api_versions_response};
use super::fetch_frame::{RecordSplices, encode_fetch_frame};
use super::metrics::WireMetrics;
use super::ordering::{Effect, WriteFence, effect_of};
use super::sasl::{
    Admission, SASL_AUTHENTICATE_SUPPORT, SASL_HANDSHAKE_SUPPORT, SaslAnswer, SaslConnection,
    SaslListener, SaslSettings,
};
use super::{ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext};
use crate::listener_addresses::{ListenerAddressBook, readdress};

/// Limits of the wire server.
#[derive(Debug, Clone)]
pub struct WireConfig {
    /// Largest request frame accepted; longer frames close the connection before allocation.
    pub max_frame_bytes: usize,
    /// Requests read ahead per connection before the oldest is answered.
    pub max_inflight_per_connection: usize,
    /// Concurrent connections; further connections wait in the accept backlog.
    pub max_connections: usize,
    /// A connection with nothing in flight that sends no request for this long is closed
    /// (Kafka's `connections.max.idle.ms`).
    pub idle_timeout: Duration,
    /// A response not fully written within this time closes its connection: a client that
    /// stops reading must not hold its answers in memory for ever.
    pub write_timeout: Duration,
    /// A TLS handshake not finished within this time closes its connection (a client that
    /// connects and sends nothing, or plaintext to a TLS listener, must not hold a slot).
    pub tls_handshake_timeout: Duration,
}

impl Default for WireConfig {
    fn default() -> Self {
        WireConfig {
            max_frame_bytes: 100 * 1024 * 1024,
            max_inflight_per_connection: 64,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// A bound Kafka listener. Binding comes first so the caller knows the real address (for
/// the advertised address in Metadata) before it builds the handler.
pub struct KafkaServer {
    listener: TcpListener,
    config: WireConfig,
    tls: Option<ServerTls>,
    sasl: Option<SaslSettings>,
    readdressing: Option<Readdressing>,
}

/// A secondary named listener: its name, and the book of every broker's address on it (see
/// [`crate::listener_addresses`]).
#[derive(Clone)]
struct Readdressing {
    listener: Arc<str>,
    book: Arc<ListenerAddressBook>,
}

type Pending = BoxFuture<'static, Option<Outgoing>>;

struct Outgoing {
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    /// When the request was read (for the latency metric).
    started: std::time::Instant,
    result: Result<ResponseKind, HandlerError>,
    /// The chains the response's tickets stand for (Fetch only).
    record_splices: RecordSplices,
}

struct Shared {
    handler: Arc<dyn KafkaHandler>,
    support: HashMap<i16, ApiSupport>,
    all_apis: Vec<ApiSupport>,
    config: WireConfig,
    metrics: WireMetrics,
    tls: Option<ServerTls>,
    tls_handshake_failures: Counter,
    sasl: Option<Arc<SaslListener>>,
    readdressing: Option<Readdressing>,
}

impl KafkaServer {
    /// Binds the listener.
    pub async fn bind(addr: SocketAddr, config: WireConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(KafkaServer {
            listener,
            config,
            tls: None,
            sasl: None,
            readdressing: None,
        })
    }

    /// Makes this a secondary listener named `listener`: brokers in Metadata, FindCoordinator
    /// and DescribeCluster answers are named by their addresses on it, as found in `book`.
    pub fn with_listener_addresses(
        mut self,
        listener: &str,
        book: Arc<ListenerAddressBook>,
    ) -> Self {
        self.readdressing = Some(Readdressing {
            listener: Arc::from(listener),
            book,
        });
        self
    }

    /// Serves TLS: every connection starts with a handshake (see the module doc).
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Requires SASL authentication on every connection (see [`super::sasl`]).
    pub fn with_sasl(mut self, sasl: SaslSettings) -> Self {
        self.sasl = Some(sasl);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires, then waits for open connections to drain.
    pub async fn run(self, handler: Arc<dyn KafkaHandler>, shutdown: CancellationToken) {
        let mut all_apis = handler.supported_apis();
        if self.sasl.is_some() {
            all_apis.extend([SASL_HANDSHAKE_SUPPORT, SASL_AUTHENTICATE_SUPPORT]);
        }
        let support = all_apis.iter().map(|a| (a.key as i16, *a)).collect();
        let metrics = WireMetrics::new(all_apis.iter().map(|a| a.key).chain([ApiKey::ApiVersions]));
        let shared = Arc::new(Shared {
            handler,
            support,
            all_apis,
            config: self.config,
            metrics,
            tls: self.tls,
            tls_handshake_failures: ::metrics::counter!(
                crate::metrics::TLS_HANDSHAKE_FAILURES,
                "listener" => crate::metrics::role(),
                "protocol" => "kafka"
            ),
            sasl: self.sasl.map(|s| Arc::new(SaslListener::new(s))),
            readdressing: self.readdressing,
        });
        let permits = Arc::new(Semaphore::new(shared.config.max_connections));
        let mut connections = JoinSet::new();
        let next_id = AtomicU64::new(1);
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            shared.metrics.accepted.increment(1);
            shared.metrics.open.increment(1.0);
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            let span = info_span!("connection", id, %peer);
            connections.spawn(
                async move {
                    serve_stream(stream, peer, id, shared.clone(), shutdown).await;
                    shared.metrics.closed.increment(1);
                    shared.metrics.open.decrement(1.0);
                    drop(permit);
                }
                .instrument(span),
            );
        }
        info!("kafka listener stopped accepting; draining connections");
        while connections.join_next().await.is_some() {}
    }
}

/// Serves one accepted connection: plaintext as it is, TLS once the handshake succeeded.
async fn serve_stream(
    stream: TcpStream,
    peer: SocketAddr,
    connection_id: u64,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let Some(tls) = shared.tls.clone() else {
        let (reader, writer) = stream.into_split();
        let connection = Connection::new(peer, connection_id, None, &shared);
        return serve_connection(reader, writer, connection, shared, shutdown).await;
    };
    let timeout = shared.config.tls_handshake_timeout;
    let handshake = tokio::select! {
        h = tokio::time::timeout(timeout, tls.accept(stream)) => h,
        _ = shutdown.cancelled() => return,
    };
    match handshake {
        Ok(Ok((stream, principal))) => {
            debug!(principal = principal.as_deref(), "tls handshake done");
            let (reader, writer) = tokio::io::split(stream);
            let connection =
                Connection::new(peer, connection_id, principal.map(Arc::from), &shared);
            serve_connection(reader, writer, connection, shared, shutdown).await;
        }
        Ok(Err(e)) => {
            shared.tls_handshake_failures.increment(1);
            debug!(error = %e, "closing connection: tls handshake failed");
        }
        Err(_) => {
            shared.tls_handshake_failures.increment(1);
            debug!(
                timeout_ms = timeout.as_millis() as u64,
                "closing connection: no tls handshake in time"
            );
        }
    }
}

/// Who is at the other end of a connection (copied into every request's context).
struct Connection {
    peer: SocketAddr,
    id: u64,
    /// The client certificate's principal.
    principal: Option<Arc<str>>,
    /// The SASL state, on a SASL listener; its principal wins over the certificate's.
    sasl: Option<SaslConnection>,
}

impl Connection {
    fn new(peer: SocketAddr, id: u64, principal: Option<Arc<str>>, shared: &Shared) -> Self {
        Connection {
            peer,
            id,
            principal,
            sasl: shared.sasl.clone().map(SaslConnection::new),
        }
    }

    /// The principal a request other than ApiVersions and the SASL APIs runs as, or why the
    /// connection must close instead.
    fn admit(&self) -> Result<Option<Arc<str>>, &'static str> {
        match &self.sasl {
            None => Ok(self.principal.clone()),
            Some(sasl) => match sasl.admit(tokio::time::Instant::now()) {
                Admission::Serve(principal) => Ok(Some(principal)),
                Admission::Refuse(reason) => Err(reason),
            },
        }
    }

    /// How long the connection may take to authenticate (without SASL: never reached).
    fn authentication_timeout(&self) -> Duration {
        self.sasl
            .as_ref()
            .map_or(Duration::MAX / 4, |s| s.authentication_timeout())
    }

    /// Whether the connection is on a SASL listener and has not authenticated yet.
    fn awaiting_first_authentication(&self) -> bool {
        self.sasl
            .as_ref()
            .is_some_and(|s| s.awaiting_first_authentication())
    }

    fn authentication_timed_out(&self) {
        if let Some(sasl) = &self.sasl {
            sasl.timed_out();
        }
    }

    /// Answers a SaslHandshake or SaslAuthenticate request (`Err`: not a SASL listener, which
    /// does not happen: only a SASL listener serves these APIs).
    async fn sasl(
        &mut self,
        ctx: &RequestContext,
        request: &RequestKind,
    ) -> Result<SaslAnswer, String> {
        let sasl = self.sasl.as_mut().ok_or("no SASL on this listener")?;
        match request {
            RequestKind::SaslHandshake(r) => Ok(sasl.handshake(r, ctx.api_version)),
            RequestKind::SaslAuthenticate(r) => {
                Ok(sasl.authenticate(r, tokio::time::Instant::now()).await)
            }
            _ => Err("not a SASL request".to_string()),
        }
    }
}

/// The request pipeline of one connection, on its read and write halves (a TCP stream's
/// own halves, or a TLS stream split in two).
async fn serve_connection<R, W>(
    reader: R,
    mut writer: W,
    mut connection: Connection,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(shared.config.max_frame_bytes)
        .new_codec();
    // Requests are read through the codec; responses are written as encoded, length prefix
    // included (see `encode_response`), so a Fetch response is not copied once more into a
    // codec's write buffer.
    let mut framed = FramedRead::new(reader, codec);
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut reading = true;
    let mut fence = WriteFence::default();
    let mut fetches = FetchGate::default();
    let idle = tokio::time::sleep(shared.config.idle_timeout);
    tokio::pin!(idle);
    let authentication_deadline = tokio::time::sleep(connection.authentication_timeout());
    tokio::pin!(authentication_deadline);
    debug!("connection opened");
    loop {
        if !reading && pending.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(out) = pending.next(), if !pending.is_empty() => {
                let Some(out) = out else { continue };
                let was_fetch = out.api_key == ApiKey::Fetch;
                if !write_out(&mut writer, out, &shared).await {
                    return;
                }
                idle.as_mut().reset(tokio::time::Instant::now() + shared.config.idle_timeout);
                if was_fetch && let Some(parked) = fetches.answered() {
                    pending.push_back(start_request(parked, &shared, &mut fence).await);
                }
            }
            frame = framed.next(), if reading && !fetches.is_parked() && pending.len() < shared.config.max_inflight_per_connection => {
                idle.as_mut().reset(tokio::time::Instant::now() + shared.config.idle_timeout);
                match frame {
                    None => reading = false,
                    Some(Err(e)) => {
                        warn!(error = %e, "closing connection: bad frame");
                        drain_and_close(&mut writer, &mut pending, &shared).await;
                        return;
                    }
                    Some(Ok(frame)) => match decode_request(frame.freeze(), &connection, &shared) {
                        Ok(Decoded::Sasl(ctx, request)) => match connection.sasl(&ctx, &request).await {
                            Ok(answer) => {
                                reading &= !answer.close;
                                pending.push_back(sasl_pending(&ctx, answer));
                            }
                            Err(reason) => {
                                warn!(%reason, "closing connection: bad request");
                                drain_and_close(&mut writer, &mut pending, &shared).await;
                                return;
                            }
                        },
                        Ok(Decoded::Unauthenticated(reason)) => {
                            info!(reason, "closing connection: not authenticated");
                            drain_and_close(&mut writer, &mut pending, &shared).await;
                            return;
                        }
                        Ok(decoded) => {
                            if let Some(decoded) = fetches.admit(decoded) {
                                pending.push_back(start_request(decoded, &shared, &mut fence).await);
                            }
                        }
                        Err(reason) => {
                            warn!(%reason, "closing connection: bad request");
                            drain_and_close(&mut writer, &mut pending, &shared).await;
                            return;
                        }
                    },
                }
            }
            _ = &mut authentication_deadline, if connection.awaiting_first_authentication() => {
                info!("closing connection: not authenticated in time");
                connection.authentication_timed_out();
                return;
            }
            _ = &mut idle, if pending.is_empty() => {
                debug!(idle_ms = shared.config.idle_timeout.as_millis() as u64, "closing idle connection");
                return;
            }
            _ = shutdown.cancelled(), if reading => reading = false,
        }
    }
    debug!("connection closed");
}

/// Writes one answer; false if the connection must close (a write that failed or took
/// longer than the write timeout, or an answer that cannot be encoded).
async fn write_out(
    writer: &mut (impl AsyncWrite + Unpin),
    mut out: Outgoing,
    shared: &Shared,
) -> bool {
    if let Ok(response) = &mut out.result {
        shared.metrics.response(out.api_key, out.started, response);
        if let Some(r) = &shared.readdressing {
            readdress(response, &r.listener, &r.book);
        }
    }
    match encode_response(out) {
        Ok(mut chunks) => {
            match tokio::time::timeout(
                shared.config.write_timeout,
                write_frame(writer, &mut chunks),
            )
            .await
            {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    debug!(error = %e, "write failed; closing");
                    false
                }
                Err(_) => {
                    warn!(
                        timeout_ms = shared.config.write_timeout.as_millis() as u64,
                        "closing connection: the client did not read its answer in time"
                    );
                    false
                }
            }
        }
        Err(reason) => {
            warn!(%reason, "closing connection: response cannot be sent");
            false
        }
    }
}

/// One Fetch in flight per connection: a Fetch read while another is in flight is parked
/// (and reading pauses) until the first one's answer is written.
#[derive(Default)]
struct FetchGate {
    in_flight: bool,
    parked: Option<Decoded>,
}

impl FetchGate {
    fn is_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// The request to start now, or `None` if it was parked.
    fn admit(&mut self, decoded: Decoded) -> Option<Decoded> {
        let is_fetch = matches!(&decoded, Decoded::Request(ctx, _) if ctx.api_key == ApiKey::Fetch);
        if !is_fetch {
            return Some(decoded);
        }
        if self.in_flight {
            self.parked = Some(decoded);
            return None;
        }
        self.in_flight = true;
        Some(decoded)
    }

    /// A Fetch answer was written: the parked Fetch to start, if any.
    fn answered(&mut self) -> Option<Decoded> {
        self.in_flight = self.parked.is_some();
        self.parked.take()
    }
}

/// Answers the requests already in flight (they were valid), then lets the connection close.
async fn drain_and_close(
    writer: &mut (impl AsyncWrite + Unpin),
    pending: &mut FuturesOrdered<Pending>,
    shared: &Shared,
) {
    while let Some(out) = pending.next().await {
        let Some(out) = out else { continue };
        if !write_out(writer, out, shared).await {
            return;
        }
    }
}

/// A decoded request for the handler, or an answer the core gives itself.
enum Decoded {
    Answer(Outgoing),
    Request(RequestContext, RequestKind),
    /// SaslHandshake or SaslAuthenticate, answered by the connection's SASL state.
    Sasl(RequestContext, RequestKind),
    /// A request the connection's SASL state refuses (not or no longer authenticated): the
    /// connection closes.
    Unauthenticated(&'static str),
}

/// A SASL answer as the connection's next pending response (after its delay, if any).
fn sasl_pending(ctx: &RequestContext, answer: SaslAnswer) -> Pending {
    let reply = Reply::of(ctx);
    Box::pin(async move {
        if let Some(delay) = answer.delay {
            tokio::time::sleep(delay).await;
        }
        Some(Outgoing {
            api_key: reply.api_key,
            version: reply.version,
            correlation_id: reply.correlation_id,
            started: reply.started,
            result: Ok(answer.response),
            record_splices: RecordSplices::default(),
        })
    })
}

/// Decodes one request frame; `Err` means the connection must be closed.
fn decode_request(
    frame: Bytes,
    connection: &Connection,
    shared: &Shared,
) -> Result<Decoded, String> {
    let started = std::time::Instant::now();
    let supported = |key: ApiKey, version: i16| {
        shared
            .support
            .get(&(key as i16))
            .is_some_and(|s| s.contains(version))
    };
    let (header, request) = match decode_request_frame(frame, supported)? {
        RequestFrame::UnsupportedApiVersions { correlation_id } => {
            // Kafka answers with UNSUPPORTED_VERSION in a v0 body so the client can pick a
            // version.
            let response =
                api_versions_response(&shared.all_apis, Some(ResponseError::UnsupportedVersion));
            return Ok(Decoded::Answer(Outgoing {
                api_key: ApiKey::ApiVersions,
                version: 0,
                correlation_id,
                started,
                result: Ok(response.into()),
                record_splices: RecordSplices::default(),
            }));
        }
        RequestFrame::Request { header, body } => (header, *body),
    };
    let version = header.request_api_version;
    let correlation_id = header.correlation_id;
    // `decode_request_frame` accepted the key.
    let api_key = ApiKey::try_from(header.request_api_key)
        .map_err(|_| format!("unknown api key {}", header.request_api_key))?;
    debug!(api = ?api_key, version, correlation_id, "request");
    shared.metrics.request(api_key);
    if api_key == ApiKey::ApiVersions {
        let response = api_versions_response(&shared.all_apis, None);
        return Ok(Decoded::Answer(Outgoing {
            api_key,
            version,
            correlation_id,
            started,
            result: Ok(response.into()),
            record_splices: RecordSplices::default(),
        }));
    }
    let sasl_api = matches!(api_key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
    let principal = if sasl_api {
        connection.principal.clone()
    } else {
        match connection.admit() {
            Ok(principal) => principal,
            Err(reason) => return Ok(Decoded::Unauthenticated(reason)),
        }
    };
    let ctx = RequestContext {
        api_key,
        api_version: version,
        correlation_id,
        client_id: header.client_id.map(|c| c.to_string()),
        peer: connection.peer,
        connection_id: connection.id,
        principal,
        record_splices: RecordSplices::default(),
    };
    if sasl_api {
        return Ok(Decoded::Sasl(ctx, request));
    }
    Ok(Decoded::Request(ctx, request))
}

/// One request frame as a connection reads it (see [`decode_request_frame`]).
#[derive(Debug)]
pub enum RequestFrame {
    /// ApiVersions at a version this server does not speak: answered with
    /// UNSUPPORTED_VERSION in a v0 body, so the client can pick a version it shares.
    UnsupportedApiVersions { correlation_id: i32 },
    /// A request to answer (ApiVersions included). The body is boxed: it is by far the
    /// larger variant, and the box is one small allocation beside the body's own.
    Request {
        header: RequestHeader,
        body: Box<RequestKind>,
    },
}

/// Decodes one request frame (its length prefix removed) as every connection does: the fixed
/// header fields, the version check (`supported(key, version)`; ApiVersions is always
/// served), then the request header and the body. `Err` says why the connection is closed.
/// Public so the fuzz targets (fuzz/) run exactly this code.
pub fn decode_request_frame(
    mut frame: Bytes,
    supported: impl Fn(ApiKey, i16) -> bool,
) -> Result<RequestFrame, String> {
    if frame.len() < 8 {
        return Err(format!(
            "request frame of {} bytes is shorter than a header",
            frame.len()
        ));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| format!("unknown api key {raw_key}"))?;
    if api_key == ApiKey::ApiVersions {
        if !API_VERSIONS_SUPPORT.contains(version) {
            return Ok(RequestFrame::UnsupportedApiVersions { correlation_id });
        }
    } else if !supported(api_key, version) {
        return Err(format!("unsupported version {version} of api {api_key:?}"));
    }
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| format!("bad {api_key:?} v{version} request header: {e}"))?;
    let body = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|e| format!("bad {api_key:?} v{version} request body: {e:#}"))?;
    if frame.has_remaining() {
        debug!(api = ?api_key, version, extra = frame.remaining(), "trailing bytes after request body");
    }
    Ok(RequestFrame::Request {
        header,
        body: Box::new(body),
    })
}

/// Starts a decoded request in arrival order of its effects (see [`super::ordering`]): at once
/// when no earlier write is still taking effect (the common case, and always for back-to-back
/// produce requests), else once it has.
async fn start_request(decoded: Decoded, shared: &Arc<Shared>, fence: &mut WriteFence) -> Pending {
    let (ctx, request) = match decoded {
        Decoded::Answer(out) => return Box::pin(async move { Some(out) }),
        Decoded::Request(ctx, request) | Decoded::Sasl(ctx, request) => (ctx, request),
        Decoded::Unauthenticated(_) => return Box::pin(async { None }),
    };
    let effect = effect_of(ctx.api_key);
    let wait = fence.pending();
    let applied = match (effect, &wait) {
        (Effect::None, _) | (Effect::AtStart, None) => None,
        _ => {
            let token = CancellationToken::new();
            fence.advance(token.clone());
            Some(token.drop_guard())
        }
    };
    let reply = Reply::of(&ctx);
    let Some(wait) = wait else {
        let dispatch = shared.handler.start(ctx, request).await;
        return reply.pending(dispatch, applied);
    };
    let handler = shared.handler.clone();
    Box::pin(async move {
        wait.cancelled().await;
        let dispatch = handler.start(ctx, request).await;
        // A produce request took effect when started; anything else when it completes.
        let applied = if effect == Effect::AtStart {
            None
        } else {
            applied
        };
        reply.pending(dispatch, applied).await
    })
}

/// What the response frame of a request needs besides the handler's answer.
#[derive(Clone)]
struct Reply {
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    started: std::time::Instant,
    record_splices: RecordSplices,
}

impl Reply {
    fn of(ctx: &RequestContext) -> Self {
        Reply {
            api_key: ctx.api_key,
            version: ctx.api_version,
            correlation_id: ctx.correlation_id,
            started: std::time::Instant::now(),
            record_splices: ctx.record_splices.clone(),
        }
    }

    /// The handler's work as the connection's pending future; `applied` (if any) is released
    /// when the work is done, letting the next write start.
    fn pending(self, dispatch: Dispatch, applied: Option<DropGuard>) -> Pending {
        match dispatch {
            Dispatch::Respond(fut) => Box::pin(async move {
                let result = fut.await;
                drop(applied);
                Some(Outgoing {
                    api_key: self.api_key,
                    version: self.version,
                    correlation_id: self.correlation_id,
                    started: self.started,
                    result,
                    record_splices: self.record_splices,
                })
            }),
            Dispatch::NoResponse(fut) => Box::pin(async move {
                fut.await;
                drop(applied);
                None
            }),
        }
    }
}

/// The response frame (4-byte length, header, body) as chunks to write in order: one for most
/// responses, several for a Fetch response, whose records are not copied (see [`super::fetch_frame`]).
fn encode_response(out: Outgoing) -> Result<Vec<Bytes>, String> {
    let response = out.result.map_err(|e| e.to_string())?;
    let header = ResponseHeader::default().with_correlation_id(out.correlation_id);
    let header_version = out.api_key.response_header_version(out.version);
    let response = match response {
        ResponseKind::Fetch(fetch) => {
            return encode_fetch_frame(
                &header,
                header_version,
                fetch,
                out.version,
                &out.record_splices,
            );
        }
        other => other,
    };
    let mut buf = BytesMut::with_capacity(256);
    buf.put_u32(0); // the length, known once encoded
    header
        .encode(&mut buf, header_version)
        .map_err(|e| format!("encoding {:?} response header: {e}", out.api_key))?;
    response.encode(&mut buf, out.version).map_err(|e| {
        format!(
            "encoding {:?} v{} response: {e:#}",
            out.api_key, out.version
        )
    })?;
    let len = u32::try_from(buf.len() - 4)
        .map_err(|_| format!("{:?} response of {} bytes", out.api_key, buf.len()))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(vec![buf.freeze()])
}

/// Writes a frame's chunks with vectored writes (as many per call as the kernel takes).
async fn write_frame(
    writer: &mut (impl AsyncWrite + Unpin),
    chunks: &mut [Bytes],
) -> std::io::Result<()> {
    /// Chunks handed to one writev (far below IOV_MAX).
    const SLICES_PER_WRITE: usize = 64;
    let mut first = 0;
    while first < chunks.len() {
        if chunks[first].is_empty() {
            first += 1;
            continue;
        }
        let slices: Vec<IoSlice<'_>> = chunks[first..]
            .iter()
            .take(SLICES_PER_WRITE)
            .map(|c| IoSlice::new(c))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let chunk = &mut chunks[first];
            let n = written.min(chunk.len());
            chunk.advance(n);
            written -= n;
            if chunk.is_empty() {
                first += 1;
            }
        }
    }
    // TLS keeps records it could not send yet; a TCP stream has nothing to flush.
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(key: i16, version: i16, rest: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(key);
        buf.put_i16(version);
        buf.put_i32(42);
        buf.put_slice(rest);
        buf.freeze()
    }

    fn serves_metadata_v0_to_12(key: ApiKey, version: i16) -> bool {
        key == ApiKey::Metadata && (0..=12).contains(&version)
    }

    #[test]
    fn a_served_request_decodes_with_its_header() {
        // Metadata v1: client id "t", topics: null (-1).
        let mut rest = BytesMut::new();
        rest.put_i16(1);
        rest.put_slice(b"t");
        rest.put_i32(-1);
        let decoded = decode_request_frame(frame(3, 1, &rest), serves_metadata_v0_to_12);
        let Ok(RequestFrame::Request { header, body }) = decoded else {
            panic!("not decoded: {decoded:?}");
        };
        assert_eq!((header.request_api_key, header.request_api_version), (3, 1));
        assert_eq!(header.correlation_id, 42);
        assert_eq!(header.client_id.as_deref(), Some("t"));
        let RequestKind::Metadata(metadata) = *body else {
            panic!("decoded as {body:?}");
        };
        assert_eq!(metadata.topics, None);
    }

    #[test]
    fn unserved_keys_versions_and_short_frames_close_the_connection() {
        let unserved = decode_request_frame(frame(3, 13, &[]), serves_metadata_v0_to_12);
        assert!(unserved.is_err_and(|e| e.contains("unsupported version 13")));
        let produce = decode_request_frame(frame(0, 9, &[]), serves_metadata_v0_to_12);
        assert!(produce.is_err_and(|e| e.contains("Produce")));
        let unknown = decode_request_frame(frame(-7, 0, &[]), serves_metadata_v0_to_12);
        assert!(unknown.is_err_and(|e| e.contains("unknown api key -7")));
        let short = decode_request_frame(Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0]), |_, _| true);
        assert!(short.is_err_and(|e| e.contains("shorter than a header")));
    }

    #[test]
    fn api_versions_is_always_served_and_an_unknown_version_gets_an_answer() {
        // Header v2 (client id "", no tagged fields), body: software name "" and version "".
        let v3 = decode_request_frame(frame(18, 3, &[0, 0, 0, 1, 1, 0]), |_, _| false);
        let Ok(RequestFrame::Request { body, .. }) = &v3 else {
            panic!("not decoded: {v3:?}");
        };
        assert!(matches!(**body, RequestKind::ApiVersions(_)), "{body:?}");
        let v99 = decode_request_frame(frame(18, 99, &[]), |_, _| false);
        assert!(
            matches!(
                v99,
                Ok(RequestFrame::UnsupportedApiVersions { correlation_id: 42 })
            ),
            "{v99:?}"
        );
    }

    /// A 15-byte frame declaring a collection of 2^31 - 1 topics is refused without reserving
    /// memory for them (it used to abort the process on a 150 GB allocation).
    #[test]
    fn a_huge_declared_array_count_is_refused_without_allocating_it() {
        let mut rest = BytesMut::new();
        rest.put_i16(1);
        rest.put_slice(b"t");
        rest.put_i32(i32::MAX);
        let decoded = decode_request_frame(frame(3, 1, &rest), serves_metadata_v0_to_12);
        assert!(decoded.is_err_and(|e| e.contains("request body")));
    }
}

//! Helpers shared by the wire-server test binaries: a real [`KafkaServer`] on 127.0.0.1:0, a
//! raw-socket client that frames requests encoded with the `kafka-protocol` crate, and a test
//! handler that serves Metadata after a delay chosen by the request itself.

#![allow(dead_code)] // each test binary uses a subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, RequestHeader, RequestKind, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafscale_shared::wire::{
    ApiSupport, Dispatch, HandlerError, KafkaHandler, KafkaServer, RequestContext, WireConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound on any single network step of a test.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A server running on its own task.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: JoinHandle<()>,
}

impl TestServer {
    pub(crate) async fn start(handler: Arc<dyn KafkaHandler>, config: WireConfig) -> Self {
        let server = KafkaServer::bind("127.0.0.1:0".parse().expect("addr"), config)
            .await
            .expect("bind");
        Self::serve(server, handler)
    }

    /// Runs an already configured `server` (TLS, SASL, ...) with `handler`.
    pub(crate) fn serve(server: KafkaServer, handler: Arc<dyn KafkaHandler>) -> Self {
        let addr = server.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(handler, shutdown.clone()));
        TestServer {
            addr,
            shutdown,
            task,
        }
    }

    pub(crate) async fn connect(&self) -> TcpStream {
        tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .expect("connect timed out")
            .expect("connect")
    }

    /// Cancels and waits for `run` to return.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(IO_TIMEOUT, self.task)
            .await
            .expect("server did not stop")
            .expect("server task panicked");
    }
}

/// Request header + body of `request` at `version` (without the length prefix).
pub(crate) fn encode_request<R: Request>(version: i16, correlation_id: i32, request: &R) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("wire-test")))
        .encode(&mut buf, R::header_version(version))
        .expect("encode request header");
    request.encode(&mut buf, version).expect("encode request");
    buf.freeze()
}

/// A frame with an arbitrary raw header prefix: api key, version, correlation id, then `rest`.
pub(crate) fn raw_request(api_key: i16, version: i16, correlation_id: i32, rest: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(api_key);
    buf.put_i16(version);
    buf.put_i32(correlation_id);
    buf.put_slice(rest);
    buf.freeze()
}

/// Writes one length-prefixed frame.
pub(crate) async fn write_frame(stream: &mut TcpStream, payload: &[u8]) {
    let mut buf = Vec::with_capacity(payload.len() + 4);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    write_all(stream, &buf).await;
}

pub(crate) async fn write_all(stream: &mut TcpStream, bytes: &[u8]) {
    tokio::time::timeout(IO_TIMEOUT, stream.write_all(bytes))
        .await
        .expect("write timed out")
        .expect("write");
}

/// How a read of one response frame ended.
#[derive(Debug)]
pub(crate) enum Read {
    Frame(Bytes),
    /// The server closed the connection; `partial` bytes of a frame had arrived before, and
    /// `reset` tells a reset from an orderly EOF.
    Closed {
        partial: usize,
        reset: bool,
    },
}

/// Reads one length-prefixed response frame, or observes the close.
pub(crate) async fn read_frame(stream: &mut TcpStream) -> Read {
    tokio::time::timeout(IO_TIMEOUT, read_frame_inner(stream))
        .await
        .expect("no response and no close within the timeout")
}

async fn read_exact_or_close(
    stream: &mut TcpStream,
    buf: &mut [u8],
    already: usize,
) -> Result<(), Read> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]).await {
            Ok(0) => {
                return Err(Read::Closed {
                    partial: already + got,
                    reset: false,
                });
            }
            Err(_) => {
                return Err(Read::Closed {
                    partial: already + got,
                    reset: true,
                });
            }
            Ok(n) => got += n,
        }
    }
    Ok(())
}

async fn read_frame_inner(stream: &mut TcpStream) -> Read {
    let mut len = [0u8; 4];
    if let Err(closed) = read_exact_or_close(stream, &mut len, 0).await {
        return closed;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    if let Err(closed) = read_exact_or_close(stream, &mut body, 4).await {
        return closed;
    }
    Read::Frame(Bytes::from(body))
}

/// Reads one frame; panics if the connection closed instead.
pub(crate) async fn expect_frame(stream: &mut TcpStream) -> Bytes {
    match read_frame(stream).await {
        Read::Frame(f) => f,
        Read::Closed { partial, reset } => panic!(
            "connection closed (reset: {reset}) before a response arrived ({partial} bytes of a frame)"
        ),
    }
}

/// Asserts that the server closes the connection without sending a single byte.
pub(crate) async fn expect_closed(stream: &mut TcpStream, why: &str) {
    match read_frame(stream).await {
        Read::Closed { partial: 0, .. } => {}
        other => {
            panic!("{why}: expected the connection to close without a response, got {other:?}")
        }
    }
}

/// Decodes a response frame of `R` at `version`: header of the version the protocol defines for
/// that response, then the body, which must use up the frame exactly.
pub(crate) fn decode_response<R: Request>(version: i16, mut frame: Bytes) -> (i32, R::Response) {
    let header_version = <R::Response as HeaderVersion>::header_version(version);
    let header = ResponseHeader::decode(&mut frame, header_version).expect("response header");
    let body = <R::Response as Decodable>::decode(&mut frame, version).expect("response body");
    assert_eq!(
        frame.remaining(),
        0,
        "{} bytes left after the {:?} v{version} response",
        frame.remaining(),
        ApiKey::try_from(R::KEY)
    );
    (header.correlation_id, body)
}

/// Sends `request` and reads its response; asserts the correlation id.
pub(crate) async fn call<R: Request>(
    stream: &mut TcpStream,
    version: i16,
    correlation_id: i32,
    request: &R,
) -> R::Response {
    write_frame(stream, &encode_request(version, correlation_id, request)).await;
    let frame = expect_frame(stream).await;
    let (got, response) = decode_response::<R>(version, frame);
    assert_eq!(got, correlation_id, "correlation id of the response");
    response
}

/// A Metadata request whose single topic name tells [`DelayHandler`] how long to wait.
pub(crate) fn delayed_metadata(tag: usize, delay_ms: u64) -> MetadataRequest {
    let name = format!("req-{tag}-delay-{delay_ms}");
    MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name)))),
    ]))
}

/// The topic names a Metadata response echoes.
pub(crate) fn echoed_names(response: &MetadataResponse) -> Vec<String> {
    response
        .topics
        .iter()
        .map(|t| t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default())
        .collect()
}

/// How many requests a [`DelayHandler`] has seen and is answering at once.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) started: AtomicUsize,
    pub(crate) finished: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) max_in_flight: AtomicUsize,
}

impl Counters {
    fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// Serves Metadata v0-12 only: sleeps for the `delay-<ms>` in the first topic name, then echoes
/// the requested topic names.
#[derive(Debug, Default)]
pub(crate) struct DelayHandler {
    pub(crate) counters: Arc<Counters>,
}

pub(crate) const DELAY_HANDLER_APIS: [ApiSupport; 1] = [ApiSupport::new(ApiKey::Metadata, 0, 12)];

fn delay_of(name: &str) -> Duration {
    let ms = name
        .rsplit_once("delay-")
        .and_then(|(_, ms)| ms.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_millis(ms)
}

#[async_trait::async_trait]
impl KafkaHandler for DelayHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        DELAY_HANDLER_APIS.to_vec()
    }

    async fn start(&self, _ctx: RequestContext, request: RequestKind) -> Dispatch {
        let RequestKind::Metadata(request) = request else {
            return Dispatch::Respond(Box::pin(async {
                Err(HandlerError::Fatal("not metadata".into()))
            }));
        };
        self.counters.started.fetch_add(1, Ordering::SeqCst);
        let names: Vec<String> = request
            .topics
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect();
        let delay = names.first().map(|n| delay_of(n)).unwrap_or_default();
        let counters = self.counters.clone();
        Dispatch::Respond(Box::pin(async move {
            counters.enter();
            tokio::time::sleep(delay).await;
            counters.leave();
            let mut response = MetadataResponse::default();
            response.topics = names
                .into_iter()
                .map(|n| {
                    MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n))))
                })
                .collect();
            Ok(response.into())
        }))
    }
}

/// Serves Fetch v4-12 only: waits the request's `max_wait_ms`, then answers with no topics;
/// counts the fetches it is answering at once.
#[derive(Debug, Default)]
pub(crate) struct FetchDelayHandler {
    pub(crate) counters: Arc<Counters>,
}

#[async_trait::async_trait]
impl KafkaHandler for FetchDelayHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        vec![ApiSupport::new(ApiKey::Fetch, 4, 12)]
    }

    async fn start(&self, _ctx: RequestContext, request: RequestKind) -> Dispatch {
        let RequestKind::Fetch(request) = request else {
            return Dispatch::Respond(Box::pin(async {
                Err(HandlerError::Fatal("not fetch".into()))
            }));
        };
        self.counters.started.fetch_add(1, Ordering::SeqCst);
        let counters = self.counters.clone();
        let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
        Dispatch::Respond(Box::pin(async move {
            counters.enter();
            tokio::time::sleep(wait).await;
            counters.leave();
            Ok(kafka_protocol::messages::FetchResponse::default().into())
        }))
    }
}

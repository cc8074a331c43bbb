//! One Kafka connection with pipelined requests: any number of requests may be in flight;
//! a reader task hands each response to the caller waiting on its correlation id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;

use crate::error::LoadtestError;

/// Longest wait for any one response (a long poll included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest response frame accepted.
const MAX_FRAME: usize = 256 << 20;

type Waiters = Arc<Mutex<HashMap<i32, oneshot::Sender<Bytes>>>>;

/// A pipelined connection to one broker.
pub(crate) struct KafkaConnection {
    addr: String,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    waiters: Waiters,
    next_id: AtomicI32,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for KafkaConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl KafkaConnection {
    pub(crate) async fn connect(addr: &str) -> Result<KafkaConnection, LoadtestError> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| LoadtestError::Io(addr.to_string(), "connect timed out".into()))?
            .map_err(|e| LoadtestError::Io(addr.to_string(), e.to_string()))?;
        stream.set_nodelay(true).ok();
        let (mut read, write) = stream.into_split();
        let waiters: Waiters = Arc::default();
        let reader = {
            let waiters = waiters.clone();
            tokio::spawn(async move {
                while let Ok(len) = read.read_u32().await {
                    if len as usize > MAX_FRAME || len < 4 {
                        break;
                    }
                    let mut frame = vec![0u8; len as usize];
                    if read.read_exact(&mut frame).await.is_err() {
                        break;
                    }
                    let frame = Bytes::from(frame);
                    let id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                    if let Some(w) = lock(&waiters).remove(&id) {
                        let _ = w.send(frame);
                    }
                }
                // Dropping the senders fails every waiting call.
                lock(&waiters).clear();
            })
        };
        Ok(KafkaConnection {
            addr: addr.to_string(),
            writer: tokio::sync::Mutex::new(write),
            waiters,
            next_id: AtomicI32::new(1),
            reader,
        })
    }

    /// Whether the server closed the connection (its reader has stopped): it cannot answer
    /// any more, and a new one must be opened.
    pub(crate) fn is_closed(&self) -> bool {
        self.reader.is_finished()
    }

    /// Writes a request; the returned future resolves to its response. Requests are written
    /// in call order, so awaiting later preserves pipelining.
    pub(crate) async fn send<R: Request>(
        &self,
        version: i16,
        request: &R,
        expect_response: bool,
    ) -> Result<Option<ResponseFuture<R>>, LoadtestError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("kafscale-loadtest")))
            .encode(&mut body, R::header_version(version))
            .map_err(|e| LoadtestError::Encode(e.to_string()))?;
        request
            .encode(&mut body, version)
            .map_err(|e| LoadtestError::Encode(e.to_string()))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_u32(body.len() as u32);
        frame.put_slice(&body);
        let rx = if expect_response {
            let (tx, rx) = oneshot::channel();
            lock(&self.waiters).insert(id, tx);
            Some(rx)
        } else {
            None
        };
        self.writer
            .lock()
            .await
            .write_all(&frame)
            .await
            .map_err(|e| LoadtestError::Io(self.addr.clone(), e.to_string()))?;
        Ok(rx.map(|rx| ResponseFuture {
            rx,
            version,
            addr: self.addr.clone(),
            _request: std::marker::PhantomData,
        }))
    }

    /// Sends a request and waits for its response.
    pub(crate) async fn call<R: Request>(
        &self,
        version: i16,
        request: &R,
    ) -> Result<R::Response, LoadtestError> {
        match self.send(version, request, true).await? {
            Some(f) => f.wait().await,
            None => Err(LoadtestError::Protocol("no response expected".into())),
        }
    }
}

/// A response still to come.
pub(crate) struct ResponseFuture<R: Request> {
    rx: oneshot::Receiver<Bytes>,
    version: i16,
    addr: String,
    _request: std::marker::PhantomData<R>,
}

impl<R: Request> ResponseFuture<R> {
    pub(crate) async fn wait(self) -> Result<R::Response, LoadtestError> {
        let mut frame = tokio::time::timeout(RESPONSE_TIMEOUT, self.rx)
            .await
            .map_err(|_| LoadtestError::Io(self.addr.clone(), "response timed out".into()))?
            .map_err(|_| LoadtestError::Io(self.addr.clone(), "connection closed".into()))?;
        ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(self.version),
        )
        .map_err(|e| LoadtestError::Protocol(format!("response header: {e}")))?;
        let response = R::Response::decode(&mut frame, self.version)
            .map_err(|e| LoadtestError::Protocol(format!("{:?} response: {e}", R::KEY)))?;
        if frame.has_remaining() {
            return Err(LoadtestError::Protocol(format!(
                "{:?} response has {} trailing bytes",
                R::KEY,
                frame.remaining()
            )));
        }
        Ok(response)
    }
}

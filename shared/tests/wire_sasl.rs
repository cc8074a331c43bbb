//! SASL on the wire server against real sockets: ApiVersions lists SaslHandshake and
//! SaslAuthenticate, a request before authentication closes the connection unanswered, a
//! pipelined request right behind a successful SaslAuthenticate runs as the new principal, a
//! failed exchange is answered after the failure delay and closes the connection, and a
//! connection that has not authenticated by the authentication timeout is closed. The state
//! machine's finer rules (re-authentication, expiry) are unit-tested in `wire/sasl.rs`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    TestServer, call, decode_response, encode_request, expect_closed, expect_frame, write_all,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, MetadataResponse, RequestKind,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_sasl::{
    Authenticator, Mechanism, MemoryCredentials, SaslConfig, ScramCredential, ScramMechanism,
};
use kafscale_shared::wire::{
    ApiSupport, Dispatch, KafkaHandler, KafkaServer, RequestContext, SaslSettings, WireConfig,
};

const FAILURE_DELAY: Duration = Duration::from_millis(200);
const AUTHENTICATION_TIMEOUT: Duration = Duration::from_millis(1_500);

/// Serves Metadata and remembers the principal of every request it saw.
#[derive(Default)]
struct PrincipalHandler {
    seen: Mutex<Vec<Option<String>>>,
}

#[async_trait::async_trait]
impl KafkaHandler for PrincipalHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        vec![ApiSupport::new(ApiKey::Metadata, 0, 12)]
    }

    async fn start(&self, ctx: RequestContext, _request: RequestKind) -> Dispatch {
        self.seen
            .lock()
            .unwrap()
            .push(ctx.principal.as_deref().map(str::to_string));
        Dispatch::ready(MetadataResponse::default())
    }
}

async fn sasl_server(handler: Arc<PrincipalHandler>) -> TestServer {
    let credentials = Arc::new(MemoryCredentials::new());
    let credential =
        ScramCredential::from_password(ScramMechanism::Sha256, "alice-pw", b"salt".to_vec(), 4096)
            .unwrap();
    credentials.insert("alice", credential);
    let authenticator = Authenticator::new(
        SaslConfig::new(vec![Mechanism::Plain]).unwrap(),
        credentials,
    );
    let server = KafkaServer::bind("127.0.0.1:0".parse().unwrap(), WireConfig::default())
        .await
        .unwrap()
        .with_sasl(SaslSettings {
            authenticator,
            session_lifetime: None,
            failure_delay: FAILURE_DELAY,
            authentication_timeout: AUTHENTICATION_TIMEOUT,
        });
    TestServer::serve(server, handler)
}

fn handshake(mechanism: &'static str) -> SaslHandshakeRequest {
    SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism))
}

fn plain(user: &str, password: &str) -> SaslAuthenticateRequest {
    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(format!("\0{user}\0{password}")))
}

fn framed(payload: Bytes) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

#[tokio::test]
async fn requests_wait_for_authentication_and_then_carry_the_principal() {
    let handler = Arc::new(PrincipalHandler::default());
    let server = sasl_server(handler.clone()).await;

    let mut stream = server.connect().await;
    let versions = call(&mut stream, 3, 1, &ApiVersionsRequest::default()).await;
    let listed: Vec<(i16, i16, i16)> = versions
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect();
    assert!(
        listed.contains(&(17, 0, 1)) && listed.contains(&(36, 0, 2)),
        "{listed:?}"
    );
    write_all(
        &mut stream,
        &framed(encode_request(1, 2, &MetadataRequest::default())),
    )
    .await;
    expect_closed(&mut stream, "metadata before authentication").await;

    // Handshake, then SaslAuthenticate and Metadata pipelined: the Metadata request is read
    // after the authentication and runs as alice.
    let mut stream = server.connect().await;
    assert_eq!(
        call(&mut stream, 1, 1, &handshake("PLAIN"))
            .await
            .error_code,
        0
    );
    let mut both = framed(encode_request(2, 2, &plain("alice", "alice-pw")));
    both.extend(framed(encode_request(1, 3, &MetadataRequest::default())));
    write_all(&mut stream, &both).await;
    let (id, auth) = decode_response::<SaslAuthenticateRequest>(2, expect_frame(&mut stream).await);
    assert_eq!((id, auth.error_code, auth.session_lifetime_ms), (2, 0, 0));
    let (id, _) = decode_response::<MetadataRequest>(1, expect_frame(&mut stream).await);
    assert_eq!(id, 3);
    assert_eq!(
        *handler.seen.lock().unwrap(),
        [Some("User:alice".to_string())]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failed_authentication_is_answered_after_the_delay_then_closed() {
    let server = sasl_server(Arc::new(PrincipalHandler::default())).await;
    let mut stream = server.connect().await;
    let refused = call(&mut stream, 1, 1, &handshake("SCRAM-SHA-512")).await;
    assert_eq!(refused.error_code, 33);
    assert_eq!(refused.mechanisms, [StrBytes::from_static_str("PLAIN")]);
    expect_closed(&mut stream, "after an unsupported mechanism").await;

    let mut stream = server.connect().await;
    assert_eq!(
        call(&mut stream, 1, 1, &handshake("PLAIN"))
            .await
            .error_code,
        0
    );
    let started = Instant::now();
    let failed = call(&mut stream, 1, 2, &plain("alice", "wrong")).await;
    assert!(started.elapsed() >= FAILURE_DELAY);
    assert_eq!(failed.error_code, 58);
    let message = failed
        .error_message
        .map(|m| m.to_string())
        .unwrap_or_default();
    assert!(message.contains("invalid credentials"), "{message}");
    expect_closed(&mut stream, "after a failed authentication").await;
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_does_not_authenticate_in_time_is_closed() {
    let server = sasl_server(Arc::new(PrincipalHandler::default())).await;

    // Silent from the start, and stalled after the handshake: both closed at the deadline.
    let mut silent = server.connect().await;
    let mut stalled = server.connect().await;
    let opened = Instant::now();
    assert_eq!(
        call(&mut stalled, 1, 1, &handshake("PLAIN"))
            .await
            .error_code,
        0
    );
    expect_closed(&mut silent, "a connection that never authenticated").await;
    expect_closed(&mut stalled, "a connection stalled after its handshake").await;
    assert!(opened.elapsed() >= AUTHENTICATION_TIMEOUT);

    // One that authenticated in time stays open past the deadline and is served.
    let mut authenticated = server.connect().await;
    let opened = Instant::now();
    assert_eq!(
        call(&mut authenticated, 1, 1, &handshake("PLAIN"))
            .await
            .error_code,
        0
    );
    let auth = call(&mut authenticated, 1, 2, &plain("alice", "alice-pw")).await;
    assert_eq!(auth.error_code, 0);
    tokio::time::sleep((AUTHENTICATION_TIMEOUT * 2).saturating_sub(opened.elapsed())).await;
    call(&mut authenticated, 1, 3, &MetadataRequest::default()).await;
    server.stop().await;
}

//! SASL authentication of a Kafka connection: SaslHandshake (v1) and SaslAuthenticate (v0-2),
//! with KIP-368 re-authentication, as a per-connection state machine the pipeline consults for
//! every request, in request order.
//!
//! Why in the wire core and not in a handler: whether a request may be served at all, and
//! under which principal, has to be decided before any handler sees it, and in the order the
//! requests arrive (a request read after a successful SaslAuthenticate is authenticated, one
//! read before it is not). The exchanges themselves are `kafscale_sasl`'s.
//!
//! Rules (as a Kafka broker with a SASL listener):
//! - Before authentication only ApiVersions, SaslHandshake and SaslAuthenticate are served;
//!   any other request closes the connection.
//! - SaslHandshake with a mechanism that is not enabled: UNSUPPORTED_SASL_MECHANISM with the
//!   enabled list, then the connection closes. SaslAuthenticate without a handshake, or a
//!   handshake in the middle of an exchange: ILLEGAL_SASL_STATE, then it closes.
//! - A failed exchange (wrong password, unknown user, malformed message) is answered with
//!   SASL_AUTHENTICATION_FAILED after the failure delay, then the connection closes. The
//!   message never says whether the user exists.
//! - KIP-368: with a session lifetime, SaslAuthenticate v1+ tells the client how long its
//!   session lasts; a request other than ApiVersions/SaslHandshake/SaslAuthenticate that
//!   arrives after that closes the connection, unless the client re-authenticated (a new
//!   handshake and exchange on the same connection, same mechanism, same principal). While a
//!   re-authentication is under way, other requests are still served under the current
//!   session until it expires.
//!
//! Nothing here logs or keeps SASL bytes, passwords or keys.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ResponseKind, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_sasl::{Authenticator, Mechanism, SaslError, Session, Step};
use metrics::Counter;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::ApiSupport;
use crate::metrics as names;

/// SaslHandshake v0-1 advertised, as Kafka does: librdkafka before 2.x enables SASL only if v0
/// is listed (then uses v1). A v0 handshake, which would make the client send raw, unframed
/// SASL tokens next, is refused with UNSUPPORTED_VERSION; every current client (Java,
/// librdkafka, kafka-python) sends v1 and then SaslAuthenticate.
pub(super) const SASL_HANDSHAKE_SUPPORT: ApiSupport = ApiSupport::new(ApiKey::SaslHandshake, 0, 1);
/// SaslAuthenticate v0-2 (v1 adds the session lifetime, v2 is flexible).
pub(super) const SASL_AUTHENTICATE_SUPPORT: ApiSupport =
    ApiSupport::new(ApiKey::SaslAuthenticate, 0, 2);

/// SASL settings of a listener.
#[derive(Debug, Clone)]
pub struct SaslSettings {
    /// The enabled mechanisms and the credentials they check.
    pub authenticator: Authenticator,
    /// KIP-368: how long an authentication is valid; `None`: as long as the connection.
    pub session_lifetime: Option<Duration>,
    /// How long a failed authentication waits before its answer and the close (Kafka's
    /// `connection.failed.authentication.delay.ms`): slows down password guessing.
    pub failure_delay: Duration,
    /// How long a new connection may take to authenticate (Kafka has no such setting; its
    /// idle timeout closes such connections after minutes). A connection that has not
    /// authenticated by then is closed, so half-open or stalled handshakes cannot hold
    /// connection slots.
    pub authentication_timeout: Duration,
}

/// A listener's settings and its authentication counters.
pub(super) struct SaslListener {
    settings: SaslSettings,
    metrics: SaslMetrics,
}

impl SaslListener {
    pub(super) fn new(settings: SaslSettings) -> Self {
        SaslListener {
            settings,
            metrics: SaslMetrics::new(),
        }
    }
}

/// `kafscale_sasl_authentications_total` by mechanism and outcome, resolved once.
struct SaslMetrics {
    /// (mechanism, success, failure) for every mechanism.
    by_mechanism: Vec<(Mechanism, Counter, Counter)>,
    /// Handshakes naming a mechanism that is not enabled.
    unsupported: Counter,
    /// Connections closed before they authenticated, at the authentication timeout.
    timeouts: Counter,
}

impl SaslMetrics {
    fn new() -> Self {
        let listener = names::role();
        let counter = |mechanism: &'static str, outcome: &'static str| ::metrics::counter!(names::SASL_AUTHENTICATIONS, "listener" => listener, "mechanism" => mechanism, "outcome" => outcome);
        SaslMetrics {
            by_mechanism: Mechanism::ALL
                .iter()
                .map(|&m| {
                    (
                        m,
                        counter(m.name(), "success"),
                        counter(m.name(), "failure"),
                    )
                })
                .collect(),
            unsupported: counter("unsupported", "failure"),
            timeouts: counter("none", "timeout"),
        }
    }

    fn count(&self, mechanism: Mechanism, success: bool) {
        if let Some((_, ok, failed)) = self.by_mechanism.iter().find(|(m, ..)| *m == mechanism) {
            if success { ok } else { failed }.increment(1);
        }
    }
}

/// What the pipeline does with a request other than ApiVersions and the SASL APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Admission {
    /// Serve it as this principal (`User:<name>`).
    Serve(Arc<str>),
    /// Close the connection, for this reason.
    Refuse(&'static str),
}

/// The answer to a SaslHandshake or SaslAuthenticate request.
#[derive(Debug)]
pub(super) struct SaslAnswer {
    pub(super) response: ResponseKind,
    /// Wait this long before sending it (failed authentications).
    pub(super) delay: Option<Duration>,
    /// Close the connection once it is sent.
    pub(super) close: bool,
}

/// An authenticated session.
#[derive(Debug, Clone)]
struct Authenticated {
    principal: Arc<str>,
    mechanism: Mechanism,
    expires: Option<Instant>,
}

impl Authenticated {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }
}

enum State {
    /// No handshake yet.
    Unauthenticated,
    /// A handshake chose a mechanism; SaslAuthenticate requests feed the exchange. `previous`:
    /// the session being re-authenticated, if any.
    Exchange {
        session: Session,
        previous: Option<Authenticated>,
    },
    Authenticated(Authenticated),
    /// A failure was answered; the connection is closing.
    Failed,
}

/// The SASL state of one connection.
pub(super) struct SaslConnection {
    listener: Arc<SaslListener>,
    state: State,
}

impl SaslConnection {
    pub(super) fn new(listener: Arc<SaslListener>) -> Self {
        SaslConnection {
            listener,
            state: State::Unauthenticated,
        }
    }

    /// Whether a request other than ApiVersions and the SASL APIs may be served at `now`.
    pub(super) fn admit(&self, now: Instant) -> Admission {
        match &self.state {
            State::Authenticated(a)
            | State::Exchange {
                previous: Some(a), ..
            } => {
                if a.expired(now) {
                    Admission::Refuse("the SASL session expired and was not re-authenticated")
                } else {
                    Admission::Serve(a.principal.clone())
                }
            }
            State::Unauthenticated | State::Exchange { previous: None, .. } | State::Failed => {
                Admission::Refuse("request before SASL authentication")
            }
        }
    }

    /// Whether the connection has not authenticated yet (a re-authentication does not count:
    /// the connection is served under its current session meanwhile).
    pub(super) fn awaiting_first_authentication(&self) -> bool {
        matches!(
            self.state,
            State::Unauthenticated | State::Exchange { previous: None, .. }
        )
    }

    /// How long the connection may take to authenticate.
    pub(super) fn authentication_timeout(&self) -> Duration {
        self.listener.settings.authentication_timeout
    }

    /// Counts a connection closed because it did not authenticate in time.
    pub(super) fn timed_out(&self) {
        self.listener.metrics.timeouts.increment(1);
    }

    /// Answers a SaslHandshake request of `version`.
    pub(super) fn handshake(&mut self, request: &SaslHandshakeRequest, version: i16) -> SaslAnswer {
        let mechanisms: Vec<StrBytes> = self
            .listener
            .settings
            .authenticator
            .mechanism_names()
            .into_iter()
            .map(StrBytes::from_static_str)
            .collect();
        let answer = |error: Option<ResponseError>, close: bool| SaslAnswer {
            response: SaslHandshakeResponse::default()
                .with_error_code(error.map_or(0, |e| e.code()))
                .with_mechanisms(mechanisms.clone())
                .into(),
            delay: None,
            close,
        };
        if version < 1 {
            self.state = State::Failed;
            info!("closing connection: sasl handshake v0 (raw sasl tokens) is not supported");
            return answer(Some(ResponseError::UnsupportedVersion), true);
        }
        let previous = match std::mem::replace(&mut self.state, State::Failed) {
            State::Unauthenticated => None,
            State::Authenticated(a) => Some(a),
            State::Exchange { .. } | State::Failed => {
                debug!("closing connection: sasl handshake in the middle of an exchange");
                return answer(Some(ResponseError::IllegalSaslState), true);
            }
        };
        let name = request.mechanism.as_str();
        if let Some(p) = &previous
            && p.mechanism.name() != name
        {
            debug!(
                from = p.mechanism.name(),
                "closing connection: re-authentication with another mechanism"
            );
            return answer(Some(ResponseError::IllegalSaslState), true);
        }
        match self.listener.settings.authenticator.start(name) {
            Ok(session) => {
                debug!(
                    mechanism = session.mechanism().name(),
                    reauthentication = previous.is_some(),
                    "sasl handshake"
                );
                self.state = State::Exchange { session, previous };
                answer(None, false)
            }
            Err(_) => {
                self.listener.metrics.unsupported.increment(1);
                info!(
                    "closing connection: sasl handshake asked for a mechanism that is not enabled"
                );
                answer(Some(ResponseError::UnsupportedSaslMechanism), true)
            }
        }
    }

    /// Answers a SaslAuthenticate request (one step of the exchange).
    pub(super) async fn authenticate(
        &mut self,
        request: &SaslAuthenticateRequest,
        now: Instant,
    ) -> SaslAnswer {
        let State::Exchange { session, previous } = &mut self.state else {
            self.state = State::Failed;
            debug!("closing connection: sasl authenticate without a handshake");
            return failure(
                ResponseError::IllegalSaslState,
                "SaslAuthenticate needs a SaslHandshake first",
                None,
            );
        };
        let mechanism = session.mechanism();
        match session.step(&request.auth_bytes).await {
            Ok(Step {
                response,
                done: None,
            }) => SaslAnswer {
                response: SaslAuthenticateResponse::default()
                    .with_auth_bytes(response)
                    .into(),
                delay: None,
                close: false,
            },
            Ok(Step {
                response,
                done: Some(principal),
            }) => {
                let principal: Arc<str> = Arc::from(principal.to_string());
                let previous = previous.take();
                self.authenticated(mechanism, principal, previous, response, now)
            }
            Err(e) => self.failed(mechanism, &e),
        }
    }

    fn authenticated(
        &mut self,
        mechanism: Mechanism,
        principal: Arc<str>,
        previous: Option<Authenticated>,
        response: bytes::Bytes,
        now: Instant,
    ) -> SaslAnswer {
        if let Some(p) = &previous
            && p.principal != principal
        {
            self.state = State::Failed;
            self.listener.metrics.count(mechanism, false);
            info!(
                mechanism = mechanism.name(),
                "closing connection: re-authentication as another principal"
            );
            return failure(
                ResponseError::SaslAuthenticationFailed,
                "re-authentication must keep the connection's principal",
                Some(self.listener.settings.failure_delay),
            );
        }
        let lifetime = self.listener.settings.session_lifetime;
        self.listener.metrics.count(mechanism, true);
        debug!(
            principal = &*principal,
            mechanism = mechanism.name(),
            reauthentication = previous.is_some(),
            "sasl authenticated"
        );
        self.state = State::Authenticated(Authenticated {
            principal,
            mechanism,
            expires: lifetime.map(|l| now + l),
        });
        let lifetime_ms = lifetime.map_or(0, |l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX));
        SaslAnswer {
            response: SaslAuthenticateResponse::default()
                .with_auth_bytes(response)
                .with_session_lifetime_ms(lifetime_ms)
                .into(),
            delay: None,
            close: false,
        }
    }

    fn failed(&mut self, mechanism: Mechanism, e: &SaslError) -> SaslAnswer {
        self.state = State::Failed;
        self.listener.metrics.count(mechanism, false);
        match e {
            SaslError::CredentialLookup { .. }
            | SaslError::Random(_)
            | SaslError::VerificationAborted(_) => {
                warn!(mechanism = mechanism.name(), error = %e, "sasl authentication could not be checked")
            }
            _ => info!(mechanism = mechanism.name(), error = %e, "sasl authentication failed"),
        }
        failure(
            ResponseError::SaslAuthenticationFailed,
            &client_message(mechanism, e),
            Some(self.listener.settings.failure_delay),
        )
    }
}

/// The error message the client sees: what was wrong with its messages, or a plain "invalid
/// credentials" for a wrong password and an unknown user alike.
fn client_message(mechanism: Mechanism, e: &SaslError) -> String {
    match e {
        SaslError::CredentialLookup { .. }
        | SaslError::Random(_)
        | SaslError::VerificationAborted(_) => format!(
            "authentication with {mechanism} could not be checked now (credential store unavailable); try again"
        ),
        other => format!("authentication with {mechanism} failed: {other}"),
    }
}

fn failure(error: ResponseError, message: &str, delay: Option<Duration>) -> SaslAnswer {
    SaslAnswer {
        response: SaslAuthenticateResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message.to_string())))
            .into(),
        delay,
        close: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafscale_sasl::{
        MemoryCredentials, SaslConfig, ScramClient, ScramCredential, ScramMechanism,
    };

    const LIFETIME: Duration = Duration::from_secs(60);

    fn listener(lifetime: Option<Duration>) -> Arc<SaslListener> {
        let credentials = Arc::new(MemoryCredentials::new());
        for (user, password) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
            for m in ScramMechanism::ALL {
                let credential =
                    ScramCredential::from_password(m, password, b"salt".to_vec(), 4096).unwrap();
                credentials.insert(user, credential);
            }
        }
        let config = SaslConfig::new(Mechanism::ALL.to_vec()).unwrap();
        Arc::new(SaslListener::new(SaslSettings {
            authenticator: Authenticator::new(config, credentials),
            session_lifetime: lifetime,
            failure_delay: Duration::from_millis(100),
            authentication_timeout: Duration::from_secs(10),
        }))
    }

    fn handshake(c: &mut SaslConnection, mechanism: &str) -> SaslAnswer {
        c.handshake(
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_string(mechanism.to_string())),
            1,
        )
    }

    async fn step(c: &mut SaslConnection, bytes: &[u8]) -> SaslAnswer {
        let request =
            SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(bytes));
        c.authenticate(&request, Instant::now()).await
    }

    fn authenticate_response(a: &SaslAnswer) -> &SaslAuthenticateResponse {
        match &a.response {
            ResponseKind::SaslAuthenticate(r) => r,
            other => panic!("not a SaslAuthenticate answer: {other:?}"),
        }
    }

    fn handshake_error(a: &SaslAnswer) -> i16 {
        match &a.response {
            ResponseKind::SaslHandshake(r) => r.error_code,
            other => panic!("not a SaslHandshake answer: {other:?}"),
        }
    }

    /// A full SCRAM exchange; the last answer.
    async fn scram(c: &mut SaslConnection, m: ScramMechanism, user: &str, pw: &str) -> SaslAnswer {
        assert_eq!(handshake_error(&handshake(c, m.name())), 0);
        let mut client = ScramClient::new(m, user, pw, "client-nonce");
        let first = step(c, client.client_first().as_bytes()).await;
        if first.close {
            return first;
        }
        let server_first = std::str::from_utf8(&authenticate_response(&first).auth_bytes).unwrap();
        let last = client.client_final(server_first).unwrap();
        let answer = step(c, last.as_bytes()).await;
        if !answer.close {
            let server_final =
                std::str::from_utf8(&authenticate_response(&answer).auth_bytes).unwrap();
            client.check_server_final(server_final).unwrap();
        }
        answer
    }

    async fn plain(c: &mut SaslConnection, user: &str, pw: &str) -> SaslAnswer {
        assert_eq!(handshake_error(&handshake(c, "PLAIN")), 0);
        step(c, format!("\0{user}\0{pw}").as_bytes()).await
    }

    #[tokio::test]
    async fn requests_before_authentication_are_refused() {
        let mut c = SaslConnection::new(listener(None));
        assert!(matches!(c.admit(Instant::now()), Admission::Refuse(_)));
        assert_eq!(handshake_error(&handshake(&mut c, "SCRAM-SHA-256")), 0);
        // Mid-exchange is not authenticated either.
        assert!(matches!(c.admit(Instant::now()), Admission::Refuse(_)));
    }

    #[tokio::test]
    async fn scram_and_plain_authenticate_as_the_user() {
        for m in ScramMechanism::ALL {
            let mut c = SaslConnection::new(listener(None));
            let answer = scram(&mut c, m, "alice", "alice-pw").await;
            assert!(!answer.close, "{answer:?}");
            let response = authenticate_response(&answer);
            assert_eq!((response.error_code, response.session_lifetime_ms), (0, 0));
            assert_eq!(
                c.admit(Instant::now()),
                Admission::Serve(Arc::from("User:alice"))
            );
        }
        let mut c = SaslConnection::new(listener(None));
        assert!(!plain(&mut c, "bob", "bob-pw").await.close);
        assert_eq!(
            c.admit(Instant::now()),
            Admission::Serve(Arc::from("User:bob"))
        );
    }

    #[tokio::test]
    async fn wrong_passwords_and_unknown_users_fail_alike_after_the_delay() {
        let mut messages = Vec::new();
        for (user, pw) in [("alice", "wrong"), ("nobody", "alice-pw")] {
            let mut c = SaslConnection::new(listener(None));
            let answer = scram(&mut c, ScramMechanism::Sha512, user, pw).await;
            assert!(answer.close);
            assert_eq!(answer.delay, Some(Duration::from_millis(100)));
            let response = authenticate_response(&answer);
            assert_eq!(
                response.error_code,
                ResponseError::SaslAuthenticationFailed.code()
            );
            messages.push(response.error_message.as_deref().map(str::to_string));
            assert!(matches!(c.admit(Instant::now()), Admission::Refuse(_)));

            let mut c = SaslConnection::new(listener(None));
            let answer = plain(&mut c, user, pw).await;
            assert!(answer.close);
            messages.push(
                authenticate_response(&answer)
                    .error_message
                    .as_deref()
                    .map(str::to_string),
            );
        }
        assert_eq!(
            messages[0], messages[2],
            "a wrong password reads like an unknown user"
        );
        assert_eq!(messages[1], messages[3]);
    }

    #[tokio::test]
    async fn out_of_order_requests_close_the_connection() {
        let mut c = SaslConnection::new(listener(None));
        let answer = step(&mut c, b"\0alice\0alice-pw").await;
        assert!(answer.close);
        assert_eq!(
            authenticate_response(&answer).error_code,
            ResponseError::IllegalSaslState.code()
        );

        let mut c = SaslConnection::new(listener(None));
        let answer = handshake(&mut c, "GSSAPI");
        assert!(answer.close);
        assert_eq!(
            handshake_error(&answer),
            ResponseError::UnsupportedSaslMechanism.code()
        );
        let ResponseKind::SaslHandshake(r) = &answer.response else {
            unreachable!()
        };
        assert_eq!(r.mechanisms.len(), 3);

        let mut c = SaslConnection::new(listener(None));
        let v0 = c.handshake(
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
            0,
        );
        assert!(v0.close);
        assert_eq!(
            handshake_error(&v0),
            ResponseError::UnsupportedVersion.code()
        );

        let mut c = SaslConnection::new(listener(None));
        assert_eq!(handshake_error(&handshake(&mut c, "PLAIN")), 0);
        let again = handshake(&mut c, "PLAIN");
        assert!(again.close);
        assert_eq!(
            handshake_error(&again),
            ResponseError::IllegalSaslState.code()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_expires_unless_re_authenticated() {
        let mut c = SaslConnection::new(listener(Some(LIFETIME)));
        let answer = scram(&mut c, ScramMechanism::Sha256, "alice", "alice-pw").await;
        assert_eq!(authenticate_response(&answer).session_lifetime_ms, 60_000);
        let start = Instant::now();
        assert!(matches!(c.admit(start + LIFETIME / 2), Admission::Serve(_)));
        assert!(matches!(c.admit(start + LIFETIME), Admission::Refuse(_)));

        // Re-authentication mid-connection; other requests are served meanwhile.
        tokio::time::advance(LIFETIME * 9 / 10).await;
        assert_eq!(handshake_error(&handshake(&mut c, "SCRAM-SHA-256")), 0);
        assert!(matches!(c.admit(Instant::now()), Admission::Serve(_)));
        let mut client = ScramClient::new(ScramMechanism::Sha256, "alice", "alice-pw", "n2");
        let first = step(&mut c, client.client_first().as_bytes()).await;
        let server_first = std::str::from_utf8(&authenticate_response(&first).auth_bytes)
            .unwrap()
            .to_string();
        let answer = step(
            &mut c,
            client.client_final(&server_first).unwrap().as_bytes(),
        )
        .await;
        assert!(!answer.close);
        // The new session counts from the re-authentication.
        assert!(matches!(
            c.admit(start + LIFETIME * 3 / 2),
            Admission::Serve(_)
        ));
        assert!(matches!(
            c.admit(start + LIFETIME * 2),
            Admission::Refuse(_)
        ));
    }

    #[tokio::test]
    async fn re_authentication_keeps_the_principal_and_the_mechanism() {
        let mut c = SaslConnection::new(listener(Some(LIFETIME)));
        assert!(!plain(&mut c, "alice", "alice-pw").await.close);
        let answer = plain(&mut c, "bob", "bob-pw").await;
        assert!(answer.close, "another principal");
        assert!(matches!(c.admit(Instant::now()), Admission::Refuse(_)));

        let mut c = SaslConnection::new(listener(Some(LIFETIME)));
        assert!(!plain(&mut c, "alice", "alice-pw").await.close);
        let answer = handshake(&mut c, "SCRAM-SHA-512");
        assert!(answer.close, "another mechanism");
        assert_eq!(
            handshake_error(&answer),
            ResponseError::IllegalSaslState.code()
        );

        let mut c = SaslConnection::new(listener(Some(LIFETIME)));
        assert!(!plain(&mut c, "alice", "alice-pw").await.close);
        assert!(!plain(&mut c, "alice", "alice-pw").await.close);
        assert_eq!(
            c.admit(Instant::now()),
            Admission::Serve(Arc::from("User:alice"))
        );
    }
}

//! The API the Kafka listener runs SASL exchanges through: an [`Authenticator`] per listener
//! (enabled mechanisms, credential source), a [`Session`] per exchange, one
//! [`Session::step`] per SaslAuthenticate request (or per raw SASL frame with SaslHandshake
//! v0). A session that failed stays failed; the connection is then to be closed.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use zeroize::Zeroizing;

use crate::plain::parse_plain;
use crate::scram::{
    ClientFirst, decoy_credential, parse_client_final, parse_client_first, server_first,
    verify_proof,
};
use crate::{
    CredentialSource, MIN_ITERATIONS, Mechanism, SaslError, ScramCredential, ScramMechanism,
};

/// Makes the server's part of SCRAM nonces (printable ASCII without `,`). Injectable so tests
/// can replay RFC exchanges.
pub type NonceGenerator = Arc<dyn Fn() -> Result<String, SaslError> + Send + Sync>;

/// Which mechanisms are offered, and how unknown users are disguised.
#[derive(Clone)]
pub struct SaslConfig {
    /// Offered in this order in SaslHandshake answers.
    pub mechanisms: Vec<Mechanism>,
    /// Key of the decoy salts answered for unknown users. Gateways that share it answer the
    /// same salt for the same unknown user, so asking two of them reveals nothing either.
    pub decoy_secret: Vec<u8>,
    /// Iteration count answered for unknown users (that of newly created credentials).
    pub decoy_iterations: u32,
}

impl SaslConfig {
    /// `mechanisms` with a random decoy secret.
    pub fn new(mechanisms: Vec<Mechanism>) -> Result<SaslConfig, SaslError> {
        let mut decoy_secret = vec![0u8; 32];
        getrandom::fill(&mut decoy_secret).map_err(SaslError::Random)?;
        Ok(SaslConfig {
            mechanisms,
            decoy_secret,
            decoy_iterations: MIN_ITERATIONS,
        })
    }
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanisms", &self.mechanisms)
            .field("decoy_iterations", &self.decoy_iterations)
            .finish_non_exhaustive()
    }
}

/// An authenticated identity, `User:<name>` as Kafka writes principals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    user: String,
}

impl Principal {
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "User:{}", self.user)
    }
}

/// What one step of an exchange gives: the bytes to send back (possibly empty) and, once the
/// client is authenticated, who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub response: Bytes,
    pub done: Option<Principal>,
}

/// Runs SASL exchanges for one listener.
#[derive(Clone)]
pub struct Authenticator {
    config: Arc<SaslConfig>,
    credentials: Arc<dyn CredentialSource>,
    nonces: NonceGenerator,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// 24 random bytes, base64: 192 bits of server nonce.
fn random_nonce() -> Result<String, SaslError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(SaslError::Random)?;
    Ok(BASE64.encode(bytes))
}

impl Authenticator {
    pub fn new(config: SaslConfig, credentials: Arc<dyn CredentialSource>) -> Self {
        Authenticator {
            config: Arc::new(config),
            credentials,
            nonces: Arc::new(random_nonce),
        }
    }

    /// Replaces the random server nonces (tests).
    pub fn with_nonce_generator(mut self, nonces: NonceGenerator) -> Self {
        self.nonces = nonces;
        self
    }

    /// The enabled mechanism names, for the SaslHandshake answer.
    pub fn mechanism_names(&self) -> Vec<&'static str> {
        self.config.mechanisms.iter().map(|m| m.name()).collect()
    }

    /// Starts an exchange with the mechanism named `mechanism` (exact name, as sent in
    /// SaslHandshake); [`SaslError::UnsupportedMechanism`] if it is unknown or not enabled.
    pub fn start(&self, mechanism: &str) -> Result<Session, SaslError> {
        let mechanism = Mechanism::from_name(mechanism)?;
        if !self.config.mechanisms.contains(&mechanism) {
            return Err(SaslError::UnsupportedMechanism(
                mechanism.name().to_string(),
            ));
        }
        Ok(Session {
            mechanism,
            state: State::Start,
            authenticator: self.clone(),
        })
    }
}

/// One SASL exchange.
pub struct Session {
    mechanism: Mechanism,
    state: State,
    authenticator: Authenticator,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("mechanism", &self.mechanism)
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

enum State {
    Start,
    AwaitingClientFinal(Box<PendingScram>),
    Done,
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Start => "start",
            State::AwaitingClientFinal(_) => "awaiting client-final",
            State::Done => "done",
            State::Failed => "failed",
        }
    }
}

/// A SCRAM exchange between server-first and client-final.
struct PendingScram {
    username: String,
    gs2_header: String,
    /// The client's part of `combined_nonce` (its first bytes).
    client_nonce_len: usize,
    combined_nonce: String,
    /// `client-first-message-bare "," server-first-message`: the AuthMessage's first part.
    auth_prefix: String,
    credential: ScramCredential,
    /// False when `credential` is a decoy for an unknown user.
    known_user: bool,
}

impl Session {
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Feeds the client's next message. An error ends the exchange for good.
    pub async fn step(&mut self, client: &[u8]) -> Result<Step, SaslError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let (step, next) = match (self.mechanism, state) {
            (Mechanism::Plain, State::Start) => (self.plain(client).await?, State::Done),
            (Mechanism::Scram(m), State::Start) => self.client_first(m, client).await?,
            (Mechanism::Scram(_), State::AwaitingClientFinal(pending)) => {
                (client_final(&pending, client)?, State::Done)
            }
            (_, State::Done) => {
                self.state = State::Done;
                return Err(SaslError::ExchangeOver("complete"));
            }
            (_, State::Failed) => return Err(SaslError::ExchangeOver("failed")),
            (Mechanism::Plain, State::AwaitingClientFinal(_)) => {
                return Err(SaslError::ExchangeOver("failed"));
            }
        };
        self.state = next;
        Ok(step)
    }

    async fn plain(&self, client: &[u8]) -> Result<Step, SaslError> {
        let message = parse_plain(client)?;
        let credential = self.any_scram_credential(message.user).await?;
        // The same work for an unknown user as for a real one, so timing does not tell users
        // apart: the password is checked against a decoy credential no password matches.
        let (credential, known_user) = match credential {
            Some(credential) => (credential, true),
            None => {
                let config = &self.authenticator.config;
                let decoy = decoy_credential(
                    ScramMechanism::Sha512,
                    &config.decoy_secret,
                    message.user,
                    config.decoy_iterations,
                );
                (decoy, false)
            }
        };
        let verified = verify_off_the_runtime(credential, message.password).await? && known_user;
        if !verified {
            return Err(SaslError::AuthenticationFailed);
        }
        Ok(Step {
            response: Bytes::new(),
            done: Some(Principal {
                user: message.user.to_string(),
            }),
        })
    }

    /// The user's credential for the strongest SCRAM mechanism it has one for.
    async fn any_scram_credential(&self, user: &str) -> Result<Option<ScramCredential>, SaslError> {
        for mechanism in ScramMechanism::ALL {
            let found = self
                .authenticator
                .credentials
                .scram_credential(user, mechanism)
                .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    async fn client_first(
        &self,
        mechanism: ScramMechanism,
        client: &[u8],
    ) -> Result<(Step, State), SaslError> {
        let ClientFirst {
            username,
            gs2_header,
            bare,
            client_nonce,
        } = parse_client_first(client)?;
        let stored = self
            .authenticator
            .credentials
            .scram_credential(&username, mechanism)
            .await?
            .filter(|c| c.mechanism == mechanism);
        let known_user = stored.is_some();
        let credential = stored.unwrap_or_else(|| {
            let config = &self.authenticator.config;
            decoy_credential(
                mechanism,
                &config.decoy_secret,
                &username,
                config.decoy_iterations,
            )
        });
        let combined_nonce = format!("{client_nonce}{}", (self.authenticator.nonces)()?);
        let first = server_first(&combined_nonce, &credential.salt, credential.iterations);
        let pending = PendingScram {
            username,
            gs2_header,
            client_nonce_len: client_nonce.len(),
            combined_nonce,
            auth_prefix: format!("{bare},{first}"),
            credential,
            known_user,
        };
        let step = Step {
            response: Bytes::from(first),
            done: None,
        };
        Ok((step, State::AwaitingClientFinal(Box::new(pending))))
    }
}

/// Checks a PLAIN password on tokio's blocking pool: salting it takes thousands of HMAC rounds
/// (milliseconds), which must not stall the other connections served by the same runtime
/// thread. The password is copied for the blocking task and wiped when it is done.
async fn verify_off_the_runtime(
    credential: ScramCredential,
    password: &str,
) -> Result<bool, SaslError> {
    let password = Zeroizing::new(password.to_string());
    tokio::task::spawn_blocking(move || credential.verifies_password(&password))
        .await
        .map_err(SaslError::VerificationAborted)
}

fn client_final(pending: &PendingScram, client: &[u8]) -> Result<Step, SaslError> {
    let message = parse_client_final(
        client,
        pending.credential.mechanism,
        &pending.gs2_header,
        pending
            .combined_nonce
            .get(..pending.client_nonce_len)
            .unwrap_or_default(),
        &pending.combined_nonce,
    )?;
    let auth_message = format!("{},{}", pending.auth_prefix, message.without_proof);
    let server_final = verify_proof(&pending.credential, &auth_message, &message.proof)?;
    if !pending.known_user {
        return Err(SaslError::AuthenticationFailed);
    }
    Ok(Step {
        response: Bytes::from(server_final),
        done: Some(Principal {
            user: pending.username.clone(),
        }),
    })
}

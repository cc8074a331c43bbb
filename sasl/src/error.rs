//! The crate's one error type. Messages never contain a password, a salted password or a key;
//! an authentication failure never says whether the user exists.

/// Errors of SASL exchanges and SCRAM credentials.
#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    /// The client asked for a mechanism that is unknown or not enabled.
    #[error("unsupported SASL mechanism {0:?}")]
    UnsupportedMechanism(String),
    /// A client message does not follow the mechanism's grammar.
    #[error("malformed {mechanism} message: {reason}")]
    Malformed {
        mechanism: &'static str,
        reason: &'static str,
    },
    /// The client asked for channel binding (`p=` in the GS2 header), which is not offered.
    #[error("channel binding is not supported")]
    ChannelBindingNotSupported,
    /// The client-final message's channel binding is not the GS2 header of the client-first.
    #[error("channel binding does not match the client-first message")]
    ChannelBindingMismatch,
    /// The client-final message's nonce is not the one the server sent.
    #[error("nonce does not match the server-first message")]
    NonceMismatch,
    /// The client requested a mandatory extension (`m=`) or an unsupported one (`tokenauth`).
    #[error("SCRAM extension not supported: {0}")]
    ExtensionNotSupported(&'static str),
    /// The authorization id differs from the authenticated user (acting as another user is
    /// not supported).
    #[error("authorization id differs from the user name")]
    AuthzidMismatch,
    /// Wrong password or proof, or unknown user: deliberately one error.
    #[error("authentication failed: invalid credentials")]
    AuthenticationFailed,
    /// A message arrived after the exchange had finished or failed.
    #[error("the SASL exchange is already {0}")]
    ExchangeOver(&'static str),
    /// A SCRAM iteration count outside [`crate::MIN_ITERATIONS`]..=[`crate::MAX_ITERATIONS`].
    #[error("iteration count {0} outside {min}..={max}", min = crate::MIN_ITERATIONS, max = crate::MAX_ITERATIONS)]
    InvalidIterations(i64),
    /// A SCRAM credential with an unusable part (empty salt, wrong key length, ...).
    #[error("unacceptable SCRAM credential: {0}")]
    UnacceptableCredential(&'static str),
    /// The blocking task checking a password panicked or was cancelled (runtime shutdown).
    #[error("the password check did not finish")]
    VerificationAborted(#[source] tokio::task::JoinError),
    /// The operating system's random number generator failed.
    #[error("no randomness available")]
    Random(#[source] getrandom::Error),
    /// Reading the credential failed (e.g. the metadata store is unavailable).
    #[error("credential lookup failed")]
    CredentialLookup {
        retryable: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SaslError {
    /// Whether the same exchange could succeed if the client tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            SaslError::CredentialLookup { retryable, .. } => *retryable,
            SaslError::Random(_) | SaslError::VerificationAborted(_) => true,
            SaslError::UnsupportedMechanism(_)
            | SaslError::Malformed { .. }
            | SaslError::ChannelBindingNotSupported
            | SaslError::ChannelBindingMismatch
            | SaslError::NonceMismatch
            | SaslError::ExtensionNotSupported(_)
            | SaslError::AuthzidMismatch
            | SaslError::AuthenticationFailed
            | SaslError::ExchangeOver(_)
            | SaslError::InvalidIterations(_)
            | SaslError::UnacceptableCredential(_) => false,
        }
    }

    /// The RFC 5802 `server-error` value a SCRAM server may send as `e=...` before failing
    /// the exchange (the wire core may put it in the SaslAuthenticate answer's auth bytes).
    /// An unknown user is reported as `invalid-proof`, like a wrong password.
    pub fn scram_server_error(&self) -> &'static str {
        match self {
            SaslError::Malformed { .. } => "invalid-encoding",
            SaslError::ChannelBindingNotSupported => "channel-binding-not-supported",
            SaslError::ChannelBindingMismatch => "channel-bindings-dont-match",
            SaslError::ExtensionNotSupported(_) => "extensions-not-supported",
            SaslError::AuthenticationFailed | SaslError::NonceMismatch => "invalid-proof",
            SaslError::AuthzidMismatch => "invalid-username-encoding",
            SaslError::Random(_)
            | SaslError::VerificationAborted(_)
            | SaslError::CredentialLookup { .. } => "no-resources",
            SaslError::UnsupportedMechanism(_)
            | SaslError::ExchangeOver(_)
            | SaslError::InvalidIterations(_)
            | SaslError::UnacceptableCredential(_) => "other-error",
        }
    }
}

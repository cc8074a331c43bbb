//! SCRAM credentials: what is stored per user and mechanism instead of a password (RFC 5802
//! section 3: salt, iteration count, StoredKey, ServerKey), and the [`CredentialSource`] the
//! exchanges read them from.
//!
//! A credential is derived either from a password (the command line, bootstrap) or from a
//! SaltedPassword (what AlterUserScramCredentials carries: the client salts the password
//! itself). Neither the password nor the SaltedPassword is kept.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use async_trait::async_trait;

use crate::crypto::{hi, keys_of_salted_password};
use crate::{SaslError, ScramMechanism};

/// Fewest iterations accepted (Kafka's minimum, as RFC 7677 recommends).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most iterations accepted (Kafka's maximum): bounds the work one login costs the server.
pub const MAX_ITERATIONS: u32 = 16384;
/// Length of the salts this crate generates.
pub const SALT_LEN: usize = 32;

/// What the server keeps for one user and one SCRAM mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub mechanism: ScramMechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`: checks client proofs and PLAIN passwords.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`: signs the server-final message.
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    /// Keys are secrets: only their presence shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Derives the credential of `password` (its UTF-8 bytes; no SASLprep, as in Kafka).
    pub fn from_password(
        mechanism: ScramMechanism,
        password: &str,
        salt: Vec<u8>,
        iterations: u32,
    ) -> Result<ScramCredential, SaslError> {
        check_parameters(&salt, i64::from(iterations))?;
        let salted = hi(mechanism, password.as_bytes(), &salt, iterations);
        Ok(Self::from_checked_salted_password(
            mechanism, salt, iterations, &salted,
        ))
    }

    /// Derives the credential of a SaltedPassword computed by the client with `salt` and
    /// `iterations` (AlterUserScramCredentials).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: Vec<u8>,
        iterations: i64,
        salted_password: &[u8],
    ) -> Result<ScramCredential, SaslError> {
        let iterations = check_parameters(&salt, iterations)?;
        if salted_password.is_empty() {
            return Err(SaslError::UnacceptableCredential("empty salted password"));
        }
        Ok(Self::from_checked_salted_password(
            mechanism,
            salt,
            iterations,
            salted_password,
        ))
    }

    /// A credential from stored parts, checked for consistency (for stores decoding items).
    pub fn from_parts(
        mechanism: ScramMechanism,
        salt: Vec<u8>,
        iterations: i64,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    ) -> Result<ScramCredential, SaslError> {
        let iterations = check_parameters(&salt, iterations)?;
        if stored_key.len() != mechanism.hash_len() || server_key.len() != mechanism.hash_len() {
            return Err(SaslError::UnacceptableCredential(
                "key length does not match the mechanism",
            ));
        }
        Ok(ScramCredential {
            mechanism,
            salt,
            iterations,
            stored_key,
            server_key,
        })
    }

    fn from_checked_salted_password(
        mechanism: ScramMechanism,
        salt: Vec<u8>,
        iterations: u32,
        salted_password: &[u8],
    ) -> ScramCredential {
        let (stored_key, server_key) = keys_of_salted_password(mechanism, salted_password);
        ScramCredential {
            mechanism,
            salt,
            iterations,
            stored_key,
            server_key,
        }
    }

    /// Whether `password` is this credential's password (constant-time key comparison).
    pub fn verifies_password(&self, password: &str) -> bool {
        let salted = hi(
            self.mechanism,
            password.as_bytes(),
            &self.salt,
            self.iterations,
        );
        let (stored_key, _) = keys_of_salted_password(self.mechanism, &salted);
        crate::crypto::constant_time_eq(&stored_key, &self.stored_key)
    }
}

/// Checks a salt and an iteration count; gives the count as `u32`.
fn check_parameters(salt: &[u8], iterations: i64) -> Result<u32, SaslError> {
    if salt.is_empty() {
        return Err(SaslError::UnacceptableCredential("empty salt"));
    }
    match u32::try_from(iterations) {
        Ok(i) if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&i) => Ok(i),
        _ => Err(SaslError::InvalidIterations(iterations)),
    }
}

/// A fresh random salt of [`SALT_LEN`] bytes.
pub fn random_salt() -> Result<Vec<u8>, SaslError> {
    let mut salt = vec![0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(SaslError::Random)?;
    Ok(salt)
}

/// Where the exchanges read credentials from.
#[async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// The credential of `user` for `mechanism`, or `None` if the user has none.
    async fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>, SaslError>;
}

/// Credentials held in memory (tests, fuzzing, a fixed bootstrap user).
#[derive(Debug, Default)]
pub struct MemoryCredentials {
    credentials: RwLock<HashMap<(String, ScramMechanism), ScramCredential>>,
}

impl MemoryCredentials {
    pub fn new() -> Self {
        MemoryCredentials::default()
    }

    /// Sets `user`'s credential for the credential's mechanism.
    pub fn insert(&self, user: &str, credential: ScramCredential) {
        self.credentials
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((user.to_string(), credential.mechanism), credential);
    }
}

#[async_trait]
impl CredentialSource for MemoryCredentials {
    async fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>, SaslError> {
        Ok(self
            .credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(user.to_string(), mechanism))
            .cloned())
    }
}

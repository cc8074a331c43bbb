//! A SCRAM client (RFC 5802): for tests of the server side (here, in the wire core, in the
//! fuzz seed corpus) and tools that check a server. Kafka clients bring their own.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::crypto::{constant_time_eq, hash, hi, hmac, xor};
use crate::{MAX_ITERATIONS, SaslError, ScramMechanism};

fn malformed(reason: &'static str) -> SaslError {
    SaslError::Malformed {
        mechanism: "SCRAM server",
        reason,
    }
}

/// One client side of a SCRAM exchange, without channel binding or authorization id.
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    client_nonce: String,
    bare: String,
    /// The server signature expected in the server-final message, once client-final is made.
    expected_server_final: Option<String>,
}

impl ScramClient {
    /// A client for `user` with `password`; `client_nonce` is printable ASCII without `,`.
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str, client_nonce: &str) -> Self {
        let escaped = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            mechanism,
            password: password.to_string(),
            client_nonce: client_nonce.to_string(),
            bare: format!("n={escaped},r={client_nonce}"),
            expected_server_final: None,
        }
    }

    /// The client-first message.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.bare)
    }

    /// The client-final message answering `server_first`.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, SaslError> {
        let attribute = |name: &str| {
            server_first
                .split(',')
                .find_map(|a| a.strip_prefix(name))
                .ok_or(malformed("missing attribute"))
        };
        let nonce = attribute("r=")?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(SaslError::NonceMismatch);
        }
        let salt = BASE64
            .decode(attribute("s=")?)
            .map_err(|_| malformed("salt is not base64"))?;
        let iterations: u32 = attribute("i=")?
            .parse()
            .map_err(|_| malformed("bad iteration count"))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(SaslError::InvalidIterations(i64::from(iterations)));
        }
        let m = self.mechanism;
        let salted = hi(m, self.password.as_bytes(), &salt, iterations);
        let client_key = hmac(m, &salted, b"Client Key");
        let stored_key = hash(m, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.bare);
        let proof = xor(&client_key, &hmac(m, &stored_key, auth_message.as_bytes()));
        let server_key = hmac(m, &salted, b"Server Key");
        let signature = hmac(m, &server_key, auth_message.as_bytes());
        self.expected_server_final = Some(format!("v={}", BASE64.encode(signature)));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Checks the server-final message: the server knew the credential.
    pub fn check_server_final(&self, server_final: &str) -> Result<(), SaslError> {
        match &self.expected_server_final {
            Some(expected) if constant_time_eq(expected.as_bytes(), server_final.as_bytes()) => {
                Ok(())
            }
            Some(_) => Err(SaslError::AuthenticationFailed),
            None => Err(SaslError::ExchangeOver("not at its final step")),
        }
    }
}

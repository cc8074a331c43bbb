//! SASL authentication for the Kafka listener: the PLAIN (RFC 4616) and SCRAM-SHA-256 /
//! SCRAM-SHA-512 (RFC 5802, RFC 7677) server exchanges, and the SCRAM credentials both verify
//! against.
//!
//! Why a crate of its own: the exchanges are pure functions of the client's bytes, the stored
//! credential and a few random bytes, so they are unit-tested and fuzzed here with no network,
//! metadata store or Kafka framing around them. Credentials come in through the
//! [`CredentialSource`] trait; `kafscale-shared` implements it over the metadata store and
//! serves the Kafka APIs that manage them (DescribeUserScramCredentials,
//! AlterUserScramCredentials). This crate depends on no other kafscale crate.
//!
//! One credential store serves both mechanisms: a PLAIN password is checked by salting it with
//! the user's stored SCRAM salt and iteration count and comparing the resulting StoredKey. No
//! password is ever stored, logged or kept after a check.
//!
//! Entry point for the wire core: [`Authenticator::start`] gives a [`Session`] per SASL
//! exchange, fed with each SaslAuthenticate payload through [`Session::step`].

mod authenticator;
mod client;
mod credential;
mod crypto;
mod error;
mod mechanism;
mod plain;
mod scram;

pub use authenticator::{Authenticator, NonceGenerator, Principal, SaslConfig, Session, Step};
pub use client::ScramClient;
pub use credential::{
    CredentialSource, MAX_ITERATIONS, MIN_ITERATIONS, MemoryCredentials, SALT_LEN, ScramCredential,
    random_salt,
};
pub use error::SaslError;
pub use mechanism::{Mechanism, ScramMechanism};

#[cfg(test)]
mod tests;

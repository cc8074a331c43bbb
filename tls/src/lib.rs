//! TLS for kafscale's listeners (the Kafka wire listener and the HTTP listeners) and for its
//! HTTPS calls between processes.
//!
//! Why a crate of its own: the TLS stack (rustls on ring, the same rustls the AWS client
//! already brings) and certificate parsing stay out of the wire core, which only sees a stream
//! that reads and writes, and a principal.
//!
//! What it does:
//! - loads a certificate chain and its private key from PEM files ([`pem`]);
//! - serves them through a resolver that swaps to new files when their content changes
//!   ([`ReloadingCertResolver`]), because cert-manager and similar tools rotate certificates
//!   in place; a bad new file keeps the old certificate;
//! - optionally requires a client certificate signed by a configured CA bundle (mTLS), reloaded
//!   like the certificate ([`ReloadingClientVerifier`]), and names the client by its subject,
//!   as Kafka's default principal builder does ([`principal`]).
//!
//! - gives HTTPS clients a trust configuration of their own ([`ClientTls`]).
//!
//! Key material is never logged: errors name files, never their contents.

mod client;
mod client_ca;
pub mod pem;
pub mod principal;
mod resolver;
mod server;

use std::path::PathBuf;

pub use client::ClientTls;
pub use client_ca::ReloadingClientVerifier;

/// A file of the crate's test data (certificates and keys made by `testdata/README.md`).
#[cfg(test)]
pub(crate) fn testdata(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}
pub use resolver::{ReloadOutcome, ReloadingCertResolver};
pub use server::{ServerTls, TlsFiles, TlsStream};

/// Why TLS could not be set up or a connection not be secured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM {what}")]
    Missing { path: PathBuf, what: &'static str },
    #[error("parsing PEM {what} in {path}: {source}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the private key in {path} cannot sign: {source}")]
    UnusableKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the private key in {key} does not belong to the certificate in {cert}: {source}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the client CA bundle {path} is not usable: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("the trusted CA bundle {path} is not usable: {message}")]
    TrustedCa { path: PathBuf, message: String },
    #[error("{0:?} is not a valid server name for certificate checks")]
    ServerName(String),
    #[error("building the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

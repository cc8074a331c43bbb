//! The client CA bundle of an mTLS listener, swapped when its file changes.
//!
//! Why: cert-manager and similar tools rotate a CA by rewriting the bundle in place (old and
//! new CA side by side for a while, then the new one alone). A listener that read the bundle
//! once would refuse every client certificate of the new CA until it restarted. Like
//! [`crate::ReloadingCertResolver`], the owner calls [`ReloadingClientVerifier::reload_if_changed`]
//! periodically; a bundle that does not parse (caught half-written) keeps the one in use.
//!
//! Every handshake verifies against the bundle current when it starts; connections already
//! established are not affected. The verifier sends no CA names in its certificate request
//! (the hints would have to be borrowed from a bundle that may be swapped meanwhile): clients
//! then offer the certificate they have, which is what Kafka clients do anyway.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::resolver::fingerprint;
use crate::{ReloadOutcome, TlsError, pem};

/// Verifies client certificates against the bundle at a path, reloaded when it changes.
#[derive(Debug)]
pub struct ReloadingClientVerifier {
    path: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    /// Hash of the bundle last looked at (loaded or refused).
    last_seen: Mutex<u64>,
}

impl ReloadingClientVerifier {
    /// Loads the bundle; fails if it is not usable (the listener must not start without one).
    pub fn load(
        path: &Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let bundle = pem::read(path)?;
        let verifier = verifier_of(path, &bundle, provider.clone())?;
        Ok(ReloadingClientVerifier {
            path: path.to_path_buf(),
            provider,
            current: RwLock::new(verifier),
            last_seen: Mutex::new(fingerprint(&[&bundle])),
        })
    }

    /// Re-reads the bundle and swaps it in if it changed. `Err`: the new bundle is not usable
    /// and the previous one stays (reported once per distinct content).
    pub fn reload_if_changed(&self) -> Result<ReloadOutcome, TlsError> {
        let bundle = pem::read(&self.path)?;
        {
            let seen = fingerprint(&[&bundle]);
            let mut last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            if *last == seen {
                return Ok(ReloadOutcome::Unchanged);
            }
            *last = seen;
        }
        let verifier = verifier_of(&self.path, &bundle, self.provider.clone())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = verifier;
        Ok(ReloadOutcome::Reloaded)
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A verifier that requires a client certificate signed by a CA of `bundle`.
fn verifier_of(
    path: &Path,
    bundle: &[u8],
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let unusable = |message: String| TlsError::ClientCa {
        path: path.to_path_buf(),
        message,
    };
    let roots = pem::root_store_of(path, bundle, |_, message| unusable(message))?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| unusable(e.to_string()))
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

//! The server certificate, swapped when its files change.
//!
//! Every handshake asks [`ReloadingCertResolver::resolve`] for the current certificate (an
//! `Arc` clone under a read lock), so a swap affects new handshakes only: connections already
//! established keep the session they negotiated. [`ReloadingCertResolver::reload_if_changed`]
//! is called periodically by the owner; it re-reads both files and compares a hash of their
//! bytes with the last one it looked at, so unchanged files cost two small reads. A new pair
//! that does not parse, or whose key does not match the certificate (a rotation caught
//! half-written), keeps the old certificate; the next change of the files is tried again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{TlsError, pem};

/// What a reload check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files are as last seen.
    Unchanged,
    /// New files were loaded; new handshakes use them.
    Reloaded,
}

/// Serves the certificate of `cert` and `key`, reloaded when they change.
#[derive(Debug)]
pub struct ReloadingCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Hash of the file contents last looked at (loaded or refused).
    last_seen: Mutex<u64>,
}

impl ReloadingCertResolver {
    /// Loads the pair; fails if it is not usable (the listener must not start without one).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let (cert_pem, key_pem) = (pem::read(cert_path)?, pem::read(key_path)?);
        let key = certified_key(cert_path, &cert_pem, key_path, &key_pem)?;
        Ok(ReloadingCertResolver {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
            last_seen: Mutex::new(fingerprint(&[&cert_pem, &key_pem])),
        })
    }

    /// The certificate new handshakes present.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Re-reads the files and swaps the certificate if they changed. `Err`: the new files are
    /// not usable and the old certificate stays (reported once per distinct content).
    pub fn reload_if_changed(&self) -> Result<ReloadOutcome, TlsError> {
        let (cert_pem, key_pem) = (pem::read(&self.cert_path)?, pem::read(&self.key_path)?);
        let seen = fingerprint(&[&cert_pem, &key_pem]);
        {
            let mut last = self
                .last_seen
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if *last == seen {
                return Ok(ReloadOutcome::Unchanged);
            }
            *last = seen;
        }
        let key = certified_key(&self.cert_path, &cert_pem, &self.key_path, &key_pem)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(key);
        Ok(ReloadOutcome::Reloaded)
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A hash of file contents, to tell whether they changed since last looked at.
pub(crate) fn fingerprint(contents: &[&[u8]]) -> u64 {
    let mut h = DefaultHasher::new();
    contents.hash(&mut h);
    h.finish()
}

/// The chain and a signing key for it, checked to belong together.
fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = pem::certificates(cert_path, cert_pem)?;
    let key = pem::private_key(key_path, key_pem)?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| {
        TlsError::UnusableKey {
            path: key_path.to_path_buf(),
            source,
        }
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|source| TlsError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
            source,
        })?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name);
        std::fs::read(path).expect("test certificate")
    }

    fn leaf(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].as_ref().to_vec()
    }

    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
    }

    impl Files {
        fn new(cert: &str, key: &str) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let files = Files {
                cert: dir.path().join("tls.crt"),
                key: dir.path().join("tls.key"),
                _dir: dir,
            };
            files.write(cert, key);
            files
        }

        fn write(&self, cert: &str, key: &str) {
            std::fs::write(&self.cert, testdata(cert)).expect("write cert");
            std::fs::write(&self.key, testdata(key)).expect("write key");
        }
    }

    #[test]
    fn changed_files_are_served_to_new_handshakes() {
        let files = Files::new("server-a.pem", "server-a.key");
        let resolver = ReloadingCertResolver::load(&files.cert, &files.key).expect("load");
        let first = leaf(&resolver.current());
        assert_eq!(
            resolver.reload_if_changed().expect("check"),
            ReloadOutcome::Unchanged
        );
        files.write("server-b.pem", "server-b.key");
        assert_eq!(
            resolver.reload_if_changed().expect("reload"),
            ReloadOutcome::Reloaded
        );
        let second = leaf(&resolver.current());
        assert_ne!(first, second);
        let b = pem::certificates(&files.cert, &testdata("server-b.pem")).expect("b");
        assert_eq!(second, b[0].as_ref());
    }

    #[test]
    fn a_bad_new_pair_keeps_the_old_certificate() {
        let files = Files::new("server-a.pem", "server-a.key");
        let resolver = ReloadingCertResolver::load(&files.cert, &files.key).expect("load");
        let served = leaf(&resolver.current());

        // Half a rotation: the new certificate with the old key.
        files.write("server-b.pem", "server-a.key");
        let err = resolver.reload_if_changed().expect_err("mismatch");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert_eq!(leaf(&resolver.current()), served);
        // Reported once: the same content again is not re-tried.
        assert_eq!(
            resolver.reload_if_changed().expect("same content"),
            ReloadOutcome::Unchanged
        );

        std::fs::write(&files.cert, b"-----BEGIN CERTIFICATE-----\nnot base64!\n").expect("w");
        let err = resolver.reload_if_changed().expect_err("garbage");
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        std::fs::write(&files.cert, b"").expect("w");
        let err = resolver.reload_if_changed().expect_err("empty");
        assert!(matches!(err, TlsError::Missing { .. }), "{err}");
        std::fs::remove_file(&files.key).expect("rm");
        let err = resolver.reload_if_changed().expect_err("missing key");
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert_eq!(leaf(&resolver.current()), served);

        // The rotation completes: the new pair is taken.
        files.write("server-b.pem", "server-b.key");
        assert_eq!(
            resolver.reload_if_changed().expect("reload"),
            ReloadOutcome::Reloaded
        );
        assert_ne!(leaf(&resolver.current()), served);
    }

    #[test]
    fn an_unusable_pair_fails_the_first_load() {
        let files = Files::new("server-a.pem", "server-b.key");
        let err = ReloadingCertResolver::load(&files.cert, &files.key).expect_err("mismatch");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        // Neither message carries key material, only the file names.
        assert!(err.to_string().contains("tls.key"), "{err}");
        assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
        let files = Files::new("server-a.key", "server-a.key");
        let err = ReloadingCertResolver::load(&files.cert, &files.key).expect_err("no cert");
        assert!(matches!(err, TlsError::Missing { .. }), "{err}");
    }
}

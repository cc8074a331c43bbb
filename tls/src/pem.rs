//! PEM files: a certificate chain (leaf first), one private key (PKCS#8, PKCS#1 or SEC1), and
//! a bundle of CA certificates. Parsed with rustls-pki-types' own PEM reader.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// Reads a whole file (small: certificates and keys), naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of a PEM file in order; at least one.
pub fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The certificates of a PEM bundle file as trust anchors; a certificate rustls cannot use as
/// one is the error `unusable` makes of the path and the reason.
pub fn root_store(
    path: &Path,
    unusable: impl Fn(PathBuf, String) -> TlsError,
) -> Result<RootCertStore, TlsError> {
    root_store_of(path, &read(path)?, unusable)
}

/// [`root_store`] of a bundle already read from `path`.
pub fn root_store_of(
    path: &Path,
    bundle: &[u8],
    unusable: impl Fn(PathBuf, String) -> TlsError,
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, bundle)? {
        roots
            .add(cert)
            .map_err(|e| unusable(path.to_path_buf(), e.to_string()))?;
    }
    Ok(roots)
}

/// The first private key of a PEM file.
pub fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Missing {
            path: path.to_path_buf(),
            what: "private key",
        },
        source => TlsError::Pem {
            path: path.to_path_buf(),
            what: "private key",
            source,
        },
    })
}

//! The client side: how one kafscale process calls another over HTTPS (gateways → indexers,
//! the admin CLI → a gateway).
//!
//! Why a CA bundle of our own rather than the system's roots: the tiers' certificates are
//! issued by the cluster's own CA (cert-manager), which no system trusts. Why an optional
//! server name: indexers advertise their pod IP, and a certificate for every pod IP is
//! impractical; with a server name set, every peer's certificate is checked against that one
//! name (e.g. the indexers' Service name) whatever address is dialled. Without one, the
//! certificate must name the address dialled (DNS name or IP SAN).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use crate::{TlsError, pem};

/// The trust settings of an HTTPS client; cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in the PEM bundle at `ca`; `server_name`, if set, is the
    /// name every server's certificate must carry.
    pub fn load(ca: &Path, server_name: Option<String>) -> Result<Self, TlsError> {
        let roots = pem::root_store(ca, |path, message| TlsError::TrustedCa { path, message })?;
        let server_name = server_name
            .map(|name| ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name)))
            .transpose()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
        })
    }

    /// The rustls configuration (for an HTTPS connector).
    pub fn config(&self) -> &rustls::ClientConfig {
        &self.config
    }

    /// The name server certificates are checked against, when not the address dialled.
    pub fn server_name(&self) -> Option<&ServerName<'static>> {
        self.server_name.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn a_ca_bundle_loads_and_bad_inputs_are_named() {
        let tls = ClientTls::load(&testdata("ca.pem"), Some("indexer.example".into()))
            .expect("client tls");
        assert_eq!(
            tls.server_name(),
            Some(&ServerName::try_from("indexer.example").expect("name"))
        );
        assert!(format!("{tls:?}").contains("indexer.example"));

        let missing = ClientTls::load(&testdata("no-such-ca.pem"), None).unwrap_err();
        assert!(missing.to_string().contains("no-such-ca.pem"), "{missing}");
        let key_only = ClientTls::load(&testdata("server-a.key"), None).unwrap_err();
        assert!(matches!(key_only, TlsError::Missing { .. }), "{key_only}");
        let bad_name = ClientTls::load(&testdata("ca.pem"), Some("not a name!".into()));
        assert!(matches!(bad_name, Err(TlsError::ServerName(_))));
    }
}

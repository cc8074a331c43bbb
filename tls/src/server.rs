//! The server side of a listener's TLS: configuration built once, then one handshake per
//! accepted connection (run by the caller on the connection's own task, under its timeout).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::{ReloadOutcome, ReloadingCertResolver, ReloadingClientVerifier, TlsError, principal};

/// An established server-side TLS stream.
pub type TlsStream<S> = tokio_rustls::server::TlsStream<S>;

/// The files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key of the leaf (PEM).
    pub key: PathBuf,
    /// CA bundle that signs client certificates (PEM); when set, clients must present one.
    pub client_ca: Option<PathBuf>,
}

/// A listener's TLS: the certificate and the client CA bundle, both reloadable.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    resolver: Arc<ReloadingCertResolver>,
    client_ca: Option<Arc<ReloadingClientVerifier>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.is_mutual())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files; `alpn` lists the protocols offered (empty: no ALPN).
    pub fn load(files: &TlsFiles, alpn: Vec<Vec<u8>>) -> Result<Self, TlsError> {
        let resolver = Arc::new(ReloadingCertResolver::load(&files.cert, &files.key)?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let client_ca = match &files.client_ca {
            Some(ca) => Some(Arc::new(ReloadingClientVerifier::load(ca, provider)?)),
            None => None,
        };
        let builder = match &client_ca {
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            client_ca,
        })
    }

    /// Re-reads the certificate, its key and the client CA bundle, and swaps in whatever
    /// changed, for new handshakes. Both are checked even if one fails; `Err` (the first
    /// failure): changed files that cannot be loaded, whose predecessors stay in use.
    pub fn reload_if_changed(&self) -> Result<ReloadOutcome, TlsError> {
        let certificate = self.resolver.reload_if_changed();
        let client_ca = self
            .client_ca
            .as_ref()
            .map_or(Ok(ReloadOutcome::Unchanged), |ca| ca.reload_if_changed());
        match (certificate?, client_ca?) {
            (ReloadOutcome::Unchanged, ReloadOutcome::Unchanged) => Ok(ReloadOutcome::Unchanged),
            _ => Ok(ReloadOutcome::Reloaded),
        }
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// Runs the handshake on `stream`; the principal is the client certificate's subject
    /// (`User:CN=...`) when one was presented, else `None`. Not bounded in time: the caller
    /// puts it under its handshake timeout.
    pub async fn accept<S>(&self, stream: S) -> Result<(TlsStream<S>, Option<String>), TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let tls = self
            .acceptor
            .accept(stream)
            .await
            .map_err(TlsError::Handshake)?;
        let principal = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| principal::of_certificate(leaf).ok());
        Ok((tls, principal))
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{pem, testdata};

    fn server(client_ca: bool) -> ServerTls {
        ServerTls::load(
            &TlsFiles {
                cert: testdata("server-a.pem"),
                key: testdata("server-a.key"),
                client_ca: client_ca.then(|| testdata("ca.pem")),
            },
            Vec::new(),
        )
        .expect("server tls")
    }

    fn client(with_cert: bool) -> tokio_rustls::TlsConnector {
        client_with(with_cert.then_some(("client.pem", "client.key")))
    }

    /// A client trusting the test CA, presenting the certificate and key of `identity`.
    fn client_with(identity: Option<(&str, &str)>) -> tokio_rustls::TlsConnector {
        let ca = testdata("ca.pem");
        let roots = pem::root_store(&ca, |path, message| TlsError::TrustedCa { path, message })
            .expect("ca");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => {
                let path = testdata(cert);
                let chain = pem::certificates(&path, &pem::read(&path).expect("r")).expect("c");
                let path = testdata(key);
                let key = pem::private_key(&path, &pem::read(&path).expect("r")).expect("k");
                builder.with_client_auth_cert(chain, key).expect("client")
            }
            None => builder.with_no_client_auth(),
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// Handshakes over an in-memory pipe; the server's outcome and the client's.
    async fn handshake(
        server: &ServerTls,
        client: tokio_rustls::TlsConnector,
    ) -> (Result<Option<String>, TlsError>, std::io::Result<()>) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("localhost").expect("name");
        let client_side = async move {
            let mut tls = client.connect(name, client_io).await?;
            tls.write_all(b"ping").await?;
            let mut answer = [0u8; 4];
            tls.read_exact(&mut answer).await?;
            assert_eq!(&answer, b"pong");
            Ok(())
        };
        let server_side = async {
            let (mut tls, principal) = server.accept(server_io).await?;
            let mut request = [0u8; 4];
            tls.read_exact(&mut request)
                .await
                .map_err(TlsError::Handshake)?;
            tls.write_all(b"pong").await.map_err(TlsError::Handshake)?;
            tls.flush().await.map_err(TlsError::Handshake)?;
            Ok(principal)
        };
        tokio::join!(server_side, client_side)
    }

    #[tokio::test]
    async fn plain_tls_has_no_principal() {
        let (server_result, client_result) = handshake(&server(false), client(false)).await;
        client_result.expect("client");
        assert_eq!(server_result.expect("server"), None);
    }

    #[tokio::test]
    async fn mutual_tls_names_the_client_and_refuses_one_without_a_certificate() {
        let tls = server(true);
        assert!(tls.is_mutual());
        let (server_result, client_result) = handshake(&tls, client(true)).await;
        client_result.expect("client");
        let principal = server_result.expect("server").expect("principal");
        assert!(principal.starts_with("User:") && principal.contains("CN=app,OU=team"));

        let (server_result, client_result) = handshake(&tls, client(false)).await;
        assert!(matches!(server_result, Err(TlsError::Handshake(_))));
        assert!(client_result.is_err());
    }

    #[tokio::test]
    async fn a_rotated_client_ca_bundle_applies_to_new_handshakes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("client-ca.pem");
        std::fs::copy(testdata("ca.pem"), &bundle).expect("copy");
        let tls = ServerTls::load(
            &TlsFiles {
                cert: testdata("server-a.pem"),
                key: testdata("server-a.key"),
                client_ca: Some(bundle.clone()),
            },
            Vec::new(),
        )
        .expect("server tls");
        let first = || client_with(Some(("client.pem", "client.key")));
        let second = || client_with(Some(("client2.pem", "client2.key")));
        let accepted = |outcome: (Result<Option<String>, TlsError>, std::io::Result<()>)| {
            outcome.0.is_ok() && outcome.1.is_ok()
        };
        assert!(accepted(handshake(&tls, first()).await));
        assert!(!accepted(handshake(&tls, second()).await));
        assert_eq!(
            tls.reload_if_changed().expect("check"),
            ReloadOutcome::Unchanged
        );

        // Half-written: the bundle in use stays.
        std::fs::write(&bundle, b"-----BEGIN CERTIFICATE-----\nMIIB").expect("write");
        assert!(tls.reload_if_changed().is_err());
        assert!(accepted(handshake(&tls, first()).await));

        // Rotated to the second CA: its clients are accepted, the first CA's refused.
        std::fs::copy(testdata("ca2.pem"), &bundle).expect("copy");
        assert_eq!(
            tls.reload_if_changed().expect("reload"),
            ReloadOutcome::Reloaded
        );
        let (principal, client) = handshake(&tls, second()).await;
        client.expect("client");
        assert!(
            principal
                .expect("server")
                .expect("principal")
                .contains("CN=app2")
        );
        assert!(!accepted(handshake(&tls, first()).await));
    }
}

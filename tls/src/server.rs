//! The server side of a listener's TLS: configuration built once, then one handshake per
//! accepted connection (run by the caller on the connection's own task, under its timeout).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::{ReloadingCertResolver, TlsError, pem, principal};

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

/// A listener's TLS: the certificate (reloadable) and the client verification.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    resolver: Arc<ReloadingCertResolver>,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
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
        let builder = match &files.client_ca {
            Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            mutual: files.client_ca.is_some(),
        })
    }

    /// The certificate resolver (for the periodic reload).
    pub fn resolver(&self) -> &Arc<ReloadingCertResolver> {
        &self.resolver
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.mutual
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

/// Verifies client certificates against the CA bundle at `path`; a client without one is
/// refused.
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = pem::root_store(path, |path, message| TlsError::ClientCa { path, message })?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsError::ClientCa {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::testdata;

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
        let ca = testdata("ca.pem");
        let roots = pem::root_store(&ca, |path, message| TlsError::TrustedCa { path, message })
            .expect("ca");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = if with_cert {
            let path = testdata("client.pem");
            let chain = pem::certificates(&path, &pem::read(&path).expect("r")).expect("c");
            let path = testdata("client.key");
            let key = pem::private_key(&path, &pem::read(&path).expect("r")).expect("k");
            builder.with_client_auth_cert(chain, key).expect("client")
        } else {
            builder.with_no_client_auth()
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
}

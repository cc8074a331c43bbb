//! TLS flags of the Kafka and HTTP listeners (docs/security.md), and the HTTP listener's TLS
//! accept path.
//!
//! A certificate flag goes with its key flag: one without the other fails at startup, as does
//! a client CA without a certificate. Certificates are re-read every
//! `--tls-reload-interval-ms` and swapped when their files change (see `kafscale_tls`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kafscale_shared::metrics as names;
use kafscale_shared::tls_reload::reload_certificates;
use kafscale_tls::{ClientTls, ServerTls, TlsFiles, TlsStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};

/// TLS of the Kafka listener.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KafkaTlsArgs {
    /// PEM certificate chain (leaf first) of the Kafka listener; with --kafka-tls-key, the
    /// listener speaks TLS only (clients use security.protocol=SSL).
    #[arg(long, env = "KAFSCALE_KAFKA_TLS_CERT")]
    pub(crate) kafka_tls_cert: Option<PathBuf>,
    /// PEM private key of --kafka-tls-cert.
    #[arg(long, env = "KAFSCALE_KAFKA_TLS_KEY")]
    pub(crate) kafka_tls_key: Option<PathBuf>,
    /// PEM bundle of the CAs that sign client certificates: when set, every Kafka client must
    /// present a certificate signed by one of them (mTLS), and its subject is its principal.
    #[arg(long, env = "KAFSCALE_KAFKA_TLS_CLIENT_CA")]
    pub(crate) kafka_tls_client_ca: Option<PathBuf>,
    /// A connection that has not finished its TLS handshake within this time is closed
    /// (milliseconds).
    #[arg(
        long,
        env = "KAFSCALE_KAFKA_TLS_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub(crate) kafka_tls_handshake_timeout_ms: u64,
}

impl KafkaTlsArgs {
    pub(crate) fn files(&self) -> anyhow::Result<Option<TlsFiles>> {
        files(
            "kafka",
            &self.kafka_tls_cert,
            &self.kafka_tls_key,
            &self.kafka_tls_client_ca,
        )
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_tls_handshake_timeout_ms.max(1))
    }
}

/// HTTPS from a gateway to the indexers (commits, DeleteRecords, the watermark feed, shard
/// figures): the indexers serve it with `--http-tls-cert`/`--http-tls-key`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct InternalTlsArgs {
    /// PEM bundle of the CA that signs the indexers' HTTP certificates: with it, this gateway
    /// calls the indexers over HTTPS and trusts only this CA. Read once at start.
    #[arg(long, env = "KAFSCALE_INTERNAL_TLS_CA")]
    internal_tls_ca: Option<PathBuf>,
    /// The name the indexers' certificates must carry (e.g. their Service's DNS name), when it
    /// is not the address they advertise (a pod IP). Default: the advertised host.
    #[arg(
        long,
        env = "KAFSCALE_INTERNAL_TLS_SERVER_NAME",
        requires = "internal_tls_ca"
    )]
    internal_tls_server_name: Option<String>,
}

impl InternalTlsArgs {
    /// The client TLS settings; `None` without `--internal-tls-ca` (plain HTTP).
    pub(crate) fn client_tls(&self) -> anyhow::Result<Option<ClientTls>> {
        self.internal_tls_ca
            .as_deref()
            .map(|ca| {
                ClientTls::load(ca, self.internal_tls_server_name.clone())
                    .context("--internal-tls-ca")
            })
            .transpose()
    }
}

/// TLS of the HTTP listener (health, metrics, admin, indexer APIs), and the reload period of
/// every TLS listener of the process.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HttpTlsArgs {
    /// PEM certificate chain (leaf first) of the HTTP listener; with --http-tls-key, it
    /// serves HTTPS only.
    #[arg(long, env = "KAFSCALE_HTTP_TLS_CERT")]
    pub(crate) http_tls_cert: Option<PathBuf>,
    /// PEM private key of --http-tls-cert.
    #[arg(long, env = "KAFSCALE_HTTP_TLS_KEY")]
    pub(crate) http_tls_key: Option<PathBuf>,
    /// PEM bundle of the CAs that sign HTTP client certificates: when set, every HTTP client
    /// (probes and scrapers included) must present one.
    #[arg(long, env = "KAFSCALE_HTTP_TLS_CLIENT_CA")]
    pub(crate) http_tls_client_ca: Option<PathBuf>,
    /// How often the certificate files of the TLS listeners are checked for changes
    /// (milliseconds); changed files are used for new connections.
    #[arg(
        long,
        env = "KAFSCALE_TLS_RELOAD_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub(crate) tls_reload_interval_ms: u64,
}

/// How long an HTTPS handshake may take.
const HTTP_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTPS handshakes in progress at once; further connections wait in the accept backlog.
const HTTP_MAX_HANDSHAKES: usize = 256;

impl HttpTlsArgs {
    /// The HTTP listener's TLS, if configured.
    pub(crate) fn load(&self) -> anyhow::Result<Option<ServerTls>> {
        let files = files(
            "http",
            &self.http_tls_cert,
            &self.http_tls_key,
            &self.http_tls_client_ca,
        )?;
        files
            .map(|f| load("http", &f, vec![b"http/1.1".to_vec()]))
            .transpose()
    }

    pub(crate) fn reload_interval(&self) -> anyhow::Result<Duration> {
        if self.tls_reload_interval_ms < 100 {
            anyhow::bail!("--tls-reload-interval-ms must be at least 100");
        }
        Ok(Duration::from_millis(self.tls_reload_interval_ms))
    }
}

/// The files of one listener from its flags (`listener`: the flag prefix).
fn files(
    listener: &str,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    client_ca: &Option<PathBuf>,
) -> anyhow::Result<Option<TlsFiles>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: client_ca.clone(),
        })),
        (None, None) if client_ca.is_some() => anyhow::bail!(
            "--{listener}-tls-client-ca needs --{listener}-tls-cert and --{listener}-tls-key"
        ),
        (None, None) => Ok(None),
        (Some(_), None) => {
            anyhow::bail!("--{listener}-tls-cert is set without --{listener}-tls-key")
        }
        (None, Some(_)) => {
            anyhow::bail!("--{listener}-tls-key is set without --{listener}-tls-cert")
        }
    }
}

/// Loads a listener's TLS files; the error names the listener and the file, never content.
pub(crate) fn load(
    listener: &str,
    files: &TlsFiles,
    alpn: Vec<Vec<u8>>,
) -> anyhow::Result<ServerTls> {
    ServerTls::load(files, alpn)
        .with_context(|| format!("loading the TLS files of the {listener} listener"))
}

/// Starts the periodic certificate check of a listener (it ends with `shutdown`).
pub(crate) fn spawn_reload(
    tls: &ServerTls,
    protocol: &'static str,
    interval: Duration,
    shutdown: &CancellationToken,
) {
    tokio::spawn(reload_certificates(
        tls.clone(),
        protocol,
        interval,
        shutdown.clone(),
    ));
}

/// An HTTPS listener for axum: TCP connections are accepted by a task of their own, each
/// handshake runs on its own task (bounded in time and in number), and established TLS
/// streams are handed to the server through a short queue. A slow or silent client never
/// stalls the accept loop.
pub(crate) struct HttpsListener {
    established: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl HttpsListener {
    pub(crate) fn start(
        listener: TcpListener,
        tls: ServerTls,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, established) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, tls, tx, shutdown));
        Ok(HttpsListener { established, local })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: ServerTls,
    established: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let failures = metrics::counter!(names::TLS_HANDSHAKE_FAILURES, "listener" => names::role(), "protocol" => "http");
    let handshakes = Arc::new(Semaphore::new(HTTP_MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = handshakes.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (tls, established, failures) = (tls.clone(), established.clone(), failures.clone());
        tokio::spawn(
            async move {
                match tokio::time::timeout(HTTP_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok((stream, _principal))) => {
                        drop(permit);
                        let _ = established.send((stream, peer)).await;
                    }
                    Ok(Err(e)) => {
                        failures.increment(1);
                        debug!(error = %e, "closing https connection: tls handshake failed");
                    }
                    Err(_) => {
                        failures.increment(1);
                        debug!("closing https connection: no tls handshake in time");
                    }
                }
            }
            .instrument(debug_span!("https_handshake", %peer)),
        );
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.established.recv().await {
            Some(connection) => connection,
            // The accept loop stopped (shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_goes_with_its_key() {
        let some = |s: &str| Some(PathBuf::from(s));
        let err = files("kafka", &some("c.pem"), &None, &None).expect_err("no key");
        assert!(err.to_string().contains("--kafka-tls-key"), "{err}");
        let err = files("http", &None, &some("k.pem"), &None).expect_err("no cert");
        assert!(err.to_string().contains("--http-tls-cert"), "{err}");
        let err = files("kafka", &None, &None, &some("ca.pem")).expect_err("ca alone");
        assert!(err.to_string().contains("--kafka-tls-client-ca"), "{err}");
        assert_eq!(
            files("kafka", &None, &None, &None).expect("plaintext"),
            None
        );
        let both = files("kafka", &some("c.pem"), &some("k.pem"), &None).expect("tls");
        assert_eq!(both.map(|f| f.key), some("k.pem"));
    }
}

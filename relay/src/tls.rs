//! TLS on the relay's gRPC port, and mutual TLS for probes.
//!
//! TLS is terminated here rather than by tonic, whose settings are fixed at
//! start: the certificate, key and client CA files are read again every few
//! seconds and, when their contents changed and still make a valid
//! configuration, new connections get the new one (open connections keep
//! theirs). A broken replacement keeps the current configuration and is
//! reported once. Each handshake runs in its own task under
//! [`HANDSHAKE_TIMEOUT`], so a slow or hostile client holds up nobody else.
//!
//! A client that speaks plain-text gRPC to the TLS port (an `http://`
//! address) is answered, in plain text, with an `Unavailable` status saying
//! to use `https://`, rather than with a closed connection that tells it
//! nothing.
//!
//! With a client CA, the handshake asks for a client certificate and checks
//! any that is presented against it, but lets a connection without one
//! through: the explorer only reads, while `Ingest` refuses streams from
//! connections without a verified certificate (see the server module).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use skymap_proto::tls::{self as pem, HANDSHAKE_TIMEOUT};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How often the files are checked for changes when nothing says otherwise.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// After a failed `accept` (out of file descriptors, say), a pause so the
/// loop does not spin on the same error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Handshakes finished but not yet taken by the gRPC server.
const READY_CONNECTIONS: usize = 64;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plain-text client hears from the TLS port.
pub const PLAIN_TEXT_REFUSED: &str =
    "this relay serves TLS: connect to https://HOST:PORT and trust its CA with --tls-ca FILE";

/// `--tls-cert`, `--tls-key`, `--tls-client-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, the relay's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, RSA or EC) of that certificate.
    pub key: PathBuf,
    /// PEM CA certificate(s) that sign the probes' client certificates:
    /// mutual TLS for `Ingest`.
    pub client_ca: Option<PathBuf>,
    /// How often the files are checked for changes.
    pub reload_every: Duration,
}

impl TlsConfig {
    pub fn new(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert,
            key,
            client_ca: None,
            reload_every: RELOAD_EVERY,
        }
    }
}

/// Why the TLS files cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] pem::TlsError),
    #[error("{path}: cannot verify client certificates with it: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS settings: {0}")]
    Settings(String),
}

/// What the reloading has done, for logs, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsStatus {
    /// Changed files taken into use since start.
    pub reloads: u64,
    /// Changed files refused (each distinct problem counted once).
    pub rejected: u64,
    /// What is wrong with the files now, if anything.
    pub problem: Option<String>,
}

/// The files' contents at one look.
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn read(config: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            cert: pem::read_file(&config.cert)?,
            key: pem::read_file(&config.key)?,
            client_ca: config
                .client_ca
                .as_deref()
                .map(pem::read_file)
                .transpose()?,
        })
    }

    fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        (&self.cert, &self.key, &self.client_ca).hash(&mut hasher);
        hasher.finish()
    }

    /// rustls's server settings from these files: the certificate and its
    /// key (checked to match), the client verifier, and HTTP/2 by ALPN,
    /// which gRPC clients insist on.
    fn server_config(&self, config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
        let certified = pem::certified_key(
            &config.cert,
            pem::parse_certs(&config.cert, &self.cert)?,
            &config.key,
            pem::parse_key(&config.key, &self.key)?,
        )?;
        let provider = pem::provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Settings(e.to_string()))?;
        let builder = match (&config.client_ca, &self.client_ca) {
            (Some(path), Some(ca)) => {
                let roots = pem::root_store(path, ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| TlsError::ClientCa {
                            path: path.clone(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(server))
    }
}

/// One look at the files.
enum Polled {
    Unchanged,
    Reloaded(Arc<ServerConfig>),
    /// A new problem with the files; the current settings stay.
    Rejected(String),
}

/// What the reloader remembers between looks.
struct Reloader {
    config: TlsConfig,
    /// Of the files in use.
    fingerprint: u64,
    /// The last problem reported, so files that stay broken are reported once.
    problem: Option<String>,
}

impl Reloader {
    fn poll(&mut self) -> Polled {
        let files = match Files::read(&self.config) {
            Ok(files) => files,
            Err(e) => return self.reject(e),
        };
        let fingerprint = files.fingerprint();
        if fingerprint == self.fingerprint {
            // Back to what is served (a rotation undone): nothing to report.
            self.problem = None;
            return Polled::Unchanged;
        }
        match files.server_config(&self.config) {
            Ok(server) => {
                self.fingerprint = fingerprint;
                self.problem = None;
                Polled::Reloaded(server)
            }
            Err(e) => self.reject(e),
        }
    }

    fn reject(&mut self, error: TlsError) -> Polled {
        let problem = error.to_string();
        if self.problem.as_ref() == Some(&problem) {
            return Polled::Unchanged;
        }
        self.problem = Some(problem.clone());
        Polled::Rejected(problem)
    }
}

/// TLS being served: the current settings, kept fresh by a task that
/// watches the files until the relay stops.
#[derive(Debug)]
pub struct ServerTls {
    current: watch::Receiver<Arc<ServerConfig>>,
    status: watch::Receiver<TlsStatus>,
    client_cert_required: bool,
}

impl ServerTls {
    /// Reads and checks the files (an error here stops the start) and starts
    /// watching them; the watching ends when `stop` turns true.
    pub fn start(config: &TlsConfig, stop: watch::Receiver<bool>) -> Result<Self, TlsError> {
        let files = Files::read(config)?;
        let server = files.server_config(config)?;
        let reloader = Reloader {
            config: config.clone(),
            fingerprint: files.fingerprint(),
            problem: None,
        };
        let (current_tx, current) = watch::channel(server);
        let (status_tx, status) = watch::channel(TlsStatus::default());
        tokio::spawn(watch_files(
            reloader,
            config.reload_every,
            current_tx,
            status_tx,
            stop,
        ));
        Ok(Self {
            current,
            status,
            client_cert_required: config.client_ca.is_some(),
        })
    }

    /// Mutual TLS: `Ingest` needs a verified client certificate.
    pub fn client_cert_required(&self) -> bool {
        self.client_cert_required
    }

    pub fn status(&self) -> watch::Receiver<TlsStatus> {
        self.status.clone()
    }

    /// The TLS connections made on `listener`, for tonic's
    /// `serve_with_incoming`; accepting ends when `stop` turns true.
    pub fn incoming(
        &self,
        listener: TcpListener,
        stop: watch::Receiver<bool>,
    ) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
        let (tx, rx) = mpsc::channel(READY_CONNECTIONS);
        tokio::spawn(accept(listener, self.current.clone(), tx, stop));
        ReceiverStream::new(rx)
    }
}

async fn watch_files(
    mut reloader: Reloader,
    every: Duration,
    current: watch::Sender<Arc<ServerConfig>>,
    status: watch::Sender<TlsStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and the files were just read.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stopped(&mut stop) => return,
        }
        // File reads and key parsing stay off the async workers.
        let polled = tokio::task::spawn_blocking(move || {
            let polled = reloader.poll();
            (reloader, polled)
        })
        .await;
        let Ok((back, polled)) = polled else { return };
        reloader = back;
        match polled {
            Polled::Unchanged => {}
            Polled::Reloaded(server) => {
                tracing::info!(
                    "TLS certificate reloaded from {}; new connections use it",
                    reloader.config.cert.display()
                );
                current.send_replace(server);
                status.send_modify(|s| {
                    s.reloads += 1;
                    s.problem = None;
                });
            }
            Polled::Rejected(problem) => {
                tracing::warn!("TLS files not reloaded, the current certificate stays: {problem}");
                status.send_modify(|s| {
                    s.rejected += 1;
                    s.problem = Some(problem);
                });
            }
        }
    }
}

/// Returns when the relay stops (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns must not live across the caller's awaits.
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}

async fn accept(
    listener: TcpListener,
    current: watch::Receiver<Arc<ServerConfig>>,
    ready: mpsc::Sender<io::Result<TlsStream<TcpStream>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
            () = ready.closed() => return,
        };
        // As tonic does for the connections it accepts itself.
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(current.borrow().clone());
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(acceptor, tcp)).await {
                Ok(Ok(Handshake::Tls(stream))) => {
                    let _ = ready.send(Ok(*stream)).await;
                }
                Ok(Ok(Handshake::PlainText(tcp))) => refuse_plain_text(tcp, peer).await,
                Ok(Err(e)) => handshake_failed(peer, &e),
                Err(_) => tracing::debug!(
                    "TLS handshake with {peer} unfinished after {HANDSHAKE_TIMEOUT:?}; closed"
                ),
            }
        });
    }
}

enum Handshake {
    Tls(Box<TlsStream<TcpStream>>),
    PlainText(TcpStream),
}

async fn handshake(acceptor: TlsAcceptor, tcp: TcpStream) -> io::Result<Handshake> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE_RECORD {
        return Ok(Handshake::PlainText(tcp));
    }
    let stream = acceptor.accept(tcp).await?;
    Ok(Handshake::Tls(Box::new(stream)))
}

/// Answers every request of a plain-text HTTP/2 connection with
/// [`PLAIN_TEXT_REFUSED`] as an `Unavailable` gRPC status, for a while.
async fn refuse_plain_text(tcp: TcpStream, peer: SocketAddr) {
    tracing::debug!("plain-text connection from {peer} on the TLS port: told to use TLS");
    let service = hyper::service::service_fn(|_request| async {
        Ok::<_, std::convert::Infallible>(
            tonic::Status::unavailable(PLAIN_TEXT_REFUSED).into_http::<tonic::body::Body>(),
        )
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tcp), service);
    // Not HTTP/2 at all, or still open: either way it is done with.
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection).await;
}

/// A refused client certificate is worth an operator's attention; other
/// failures (port scans, plain-text clients, health checks) are noise.
fn handshake_failed(peer: SocketAddr, error: &io::Error) {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(_)) => {
            tracing::warn!("TLS: refused the client certificate of {peer}: {error}");
        }
        _ => tracing::debug!("TLS handshake with {peer} failed: {error}"),
    }
}

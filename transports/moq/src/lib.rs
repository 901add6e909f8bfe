//! junction-moq: Media over QUIC (draft-ietf-moq-transport-18) on quinn and moq-transport.
//!
//! A QUIC listener takes raw QUIC (`moqt-18`) and WebTransport sessions. A session's connect
//! path names its room and its client JWT (`?jwt=` or a SETUP AUTHORIZATION TOKEN) its identity
//! and grants; the session joins the room as a peer. Subscribers see the room as MoQ broadcasts —
//! the namespace `(room)` with a `.catalog`, and each peer as `(room, identity)` with CMAF
//! tracks, exactly as `moq-pub` writes them — and publishers' announced namespaces under the room
//! enter it: their CMAF tracks as the session's engine tracks, anything else relayed to other
//! MoQ subscribers. See docs/protocol-moq.md.

mod admission;
mod codecs;
mod config;
mod congestion;
mod connection;
mod egress;
mod error;
pub mod fuzz;
mod hub;
mod ingest;
mod naming;
mod out_track;
mod relay;
mod session;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use junction_auth::Authority;
use junction_engine::Engine;
use junction_engine::gate::ConnectionGate;
use junction_transport_api::{Service, Started, TransportContext};
use moq_transport::session::transport::quinn::quinn;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::MoqConfig;
pub use error::Termination;
pub use tls::{ServerIdentity, TlsError};

/// How long a silent connection lives; clients keep theirs alive well within it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("config key `{key}`: {message}")]
    Config { key: &'static str, message: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot write the development CA to {path}: {source}")]
    WriteCa { path: PathBuf, source: std::io::Error },
    #[error("cannot listen for QUIC on {addr} (moq.listen): {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The running listener, as the binary reports it.
#[derive(Debug, Clone)]
pub struct MoqServer {
    pub addr: SocketAddr,
    /// `https://<addr>` (WebTransport; raw QUIC clients use `moqt://<addr>`).
    pub url: String,
    /// SHA-256 of the certificate, hex: WebTransport `serverCertificateHashes`.
    pub fingerprint: String,
    /// Where the generated development CA was written, when the certificate was generated.
    pub dev_ca_file: Option<PathBuf>,
}

/// Starts Media over QUIC (unless `moq.enabled` is off): binds the QUIC listener and serves
/// sessions until the server shuts down; the banner lines (with the development CA and the
/// certificate hash when the certificate was generated) go back to the server.
pub async fn start(ctx: &TransportContext, config: &MoqConfig) -> Result<Started, StartError> {
    if !config.enabled {
        return Ok(Started::default());
    }
    let moq = listen(config, ctx.engine.clone(), ctx.authority.clone(), ctx.shutdown.clone())?;
    let mut services = vec![Service {
        name: "moq",
        url: moq.url.clone(),
        about: "Media over QUIC draft-18: WebTransport, or raw QUIC (moqt://, ALPN moqt-18)",
    }];
    if let Some(ca) = &moq.dev_ca_file {
        services.push(Service {
            name: "moq-ca",
            url: ca.display().to_string(),
            about: "generated development CA (PEM) for MoQ clients to trust",
        });
        services.push(Service {
            name: "moq-hash",
            url: format!("sha256:{}", moq.fingerprint),
            about: "MoQ certificate hash for WebTransport serverCertificateHashes",
        });
    }
    Ok(Started { services, ..Started::default() })
}

/// Binds the QUIC listener and serves sessions until `shutdown` ([`start`] without the server
/// around it).
pub fn listen(
    config: &MoqConfig,
    engine: Engine,
    authority: Authority,
    shutdown: CancellationToken,
) -> Result<MoqServer, StartError> {
    config.validate().map_err(|(key, message)| StartError::Config { key, message })?;
    let identity = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => ServerIdentity::from_files(cert, key)?,
        _ => ServerIdentity::generate(&dev_hosts(config.listen))?,
    };
    let dev_ca_file = match &identity.dev_ca_pem {
        Some(pem) => {
            let path = config
                .dev_ca_file
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join(format!("junction-moq-ca-{}.pem", std::process::id())));
            std::fs::write(&path, pem).map_err(|source| StartError::WriteCa { path: path.clone(), source })?;
            Some(path)
        }
        None => None,
    };

    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(identity.config)
        .map_err(|err| TlsError::Config(rustls::Error::General(err.to_string())))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    transport.keep_alive_interval(Some(Duration::from_secs(4)));
    transport.max_concurrent_uni_streams(1024u32.into());
    transport.max_concurrent_bidi_streams(256u32.into());
    server_config.transport_config(Arc::new(transport));
    let endpoint = quinn::Endpoint::server(server_config, config.listen)
        .map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let addr = endpoint.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;

    let context = Arc::new(connection::Context {
        engine,
        authority,
        hub: hub::Hub::default(),
        shutdown: shutdown.clone(),
        handshake_timeout: config.handshake_timeout(),
        limits: Arc::new(config.clone()),
    });
    let gate = ConnectionGate::new("moq", config.max_connections, config.max_connections_per_ip);
    tokio::spawn(accept_loop(endpoint, gate, context, shutdown));
    info!(%addr, fingerprint = %identity.fingerprint, "MoQ listening (WebTransport and raw QUIC moqt-18)");
    Ok(MoqServer { addr, url: format!("https://{addr}"), fingerprint: identity.fingerprint, dev_ca_file })
}

/// Names the development certificate is valid for.
fn dev_hosts(listen: SocketAddr) -> Vec<String> {
    let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        hosts.push(ip.to_string());
    }
    hosts
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    gate: ConnectionGate,
    context: Arc<connection::Context>,
    shutdown: CancellationToken,
) {
    let mut refused = 0u64;
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => match gate.admit(incoming.remote_address().ip()) {
                    Ok(permit) => {
                        tokio::spawn(connection::serve(incoming, context.clone(), permit));
                    }
                    Err(refusal) => {
                        // QUIC's own answer: CONNECTION_REFUSED, before any TLS work. Logged at
                        // the first refusal and then at powers of two.
                        refused += 1;
                        if refused.is_power_of_two() {
                            warn!(remote = %incoming.remote_address(), refused, "QUIC connection refused: {refusal}");
                        }
                        incoming.refuse();
                    }
                },
                None => {
                    warn!("the QUIC endpoint stopped accepting");
                    return;
                }
            },
            _ = shutdown.cancelled() => break,
        }
    }
    // Sessions close themselves (with NO_ERROR) on shutdown; give them a moment first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    endpoint.close(0u32.into(), b"server shutting down");
}

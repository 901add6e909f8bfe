//! junction-turn: the built-in TURN server (`[turn]`), so WebRTC, WHIP and WHEP clients connect
//! from networks that let nothing through but a TCP or TLS port. It relays only to Junction's
//! own media plane ([`relay`]), for holders of ephemeral credentials minted from their tokens
//! ([`credentials`]); the WebRTC transport hands those credentials to clients with its other
//! ICE servers ([`junction_webrtc::IceServerSource`]): WHIP/WHEP `Link` headers, the WebSocket
//! `welcome`, the tokens endpoint.

pub mod credentials;
pub mod relay;
mod server;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use junction_transport_api::pem::{self, PemError};
use junction_transport_api::{Service, Started, TransportContext};
use junction_webrtc::{IceServer, IceServerSource, WebrtcTransport};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use credentials::{Credential, TurnSecret};
use relay::{Limits, MediaPeer, Relay};
use server::{RelayPorts, Shared};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// Whether the TURN server runs (it needs `[webrtc]`: it relays only to that media plane).
    pub enabled: bool,
    /// The UDP port, and the TCP port on the same address and port number (`turn:` URLs; port 0:
    /// a free port each).
    pub udp_listen: SocketAddr,
    /// TURN over TLS (`turns:` URLs), with `tls_cert` and `tls_key` (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// The host put in the URLs clients are given (a name on the TLS certificate for
    /// `turns:`); by default the listen address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_host: Option<String>,
    /// The address relayed candidates carry when the relay sockets sit behind NAT; by default
    /// the listen address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_public_ip: Option<IpAddr>,
    /// The UDP ports allocations relay on (one per allocation).
    pub relay_port_min: u16,
    pub relay_port_max: u16,
    pub realm: String,
    /// The secret credentials are derived from; every node of a cluster needs the same. Without
    /// one, a random secret lives as long as the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How long a minted credential stays valid.
    pub credential_ttl_s: u64,
    pub max_allocations: usize,
    /// Allocations one credential (one client) may hold at once: a browser allocates one per
    /// URL and network interface for each of its peer connections.
    pub max_allocations_per_credential: usize,
    /// Bandwidth per allocation, each way, in kilobits per second (0: unlimited).
    pub max_kbps: u64,
    /// TCP and TLS connections open at once.
    pub max_connections: usize,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            udp_listen: ([127, 0, 0, 1], 3478).into(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            public_host: None,
            relay_public_ip: None,
            relay_port_min: 49152,
            relay_port_max: 65535,
            realm: "junction".into(),
            secret: None,
            credential_ttl_s: 12 * 3600,
            max_allocations: 1000,
            max_allocations_per_credential: 16,
            max_kbps: 20_000,
            max_connections: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("config key `turn.{key}`: {message}")]
    Config { key: &'static str, message: String },
    #[error("cannot listen on {addr} ({transport}): {source}")]
    Bind { addr: SocketAddr, transport: &'static str, source: std::io::Error },
    #[error("turn.tls_cert / turn.tls_key: {0}")]
    Pem(#[from] PemError),
    #[error("turn.tls_cert / turn.tls_key: {0}")]
    Tls(#[from] rustls::Error),
}

impl TurnConfig {
    pub fn validate(&self) -> Result<(), TurnError> {
        let config = |key, message: &str| Err(TurnError::Config { key, message: message.into() });
        if self.relay_port_min == 0 || self.relay_port_min > self.relay_port_max {
            return config("relay_port_min", "must be 1..=relay_port_max");
        }
        if self.tls_listen.is_some() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return config("tls_listen", "needs tls_cert and tls_key");
        }
        if self.udp_listen.ip().is_unspecified() && self.public_host.is_none() {
            return config("public_host", "required when udp_listen is a wildcard address");
        }
        if self.credential_ttl_s == 0 || self.max_allocations == 0 || self.max_allocations_per_credential == 0 {
            return config(
                "credential_ttl_s",
                "credential_ttl_s, max_allocations and max_allocations_per_credential must be at least 1",
            );
        }
        if self.realm.is_empty() || self.realm.len() > 127 {
            return config("realm", "must be 1 to 127 characters");
        }
        Ok(())
    }
}

/// Mints credentials for clients and lists the server's URLs with them.
struct Minter {
    secret: TurnSecret,
    ttl: Duration,
    urls: Vec<String>,
}

impl IceServerSource for Minter {
    fn ice_servers(&self, identity: &str) -> Vec<IceServer> {
        let credential = self.secret.mint(identity, self.ttl, SystemTime::now());
        vec![IceServer {
            urls: self.urls.clone(),
            username: Some(credential.username),
            credential: Some(credential.password),
        }]
    }
}

fn url_host(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_owned(),
    }
}

/// A running TURN server's listeners.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: Option<SocketAddr>,
}

/// Binds the listeners and runs the TURN server, relaying only to `media`, until `shutdown`.
pub async fn serve(
    config: &TurnConfig,
    media: Vec<MediaPeer>,
    secret: TurnSecret,
    shutdown: CancellationToken,
) -> Result<Listening, TurnError> {
    config.validate()?;
    let bind = |addr, transport| move |source| TurnError::Bind { addr, transport, source };
    let udp = UdpSocket::bind(config.udp_listen).await.map_err(bind(config.udp_listen, "udp"))?;
    let udp_addr = udp.local_addr().map_err(bind(config.udp_listen, "udp"))?;
    // The configured address, not the UDP socket's: with port 0 its number may be taken over TCP.
    let tcp = TcpListener::bind(config.udp_listen).await.map_err(bind(config.udp_listen, "tcp"))?;
    let tcp_addr = tcp.local_addr().map_err(bind(config.udp_listen, "tcp"))?;
    let tls = match (config.tls_listen, &config.tls_cert, &config.tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let tls_config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(pem::certificates(cert)?, pem::private_key(key)?)?;
            let listener = TcpListener::bind(addr).await.map_err(bind(addr, "tls"))?;
            let bound = listener.local_addr().map_err(bind(addr, "tls"))?;
            Some((listener, TlsAcceptor::from(Arc::new(tls_config)), bound))
        }
        _ => None,
    };
    let limits = Limits {
        max_allocations: config.max_allocations,
        max_allocations_per_credential: config.max_allocations_per_credential,
        bytes_per_second: config.max_kbps * 1000 / 8,
    };
    info!(udp = %udp_addr, media = ?media, "TURN server listening");
    let relay = Relay::new(config.realm.clone(), secret, media, limits);
    let ports = RelayPorts {
        bind_ip: udp_addr.ip(),
        advertised_ip: config.relay_public_ip.unwrap_or(udp_addr.ip()),
        min: config.relay_port_min,
        max: config.relay_port_max,
    };
    let shared = Shared::new(relay, udp, ports, shutdown);
    let open = Arc::new(Semaphore::new(config.max_connections));
    tokio::spawn(server::serve_udp(shared.clone()));
    tokio::spawn(server::sweep(shared.clone()));
    tokio::spawn(server::serve_streams(shared.clone(), tcp, None, open.clone()));
    let tls_addr = tls.map(|(listener, acceptor, bound)| {
        tokio::spawn(server::serve_streams(shared, listener, Some(acceptor), open));
        bound
    });
    Ok(Listening { udp: udp_addr, tcp: tcp_addr, tls: tls_addr })
}

/// Starts the TURN server (unless `turn.enabled` is off) beside the WebRTC media plane, and
/// tells that plane to hand the TURN URLs and fresh credentials to its clients.
pub async fn start(ctx: &TransportContext, config: &TurnConfig) -> Result<Started, TurnError> {
    if !config.enabled {
        return Ok(Started::default());
    }
    let Some(webrtc) = ctx.provided::<WebrtcTransport>() else {
        return Err(TurnError::Config {
            key: "enabled",
            message: "the TURN server needs the WebRTC media plane ([webrtc])".into(),
        });
    };
    // The media plane as clients know it (its candidates), delivered to where it is bound on
    // this host: no hairpin through a NAT in front of it.
    let bound = webrtc.local_addr();
    let media = webrtc
        .advertised_addrs()
        .iter()
        .map(|&advertised| {
            let local = match bound.ip() {
                ip if !ip.is_unspecified() => bound,
                IpAddr::V4(_) if advertised.is_ipv4() => SocketAddr::from(([127, 0, 0, 1], bound.port())),
                _ => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, bound.port())),
            };
            MediaPeer { advertised, local }
        })
        .collect();
    let secret = config.secret.as_deref().map_or_else(TurnSecret::random, |s| TurnSecret::new(s.as_bytes()));
    let listening = serve(config, media, secret.clone(), ctx.shutdown.clone()).await?;

    let host = url_host(config.public_host.as_deref().unwrap_or(&listening.udp.ip().to_string()));
    let (udp, tcp) = (listening.udp.port(), listening.tcp.port());
    let mut urls = vec![format!("turn:{host}:{udp}?transport=udp"), format!("turn:{host}:{tcp}?transport=tcp")];
    let mut services = vec![
        Service {
            name: "turn",
            url: format!("turn:{host}:{udp}"),
            about: "TURN relay to the media plane over UDP (credentials come with tokens)",
        },
        Service { name: "turn-tcp", url: format!("turn:{host}:{tcp}?transport=tcp"), about: "TURN over TCP" },
    ];
    if let Some(tls) = listening.tls {
        urls.push(format!("turns:{host}:{}?transport=tcp", tls.port()));
        services.push(Service { name: "turns", url: format!("turns:{host}:{}", tls.port()), about: "TURN over TLS" });
    }
    webrtc.set_ice_server_source(Arc::new(Minter { secret, ttl: Duration::from_secs(config.credential_ttl_s), urls }));
    Ok(Started { services, ..Started::default() })
}

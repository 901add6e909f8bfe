//! junction-sip: phones in rooms. SIP over UDP and TCP on rsip's parser, with our own
//! transaction ([`transaction`]) and dialog ([`ua`]) layers; dial-in admission by trunks and
//! dispatch rules ([`admission`]), digest authentication ([`digest`]), SDP offer/answer
//! ([`sdp`]); per-call tasks ([`call`]) that carry RTP audio between the phone (G.711 or Opus)
//! and the room (the phone's audio up in its own codec, the engine mixer's minus-one down),
//! collect PINs over DTMF ([`media`]); dial-out and the REST API ([`api`], state in [`calls`]).
//!
//! [`start`] (the start shape every transport has) binds the sockets and spawns the stack's
//! driver ([`stack`]); what it returns carries the banner line and the routes the server mounts
//! under `/v1`.

pub mod admission;
mod api;
pub mod call;
pub mod calls;
pub mod config;
pub mod digest;
pub mod media;
pub mod message;
pub mod messages;
pub mod sdp;
pub mod stack;
mod stored;
pub mod transaction;
pub mod ua;

use std::net::SocketAddr;
use std::sync::Arc;

use junction_transport_api::{Service, Started, TransportContext};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::info;

pub use config::SipConfig;

use crate::admission::{Directory, DirectoryError};
use crate::calls::CallBook;
use crate::media::ports::PortRange;
use crate::transaction::TimerConfig;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for SIP on {addr} ({transport}): {source}")]
    Bind { addr: SocketAddr, transport: &'static str, source: std::io::Error },
    #[error("sip configuration: {0}")]
    Config(#[from] DirectoryError),
    #[error("sip.direct_dial_hosts: {0}")]
    DirectDial(String),
    #[error("loading SIP trunks and dispatch rules from the state store: {0}")]
    Store(junction_store::StoreError),
    #[error("sip.tls_*: {0}")]
    Tls(#[from] stack::tls::TlsError),
}

/// Binds UDP and TCP on the same port (a random one when the configured port is 0).
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), StartError> {
    let udp_err = |source| StartError::Bind { addr: listen, transport: "udp", source };
    let tcp_err = |source| StartError::Bind { addr: listen, transport: "tcp", source };
    if listen.port() != 0 {
        let udp = UdpSocket::bind(listen).await.map_err(udp_err)?;
        let tcp = TcpListener::bind(listen).await.map_err(tcp_err)?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(listen).await.map_err(udp_err)?;
        let addr = udp.local_addr().map_err(udp_err)?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(err) => last = Some(err),
        }
    }
    Err(tcp_err(last.unwrap_or_else(|| std::io::Error::other("no free port"))))
}

/// Starts SIP (unless `sip.enabled` is off): binds the sockets, spawns the stack and the TCP
/// acceptor, and returns the banner line and the `/v1` routes (trunks, dispatch rules, calls).
pub async fn start(ctx: &TransportContext, config: &SipConfig) -> Result<Started, StartError> {
    if !config.enabled {
        return Ok(Started::default());
    }
    let (engine, mixer, shutdown, config) =
        (ctx.engine.clone(), ctx.mixer.clone(), ctx.shutdown.clone(), config.clone());
    let directory = Directory::from_config(&config.trunks, &config.dispatch_rules)?;
    let config_ids = stored::ConfigIds::of(&directory);
    stored::load(&ctx.store, &directory).await.map_err(StartError::Store)?;
    stored::follow(ctx.store.clone(), directory.clone(), config_ids, shutdown.clone());
    let direct_dial = config.direct_dial().map_err(StartError::DirectDial)?;
    let (udp, tcp) = bind(config.listen).await?;
    let udp_addr =
        udp.local_addr().map_err(|source| StartError::Bind { addr: config.listen, transport: "udp", source })?;
    let tcp_addr =
        tcp.local_addr().map_err(|source| StartError::Bind { addr: config.listen, transport: "tcp", source })?;
    let advertised = SocketAddr::new(config.advertised_ip(), udp_addr.port());
    let tls_connector = Some(stack::tls::connector(config.tls_ca.as_deref())?);
    let tls_listener = match (config.tls_listen, &config.tls_cert, &config.tls_key) {
        (Some(listen), Some(cert), Some(key)) => {
            let acceptor = stack::tls::acceptor(cert, key)?;
            let listener = TcpListener::bind(listen).await.map_err(|source| StartError::Bind {
                addr: listen,
                transport: "tls",
                source,
            })?;
            let addr =
                listener.local_addr().map_err(|source| StartError::Bind { addr: listen, transport: "tls", source })?;
            Some((listener, acceptor, SocketAddr::new(config.advertised_ip(), addr.port())))
        }
        _ => None,
    };
    let tls_addr = tls_listener.as_ref().map(|(_, _, addr)| *addr);
    let locals = ua::Locals { tls: tls_addr, ..ua::Locals::plain(advertised) };
    let ports = PortRange::new(config.listen.ip(), config.advertised_ip(), config.rtp_port_min, config.rtp_port_max);
    let book = CallBook::default();
    let registrations = stack::RegistrationBook::default();
    let (commands_tx, commands) = mpsc::channel(256);
    let (tcp_tx, tcp_rx) = mpsc::channel(1024);

    let tcp_gate = stack::tcp::TcpGate::new(stack::tcp::TcpLimits {
        total: config.max_tcp_connections,
        per_source: config.max_tcp_connections_per_source,
        idle: std::time::Duration::from_secs(config.tcp_idle_timeout_s),
        max_message: config.max_message_bytes,
    });
    let stack = stack::Stack::new(
        stack::Parts {
            timers: TimerConfig::default(),
            udp: Arc::new(udp),
            tcp_gate: tcp_gate.clone(),
            tcp_events: tcp_tx.clone(),
            tls_connector,
            engine: engine.clone(),
            mixer,
            directory: directory.clone(),
            book: book.clone(),
            ports,
            config: config.clone(),
            commands_tx: commands_tx.clone(),
            advertised,
            locals,
            registrations: registrations.clone(),
        },
        shutdown.clone(),
    );
    if let Some((listener, acceptor, addr)) = tls_listener {
        info!(tls = %addr, "SIP over TLS listening");
        tokio::spawn(stack::tcp::accept(listener, Some(acceptor), tcp_gate.clone(), tcp_tx.clone(), shutdown.clone()));
    }
    tokio::spawn(stack::tcp::accept(tcp, None, tcp_gate, tcp_tx, shutdown.clone()));
    tokio::spawn(stack.run(tcp_rx, commands, shutdown));
    info!(udp = %udp_addr, tcp = %tcp_addr, rtp = %format!("{}-{}", config.rtp_port_min, config.rtp_port_max), "SIP listening");

    let api = api::routes(api::ApiState {
        directory,
        direct_dial,
        book,
        registrations,
        commands: commands_tx,
        engine,
        store: ctx.store.clone(),
    });
    let mut services = vec![Service {
        name: "sip",
        url: api::sip_uri(advertised),
        about: "SIP over UDP and TCP: dial-in and dial-out",
    }];
    if let Some(addr) = tls_addr {
        services.push(Service {
            name: "sips",
            url: format!("{};transport=tls", api::sip_uri(addr)),
            about: "SIP over TLS (SRTP media as each trunk's media_encryption says)",
        });
    }
    Ok(Started { services, api, ..Started::default() })
}

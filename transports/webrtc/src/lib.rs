//! junction-webrtc: the WebRTC media plane, on str0m (sans-I/O, driven by tokio here).
//!
//! One UDP socket serves every session: a single driver task reads it, drops what is malformed
//! ([`validate`]) and routes each datagram by ICE ufrag and STUN integrity, then by remote
//! address ([`udp_mux`]); clients without UDP connect over ICE-TCP ([`ice_tcp`]), a TCP
//! connection bound to its session by the same check; each session is a task that owns its
//! str0m `Rtc` and its engine [`Endpoint`](junction_engine::Endpoint), and bridges the two:
//! what the peer sends is published as tracks, what the peer receives comes from its
//! subscriptions, keyframe requests and bandwidth estimates flow both ways. The server is
//! ICE-lite; DTLS-SRTP, RTX/NACK, TWCC and bandwidth estimation come from str0m.
//!
//! Signalling surfaces (WHIP/WHEP, the browser WebSocket) use it in three steps:
//!
//! ```no_run
//! # async fn demo(transport: junction_webrtc::WebrtcTransport, engine: junction_engine::Engine,
//! #   join: junction_engine::JoinRequest, offer_sdp: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use junction_webrtc::{EgressPolicy, SessionSpec};
//! // 1. Negotiate: parse the offer, answer it (nothing is joined or registered yet).
//! let negotiated = transport.negotiate(offer_sdp, None)?;
//! // 2. Join the engine, telling it the codecs this peer can receive.
//! let joined = engine.join(junction_engine::JoinRequest { accept_codecs: negotiated.accept_codecs(), ..join })?;
//! // 3. Start the session task; it runs by itself until the peer leaves, times out or is kicked.
//! let answer = negotiated.answer_sdp().to_owned();
//! let handle = negotiated.start(joined.endpoint, SessionSpec::new("whep", false, EgressPolicy::viewer(None)));
//! # let _ = (answer, handle); Ok(()) }
//! ```

mod codec;
pub mod config;
mod driver;
pub mod error;
mod fanout_packets;
mod ice_tcp;
mod negotiate;
mod sdp;
mod send_batch;
mod session;
mod udp_buffer;
mod udp_mux;
mod validate;

#[cfg(test)]
mod hostile_tests;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

pub use config::{IceServer, WebrtcConfig};
pub use error::{SessionError, StartError};
pub use negotiate::Negotiated;
pub use sdp::{MediaLine, candidate_lines};
pub use session::signals::{OfferedTrack, SessionSignal, SignalReceiver, SignalSender, TrackLabel, signal_channel};
pub use session::{EgressPolicy, IceCredentials, PeerReply, PeerRequest, SessionEvent, SessionHandle, SessionSpec};

use junction_transport_api::{Service, Started, TransportContext};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::driver::MuxHandle;
use crate::fanout_packets::FanoutPackets;

/// The running media plane. Cheap to clone.
#[derive(Clone)]
pub struct WebrtcTransport {
    inner: Arc<Inner>,
}

struct Inner {
    mux: MuxHandle,
    local: SocketAddr,
    config: WebrtcConfig,
    shutdown: CancellationToken,
    /// ICE servers minted per client (the built-in TURN server's credentials), set once.
    minted: OnceLock<Arc<dyn IceServerSource>>,
    /// Video frames packetised once for all their subscribers.
    packets: FanoutPackets,
}

/// ICE servers handed to one client beside the configured ones: the built-in TURN server
/// implements it with credentials minted for the client's identity.
pub trait IceServerSource: Send + Sync {
    fn ice_servers(&self, identity: &str) -> Vec<IceServer>;
}

/// Starts the media plane (unless `webrtc.enabled` is off): binds the shared UDP socket and
/// starts its driver task until the server shuts down. The running plane is offered to the
/// transports started after this one ([`Started::provides`]): WHIP/WHEP and the browser socket
/// find it with `ctx.provided::<WebrtcTransport>()`.
pub async fn start(ctx: &TransportContext, config: &WebrtcConfig) -> Result<Started, StartError> {
    if !config.enabled {
        return Ok(Started::default());
    }
    let transport = listen(config, ctx.shutdown.clone()).await?;
    let mut services = vec![Service {
        name: "webrtc",
        url: format!("udp://{}", transport.advertised_addrs()[0]),
        about: "WebRTC media (ICE-lite, one UDP port for every session)",
    }];
    if let Some(tcp) = transport.advertised_tcp_addrs().first() {
        services.push(Service {
            name: "webrtc-tcp",
            url: format!("tcp://{tcp}"),
            about: "WebRTC media over ICE-TCP (RFC 6544), for clients without UDP",
        });
    }
    let mut started = Started { services, ..Started::default() };
    started.provides.insert(transport);
    Ok(started)
}

/// Binds the shared UDP socket and starts its driver task ([`start`] without the server around
/// it). Everything stops when `shutdown` is cancelled.
pub async fn listen(config: &WebrtcConfig, shutdown: CancellationToken) -> Result<WebrtcTransport, StartError> {
    config.validate()?;
    let socket = UdpSocket::bind(config.udp_listen)
        .await
        .map_err(|source| StartError::Bind { addr: config.udp_listen, source })?;
    let local = socket.local_addr().map_err(|source| StartError::Bind { addr: config.udp_listen, source })?;
    if config.udp_recv_buffer_bytes > 0 {
        udp_buffer::size_receive_buffer(&socket, config.udp_recv_buffer_bytes)
            .map_err(|source| StartError::Bind { addr: config.udp_listen, source })?;
    }
    let advertised = config.advertised_addrs(local)?;
    let tcp = match config.tcp_bind_addr() {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|source| StartError::BindTcp { addr, source })?;
            let bound = listener.local_addr().map_err(|source| StartError::BindTcp { addr, source })?;
            let advertised = config.advertised_tcp_addrs(bound)?;
            info!(local = %bound, ?advertised, "ICE-TCP listening");
            Some((listener, advertised))
        }
        None => None,
    };
    info!(%local, ?advertised, "WebRTC media plane listening");
    let sockets = driver::Sockets { udp: socket, advertised, tcp };
    let mux = driver::spawn(sockets, config, shutdown.clone())
        .map_err(|source| StartError::Bind { addr: config.udp_listen, source })?;
    Ok(WebrtcTransport {
        inner: Arc::new(Inner {
            mux,
            local,
            config: config.clone(),
            shutdown,
            minted: OnceLock::new(),
            packets: FanoutPackets::default(),
        }),
    })
}

impl WebrtcTransport {
    /// The address the UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Every address put in UDP candidates (`webrtc.public_addr` may list several).
    pub fn advertised_addrs(&self) -> &[SocketAddr] {
        &self.inner.mux.advertised
    }

    /// The addresses of the passive TCP candidates (ICE-TCP); empty when it is off.
    pub fn advertised_tcp_addrs(&self) -> &[SocketAddr] {
        &self.inner.mux.advertised_tcp
    }

    pub fn config(&self) -> &WebrtcConfig {
        &self.inner.config
    }

    /// The configured STUN/TURN servers (`webrtc.ice_servers`), the same for every client.
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.inner.config.ice_servers
    }

    /// The STUN/TURN servers one client (who holds a valid token for `identity`) is told about:
    /// the configured ones and, with the built-in TURN server, its URLs with fresh credentials.
    pub fn ice_servers_for(&self, identity: &str) -> Vec<IceServer> {
        let mut servers = self.inner.config.ice_servers.clone();
        if let Some(source) = self.inner.minted.get() {
            servers.extend(source.ice_servers(identity));
        }
        servers
    }

    /// Adds a source of per-client ICE servers (the built-in TURN server); only the first
    /// one set is kept.
    pub fn set_ice_server_source(&self, source: Arc<dyn IceServerSource>) {
        let _ = self.inner.minted.set(source);
    }

    /// Parses and answers a remote offer, with `prefer_video` first among the answer's video
    /// codecs when given (what the room asks publishers for). Nothing is registered or joined
    /// until [`Negotiated::start`]; dropping the result abandons the session.
    pub fn negotiate(
        &self,
        offer_sdp: &str,
        prefer_video: Option<junction_core::Codec>,
    ) -> Result<Negotiated, SessionError> {
        let (mux, shutdown, packets) =
            (self.inner.mux.clone(), self.inner.shutdown.clone(), self.inner.packets.clone());
        negotiate::negotiate(mux, &self.inner.config, shutdown, packets, offer_sdp, prefer_video)
    }

    /// Like [`WebrtcTransport::negotiate`], for a peer that will renegotiate: an offer with no
    /// usable media yet (only data channels) is answered too.
    pub fn negotiate_room(
        &self,
        offer_sdp: &str,
        prefer_video: Option<junction_core::Codec>,
    ) -> Result<Negotiated, SessionError> {
        let (mux, shutdown, packets) =
            (self.inner.mux.clone(), self.inner.shutdown.clone(), self.inner.packets.clone());
        negotiate::negotiate_any(mux, &self.inner.config, shutdown, packets, offer_sdp, prefer_video)
    }
}

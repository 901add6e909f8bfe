//! One WebRTC peer of the load tool: a str0m `Rtc` (sans-I/O) on its own UDP socket, driven the
//! str0m way — feed a datagram or a timeout, drain outputs until the next timeout, sending what
//! it transmits. The client is ICE-controlling, sends no stats events, and shares one DTLS
//! certificate among all peers of a run, so thousands of sessions stay cheap on the client side.
//!
//! str0m is the same library the server is built on, but only as a client here: signalling is
//! plain WHIP/WHEP HTTP, and nothing of Junction's own WebRTC code is used. With a TURN server in
//! the kit, a peer allocates a relay first and talks to the server only through it
//! ([`super::turn`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::Codec as WireCodec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::arrival;
use super::turn::{Relay, TurnServer, udp_candidate};

/// The video codec the synthetic publishers send (and viewers offer to receive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VideoCodec {
    Vp8,
    H264,
}

/// The DTLS certificate (and so the handshake's signatures) the peers of a run present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtlsCertKind {
    /// ECDSA P-256 on str0m's default DTLS (dimpl), what browsers and Junction use.
    Ecdsa,
    /// RSA 2048 on OpenSSL's DTLS, for servers that only sign with RSA (atm0s-media-server).
    Rsa,
}

/// What every peer of a run shares: the crypto provider and one DTLS certificate.
#[derive(Clone)]
pub struct PeerKit {
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
    pub codec: VideoCodec,
    /// The local address peers bind, one that reaches the server.
    pub local_ip: IpAddr,
    /// Connect through this TURN server (a relayed candidate only).
    pub turn: Option<TurnServer>,
}

impl PeerKit {
    /// `server_host` is the host of the WHIP/WHEP URL: peers bind an address that reaches it.
    pub fn new(codec: VideoCodec, server_host: &str, dtls: DtlsCertKind) -> anyhow::Result<PeerKit> {
        let (crypto, cert) = match dtls {
            DtlsCertKind::Ecdsa => {
                let crypto = str0m::crypto::from_feature_flags();
                let cert = crypto.dtls_provider.generate_certificate().context("cannot make a DTLS certificate")?;
                (crypto, cert)
            }
            DtlsCertKind::Rsa => super::openssl_dtls::rsa_provider().context("cannot set up OpenSSL DTLS")?,
        };
        Ok(PeerKit { crypto: Arc::new(crypto), cert, codec, local_ip: local_ip_towards(server_host), turn: None })
    }

    fn config(&self) -> RtcConfig {
        let config = RtcConfig::new()
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.cert.clone())
            .clear_codecs()
            .enable_opus(true, false);
        match self.codec {
            VideoCodec::Vp8 => config.enable_vp8(true),
            VideoCodec::H264 => config.enable_h264(true),
        }
    }
}

/// The local address the kernel would use to reach `host` (loopback for a local server).
fn local_ip_towards(host: &str) -> IpAddr {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let Ok(socket) = std::net::UdpSocket::bind("0.0.0.0:0") else { return loopback };
    if socket.connect((host, 9)).is_err() {
        return loopback;
    }
    socket.local_addr().map_or(loopback, |a| a.ip())
}

pub struct Peer {
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    buffer: Vec<u8>,
    /// The allocation everything goes through, with a TURN server in the kit.
    relay: Option<Relay>,
    pub audio: Mid,
    pub video: Mid,
    /// When the last datagram read reached the socket, by the kernel's stamp (`arrival`).
    arrived: Instant,
}

/// What one datagram was, for counting.
pub struct Datagram {
    pub len: usize,
    /// An RTP packet (not RTCP, STUN or DTLS), by RFC 7983 / RFC 5761 demultiplexing.
    pub rtp: bool,
    /// How long it sat in the socket before the tool read it.
    pub waited: Duration,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(relay) = &self.relay
            && let Some(request) = relay.deallocate()
        {
            // Best effort: a lost one leaves the allocation to expire.
            let _ = self.socket.try_send_to(&request, relay.server);
        }
    }
}

impl Peer {
    /// A peer with an audio and a video m-line in `direction`; returns it with its SDP offer.
    pub async fn offer(kit: &PeerKit, direction: Direction) -> anyhow::Result<(Peer, String, SdpPendingOffer)> {
        let socket = UdpSocket::bind(SocketAddr::new(kit.local_ip, 0)).await.context("cannot bind a UDP socket")?;
        arrival::stamp_arrivals(&socket).context("cannot ask for receive timestamps")?;
        let mut local = socket.local_addr()?;
        let mut rtc = kit.config().build(Instant::now());
        let relay = match &kit.turn {
            Some(server) => {
                let relay = Relay::allocate(&socket, server).await?;
                rtc.add_local_candidate(Candidate::relayed(relay.relayed, local, "udp")?);
                local = relay.relayed;
                Some(relay)
            }
            None => {
                rtc.add_local_candidate(Candidate::host(local, "udp")?);
                None
            }
        };
        let mut changes = rtc.sdp_api();
        let audio = changes.add_media(MediaKind::Audio, direction, None, None, None);
        let video = changes.add_media(MediaKind::Video, direction, None, None, None);
        let (offer, pending) = changes.apply().context("str0m made no offer")?;
        let peer = Peer { rtc, socket, local, buffer: vec![0; 2048], relay, audio, video, arrived: Instant::now() };
        Ok((peer, offer.to_sdp_string(), pending))
    }

    /// Takes the server's answer; through a relay, binds a channel to its UDP candidate first.
    pub async fn accept(&mut self, pending: SdpPendingOffer, answer: &str) -> anyhow::Result<()> {
        if let Some(relay) = &mut self.relay {
            let media = udp_candidate(answer).context("the answer has no UDP candidate to relay to")?;
            relay.bind(&self.socket, media).await?;
        }
        let answer = SdpAnswer::from_sdp_string(answer).context("the answer is not SDP str0m can read")?;
        self.rtc.sdp_api().accept_answer(pending, answer).context("str0m refused the answer")?;
        Ok(())
    }

    /// Drains str0m's output: sends what it transmits, collects events; returns the next timeout.
    pub async fn flush(&mut self, events: &mut Vec<Event>) -> anyhow::Result<Instant> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(transmit) => {
                    // A full socket buffer drops the datagram, as the network would.
                    match &self.relay {
                        None => {
                            let _ = self.socket.send_to(&transmit.contents, transmit.destination).await;
                        }
                        // Only the bound peer is reachable through the relay (the server's
                        // other candidates are not).
                        Some(relay) if relay.peer == Some(transmit.destination) => {
                            let _ = self.socket.send_to(&relay.wrap(&transmit.contents), relay.server).await;
                        }
                        Some(_) => {}
                    }
                }
                Output::Event(event) => events.push(event),
            }
        }
    }

    /// Waits for the next datagram (cancel-safe) and hands it to str0m; one it cannot parse is
    /// dropped, as a browser would.
    pub async fn receive(&mut self) -> anyhow::Result<Datagram> {
        let (socket, buffer) = (&self.socket, &mut self.buffer);
        let fd = socket.as_raw_fd();
        let (len, mut source, waited) = socket.async_io(Interest::READABLE, || arrival::receive(fd, buffer)).await?;
        let now = Instant::now();
        self.arrived = now.checked_sub(waited).unwrap_or(now);
        let mut contents = self.buffer.get(..len).unwrap_or_default();
        if let Some(relay) = &self.relay {
            // Through the relay, only ChannelData from the bound peer is media; the rest (TURN
            // answers) is not for str0m.
            let relayed = if source == relay.server { relay.unwrap(contents) } else { None };
            match (relayed, relay.peer) {
                (Some(relayed), Some(peer)) => (contents, source) = (relayed, peer),
                _ => return Ok(Datagram { len, rtp: false, waited }),
            }
        }
        let len = contents.len();
        let rtp = matches!(contents.first(), Some(128..=191)) && !matches!(contents.get(1), Some(192..=223));
        if let Ok(input) = Receive::new(Protocol::Udp, source, self.local, contents) {
            self.rtc.handle_input(Input::Receive(now, input))?;
        }
        Ok(Datagram { len, rtp, waited })
    }

    /// When the last datagram read reached the socket: what a frame that datagram completed
    /// arrived at, whenever the tool got round to it.
    pub fn arrived(&self) -> Instant {
        self.arrived
    }

    pub fn timeout(&mut self, now: Instant) -> anyhow::Result<()> {
        self.rtc.handle_input(Input::Timeout(now))?;
        Ok(())
    }

    /// The payload type negotiated for `codec` on `mid`.
    pub fn payload_type(&mut self, mid: Mid, codec: WireCodec) -> anyhow::Result<Pt> {
        let writer = self.rtc.writer(mid).context("no such m-line")?;
        let found = writer.payload_params().find(|p| p.spec().codec == codec).map(|p| p.pt());
        match found {
            Some(pt) => Ok(pt),
            None => bail!("the server did not accept {codec:?}"),
        }
    }
}

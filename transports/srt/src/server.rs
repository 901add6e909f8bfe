//! The SRT listener: one UDP socket. Its receive loop parses each datagram (srt-protocol's
//! parser, under `catch_unwind`), routes packets of open streams to their tasks by source
//! address, and runs everything else through the [`Handshakes`]; at the handshake's access
//! control step the stream id is resolved to an ingress (or a publish token) and the caps are
//! checked, so a bad stream id, a missing passphrase or one stream too many is refused with
//! SRT's own reject code before any stream exists.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use junction_auth::{Authority, Credential, IngressKind};
use junction_engine::Engine;
use junction_engine::gate::{ConnectionGate, ConnectionPermit};
use junction_transport_api::{IngressUrls, Service, Started, TransportContext};
use srt_protocol::options::{KeySize, Passphrase};
use srt_protocol::packet::{CoreRejectReason, Packet, RejectReason, ServerRejectReason};
use srt_protocol::protocol::pending_connection::{AccessControlRequest, AccessControlResponse};
use srt_protocol::settings::{ConnInitSettings, KeySettings};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::SrtConfig;
use crate::connection::{self, Accepted};
use crate::handshake::{CallerKeys, Handshakes, Step};
use crate::stream_id;

/// Room for one datagram (SRT's largest is 1500 bytes with its headers).
const DATAGRAM: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for SRT on {addr} (srt.listen): {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("srt.passphrase is not usable: {0}")]
    Passphrase(String),
}

/// The running listener.
#[derive(Debug, Clone)]
pub struct SrtListener {
    pub local_addr: SocketAddr,
}

impl SrtListener {
    /// What encoders are given, before `?streamid=<key>`.
    pub fn url(&self) -> String {
        format!("srt://{}", self.local_addr)
    }
}

/// What every stream task shares.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) shutdown: CancellationToken,
}

/// Starts SRT (unless `srt.enabled` is off): binds `srt.listen` and serves until the server
/// shuts down; the banner line and the ingress URL go back to the server.
pub async fn start(ctx: &TransportContext, config: &SrtConfig) -> Result<Started, StartError> {
    if !config.enabled {
        return Ok(Started::default());
    }
    let listener = listen(ctx.engine.clone(), ctx.authority.clone(), config.clone(), ctx.shutdown.clone()).await?;
    Ok(Started {
        services: vec![Service { name: "srt", url: listener.url(), about: "SRT ingest (OBS, vMix, ffmpeg): MPEG-TS" }],
        ingress_urls: IngressUrls { srt: Some(listener.url()), ..IngressUrls::default() },
        ..Started::default()
    })
}

/// Binds `config.listen` and serves SRT until `shutdown` is cancelled ([`start`] without the
/// server around it).
pub async fn listen(
    engine: Engine,
    authority: Authority,
    config: SrtConfig,
    shutdown: CancellationToken,
) -> Result<SrtListener, StartError> {
    let addr = config.listen;
    let settings = connection_settings(&config)?;
    let socket = UdpSocket::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let local_addr = socket.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    info!(%local_addr, latency_ms = config.latency_ms, encrypted = config.passphrase.is_some(), "SRT listening");
    let gate = ConnectionGate::new("srt", config.max_connections, config.max_connections_per_ip);
    let shared = Arc::new(Shared { engine, socket: Arc::new(socket), shutdown });
    let listener = Listener {
        shared,
        authority,
        config,
        gate,
        handshakes: Handshakes::new(settings),
        streams: HashMap::new(),
        wire: BytesMut::with_capacity(DATAGRAM),
    };
    tokio::spawn(listener.run());
    Ok(SrtListener { local_addr })
}

/// What every stream starts with: latency, idle timeout, and the passphrase if one is set.
fn connection_settings(config: &SrtConfig) -> Result<ConnInitSettings, StartError> {
    let mut settings =
        ConnInitSettings { recv_latency: config.latency(), send_latency: config.latency(), ..Default::default() };
    settings.peer_idle_timeout = config.idle_timeout();
    settings.key_settings = config
        .passphrase
        .as_ref()
        .map(|passphrase| key_settings(config, passphrase, KeySize::Unspecified))
        .transpose()?;
    Ok(settings)
}

/// The key settings for a stream: the caller's key length if it announced one, else ours.
fn key_settings(config: &SrtConfig, passphrase: &str, announced: KeySize) -> Result<KeySettings, StartError> {
    let key_size = match announced {
        KeySize::Unspecified => {
            KeySize::try_from(config.key_length).map_err(|e| StartError::Passphrase(e.to_string()))?
        }
        size => size,
    };
    let passphrase = Passphrase::try_from(passphrase.to_owned()).map_err(|e| StartError::Passphrase(e.to_string()))?;
    Ok(KeySettings { key_size, passphrase })
}

/// Parses a datagram; srt-protocol's parser is kept from taking the listener down.
pub fn parse_packet(datagram: &[u8], ipv6: bool) -> Option<Packet> {
    if has_unparsed_extension(datagram) {
        metrics::counter!("junction_srt_unsupported_extensions_total").increment(1);
        return None;
    }
    match catch_unwind(AssertUnwindSafe(|| Packet::parse(&mut Cursor::new(datagram), ipv6))) {
        Ok(parsed) => parsed.ok(),
        Err(_) => {
            // Some truncated control packets make it advance a buffer past its end.
            metrics::counter!("junction_srt_contained_panics_total").increment(1);
            None
        }
    }
}

/// Whether `datagram` is a conclusion handshake with an extension srt-protocol's parser does not
/// know (it has `unimplemented!()` for all but HSREQ/HSRSP, KMREQ/KMRSP and the stream id):
/// congestion control (6), packet filter (7, FEC), group (8) and anything newer. Caught under
/// `catch_unwind` too, but a panic costs a stack trace in the log per packet; this costs a walk
/// over a few block headers (16-byte packet header, 48-byte handshake, then blocks of a 16-bit
/// type and a 16-bit length in 32-bit words).
fn has_unparsed_extension(datagram: &[u8]) -> bool {
    const HEADER: usize = 16;
    const HANDSHAKE: usize = 48;
    let word = |at: usize| datagram.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let is_handshake = word(0).is_some_and(|w| w >> 16 == 0x8000);
    let is_v5_conclusion = word(HEADER) == Some(5) && word(HEADER + 20) == Some(0xFFFF_FFFF);
    if !is_handshake || !is_v5_conclusion {
        return false;
    }
    let mut at = HEADER + HANDSHAKE;
    while let Some(block) = word(at) {
        let (kind, words) = (block >> 16, (block & 0xFFFF) as usize);
        if !(1..=5).contains(&kind) {
            return true;
        }
        at += 4 + words * 4;
    }
    false
}

/// A stream admitted at its handshake, waiting for the handshake to complete.
struct Admitted {
    credential: Credential,
    permit: ConnectionPermit,
}

struct Listener {
    shared: Arc<Shared>,
    authority: Authority,
    config: SrtConfig,
    gate: ConnectionGate,
    handshakes: Handshakes,
    /// Open streams by source address: where their packets go.
    streams: HashMap<SocketAddr, mpsc::Sender<Packet>>,
    wire: BytesMut,
}

impl Listener {
    async fn run(mut self) {
        let mut buffer = vec![0u8; DATAGRAM];
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        let ipv6 = self.config.listen.is_ipv6();
        let shutdown = self.shared.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = self.shared.socket.recv_from(&mut buffer) => match received {
                    Ok((len, from)) => {
                        let Some(packet) = parse_packet(&buffer[..len], ipv6) else {
                            metrics::counter!("junction_srt_malformed_total").increment(1);
                            continue;
                        };
                        self.route(packet, from).await;
                    }
                    Err(err) => {
                        // ICMP port-unreachable from a gone encoder shows up here on Linux.
                        tracing::debug!("SRT receive: {err}");
                    }
                },
                _ = sweep.tick() => {
                    self.handshakes.sweep(Instant::now());
                    self.streams.retain(|_, stream| !stream.is_closed());
                }
            }
        }
    }

    async fn route(&mut self, packet: Packet, from: SocketAddr) {
        let packet = match self.streams.get(&from) {
            Some(stream) => match stream.try_send(packet) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("junction_srt_dropped_packets_total").increment(1);
                    return;
                }
                // The stream ended: this may be the same encoder connecting again.
                Err(mpsc::error::TrySendError::Closed(packet)) => {
                    self.streams.remove(&from);
                    packet
                }
            },
            None => packet,
        };
        let now = Instant::now();
        let step = self.handshakes.handle(now, packet, from);
        self.carry_out(step, from, None).await;
    }

    async fn carry_out(&mut self, step: Step, from: SocketAddr, admitted: Option<Admitted>) {
        match step {
            Step::Nothing => {}
            Step::Reply(packet, to) => self.send(&packet, to).await,
            Step::Ask(request) => {
                let (response, admitted) = self.admit(&request);
                let step = self.handshakes.decide(Instant::now(), from, response);
                Box::pin(self.carry_out(step, from, admitted)).await;
            }
            Step::Connected { reply, connection } => {
                if let Some((packet, to)) = reply {
                    self.send(&packet, to).await;
                }
                let Some(Admitted { credential, permit }) = admitted else { return };
                let (sender, packets) = mpsc::channel(connection::QUEUE);
                self.streams.insert(from, sender);
                let accepted = Accepted { connection: *connection, remote: from, credential, permit };
                tokio::spawn(connection::serve(self.shared.clone(), accepted, packets));
            }
            Step::Refused { reply, reason } => {
                info!(remote = %from, "SRT handshake refused: {reason}");
                if let Some((packet, to)) = reply {
                    self.send(&packet, to).await;
                }
            }
        }
    }

    /// The access-control decision for a caller's handshake.
    fn admit(&self, request: &AccessControlRequest) -> (AccessControlResponse, Option<Admitted>) {
        let refuse = |reason: RejectReason, code: &'static str, why: String| {
            warn!(remote = %request.remote, code, "SRT stream refused: {why}");
            metrics::counter!("junction_srt_refused_total", "reason" => code).increment(1);
            (AccessControlResponse::Rejected(reason), None)
        };
        let server = RejectReason::Server;
        let key = match stream_id::stream_key(request.stream_id.as_deref().map(String::as_str)) {
            Ok(key) => key,
            Err(err @ stream_id::StreamIdError::NotPublish(_)) => {
                return refuse(server(ServerRejectReason::BadMode), "bad_mode", err.to_string());
            }
            Err(err) => return refuse(server(ServerRejectReason::BadRequest), "bad_stream_id", err.to_string()),
        };
        let credential = match self.authority.resolve(key, IngressKind::Srt).and_then(|c| c.require_publish()) {
            Ok(credential) => credential,
            Err(err) => return refuse(server(ServerRejectReason::Unauthorized), "unauthorized", err.to_string()),
        };
        let key_settings = match (&self.config.passphrase, self.handshakes.caller_keys(request.remote)) {
            (_, CallerKeys::Unusable) => {
                let why = "the encoder's key material is not usable here".to_owned();
                return refuse(RejectReason::Core(CoreRejectReason::BadSecret), "bad_key_material", why);
            }
            // An encrypting caller of a listener without a passphrase.
            (None, CallerKeys::Request(_)) => {
                let why = "the encoder encrypts (passphrase set) but srt.passphrase is not".to_owned();
                return refuse(RejectReason::Core(CoreRejectReason::Unsecure), "unexpected_passphrase", why);
            }
            (None, CallerKeys::None) => None,
            (Some(_), CallerKeys::None) => {
                let why = "the encoder does not encrypt but srt.passphrase is set".to_owned();
                return refuse(RejectReason::Core(CoreRejectReason::Unsecure), "passphrase_missing", why);
            }
            (Some(passphrase), CallerKeys::Request(size)) => match key_settings(&self.config, passphrase, size) {
                Ok(settings) => Some(settings),
                Err(err) => {
                    return refuse(server(ServerRejectReason::InternalServerError), "passphrase", err.to_string());
                }
            },
        };
        let permit = match self.gate.admit(request.remote.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                return refuse(server(ServerRejectReason::Overload), "too_many_streams", refusal.to_string());
            }
        };
        (AccessControlResponse::Accepted(key_settings), Some(Admitted { credential, permit }))
    }

    async fn send(&mut self, packet: &Packet, to: SocketAddr) {
        self.wire.clear();
        packet.serialize(&mut self.wire);
        if let Err(err) = self.shared.socket.send_to(&self.wire, to).await {
            tracing::debug!("SRT send failed: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v5 conclusion handshake's fixed part followed by `blocks` (type, content words).
    fn conclusion(blocks: &[(u16, &[u32])]) -> Vec<u8> {
        let mut datagram = vec![0u8; 64];
        datagram[..4].copy_from_slice(&0x8000_0000u32.to_be_bytes());
        datagram[16..20].copy_from_slice(&5u32.to_be_bytes());
        datagram[36..40].copy_from_slice(&0xFFFF_FFFFu32.to_be_bytes());
        for (kind, words) in blocks {
            datagram.extend_from_slice(&kind.to_be_bytes());
            datagram.extend_from_slice(&(words.len() as u16).to_be_bytes());
            for word in *words {
                datagram.extend_from_slice(&word.to_be_bytes());
            }
        }
        datagram
    }

    #[test]
    fn handshakes_with_extensions_srt_protocol_cannot_parse_are_dropped_before_it_sees_them() {
        assert!(!has_unparsed_extension(&conclusion(&[(1, &[0, 0, 0]), (5, &[0x6b65_7900])])));
        // FEC (packet filter) and congestion control blocks: srt-protocol would panic.
        assert!(has_unparsed_extension(&conclusion(&[(1, &[0, 0, 0]), (7, &[0x6665_6300])])));
        assert!(has_unparsed_extension(&conclusion(&[(6, &[])])));
        assert_eq!(parse_packet(&conclusion(&[(7, &[0])]), false), None);
        // Other packets are left to the parser; a truncated block list ends the walk.
        assert!(!has_unparsed_extension(&[0x80, 0x02, 0, 0]));
        assert!(!has_unparsed_extension(&conclusion(&[(1, &[0, 0, 0, 0, 0, 0])])[..70]));
    }
}

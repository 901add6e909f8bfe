//! The TURN server's sockets, driving the [`Relay`] state machine with tokio: the UDP listener,
//! the TCP and TLS listeners (STUN messages and ChannelData framed by their own lengths, RFC 8656
//! §12.5; a connection's end ends its allocation), one UDP socket per allocation in the relay
//! port range, and a sweep of expired allocations. Sends never wait: a full socket buffer or
//! connection queue drops the packet, as a congested link would, so one slow client cannot hold
//! up the others. Stream connections are bounded (`turn.max_connections`) and must send their
//! first message within [`FIRST_MESSAGE_TIMEOUT`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::relay::{Client, Listener, Out, Relay, RelayId, Step};

/// How long a new TCP/TLS connection has to finish its handshake and send a first message.
pub(crate) const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest STUN message or ChannelData accepted from a client (a relayed packet and headers).
const MAX_MESSAGE: usize = 4096;
/// Packets queued for one stream client before more are dropped.
const STREAM_QUEUE: usize = 256;
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Ports tried for a new relay socket before the allocation is refused (508).
const RELAY_BIND_ATTEMPTS: usize = 64;

/// Where relay sockets bind and what address allocations are told.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayPorts {
    pub(crate) bind_ip: IpAddr,
    pub(crate) advertised_ip: IpAddr,
    pub(crate) min: u16,
    pub(crate) max: u16,
}

struct RelaySocket {
    socket: Arc<UdpSocket>,
    reader: AbortHandle,
}

/// The metrics every relayed packet touches, looked up once.
struct Meters {
    to_peer_bytes: metrics::Counter,
    to_client_bytes: metrics::Counter,
    allocations: metrics::Gauge,
}

/// Everything the server's tasks share.
pub(crate) struct Shared {
    relay: Mutex<Relay>,
    meters: Meters,
    udp: Arc<UdpSocket>,
    streams: Mutex<HashMap<Client, mpsc::Sender<Vec<u8>>>>,
    relays: Mutex<HashMap<RelayId, RelaySocket>>,
    next_relay: AtomicU64,
    ports: RelayPorts,
    shutdown: CancellationToken,
}

impl Shared {
    pub(crate) fn new(relay: Relay, udp: UdpSocket, ports: RelayPorts, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            relay: Mutex::new(relay),
            meters: Meters {
                to_peer_bytes: metrics::counter!("junction_turn_relayed_bytes_total", "direction" => "to_peer"),
                to_client_bytes: metrics::counter!("junction_turn_relayed_bytes_total", "direction" => "to_client"),
                allocations: metrics::gauge!("junction_turn_allocations"),
            },
            udp: Arc::new(udp),
            streams: Mutex::new(HashMap::new()),
            relays: Mutex::new(HashMap::new()),
            next_relay: AtomicU64::new(1),
            ports,
            shutdown,
        })
    }

    fn from_client(self: &Arc<Self>, client: Client, bytes: &[u8]) {
        let mut open = || self.open_relay();
        // Only a client's requests make or end allocations (besides the sweep and a stream's end).
        let (step, allocations) = {
            let mut relay = self.relay.lock();
            let step = relay.on_client(Instant::now(), SystemTime::now(), client, bytes, &mut open);
            (step, relay.allocations())
        };
        self.meters.allocations.set(allocations as f64);
        self.execute(step);
    }

    /// Ends what `change` ends (an expiry sweep, a stream client gone) and counts what is left.
    fn change(&self, change: impl FnOnce(&mut Relay) -> Vec<Out>) {
        let (out, allocations) = {
            let mut relay = self.relay.lock();
            (change(&mut relay), relay.allocations())
        };
        self.meters.allocations.set(allocations as f64);
        self.execute(Step { out, ..Step::default() });
    }

    fn from_peer(self: &Arc<Self>, relay: RelayId, peer: SocketAddr, bytes: &[u8]) {
        let step = self.relay.lock().on_peer(Instant::now(), relay, peer, bytes);
        self.execute(step);
    }

    /// Binds a relay socket on a free port of the range and starts reading it.
    fn open_relay(self: &Arc<Self>) -> Option<(RelayId, SocketAddr)> {
        let RelayPorts { bind_ip, advertised_ip, min, max } = self.ports;
        let socket = (0..RELAY_BIND_ATTEMPTS).find_map(|_| {
            let port = min + (rand::random::<u32>() % (u32::from(max - min) + 1)) as u16;
            let socket = std::net::UdpSocket::bind((bind_ip, port)).ok()?;
            socket.set_nonblocking(true).ok()?;
            UdpSocket::from_std(socket).ok()
        });
        let Some(socket) = socket else {
            metrics::counter!("junction_turn_refused_total", "reason" => "no_relay_port").increment(1);
            return None;
        };
        let port = socket.local_addr().ok()?.port();
        let id = RelayId(self.next_relay.fetch_add(1, Ordering::Relaxed));
        let socket = Arc::new(socket);
        let reader = tokio::spawn(read_relay(self.clone(), id, socket.clone())).abort_handle();
        self.relays.lock().insert(id, RelaySocket { socket, reader });
        Some((id, SocketAddr::new(advertised_ip, port)))
    }

    fn execute(&self, step: Step) {
        if let Some(dropped) = step.dropped {
            metrics::counter!("junction_turn_dropped_total", "reason" => dropped.reason()).increment(1);
        }
        if let Some(code) = step.refused {
            metrics::counter!("junction_turn_error_responses_total", "code" => code.to_string()).increment(1);
        }
        for out in step.out {
            match out {
                Out::ToClient { client, bytes } => self.to_client(client, bytes),
                Out::ToPeer { relay, peer, bytes } => {
                    let socket = self.relays.lock().get(&relay).map(|r| r.socket.clone());
                    if let Some(socket) = socket {
                        self.meters.to_peer_bytes.increment(bytes.len() as u64);
                        if socket.try_send_to(&bytes, peer).is_err() {
                            metrics::counter!("junction_turn_dropped_total", "reason" => "send_failed").increment(1);
                        }
                    }
                }
                Out::CloseRelay(relay) => {
                    if let Some(closed) = self.relays.lock().remove(&relay) {
                        closed.reader.abort();
                    }
                }
            }
        }
    }

    fn to_client(&self, client: Client, bytes: Vec<u8>) {
        let sent = match client.listener {
            Listener::Udp => self.udp.try_send_to(&bytes, client.addr).is_ok(),
            Listener::Tcp | Listener::Tls => {
                self.streams.lock().get(&client).is_some_and(|queue| queue.try_send(bytes).is_ok())
            }
        };
        if !sent {
            metrics::counter!("junction_turn_dropped_total", "reason" => "client_congested").increment(1);
        }
    }
}

async fn read_relay(shared: Arc<Shared>, id: RelayId, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, peer)) => {
                shared.meters.to_client_bytes.increment(len as u64);
                shared.from_peer(id, peer, &buf[..len]);
            }
            // ICMP errors of one send; the socket goes on.
            Err(err) => debug!("TURN relay receive error: {err}"),
        }
    }
}

/// Reads the UDP listener until shutdown.
pub(crate) async fn serve_udp(shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let received = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            received = shared.udp.recv_from(&mut buf) => received,
        };
        match received {
            Ok((len, addr)) => shared.from_client(Client { listener: Listener::Udp, addr }, &buf[..len]),
            Err(err) => debug!("TURN UDP receive error: {err}"),
        }
    }
}

/// Ends expired allocations every few seconds until shutdown.
pub(crate) async fn sweep(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = ticks.tick() => {
                shared.change(|relay| relay.sweep(Instant::now()));
            }
        }
    }
    for (_, relay) in shared.relays.lock().drain() {
        relay.reader.abort();
    }
}

/// Accepts TCP (or, with an acceptor, TLS) clients until shutdown, at most `open` at once.
pub(crate) async fn serve_streams(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    open: Arc<Semaphore>,
) {
    let kind = if tls.is_some() { Listener::Tls } else { Listener::Tcp };
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, addr)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("junction_turn_refused_total", "reason" => "max_connections").increment(1);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (shared, tls) = (shared.clone(), tls.clone());
        let client = Client { listener: kind, addr };
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_stream(shared.clone(), client, stream).await,
                Some(acceptor) => match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_stream(shared.clone(), client, stream).await,
                    _ => {
                        metrics::counter!("junction_turn_refused_total", "reason" => "tls_handshake").increment(1);
                        return;
                    }
                },
            }
            shared.streams.lock().remove(&client);
            shared.change(|relay| relay.client_gone(client));
        });
    }
}

/// Serves one stream client until it or the server goes.
async fn serve_stream<S: AsyncRead + AsyncWrite + Send + 'static>(shared: Arc<Shared>, client: Client, stream: S) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (queue, mut outgoing) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    shared.streams.lock().insert(client, queue);
    let write = async move {
        while let Some(bytes) = outgoing.recv().await {
            writer.write_all(&bytes).await?;
            if outgoing.is_empty() {
                writer.flush().await?;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let read = async {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut first = true;
        loop {
            let len = if first {
                first = false;
                tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, read_message(&mut reader, &mut buf)).await.unwrap_or(None)
            } else {
                read_message(&mut reader, &mut buf).await
            };
            let Some(len) = len else { return };
            shared.from_client(client, &buf[..len]);
        }
    };
    tokio::select! {
        _ = shared.shutdown.cancelled() => {}
        _ = write => {}
        () = read => {}
    }
}

/// Reads one STUN message or ChannelData from a stream into `buf`; `None` at the end of the
/// stream or on anything that is neither (the connection is then closed).
async fn read_message<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> Option<usize> {
    reader.read_exact(&mut buf[..4]).await.ok()?;
    let len = frame_length(&buf[..4])?;
    if len > buf.len() {
        return None;
    }
    reader.read_exact(&mut buf[4..len]).await.ok()?;
    Some(len)
}

/// The whole length of the message that starts with these 4 bytes: a STUN message (first two
/// bits 00, header 20 bytes) or ChannelData (channel 0x4000..0x7fff, padded to 4 on streams).
pub(crate) fn frame_length(header: &[u8]) -> Option<usize> {
    let body = usize::from(u16::from_be_bytes([header[2], header[3]]));
    match header[0] {
        0x00..=0x3f => Some(20 + body),
        0x40..=0x7f => Some(4 + body.next_multiple_of(4)),
        _ => None,
    }
}

//! The UDP driver: the one task that reads the shared socket. It checks each datagram
//! ([`validate`](crate::validate)), routes it through the [`Demux`] to the inbox of the session it
//! belongs to, and takes registrations from sessions over a control channel. Sessions queue what
//! they send to the batching sender ([`send_batch`](crate::send_batch)), which shares the socket
//! and sends many datagrams per system call. ICE-TCP connections ([`crate::ice_tcp`]) find their
//! session through the same table and deliver to the same inboxes.
//!
//! The routing table, the inboxes and the control channel live outside the task, so that a
//! panic in it ([`supervise::restart`] runs it again) loses no session: the next run carries on
//! with the same table. Inboxes are bounded: a session that falls behind loses datagrams, as the
//! network would, and never makes the driver wait.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_engine::supervise;
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use crate::config::WebrtcConfig;
use crate::send_batch::{self, Lane, SendQueue};
use crate::udp_mux::{Demux, DemuxLimits, Route, SessionKey};
use crate::validate::{self, Kind};

/// Large enough for any datagram WebRTC peers send (they keep under the path MTU).
pub(crate) const MAX_DATAGRAM: usize = 2048;
/// How often inboxes of sessions that are gone are looked for (their routes normally go with
/// the session's unregistration; this catches any that did not).
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// One received datagram (or ICE-TCP frame), as handed to a session.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub(crate) source: SocketAddr,
    pub(crate) at: Instant,
    pub(crate) payload: Bytes,
    /// What it came over, and so how replies to `source` go back.
    pub(crate) via: Via,
}

/// The path a peer's packets take.
#[derive(Debug, Clone)]
pub(crate) enum Via {
    /// The shared UDP socket.
    Udp,
    /// One ICE-TCP connection: what is queued here is framed and written to it.
    Tcp(crate::ice_tcp::TcpLink),
}

enum Control {
    Register { key: SessionKey, ufrag: String, pwd: String, inbox: mpsc::Sender<Datagram> },
    AddUfrag { key: SessionKey, ufrag: String, pwd: String },
    Unregister { key: SessionKey },
}

/// What sessions hold of the driver: the queue to send on and the control channel.
#[derive(Clone)]
pub(crate) struct MuxHandle {
    outgoing: SendQueue,
    control: mpsc::UnboundedSender<Control>,
    next_key: Arc<AtomicU64>,
    inbox_capacity: usize,
    /// The addresses clients send to (what the UDP candidates say; at least one).
    pub(crate) advertised: Vec<SocketAddr>,
    /// The addresses of the passive TCP candidates (none when ICE-TCP is off).
    pub(crate) advertised_tcp: Vec<SocketAddr>,
}

impl MuxHandle {
    /// The local candidate a packet from `source` reached: the first advertised address of its
    /// address family (the network may have translated the one it was sent to), over UDP or TCP.
    pub(crate) fn local_candidate(&self, source: SocketAddr, tcp: bool) -> SocketAddr {
        let addrs = if tcp && !self.advertised_tcp.is_empty() { &self.advertised_tcp } else { &self.advertised };
        addrs.iter().find(|a| a.is_ipv4() == source.is_ipv4()).unwrap_or(&addrs[0]).to_owned()
    }

    /// Registers a new session under its local ICE credentials; returns its key and its inbox.
    pub(crate) fn register(&self, ufrag: &str, pwd: &str) -> (SessionKey, mpsc::Receiver<Datagram>) {
        let key = SessionKey(self.next_key.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(self.inbox_capacity);
        let _ = self.control.send(Control::Register { key, ufrag: ufrag.to_owned(), pwd: pwd.to_owned(), inbox: tx });
        (key, rx)
    }

    /// Routes checks for further credentials to the session (after an ICE restart).
    pub(crate) fn add_ufrag(&self, key: SessionKey, ufrag: &str, pwd: &str) {
        let _ = self.control.send(Control::AddUfrag { key, ufrag: ufrag.to_owned(), pwd: pwd.to_owned() });
    }

    pub(crate) fn unregister(&self, key: SessionKey) {
        let _ = self.control.send(Control::Unregister { key });
    }

    /// Queues a datagram for `destination` in `lane`; waits only while that lane is full.
    pub(crate) async fn send(&self, destination: SocketAddr, payload: Vec<u8>, lane: Lane) {
        self.outgoing.send(destination, payload, lane).await;
    }
}

/// The routing state, kept across restarts of the driver task.
struct Table {
    demux: Demux,
    inboxes: HashMap<SessionKey, mpsc::Sender<Datagram>>,
    /// `max_addresses` was reached (warned once until the table has room again).
    full: bool,
}

/// Why a datagram went nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    Invalid(&'static str),
    Unrouted(Route),
    InboxFull,
}

impl Table {
    fn apply(&mut self, control: Control) {
        match control {
            Control::Register { key, ufrag, pwd, inbox } => {
                self.demux.add_ufrag(&ufrag, &pwd, key);
                self.inboxes.insert(key, inbox);
            }
            Control::AddUfrag { key, ufrag, pwd } => self.demux.add_ufrag(&ufrag, &pwd, key),
            Control::Unregister { key } => self.forget(key),
        }
    }

    fn forget(&mut self, key: SessionKey) {
        self.demux.remove(key);
        self.inboxes.remove(&key);
    }

    /// Checks, routes and queues one datagram.
    fn deliver(&mut self, source: SocketAddr, datagram: &[u8], at: Instant) -> Result<SessionKey, Dropped> {
        let kind = validate::check(datagram).map_err(|invalid| {
            trace!(%source, len = datagram.len(), "invalid datagram: {invalid}");
            Dropped::Invalid(invalid.protocol())
        })?;
        let key = match self.demux.route(source, datagram, kind == Kind::Stun) {
            Route::To(key) => key,
            Route::TableFull => {
                if !self.full {
                    self.full = true;
                    warn!(addresses = self.demux.addresses(), "webrtc.max_addresses reached: new peers cannot connect");
                }
                return Err(Dropped::Unrouted(Route::TableFull));
            }
            other => {
                trace!(%source, len = datagram.len(), reason = other.reason(), "datagram for no session");
                return Err(Dropped::Unrouted(other));
            }
        };
        let Some(inbox) = self.inboxes.get(&key) else { return Err(Dropped::Unrouted(Route::UnknownAddress)) };
        let item = Datagram { source, at, payload: Bytes::copy_from_slice(datagram), via: Via::Udp };
        match inbox.try_send(item) {
            Ok(()) => Ok(key),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Dropped::InboxFull),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The session ended before its unregistration arrived.
                self.forget(key);
                Err(Dropped::Unrouted(Route::UnknownAddress))
            }
        }
    }

    /// Forgets sessions whose inbox nobody reads any more.
    fn sweep(&mut self) {
        let gone: Vec<SessionKey> = self.inboxes.iter().filter(|(_, i)| i.is_closed()).map(|(k, _)| *k).collect();
        for key in gone {
            self.forget(key);
        }
        if self.full && self.demux.addresses() < self.demux.limits().max_addresses {
            self.full = false;
        }
        metrics::gauge!("junction_webrtc_demux_addresses").set(self.demux.addresses() as f64);
    }
}

/// Everything the driver task works with, shared with its next run after a panic.
pub(crate) struct Driver {
    socket: Arc<UdpSocket>,
    table: Mutex<Table>,
    control: tokio::sync::Mutex<mpsc::UnboundedReceiver<Control>>,
}

impl Driver {
    /// The inbox of the session an ICE-TCP connection's first frame, a STUN check, is for; or
    /// why it is for none.
    pub(crate) fn inbox_for_check(&self, check: &[u8]) -> Result<mpsc::Sender<Datagram>, Route> {
        let mut table = self.table.lock();
        match table.demux.authenticate(check) {
            Route::To(key) => {
                let Some(inbox) = table.inboxes.get(&key) else { return Err(Route::UnknownUfrag) };
                if inbox.is_closed() {
                    table.forget(key);
                    return Err(Route::UnknownUfrag);
                }
                Ok(inbox.clone())
            }
            refused => Err(refused),
        }
    }
}

/// The listening sockets of the media plane and the addresses put in candidates.
pub(crate) struct Sockets {
    pub(crate) udp: UdpSocket,
    pub(crate) advertised: Vec<SocketAddr>,
    /// The ICE-TCP listener and its advertised addresses, when ICE-TCP is on.
    pub(crate) tcp: Option<(tokio::net::TcpListener, Vec<SocketAddr>)>,
}

/// Binds nothing: takes the bound sockets, spawns the reader and the sender tasks and the ICE-TCP
/// listener (each restarted after a panic), returns the handle. Fails only when the socket
/// refuses the options the sender sets up.
pub(crate) fn spawn(
    sockets: Sockets,
    config: &WebrtcConfig,
    shutdown: CancellationToken,
) -> std::io::Result<MuxHandle> {
    let Sockets { udp: socket, advertised, tcp } = sockets;
    let socket = Arc::new(socket);
    let outgoing = send_batch::spawn(socket.clone(), shutdown.clone())?;
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let limits =
        DemuxLimits { addresses_per_session: config.addresses_per_session, max_addresses: config.max_addresses };
    let driver = Arc::new(Driver {
        socket,
        table: Mutex::new(Table { demux: Demux::new(limits), inboxes: HashMap::new(), full: false }),
        control: tokio::sync::Mutex::new(control_rx),
    });
    let advertised_tcp = tcp.as_ref().map(|(_, advertised)| advertised.clone()).unwrap_or_default();
    if let Some((listener, _)) = tcp {
        crate::ice_tcp::spawn(listener, driver.clone(), config, shutdown.clone());
    }
    tokio::spawn(supervise::restart("webrtc_udp_driver", move || run(driver.clone(), shutdown.clone())));
    Ok(MuxHandle {
        outgoing,
        control: control_tx,
        next_key: Arc::new(AtomicU64::new(1)),
        inbox_capacity: config.session_inbox_datagrams.max(1),
        advertised,
        advertised_tcp,
    })
}

async fn run(driver: Arc<Driver>, shutdown: CancellationToken) {
    // Held for the whole run; a panic releases it for the next one.
    let mut control = driver.control.lock().await;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    // One cancellation future for the run, not a fresh one (a lock and a waiter) per turn.
    let shutdown = shutdown.cancelled_owned();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => return,
            Some(message) = control.recv() => driver.table.lock().apply(message),
            _ = sweep.tick() => driver.table.lock().sweep(),
            received = driver.socket.recv_from(&mut buf) => {
                let (len, source) = match received {
                    Ok(received) => received,
                    Err(err) => {
                        // ICMP errors surface here on some platforms; they concern one peer only.
                        debug!("UDP receive error: {err}");
                        continue;
                    }
                };
                let datagram = &buf[..len];
                #[cfg(test)]
                tests::maybe_panic(datagram);
                if let Err(dropped) = driver.table.lock().deliver(source, datagram, Instant::now()) {
                    let reason = match dropped {
                        Dropped::Invalid(protocol) => protocol,
                        Dropped::Unrouted(route) => route.reason(),
                        Dropped::InboxFull => "inbox_full",
                    };
                    metrics::counter!("junction_webrtc_udp_dropped_total", "reason" => reason).increment(1);
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::udp_mux::tests::binding_request;

    /// A datagram that makes the driver task panic, in tests only.
    pub(crate) const PANIC_DATAGRAM: &[u8] = b"\xffpanic the UDP driver";

    pub(crate) fn maybe_panic(datagram: &[u8]) {
        if datagram == PANIC_DATAGRAM {
            panic!("injected UDP driver panic");
        }
    }

    /// An SRTP-shaped RTP packet (header and a 10-byte tag).
    fn rtp(seq: u8) -> Vec<u8> {
        let mut packet = vec![0x80, 96, 0, seq, 0, 0, 0, 0, 0, 0, 0, 1];
        packet.extend_from_slice(&[0xcc; 10]);
        packet
    }

    async fn recv(inbox: &mut mpsc::Receiver<Datagram>) -> Datagram {
        tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await.expect("a datagram in time").expect("open")
    }

    #[tokio::test]
    async fn routes_survive_a_panic_of_the_driver_and_forged_checks_route_nothing() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let sockets = Sockets { udp: server, advertised: vec![addr], tcp: None };
        let mux = spawn(sockets, &WebrtcConfig::default(), shutdown.clone()).unwrap();
        let (_, mut inbox_a) = mux.register("ufragA", "pwdA-0123456789012345");
        let (_, mut inbox_b) = mux.register("ufragB", "pwdB-0123456789012345");
        let peer_a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer_b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        peer_a.send_to(&binding_request("ufragA:c", "pwdA-0123456789012345"), addr).await.unwrap();
        assert_eq!(recv(&mut inbox_a).await.source, peer_a.local_addr().unwrap());
        peer_b.send_to(&binding_request("ufragB:c", "pwdB-0123456789012345"), addr).await.unwrap();
        assert_eq!(recv(&mut inbox_b).await.source, peer_b.local_addr().unwrap());

        attacker.send_to(PANIC_DATAGRAM, addr).await.unwrap();
        // Hostile input meanwhile: a forged check for A, the extension bomb, media from nowhere.
        attacker.send_to(&binding_request("ufragA:x", "guessed-0123456789012"), addr).await.unwrap();
        attacker.send_to(&crate::validate::tests::EXTENSION_BOMB, addr).await.unwrap();
        attacker.send_to(&rtp(9), addr).await.unwrap();
        // The restarted driver routes by the table it had.
        peer_a.send_to(&rtp(1), addr).await.unwrap();
        peer_b.send_to(&rtp(2), addr).await.unwrap();
        assert_eq!(recv(&mut inbox_a).await.payload[3], 1, "A's media after the restart");
        assert_eq!(recv(&mut inbox_b).await.payload[3], 2, "B's media after the restart");
        peer_a.send_to(&rtp(3), addr).await.unwrap();
        assert_eq!(recv(&mut inbox_a).await.payload[3], 3, "nothing of the attacker's reached A");
        assert!(inbox_b.try_recv().is_err());
        shutdown.cancel();
    }

    #[test]
    fn a_full_inbox_drops_and_a_closed_one_is_forgotten() {
        let mut table = Table {
            demux: Demux::new(DemuxLimits { addresses_per_session: 4, max_addresses: 16 }),
            inboxes: HashMap::new(),
            full: false,
        };
        let (tx, mut rx) = mpsc::channel(2);
        table.apply(Control::Register {
            key: SessionKey(1),
            ufrag: "u".into(),
            pwd: "p-0123456789012345678".into(),
            inbox: tx,
        });
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let now = Instant::now();
        assert_eq!(table.deliver(peer, &binding_request("u:c", "p-0123456789012345678"), now), Ok(SessionKey(1)));
        assert_eq!(table.deliver(peer, &rtp(1), now), Ok(SessionKey(1)));
        assert_eq!(table.deliver(peer, &rtp(2), now), Err(Dropped::InboxFull), "two queued: the third is dropped");
        assert_eq!(table.deliver(peer, &crate::validate::tests::EXTENSION_BOMB, now), Err(Dropped::Invalid("rtp")));
        assert!(rx.try_recv().is_ok());
        drop(rx);
        table.sweep();
        assert!(table.inboxes.is_empty());
        assert_eq!(table.demux.addresses(), 0, "the session's routes went with it");
    }
}

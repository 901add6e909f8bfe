//! The UDP driver: the one task that reads the shared socket. It routes each datagram through
//! the [`Demux`] to the inbox of the session it belongs to, and takes registrations from
//! sessions over a control channel, so the routing table has a single owner and no lock.
//! Sessions queue what they send to the batching sender ([`send_batch`](crate::send_batch)),
//! which shares the socket and sends many datagrams per system call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

use crate::send_batch::{self, SendQueue};
use crate::udp_mux::{Demux, Route, SessionKey};

/// Datagrams queued per session before the driver drops them (as the network would).
const INBOX_CAPACITY: usize = 512;
/// Large enough for any datagram WebRTC peers send (they keep under the path MTU).
const MAX_DATAGRAM: usize = 2048;

/// One received datagram, as handed to a session.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub(crate) source: SocketAddr,
    pub(crate) at: Instant,
    pub(crate) payload: Bytes,
}

enum Control {
    Register { key: SessionKey, ufrag: String, inbox: mpsc::Sender<Datagram> },
    AddUfrag { key: SessionKey, ufrag: String },
    Unregister { key: SessionKey },
}

/// What sessions hold of the driver: the queue to send on and the control channel.
#[derive(Clone)]
pub(crate) struct MuxHandle {
    outgoing: SendQueue,
    control: mpsc::UnboundedSender<Control>,
    next_key: Arc<AtomicU64>,
    /// The address clients send to (what the ICE candidate says).
    pub(crate) advertised: SocketAddr,
}

impl MuxHandle {
    /// Registers a new session under its local ICE ufrag; returns its key and its inbox.
    pub(crate) fn register(&self, ufrag: &str) -> (SessionKey, mpsc::Receiver<Datagram>) {
        let key = SessionKey(self.next_key.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let _ = self.control.send(Control::Register { key, ufrag: ufrag.to_owned(), inbox: tx });
        (key, rx)
    }

    /// Routes a further ufrag to the session (after an ICE restart).
    pub(crate) fn add_ufrag(&self, key: SessionKey, ufrag: &str) {
        let _ = self.control.send(Control::AddUfrag { key, ufrag: ufrag.to_owned() });
    }

    pub(crate) fn unregister(&self, key: SessionKey) {
        let _ = self.control.send(Control::Unregister { key });
    }

    /// Queues a datagram for `destination`; waits only while the send queue is full.
    pub(crate) async fn send(&self, destination: SocketAddr, payload: Vec<u8>) {
        self.outgoing.send(destination, payload).await;
    }
}

/// Binds nothing: takes a bound socket, spawns the reader and the sender tasks, returns the
/// handle. Fails only when the socket refuses the options the sender sets up.
pub(crate) fn spawn(
    socket: UdpSocket,
    advertised: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<MuxHandle> {
    let socket = Arc::new(socket);
    let outgoing = send_batch::spawn(socket.clone(), shutdown.clone())?;
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(socket, control_rx, shutdown));
    Ok(MuxHandle { outgoing, control: control_tx, next_key: Arc::new(AtomicU64::new(1)), advertised })
}

async fn run(socket: Arc<UdpSocket>, mut control: mpsc::UnboundedReceiver<Control>, shutdown: CancellationToken) {
    let mut demux = Demux::default();
    let mut inboxes: HashMap<SessionKey, mpsc::Sender<Datagram>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let unrouted = metrics::counter!("junction_webrtc_udp_unrouted_total");
    let dropped = metrics::counter!("junction_webrtc_udp_inbox_drops_total");
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            Some(message) = control.recv() => match message {
                Control::Register { key, ufrag, inbox } => {
                    demux.add_ufrag(&ufrag, key);
                    inboxes.insert(key, inbox);
                }
                Control::AddUfrag { key, ufrag } => demux.add_ufrag(&ufrag, key),
                Control::Unregister { key } => {
                    demux.remove(key);
                    inboxes.remove(&key);
                }
            },
            received = socket.recv_from(&mut buf) => {
                let (len, source) = match received {
                    Ok(received) => received,
                    Err(err) => {
                        // ICMP errors surface here on some platforms; they concern one peer only.
                        debug!("UDP receive error: {err}");
                        continue;
                    }
                };
                let datagram = &buf[..len];
                let key = match demux.route(source, datagram) {
                    Route::To(key) => key,
                    Route::UnknownUfrag | Route::UnknownAddress => {
                        unrouted.increment(1);
                        trace!(%source, len, "datagram for no session");
                        continue;
                    }
                };
                let Some(inbox) = inboxes.get(&key) else { continue };
                let item = Datagram { source, at: Instant::now(), payload: Bytes::copy_from_slice(datagram) };
                match inbox.try_send(item) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => dropped.increment(1),
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        // The session ended before its unregistration arrived.
                        demux.remove(key);
                        inboxes.remove(&key);
                    }
                }
            }
        }
    }
}

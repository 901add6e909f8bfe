//! What a session tells a signalling surface that shares the peer's room with it and
//! renegotiates (the browser WebSocket), beyond [`SessionEvent`]s: the room's events (the
//! session owns the endpoint, so it reads them and passes them on), the tracks the peer now
//! publishes, data channel traffic, and offers with the room track each new m-line carries.
//! Plus the labels such a surface gives the m-lines a peer sends on.
//!
//! The channel ([`signal_channel`]) also withdraws offers: when the peer's own offer crosses
//! one of ours, the session answers the peer's and drops its own, but its offer may already be
//! queued here while the answer goes back another way (the command's reply). The receiver
//! skips such an offer, so no surface can hand the peer an offer whose m-lines no longer fit
//! after that answer (Chromium refuses it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use junction_core::{EndpointEvent, MediaKind, PeerId, TrackId, TrackInfo, TrackSource};
use tokio::sync::mpsc;
use tracing::debug;

use super::SessionEvent;

/// A message from a session to its signalling surface, in the order things happened.
#[derive(Debug, Clone)]
pub enum SessionSignal {
    /// A [`SessionEvent`].
    Event(SessionEvent),
    /// A renegotiation offer for the peer: send it, and pass the answer to
    /// [`SessionHandle::accept_answer`](super::SessionHandle::accept_answer). `tracks` names the
    /// room track each new sending m-line carries once the offer is answered.
    Offer {
        /// Counts the session's offers from 1; see [`SignalReceiver::offer_withdrawn`].
        id: u64,
        sdp: String,
        tracks: Vec<OfferedTrack>,
    },
    /// Media arrived on one of the peer's m-lines and is published as `track`.
    Published {
        mid: String,
        track: TrackInfo,
    },
    /// An event of the peer's room, after the session handled it.
    Room(EndpointEvent),
    /// The peer opened a data channel.
    ChannelOpen {
        label: String,
    },
    /// A message on a data channel.
    ChannelData {
        label: String,
        binary: bool,
        data: Vec<u8>,
    },
    ChannelClosed {
        label: String,
    },
}

/// One sending m-line of an offer and the room track it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTrack {
    pub mid: String,
    pub track: TrackId,
    pub peer: PeerId,
    pub kind: MediaKind,
    pub source: TrackSource,
}

/// How the peer labels what it sends on one m-line (which one is its camera, its screen...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackLabel {
    pub mid: String,
    pub name: String,
    pub source: TrackSource,
}

/// Signals queued for the surface before the session gives up on it.
const SIGNAL_CAPACITY: usize = 4096;

/// A channel for a session's signals: the sender goes to [`SessionSpec::with_signals`](super::SessionSpec::with_signals),
/// the surface reads the receiver.
pub fn signal_channel() -> (SignalSender, SignalReceiver) {
    let (tx, rx) = mpsc::channel(SIGNAL_CAPACITY);
    let withdrawn = Arc::new(AtomicU64::new(0));
    (SignalSender { tx, withdrawn: withdrawn.clone() }, SignalReceiver { rx, withdrawn })
}

/// The session's end of a [`signal_channel`].
#[derive(Debug, Clone)]
pub struct SignalSender {
    /// Boxed: a channel allocates its first block of 32 slots when it is made, and a
    /// `SessionSignal` is 256 bytes.
    tx: mpsc::Sender<Box<SessionSignal>>,
    /// The latest offer a peer's offer replaced (0: none).
    withdrawn: Arc<AtomicU64>,
}

/// The surface's end of a [`signal_channel`].
pub struct SignalReceiver {
    rx: mpsc::Receiver<Box<SessionSignal>>,
    withdrawn: Arc<AtomicU64>,
}

impl SignalReceiver {
    /// The next signal, skipping offers withdrawn since they were queued; `None` once the
    /// session is gone.
    pub async fn recv(&mut self) -> Option<SessionSignal> {
        loop {
            let signal = self.rx.recv().await?;
            match &*signal {
                SessionSignal::Offer { id, .. } if self.offer_withdrawn(*id) => {
                    debug!(offer = id, "dropping an offer the peer's offer replaced");
                }
                _ => return Some(*signal),
            }
        }
    }

    /// Whether the offer numbered `id` was replaced by an offer of the peer, which has (or
    /// will have) the answer to its own offer, without this offer's m-lines.
    pub fn offer_withdrawn(&self, id: u64) -> bool {
        id <= self.withdrawn.load(Ordering::Acquire)
    }
}

/// The session's end of the signal channel; absent for surfaces that do not listen.
#[derive(Default)]
pub(crate) struct Signals {
    tx: Option<SignalSender>,
}

impl Signals {
    pub(crate) fn new(tx: Option<SignalSender>) -> Self {
        Self { tx }
    }

    /// Queues a signal without waiting; `false` when the surface stopped reading (its queue is
    /// full or gone), which ends the session.
    pub(crate) fn send(&self, signal: SessionSignal) -> bool {
        match &self.tx {
            Some(sender) => sender.tx.try_send(Box::new(signal)).is_ok(),
            None => true,
        }
    }

    /// A peer's offer replaced our offer `id`: the receiver drops it if it is still queued.
    /// Called before the answer to the peer's offer goes back.
    pub(crate) fn withdraw(&self, id: u64) {
        if let Some(sender) = &self.tx {
            sender.withdrawn.fetch_max(id, Ordering::Release);
        }
    }
}

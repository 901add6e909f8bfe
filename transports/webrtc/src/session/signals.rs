//! What a session tells a signalling surface that shares the peer's room with it and
//! renegotiates (the browser WebSocket), beyond [`SessionEvent`]s: the room's events (the
//! session owns the endpoint, so it reads them and passes them on), the tracks the peer now
//! publishes, data channel traffic, and offers with the room track each new m-line carries.
//! Plus the labels such a surface gives the m-lines a peer sends on.

use junction_core::{EndpointEvent, MediaKind, PeerId, TrackId, TrackInfo, TrackSource};
use tokio::sync::mpsc;

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
        /// Counts the session's offers from 1; see [`SessionHandle::offer_withdrawn`](super::SessionHandle::offer_withdrawn).
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
pub const SIGNAL_CAPACITY: usize = 4096;

/// The session's end of the signal channel; absent for surfaces that do not listen.
#[derive(Default)]
pub(crate) struct Signals {
    tx: Option<mpsc::Sender<SessionSignal>>,
}

impl Signals {
    pub(crate) fn new(tx: Option<mpsc::Sender<SessionSignal>>) -> Self {
        Self { tx }
    }

    /// Queues a signal without waiting; `false` when the surface stopped reading (its queue is
    /// full or gone), which ends the session.
    pub(crate) fn send(&self, signal: SessionSignal) -> bool {
        match &self.tx {
            Some(tx) => tx.try_send(signal).is_ok(),
            None => true,
        }
    }
}

//! A session's hold on its peer's endpoint. In mesh rooms, and in SFU rooms until the browser's
//! first offer, the session owns the endpoint itself. From the first offer of an SFU room on, a
//! media session of `webrtc`'s driver owns it (the task that owns the str0m connection must
//! publish, subscribe and follow subscriptions): requests then go to that task as typed
//! [`PeerRequest`]s through its handle, one hop each, and room events come back as its signals.
//! Either way one task owns the endpoint.

use junction_core::{CloseReason, Codec, EndpointEvent, MediaOut, PeerId, RoomInfo, RoomMode};
use junction_engine::{Endpoint, EndpointMedia, EndpointRpc};
use junction_webrtc::{
    PeerReply, PeerRequest, SessionError, SessionHandle, SessionSignal, SessionSpec, SignalReceiver,
};

use crate::error::WireError;

/// What the room hands a session.
pub enum RoomInput {
    /// A room event; `None` when the event stream ended.
    Event(Option<EndpointEvent>),
    /// A frame or feedback item for the endpoint the session holds itself.
    Media(MediaOut),
    /// A signal of the media session that holds the endpoint; `None` when it is gone.
    Signal(Option<SessionSignal>),
}

enum Link {
    Direct {
        rpc: EndpointRpc,
        media: EndpointMedia,
    },
    Media {
        handle: SessionHandle,
        signals: SignalReceiver,
    },
    /// Only while the endpoint moves to a media session.
    Moving,
}

/// A session's membership of a room.
pub struct RoomPeer {
    pub info: RoomInfo,
    pub identity: PeerId,
    link: Link,
    /// Data channels of the media session that are open (`junction-reliable`, ...).
    pub(super) channels: Vec<String>,
    /// The codecs the client decodes: what its subscriptions ask for.
    pub(super) accept: Vec<Codec>,
}

fn media_gone(err: SessionError) -> WireError {
    WireError::new("media_ended", format!("the media session is over: {err}"))
}

impl RoomPeer {
    pub fn new(info: RoomInfo, rpc: EndpointRpc, media: EndpointMedia, accept: Vec<Codec>) -> Self {
        let identity = rpc.peer().clone();
        RoomPeer { info, identity, link: Link::Direct { rpc, media }, channels: Vec::new(), accept }
    }

    pub fn mode(&self) -> RoomMode {
        self.info.mode
    }

    pub fn media_handle(&self) -> Option<&SessionHandle> {
        match &self.link {
            Link::Media { handle, .. } => Some(handle),
            _ => None,
        }
    }

    /// Carries out a request for the peer's endpoint, wherever it is: here, or in one hop in
    /// the media session that holds it.
    pub async fn request(&self, request: PeerRequest) -> Result<PeerReply, WireError> {
        match &self.link {
            Link::Direct { rpc, .. } => request.apply(rpc).map_err(WireError::from),
            Link::Media { handle, .. } => handle.request(request).await.map_err(media_gone)?.map_err(WireError::from),
            Link::Moving => Err(WireError::new("internal", "the endpoint is moving to its media session")),
        }
    }

    /// Hands the endpoint to the media session `start` starts; `false` if one already has it.
    pub fn start_media(
        &mut self,
        spec: SessionSpec,
        start: impl FnOnce(Endpoint, SessionSpec) -> SessionHandle,
    ) -> bool {
        if !matches!(self.link, Link::Direct { .. }) {
            return false;
        }
        let Link::Direct { rpc, media } = std::mem::replace(&mut self.link, Link::Moving) else {
            return false;
        };
        let (tx, signals) = junction_webrtc::signal_channel();
        let handle = start(Endpoint { rpc, media }, spec.with_signals(tx));
        self.link = Link::Media { handle, signals };
        true
    }

    /// The next thing the room hands the session; pending forever when there is none.
    pub async fn next_input(&mut self) -> RoomInput {
        match &mut self.link {
            Link::Direct { rpc, media } => tokio::select! {
                biased;
                event = rpc.next_event() => RoomInput::Event(event),
                // `None` once the session is over: its `Closed` event says so, above.
                Some(item) = media.recv() => RoomInput::Media(item),
            },
            Link::Media { signals, .. } => RoomInput::Signal(signals.recv().await),
            Link::Moving => std::future::pending().await,
        }
    }

    /// Takes the peer out of its room for `reason`.
    pub fn leave(self, reason: CloseReason) {
        match self.link {
            Link::Direct { rpc, .. } => rpc.leave(reason),
            Link::Media { handle, .. } => handle.leave(reason),
            Link::Moving => {}
        }
    }
}

//! The control bus: every node publishes what changes in its rooms on the Redis channel
//! `junction:bus` and applies what the others publish (as Mooyaho shares channel state through
//! Redis pub/sub). A message is one JSON [`Envelope`]; the subscriber reconnects by itself and,
//! each time it (re)connects, asks every node for its full state so nothing missed during an
//! outage stays missed.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::StreamExt;
use junction_core::{
    CloseReason, CodecParams, DataMessage, PeerId, PeerInfo, RoomId, RoomInfo, SessionId, TrackId, TrackInfo,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub(crate) const CHANNEL: &str = "junction:bus";
/// Larger messages are not applied (a node's full state included).
pub(crate) const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The node that sent it.
    pub from: String,
    /// That node's start time: tells a restarted node from its previous life.
    pub epoch: u64,
    pub msg: BusMessage,
}

/// A track as another node needs it: its info and the decoder configuration, which the
/// info's JSON form leaves out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireTrack {
    pub info: TrackInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

impl WireTrack {
    pub fn new(info: &TrackInfo) -> Self {
        Self { info: info.clone(), config: info.params.config.as_ref().map(|c| B64.encode(c)) }
    }

    pub fn into_info(self) -> TrackInfo {
        let mut info = self.info;
        let config = self.config.and_then(|c| B64.decode(c).ok()).map(Bytes::from);
        info.params = CodecParams { config, ..info.params };
        info
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WirePeer {
    pub info: PeerInfo,
    pub tracks: Vec<WireTrack>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireRoom {
    pub info: RoomInfo,
    pub peers: Vec<WirePeer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BusMessage {
    /// A node (re)connected: everyone publish their [`BusMessage::State`].
    SyncRequest,
    /// Everything of the sender's own: its rooms and its clients with their tracks. Authoritative
    /// for that node (mirrors of its peers not listed here are gone).
    State {
        rooms: Vec<WireRoom>,
    },
    RoomCreated {
        room: RoomInfo,
    },
    RoomDeleted {
        room: RoomId,
    },
    PeerJoined {
        room: RoomId,
        peer: PeerInfo,
    },
    PeerUpdated {
        room: RoomId,
        peer: PeerInfo,
    },
    PeerLeft {
        room: RoomId,
        peer: PeerId,
        session: SessionId,
        reason: CloseReason,
    },
    TrackPublished {
        room: RoomId,
        track: WireTrack,
    },
    TrackUnpublished {
        room: RoomId,
        peer: PeerId,
        track: TrackId,
    },
    TrackMuted {
        room: RoomId,
        peer: PeerId,
        track: TrackId,
        muted: bool,
    },
    /// A data message from `from` (a client of any node) for `to`, a client of the node that has it.
    Data {
        room: RoomId,
        from: PeerId,
        to: PeerId,
        topic: Option<String>,
        payload: String,
        reliable: bool,
    },
    /// Signalling (mesh rooms) from `from` to `to`.
    Signal {
        room: RoomId,
        from: PeerId,
        to: PeerId,
        payload: serde_json::Value,
    },
    /// An operator removed `peer` through another node's API.
    Kick {
        room: RoomId,
        peer: PeerId,
    },
    /// The sender is shutting down: its peers are leaving.
    Draining,
}

impl BusMessage {
    pub fn data(room: &RoomId, to: &PeerId, message: &DataMessage) -> Self {
        BusMessage::Data {
            room: room.clone(),
            from: message.from.clone(),
            to: to.clone(),
            topic: message.topic.clone(),
            payload: B64.encode(&message.payload),
            reliable: message.reliable,
        }
    }
}

/// The data message a [`BusMessage::Data`] carries, addressed to `to` only.
pub(crate) fn data_message(
    from: PeerId,
    to: PeerId,
    topic: Option<String>,
    payload: &str,
    reliable: bool,
) -> Option<DataMessage> {
    let payload = Bytes::from(B64.decode(payload).ok()?);
    Some(DataMessage { from, to: vec![to], topic, payload, reliable })
}

/// What the subscriber hands the cluster: messages, and each (re)connection.
pub(crate) enum Inbound {
    Connected,
    Message(Box<Envelope>),
}

/// Follows `junction:bus` until `shutdown`, reconnecting after any failure.
pub(crate) async fn subscribe(client: redis::Client, out: mpsc::Sender<Inbound>, shutdown: CancellationToken) {
    let mut logged_down = false;
    loop {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = tokio::time::timeout(Duration::from_secs(2), attempt) => result,
        };
        let mut pubsub = match pubsub {
            Ok(Ok(pubsub)) => pubsub,
            failed => {
                if !logged_down {
                    let why = match failed {
                        Ok(Err(err)) => err.to_string(),
                        _ => "timed out".into(),
                    };
                    warn!("cluster bus: cannot subscribe ({why}); retrying every 500 ms");
                    logged_down = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        info!(channel = CHANNEL, "cluster bus subscribed");
        logged_down = false;
        if out.send(Inbound::Connected).await.is_err() {
            return;
        }
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = messages.next() => message,
            };
            let Some(message) = message else { break };
            let bytes = message.get_payload_bytes();
            if bytes.len() > MAX_MESSAGE_BYTES {
                warn!(bytes = bytes.len(), "cluster bus: message over {MAX_MESSAGE_BYTES} bytes ignored");
                continue;
            }
            match serde_json::from_slice::<Envelope>(bytes) {
                Ok(envelope) => {
                    if out.send(Inbound::Message(Box::new(envelope))).await.is_err() {
                        return;
                    }
                }
                Err(err) => debug!("cluster bus: unreadable message ignored: {err}"),
            }
        }
        warn!("cluster bus: connection to Redis lost; reconnecting");
    }
}

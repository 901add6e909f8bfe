//! The media half of a session in an SFU room: the browser's offers, answers and candidates go
//! to a media session of `webrtc`'s driver (started by the first offer, which takes the peer's
//! endpoint over), and what that media session signals comes back — its renegotiation offers,
//! the tracks the browser now publishes, the room's events, and the data channels that carry
//! room data messages (`junction-reliable`, `junction-unreliable`) besides the socket.

use junction_core::{CloseReason, DataMessage, PeerId, RoomMode, TrackSource};
use junction_webrtc::{EgressPolicy, PeerRequest, SessionError, SessionEvent, SessionSignal, SessionSpec, TrackLabel};
use serde::{Deserialize, Serialize};

use super::room::{data_message, data_request};
use super::{Ending, Reply, Session};
use crate::error::WireError;
use crate::protocol::{OfferedTrackView, ServerMessage, WireTrackLabel};

/// The data channel of reliable, ordered room data messages.
pub const RELIABLE_CHANNEL: &str = "junction-reliable";
/// The data channel of unordered messages without retransmission.
pub const UNRELIABLE_CHANNEL: &str = "junction-unreliable";

/// A data message a client writes on a data channel (JSON text).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelIn {
    payload: Option<String>,
    payload_base64: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    to: Vec<PeerId>,
}

/// A data message the server writes on a data channel (JSON text).
#[derive(Debug, Serialize)]
struct ChannelOut<'a> {
    from: &'a PeerId,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

fn sdp_error(err: SessionError) -> WireError {
    let code = match err {
        SessionError::BadSdp(_) => "bad_sdp",
        SessionError::OfferRefused(_) | SessionError::NoCodec { .. } => "offer_refused",
        SessionError::AnswerRefused(_) => "answer_refused",
        SessionError::NoOfferPending => "no_offer",
        SessionError::BadCandidate { .. } => "bad_candidate",
        SessionError::SdpTooLarge { .. }
        | SessionError::TooManyMediaLines { .. }
        | SessionError::TooManyCandidates { .. } => "limit_exceeded",
        SessionError::Closed => "media_ended",
    };
    WireError::new(code, err.to_string())
}

fn labels(tracks: Vec<WireTrackLabel>) -> Vec<TrackLabel> {
    tracks
        .into_iter()
        .map(|t| {
            let name = t.name.unwrap_or_else(|| match t.source {
                TrackSource::Unknown => t.mid.clone(),
                source => {
                    serde_json::to_value(source).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
                }
            });
            TrackLabel { mid: t.mid, name, source: t.source }
        })
        .collect()
}

/// The first `a=mid` of an SDP.
fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.trim().strip_prefix("a=mid:")).map(str::to_owned)
}

impl Session {
    fn sfu_peer(&self) -> Result<&super::RoomPeer, WireError> {
        let peer = self.room.as_ref().ok_or_else(|| WireError::new("not_joined", "join a room first"))?;
        if peer.mode() == RoomMode::Mesh {
            let message = format!("room {} is a mesh room: send offers to peers with `signal`", peer.info.name);
            return Err(WireError::new("mesh_room", message));
        }
        Ok(peer)
    }

    /// The browser's offer: the first starts its media session, later ones renegotiate it.
    pub(super) async fn on_offer(
        &mut self,
        id: Option<serde_json::Value>,
        sdp: String,
        tracks: Vec<WireTrackLabel>,
    ) -> Result<Reply, WireError> {
        let peer = self.sfu_peer()?;
        let labels = labels(tracks);
        let answer = match peer.media_handle() {
            Some(handle) => handle.accept_labelled_offer(&sdp, labels).await.map_err(sdp_error)?,
            None => {
                let transport = self.ctx.webrtc.clone().ok_or_else(|| {
                    WireError::new(
                        "media_unavailable",
                        "this server runs without WebRTC media (webrtc.enabled = false)",
                    )
                })?;
                let prefer_video = self.ctx.engine.publisher_video_codec(&peer.info.name);
                let negotiated = transport.negotiate_room(&sdp, prefer_video).map_err(sdp_error)?;
                let answer = negotiated.answer_sdp().to_owned();
                let spec = SessionSpec::new("webrtc", true, EgressPolicy::Room).with_labels(labels);
                if let Some(peer) = self.room.as_mut() {
                    peer.start_media(spec, |joined, spec| negotiated.start(joined, spec));
                }
                tracing::info!("media session started");
                answer
            }
        };
        let mid = first_mid(&answer);
        let trickled = junction_webrtc::candidate_lines(&answer);
        self.push(ServerMessage::Answer { id, sdp: answer });
        // The answer carries them too; trickled after it, for clients that want them apart.
        for candidate in trickled {
            self.push(ServerMessage::Candidate { candidate: Some(candidate), sdp_mid: mid.clone() });
        }
        Ok(Reply::Done)
    }

    pub(super) async fn on_answer(&mut self, sdp: String) -> Result<Reply, WireError> {
        let peer = self.sfu_peer()?;
        let handle = peer.media_handle().ok_or_else(|| WireError::new("no_offer", "the server has made no offer"))?;
        handle.accept_answer(&sdp).await.map_err(sdp_error)?;
        Ok(Reply::Ok)
    }

    pub(super) async fn on_candidate(&mut self, candidate: Option<String>) -> Result<Reply, WireError> {
        let peer = self.sfu_peer()?;
        let Some(candidate) = candidate.filter(|c| !c.trim().is_empty()) else { return Ok(Reply::Ok) };
        let handle =
            peer.media_handle().ok_or_else(|| WireError::new("no_media", "send an offer before candidates"))?;
        handle.add_remote_candidate(&candidate).await.map_err(sdp_error)?;
        Ok(Reply::Ok)
    }

    /// A signal of the media session holding the peer's endpoint (`None`: it is gone).
    pub async fn on_media_signal(&mut self, signal: Option<SessionSignal>) {
        let Some(signal) = signal else {
            self.media_ended(CloseReason::Error { message: "the media session stopped".into() });
            return;
        };
        match signal {
            SessionSignal::Room(event) => self.on_room_event(event).await,
            SessionSignal::Offer { sdp, tracks, .. } => {
                let tracks = tracks
                    .into_iter()
                    .map(|t| OfferedTrackView {
                        mid: t.mid,
                        track: t.track,
                        peer: t.peer,
                        kind: t.kind,
                        source: t.source,
                    })
                    .collect();
                self.push(ServerMessage::Offer { sdp, tracks });
            }
            SessionSignal::Published { mid, track } => self.push(ServerMessage::Published { mid, track }),
            SessionSignal::ChannelOpen { label } => {
                if let Some(peer) = self.room.as_mut() {
                    peer.channels.retain(|l| *l != label);
                    peer.channels.push(label);
                }
            }
            SessionSignal::ChannelClosed { label } => {
                if let Some(peer) = self.room.as_mut() {
                    peer.channels.retain(|l| *l != label);
                }
            }
            SessionSignal::ChannelData { label, data, .. } => self.on_channel_data(&label, &data).await,
            SessionSignal::Event(SessionEvent::Closed { reason }) => self.media_ended(reason),
            SessionSignal::Event(event) => tracing::debug!(?event, "media session"),
        }
    }

    /// The media session ended, and the peer left its room with it.
    fn media_ended(&mut self, reason: CloseReason) {
        if self.room.take().is_some() {
            self.ctx.registry.unbind_peer(self.id);
            tracing::info!(reason = reason.as_str(), "media session ended; the peer left its room");
            let message = match &reason {
                CloseReason::Error { message } => Some(message.clone()),
                _ => None,
            };
            self.end(Ending::from_close(&reason), message);
        }
    }

    /// A room data message the browser wrote on a data channel.
    async fn on_channel_data(&mut self, label: &str, data: &[u8]) {
        let reliable = match label {
            RELIABLE_CHANNEL => true,
            UNRELIABLE_CHANNEL => false,
            _ => return,
        };
        let Some(peer) = self.room.as_ref() else { return };
        let result = match serde_json::from_slice::<ChannelIn>(data) {
            Ok(msg) => {
                match data_request(msg.payload, msg.payload_base64, msg.topic, msg.to, reliable, peer.identity.clone())
                {
                    Ok(message) => peer.request(PeerRequest::SendData(message)).await.map(|_| ()),
                    Err(err) => Err(err),
                }
            }
            Err(err) => Err(WireError::new("invalid_json", format!("data channel {label}: {err}"))),
        };
        if let Err(error) = result {
            self.push(ServerMessage::error(None, Some("data".into()), error));
        }
    }

    /// Delivers a room data message on the browser's data channel of the same reliability, if
    /// that channel is open; `false` means it goes on the socket instead.
    pub(super) async fn send_on_channel(&mut self, message: &DataMessage) -> bool {
        let label = if message.reliable { RELIABLE_CHANNEL } else { UNRELIABLE_CHANNEL };
        let Some(peer) = self.room.as_ref() else { return false };
        let Some(handle) = peer.media_handle().filter(|_| peer.channels.iter().any(|l| l == label)) else {
            return false;
        };
        let ServerMessage::Data { from, topic, payload, payload_base64, .. } = data_message(message.clone()) else {
            return false;
        };
        let out = ChannelOut { from: &from, topic: topic.as_deref(), payload, payload_base64 };
        let Ok(json) = serde_json::to_vec(&out) else { return false };
        handle.send_on_channel(label, false, json).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_tracks_by_source_and_candidates_are_read_from_sdp() {
        let labels = labels(vec![
            WireTrackLabel { mid: "0".into(), source: TrackSource::Camera, name: None },
            WireTrackLabel { mid: "1".into(), source: TrackSource::Unknown, name: None },
            WireTrackLabel { mid: "2".into(), source: TrackSource::ScreenShare, name: Some("slides".into()) },
        ]);
        let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["camera", "1", "slides"]);
        let sdp = "v=0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host\r\na=mid:1\r\n";
        assert_eq!(junction_webrtc::candidate_lines(sdp), ["candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host"]);
        assert_eq!(first_mid(sdp).as_deref(), Some("0"));
    }
}

//! A room peer on the `webrtc` crate, signalled over the browser transport's WebSocket (`/ws`,
//! see docs/protocol-websocket.md) the way the JavaScript SDK does it: join with a token, offer
//! one connection (a sendonly m-line per published codec and the `junction-reliable` data
//! channel), trickle candidates both ways, and answer the server's renegotiation offers, which
//! add an m-line per room track this peer receives.
//!
//! ```ignore
//! let codecs = ClientOptions::new(&[ClientCodec::Vp8, ClientCodec::Opus]);
//! let alice = RoomClient::publisher(&server.base, &alice_token, codecs.clone()).await?;
//! let mut bob = RoomClient::receiver(&server.base, &bob_token, codecs).await?;
//! alice.send_video(synthetic::vp8_frame(0, true), Duration::from_millis(40)).await?;
//! let frame = bob.next_frame_of(MediaKind::Video, Duration::from_secs(5)).await;
//! ```
//!
//! Candidates go only by trickle: they are taken out of every description before it is sent
//! or applied, so a test passes only if `candidate` messages work in both directions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription};

use super::{Client, ClientError, ClientOptions, MediaKind, ReceivedFrame, SendTrack, rtc_err};

/// How long joining (socket, join, offer, ICE and DTLS) may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// One peer of an SFU room: its WebSocket session and its WebRTC connection to the server.
pub struct RoomClient {
    client: Client,
    tracks: Vec<SendTrack>,
    frames: mpsc::UnboundedReceiver<ReceivedFrame>,
    /// Messages to write on the socket.
    outgoing: mpsc::UnboundedSender<Value>,
    /// Every server message, in order, as the signalling task handed them on.
    inbox: Mutex<Inbox>,
    /// The `welcome` and `joined` the socket got.
    pub welcome: Value,
    pub joined: Value,
    signalling: tokio::task::JoinHandle<()>,
}

impl RoomClient {
    /// Joins the room of `token` on the server at `base` (`http://127.0.0.1:port`) and
    /// publishes one track per codec of `options`; returns once ICE and DTLS are up.
    pub async fn publisher(base: &str, token: &str, options: ClientOptions) -> Result<RoomClient, ClientError> {
        Self::join(base, token, options, true).await
    }

    /// Joins the room of `token` without publishing, accepting the codecs of `options` for
    /// the tracks the server offers; returns once ICE and DTLS are up.
    pub async fn receiver(base: &str, token: &str, options: ClientOptions) -> Result<RoomClient, ClientError> {
        Self::join(base, token, options, false).await
    }

    /// Opens `/ws?token=…`, joins the token's room and connects media (publishing, if asked).
    async fn join(base: &str, token: &str, options: ClientOptions, publish: bool) -> Result<RoomClient, ClientError> {
        let (client, frames) = Client::build(&options, token).await?;
        let tracks = if publish { client.add_send_tracks(&options).await? } else { Vec::new() };
        client.pc.create_data_channel("junction-reliable", None).await.map_err(rtc_err)?;

        let url = format!("{}/ws?token={token}", base.replacen("http", "ws", 1));
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(rtc_err)?;
        let welcome = next_json(&mut socket).await?;
        if welcome["type"] != "welcome" {
            return Err(ClientError::WebRtc(format!("expected welcome, got {welcome}")));
        }
        socket.send(Message::text(json!({"type": "join", "id": 1}).to_string())).await.map_err(rtc_err)?;
        let joined = next_json(&mut socket).await?;
        if joined["type"] != "joined" {
            return Err(ClientError::WebRtc(format!("expected joined, got {joined}")));
        }

        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let signalling = tokio::spawn(signal(socket, client.pc.clone(), outgoing_rx, outgoing.clone(), messages_tx));

        // The offer, without candidates; then each candidate on its own, and the end of them.
        let offer = client.pc.create_offer(None).await.map_err(rtc_err)?;
        client.pc.set_local_description(offer).await.map_err(rtc_err)?;
        let mut gathered = client.gathered.clone();
        let _ = tokio::time::timeout(Duration::from_secs(3), gathered.wait_for(|done| *done)).await;
        let local = client.pc.local_description().await.ok_or(ClientError::WebRtc("no local description".into()))?;
        let sources: Vec<Value> = m_lines(&local.sdp)
            .into_iter()
            .filter_map(|(kind, mid)| match kind.as_str() {
                "audio" => Some(json!({"mid": mid, "source": "microphone"})),
                "video" => Some(json!({"mid": mid, "source": "camera"})),
                _ => None,
            })
            .collect();
        let first_mid = m_lines(&local.sdp).into_iter().next().map(|(_, mid)| mid);
        let send = |message: Value| outgoing.send(message).map_err(|_| ClientError::WebRtc("socket gone".into()));
        send(json!({"type": "offer", "id": 2, "sdp": without_candidates(&local.sdp), "tracks": sources}))?;
        for candidate in junction_webrtc::candidate_lines(&local.sdp) {
            send(json!({"type": "candidate", "candidate": candidate, "sdp_mid": first_mid}))?;
        }
        send(json!({"type": "candidate", "candidate": null}))?;

        let room = RoomClient {
            client,
            tracks,
            frames,
            outgoing,
            inbox: Mutex::new(Inbox { messages, backlog: VecDeque::new() }),
            welcome,
            joined,
            signalling,
        };
        room.client.wait_for_state(RTCPeerConnectionState::Connected, JOIN_TIMEOUT).await?;
        Ok(room)
    }

    /// This peer's identity.
    pub fn identity(&self) -> &str {
        self.welcome["identity"].as_str().unwrap_or_default()
    }

    /// Writes a message on the socket.
    pub fn send(&self, message: Value) -> Result<(), ClientError> {
        self.outgoing.send(message).map_err(|_| ClientError::WebRtc("socket gone".into()))
    }

    /// The next server message of `kind` (`offer`, `answer` and `candidate` are handled by the
    /// client itself); other messages are kept for later.
    pub async fn expect(&self, kind: &str, timeout: Duration) -> Result<Value, ClientError> {
        let mut inbox = self.inbox.lock().await;
        let Inbox { messages, backlog } = &mut *inbox;
        if let Some(at) = backlog.iter().position(|m| m["type"] == kind) {
            return Ok(backlog.remove(at).unwrap_or_default());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, messages.recv())
                .await
                .map_err(|_| ClientError::WebRtc(format!("no {kind} in {timeout:?}; got {backlog:?}")))?
                .ok_or_else(|| ClientError::WebRtc(format!("socket closed while waiting for {kind}")))?;
            if message["type"] == kind {
                return Ok(message);
            }
            backlog.push_back(message);
        }
    }

    async fn send_sample(&self, kind: MediaKind, data: Bytes, duration: Duration) -> Result<(), ClientError> {
        super::send_sample(&self.tracks, kind, data, duration).await
    }

    /// Sends one frame on the published video track, lasting `duration`.
    pub async fn send_video(&self, frame: Bytes, duration: Duration) -> Result<(), ClientError> {
        self.send_sample(MediaKind::Video, frame, duration).await
    }

    /// Sends one Opus packet on the published audio track, lasting `duration`.
    pub async fn send_audio(&self, packet: Bytes, duration: Duration) -> Result<(), ClientError> {
        self.send_sample(MediaKind::Audio, packet, duration).await
    }

    /// PLI and FIR packets received for the published tracks so far.
    pub fn keyframe_requests(&self) -> u64 {
        self.client.keyframe_requests.load(Ordering::SeqCst)
    }

    /// The next frame received, of any kind.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<ReceivedFrame> {
        super::next_frame(&mut self.frames, timeout).await
    }

    /// The next frame received of `kind`, skipping others.
    pub async fn next_frame_of(&mut self, kind: MediaKind, timeout: Duration) -> Option<ReceivedFrame> {
        super::next_frame_of(&mut self.frames, kind, timeout).await
    }

    /// Every frame received so far and not yet taken.
    pub fn take_received(&mut self) -> Vec<ReceivedFrame> {
        std::iter::from_fn(|| self.frames.try_recv().ok()).collect()
    }

    /// Sends a PLI for the video track received.
    pub async fn request_keyframe(&self) -> Result<(), ClientError> {
        self.client.request_keyframe().await
    }

    /// The RTCP sender reports received so far, oldest first.
    pub fn sender_reports(&self) -> Vec<super::SenderReportSeen> {
        self.client.sender_reports.lock().map(|seen| seen.clone()).unwrap_or_default()
    }

    /// Sends `leave`, waits for the server to close the socket, and closes the connection.
    /// Fails if the session went wrong on the way: an `error` from the server, or a server
    /// answer, candidate or offer this client could not apply.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        self.send(json!({"type": "leave"}))?;
        let closed = self.expect("closed", Duration::from_secs(10)).await?;
        let _ = self.client.pc.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.signalling).await;
        if closed["reason"] != "left" {
            return Err(ClientError::WebRtc(format!("left with {closed}")));
        }
        let mut inbox = self.inbox.lock().await;
        let Inbox { messages, backlog } = &mut *inbox;
        backlog.extend(std::iter::from_fn(|| messages.try_recv().ok()));
        let failures: Vec<&Value> =
            backlog.iter().filter(|m| m["type"] == "error" || m["type"] == "client_error").collect();
        if !failures.is_empty() {
            return Err(ClientError::WebRtc(format!("the session had errors: {failures:?}")));
        }
        Ok(())
    }
}

/// The server messages not yet looked at, and those passed over while looking for another.
struct Inbox {
    messages: mpsc::UnboundedReceiver<Value>,
    backlog: VecDeque<Value>,
}

impl Drop for RoomClient {
    fn drop(&mut self) {
        self.signalling.abort();
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame as JSON.
async fn next_json(socket: &mut Socket) -> Result<Value, ClientError> {
    loop {
        let frame = tokio::time::timeout(JOIN_TIMEOUT, socket.next())
            .await
            .map_err(|_| ClientError::Timeout("a message on the socket"))?
            .ok_or(ClientError::WebRtc("socket closed".into()))?
            .map_err(rtc_err)?;
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).map_err(rtc_err);
        }
    }
}

/// The signalling task: writes what the client sends, applies the server's answers, candidates
/// and renegotiation offers to the connection (answering the offers), and hands everything
/// else to the test. A signalling failure is handed on as an `error` message of its own.
async fn signal(
    mut socket: Socket,
    pc: Arc<dyn PeerConnection>,
    mut outgoing: mpsc::UnboundedReceiver<Value>,
    replies: mpsc::UnboundedSender<Value>,
    messages: mpsc::UnboundedSender<Value>,
) {
    loop {
        let message = tokio::select! {
            Some(out) = outgoing.recv() => {
                if socket.send(Message::text(out.to_string())).await.is_err() {
                    return;
                }
                continue;
            }
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Value>(&text) {
                    Ok(message) => message,
                    Err(err) => json!({"type": "client_error", "message": format!("not JSON: {err}")}),
                },
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return,
            },
        };
        let result = match message["type"].as_str() {
            Some("answer") => apply_answer(&pc, &message).await,
            Some("candidate") => add_candidate(&pc, &message).await,
            Some("offer") => answer_offer(&pc, &message, &replies).await,
            _ => Ok(()),
        };
        if let Err(err) = result {
            let _ = messages.send(json!({"type": "client_error", "message": err.to_string(), "cause": message}));
        }
        let _ = messages.send(message);
    }
}

async fn apply_answer(pc: &Arc<dyn PeerConnection>, message: &Value) -> Result<(), ClientError> {
    let sdp = message["sdp"].as_str().ok_or(ClientError::WebRtc("answer without sdp".into()))?;
    let answer = RTCSessionDescription::answer(without_candidates(sdp)).map_err(rtc_err)?;
    pc.set_remote_description(answer).await.map_err(rtc_err)
}

async fn add_candidate(pc: &Arc<dyn PeerConnection>, message: &Value) -> Result<(), ClientError> {
    let Some(candidate) = message["candidate"].as_str() else { return Ok(()) };
    let init = RTCIceCandidateInit {
        candidate: candidate.to_owned(),
        sdp_mid: Some(message["sdp_mid"].as_str().unwrap_or("0").to_owned()),
        ..Default::default()
    };
    pc.add_ice_candidate(init).await.map_err(rtc_err)
}

/// Applies a renegotiation offer of the server and sends the answer.
async fn answer_offer(
    pc: &Arc<dyn PeerConnection>,
    message: &Value,
    replies: &mpsc::UnboundedSender<Value>,
) -> Result<(), ClientError> {
    let sdp = message["sdp"].as_str().ok_or(ClientError::WebRtc("offer without sdp".into()))?;
    pc.set_remote_description(RTCSessionDescription::offer(without_candidates(sdp)).map_err(rtc_err)?)
        .await
        .map_err(rtc_err)?;
    let answer = pc.create_answer(None).await.map_err(rtc_err)?;
    pc.set_local_description(answer).await.map_err(rtc_err)?;
    let local = pc.local_description().await.ok_or(ClientError::WebRtc("no local answer".into()))?;
    let reply = json!({"type": "answer", "sdp": without_candidates(&local.sdp)});
    replies.send(reply).map_err(|_| ClientError::WebRtc("socket gone".into()))
}

/// The SDP without its `a=candidate` and `a=end-of-candidates` lines.
fn without_candidates(sdp: &str) -> String {
    sdp.lines()
        .filter(|l| !(l.starts_with("a=candidate:") || l.starts_with("a=end-of-candidates")))
        .map(|l| format!("{}\r\n", l.trim_end()))
        .collect()
}

/// `(media, mid)` of each m-line, in order.
fn m_lines(sdp: &str) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut media = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("m=") {
            media = rest.split_whitespace().next().map(str::to_owned);
        } else if let (Some(mid), Some(kind)) = (line.strip_prefix("a=mid:"), media.take()) {
            lines.push((kind, mid.to_owned()));
        }
    }
    lines
}

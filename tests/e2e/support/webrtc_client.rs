//! An independent WebRTC client for the end-to-end tests, built on the `webrtc` crate
//! (webrtc-rs 0.21, a different stack from the server's str0m): a WHIP publisher that sends
//! synthetic H.264, VP8 and Opus frames with known payloads, and a WHEP viewer that hands back
//! every frame it receives, reassembled from RTP.
//!
//! ```ignore
//! let publisher = WhipPublisher::connect(&server.base, "stage", &token, ClientOptions::h264_opus()).await?;
//! let mut viewer = WhepViewer::connect(&server.base, "stage", &viewer_token, "", ClientOptions::h264_opus()).await?;
//! publisher.send_video(synthetic::h264_keyframe(0), FRAME_33MS).await?;
//! let frame = viewer.next_frame_of(MediaKind::Video, Duration::from_secs(5)).await.expect("a frame");
//! assert_eq!(synthetic::nal_units(&frame.payload), synthetic::nal_units(&synthetic::h264_keyframe(0)));
//! ```
//!
//! Any transport's tests can use the viewer to receive what an RTMP, SIP or MoQ publisher sent:
//! frames carry their codec, payload, RTP timestamp, keyframe flag and arrival time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{Registry, Slot};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{Mutex, mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    CipherSuiteId, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, SettingEngineBuilder,
};
use webrtc::runtime::TokioRuntime;

/// Codecs the test clients send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientCodec {
    H264,
    Vp8,
    Opus,
}

impl ClientCodec {
    pub fn kind(self) -> MediaKind {
        match self {
            ClientCodec::Opus => MediaKind::Audio,
            ClientCodec::H264 | ClientCodec::Vp8 => MediaKind::Video,
        }
    }

    fn default_payload_type(self) -> u8 {
        match self {
            ClientCodec::H264 => 102,
            ClientCodec::Vp8 => 96,
            ClientCodec::Opus => 111,
        }
    }

    fn rtp_codec(self) -> RTCRtpCodec {
        let (mime, clock_rate, channels, fmtp) = match self {
            ClientCodec::H264 => {
                (MIME_TYPE_H264, 90_000, 0, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")
            }
            ClientCodec::Vp8 => (MIME_TYPE_VP8, 90_000, 0, ""),
            ClientCodec::Opus => (MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1"),
        };
        RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        }
    }

    fn from_mime(mime: &str) -> Option<ClientCodec> {
        match mime.to_ascii_lowercase().as_str() {
            "video/h264" => Some(ClientCodec::H264),
            "video/vp8" => Some(ClientCodec::Vp8),
            "audio/opus" => Some(ClientCodec::Opus),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

/// How a test client negotiates.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Codecs to send (publisher) or accept (viewer), at most one per kind for a publisher.
    pub codecs: Vec<ClientCodec>,
    /// Payload type per codec, where the default should not be used (e.g. Opus on 96).
    pub payload_types: Vec<(ClientCodec, u8)>,
    /// Offer only ECDSA DTLS cipher suites.
    pub ecdsa_only: bool,
    /// Send all media through a [`UdpRelay`] the test can cut, to make the client vanish.
    pub via_relay: bool,
    /// Connect only through this TURN server (`iceTransportPolicy: relay`): URLs, username,
    /// credential, as the server hands them out.
    pub turn: Option<(Vec<String>, String, String)>,
}

impl ClientOptions {
    pub fn new(codecs: &[ClientCodec]) -> Self {
        Self { codecs: codecs.to_vec(), payload_types: Vec::new(), ecdsa_only: false, via_relay: false, turn: None }
    }

    /// H.264 video and Opus audio, the usual WHIP pair.
    pub fn h264_opus() -> Self {
        Self::new(&[ClientCodec::H264, ClientCodec::Opus])
    }

    pub fn with_payload_type(mut self, codec: ClientCodec, pt: u8) -> Self {
        self.payload_types.push((codec, pt));
        self
    }

    pub fn ecdsa_only(mut self) -> Self {
        self.ecdsa_only = true;
        self
    }

    pub fn via_relay(mut self) -> Self {
        self.via_relay = true;
        self
    }

    fn payload_type(&self, codec: ClientCodec) -> u8 {
        self.payload_types.iter().find(|(c, _)| *c == codec).map_or(codec.default_payload_type(), |(_, pt)| *pt)
    }
}

/// Why a client could not do what it was asked.
#[derive(Debug)]
pub enum ClientError {
    /// The server answered the HTTP request with something else than expected.
    Http {
        status: u16,
        body: String,
    },
    WebRtc(String),
    Timeout(&'static str),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Http { status, body } => write!(f, "HTTP {status}: {body}"),
            ClientError::WebRtc(err) => write!(f, "WebRTC: {err}"),
            ClientError::Timeout(what) => write!(f, "timed out waiting for {what}"),
        }
    }
}

impl std::error::Error for ClientError {}

fn rtc_err(err: impl std::fmt::Display) -> ClientError {
    ClientError::WebRtc(err.to_string())
}

/// One frame as a viewer received it.
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    pub codec: ClientCodec,
    /// H.264: Annex B access unit; VP8: the frame; Opus: the packet.
    pub payload: Bytes,
    pub rtp_timestamp: u32,
    /// The RTP stream it came on (to pair it with that stream's sender reports).
    pub ssrc: u32,
    /// The frame starts a decodable sequence (H.264 IDR, VP8 key frame; every audio packet).
    pub keyframe: bool,
    /// VP8: the picture id its first packet's descriptor carried, if any.
    pub vp8_picture_id: Option<u16>,
    pub received_at: Instant,
}

/// Holds a subscriber's first video frames to how a WebRTC subscription starts: at a keyframe
/// (the engine waits for one), or — when the receiver missed it — at a keyframe it asked for
/// within a second. The second case is real: str0m sends what was written for a subscriber the
/// moment DTLS is up on the server, and a receiver whose SRTP is set up a moment later (a test
/// client starved of CPU under the whole suite; a browser alike) drops those packets, then gets
/// delta frames it cannot decode and asks for a keyframe (`FrameAssembler` counts them lost
/// and sends a PLI), as a browser does.
pub fn starts_at_a_keyframe(video: &[ReceivedFrame]) {
    let first_key = video.iter().position(|f| f.keyframe).expect("a keyframe among the first video frames");
    let waited = video[first_key].received_at.duration_since(video[0].received_at);
    assert!(
        first_key == 0 || waited < Duration::from_secs(1),
        "{first_key} undecodable video frames first, and the keyframe asked for came {waited:?} after them"
    );
}

impl ReceivedFrame {
    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }
}

/// Connection state and incoming tracks, as the webrtc crate reports them.
struct Events {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    frames: mpsc::UnboundedSender<ReceivedFrame>,
    /// Remote tracks, for sending PLI.
    remote: Mutex<Vec<Arc<dyn TrackRemote>>>,
    /// Video frames discarded because packets of theirs never arrived.
    video_frames_lost: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        self.remote.lock().await.push(track.clone());
        let frames = self.frames.clone();
        let video_frames_lost = self.video_frames_lost.clone();
        tokio::spawn(async move {
            let mut assembler = None;
            let mut last_pli: Option<Instant> = None;
            while let Some(event) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(packet) = event else { continue };
                let ssrc = packet.header.ssrc;
                if assembler.is_none() {
                    let Some(codec) = track.codec(ssrc).await.and_then(|c| ClientCodec::from_mime(&c.mime_type)) else {
                        continue;
                    };
                    assembler = Some(FrameAssembler::new(codec));
                }
                let Some(assembler) = assembler.as_mut() else { continue };
                let frame = assembler.push(packet);
                // A frame lost to a gap, or a delta frame before any keyframe, leaves nothing
                // decodable until a keyframe: ask for one, as a browser does, at most twice a
                // second. Counted before the frame is handed on, so that a test reading the
                // count once it has a frame sees what came before.
                let lost = assembler.take_lost();
                if lost {
                    video_frames_lost.fetch_add(1, Ordering::SeqCst);
                }
                if let Some(frame) = frame {
                    let _ = frames.send(frame);
                }
                if lost && last_pli.is_none_or(|at| at.elapsed() >= Duration::from_millis(500)) {
                    last_pli = Some(Instant::now());
                    let _ = track
                        .write_rtcp(vec![Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc })])
                        .await;
                }
            }
        });
    }
}

/// A peer connection and what it needs to talk WHIP/WHEP.
struct Client {
    /// The `Link` headers of the answer (the ICE servers the server offers, RFC 9725 §4.6).
    links: Vec<String>,
    pc: Arc<dyn PeerConnection>,
    events: Arc<Events>,
    state: watch::Receiver<RTCPeerConnectionState>,
    gathered: watch::Receiver<bool>,
    keyframe_requests: Arc<AtomicU64>,
    sender_reports: Arc<std::sync::Mutex<Vec<SenderReportSeen>>>,
    http: reqwest::Client,
    bearer: String,
    /// Absolute URL of the WHIP/WHEP resource.
    resource: String,
    etag: Option<String>,
    relay: Option<UdpRelay>,
}

impl Client {
    async fn build(
        options: &ClientOptions,
        bearer: &str,
    ) -> Result<(Client, mpsc::UnboundedReceiver<ReceivedFrame>), ClientError> {
        let mut media_engine = MediaEngine::default();
        for codec in &options.codecs {
            let parameters =
                RTCRtpCodecParameters { rtp_codec: codec.rtp_codec(), payload_type: options.payload_type(*codec) };
            let kind = match codec.kind() {
                MediaKind::Audio => RtpCodecKind::Audio,
                MediaKind::Video => RtpCodecKind::Video,
            };
            media_engine.register_codec(parameters, kind).map_err(rtc_err)?;
        }
        let keyframe_requests = Arc::new(AtomicU64::new(0));
        let registry = register_default_interceptors(Registry::new(), &mut media_engine).map_err(rtc_err)?;
        let sender_reports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let registry = registry.with(
            Slot::from(14_000usize),
            KeyframeRequestCounter::new(keyframe_requests.clone(), sender_reports.clone()),
        );
        let mut settings = SettingEngineBuilder::new().with_include_loopback_candidate(true);
        if options.ecdsa_only {
            settings = settings.with_dtls_cipher_suites(vec![
                CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256,
                CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_256_Cbc_Sha,
            ]);
        }
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, gathered) = watch::channel(false);
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let events = Arc::new(Events {
            state: state_tx,
            gathered: gathered_tx,
            frames: frames_tx,
            remote: Mutex::new(Vec::new()),
            video_frames_lost: Arc::new(AtomicU64::new(0)),
        });
        let mut configuration = RTCConfigurationBuilder::new();
        if let Some((urls, username, credential)) = &options.turn {
            let server =
                RTCIceServer { urls: urls.clone(), username: username.clone(), credential: credential.clone() };
            configuration =
                configuration.with_ice_servers(vec![server]).with_ice_transport_policy(RTCIceTransportPolicy::Relay);
        }
        let pc = PeerConnectionBuilder::new()
            .with_configuration(configuration.build())
            .with_media_engine(media_engine)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(events.clone())
            .with_runtime(Arc::new(TokioRuntime))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .map_err(rtc_err)?;
        let client = Client {
            links: Vec::new(),
            pc: Arc::new(pc),
            events,
            state,
            gathered,
            keyframe_requests,
            sender_reports,
            // Named like an encoder names itself, so tests can find it as the peer's `client`.
            http: reqwest::Client::builder().user_agent(CLIENT_USER_AGENT).build().map_err(rtc_err)?,
            bearer: bearer.to_owned(),
            resource: String::new(),
            etag: None,
            relay: None,
        };
        Ok((client, frames))
    }

    /// Offers, POSTs the offer to `endpoint`, applies the answer and waits for the connection.
    async fn negotiate(&mut self, base: &str, endpoint: &str, via_relay: bool) -> Result<(), ClientError> {
        let offer = self.pc.create_offer(None).await.map_err(rtc_err)?;
        self.pc.set_local_description(offer).await.map_err(rtc_err)?;
        let mut gathered = self.gathered.clone();
        let _ = tokio::time::timeout(Duration::from_secs(3), gathered.wait_for(|done| *done)).await;
        let local = self.pc.local_description().await.ok_or(ClientError::WebRtc("no local description".into()))?;

        let response = self
            .http
            .post(format!("{base}{endpoint}"))
            .header("content-type", "application/sdp")
            .bearer_auth(&self.bearer)
            .body(local.sdp)
            .send()
            .await
            .map_err(rtc_err)?;
        let status = response.status().as_u16();
        // A relative Location is relative to the URL that answered, which is another node's
        // after a cluster redirect (RFC 9110 §10.2.2).
        let answered = response.url().clone();
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.links =
            response.headers().get_all("link").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
        let mut answer = response.text().await.map_err(rtc_err)?;
        if status != 201 {
            return Err(ClientError::Http { status, body: answer });
        }
        let location = location.ok_or(ClientError::Http { status, body: "201 without Location".into() })?;
        self.resource = answered.join(&location).map_err(rtc_err)?.to_string();
        if via_relay {
            let server = candidate_addr(&answer).ok_or(ClientError::WebRtc("answer without a candidate".into()))?;
            let relay = UdpRelay::start(server).await;
            answer = answer.replace(
                &format!(" {} {} typ", server.ip(), server.port()),
                &format!(" {} {} typ", relay.addr.ip(), relay.addr.port()),
            );
            self.relay = Some(relay);
        }
        let answer = RTCSessionDescription::answer(answer).map_err(rtc_err)?;
        self.pc.set_remote_description(answer).await.map_err(rtc_err)?;
        self.wait_for_state(RTCPeerConnectionState::Connected, Duration::from_secs(10)).await
    }

    async fn wait_for_state(&self, wanted: RTCPeerConnectionState, timeout: Duration) -> Result<(), ClientError> {
        let mut state = self.state.clone();
        tokio::time::timeout(timeout, state.wait_for(|s| *s == wanted))
            .await
            .map_err(|_| ClientError::Timeout("the peer connection state"))?
            .map(|_| ())
            .map_err(rtc_err)
    }

    /// Adds a sendonly transceiver per codec of `options`, each with a track of its own SSRC.
    async fn add_send_tracks(&self, options: &ClientOptions) -> Result<Vec<SendTrack>, ClientError> {
        let mut tracks = Vec::new();
        for codec in &options.codecs {
            let ssrc = rand::random::<u32>();
            let kind = match codec.kind() {
                MediaKind::Audio => RtpCodecKind::Audio,
                MediaKind::Video => RtpCodecKind::Video,
            };
            let track = MediaStreamTrack::new(
                "junction-test".to_owned(),
                format!("{kind}-track"),
                format!("{kind}"),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                    codec: codec.rtp_codec(),
                    ..Default::default()
                }],
            );
            let track = Arc::new(TrackLocalStaticSample::new(Instant::now(), track).map_err(rtc_err)?);
            let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, ..Default::default() };
            self.pc
                .add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(init))
                .await
                .map_err(rtc_err)?;
            tracks.push((*codec, track, ssrc, options.payload_type(*codec)));
        }
        Ok(tracks)
    }

    /// Sends a PLI for the first video track received.
    async fn request_keyframe(&self) -> Result<(), ClientError> {
        for track in self.events.remote.lock().await.iter() {
            if track.kind().await != RtpCodecKind::Video {
                continue;
            }
            let Some(ssrc) = track.ssrcs().await.first().copied() else { continue };
            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
            return track.write_rtcp(vec![Box::new(pli)]).await.map_err(rtc_err);
        }
        Err(ClientError::WebRtc("no video track received yet".into()))
    }

    async fn delete(&self) -> Result<u16, ClientError> {
        let response = self.http.delete(&self.resource).bearer_auth(&self.bearer).send().await.map_err(rtc_err)?;
        Ok(response.status().as_u16())
    }
}

/// The first `a=ice-ufrag` and `a=ice-pwd` of an SDP or fragment.
fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let find = |prefix: &str| sdp.lines().find_map(|l| l.trim().strip_prefix(prefix)).map(|v| v.trim().to_owned());
    Some((find("a=ice-ufrag:")?, find("a=ice-pwd:")?))
}

/// The address of the first `a=candidate` of an SDP.
fn candidate_addr(sdp: &str) -> Option<SocketAddr> {
    let line = sdp.lines().find(|l| l.starts_with("a=candidate:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    format!("{}:{}", words.get(4)?, words.get(5)?).parse().ok()
}

/// A WHIP client publishing synthetic media.
pub struct WhipPublisher {
    client: Client,
    tracks: Vec<SendTrack>,
}

/// A track a client sends on: its codec, the track, its SSRC and payload type.
type SendTrack = (ClientCodec, Arc<TrackLocalStaticSample>, u32, u8);

/// The next frame a client's receiver yields within `timeout`.
async fn next_frame(frames: &mut mpsc::UnboundedReceiver<ReceivedFrame>, timeout: Duration) -> Option<ReceivedFrame> {
    tokio::time::timeout(timeout, frames.recv()).await.ok().flatten()
}

/// The next frame of `kind` within `timeout`, dropping frames of the other kind.
async fn next_frame_of(
    frames: &mut mpsc::UnboundedReceiver<ReceivedFrame>,
    kind: MediaKind,
    timeout: Duration,
) -> Option<ReceivedFrame> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let frame = tokio::time::timeout_at(deadline, frames.recv()).await.ok().flatten()?;
        if frame.kind() == kind {
            return Some(frame);
        }
    }
}

/// Writes one sample lasting `duration` on the track of `kind` among `tracks`.
async fn send_sample(
    tracks: &[SendTrack],
    kind: MediaKind,
    data: Bytes,
    duration: Duration,
) -> Result<(), ClientError> {
    let (_, track, ssrc, pt) = tracks
        .iter()
        .find(|(codec, ..)| codec.kind() == kind)
        .ok_or(ClientError::WebRtc(format!("no {kind:?} track")))?;
    let sample = Sample { data, duration, ..Sample::new(Instant::now()) };
    track.sample_writer(*ssrc, *pt).write_sample(&sample).await.map_err(rtc_err)
}

impl WhipPublisher {
    /// Publishes into `room` of the server at `base` (`http://127.0.0.1:port`) with `bearer`
    /// (a client token or a WHIP stream key); returns once ICE and DTLS are up.
    pub async fn connect(
        base: &str,
        room: &str,
        bearer: &str,
        options: ClientOptions,
    ) -> Result<WhipPublisher, ClientError> {
        let (mut client, _) = Client::build(&options, bearer).await?;
        let tracks = client.add_send_tracks(&options).await?;
        client.negotiate(base, &format!("/whip/{room}"), options.via_relay).await?;
        Ok(WhipPublisher { client, tracks })
    }

    async fn send(&self, kind: MediaKind, data: Bytes, duration: Duration) -> Result<(), ClientError> {
        send_sample(&self.tracks, kind, data, duration).await
    }

    /// Sends one video frame (H.264 Annex B access unit, or a VP8 frame) lasting `duration`.
    pub async fn send_video(&self, frame: Bytes, duration: Duration) -> Result<(), ClientError> {
        self.send(MediaKind::Video, frame, duration).await
    }

    /// Sends one Opus packet lasting `duration`.
    pub async fn send_audio(&self, packet: Bytes, duration: Duration) -> Result<(), ClientError> {
        self.send(MediaKind::Audio, packet, duration).await
    }

    /// PLI and FIR packets received so far: how many keyframes the server asked for.
    pub fn keyframe_requests(&self) -> u64 {
        self.client.keyframe_requests.load(Ordering::SeqCst)
    }

    /// The absolute URL of the WHIP resource.
    pub fn resource(&self) -> &str {
        &self.client.resource
    }

    /// The `Link` headers the server answered with.
    pub fn links(&self) -> &[String] {
        &self.client.links
    }

    pub fn etag(&self) -> Option<&str> {
        self.client.etag.as_deref()
    }

    /// `DELETE`s the resource; returns the status.
    pub async fn delete(&self) -> Result<u16, ClientError> {
        self.client.delete().await
    }

    /// Restarts ICE the WHIP way (RFC 9725 §4.3.2): PATCHes the resource with new local ICE
    /// credentials (`If-Match` the current ETag) and applies the credentials of the server's
    /// 200 answer. Media keeps flowing on the restarted ICE session.
    pub async fn restart_ice(&mut self) -> Result<(), ClientError> {
        let pc = self.client.pc.clone();
        let remote = pc.remote_description().await.ok_or(ClientError::WebRtc("no remote description".into()))?.sdp;
        pc.restart_ice().await.map_err(rtc_err)?;
        let offer = pc.create_offer(None).await.map_err(rtc_err)?;
        pc.set_local_description(offer).await.map_err(rtc_err)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let local = pc.local_description().await.ok_or(ClientError::WebRtc("no local description".into()))?.sdp;
        let (ufrag, pwd) =
            ice_credentials(&local).ok_or(ClientError::WebRtc("offer without ICE credentials".into()))?;
        let mut frag =
            format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n");
        for candidate in local.lines().filter(|l| l.starts_with("a=candidate:")) {
            frag.push_str(candidate);
            frag.push_str("\r\n");
        }
        frag.push_str("a=end-of-candidates\r\n");
        let mut request = self
            .client
            .http
            .patch(&self.client.resource)
            .bearer_auth(&self.client.bearer)
            .header("content-type", "application/trickle-ice-sdpfrag")
            .body(frag);
        if let Some(etag) = &self.client.etag {
            request = request.header("if-match", etag);
        }
        let response = request.send().await.map_err(rtc_err)?;
        let status = response.status().as_u16();
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.text().await.map_err(rtc_err)?;
        if status != 200 {
            return Err(ClientError::Http { status, body });
        }
        self.client.etag = etag;
        let (server_ufrag, server_pwd) =
            ice_credentials(&body).ok_or(ClientError::Http { status, body: format!("no credentials in {body:?}") })?;
        let (old_ufrag, old_pwd) =
            ice_credentials(&remote).ok_or(ClientError::WebRtc("answer without credentials".into()))?;
        let answer = remote.replace(&old_ufrag, &server_ufrag).replace(&old_pwd, &server_pwd);
        pc.set_remote_description(RTCSessionDescription::answer(answer).map_err(rtc_err)?).await.map_err(rtc_err)
    }

    /// Closes the peer connection (DTLS close_notify) without telling the WHIP endpoint.
    pub async fn close(&self) {
        let _ = self.client.pc.close().await;
    }

    /// Stops all traffic between client and server (needs [`ClientOptions::via_relay`]), as if
    /// the client's network vanished.
    pub fn vanish(&mut self) {
        self.client.relay.take();
    }
}

/// A WHEP client collecting what it receives.
pub struct WhepViewer {
    client: Client,
    frames: mpsc::UnboundedReceiver<ReceivedFrame>,
}

impl WhepViewer {
    /// Watches `room` (`query` is appended to the URL, e.g. `?identity=alice`); returns once
    /// ICE and DTLS are up. Offers one recvonly m-line per kind among `options.codecs`.
    pub async fn connect(
        base: &str,
        room: &str,
        bearer: &str,
        query: &str,
        options: ClientOptions,
    ) -> Result<WhepViewer, ClientError> {
        let (mut client, frames) = Client::build(&options, bearer).await?;
        let mut kinds: Vec<MediaKind> = options.codecs.iter().map(|c| c.kind()).collect();
        kinds.dedup();
        for kind in [MediaKind::Audio, MediaKind::Video].into_iter().filter(|k| kinds.contains(k)) {
            let rtp_kind = match kind {
                MediaKind::Audio => RtpCodecKind::Audio,
                MediaKind::Video => RtpCodecKind::Video,
            };
            let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
            client.pc.add_transceiver_from_kind(rtp_kind, Some(init)).await.map_err(rtc_err)?;
        }
        client.negotiate(base, &format!("/whep/{room}{query}"), options.via_relay).await?;
        Ok(WhepViewer { client, frames })
    }

    /// The next frame received, of any kind.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<ReceivedFrame> {
        next_frame(&mut self.frames, timeout).await
    }

    /// The next frame of `kind`, skipping others.
    pub async fn next_frame_of(&mut self, kind: MediaKind, timeout: Duration) -> Option<ReceivedFrame> {
        next_frame_of(&mut self.frames, kind, timeout).await
    }

    /// Throws away what was received so far.
    pub fn discard_received(&mut self) {
        while self.frames.try_recv().is_ok() {}
    }

    /// Sends a PLI for the video track received.
    pub async fn request_keyframe(&self) -> Result<(), ClientError> {
        self.client.request_keyframe().await
    }

    /// Video frames discarded so far because packets of theirs never arrived, and delta frames
    /// before the first keyframe, which no decoder can use (each followed by a PLI, at most two
    /// a second).
    pub fn video_frames_lost(&self) -> u64 {
        self.client.events.video_frames_lost.load(Ordering::SeqCst)
    }

    /// The RTCP sender reports received so far, oldest first.
    pub fn sender_reports(&self) -> Vec<SenderReportSeen> {
        self.client.sender_reports.lock().map(|seen| seen.clone()).unwrap_or_default()
    }

    pub fn resource(&self) -> &str {
        &self.client.resource
    }

    pub async fn delete(&self) -> Result<u16, ClientError> {
        self.client.delete().await
    }

    pub async fn close(&self) {
        let _ = self.client.pc.close().await;
    }

    /// Waits until the server ends the connection (it closed DTLS, or went silent).
    pub async fn wait_disconnected(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut state = self.client.state.clone();
        tokio::time::timeout(
            timeout,
            state.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Closed
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Disconnected
                )
            }),
        )
        .await
        .map_err(|_| ClientError::Timeout("the connection to end"))?
        .map(|_| ())
        .map_err(rtc_err)
    }

    pub fn vanish(&mut self) {
        self.client.relay.take();
    }
}

mod relay;
mod room;
mod rtp;
pub mod synthetic;

pub use relay::UdpRelay;
pub use room::RoomClient;
pub use rtp::SenderReportSeen;
use rtp::{FrameAssembler, KeyframeRequestCounter};

/// The User-Agent of every WHIP/WHEP request these clients make.
pub const CLIENT_USER_AGENT: &str = "junction-e2e/1 webrtc-rs";

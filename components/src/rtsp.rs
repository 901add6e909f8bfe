//! The `rtsp` component: an IP camera (or any RTSP server) pulled into the room as a peer, on
//! the `retina` crate: DESCRIBE, SETUP of its H.264 video and its AAC, G.711 or Opus audio
//! (RTP interleaved on the RTSP connection, or over UDP), PLAY. Video leaves as Annex B (the
//! parameter sets in front of each IDR), audio as it comes. Credentials in the URL answer the
//! camera's Basic or Digest challenge. When the camera drops, the component says so (`starting`
//! with the reason) and connects again with back-off (1 s doubling to 30 s); the peer and its
//! tracks stay in the room while their parameters stay the same.

use std::time::{Duration, Instant};

use futures::StreamExt;
use junction_core::h264::{self, AvcConfig};
use junction_core::{
    Codec, CodecParams, EndpointEvent, MediaFrame, MediaTime, PeerId, PublishRequest, RoomId, TrackSource,
    TransportKind,
};
use junction_engine::{DuplicatePolicy, EndpointMedia, EndpointRpc, Engine, JoinRequest, TrackPublisher};
use retina::client::{Credentials, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport};
use retina::codec::{CodecItem, ParametersRef};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Ended;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A camera that sends nothing this long is taken for gone.
const SILENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtpTransport {
    /// Interleaved on the RTSP TCP connection (through any firewall; the default).
    #[default]
    Tcp,
    Udp,
}

impl RtpTransport {
    fn is_tcp(&self) -> bool {
        *self == RtpTransport::Tcp
    }
}

/// What an `rtsp` component is created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspOptions {
    /// `rtsp://[user:password@]host[:port]/path`.
    pub url: String,
    pub identity: PeerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "RtpTransport::is_tcp")]
    pub transport: RtpTransport,
}

impl RtspOptions {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = url::Url::parse(&self.url).map_err(|e| ("url", e.to_string()))?;
        if url.scheme() != "rtsp" || url.host_str().is_none() || self.url.len() > 2048 {
            return Err(("url", "rtsp://[user:password@]host[:port]/path".into()));
        }
        Ok(())
    }

    /// The URL without its credentials, and the credentials.
    fn target(&self) -> Result<(url::Url, Option<Credentials>), String> {
        let mut url = url::Url::parse(&self.url).map_err(|e| e.to_string())?;
        let creds = (!url.username().is_empty()).then(|| Credentials {
            username: percent_decode(url.username()),
            password: percent_decode(url.password().unwrap_or_default()),
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok((url, creds))
    }
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// What the room gets of one stream of the camera.
struct Outlet {
    stream: usize,
    codec: Codec,
    params: CodecParams,
    track: TrackPublisher,
    /// Video: the parameter sets to put in front of IDRs.
    avc: Option<AvcConfig>,
}

/// The peer in the room, kept across reconnections.
struct InRoom {
    rpc: EndpointRpc,
    _media: EndpointMedia,
    outlets: Vec<Outlet>,
}

/// A track request for a stream the room can carry, with the parameters it has now.
fn describe_stream(stream: &retina::client::Stream) -> Option<(Codec, CodecParams, Option<AvcConfig>)> {
    match (stream.media(), stream.encoding_name()) {
        ("video", "h264") => {
            let Some(ParametersRef::Video(video)) = stream.parameters() else { return None };
            let config = AvcConfig::parse(video.extra_data()).ok()?;
            let (width, height) = video.pixel_dimensions();
            let normalised = AvcConfig { length_size: 4, ..config.clone() };
            let params = CodecParams {
                clock_rate: 90_000,
                fmtp: Some(format!("profile-level-id={};packetization-mode=1", config.profile_level_id())),
                config: Some(normalised.to_bytes()),
                width: Some(width).filter(|w| *w > 0),
                height: Some(height).filter(|h| *h > 0),
                ..CodecParams::default()
            };
            Some((Codec::H264, params, Some(config)))
        }
        ("audio", "mpeg4-generic") => {
            let Some(ParametersRef::Audio(audio)) = stream.parameters() else { return None };
            let params = CodecParams {
                clock_rate: audio.clock_rate(),
                channels: u8::try_from(audio.channels().get()).unwrap_or(2),
                config: Some(bytes::Bytes::copy_from_slice(audio.extra_data())),
                ..CodecParams::default()
            };
            Some((Codec::Aac, params, None))
        }
        ("audio", "pcmu") => {
            Some((Codec::Pcmu, CodecParams { clock_rate: 8000, channels: 1, ..Default::default() }, None))
        }
        ("audio", "pcma") => {
            Some((Codec::Pcma, CodecParams { clock_rate: 8000, channels: 1, ..Default::default() }, None))
        }
        ("audio", "opus") => Some((
            Codec::Opus,
            CodecParams {
                clock_rate: 48_000,
                channels: 2,
                fmtp: Some(junction_audio::codec::opus::fmtp(1)),
                ..CodecParams::default()
            },
            None,
        )),
        _ => None,
    }
}

/// Everything a pulled camera needs from its component.
pub struct Pull {
    pub engine: Engine,
    pub room: RoomId,
    pub options: RtspOptions,
    pub stop: CancellationToken,
}

/// Pulls the camera until `stop` or the room ends the peer; `state` is told `(running, why)`:
/// `true` once media flows, `false` with the reason while it reconnects.
pub async fn pull(pull: Pull, state: impl Fn(bool, Option<String>)) -> Result<Ended, String> {
    let Pull { engine, room, options, stop } = pull;
    let (url, creds) = options.target()?;
    let mut in_room: Option<InRoom> = None;
    let mut backoff = FIRST_RETRY;
    loop {
        let session = tokio::select! {
            _ = stop.cancelled() => return Ok(Ended::Closed("deleted".into())),
            session = connect(&url, creds.clone(), options.transport) => session,
        };
        let why = match session {
            Ok(mut session) => {
                let room_ref = &mut in_room;
                match stream(&engine, &room, &options, room_ref, &mut session, &stop, &state, &mut backoff).await {
                    Ok(Some(ended)) => return Ok(ended),
                    Ok(None) => "the camera ended the stream".to_owned(),
                    Err(err) => err,
                }
            }
            Err(err) => err,
        };
        warn!(room = %room, peer = %options.identity, "RTSP camera: {why}; connecting again in {}s", backoff.as_secs());
        state(false, Some(format!("reconnecting: {why}")));
        tokio::select! {
            _ = stop.cancelled() => return Ok(Ended::Closed("deleted".into())),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_RETRY);
    }
}

type Demuxed = retina::client::Demuxed;

async fn connect(url: &url::Url, creds: Option<Credentials>, transport: RtpTransport) -> Result<Demuxed, String> {
    let options = SessionOptions::default().creds(creds).user_agent("Junction".into());
    let mut session = Session::describe(url.clone(), options).await.map_err(|e| e.to_string())?;
    let wanted: Vec<usize> = session
        .streams()
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            matches!(
                (s.media(), s.encoding_name()),
                ("video", "h264") | ("audio", "mpeg4-generic" | "pcmu" | "pcma" | "opus")
            )
        })
        .map(|(i, _)| i)
        .collect();
    if wanted.is_empty() {
        return Err("the camera offers no H.264 video and no AAC, G.711 or Opus audio".into());
    }
    for i in &wanted {
        let transport = match transport {
            RtpTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
            RtpTransport::Udp => Transport::Udp(Default::default()),
        };
        session.setup(*i, SetupOptions::default().transport(transport)).await.map_err(|e| e.to_string())?;
    }
    let playing = session.play(PlayOptions::default()).await.map_err(|e| e.to_string())?;
    playing.demuxed().map_err(|e| e.to_string())
}

/// Joins the room once; (re)publishes a track per stream whose parameters are known and new.
fn ensure_tracks(
    engine: &Engine,
    room: &RoomId,
    options: &RtspOptions,
    in_room: &mut Option<InRoom>,
    session: &Demuxed,
) -> Result<(), String> {
    if in_room.is_none() {
        let mut join = JoinRequest::new(room.clone(), options.identity.clone(), TransportKind::Internal);
        join.name = options.name.clone();
        join.metadata = serde_json::json!({"component": "rtsp"});
        join.auto_subscribe = false;
        join.on_duplicate = DuplicatePolicy::Reject;
        let joined = engine.join(join).map_err(|e| e.to_string())?;
        let (rpc, media) = joined.endpoint.split();
        *in_room = Some(InRoom { rpc, _media: media, outlets: Vec::new() });
    }
    let Some(peer) = in_room.as_mut() else { return Ok(()) };
    for (i, stream) in session.streams().iter().enumerate() {
        let Some((codec, params, avc)) = describe_stream(stream) else { continue };
        if let Some(existing) = peer.outlets.iter_mut().find(|o| o.stream == i) {
            if existing.codec == codec && existing.params == params {
                existing.avc = avc;
                continue;
            }
            let _ = peer.rpc.unpublish(existing.track.id());
            peer.outlets.retain(|o| o.stream != i);
        }
        let (name, source) =
            if codec == Codec::H264 { ("video", TrackSource::Camera) } else { ("audio", TrackSource::Microphone) };
        let track = peer
            .rpc
            .publish(PublishRequest::new(name, codec).with_source(source).with_params(params.clone()))
            .map_err(|e| e.to_string())?;
        peer.outlets.push(Outlet { stream: i, codec, params, track, avc });
    }
    Ok(())
}

/// Forwards one connection's frames. `Ok(Some)`: the component ends; `Ok(None)` or `Err`: the
/// connection did, and the caller reconnects.
#[allow(clippy::too_many_arguments)]
async fn stream(
    engine: &Engine,
    room: &RoomId,
    options: &RtspOptions,
    in_room: &mut Option<InRoom>,
    session: &mut Demuxed,
    stop: &CancellationToken,
    state: &impl Fn(bool, Option<String>),
    backoff: &mut Duration,
) -> Result<Option<Ended>, String> {
    ensure_tracks(engine, room, options, in_room, session)?;
    let mut announced = false;
    loop {
        let peer_event = async {
            match in_room.as_mut() {
                Some(peer) => peer.rpc.next_event().await,
                None => std::future::pending().await,
            }
        };
        let item = tokio::select! {
            _ = stop.cancelled() => return Ok(Some(Ended::Closed("deleted".into()))),
            event = peer_event => match event {
                Some(EndpointEvent::Closed { reason }) => return Ok(Some(Ended::Closed(reason.as_str().to_owned()))),
                None => return Ok(Some(Ended::Closed("session closed".into()))),
                Some(_) => continue,
            },
            item = tokio::time::timeout(SILENCE, session.next()) => match item {
                Err(_) => return Err(format!("nothing for {}s", SILENCE.as_secs())),
                Ok(None) => return Ok(None),
                Ok(Some(Err(err))) => return Err(err.to_string()),
                Ok(Some(Ok(item))) => item,
            },
        };
        if let CodecItem::VideoFrame(video) = &item
            && video.has_new_parameters()
        {
            ensure_tracks(engine, room, options, in_room, session)?;
        }
        let stream_id = match &item {
            CodecItem::VideoFrame(video) => video.stream_id(),
            CodecItem::AudioFrame(audio) => audio.stream_id(),
            _ => continue,
        };
        // One lookup per frame: the stream's track in the room, if the room takes that stream.
        let Some(outlet) = in_room.as_ref().and_then(|p| p.outlets.iter().find(|o| o.stream == stream_id)) else {
            continue;
        };
        let frame = match item {
            CodecItem::VideoFrame(video) => {
                let Some(avc) = &outlet.avc else { continue };
                let timestamp = video.timestamp();
                let time = MediaTime::new(timestamp.elapsed().max(0) as u64, timestamp.clock_rate().get());
                let Ok(annexb) = h264::avcc_to_annexb_frame(video.data(), avc) else { continue };
                let keyframe = h264::is_keyframe(&annexb);
                MediaFrame::video(Codec::H264, time, keyframe, Instant::now(), annexb)
            }
            CodecItem::AudioFrame(audio) => {
                let timestamp = audio.timestamp();
                let time = MediaTime::new(timestamp.elapsed().max(0) as u64, timestamp.clock_rate().get());
                MediaFrame::audio(outlet.codec, time, Instant::now(), bytes::Bytes::copy_from_slice(audio.data()))
            }
            _ => continue,
        };
        let _ = outlet.track.send(frame);
        if !announced {
            announced = true;
            *backoff = FIRST_RETRY;
            info!(room = %room, peer = %options.identity, "RTSP camera streaming");
            state(true, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> RtspOptions {
        RtspOptions { url: url.into(), identity: PeerId::new("cam").unwrap(), name: None, transport: RtpTransport::Tcp }
    }

    #[test]
    fn credentials_leave_the_url_decoded_and_bad_urls_are_refused() {
        let (url, creds) = options("rtsp://us%40er:p%2Bw+x@10.0.0.20:554/stream1").target().unwrap();
        assert_eq!(url.as_str(), "rtsp://10.0.0.20:554/stream1");
        let creds = creds.unwrap();
        assert_eq!((creds.username.as_str(), creds.password.as_str()), ("us@er", "p+w+x"));
        assert!(options("rtsp://10.0.0.20/cam").target().unwrap().1.is_none());
        for bad in ["http://10.0.0.20/cam", "rtsp:///cam", "not a url"] {
            assert_eq!(options(bad).validate().unwrap_err().0, "url", "{bad}");
        }
    }
}

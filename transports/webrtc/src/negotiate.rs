//! Answering a remote offer: a str0m `Rtc` configured for Junction (ICE-lite, our codecs, our
//! ICE credentials, one host candidate on the shared socket) accepts the offer; the m-lines it
//! agreed to are read back so the caller knows what the peer sends, what it can receive, and
//! in which codecs, before joining the engine.
//!
//! Every SDP from a peer (offers, renegotiations, answers) is measured before str0m parses it:
//! its size, its m-lines and its candidates have caps ([`SdpLimits`], from `[webrtc]`).

use std::sync::Arc;
use std::time::Instant;

use junction_core::{Codec, LayerInfo, MediaKind};
use junction_endpoint::{Endpoint, EndpointMedia, EndpointRpc};
use str0m::change::SdpOffer;
use str0m::media::{Media, MediaKind as WireKind, Mid, Rids, SimulcastLayer};
use str0m::{Candidate, IceCreds, Rtc};
use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::config::WebrtcConfig;
use crate::driver::MuxHandle;
use crate::error::{SessionError, offered_codecs};
use crate::session::{self, Link, SessionHandle, SessionSpec, simulcast};

/// One m-line as negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine {
    pub mid: String,
    pub kind: MediaKind,
    /// The peer sends media on it.
    pub peer_sends: bool,
    /// The peer receives media on it.
    pub peer_receives: bool,
    /// Negotiated codecs, the peer's preference first; empty when the m-line was rejected.
    pub codecs: Vec<Codec>,
    /// Simulcast layers the peer sends, lowest first.
    pub layers: Vec<LayerInfo>,
}

/// The caps on an SDP from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SdpLimits {
    pub(crate) max_bytes: usize,
    pub(crate) max_media_lines: usize,
    pub(crate) max_candidates: usize,
}

impl SdpLimits {
    pub(crate) fn of(config: &WebrtcConfig) -> Self {
        Self {
            max_bytes: config.max_sdp_bytes,
            max_media_lines: config.max_media_lines,
            max_candidates: config.max_remote_candidates,
        }
    }

    /// Refuses an SDP over a cap (logged at info in the caller's span); returns how many
    /// candidates it carries.
    pub(crate) fn check(&self, sdp: &str) -> Result<usize, SessionError> {
        self.measure(sdp).inspect_err(|err| tracing::info!("SDP refused: {err}"))
    }

    fn measure(&self, sdp: &str) -> Result<usize, SessionError> {
        if sdp.len() > self.max_bytes {
            return Err(SessionError::SdpTooLarge { bytes: sdp.len(), limit: self.max_bytes });
        }
        let (mut media_lines, mut candidates) = (0, 0);
        for line in sdp.lines().map(str::trim_start) {
            if line.starts_with("m=") {
                media_lines += 1;
            } else if line.starts_with("a=candidate:") {
                candidates += 1;
            }
        }
        if media_lines > self.max_media_lines {
            return Err(SessionError::TooManyMediaLines { count: media_lines, limit: self.max_media_lines });
        }
        if candidates > self.max_candidates {
            return Err(SessionError::TooManyCandidates { count: candidates, limit: self.max_candidates });
        }
        Ok(candidates)
    }
}

/// An answered offer, not yet started.
pub struct Negotiated {
    rtc: Rtc,
    answer: String,
    lines: Vec<(Mid, MediaLine)>,
    ufrag: String,
    pwd: String,
    /// Remote candidates the offer carried.
    candidates: usize,
    mux: MuxHandle,
    config: WebrtcConfig,
    shutdown: CancellationToken,
}

pub(crate) fn negotiate(
    mux: MuxHandle,
    config: &WebrtcConfig,
    shutdown: CancellationToken,
    offer_sdp: &str,
) -> Result<Negotiated, SessionError> {
    let negotiated = negotiate_any(mux, config, shutdown, offer_sdp)?;
    if !negotiated.lines.iter().any(|(_, line)| !line.codecs.is_empty()) {
        return Err(SessionError::NoCodec { offered: offered_codecs(offer_sdp) });
    }
    Ok(negotiated)
}

/// Like [`negotiate`], but an offer without usable media (only data channels, say) is fine:
/// a room session adds media by renegotiating.
pub(crate) fn negotiate_any(
    mux: MuxHandle,
    config: &WebrtcConfig,
    shutdown: CancellationToken,
    offer_sdp: &str,
) -> Result<Negotiated, SessionError> {
    let candidates = SdpLimits::of(config).check(offer_sdp)?;
    let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(|err| SessionError::BadSdp(err.to_string()))?;
    let creds = IceCreds::new();
    let mut rtc = codec::rtc_builder()
        .set_ice_lite(true)
        .set_local_ice_credentials(creds.clone())
        .enable_bwe(Some(str0m::bwe::Bitrate::bps(session::INITIAL_ESTIMATE_BPS)))
        .build(Instant::now());
    let candidate = Candidate::host(mux.advertised, "udp")
        .map_err(|err| SessionError::OfferRefused(format!("cannot use {} as a candidate: {err}", mux.advertised)))?;
    rtc.add_local_candidate(candidate);
    let answer = rtc.sdp_api().accept_offer(offer).map_err(|err| SessionError::OfferRefused(err.to_string()))?;

    // str0m reports new m-lines only once connected; read them back from the session now.
    let lines: Vec<(Mid, MediaLine)> = offer_sections(offer_sdp)
        .into_iter()
        .filter_map(|section| {
            let mid = Mid::from(section.mid.as_str());
            rtc.media(mid).map(|media| (mid, describe(&rtc, media, &section)))
        })
        .collect();
    Ok(Negotiated {
        rtc,
        answer: answer.to_sdp_string(),
        lines,
        ufrag: creds.ufrag,
        pwd: creds.pass,
        candidates,
        mux,
        config: config.clone(),
        shutdown,
    })
}

pub(crate) fn describe(rtc: &Rtc, media: &Media, section: &OfferSection) -> MediaLine {
    let remote_pts = media.remote_pts();
    let payloads = rtc.codec_config().params().iter().filter(|p| remote_pts.contains(&p.pt()));
    let kind = match media.kind() {
        WireKind::Audio => MediaKind::Audio,
        WireKind::Video => MediaKind::Video,
    };
    let direction = media.direction();
    let peer_sends = direction.is_receiving() && !media.disabled();
    let layers = match &media.rids_rx() {
        Rids::Specific(rids) if peer_sends && rids.len() > 1 => {
            let announced: Vec<SimulcastLayer> = rids
                .iter()
                .map(|rid| {
                    let mut layer = SimulcastLayer::new(&rid.to_string());
                    layer.attributes = section.rid_attributes(&rid.to_string());
                    layer
                })
                .collect();
            simulcast::order_layers(&announced)
        }
        _ => Vec::new(),
    };
    MediaLine {
        mid: media.mid().to_string(),
        kind,
        peer_sends,
        peer_receives: direction.is_sending() && !media.disabled(),
        codecs: codec::codecs_of(payloads).into_iter().filter(|c| c.kind() == kind).collect(),
        layers,
    }
}

/// What str0m does not expose about an offer's m-section: its mid and its `a=rid` restrictions.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct OfferSection {
    pub(crate) mid: String,
    /// (rid, restrictions such as `max-width=1280`).
    rids: Vec<(String, Vec<(String, String)>)>,
}

impl OfferSection {
    fn rid_attributes(&self, rid: &str) -> Option<Vec<(String, String)>> {
        self.rids.iter().find(|(id, _)| id == rid).map(|(_, attrs)| attrs.clone()).filter(|a| !a.is_empty())
    }
}

/// The audio/video m-sections of an SDP, with their mids and rid restrictions.
pub(crate) fn offer_sections(sdp: &str) -> Vec<OfferSection> {
    let mut sections: Vec<OfferSection> = Vec::new();
    let mut in_media = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(media) = line.strip_prefix("m=") {
            in_media = media.starts_with("audio") || media.starts_with("video");
            if in_media {
                sections.push(OfferSection::default());
            }
            continue;
        }
        let Some(section) = sections.last_mut().filter(|_| in_media) else { continue };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = mid.trim().to_owned();
        } else if let Some(rid) = line.strip_prefix("a=rid:") {
            let mut parts = rid.split_whitespace();
            let (Some(id), Some(_direction)) = (parts.next(), parts.next()) else { continue };
            let attributes = parts
                .next()
                .unwrap_or("")
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            section.rids.push((id.to_owned(), attributes));
        }
    }
    sections.retain(|s| !s.mid.is_empty());
    sections
}

impl Negotiated {
    /// The SDP answer to send back.
    pub fn answer_sdp(&self) -> &str {
        &self.answer
    }

    pub fn media_lines(&self) -> impl Iterator<Item = &MediaLine> {
        self.lines.iter().map(|(_, line)| line)
    }

    /// Whether the peer sends any media.
    pub fn peer_sends(&self) -> bool {
        self.media_lines().any(|l| l.peer_sends && !l.codecs.is_empty())
    }

    /// Whether the peer receives any media.
    pub fn peer_receives(&self) -> bool {
        self.media_lines().any(|l| l.peer_receives && !l.codecs.is_empty())
    }

    /// The codecs the peer can receive, for [`junction_endpoint::JoinRequest::accept_codecs`]:
    /// tracks in other codecs are transcoded by the engine where it can.
    pub fn accept_codecs(&self) -> Vec<Codec> {
        let mut codecs = Vec::new();
        for line in self.media_lines().filter(|l| l.peer_receives) {
            for codec in &line.codecs {
                if !codecs.contains(codec) {
                    codecs.push(*codec);
                }
            }
        }
        codecs
    }

    /// This session's ICE credentials (the answer carries them).
    pub fn local_ice(&self) -> (&str, &str) {
        (&self.ufrag, &self.pwd)
    }

    /// Starts the session task for a peer that has joined the engine; the task owns the
    /// endpoint: when it ends, however it ends, the peer leaves the room.
    pub fn start(self, endpoint: Endpoint, spec: SessionSpec) -> SessionHandle {
        self.spawn(Link::Owned(endpoint), spec)
    }

    /// Starts the session task for an endpoint whose RPC half the signalling layer keeps (it
    /// reads the room events and forwards them with [`SessionHandle::room_event`]); the task
    /// takes the media half. The peer stays in the room when the session ends.
    pub fn start_shared(self, rpc: Arc<EndpointRpc>, media: EndpointMedia, spec: SessionSpec) -> SessionHandle {
        self.spawn(Link::Shared(rpc, media), spec)
    }

    fn spawn(self, link: Link, spec: SessionSpec) -> SessionHandle {
        session::spawn(session::Parts {
            rtc: self.rtc,
            lines: self.lines,
            ufrag: self.ufrag,
            pwd: self.pwd,
            mux: self.mux,
            ice_timeout: self.config.ice_timeout(),
            connect_timeout: self.config.connect_timeout(),
            limits: SdpLimits::of(&self.config),
            offered_candidates: self.candidates,
            shutdown: self.shutdown,
            link,
            spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n";
    const TRANSPORT: &str = "c=IN IP4 0.0.0.0\r\na=ice-ufrag:cli1\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
        a=fingerprint:sha-256 7A:D7:C9:33:94:8D:8A:BA:10:EB:93:21:7C:B4:91:6D:40:F7:56:07:CA:9D:42:D3:80:32:2D:10:D9:AC:8E:15\r\n\
        a=setup:actpass\r\na=rtcp-mux\r\n";

    /// An audio m-line with Opus on payload type 96 and a simulcast H.264 video m-line.
    fn whip_offer() -> String {
        format!(
            "{SESSION}m=audio 9 UDP/TLS/RTP/SAVPF 96\r\n{TRANSPORT}a=mid:0\r\na=sendonly\r\n\
             a=rtpmap:96 opus/48000/2\r\na=fmtp:96 minptime=10;useinbandfec=1\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 102 103\r\n{TRANSPORT}a=mid:1\r\na=sendonly\r\n\
             a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
             a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
             a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
             a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
             a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
             a=rid:f send\r\na=rid:q send\r\na=rid:h send\r\na=simulcast:send f;h;q\r\n"
        )
    }

    fn whep_offer(video_codec: &str) -> String {
        format!(
            "{SESSION}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{TRANSPORT}a=mid:0\r\na=recvonly\r\n\
             a=rtpmap:111 opus/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 98\r\n{TRANSPORT}a=mid:1\r\na=recvonly\r\n\
             a=rtpmap:98 {video_codec}/90000\r\na=rtcp-fb:98 nack pli\r\n"
        )
    }

    #[test]
    fn offer_sections_carry_mids_and_rid_restrictions() {
        let sdp = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:data\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\na=rid:hi send max-width=1280;max-height=720\r\na=rid:lo send\r\n";
        let sections = offer_sections(sdp);
        assert_eq!(sections.len(), 1);
        assert_eq!(sections[0].mid, "v");
        assert_eq!(
            sections[0].rid_attributes("hi"),
            Some(vec![("max-width".into(), "1280".into()), ("max-height".into(), "720".into())])
        );
        assert_eq!(sections[0].rid_attributes("lo"), None);
    }

    async fn mux() -> MuxHandle {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        crate::driver::spawn(socket, addr, &WebrtcConfig::default(), CancellationToken::new())
            .expect("the sender starts")
    }

    fn negotiate_text(mux: MuxHandle, sdp: &str) -> Result<Negotiated, SessionError> {
        negotiate(mux, &WebrtcConfig::default(), CancellationToken::new(), sdp)
    }

    #[tokio::test]
    async fn a_whip_offer_keeps_its_payload_types_and_orders_simulcast_layers() {
        let negotiated = negotiate_text(mux().await, &whip_offer()).unwrap();
        let lines: Vec<&MediaLine> = negotiated.media_lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].kind, lines[0].peer_sends, lines[0].peer_receives), (MediaKind::Audio, true, false));
        assert_eq!(lines[0].codecs, [Codec::Opus]);
        assert_eq!(lines[1].codecs, [Codec::H264]);
        let rids: Vec<&str> = lines[1].layers.iter().map(|l| l.rid.as_str()).collect();
        assert_eq!(rids, ["q", "h", "f"]);
        assert!(negotiated.peer_sends() && !negotiated.peer_receives());
        assert!(negotiated.accept_codecs().is_empty());

        let answer = negotiated.answer_sdp();
        assert!(answer.contains("a=rtpmap:96 opus/48000/2"), "Opus stays on 96:\n{answer}");
        assert!(answer.contains("a=rtpmap:102 H264/90000"), "{answer}");
        assert!(answer.contains("a=recvonly") && answer.contains("a=ice-lite"), "{answer}");
        let (ufrag, _) = negotiated.local_ice();
        assert!(answer.contains(&format!("a=ice-ufrag:{ufrag}")));
        assert!(answer.contains("typ host"), "the shared socket is the candidate:\n{answer}");
    }

    #[tokio::test]
    async fn a_whep_offer_tells_which_codecs_the_viewer_accepts() {
        let negotiated = negotiate_text(mux().await, &whep_offer("VP8")).unwrap();
        assert!(negotiated.peer_receives() && !negotiated.peer_sends());
        assert_eq!(negotiated.accept_codecs(), [Codec::Opus, Codec::Vp8]);
        assert!(negotiated.answer_sdp().contains("a=sendonly"));
    }

    #[tokio::test]
    async fn bad_offers_are_refused_with_reasons() {
        let err = negotiate_text(mux().await, &whep_offer("H265").replace("opus", "G729")).err().unwrap();
        assert!(matches!(&err, SessionError::NoCodec { offered } if offered == "G729, H265"), "{err}");
        let err = negotiate_text(mux().await, "hello").err().unwrap();
        assert!(matches!(err, SessionError::BadSdp(_)), "{err}");
        let no_fingerprint: String =
            whep_offer("VP8").lines().filter(|l| !l.starts_with("a=fingerprint")).map(|l| format!("{l}\r\n")).collect();
        let err = negotiate_text(mux().await, &no_fingerprint).err().unwrap();
        assert!(matches!(err, SessionError::OfferRefused(_) | SessionError::BadSdp(_)), "{err}");
    }

    #[tokio::test]
    async fn oversized_offers_are_refused_before_parsing() {
        let mux = mux().await;
        let config = WebrtcConfig::default();
        // Thousands of m-lines, in a body under the size cap.
        let section = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let many_lines = format!("{SESSION}{}", section.repeat(3000));
        assert!(many_lines.len() <= config.max_sdp_bytes);
        let err = negotiate(mux.clone(), &config, CancellationToken::new(), &many_lines).err().unwrap();
        assert_eq!(err, SessionError::TooManyMediaLines { count: 3000, limit: config.max_media_lines });
        // One attribute larger than the whole cap.
        let huge = format!("{}a=x-huge:{}\r\n", whep_offer("VP8"), "x".repeat(config.max_sdp_bytes));
        let err = negotiate(mux.clone(), &config, CancellationToken::new(), &huge).err().unwrap();
        assert!(matches!(err, SessionError::SdpTooLarge { limit, .. } if limit == config.max_sdp_bytes), "{err}");
        // Hundreds of candidates.
        let candidate = "a=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\n";
        let crowded = format!("{}{}", whep_offer("VP8"), candidate.repeat(500));
        let err = negotiate(mux, &config, CancellationToken::new(), &crowded).err().unwrap();
        assert_eq!(err, SessionError::TooManyCandidates { count: 500, limit: config.max_remote_candidates });
    }
}

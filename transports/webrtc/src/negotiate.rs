//! Answering a remote offer: a str0m `Rtc` configured for Junction (ICE-lite, our codecs, our
//! ICE credentials, one host candidate on the shared socket) accepts the offer; the m-lines it
//! agreed to are read back so the caller knows what the peer sends, what it can receive, and
//! in which codecs, before joining the engine.
//!
//! The answer puts every m-line in one media stream, so that browsers play a WHEP viewer's audio
//! and video in sync (`sdp::one_media_stream`).
//!
//! Every SDP from a peer (offers, renegotiations, answers) is measured before str0m parses it:
//! its size, its m-lines and its candidates have caps ([`SdpLimits`], in `sdp.rs`).

use std::time::Instant;

use junction_core::Codec;
use junction_engine::Endpoint;
use str0m::change::SdpOffer;
use str0m::media::Mid;
use str0m::net::TcpType;
use str0m::{Candidate, IceCreds, Rtc};
use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::config::WebrtcConfig;
use crate::driver::MuxHandle;
use crate::error::{SessionError, offered_codecs};
use crate::fanout_packets::FanoutPackets;
use crate::sdp::{MediaLine, SdpLimits, describe, offer_sections, one_media_stream};
use crate::session::{self, SessionHandle, SessionSpec};

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
    packets: FanoutPackets,
}

pub(crate) fn negotiate(
    mux: MuxHandle,
    config: &WebrtcConfig,
    shutdown: CancellationToken,
    packets: FanoutPackets,
    offer_sdp: &str,
    prefer_video: Option<Codec>,
) -> Result<Negotiated, SessionError> {
    let negotiated = negotiate_any(mux, config, shutdown, packets, offer_sdp, prefer_video)?;
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
    packets: FanoutPackets,
    offer_sdp: &str,
    prefer_video: Option<Codec>,
) -> Result<Negotiated, SessionError> {
    let candidates = SdpLimits::of(config).check(offer_sdp)?;
    let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(|err| SessionError::BadSdp(err.to_string()))?;
    let creds = IceCreds::new();
    let mut rtc = codec::rtc_builder(prefer_video)
        .set_send_buffer_video(config.video_resend_packets)
        .set_twcc_send_records(config.twcc_send_records)
        .set_ice_lite(true)
        .set_local_ice_credentials(creds.clone())
        .enable_bwe(Some(str0m::bwe::Bitrate::bps(session::INITIAL_ESTIMATE_BPS)))
        .build(Instant::now());
    for &udp in &mux.advertised {
        let candidate = Candidate::host(udp, "udp")
            .map_err(|err| SessionError::OfferRefused(format!("cannot use {udp} as a candidate: {err}")))?;
        rtc.add_local_candidate(candidate);
    }
    for &tcp in &mux.advertised_tcp {
        // Passive: the client connects (RFC 6544 §4.5). Its type preference is below UDP's, so
        // a client that reaches both uses UDP.
        let candidate = Candidate::builder()
            .tcp()
            .host(tcp)
            .tcptype(TcpType::Passive)
            .build()
            .map_err(|err| SessionError::OfferRefused(format!("cannot use {tcp} as a TCP candidate: {err}")))?;
        rtc.add_local_candidate(candidate);
    }
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
        answer: one_media_stream(&answer.to_sdp_string()),
        lines,
        ufrag: creds.ufrag,
        pwd: creds.pass,
        candidates,
        mux,
        config: config.clone(),
        shutdown,
        packets,
    })
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

    /// The codecs the peer can receive, for [`junction_engine::JoinRequest::accept_codecs`]:
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
        session::spawn(session::Parts {
            rtc: self.rtc,
            lines: self.lines,
            ufrag: self.ufrag,
            pwd: self.pwd,
            mux: self.mux,
            ice_timeout: self.config.ice_timeout(),
            connect_timeout: self.config.connect_timeout(),
            pacing: self.config.send_pacing(),
            packets: self.packets,
            limits: SdpLimits::of(&self.config),
            offered_candidates: self.candidates,
            shutdown: self.shutdown,
            endpoint,
            spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_core::MediaKind;

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

    async fn mux() -> MuxHandle {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let sockets = crate::driver::Sockets { udp: socket, advertised: vec![addr], tcp: None };
        crate::driver::spawn(sockets, &WebrtcConfig::default(), CancellationToken::new()).expect("the sender starts")
    }

    fn negotiate_text(mux: MuxHandle, sdp: &str) -> Result<Negotiated, SessionError> {
        negotiate(mux, &WebrtcConfig::default(), CancellationToken::new(), FanoutPackets::default(), sdp, None)
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
    async fn an_rtpmap_outside_its_media_line_is_refused_before_str0m() {
        // Found by fuzzing (browser_session): payload type 98 mapped in the audio section too
        // (where the m-line does not list it) made str0m panic ("Pt locked multiple times").
        let offer = whep_offer("VP9")
            .replace("a=rtpmap:111 opus/48000/2\r\n", "a=rtpmap:111 opus/48000/2\r\na=rtpmap:98 VP9/90000\r\n");
        let err = negotiate_text(mux().await, &offer).err().unwrap();
        assert!(matches!(&err, SessionError::BadSdp(why) if why.contains("98")), "{err}");
        let twice = whep_offer("VP8")
            .replace("a=rtcp-fb:98 nack pli\r\n", "a=rtcp-fb:98 nack pli\r\na=rtpmap:98 H264/90000\r\n");
        let err = negotiate_text(mux().await, &twice).err().unwrap();
        assert!(matches!(&err, SessionError::BadSdp(why) if why.contains("98")), "{err}");
        // The same payload type in two sections that both list it (two cameras) is fine.
        let two_cameras = format!(
            "{}m=video 9 UDP/TLS/RTP/SAVPF 98\r\n{TRANSPORT}a=mid:2\r\na=recvonly\r\na=rtpmap:98 VP8/90000\r\n",
            whep_offer("VP8")
        )
        .replace("a=group:BUNDLE 0 1\r\n", "a=group:BUNDLE 0 1 2\r\n");
        negotiate_text(mux().await, &two_cameras).unwrap();
    }

    #[tokio::test]
    async fn oversized_offers_are_refused_before_parsing() {
        let mux = mux().await;
        let config = WebrtcConfig::default();
        // Thousands of m-lines, in a body under the size cap.
        let section = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let many_lines = format!("{SESSION}{}", section.repeat(3000));
        assert!(many_lines.len() <= config.max_sdp_bytes);
        let err =
            negotiate(mux.clone(), &config, CancellationToken::new(), FanoutPackets::default(), &many_lines, None)
                .err()
                .unwrap();
        assert_eq!(err, SessionError::TooManyMediaLines { count: 3000, limit: config.max_media_lines });
        // One attribute larger than the whole cap.
        let huge = format!("{}a=x-huge:{}\r\n", whep_offer("VP8"), "x".repeat(config.max_sdp_bytes));
        let err = negotiate(mux.clone(), &config, CancellationToken::new(), FanoutPackets::default(), &huge, None)
            .err()
            .unwrap();
        assert!(matches!(err, SessionError::SdpTooLarge { limit, .. } if limit == config.max_sdp_bytes), "{err}");
        // Hundreds of candidates.
        let candidate = "a=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\n";
        let crowded = format!("{}{}", whep_offer("VP8"), candidate.repeat(500));
        let err =
            negotiate(mux, &config, CancellationToken::new(), FanoutPackets::default(), &crowded, None).err().unwrap();
        assert_eq!(err, SessionError::TooManyCandidates { count: 500, limit: config.max_remote_candidates });
    }
}

//! What Junction reads from a peer's SDP itself, around str0m: the caps every SDP is measured
//! against before str0m parses it ([`SdpLimits`], from `[webrtc]`), the offer's m-sections as
//! str0m does not expose them (mids, `a=rid` restrictions), and each m-line as negotiated
//! ([`MediaLine`]), read back from the `Rtc`. Both the negotiation (`negotiate.rs`) and a running
//! session (its renegotiations) use it. One thing is written into our answers: every m-line in
//! one media stream ([`one_media_stream`]).

use junction_core::{Codec, LayerInfo, MediaKind};
use str0m::Rtc;
use str0m::media::{Media, MediaKind as WireKind, Rids, SimulcastLayer};

use crate::codec;
use crate::config::WebrtcConfig;
use crate::error::SessionError;
use crate::session::simulcast;

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
        // The payload types the current m-line lists, and those an rtpmap has mapped in it.
        let (mut listed, mut mapped): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        for line in sdp.lines().map(str::trim_start) {
            if let Some(media) = line.strip_prefix("m=") {
                media_lines += 1;
                listed = media.split_whitespace().skip(3).collect();
                mapped.clear();
            } else if line.starts_with("a=candidate:") {
                candidates += 1;
            } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
                // RFC 8866 §6.6: an rtpmap maps a format its m-line lists, once. str0m panics on
                // a payload type mapped where it is not listed (found by fuzzing).
                let pt = map.split_whitespace().next().unwrap_or_default();
                if !listed.contains(&pt) || mapped.contains(&pt) {
                    return Err(SessionError::BadSdp(format!(
                        "a=rtpmap for payload type {pt} outside its m-line or mapped twice"
                    )));
                }
                mapped.push(pt);
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

/// The `candidate:…` values of an SDP's `a=candidate` lines (for trickling them as well).
pub fn candidate_lines(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"))
        .map(str::to_owned)
        .collect()
}

/// `answer` with all its m-lines in one media stream: every `a=msid:<stream> <track>` (and
/// `a=ssrc:<n> msid:…`) names the stream of the first one, and `a=msid-semantic` lists only it.
/// str0m gives each m-line it answers a random stream id, and a browser plays the audio and
/// video of one stream in sync (Chromium's sync group is the stream id) but never two streams:
/// a WHEP player's audio would drift off its video by whatever the jitter buffers hold.
pub(crate) fn one_media_stream(answer: &str) -> String {
    let Some(stream) = answer.lines().find_map(|l| l.strip_prefix("a=msid:")?.split(' ').next()) else {
        return answer.to_owned();
    };
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        let (text, end) = line.find(['\r', '\n']).map_or((line, ""), |at| line.split_at(at));
        if let Some(value) = text.strip_prefix("a=msid-semantic:") {
            let semantic = value.split_whitespace().next().unwrap_or("WMS");
            out.push_str(&format!("a=msid-semantic: {semantic} {stream}"));
        } else if let Some((head, track)) = msid_value(text).and_then(|at| {
            let value = &text[at..];
            value.split_once(' ').map(|(_, track)| (&text[..at], track))
        }) {
            out.push_str(&format!("{head}{stream} {track}"));
        } else {
            out.push_str(text);
        }
        out.push_str(end);
    }
    out
}

/// Where the `<stream> <track>` value of an `a=msid:` or `a=ssrc:<n> msid:` line starts.
fn msid_value(line: &str) -> Option<usize> {
    if line.starts_with("a=msid:") {
        return Some("a=msid:".len());
    }
    let rest = line.strip_prefix("a=ssrc:")?;
    let at = rest.find(" msid:")?;
    Some("a=ssrc:".len() + at + " msid:".len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_puts_every_m_line_in_the_first_ones_stream() {
        let answer = "v=0\r\na=msid-semantic: WMS s1 s2\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:s1 ta\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:s2 tv\r\na=ssrc:7 msid:s2 tv\r\na=ssrc:7 cname:x\r\n";
        assert_eq!(
            one_media_stream(answer),
            "v=0\r\na=msid-semantic: WMS s1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:s1 ta\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:s1 tv\r\na=ssrc:7 msid:s1 tv\r\na=ssrc:7 cname:x\r\n"
        );
        let plain = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n";
        assert_eq!(one_media_stream(plain), plain);
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
}

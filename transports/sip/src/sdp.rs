//! SDP offer/answer for one audio stream (RFC 3264) on the `sdp` crate: reading a phone's
//! offer or answer, choosing the codec (PCMU, PCMA or Opus, plus telephone-event for DTMF)
//! and the SRTP keys (RTP/SAVP with SDES `a=crypto`, RFC 4568, as the trunk's
//! [`MediaEncryption`] allows or demands), and writing our answer — which lists only what was
//! chosen — or our own offer for dial-out and late offers.

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use junction_core::Codec;
use sdp::description::common::{Address, Attribute, ConnectionInformation};
use sdp::description::media::{MediaDescription, MediaName, RangedPort};
use sdp::description::session::{Origin, SessionDescription, TimeDescription, Timing};
use serde::{Deserialize, Serialize};

use crate::media::srtp::{Crypto, MasterKey, SrtpKeys, Suite};

/// The payload type we use for telephone-event in our offers.
pub const OFFER_DTMF_PT: u8 = 101;
/// The payload type we use for Opus in our offers.
pub const OFFER_OPUS_PT: u8 = 111;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("the body is not SDP: {0}")]
    Syntax(String),
    #[error("the SDP has no audio stream")]
    NoAudio,
    #[error("the audio stream has no connection address")]
    NoAddress,
    #[error("no common codec: offered {offered}; Junction takes PCMU, PCMA or Opus")]
    NoCommonCodec { offered: String },
    #[error("this trunk requires SRTP (RTP/SAVP with an a=crypto key); the offer is plain RTP")]
    EncryptionRequired,
    #[error("the offer demands SRTP and this trunk has media_encryption off")]
    EncryptionRefused,
    #[error("no usable a=crypto line: Junction takes AES_CM_128_HMAC_SHA1_80 or _32 with one inline key")]
    NoCommonCrypto,
    #[error("the answer does not accept our SRTP key (no a=crypto with tag {tag} and {suite})")]
    CryptoNotAccepted { tag: u32, suite: &'static str },
}

/// Whether a trunk's calls carry SRTP: `off` answers and offers plain RTP only (an RTP/SAVP
/// offer gets 488); `optional` (the default) takes what the far end offers and offers plain
/// RTP; `required` takes only encrypted offers (RTP/AVP gets 488) and offers RTP/SAVP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaEncryption {
    Off,
    #[default]
    Optional,
    Required,
}

impl MediaEncryption {
    pub fn is_optional(&self) -> bool {
        *self == MediaEncryption::Optional
    }

    /// The key we offer (in the INVITE of a call we place, or the 2xx of a late offer), if any.
    pub fn offer(self) -> Option<Crypto> {
        (self == MediaEncryption::Required).then(|| Crypto::fresh(1, Suite::AesCm128HmacSha1_80))
    }
}

/// A call's SRTP, as negotiated: the crypto tag of the accepted line, whether the m-line's
/// profile is RTP/SAVP (or best-effort SRTP on RTP/AVP), and the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srtp {
    pub tag: u32,
    pub savp: bool,
    pub keys: SrtpKeys,
}

impl Srtp {
    /// Our `a=crypto` line.
    pub fn ours(&self) -> Crypto {
        Crypto { tag: self.tag, suite: self.keys.suite, key: self.keys.local.clone() }
    }
}

/// Which way media flows, from the point of view of the side that wrote the SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction an answer takes for an offer in this direction.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// One payload format of an m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub pt: u8,
    /// Encoding name, lower case (`pcmu`, `opus`, `telephone-event`, `g729`, ...).
    pub name: String,
    pub clock_rate: u32,
    pub channels: u8,
}

/// The remote side's audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAudio {
    /// Where to send RTP. `None` for the RFC 2543 hold address 0.0.0.0 or port 0.
    pub rtp: Option<SocketAddr>,
    pub formats: Vec<Format>,
    pub direction: Direction,
    /// The m-line's profile is RTP/SAVP (SRTP demanded).
    pub savp: bool,
    /// The `a=crypto` lines Junction can use, in the writer's order of preference.
    pub crypto: Vec<Crypto>,
}

/// The outcome of a negotiation: how this call's audio is carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    pub pt: u8,
    pub clock_rate: u32,
    pub channels: u8,
    pub dtmf_pt: Option<u8>,
    /// The telephone-event clock (8000, or the codec's when it was offered that way).
    pub dtmf_rate: u32,
    /// Where to send RTP (`None` while the remote holds the call RFC 2543 style).
    pub remote: Option<SocketAddr>,
    /// Our direction.
    pub direction: Direction,
    /// The SRTP keys, when the call's media is encrypted.
    pub srtp: Option<Srtp>,
}

impl Negotiated {
    /// Keeps the key we already use when a renegotiation keeps the suite (a re-INVITE for
    /// hold or resume need not re-key our side).
    pub fn keep_local_key(&mut self, previous: &Negotiated) {
        if let (Some(now), Some(before)) = (&mut self.srtp, &previous.srtp)
            && now.keys.suite == before.keys.suite
        {
            now.tag = before.tag;
            now.keys.local = before.keys.local.clone();
        }
    }
}

/// Static payload types of RFC 3551 that may come without an rtpmap.
fn static_format(pt: u8) -> Option<Format> {
    let (name, clock_rate) = match pt {
        0 => ("pcmu", 8000),
        3 => ("gsm", 8000),
        8 => ("pcma", 8000),
        9 => ("g722", 8000),
        18 => ("g729", 8000),
        _ => return None,
    };
    Some(Format { pt, name: name.to_owned(), clock_rate, channels: 1 })
}

fn attribute<'a>(attrs: &'a [Attribute], key: &str) -> impl Iterator<Item = &'a str> {
    attrs.iter().filter(move |a| a.key.eq_ignore_ascii_case(key)).map(|a| a.value.as_deref().unwrap_or(""))
}

/// Reads the first audio stream of an SDP body.
pub fn parse(body: &[u8]) -> Result<RemoteAudio, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::Syntax("not UTF-8".into()))?;
    // The lexer wants CRLF or LF line ends and nothing after the last line.
    let normalised: String = text.lines().map(|l| format!("{}\r\n", l.trim_end())).collect();
    let session = SessionDescription::unmarshal(&mut Cursor::new(normalised.as_bytes()))
        .map_err(|err| SdpError::Syntax(err.to_string().chars().take(120).collect()))?;
    let media = session
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media.eq_ignore_ascii_case("audio"))
        .ok_or(SdpError::NoAudio)?;

    let connection = media.connection_information.as_ref().or(session.connection_information.as_ref());
    let address = connection.and_then(|c| c.address.as_ref()).ok_or(SdpError::NoAddress)?;
    let ip: IpAddr = address.address.parse().map_err(|_| SdpError::NoAddress)?;
    let port = u16::try_from(media.media_name.port.value).unwrap_or(0);
    let savp = media.media_name.protos.iter().any(|p| p.eq_ignore_ascii_case("SAVP"));
    let crypto = attribute(&media.attributes, "crypto").filter_map(Crypto::parse).take(16).collect();
    let rtp = (!ip.is_unspecified() && port != 0).then_some(SocketAddr::new(ip, port));

    let mut formats = Vec::new();
    for raw in &media.media_name.formats {
        let Ok(pt) = raw.parse::<u8>() else { continue };
        let mapped = attribute(&media.attributes, "rtpmap").find_map(|value| {
            let (map_pt, encoding) = value.split_once(' ')?;
            (map_pt.trim().parse::<u8>().ok()? == pt).then_some(encoding.trim())
        });
        let format = match mapped {
            Some(encoding) => {
                let mut parts = encoding.split('/');
                let name = parts.next().unwrap_or_default().to_ascii_lowercase();
                let clock_rate = parts.next().and_then(|r| r.parse().ok()).unwrap_or(8000);
                let channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
                Format { pt, name, clock_rate, channels }
            }
            None => match static_format(pt) {
                Some(format) => format,
                None => continue,
            },
        };
        formats.push(format);
    }

    let direction = ["sendrecv", "sendonly", "recvonly", "inactive"]
        .into_iter()
        .find(|d| {
            attribute(&media.attributes, d).next().is_some() || attribute(&session.attributes, d).next().is_some()
        })
        .map_or(Direction::SendRecv, |d| match d {
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => Direction::SendRecv,
        });
    Ok(RemoteAudio { rtp, formats, direction, savp, crypto })
}

fn supported(format: &Format) -> Option<Codec> {
    match (format.name.as_str(), format.clock_rate) {
        ("pcmu", 8000) => Some(Codec::Pcmu),
        ("pcma", 8000) => Some(Codec::Pcma),
        ("opus", 48000) => Some(Codec::Opus),
        _ => None,
    }
}

/// Answers an offer: the first offered format we can carry (RFC 3264 §6.1: the offerer's
/// order is its preference), telephone-event if it was offered too, and SRTP as `policy` and
/// the offer allow — the first usable `a=crypto` line, answered with a fresh key of ours.
/// RTP/AVP offers that carry keys anyway (best-effort SRTP) are encrypted unless `policy` is off.
pub fn negotiate(remote: &RemoteAudio, policy: MediaEncryption) -> Result<Negotiated, SdpError> {
    let mut chosen = choose_codec(remote)?;
    chosen.srtp = match (policy, remote.savp, remote.crypto.first()) {
        (MediaEncryption::Off, true, _) => return Err(SdpError::EncryptionRefused),
        (MediaEncryption::Off, false, _) => None,
        (_, true, None) => return Err(SdpError::NoCommonCrypto),
        (MediaEncryption::Required, false, None) => return Err(SdpError::EncryptionRequired),
        (MediaEncryption::Optional, false, None) => None,
        (_, savp, Some(theirs)) => Some(Srtp {
            tag: theirs.tag,
            savp,
            keys: SrtpKeys { suite: theirs.suite, remote: theirs.key.clone(), local: MasterKey::random() },
        }),
    };
    Ok(chosen)
}

/// Reads the answer to an offer of ours; `offered` is the key our offer carried. An answer
/// that drops SRTP we offered is refused (we offer keys only when encryption is required).
pub fn negotiate_answer(remote: &RemoteAudio, offered: Option<&Crypto>) -> Result<Negotiated, SdpError> {
    let mut chosen = choose_codec(remote)?;
    chosen.srtp = match offered {
        None => None,
        Some(ours) => {
            let theirs = remote
                .crypto
                .iter()
                .find(|c| c.tag == ours.tag && c.suite == ours.suite)
                .ok_or(SdpError::CryptoNotAccepted { tag: ours.tag, suite: ours.suite.as_str() })?;
            Some(Srtp {
                tag: ours.tag,
                savp: true,
                keys: SrtpKeys { suite: ours.suite, remote: theirs.key.clone(), local: ours.key.clone() },
            })
        }
    };
    Ok(chosen)
}

fn choose_codec(remote: &RemoteAudio) -> Result<Negotiated, SdpError> {
    let (format, codec) = remote.formats.iter().find_map(|f| supported(f).map(|c| (f, c))).ok_or_else(|| {
        let names: Vec<String> = remote.formats.iter().map(|f| format!("{}/{}", f.name, f.clock_rate)).collect();
        SdpError::NoCommonCodec { offered: if names.is_empty() { "nothing".into() } else { names.join(", ") } }
    })?;
    let events = || remote.formats.iter().filter(|f| f.name == "telephone-event");
    let dtmf = events().find(|f| f.clock_rate == format.clock_rate).or_else(|| events().next());
    Ok(Negotiated {
        codec,
        pt: format.pt,
        clock_rate: format.clock_rate,
        channels: format.channels.max(1),
        dtmf_pt: dtmf.map(|f| f.pt),
        dtmf_rate: dtmf.map_or(8000, |f| f.clock_rate),
        remote: remote.rtp,
        direction: remote.direction.answer(),
        srtp: None,
    })
}

/// The `o=` line's id and version; the version goes up with every new SDP we send in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpOrigin {
    pub id: u64,
    pub version: u64,
}

impl SdpOrigin {
    pub fn new() -> Self {
        let id = rand::random::<u32>() as u64;
        Self { id, version: id }
    }
}

impl Default for SdpOrigin {
    fn default() -> Self {
        Self::new()
    }
}

fn session(local: SocketAddr, origin: SdpOrigin, media: MediaDescription) -> String {
    let address_type = if local.is_ipv4() { "IP4" } else { "IP6" };
    let description = SessionDescription {
        version: 0,
        origin: Origin {
            username: "junction".into(),
            session_id: origin.id,
            session_version: origin.version,
            network_type: "IN".into(),
            address_type: address_type.into(),
            unicast_address: local.ip().to_string(),
        },
        session_name: "Junction".into(),
        session_information: None,
        uri: None,
        email_address: None,
        phone_number: None,
        connection_information: Some(ConnectionInformation {
            network_type: "IN".into(),
            address_type: address_type.into(),
            address: Some(Address { address: local.ip().to_string(), ttl: None, range: None }),
        }),
        bandwidth: Vec::new(),
        time_descriptions: vec![TimeDescription {
            timing: Timing { start_time: 0, stop_time: 0 },
            repeat_times: vec![],
        }],
        time_zones: Vec::new(),
        encryption_key: None,
        attributes: Vec::new(),
        media_descriptions: vec![media],
    };
    description.marshal()
}

fn audio_media(
    port: u16,
    formats: &[(u8, String, Option<String>)],
    direction: Direction,
    crypto: Option<(Crypto, bool)>,
) -> MediaDescription {
    let mut attributes = Vec::new();
    let savp = crypto.as_ref().is_some_and(|(_, savp)| *savp);
    if let Some((crypto, _)) = &crypto {
        attributes.push(Attribute::new("crypto".into(), Some(crypto.value())));
    }
    for (pt, rtpmap, fmtp) in formats {
        attributes.push(Attribute::new("rtpmap".into(), Some(format!("{pt} {rtpmap}"))));
        if let Some(fmtp) = fmtp {
            attributes.push(Attribute::new("fmtp".into(), Some(format!("{pt} {fmtp}"))));
        }
    }
    attributes.push(Attribute::new("ptime".into(), Some("20".into())));
    attributes.push(Attribute::new(direction.as_str().into(), None));
    MediaDescription {
        media_name: MediaName {
            media: "audio".into(),
            port: RangedPort { value: port as isize, range: None },
            protos: vec!["RTP".into(), if savp { "SAVP" } else { "AVP" }.into()],
            formats: formats.iter().map(|(pt, _, _)| pt.to_string()).collect(),
        },
        media_title: None,
        connection_information: None,
        bandwidth: Vec::new(),
        encryption_key: None,
        attributes,
    }
}

fn rtpmap(codec: Codec, clock_rate: u32, channels: u8) -> String {
    match codec {
        Codec::Opus => format!("opus/{clock_rate}/{}", channels.max(2)),
        Codec::Pcma => "PCMA/8000".into(),
        _ => "PCMU/8000".into(),
    }
}

/// Our answer: the chosen codec, telephone-event if it was offered, and nothing else.
pub fn answer(local: SocketAddr, origin: SdpOrigin, chosen: &Negotiated) -> String {
    let mut formats = vec![(chosen.pt, rtpmap(chosen.codec, chosen.clock_rate, chosen.channels), None)];
    if chosen.codec == Codec::Opus {
        formats[0].2 = Some("minptime=10;useinbandfec=1".to_owned());
    }
    if let Some(pt) = chosen.dtmf_pt {
        formats.push((pt, format!("telephone-event/{}", chosen.dtmf_rate), Some("0-16".into())));
    }
    let crypto = chosen.srtp.as_ref().map(|srtp| (srtp.ours(), srtp.savp));
    session(local, origin, audio_media(local.port(), &formats, chosen.direction, crypto))
}

/// Our offer for a call we place (or a late offer's 2xx): G.711 first (every phone has it),
/// then Opus, and DTMF; RTP/SAVP with `crypto` when given.
pub fn offer(local: SocketAddr, origin: SdpOrigin, crypto: Option<&Crypto>) -> String {
    let formats = vec![
        (0, "PCMU/8000".to_owned(), None),
        (8, "PCMA/8000".to_owned(), None),
        (OFFER_OPUS_PT, "opus/48000/2".to_owned(), Some("minptime=10;useinbandfec=1".to_owned())),
        (OFFER_DTMF_PT, "telephone-event/8000".to_owned(), Some("0-16".to_owned())),
    ];
    session(local, origin, audio_media(local.port(), &formats, Direction::SendRecv, crypto.map(|c| (c.clone(), true))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n";

    #[test]
    fn answers_pcmu_and_dtmf_with_only_what_was_chosen() {
        let remote = parse(SIPP_OFFER.as_bytes()).unwrap();
        assert_eq!(remote.rtp, Some("127.0.0.1:6000".parse().unwrap()));
        let chosen = negotiate(&remote, MediaEncryption::Optional).unwrap();
        assert_eq!((chosen.codec, chosen.pt, chosen.dtmf_pt), (Codec::Pcmu, 0, Some(101)));
        let text = answer("127.0.0.1:20000".parse().unwrap(), SdpOrigin::new(), &chosen);
        assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(text.contains("a=sendrecv"));
        assert!(!text.contains("PCMA") && !text.contains("opus"), "{text}");
        // Our own answer parses back to the same choice.
        let back = negotiate(&parse(text.as_bytes()).unwrap(), MediaEncryption::Optional).unwrap();
        assert_eq!((back.codec, back.pt, back.dtmf_pt), (Codec::Pcmu, 0, Some(101)));
    }

    #[test]
    fn follows_the_offerers_order_and_static_payload_types() {
        let offer = SIPP_OFFER.replace("RTP/AVP 0 101", "RTP/AVP 18 8 0").replace("a=rtpmap:0 PCMU/8000\r\n", "");
        let chosen = negotiate(&parse(offer.as_bytes()).unwrap(), MediaEncryption::Optional).unwrap();
        assert_eq!((chosen.codec, chosen.pt, chosen.dtmf_pt), (Codec::Pcma, 8, None));
        let opus = SIPP_OFFER
            .replace("RTP/AVP 0 101", "RTP/AVP 96 0")
            .replace("a=rtpmap:0", "a=rtpmap:96 opus/48000/2\r\na=rtpmap:0");
        let chosen = negotiate(&parse(opus.as_bytes()).unwrap(), MediaEncryption::Optional).unwrap();
        assert_eq!((chosen.codec, chosen.pt, chosen.clock_rate), (Codec::Opus, 96, 48000));
    }

    #[test]
    fn g729_only_has_no_common_codec() {
        let offer =
            SIPP_OFFER.replace("RTP/AVP 0 101", "RTP/AVP 18").replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000");
        let err = negotiate(&parse(offer.as_bytes()).unwrap(), MediaEncryption::Optional).unwrap_err();
        assert_eq!(err, SdpError::NoCommonCodec { offered: "g729/8000".into() });
    }

    #[test]
    fn hold_offers_flip_direction() {
        let hold = SIPP_OFFER.replace("a=fmtp:101 0-11,16\r\n", "a=fmtp:101 0-11,16\r\na=sendonly\r\n");
        let chosen = negotiate(&parse(hold.as_bytes()).unwrap(), MediaEncryption::Optional).unwrap();
        assert_eq!(chosen.direction, Direction::RecvOnly);
        assert!(!chosen.direction.sends());
        let old_style = SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        assert_eq!(parse(old_style.as_bytes()).unwrap().rtp, None);
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(matches!(parse(b"hello"), Err(SdpError::Syntax(_))));
        assert!(matches!(parse(&[0xff, 0x00]), Err(SdpError::Syntax(_))));
        let video = SIPP_OFFER.replace("m=audio", "m=video");
        assert_eq!(parse(video.as_bytes()), Err(SdpError::NoAudio));
        let no_c = SIPP_OFFER.replace("c=IN IP4 127.0.0.1\r\n", "");
        assert_eq!(parse(no_c.as_bytes()), Err(SdpError::NoAddress));
    }

    #[test]
    fn offers_parse_back() {
        let text = offer("127.0.0.1:20002".parse().unwrap(), SdpOrigin::new(), None);
        let remote = parse(text.as_bytes()).unwrap();
        let names: Vec<&str> = remote.formats.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["pcmu", "pcma", "opus", "telephone-event"]);
    }

    const CRYPTO_80: &str = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";
    const CRYPTO_32: &str = "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";

    fn savp_offer(crypto: &str) -> RemoteAudio {
        let text = SIPP_OFFER.replace("RTP/AVP", "RTP/SAVP") + "a=crypto:9 F8_128_HMAC_SHA1_80 inline:x\r\n" + crypto;
        parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn an_srtp_offer_is_answered_with_our_own_key_on_the_first_usable_line() {
        let remote = savp_offer(&format!("{CRYPTO_32}{CRYPTO_80}"));
        assert!(remote.savp);
        assert_eq!(remote.crypto.len(), 2, "the F8 line is not usable");
        for policy in [MediaEncryption::Optional, MediaEncryption::Required] {
            let chosen = negotiate(&remote, policy).unwrap();
            let srtp = chosen.srtp.clone().expect("encrypted");
            assert_eq!((srtp.tag, srtp.keys.suite, srtp.savp), (2, Suite::AesCm128HmacSha1_32, true));
            assert_eq!(srtp.keys.remote, remote.crypto[0].key);
            assert_ne!(srtp.keys.local, srtp.keys.remote, "we send with a key of our own");
            let text = answer("127.0.0.1:20000".parse().unwrap(), SdpOrigin::new(), &chosen);
            assert!(text.contains("m=audio 20000 RTP/SAVP 0 101\r\n"), "{text}");
            let back = parse(text.as_bytes()).unwrap();
            assert_eq!(back.crypto.len(), 1);
            assert_eq!((back.crypto[0].tag, &back.crypto[0].key), (2, &srtp.keys.local));
        }
        assert_eq!(negotiate(&remote, MediaEncryption::Off), Err(SdpError::EncryptionRefused));
        assert_eq!(negotiate(&savp_offer(""), MediaEncryption::Optional), Err(SdpError::NoCommonCrypto));
    }

    #[test]
    fn plain_offers_pass_unless_the_trunk_requires_srtp() {
        let plain = parse(SIPP_OFFER.as_bytes()).unwrap();
        assert_eq!(negotiate(&plain, MediaEncryption::Required), Err(SdpError::EncryptionRequired));
        assert_eq!(negotiate(&plain, MediaEncryption::Optional).unwrap().srtp, None);
        // Best-effort SRTP: keys on an RTP/AVP line are used, and the answer stays RTP/AVP.
        let best_effort = parse((SIPP_OFFER.to_owned() + CRYPTO_80).as_bytes()).unwrap();
        let chosen = negotiate(&best_effort, MediaEncryption::Required).unwrap();
        assert_eq!(chosen.srtp.as_ref().map(|s| s.savp), Some(false));
        let text = answer("127.0.0.1:20000".parse().unwrap(), SdpOrigin::new(), &chosen);
        assert!(
            text.contains("RTP/AVP 0 101") && text.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{text}"
        );
        assert_eq!(negotiate(&best_effort, MediaEncryption::Off).unwrap().srtp, None);
    }

    #[test]
    fn our_srtp_offer_needs_an_answer_that_takes_it() {
        let ours = MediaEncryption::Required.offer().unwrap();
        assert_eq!(MediaEncryption::Optional.offer(), None);
        let text = offer("127.0.0.1:20002".parse().unwrap(), SdpOrigin::new(), Some(&ours));
        assert!(text.contains("RTP/SAVP 0 8 111 101") && text.contains(&ours.value()), "{text}");
        let theirs = Crypto::parse(CRYPTO_80.trim_start_matches("a=crypto:").trim_end()).unwrap();
        let answer_text = SIPP_OFFER.replace("RTP/AVP", "RTP/SAVP") + CRYPTO_80;
        let chosen = negotiate_answer(&parse(answer_text.as_bytes()).unwrap(), Some(&ours)).unwrap();
        let srtp = chosen.srtp.unwrap();
        assert_eq!((srtp.keys.local.clone(), srtp.keys.remote.clone()), (ours.key.clone(), theirs.key));
        let refused = negotiate_answer(&parse(SIPP_OFFER.as_bytes()).unwrap(), Some(&ours));
        assert!(matches!(refused, Err(SdpError::CryptoNotAccepted { tag: 1, .. })));
        // A re-INVITE that keeps the suite keeps our key.
        let mut again = negotiate(&savp_offer(CRYPTO_80), MediaEncryption::Optional).unwrap();
        let first = negotiate(&savp_offer(CRYPTO_80), MediaEncryption::Optional).unwrap();
        again.keep_local_key(&first);
        assert_eq!(again.srtp.unwrap().keys.local, first.srtp.unwrap().keys.local);
    }

    #[test]
    fn mutated_offers_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        let specials = [b'=', b' ', b'\r', b'\n', b':', b'/', b'0', b'9', 0xff, b'-'];
        for _ in 0..20_000 {
            let mut bytes = SIPP_OFFER.as_bytes().to_vec();
            for _ in 0..(next() % 5 + 1) {
                let at = next() % bytes.len().max(1);
                match next() % 3 {
                    0 => bytes[at] = specials[next() % specials.len()],
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, specials[next() % specials.len()]),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if let Ok(remote) = parse(&bytes) {
                let _ = negotiate(&remote, MediaEncryption::Optional);
                let _ = negotiate(&remote, MediaEncryption::Required);
            }
        }
    }
}

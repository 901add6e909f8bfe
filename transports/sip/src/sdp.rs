//! SDP offer/answer for one audio stream (RFC 3264) on the `sdp` crate: reading a phone's
//! offer or answer, choosing the codec (PCMU, PCMA or Opus, plus telephone-event for DTMF),
//! and writing our answer — which lists only what was chosen — or our own offer for dial-out.

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use junction_core::Codec;
use sdp::description::common::{Address, Attribute, ConnectionInformation};
use sdp::description::media::{MediaDescription, MediaName, RangedPort};
use sdp::description::session::{Origin, SessionDescription, TimeDescription, Timing};

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
    Ok(RemoteAudio { rtp, formats, direction })
}

fn supported(format: &Format) -> Option<Codec> {
    match (format.name.as_str(), format.clock_rate) {
        ("pcmu", 8000) => Some(Codec::Pcmu),
        ("pcma", 8000) => Some(Codec::Pcma),
        ("opus", 48000) => Some(Codec::Opus),
        _ => None,
    }
}

/// Chooses the first offered format we can carry (RFC 3264 §6.1: the offerer's order is its
/// preference), and telephone-event at 8 kHz if it was offered too.
pub fn negotiate(remote: &RemoteAudio) -> Result<Negotiated, SdpError> {
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

fn audio_media(port: u16, formats: &[(u8, String, Option<String>)], direction: Direction) -> MediaDescription {
    let mut attributes = Vec::new();
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
            protos: vec!["RTP".into(), "AVP".into()],
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
    session(local, origin, audio_media(local.port(), &formats, chosen.direction))
}

/// Our offer for a call we place: G.711 first (every phone has it), then Opus, and DTMF.
pub fn offer(local: SocketAddr, origin: SdpOrigin) -> String {
    let formats = vec![
        (0, "PCMU/8000".to_owned(), None),
        (8, "PCMA/8000".to_owned(), None),
        (OFFER_OPUS_PT, "opus/48000/2".to_owned(), Some("minptime=10;useinbandfec=1".to_owned())),
        (OFFER_DTMF_PT, "telephone-event/8000".to_owned(), Some("0-16".to_owned())),
    ];
    session(local, origin, audio_media(local.port(), &formats, Direction::SendRecv))
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
        let chosen = negotiate(&remote).unwrap();
        assert_eq!((chosen.codec, chosen.pt, chosen.dtmf_pt), (Codec::Pcmu, 0, Some(101)));
        let text = answer("127.0.0.1:20000".parse().unwrap(), SdpOrigin::new(), &chosen);
        assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(text.contains("a=sendrecv"));
        assert!(!text.contains("PCMA") && !text.contains("opus"), "{text}");
        // Our own answer parses back to the same choice.
        let back = negotiate(&parse(text.as_bytes()).unwrap()).unwrap();
        assert_eq!((back.codec, back.pt, back.dtmf_pt), (Codec::Pcmu, 0, Some(101)));
    }

    #[test]
    fn follows_the_offerers_order_and_static_payload_types() {
        let offer = SIPP_OFFER.replace("RTP/AVP 0 101", "RTP/AVP 18 8 0").replace("a=rtpmap:0 PCMU/8000\r\n", "");
        let chosen = negotiate(&parse(offer.as_bytes()).unwrap()).unwrap();
        assert_eq!((chosen.codec, chosen.pt, chosen.dtmf_pt), (Codec::Pcma, 8, None));
        let opus = SIPP_OFFER
            .replace("RTP/AVP 0 101", "RTP/AVP 96 0")
            .replace("a=rtpmap:0", "a=rtpmap:96 opus/48000/2\r\na=rtpmap:0");
        let chosen = negotiate(&parse(opus.as_bytes()).unwrap()).unwrap();
        assert_eq!((chosen.codec, chosen.pt, chosen.clock_rate), (Codec::Opus, 96, 48000));
    }

    #[test]
    fn g729_only_has_no_common_codec() {
        let offer =
            SIPP_OFFER.replace("RTP/AVP 0 101", "RTP/AVP 18").replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000");
        let err = negotiate(&parse(offer.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(err, SdpError::NoCommonCodec { offered: "g729/8000".into() });
    }

    #[test]
    fn hold_offers_flip_direction() {
        let hold = SIPP_OFFER.replace("a=fmtp:101 0-11,16\r\n", "a=fmtp:101 0-11,16\r\na=sendonly\r\n");
        let chosen = negotiate(&parse(hold.as_bytes()).unwrap()).unwrap();
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
        let text = offer("127.0.0.1:20002".parse().unwrap(), SdpOrigin::new());
        let remote = parse(text.as_bytes()).unwrap();
        let names: Vec<&str> = remote.formats.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["pcmu", "pcma", "opus", "telephone-event"]);
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
                let _ = negotiate(&remote);
            }
        }
    }
}

//! SIP messages: bytes in (framed and normalised by [`wire`], parsed by rsip), the handful of
//! facts every layer reads from a message ([`Head`]: Call-ID, CSeq, From/To tags, top Via),
//! and messages out ([`build`]: responses that echo a request, requests of a dialog).

pub mod build;
pub mod wire;

use std::fmt;
use std::net::SocketAddr;

use rsip::prelude::*;
use rsip::{Method, SipMessage};

pub use wire::{RawMessage, WireError};

/// How a message travels. Only the reliable/unreliable split matters to the transaction layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }

    pub fn is_udp(&self) -> bool {
        *self == Transport::Udp
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The transport a SIP URI asks for: TLS for `sips:` or `;transport=tls`, TCP for
    /// `;transport=tcp`, UDP otherwise.
    pub fn of_uri(uri: &rsip::Uri) -> Transport {
        match uri.transport() {
            _ if uri.scheme == Some(rsip::Scheme::Sips) => Transport::Tls,
            Some(rsip::Transport::Tls) => Transport::Tls,
            Some(rsip::Transport::Tcp) => Transport::Tcp,
            _ => Transport::Udp,
        }
    }

    /// The port a URI without one means (RFC 3263 §4.2).
    pub fn default_port(self) -> u16 {
        if self == Transport::Tls { 5061 } else { 5060 }
    }
}

/// The other end of a message: its transport and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Peer {
    pub fn udp(addr: SocketAddr) -> Self {
        Self { transport: Transport::Udp, addr }
    }

    pub fn tcp(addr: SocketAddr) -> Self {
        Self { transport: Transport::Tcp, addr }
    }

    pub fn tls(addr: SocketAddr) -> Self {
        Self { transport: Transport::Tls, addr }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport.as_str().to_ascii_lowercase(), self.addr)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("not a SIP message: {0}")]
    Grammar(String),
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed {name} header: {reason}")]
    BadHeader { name: &'static str, reason: String },
}

/// A message that could not be parsed, with what could be read of it (enough, for a request,
/// to answer 400 when its Via, From, To, Call-ID and CSeq lines are there).
#[derive(Debug, Clone)]
pub struct Unparsed {
    pub error: MessageError,
    pub raw: Option<RawMessage>,
}

/// Parses one framed message.
pub fn parse(bytes: &[u8]) -> Result<SipMessage, Unparsed> {
    let raw = wire::split(bytes).map_err(|(err, raw)| Unparsed { error: err.into(), raw })?;
    let canonical = raw.to_bytes();
    match SipMessage::try_from(canonical.as_slice()) {
        // rsip keeps what it does not understand inside header values, line breaks included;
        // values are echoed in responses and dialog requests, so none may hold a control
        // character (found by fuzzing sip_ua: a bare CR and LF inside a Via came back in our 100).
        Ok(message) if has_control_in_headers(&message) => Err(Unparsed {
            error: MessageError::Grammar("a control character inside a header value".into()),
            raw: Some(raw),
        }),
        Ok(message) => Ok(message),
        Err(err) => {
            let reason: String = err.to_string().chars().take(160).collect();
            Err(Unparsed { error: MessageError::Grammar(reason), raw: Some(raw) })
        }
    }
}

fn has_control_in_headers(message: &SipMessage) -> bool {
    use rsip::message::HasHeaders;
    let headers = match message {
        SipMessage::Request(request) => request.headers(),
        SipMessage::Response(response) => response.headers(),
    };
    headers.iter().any(|header| header.to_string().chars().any(|c| c.is_control() && c != '\t'))
}

/// A From or To header: URI, tag, display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub uri: rsip::Uri,
    pub tag: Option<String>,
    pub display: Option<String>,
}

impl NameAddr {
    /// The user part of the URI, if any.
    pub fn user(&self) -> Option<&str> {
        self.uri.user().filter(|u| !u.is_empty())
    }
}

/// The top Via: where responses go, and the branch that names the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopVia {
    pub branch: String,
    /// `host[:port]` as written (sent-by).
    pub sent_by: String,
    pub transport: String,
}

/// What every layer reads from a message (RFC 3261 §8.1.1's mandatory headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: Method,
    pub from: NameAddr,
    pub to: NameAddr,
    pub via: TopVia,
}

fn bad(name: &'static str, err: impl fmt::Display) -> MessageError {
    MessageError::BadHeader { name, reason: err.to_string().chars().take(120).collect() }
}

impl Head {
    pub fn of(message: &impl HeadersExt) -> Result<Head, MessageError> {
        let call_id = message.call_id_header().map_err(|_| MessageError::MissingHeader("Call-ID"))?.value().trim();
        if call_id.is_empty() {
            return Err(bad("Call-ID", "empty"));
        }
        let cseq = message.cseq_header().map_err(|_| MessageError::MissingHeader("CSeq"))?;
        let cseq = cseq.typed().map_err(|err| bad("CSeq", err))?;
        let from = message.from_header().map_err(|_| MessageError::MissingHeader("From"))?;
        let from = from.typed().map_err(|err| bad("From", err))?;
        let to = message.to_header().map_err(|_| MessageError::MissingHeader("To"))?;
        let to = to.typed().map_err(|err| bad("To", err))?;
        let via = message.via_header().map_err(|_| MessageError::MissingHeader("Via"))?;
        let via = via.typed().map_err(|err| bad("Via", err))?;
        let branch = via.branch().map(|b| b.to_string()).unwrap_or_default();
        Ok(Head {
            call_id: call_id.to_owned(),
            cseq: cseq.seq,
            cseq_method: cseq.method,
            from: NameAddr {
                tag: from.tag().map(|t| t.value().to_owned()),
                display: from.display_name.clone(),
                uri: from.uri,
            },
            to: NameAddr { tag: to.tag().map(|t| t.value().to_owned()), display: to.display_name.clone(), uri: to.uri },
            via: TopVia { branch, sent_by: via.uri.host_with_port.to_string(), transport: via.transport.to_string() },
        })
    }
}

/// The value of the first header named `name` (case-insensitive), whatever rsip made of it.
pub fn header_value(message: &impl HasHeaders, name: &str) -> Option<String> {
    message.headers().iter().map(name_and_value).find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// All values of headers named `name`.
pub fn header_values(message: &impl HasHeaders, name: &str) -> Vec<String> {
    message.headers().iter().map(name_and_value).filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v).collect()
}

/// A header as (name, value). rsip renders every header as `Name: value`.
fn name_and_value(header: &rsip::Header) -> (String, String) {
    match header {
        rsip::Header::Other(name, value) => (name.trim().to_owned(), value.trim().to_owned()),
        other => {
            let text = other.to_string();
            match text.split_once(':') {
                Some((name, value)) => (name.trim().to_owned(), value.trim().to_owned()),
                None => (text, String::new()),
            }
        }
    }
}

/// The body's content type (media type only, lower case), if the message has one.
pub fn content_type(message: &impl HasHeaders) -> Option<String> {
    message.headers().iter().find_map(|header| match header {
        rsip::Header::ContentType(ct) => {
            Some(ct.value().split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const INVITE: &str = "INVITE sip:standup@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n\
From: \"Alice\" <sip:alice@127.0.0.1:5061>;tag=a1\r\n\
To: <sip:standup@127.0.0.1:5060>\r\n\
Call-ID: call-1@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@127.0.0.1:5061>\r\n\
Max-Forwards: 70\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn a_control_character_inside_a_header_value_makes_the_message_unparsed() {
        // From the sip_ua crash: a request line cut by a blank line, and a Via holding a bare LF
        // and CR, which rsip kept inside the value (and our 100 Trying echoed).
        let crashed = b"INVITE si\r\n\r\np:standup@128.0.0.1:33533 SIP/2.0\r\n\
Via: SIP/2.0/UDP 126.0.0.1:44315;branbh=z9hG4bK-5hv1-29728-1:0\nmF\rro1-1\r\n\
From: \"alice\" <sip:alice@127.0.0.1:34977>;tag=29501SIPpTag001\r\n\
To: <sip:standup:@127.0.0.1:52525>\r\n\
Call-ID: 1-29501@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";
        assert!(parse(crashed).is_err());
        let with_nul = INVITE.replace("Max-Forwards: 70", "Max-Forwards: 7\u{0}0");
        assert!(parse(with_nul.as_bytes()).is_err());
        let with_tab = INVITE.replace("Call-ID: call-1@127.0.0.1", "Call-ID:\tcall-1@127.0.0.1");
        assert!(parse(with_tab.as_bytes()).is_ok(), "a tab is whitespace, not a control character");
    }

    #[test]
    fn reads_the_mandatory_headers() {
        let SipMessage::Request(request) = parse(INVITE.as_bytes()).unwrap() else { panic!("request") };
        let head = Head::of(&request).unwrap();
        assert_eq!(head.call_id, "call-1@127.0.0.1");
        assert_eq!((head.cseq, head.cseq_method), (1, Method::Invite));
        assert_eq!(head.from.tag.as_deref(), Some("a1"));
        assert_eq!(head.from.user(), Some("alice"));
        assert_eq!(head.to.tag, None);
        assert_eq!(head.via.branch, "z9hG4bK-1");
        assert_eq!(head.via.sent_by, "127.0.0.1:5061");
        assert_eq!(content_type(&request).as_deref(), Some("application/sdp"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [&b""[..], b"\x00\x01\x02", b"INVITE\r\n\r\n", b"SIP/2.0 abc\r\n\r\n", b"FOO bar SIP/2.0\r\n\r\n"] {
            assert!(parse(junk).is_err(), "{junk:?}");
        }
        let no_cseq = INVITE.replace("CSeq: 1 INVITE\r\n", "");
        let SipMessage::Request(request) = parse(no_cseq.as_bytes()).unwrap() else { panic!() };
        assert_eq!(Head::of(&request), Err(MessageError::MissingHeader("CSeq")));
    }
}

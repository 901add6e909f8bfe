//! The bench's own minimal SIP user agent client (RFC 3261, UDP only): the texts of the INVITE
//! (with an SDP offer of PCMU only), ACK and BYE of one call, the 200 answering a BYE from the
//! server, and the reading of responses. It shares nothing with the server's SIP stack: requests
//! are written here by hand (a UAC this small needs no builder), messages are parsed by `rsip`.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use junction_core::ids::random_id;
use rsip::prelude::*;

/// One call's dialog state, from the caller's side.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Where the server's SIP listens.
    pub server: SocketAddr,
    /// Our SIP socket's address (Via, Contact).
    pub local: SocketAddr,
    /// Our RTP socket's port (SDP offer).
    pub rtp_port: u16,
    /// The dialled user part: the room.
    pub callee: String,
    /// Our user part: the caller's identity in the room is `sip:<caller>`.
    pub caller: String,
    pub call_id: String,
    pub from_tag: String,
    invite_branch: String,
    /// The server's To tag, once it answered.
    pub to_tag: Option<String>,
    /// Where in-dialog requests go: the Contact of the 200, else the INVITE's request URI.
    pub remote_target: String,
}

/// What a response to one of our requests says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub reason: String,
    /// `INVITE` or `BYE`: the method of the CSeq header.
    pub method: String,
    pub to_tag: Option<String>,
    /// The Contact URI, when there is one.
    pub contact: Option<String>,
    /// The Warning header's text, which says why the server refused.
    pub warning: Option<String>,
    /// Where the answerer wants RTP (SDP `c=` and `m=audio`), when the response carries SDP.
    pub media: Option<SocketAddr>,
    /// The payload types of the answer's audio line.
    pub formats: Vec<u8>,
}

/// A request the server sent us inside the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    pub method: String,
    /// Our answer to it (200 OK for BYE, OPTIONS and re-INVITE-less requests).
    pub answer: String,
}

impl Dialog {
    pub fn new(server: SocketAddr, local: SocketAddr, rtp_port: u16, callee: &str, caller: &str) -> Dialog {
        Dialog {
            server,
            local,
            rtp_port,
            callee: callee.to_owned(),
            caller: caller.to_owned(),
            call_id: format!("{}@junction-bench", random_id("", 16)),
            from_tag: random_id("", 10),
            invite_branch: branch(),
            to_tag: None,
            remote_target: format!("sip:{callee}@{server}"),
        }
    }

    fn request_uri(&self) -> String {
        format!("sip:{}@{}", self.callee, self.server)
    }

    fn common(&self, method: &str, uri: &str, branch: &str, cseq: u32, to_tag: Option<&str>) -> String {
        let to_tag = to_tag.map(|tag| format!(";tag={tag}")).unwrap_or_default();
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{caller}@{local_ip}>;tag={from_tag}\r\n\
             To: <{to_uri}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             User-Agent: junction-bench\r\n",
            local = self.local,
            caller = self.caller,
            local_ip = self.local.ip(),
            from_tag = self.from_tag,
            to_uri = self.request_uri(),
            call_id = self.call_id,
        )
    }

    /// The INVITE, offering PCMU at 20 ms; the same text is sent again as its retransmission.
    pub fn invite(&self) -> String {
        let ip = self.local.ip();
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let sdp = format!(
            "v=0\r\no=- {session} 1 IN {family} {ip}\r\ns=junction bench\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
            session = random_id("", 8).bytes().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b))) >> 2,
            port = self.rtp_port,
        );
        let mut text = self.common("INVITE", &self.request_uri(), &self.invite_branch, 1, None);
        text.push_str(&format!(
            "Contact: <sip:{}@{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            self.caller,
            self.local,
            sdp.len()
        ));
        text
    }

    /// The ACK of a 2xx (a new transaction, to the remote target) or of a failure (same branch as
    /// the INVITE, RFC 3261 §17.1.1.3).
    pub fn ack(&self, reply: &Reply) -> String {
        let (uri, branch) = if reply.status < 300 {
            (self.remote_target.clone(), branch())
        } else {
            (self.request_uri(), self.invite_branch.clone())
        };
        let mut text = self.common("ACK", &uri, &branch, 1, reply.to_tag.as_deref());
        text.push_str("Content-Length: 0\r\n\r\n");
        text
    }

    /// The BYE ending the call (CSeq 2); the same text is its retransmission.
    pub fn bye(&self, branch: &str) -> String {
        let mut text = self.common("BYE", &self.remote_target, branch, 2, self.to_tag.as_deref());
        text.push_str("Content-Length: 0\r\n\r\n");
        text
    }

    /// Takes a 2xx to the INVITE: remembers the server's tag and Contact.
    pub fn answered(&mut self, reply: &Reply) {
        self.to_tag = reply.to_tag.clone();
        if let Some(contact) = &reply.contact {
            self.remote_target = contact.clone();
        }
    }

    /// Reads a datagram from the SIP socket: a response of this call, a request of this call
    /// (answered with 200), or `None` for anything else (another call's, unparseable).
    pub fn read(&self, datagram: &[u8]) -> Option<Result<Reply, IncomingRequest>> {
        match rsip::SipMessage::try_from(datagram).ok()? {
            rsip::SipMessage::Response(response) => {
                if response.call_id_header().ok()?.value() != self.call_id {
                    return None;
                }
                Some(Ok(reply(&response).ok()?))
            }
            rsip::SipMessage::Request(request) => {
                if request.call_id_header().ok()?.value() != self.call_id {
                    return None;
                }
                Some(Err(IncomingRequest { method: request.method.to_string(), answer: ok_for(&request)? }))
            }
        }
    }
}

/// A fresh RFC 3261 branch.
pub fn branch() -> String {
    format!("z9hG4bK{}", random_id("", 12))
}

fn reply(response: &rsip::Response) -> anyhow::Result<Reply> {
    let cseq = response.cseq_header().context("no CSeq")?;
    let mut warning = None;
    let mut contact = None;
    for header in response.headers.iter() {
        match header {
            rsip::Header::Warning(value) => warning = Some(value.value().to_owned()),
            rsip::Header::Contact(value) => {
                contact = value.uri().ok().map(|uri| uri.to_string());
            }
            _ => {}
        }
    }
    let (media, formats) = sdp_audio(&String::from_utf8_lossy(&response.body));
    Ok(Reply {
        status: response.status_code().code(),
        reason: response.status_code().to_string(),
        method: cseq.method().context("bad CSeq")?.to_string(),
        to_tag: response.to_header().context("no To")?.tag().ok().flatten().map(|tag| tag.value().to_owned()),
        contact,
        warning,
        media,
        formats,
    })
}

/// The 200 OK to a request the server sends inside the call (BYE, OPTIONS, INFO).
fn ok_for(request: &rsip::Request) -> Option<String> {
    let mut text = String::from("SIP/2.0 200 OK\r\n");
    for header in request.headers.iter() {
        match header {
            rsip::Header::Via(_)
            | rsip::Header::From(_)
            | rsip::Header::To(_)
            | rsip::Header::CallId(_)
            | rsip::Header::CSeq(_) => {
                text.push_str(&header.to_string());
                text.push_str("\r\n");
            }
            _ => {}
        }
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    Some(text)
}

/// The connection address and port of the first audio stream of an SDP body, and its formats.
pub fn sdp_audio(sdp: &str) -> (Option<SocketAddr>, Vec<u8>) {
    let mut address = None;
    let mut media = None;
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") && media.is_some() {
            break; // Only the first audio stream (and the session level) matter.
        }
        if let Some(c) = line.strip_prefix("c=IN ") {
            // A media-level c= comes after the session-level one and wins.
            address = c.split_whitespace().nth(1).and_then(|ip| ip.parse().ok()).or(address);
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            let mut fields = m.split_whitespace();
            let port: Option<u16> = fields.next().and_then(|p| p.parse().ok());
            let formats: Vec<u8> = fields.skip(1).filter_map(|f| f.parse().ok()).collect();
            media = Some((port, formats));
        }
    }
    match (address, media) {
        (Some(ip), Some((Some(port), formats))) if port != 0 => (Some(SocketAddr::new(ip, port)), formats),
        (_, Some((_, formats))) => (None, formats),
        _ => (None, Vec::new()),
    }
}

/// Why a call did not connect, for the report: the status and the server's Warning.
pub fn refusal(reply: &Reply) -> String {
    match &reply.warning {
        Some(warning) => format!("INVITE refused: {} ({warning})", reply.reason),
        None => format!("INVITE refused: {}", reply.reason),
    }
}

/// Checks an answer before media starts: PCMU chosen, a port to send to.
pub fn check_answer(reply: &Reply) -> anyhow::Result<SocketAddr> {
    if !reply.formats.contains(&0) {
        bail!("the answer did not choose PCMU (formats {:?})", reply.formats);
    }
    reply.media.context("the 200 OK carries no SDP audio address")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog() -> Dialog {
        Dialog::new("127.0.0.1:5060".parse().unwrap(), "127.0.0.1:40000".parse().unwrap(), 40002, "room-1", "bench3")
    }

    #[test]
    fn the_invite_is_a_parseable_request_offering_pcmu() {
        let dialog = dialog();
        let text = dialog.invite();
        let rsip::SipMessage::Request(request) = rsip::SipMessage::try_from(text.as_str()).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(request.method, rsip::Method::Invite);
        assert_eq!(request.uri.to_string(), "sip:room-1@127.0.0.1:5060");
        assert_eq!(request.call_id_header().unwrap().value(), dialog.call_id);
        let body = String::from_utf8(request.body.clone()).unwrap();
        assert_eq!(sdp_audio(&body), (Some("127.0.0.1:40002".parse().unwrap()), vec![0]));
        assert!(text.contains(&format!("Content-Length: {}\r\n\r\nv=0", body.len())));
    }

    #[test]
    fn a_200_is_read_and_acked_in_the_dialog() {
        let mut dialog = dialog();
        let answer = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKx\r\n\
             From: <sip:bench3@127.0.0.1>;tag={}\r\nTo: <sip:room-1@127.0.0.1:5060>;tag=srv1\r\n\
             Call-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:junction@127.0.0.1:5060>\r\n\
             Content-Type: application/sdp\r\nContent-Length: 90\r\n\r\n\
             v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n",
            dialog.from_tag, dialog.call_id
        );
        let reply = dialog.read(answer.as_bytes()).unwrap().unwrap();
        assert_eq!((reply.status, reply.method.as_str(), reply.to_tag.as_deref()), (200, "INVITE", Some("srv1")));
        assert_eq!(check_answer(&reply).unwrap(), "127.0.0.1:30000".parse().unwrap());
        dialog.answered(&reply);
        let ack = dialog.ack(&reply);
        assert!(ack.starts_with("ACK sip:junction@127.0.0.1:5060 SIP/2.0\r\n"), "{ack}");
        assert!(ack.contains("tag=srv1") && ack.contains("CSeq: 1 ACK"));
        let bye = dialog.bye(&branch());
        assert!(bye.contains("CSeq: 2 BYE") && bye.contains("tag=srv1"));
        // Another call's response is not ours.
        assert!(dialog.read(answer.replace(&dialog.call_id, "other").as_bytes()).is_none());
        assert!(dialog.read(b"garbage").is_none());
    }

    #[test]
    fn a_refusal_names_the_status_and_the_warning() {
        let dialog = dialog();
        let answer = format!(
            "SIP/2.0 404 Not Found\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKx\r\n\
             From: <sip:bench3@127.0.0.1>;tag={}\r\nTo: <sip:room-1@127.0.0.1:5060>;tag=srv2\r\n\
             Call-ID: {}\r\nCSeq: 1 INVITE\r\nWarning: 399 junction \"no dispatch rule\"\r\nContent-Length: 0\r\n\r\n",
            dialog.from_tag, dialog.call_id
        );
        let reply = dialog.read(answer.as_bytes()).unwrap().unwrap();
        assert_eq!(reply.status, 404);
        assert!(refusal(&reply).contains("no dispatch rule"), "{}", refusal(&reply));
        assert!(check_answer(&reply).is_err());
        assert!(dialog.ack(&reply).contains("tag=srv2"));
    }

    #[test]
    fn a_bye_from_the_server_is_answered() {
        let dialog = dialog();
        let bye = format!(
            "BYE sip:bench3@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKs\r\n\
             From: <sip:room-1@127.0.0.1:5060>;tag=srv1\r\nTo: <sip:bench3@127.0.0.1>;tag={}\r\n\
             Call-ID: {}\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n",
            dialog.from_tag, dialog.call_id
        );
        let Err(request) = dialog.read(bye.as_bytes()).unwrap() else { panic!("not a request") };
        assert_eq!(request.method, "BYE");
        assert!(request.answer.starts_with("SIP/2.0 200 OK\r\n") && request.answer.contains("CSeq: 7 BYE"));
    }
}

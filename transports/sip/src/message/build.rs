//! Building outgoing SIP messages with rsip: responses that echo their request's Via, From,
//! To, Call-ID and CSeq (RFC 3261 §8.2.6), requests inside or outside a dialog, and the ACK and
//! CANCEL a client transaction derives from its INVITE (§17.1.1.3, §9.1).

use rsip::headers::{self, UntypedHeader};
use rsip::prelude::*;
use rsip::{Header, Headers, Method, Request, Response, StatusCode, Version};

/// The software name in Server and User-Agent headers.
pub const AGENT: &str = "Junction";

/// Methods this user agent handles, for Allow headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, REFER, NOTIFY";

/// Option tags this user agent supports (RFC 3262 reliable provisional responses, RFC 4028
/// session timers), for Supported headers; a Require naming anything else gets 420.
pub const SUPPORTED: &[&str] = &["100rel", "timer"];

/// The standard reason phrase of a status code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Unknown",
    }
}

/// A status code carrying its proper reason phrase (rsip's own renders `BusyHere`).
pub fn status(code: u16) -> StatusCode {
    StatusCode::Other(code, reason_phrase(code).to_owned())
}

fn content_length(len: usize) -> Header {
    Header::ContentLength(headers::ContentLength::new(len.to_string()))
}

/// A response to `request` (§8.2.6.2): its Vias, From, Call-ID and CSeq; its To, with
/// `to_tag` added when the To has no tag yet (never on 100 Trying).
pub fn response(request: &Request, code: u16, to_tag: Option<&str>) -> Response {
    let mut headers = Headers::default();
    for header in request.headers().iter() {
        match header {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => headers.push(header.clone()),
            Header::To(to) => {
                let has_tag = to.value().split(';').skip(1).any(|p| p.trim().to_ascii_lowercase().starts_with("tag="));
                match to_tag {
                    Some(tag) if !has_tag && code != 100 => {
                        headers.push(Header::To(headers::To::new(format!("{};tag={tag}", to.value()))))
                    }
                    _ => headers.push(header.clone()),
                }
            }
            // The dialog's route set goes back in responses that can create one (§12.1.1).
            Header::RecordRoute(_) if request.method == Method::Invite && (101..300).contains(&code) => {
                headers.push(header.clone())
            }
            _ => {}
        }
    }
    headers.push(Header::Server(headers::Server::new(AGENT)));
    headers.push(content_length(0));
    Response { status_code: status(code), version: Version::V2, headers, body: Vec::new() }
}

/// Adds a header before Content-Length.
pub fn add_header<M: HasHeaders>(message: &mut M, header: Header) {
    let headers = message.headers_mut();
    let at = headers.iter().position(|h| matches!(h, Header::ContentLength(_))).unwrap_or(headers.iter().count());
    let mut all: Vec<Header> = headers.iter().cloned().collect();
    all.insert(at, header);
    *headers = all.into();
}

/// A header rsip has no variant for, or that we write as text.
/// A Warning header explaining a refusal (RFC 3261 §20.43, code 399: miscellaneous).
pub fn warning(text: &str) -> Header {
    let text: String = text.chars().filter(|c| *c != '"' && !c.is_control()).take(160).collect();
    Header::Warning(headers::Warning::new(format!("399 junction \"{text}\"")))
}

pub fn other(name: &str, value: impl Into<String>) -> Header {
    Header::Other(name.to_owned(), value.into())
}

/// Sets a response's body and its Content-Type/Content-Length.
pub fn response_with_body(mut response: Response, content_type: &str, body: Vec<u8>) -> Response {
    set_body(&mut response.headers, content_type, body.len());
    response.body = body;
    response
}

/// Sets a request's body and its Content-Type/Content-Length.
pub fn request_with_body(mut request: Request, content_type: &str, body: Vec<u8>) -> Request {
    set_body(&mut request.headers, content_type, body.len());
    request.body = body;
    request
}

fn set_body(headers: &mut Headers, content_type: &str, len: usize) {
    let mut all: Vec<Header> =
        headers.iter().filter(|h| !matches!(h, Header::ContentLength(_) | Header::ContentType(_))).cloned().collect();
    all.push(Header::ContentType(headers::ContentType::new(content_type)));
    all.push(content_length(len));
    *headers = all.into();
}

/// Everything needed to write a request.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    pub uri: rsip::Uri,
    /// `SIP/2.0/UDP host:port;branch=...;rport` (without the `Via: `).
    pub via: String,
    /// Full header values of From and To (with tags where there are some).
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    pub contact: Option<String>,
    /// Route header values, in order.
    pub route: Vec<String>,
    pub extra: Vec<Header>,
}

pub fn request(spec: RequestSpec) -> Request {
    let mut headers = Headers::default();
    headers.push(Header::Via(headers::Via::new(spec.via)));
    for route in spec.route {
        headers.push(Header::Route(headers::Route::new(route)));
    }
    headers.push(Header::MaxForwards(headers::MaxForwards::new("70")));
    headers.push(Header::From(headers::From::new(spec.from)));
    headers.push(Header::To(headers::To::new(spec.to)));
    headers.push(Header::CallId(headers::CallId::new(spec.call_id)));
    headers.push(Header::CSeq(headers::CSeq::new(format!("{} {}", spec.cseq, spec.method))));
    if let Some(contact) = spec.contact {
        headers.push(Header::Contact(headers::Contact::new(contact)));
    }
    headers.push(Header::UserAgent(headers::UserAgent::new(AGENT)));
    for header in spec.extra {
        headers.push(header);
    }
    headers.push(content_length(0));
    Request { method: spec.method, uri: spec.uri, version: Version::V2, headers, body: Vec::new() }
}

/// The ACK for a non-2xx final response to `invite` (§17.1.1.3): same Request-URI, top Via,
/// From, Call-ID, CSeq number and Route; To from the response.
pub fn ack_for_failure(invite: &Request, response: &Response) -> Request {
    derived(invite, Method::Ack, response.to_header().ok().cloned())
}

/// The CANCEL for `invite` (§9.1): like the ACK but To from the INVITE itself.
pub fn cancel_for(invite: &Request) -> Request {
    derived(invite, Method::Cancel, None)
}

fn derived(invite: &Request, method: Method, to: Option<headers::To>) -> Request {
    let mut headers = Headers::default();
    if let Ok(via) = invite.via_header() {
        headers.push(Header::Via(via.clone()));
    }
    for header in invite.headers().iter() {
        match header {
            Header::Route(_) | Header::MaxForwards(_) | Header::From(_) | Header::CallId(_) => {
                headers.push(header.clone())
            }
            Header::To(original) => headers.push(Header::To(to.clone().unwrap_or_else(|| original.clone()))),
            Header::CSeq(cseq) => {
                let number = cseq.value().split_whitespace().next().unwrap_or("1").to_owned();
                headers.push(Header::CSeq(headers::CSeq::new(format!("{number} {method}"))));
            }
            _ => {}
        }
    }
    headers.push(Header::UserAgent(headers::UserAgent::new(AGENT)));
    headers.push(content_length(0));
    Request { method, uri: invite.uri.clone(), version: Version::V2, headers, body: Vec::new() }
}

/// A fresh branch with RFC 3261's magic cookie.
pub fn new_branch() -> String {
    junction_core::ids::random_id("z9hG4bK", 16)
}

/// A fresh From/To tag.
pub fn new_tag() -> String {
    junction_core::ids::random_id("", 12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Head, parse, tests::INVITE};

    #[test]
    fn responses_echo_the_request_and_tag_the_to() {
        let rsip::SipMessage::Request(invite) = parse(INVITE.as_bytes()).unwrap() else { panic!() };
        let ok = response(&invite, 486, Some("j1"));
        let text = ok.to_string();
        assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"), "{text}");
        let rsip::SipMessage::Response(parsed) = parse(text.as_bytes()).unwrap() else { panic!() };
        let head = Head::of(&parsed).unwrap();
        assert_eq!(head.to.tag.as_deref(), Some("j1"));
        assert_eq!(head.via.branch, "z9hG4bK-1");
        assert_eq!(head.call_id, "call-1@127.0.0.1");
        let trying = response(&invite, 100, Some("j1"));
        assert!(!trying.to_string().contains("tag=j1"));
    }

    #[test]
    fn ack_and_cancel_keep_the_invite_branch() {
        let rsip::SipMessage::Request(invite) = parse(INVITE.as_bytes()).unwrap() else { panic!() };
        let busy = response(&invite, 486, Some("j1"));
        let ack = ack_for_failure(&invite, &busy);
        let head = Head::of(&ack).unwrap();
        assert_eq!((head.cseq, head.cseq_method), (1, Method::Ack));
        assert_eq!(head.via.branch, "z9hG4bK-1");
        assert_eq!(head.to.tag.as_deref(), Some("j1"));
        let cancel = cancel_for(&invite);
        let head = Head::of(&cancel).unwrap();
        assert_eq!(head.cseq_method, Method::Cancel);
        assert_eq!(head.to.tag, None);
        let text = cancel.to_string();
        assert!(text.starts_with("CANCEL sip:standup@127.0.0.1:5060 SIP/2.0\r\n"), "{text}");
    }
}

//! One dialog (RFC 3261 §12): Call-ID, the two tags, both CSeq counters, the remote target
//! and the route set — and the requests written inside it (§12.2.1.1).

use std::net::SocketAddr;

use rsip::{Header, Method, Request};

use crate::message::build::{self, RequestSpec};
use crate::message::{Peer, Transport};

#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// From/To header values of each side, without tags.
    pub local_uri: String,
    pub remote_uri: String,
    pub local_cseq: u32,
    /// The highest CSeq seen from the remote side.
    pub remote_cseq: Option<u32>,
    /// Where requests go (the remote Contact).
    pub remote_target: rsip::Uri,
    /// Route header values, in the order they go in our requests.
    pub route_set: Vec<String>,
    /// The transport and address the dialog was set up over.
    pub peer: Peer,
    /// Our own address, for Via and Contact.
    pub local: SocketAddr,
}

impl Dialog {
    /// Our Contact header value.
    pub fn contact(local: SocketAddr, transport: Transport) -> String {
        Self::contact_as("junction", local, transport)
    }

    /// A Contact with another user part (a registration's AOR user).
    pub fn contact_as(user: &str, local: SocketAddr, transport: Transport) -> String {
        match transport {
            Transport::Udp => format!("<sip:{user}@{local}>"),
            Transport::Tcp => format!("<sip:{user}@{local};transport=tcp>"),
            // `;transport=tls` rather than `sips:` (RFC 5630 prefers the latter, but it asks
            // for TLS on every hop, which trunks behind plain proxies cannot promise).
            Transport::Tls => format!("<sip:{user}@{local};transport=tls>"),
        }
    }

    pub fn via(local: SocketAddr, transport: Transport, branch: &str) -> String {
        format!("SIP/2.0/{} {local};branch={branch};rport", transport.as_str())
    }

    fn tagged(uri: &str, tag: Option<&str>) -> String {
        match tag {
            Some(tag) => format!("{uri};tag={tag}"),
            None => uri.to_owned(),
        }
    }

    /// Where in-dialog requests go. Over TCP they follow the connection the dialog uses; over
    /// UDP the first loose route or the remote target, when it names an IP address.
    pub fn next_hop(&self) -> Peer {
        if self.peer.transport.is_reliable() {
            return self.peer;
        }
        let uri = self.route_set.first().and_then(|route| {
            let inner = route.trim().trim_start_matches('<');
            let inner = inner.split('>').next().unwrap_or(inner);
            rsip::Uri::try_from(inner).ok()
        });
        let target = uri.as_ref().unwrap_or(&self.remote_target);
        uri_addr(target).map_or(self.peer, |addr| Peer { transport: self.peer.transport, addr })
    }

    /// A new request in this dialog, with the next local CSeq (ACK and CANCEL reuse theirs).
    pub fn request(&mut self, method: Method, extra: Vec<Header>) -> Request {
        if !matches!(method, Method::Ack | Method::Cancel) {
            self.local_cseq += 1;
        }
        self.request_with_cseq(method, self.local_cseq, extra)
    }

    pub fn request_with_cseq(&self, method: Method, cseq: u32, extra: Vec<Header>) -> Request {
        let transport = self.peer.transport;
        build::request(RequestSpec {
            method,
            uri: self.remote_target.clone(),
            via: Self::via(self.local, transport, &build::new_branch()),
            from: Self::tagged(&self.local_uri, Some(&self.local_tag)),
            to: Self::tagged(&self.remote_uri, self.remote_tag.as_deref()),
            call_id: self.call_id.clone(),
            cseq,
            contact: (method != Method::Ack).then(|| Self::contact(self.local, transport)),
            route: self.route_set.clone(),
            extra,
        })
    }
}

/// The socket address a SIP URI names, when its host is an IP literal (default port 5060).
pub fn uri_addr(uri: &rsip::Uri) -> Option<SocketAddr> {
    let host = match &uri.host_with_port.host {
        rsip::Host::IpAddr(ip) => *ip,
        rsip::Host::Domain(domain) => domain.to_string().trim_matches(['[', ']']).parse().ok()?,
    };
    let default_port = crate::message::Transport::of_uri(uri).default_port();
    let port = uri.host_with_port.port.as_ref().map_or(default_port, |p| *p.value());
    Some(SocketAddr::new(host, port))
}

/// The URI inside a name-addr header value (`"Bob" <sip:bob@host>;tag=x` -> `sip:bob@host`).
pub fn addr_spec(value: &str) -> Option<rsip::Uri> {
    let inner = match (value.find('<'), value.find('>')) {
        (Some(start), Some(end)) if start < end => value.get(start + 1..end)?,
        (None, None) => value.split(';').next()?.trim(),
        _ => return None, // an unclosed (or unopened) bracket
    };
    rsip::Uri::try_from(inner.trim()).ok().and_then(sendable)
}

/// `uri` if we can write it back into a request line that parses (rsip reads some URIs leniently
/// that it then renders with spaces or quotes: found by fuzzing sip_ua).
pub fn sendable(uri: rsip::Uri) -> Option<rsip::Uri> {
    let text = uri.to_string();
    let clean = !text.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>'));
    (clean && rsip::Uri::try_from(text.as_str()).is_ok()).then_some(uri)
}

/// Whether a From/To value (name-addr or addr-spec, tag removed) can be written back into a
/// header that parses: no control characters, quotes closed, brackets paired.
pub fn echoable(value: &str) -> bool {
    let mut quoted = false;
    let mut escaped = false;
    let mut open = 0u32;
    for c in value.chars() {
        if c.is_control() && c != '\t' {
            return false;
        }
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => open += 1,
            '>' if !quoted => match open.checked_sub(1) {
                Some(left) => open = left,
                None => return false,
            },
            _ => {}
        }
    }
    !quoted && open == 0
}

/// The Record-Route values of a message, one per route, in message order.
pub fn record_routes(message: &impl rsip::message::HasHeaders) -> Vec<String> {
    let mut routes = Vec::new();
    for header in message.headers().iter() {
        if let Header::RecordRoute(rr) = header {
            use rsip::headers::UntypedHeader;
            routes.extend(split_list(rr.value()));
        }
    }
    routes
}

/// Splits a comma-separated list of name-addrs, respecting `<...>` and quotes.
fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                out.push(value.get(start..i).unwrap_or_default().trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value.get(start..).unwrap_or_default().trim().to_owned());
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_routes() {
        let uri = addr_spec("\"Bob\" <sip:bob@10.0.0.5:5070;transport=udp>;tag=x").unwrap();
        assert_eq!(uri_addr(&uri), Some("10.0.0.5:5070".parse().unwrap()));
        assert_eq!(uri_addr(&addr_spec("sip:bob@example.com").unwrap()), None);
        assert_eq!(uri_addr(&addr_spec("<sip:10.0.0.6>").unwrap()), Some("10.0.0.6:5060".parse().unwrap()));
        assert_eq!(split_list("<sip:a;lr>, \"x,y\" <sip:b>,<sip:c>"), ["<sip:a;lr>", "\"x,y\" <sip:b>", "<sip:c>"]);
        // An unclosed bracket names no target (rsip would read `<sip:…` as a URI starting with `<`).
        assert_eq!(addr_spec("<sip:alice@127.0.0.1:34977;transport=UDP"), None);
    }

    #[test]
    fn only_values_that_write_back_cleanly_are_echoed() {
        assert!(echoable("\"Alice \\\"A\\\" <x>\" <sip:alice@example.com>"));
        assert!(echoable("sip:alice@example.com"));
        // Found by fuzzing sip_ua: a From with NULs and an unclosed quote, echoed in our BYE.
        assert!(!echoable("\"alic\0\0\u{14}\0\0INVITE sip:standup@127.0.0.1://496151-29775-1"));
        assert!(!echoable("\"alice <sip:alice@example.com>"));
        assert!(!echoable("<sip:alice@example.com"));
        assert!(!echoable("sip:alice@example.com>"));
    }

    #[test]
    fn in_dialog_requests_count_cseq_and_carry_tags() {
        let mut dialog = Dialog {
            call_id: "c".into(),
            local_tag: "l".into(),
            remote_tag: Some("r".into()),
            local_uri: "<sip:standup@127.0.0.1>".into(),
            remote_uri: "<sip:alice@127.0.0.1>".into(),
            local_cseq: 1,
            remote_cseq: Some(1),
            remote_target: addr_spec("<sip:alice@127.0.0.1:5099>").unwrap(),
            route_set: vec!["<sip:127.0.0.9:5080;lr>".into()],
            peer: Peer::udp("127.0.0.1:5099".parse().unwrap()),
            local: "127.0.0.1:5060".parse().unwrap(),
        };
        let bye = dialog.request(Method::Bye, vec![]);
        let head = crate::message::Head::of(&bye).unwrap();
        assert_eq!((head.cseq, head.from.tag.as_deref(), head.to.tag.as_deref()), (2, Some("l"), Some("r")));
        assert!(bye.to_string().contains("Route: <sip:127.0.0.9:5080;lr>"), "{bye}");
        assert_eq!(dialog.next_hop().addr, "127.0.0.9:5080".parse().unwrap());
    }
}

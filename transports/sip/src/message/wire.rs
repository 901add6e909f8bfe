//! SIP messages on the wire: framing (one datagram, or Content-Length framing on a TCP stream)
//! and the normalisation rsip needs before it parses — unfolded header lines, compact header
//! names expanded (`v:` -> `Via:`), one Via value per line, the body cut to its Content-Length.
//!
//! Written by hand because rsip parses one canonical message and nothing else; everything here
//! handles client-controlled bytes, so it never indexes or slices unchecked.

use bytes::{Buf, BytesMut};

/// Largest SIP message accepted, on UDP or TCP.
pub const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the message is empty")]
    Empty,
    #[error("the message is not UTF-8 text before its body")]
    NotText,
    #[error("no blank line ends the headers")]
    NoHeaderEnd,
    #[error("header line {line:?} has no colon")]
    BadHeaderLine { line: String },
    #[error("Content-Length {value:?} is not a number")]
    BadContentLength { value: String },
    #[error("the body is {got} bytes, Content-Length says {declared}")]
    ShortBody { declared: usize, got: usize },
    #[error("the message is larger than {MAX_MESSAGE} bytes")]
    TooLarge,
}

/// A message split into its start line, normalised header lines and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawMessage {
    /// The first value of header `name` (case-insensitive, full name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn is_request(&self) -> bool {
        !self.start_line.starts_with("SIP/")
    }

    /// The method of a request's start line.
    pub fn method(&self) -> Option<&str> {
        self.is_request().then(|| self.start_line.split(' ').next()).flatten()
    }

    /// The canonical text rsip parses.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(self.start_line.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// RFC 3261 §7.3.3 compact forms (and RFC 3515/3891 ones phones send).
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.to_ascii_lowercase().as_str() {
        "v" => "Via",
        "f" => "From",
        "t" => "To",
        "i" => "Call-ID",
        "m" => "Contact",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "e" => "Content-Encoding",
        "k" => "Supported",
        "s" => "Subject",
        "o" => "Event",
        "r" => "Refer-To",
        "x" => "Session-Expires",
        _ => name,
    }
}

/// Where the header block ends: the index of the blank line's first byte and of the body.
fn header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i + 4));
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Parses one complete message (a UDP datagram, or a frame cut from a TCP stream). When the
/// headers could be read but the body is wrong (RFC 3261 §18.3: a Content-Length beyond the
/// datagram) the error comes with the headers, so a request can still be answered 400.
pub fn split(datagram: &[u8]) -> Result<RawMessage, (WireError, Option<RawMessage>)> {
    let (head, rest) = split_head(datagram).map_err(|err| (err, None))?;
    with_body(head, rest)
}

/// The start line and normalised header lines, and the bytes after the blank line.
fn split_head(datagram: &[u8]) -> Result<(RawMessage, &[u8]), WireError> {
    if datagram.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge);
    }
    // RFC 5626 keep-alives and stray line breaks before a message are ignored.
    let start = datagram.iter().position(|b| !matches!(b, b'\r' | b'\n')).ok_or(WireError::Empty)?;
    let datagram = datagram.get(start..).unwrap_or_default();
    let (head_len, body_at) = header_end(datagram).ok_or(WireError::NoHeaderEnd)?;
    let head = datagram.get(..head_len).unwrap_or_default();
    let rest = datagram.get(body_at..).unwrap_or_default();
    let head = std::str::from_utf8(head).map_err(|_| WireError::NotText)?;

    let mut lines: Vec<String> = Vec::new();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            // Folded continuation of the previous header line.
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
                continue;
            }
        }
        lines.push(line.to_owned());
    }
    let mut lines = lines.into_iter();
    let start_line = lines.next().unwrap_or_default().trim().to_owned();
    if start_line.is_empty() {
        return Err(WireError::Empty);
    }

    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(WireError::BadHeaderLine { line: line.chars().take(80).collect() });
        };
        let name = expand_compact(name.trim()).to_owned();
        let value = value.trim();
        if name.eq_ignore_ascii_case("Via") {
            for one in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                headers.push(("Via".to_owned(), one.to_owned()));
            }
        } else {
            headers.push((name, value.to_owned()));
        }
    }

    Ok((RawMessage { start_line, headers, body: Vec::new() }, rest))
}

/// Cuts the body to its Content-Length.
fn with_body(mut raw: RawMessage, rest: &[u8]) -> Result<RawMessage, (WireError, Option<RawMessage>)> {
    let declared = raw
        .header("Content-Length")
        .map(|v| v.trim().parse::<usize>().map_err(|_| WireError::BadContentLength { value: v.to_owned() }))
        .transpose();
    raw.body = match declared {
        Err(err) => return Err((err, Some(raw))),
        Ok(Some(len)) if len > rest.len() => {
            return Err((WireError::ShortBody { declared: len, got: rest.len() }, Some(raw)));
        }
        Ok(Some(len)) => rest.get(..len).unwrap_or_default().to_vec(),
        Ok(None) => rest.to_vec(),
    };
    Ok(raw)
}

/// Cuts complete messages off a TCP stream buffer (RFC 3261 §18.3: Content-Length frames them).
/// It holds at most one message of `max` bytes (plus what one read adds): a stream that would
/// need more is an error.
#[derive(Debug)]
pub struct StreamFramer {
    buffer: BytesMut,
    max: usize,
}

impl Default for StreamFramer {
    fn default() -> Self {
        Self::with_max(MAX_MESSAGE)
    }
}

impl StreamFramer {
    /// A framer for messages of at most `max` bytes (never more than [`MAX_MESSAGE`]).
    pub fn with_max(max: usize) -> Self {
        Self { buffer: BytesMut::new(), max: max.min(MAX_MESSAGE) }
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, if one is buffered. An error means the stream cannot be
    /// framed any more and the connection should close.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        // CRLF keep-alives between messages (RFC 5626 §3.5.1) are skipped.
        let leading = self.buffer.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        self.buffer.advance(leading);
        let Some((head_len, body_at)) = header_end(&self.buffer) else {
            if self.buffer.len() > self.max {
                return Err(WireError::TooLarge);
            }
            return Ok(None);
        };
        let head =
            std::str::from_utf8(self.buffer.get(..head_len).unwrap_or_default()).map_err(|_| WireError::NotText)?;
        let mut length = 0usize;
        for line in head.split('\n') {
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim();
                if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
                    let value = value.trim();
                    length = value.parse().map_err(|_| WireError::BadContentLength { value: value.to_owned() })?;
                }
            }
        }
        let total = body_at.checked_add(length).ok_or(WireError::TooLarge)?;
        if total > self.max {
            return Err(WireError::TooLarge);
        }
        if self.buffer.len() < total {
            return Ok(None);
        }
        Ok(Some(self.buffer.split_to(total).to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:standup@127.0.0.1 SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb\r\n\
f: <sip:alice@10.0.0.1>;tag=1\r\n\
t: <sip:standup@127.0.0.1>\r\n\
i: abc@10.0.0.1\r\n\
CSeq: 1\r\n INVITE\r\n\
l: 4\r\n\
\r\n\
v=0\r\nextra";

    #[test]
    fn normalises_compact_names_folding_via_lists_and_body_length() {
        let raw = split(INVITE.as_bytes()).unwrap();
        assert_eq!(raw.start_line, "INVITE sip:standup@127.0.0.1 SIP/2.0");
        assert_eq!(raw.method(), Some("INVITE"));
        let vias: Vec<&str> = raw.headers.iter().filter(|(n, _)| n == "Via").map(|(_, v)| v.as_str()).collect();
        assert_eq!(vias, ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa", "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb"]);
        assert_eq!(raw.header("call-id"), Some("abc@10.0.0.1"));
        assert_eq!(raw.header("CSeq"), Some("1 INVITE"));
        assert_eq!(raw.body, b"v=0\r");
    }

    #[test]
    fn refuses_what_cannot_be_framed() {
        let error = |bytes: &[u8]| split(bytes).unwrap_err();
        assert_eq!(error(b"\r\n\r\n"), (WireError::Empty, None));
        assert_eq!(error(b"INVITE x SIP/2.0\r\nVia: y\r\n"), (WireError::NoHeaderEnd, None));
        assert!(matches!(error(b"INVITE x SIP/2.0\r\nnocolon\r\n\r\n"), (WireError::BadHeaderLine { .. }, None)));
        assert_eq!(error(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']), (WireError::NotText, None));
        // A bad body still yields the headers, to answer 400 with.
        let (err, raw) = error(b"A b SIP/2.0\r\nVia: v\r\nContent-Length: 9\r\n\r\nab");
        assert!(matches!(err, WireError::ShortBody { declared: 9, got: 2 }));
        assert_eq!(raw.unwrap().header("via"), Some("v"));
        assert!(matches!(error(b"A b SIP/2.0\r\nl: x\r\n\r\n"), (WireError::BadContentLength { .. }, Some(_))));
    }

    #[test]
    fn frames_a_tcp_stream_by_content_length() {
        let mut framer = StreamFramer::default();
        let one = "OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabc";
        framer.push(b"\r\n\r\n");
        framer.push(one.as_bytes());
        framer.push(&one.as_bytes()[..10]);
        assert_eq!(framer.next_message().unwrap().unwrap(), one.as_bytes());
        assert_eq!(framer.next_message().unwrap(), None);
        framer.push(&one.as_bytes()[10..]);
        assert_eq!(framer.next_message().unwrap().unwrap(), one.as_bytes());
        framer.push(b"X\r\nContent-Length: nope\r\n\r\n");
        assert!(framer.next_message().is_err());
    }

    #[test]
    fn a_framer_holds_no_more_than_its_limit() {
        let mut framer = StreamFramer::with_max(1024);
        framer.push(&[b'x'; 1000]);
        assert_eq!(framer.next_message(), Ok(None), "a header still coming");
        framer.push(&[b'x'; 100]);
        assert_eq!(framer.next_message(), Err(WireError::TooLarge), "no blank line within the limit");
        let mut framer = StreamFramer::with_max(1024);
        framer.push(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 2000\r\n\r\n");
        assert_eq!(framer.next_message(), Err(WireError::TooLarge), "announced larger than the limit");
        assert!(framer.buffered() < 100);
    }
}

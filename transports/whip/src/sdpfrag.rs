//! `application/trickle-ice-sdpfrag` bodies (RFC 8840) as WHIP and WHEP PATCH them: the ICE
//! credentials, candidates and end-of-candidates of a fragment sent by the client, and the
//! fragment the server answers an ICE restart with.

/// What a client's fragment says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SdpFrag {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// `candidate:...` lines, without `a=`.
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragError {
    #[error("the fragment is not UTF-8 text")]
    NotText,
    #[error("line {line}: {problem}")]
    BadLine { line: usize, problem: String },
    #[error("the fragment has a=ice-ufrag without a=ice-pwd (or the other way round)")]
    HalfCredentials,
}

impl SdpFrag {
    pub fn parse(body: &[u8]) -> Result<SdpFrag, FragError> {
        let text = std::str::from_utf8(body).map_err(|_| FragError::NotText)?;
        let mut frag = SdpFrag::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |problem: &str| FragError::BadLine { line: index + 1, problem: problem.to_owned() };
            if !line.is_char_boundary(2) || line.as_bytes().get(1) != Some(&b'=') {
                return Err(bad("not an SDP line (<type>=<value>)"));
            }
            let Some(attribute) = line.strip_prefix("a=") else { continue };
            if let Some(ufrag) = attribute.strip_prefix("ice-ufrag:") {
                frag.ufrag = Some(ufrag.trim().to_owned()).filter(|u| !u.is_empty());
            } else if let Some(pwd) = attribute.strip_prefix("ice-pwd:") {
                frag.pwd = Some(pwd.trim().to_owned()).filter(|p| !p.is_empty());
            } else if attribute.starts_with("candidate:") {
                frag.candidates.push(attribute.to_owned());
            } else if attribute == "end-of-candidates" {
                frag.end_of_candidates = true;
            }
        }
        if frag.ufrag.is_some() != frag.pwd.is_some() {
            return Err(FragError::HalfCredentials);
        }
        Ok(frag)
    }
}

/// The fragment answering an ICE restart: the server's new credentials and its candidates on
/// the first m-line of the session (all m-lines are bundled), as RFC 9725 §4.3.2 asks.
pub fn restart_answer(ufrag: &str, pwd: &str, answer_sdp: &str) -> String {
    let mut out = format!("a=ice-lite\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    let mut in_first = false;
    for line in answer_sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            if in_first {
                break;
            }
            in_first = true;
            out.push_str(line);
            out.push_str("\r\n");
        } else if in_first && line.starts_with("a=mid:") {
            out.push_str(line);
            out.push_str("\r\n");
        } else if in_first && line.starts_with("a=candidate:") {
            out.push_str(&with_ufrag(line, ufrag));
            out.push_str("\r\n");
        }
    }
    out.push_str("a=end-of-candidates\r\n");
    out
}

/// A candidate line with its `ufrag` extension (if any) replaced.
fn with_ufrag(candidate: &str, ufrag: &str) -> String {
    let mut words: Vec<&str> = candidate.split_whitespace().collect();
    if let Some(at) = words.iter().position(|w| *w == "ufrag")
        && at + 1 < words.len()
    {
        words[at + 1] = ufrag;
    }
    words.join(" ")
}

/// The `a=ice-ufrag` of an SDP (session or first media level).
pub fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.trim().strip_prefix("a=ice-ufrag:")).map(|u| u.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_EXAMPLE: &str = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
        a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
        a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\n\
        a=end-of-candidates\r\n";

    #[test]
    fn parses_the_rfc_8840_example() {
        let frag = SdpFrag::parse(RFC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(frag.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(frag.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(frag.candidates.len(), 2);
        assert!(frag.candidates[0].starts_with("candidate:1387637174 1 udp"));
        assert!(frag.end_of_candidates);
    }

    #[test]
    fn rejects_what_is_not_a_fragment() {
        assert_eq!(SdpFrag::parse(&[0xff, 0xfe]), Err(FragError::NotText));
        assert!(matches!(SdpFrag::parse(b"hello"), Err(FragError::BadLine { line: 1, .. })));
        assert!(matches!(SdpFrag::parse("é=x".as_bytes()), Err(FragError::BadLine { .. })));
        assert_eq!(SdpFrag::parse(b"a=ice-ufrag:x\r\n"), Err(FragError::HalfCredentials));
        assert_eq!(SdpFrag::parse(b"").unwrap(), SdpFrag::default());
    }

    #[test]
    fn restart_answer_carries_new_credentials_and_the_candidate() {
        let answer = "v=0\r\na=ice-lite\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n\
            a=candidate:ff 1 udp 2130706175 127.0.0.1 7882 typ host ufrag old1\r\na=ice-ufrag:old1\r\na=mid:0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:1\r\n";
        let frag = restart_answer("new2", "pw", answer);
        assert_eq!(
            frag,
            "a=ice-lite\r\na=ice-ufrag:new2\r\na=ice-pwd:pw\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n\
             a=candidate:ff 1 udp 2130706175 127.0.0.1 7882 typ host ufrag new2\r\na=mid:0\r\na=end-of-candidates\r\n"
        );
        assert_eq!(ice_ufrag(answer).as_deref(), Some("old1"));
    }
}

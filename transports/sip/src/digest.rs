//! HTTP Digest authentication as SIP uses it (RFC 3261 §22, RFC 2617 with MD5 and qop=auth):
//! challenges we send to callers (401 WWW-Authenticate), checking their answers, and answering
//! the challenges of the far end when we place a call (401/407).
//!
//! The parameter list is parsed by hand: rsip's typed Authorization re-renders the `uri`
//! parameter, and the hash must be computed over the exact text the client sent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

/// How long a nonce we issued stays good.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);

fn md5_hex(text: &str) -> String {
    let digest = Md5::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `Digest a=b, c="d"` -> ("Digest", [(a, b), (c, d)]). Names are lower-cased; quoted values
/// lose their quotes and escapes. Never fails: whatever does not fit is skipped.
pub fn parse_params(value: &str) -> (String, Vec<(String, String)>) {
    let value = value.trim();
    let (scheme, rest) = match value.split_once(char::is_whitespace) {
        Some((scheme, rest)) => (scheme.to_owned(), rest),
        None => (value.to_owned(), ""),
    };
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_ascii_lowercase();
        if name.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut param = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => param.extend(chars.next()),
                    '"' => break,
                    c => param.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                param.push(c);
                chars.next();
            }
            param = param.trim().to_owned();
        }
        params.push((name, param));
    }
    (scheme, params)
}

fn find<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Issues and checks nonces without remembering them: a nonce is its issue time and a keyed
/// hash of it, so a forged or expired nonce is recognised on its own.
#[derive(Debug, Clone)]
pub struct Nonces {
    secret: String,
}

/// What became of a client's answer to a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// Right password, but the nonce expired: challenge again with `stale=true`.
    Stale,
    Invalid,
}

impl Nonces {
    pub fn new() -> Self {
        Self { secret: junction_core::ids::random_id("", 24) }
    }

    fn sign(&self, issued: u64) -> String {
        format!("{issued:x}.{}", md5_hex(&format!("{issued}:{}", self.secret)))
    }

    pub fn issue(&self, now: SystemTime) -> String {
        self.sign(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    /// Whether a nonce is ours, and whether it is still fresh.
    fn check(&self, nonce: &str, now: SystemTime) -> Option<bool> {
        let (issued_hex, _) = nonce.split_once('.')?;
        let issued = u64::from_str_radix(issued_hex, 16).ok()?;
        if self.sign(issued) != nonce {
            return None;
        }
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Some(now.saturating_sub(issued) <= NONCE_LIFETIME.as_secs())
    }

    /// The header value of a challenge for `realm`.
    pub fn challenge(&self, realm: &str, now: SystemTime, stale: bool) -> String {
        let mut value = format!("Digest realm=\"{realm}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"", self.issue(now));
        if stale {
            value.push_str(", stale=true");
        }
        value
    }

    /// Checks an Authorization header value for `method` against `password`.
    pub fn verify(&self, authorization: &str, method: &str, realm: &str, password: &str, now: SystemTime) -> Verdict {
        let (scheme, params) = parse_params(authorization);
        if !scheme.eq_ignore_ascii_case("digest") {
            return Verdict::Invalid;
        }
        let (Some(username), Some(nonce), Some(uri), Some(response)) =
            (find(&params, "username"), find(&params, "nonce"), find(&params, "uri"), find(&params, "response"))
        else {
            return Verdict::Invalid;
        };
        if find(&params, "realm") != Some(realm)
            || find(&params, "algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("md5"))
        {
            return Verdict::Invalid;
        }
        let answer = Answer {
            username,
            password,
            realm,
            nonce,
            uri,
            method,
            qop: find(&params, "qop"),
            nc: find(&params, "nc").unwrap_or("00000001"),
            cnonce: find(&params, "cnonce").unwrap_or(""),
        };
        if !answer.response().eq_ignore_ascii_case(response) {
            return Verdict::Invalid;
        }
        match self.check(nonce, now) {
            Some(true) => Verdict::Valid,
            Some(false) => Verdict::Stale,
            None => Verdict::Invalid,
        }
    }
}

impl Default for Nonces {
    fn default() -> Self {
        Self::new()
    }
}

/// The user name in an Authorization header, to find whose password to check.
pub fn username(authorization: &str) -> Option<String> {
    find(&parse_params(authorization).1, "username").map(str::to_owned)
}

/// The inputs of a digest response.
struct Answer<'a> {
    username: &'a str,
    password: &'a str,
    realm: &'a str,
    nonce: &'a str,
    uri: &'a str,
    method: &'a str,
    qop: Option<&'a str>,
    nc: &'a str,
    cnonce: &'a str,
}

impl Answer<'_> {
    fn response(&self) -> String {
        let ha1 = md5_hex(&format!("{}:{}:{}", self.username, self.realm, self.password));
        let ha2 = md5_hex(&format!("{}:{}", self.method, self.uri));
        match self.qop {
            Some(qop) => md5_hex(&format!("{ha1}:{}:{}:{}:{qop}:{ha2}", self.nonce, self.nc, self.cnonce)),
            None => md5_hex(&format!("{ha1}:{}:{ha2}", self.nonce)),
        }
    }
}

/// Answers a far end's challenge (WWW- or Proxy-Authenticate value) for a request we send.
/// `None` when the challenge is not an MD5 Digest one we can answer.
pub fn authorize(challenge: &str, method: &str, uri: &str, username: &str, password: &str) -> Option<String> {
    let (scheme, params) = parse_params(challenge);
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    if find(&params, "algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("md5")) {
        return None;
    }
    let realm = find(&params, "realm")?;
    let nonce = find(&params, "nonce")?;
    let qop = find(&params, "qop").and_then(|q| q.split(',').map(str::trim).find(|q| q.eq_ignore_ascii_case("auth")));
    let cnonce = junction_core::ids::random_id("", 16);
    let answer = Answer { username, password, realm, nonce, uri, method, qop, nc: "00000001", cnonce: &cnonce };
    let mut value = format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\", algorithm=MD5",
        answer.response()
    );
    if qop.is_some() {
        value.push_str(&format!(", qop=auth, nc=00000001, cnonce=\"{cnonce}\""));
    }
    if let Some(opaque) = find(&params, "opaque") {
        value.push_str(&format!(", opaque=\"{opaque}\""));
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_example_response() {
        // RFC 2617 §3.5 (the HTTP example; SIP computes it the same way).
        let answer = Answer {
            username: "Mufasa",
            password: "Circle Of Life",
            realm: "testrealm@host.com",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            uri: "/dir/index.html",
            method: "GET",
            qop: Some("auth"),
            nc: "00000001",
            cnonce: "0a4f113b",
        };
        assert_eq!(answer.response(), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn our_challenge_answered_by_our_client_verifies() {
        let nonces = Nonces::new();
        let now = SystemTime::now();
        let challenge = nonces.challenge("junction", now, false);
        let auth = authorize(&challenge, "INVITE", "sip:standup@127.0.0.1", "trunk1", "s3cret").unwrap();
        assert_eq!(username(&auth).as_deref(), Some("trunk1"));
        assert_eq!(nonces.verify(&auth, "INVITE", "junction", "s3cret", now), Verdict::Valid);
        assert_eq!(nonces.verify(&auth, "INVITE", "junction", "wrong", now), Verdict::Invalid);
        assert_eq!(nonces.verify(&auth, "BYE", "junction", "s3cret", now), Verdict::Invalid);
        let later = now + NONCE_LIFETIME + Duration::from_secs(5);
        assert_eq!(nonces.verify(&auth, "INVITE", "junction", "s3cret", later), Verdict::Stale);
        // A nonce from another server instance is not ours.
        assert_eq!(Nonces::new().verify(&auth, "INVITE", "junction", "s3cret", now), Verdict::Invalid);
    }

    #[test]
    fn parameter_lists_survive_odd_input() {
        let (scheme, params) = parse_params(r#"Digest username="a\"b", realm=x ,nonce="n,1",, qop=auth"#);
        assert_eq!(scheme, "Digest");
        assert_eq!(find(&params, "username"), Some("a\"b"));
        assert_eq!(find(&params, "realm"), Some("x"));
        assert_eq!(find(&params, "nonce"), Some("n,1"));
        assert_eq!(find(&params, "qop"), Some("auth"));
        for junk in ["", "Digest", "Digest =", "Digest a=\"unterminated", "Basic abc", "Digest ,,,=,"] {
            let _ = parse_params(junk);
            assert_eq!(Nonces::new().verify(junk, "INVITE", "r", "p", SystemTime::now()), Verdict::Invalid);
        }
        assert!(authorize("Basic realm=x", "INVITE", "sip:a", "u", "p").is_none());
    }
}

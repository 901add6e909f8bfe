//! HTTP Digest authentication as SIP uses it (RFC 3261 §22, RFC 2617 with MD5 and qop=auth):
//! challenges we send to callers (401 WWW-Authenticate) with single-use nonces from a bounded
//! table, checking their answers (the digest `uri` against the Request-URI, the response in
//! constant time), and answering the challenges of the far end when we place a call (401/407).
//!
//! The parameter list is parsed by hand: rsip's typed Authorization re-renders the `uri`
//! parameter, and the hash must be computed over the exact text the client sent.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// How long a nonce we issued stays good: a caller answers a challenge at once.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(60);

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

/// Issues nonces and takes each back once. A nonce is good for one request within
/// [`NONCE_LIFETIME`] of its challenge: presenting it uses it up, right password or not, so a
/// captured Authorization header cannot be replayed (the replay gets a fresh challenge with
/// `stale=true`). At most `capacity` nonces are outstanding; past that the oldest is forgotten
/// (its caller is challenged again), so a flood of challenges costs a bounded table.
#[derive(Debug)]
pub struct Nonces {
    outstanding: HashMap<String, Instant>,
    /// Issue order, for expiry and eviction; entries already used are skipped when reached.
    order: VecDeque<(String, Instant)>,
    capacity: usize,
}

/// What became of a client's answer to a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// Right password, but the nonce was used already, expired or forgotten: challenge again
    /// with `stale=true`.
    Stale,
    /// The digest `uri` is not the request's Request-URI: the answer was computed for another
    /// request (RFC 3261 §22.4 / RFC 2617 §3.2.2.5).
    UriMismatch,
    Invalid,
}

impl Nonces {
    pub fn new(capacity: usize) -> Self {
        Self { outstanding: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Nonces issued and not used or expired yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// A fresh nonce, remembered until it is used, expires or is evicted.
    pub fn issue(&mut self, now: Instant) -> String {
        self.sweep(now);
        while self.order.len() >= self.capacity {
            if let Some((old, _)) = self.order.pop_front() {
                self.outstanding.remove(&old);
            }
        }
        let nonce = junction_core::ids::random_id("", 32);
        self.outstanding.insert(nonce.clone(), now);
        self.order.push_back((nonce.clone(), now));
        nonce
    }

    /// Forgets expired nonces (and the used ones in front of them).
    fn sweep(&mut self, now: Instant) {
        while let Some((nonce, issued)) = self.order.front() {
            let expired = now.saturating_duration_since(*issued) > NONCE_LIFETIME;
            if !expired && self.outstanding.contains_key(nonce) {
                break;
            }
            if expired {
                self.outstanding.remove(nonce);
            }
            self.order.pop_front();
        }
    }

    /// Uses a nonce up; whether it was ours, unused and fresh.
    fn take(&mut self, nonce: &str, now: Instant) -> bool {
        match self.outstanding.remove(nonce) {
            Some(issued) => now.saturating_duration_since(issued) <= NONCE_LIFETIME,
            None => false,
        }
    }

    /// The header value of a challenge for `realm`.
    pub fn challenge(&mut self, realm: &str, now: Instant, stale: bool) -> String {
        let mut value = format!("Digest realm=\"{realm}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"", self.issue(now));
        if stale {
            value.push_str(", stale=true");
        }
        value
    }

    /// Checks an Authorization header value for a request (`method`, `request_uri`) against
    /// `password`. The nonce it names is used up whatever the verdict.
    pub fn verify(&mut self, authorization: &str, request: Challenged<'_>, password: &str, now: Instant) -> Verdict {
        let (scheme, params) = parse_params(authorization);
        if !scheme.eq_ignore_ascii_case("digest") {
            return Verdict::Invalid;
        }
        let (Some(username), Some(nonce), Some(uri), Some(response)) =
            (find(&params, "username"), find(&params, "nonce"), find(&params, "uri"), find(&params, "response"))
        else {
            return Verdict::Invalid;
        };
        let fresh = self.take(nonce, now);
        if find(&params, "realm") != Some(request.realm)
            || find(&params, "algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("md5"))
        {
            return Verdict::Invalid;
        }
        if !same_uri(uri, request.uri) {
            return Verdict::UriMismatch;
        }
        let answer = Answer {
            username,
            password,
            realm: request.realm,
            nonce,
            uri,
            method: request.method,
            qop: find(&params, "qop"),
            nc: find(&params, "nc").unwrap_or("00000001"),
            cnonce: find(&params, "cnonce").unwrap_or(""),
        };
        let expected = answer.response();
        let presented = response.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
            return Verdict::Invalid;
        }
        if fresh { Verdict::Valid } else { Verdict::Stale }
    }
}

/// The request a digest answer must be for.
#[derive(Debug, Clone, Copy)]
pub struct Challenged<'a> {
    pub method: &'a str,
    /// The Request-URI as rsip renders it.
    pub uri: &'a str,
    pub realm: &'a str,
}

/// Whether the digest `uri` names the Request-URI: the same text, or the same once both are
/// rendered by rsip (clients differ in how they write parameters and case).
fn same_uri(digest_uri: &str, request_uri: &str) -> bool {
    digest_uri == request_uri
        || rsip::Uri::try_from(digest_uri.trim()).is_ok_and(|parsed| parsed.to_string() == request_uri)
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

    const URI: &str = "sip:standup@127.0.0.1";

    fn invite(uri: &str) -> Challenged<'_> {
        Challenged { method: "INVITE", uri, realm: "junction" }
    }

    #[test]
    fn our_challenge_answered_by_our_client_verifies_once() {
        let mut nonces = Nonces::new(16);
        let now = Instant::now();
        let answer = |nonces: &mut Nonces, password: &str| {
            let challenge = nonces.challenge("junction", now, false);
            authorize(&challenge, "INVITE", URI, "trunk1", password).unwrap()
        };
        let auth = answer(&mut nonces, "s3cret");
        assert_eq!(username(&auth).as_deref(), Some("trunk1"));
        assert_eq!(nonces.verify(&auth, invite(URI), "s3cret", now), Verdict::Valid);
        // The same header again — a replay — finds its nonce used: a fresh challenge, stale.
        assert_eq!(nonces.verify(&auth, invite(URI), "s3cret", now), Verdict::Stale);
        assert_eq!(nonces.outstanding(), 0);

        let auth = answer(&mut nonces, "s3cret");
        assert_eq!(nonces.verify(&auth, invite(URI), "wrong", now), Verdict::Invalid);
        assert_eq!(nonces.verify(&auth, invite(URI), "s3cret", now), Verdict::Stale, "a wrong guess used it up");
        let auth = answer(&mut nonces, "s3cret");
        let bye = Challenged { method: "BYE", ..invite(URI) };
        assert_eq!(nonces.verify(&auth, bye, "s3cret", now), Verdict::Invalid);

        let auth = answer(&mut nonces, "s3cret");
        let later = now + NONCE_LIFETIME + Duration::from_secs(5);
        assert_eq!(nonces.verify(&auth, invite(URI), "s3cret", later), Verdict::Stale, "expired");
        // A nonce from another server instance is not ours.
        let auth = answer(&mut nonces, "s3cret");
        assert_eq!(Nonces::new(16).verify(&auth, invite(URI), "s3cret", now), Verdict::Stale);
    }

    #[test]
    fn the_digest_uri_must_be_the_request_uri() {
        let mut nonces = Nonces::new(16);
        let now = Instant::now();
        let challenge = nonces.challenge("junction", now, false);
        // An answer computed for another room, presented on an INVITE to this one.
        let auth = authorize(&challenge, "INVITE", "sip:other@127.0.0.1", "trunk1", "s3cret").unwrap();
        assert_eq!(nonces.verify(&auth, invite(URI), "s3cret", now), Verdict::UriMismatch);
        // The same URI written differently (case of the scheme) is the same URI.
        let challenge = nonces.challenge("junction", now, false);
        let auth = authorize(&challenge, "INVITE", "SIP:standup@127.0.0.1", "trunk1", "s3cret").unwrap();
        assert_eq!(nonces.verify(&auth, invite(URI), "s3cret", now), Verdict::Valid);
    }

    #[test]
    fn the_nonce_table_is_bounded_and_swept() {
        let mut nonces = Nonces::new(3);
        let t0 = Instant::now();
        let first = nonces.challenge("junction", t0, false);
        for _ in 0..10 {
            nonces.issue(t0);
        }
        assert_eq!(nonces.outstanding(), 3, "the oldest are forgotten");
        let auth = authorize(&first, "INVITE", URI, "u", "p").unwrap();
        assert_eq!(nonces.verify(&auth, invite(URI), "p", t0), Verdict::Stale, "an evicted nonce is challenged again");
        nonces.issue(t0 + NONCE_LIFETIME + Duration::from_secs(1));
        assert_eq!(nonces.outstanding(), 1, "expired ones are swept when the next is issued");
        assert!(nonces.order.len() <= 3);
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
            let request = Challenged { method: "INVITE", uri: "sip:a", realm: "r" };
            assert_eq!(Nonces::new(4).verify(junk, request, "p", Instant::now()), Verdict::Invalid);
        }
        assert!(authorize("Basic realm=x", "INVITE", "sip:a", "u", "p").is_none());
    }
}

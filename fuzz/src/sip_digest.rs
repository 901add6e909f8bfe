//! SIP digest authentication (transports/sip/src/digest.rs): a caller's `Authorization` header
//! checked against a nonce we issued, the username read out of it for trunk selection, and a
//! far end's `WWW-Authenticate`/`Proxy-Authenticate` challenge answered when we place a call.
//!
//! Input: `Authorization` value, then the challenge, separated by [`crate::SEPARATOR`]. `$nonce`
//! in the Authorization stands for a nonce just issued (the fuzzer cannot forge one), and
//! `$response` for the correct response hash of that header's own fields for the password
//! `secret`, so the checks past the hash are reached.

use std::time::{Duration, Instant};

use junction_sip::digest::{self, Challenged, Nonces, Verdict};

const REALM: &str = "junction";
const PASSWORD: &str = "secret";

pub fn run(data: &[u8]) {
    let mut records = crate::records(data);
    let authorization = records.next().unwrap_or_default();
    let challenge = String::from_utf8_lossy(records.next().unwrap_or_default()).into_owned();

    let now = Instant::now();
    let mut nonces = Nonces::new(16);
    let authorization = crate::substitute(authorization, b"$nonce", nonces.issue(now).as_bytes());
    let mut authorization = String::from_utf8_lossy(&authorization).into_owned();
    if authorization.contains("$response") {
        authorization = with_response(&authorization);
    }
    let (_, params) = digest::parse_params(&authorization);
    let _ = digest::username(&authorization);
    // The answer is checked against the Request-URI it names, so the checks past it are reached.
    let uri = params.iter().find(|(n, _)| n == "uri").map(|(_, v)| v.clone()).unwrap_or_default();
    for method in ["INVITE", "REGISTER"] {
        let request = Challenged { method, uri: &uri, realm: REALM };
        let verdict = nonces.verify(&authorization, request, PASSWORD, now);
        let again = nonces.verify(&authorization, request, PASSWORD, now);
        let later = nonces.verify(&authorization, request, PASSWORD, now + Duration::from_secs(3600));
        assert!(again != Verdict::Valid || verdict != Verdict::Valid, "a nonce was accepted twice: {authorization}");
        assert!(
            !(later == Verdict::Valid && verdict != Verdict::Valid),
            "an answer became valid with time: {authorization}"
        );
    }
    if let Some(answer) = digest::authorize(&challenge, "INVITE", "sip:+15551234@trunk.example", "user", PASSWORD) {
        let _ = digest::parse_params(&answer);
    }
}

/// The header with `$response` replaced by the RFC 2617 response its own fields give for
/// [`PASSWORD`] and the method `INVITE`.
fn with_response(authorization: &str) -> String {
    let (_, params) = digest::parse_params(authorization);
    let get = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let field = |name: &str| get(name).unwrap_or_default();
    let ha1 = md5_hex(&format!("{}:{}:{PASSWORD}", field("username"), field("realm")));
    let ha2 = md5_hex(&format!("INVITE:{}", field("uri")));
    let response = match get("qop") {
        Some(qop) => md5_hex(&format!(
            "{ha1}:{}:{}:{}:{qop}:{ha2}",
            field("nonce"),
            get("nc").unwrap_or("00000001"),
            field("cnonce")
        )),
        None => md5_hex(&format!("{ha1}:{}:{ha2}", field("nonce"))),
    };
    authorization.replace("$response", &response)
}

fn md5_hex(text: &str) -> String {
    use md5::Digest;
    md5::Md5::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

//! The user agent core against scripted phones and a synthetic clock: dial-in, dial-out,
//! CANCEL, re-INVITE, digest challenges, and every refusal it makes on its own.

use std::time::{Duration, Instant};

use rsip::SipMessage;

use super::*;
use crate::message::{Peer, parse};

pub(super) const PHONE: &str = "127.0.0.1:5099";

pub(super) fn phone() -> Peer {
    Peer::udp(PHONE.parse().unwrap())
}

pub(super) fn ua() -> UserAgent {
    UserAgent::new(TimerConfig::default(), Locals::plain("127.0.0.1:5060".parse().unwrap()))
}

pub(super) const OFFER: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

/// A request as a phone writes it.
pub(super) fn phone_request(method: &str, branch: &str, cseq: u32, to_tag: Option<&str>, body: &str) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let content_type = if body.is_empty() { String::new() } else { "Content-Type: application/sdp\r\n".into() };
    format!(
        "{method} sip:standup@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP {PHONE};branch={branch}\r\n\
From: <sip:alice@127.0.0.1>;tag=ph1\r\n\
To: <sip:standup@127.0.0.1>{to_tag}\r\n\
Call-ID: call-1\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:alice@{PHONE}>\r\n\
Max-Forwards: 70\r\n\
{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Everything the user agent sent, parsed.
pub(super) fn sent(ua: &mut UserAgent) -> Vec<SipMessage> {
    std::iter::from_fn(|| ua.poll_transmit()).map(|t| parse(&t.bytes).expect("we send parseable SIP")).collect()
}

/// The start line, with our reason phrases (rsip renders its own on re-parsed responses).
pub(super) fn first_line(message: &SipMessage) -> String {
    match message {
        SipMessage::Response(r) => {
            let code = r.status_code.code();
            format!("SIP/2.0 {code} {}", crate::message::build::reason_phrase(code))
        }
        SipMessage::Request(r) => format!("{} {} SIP/2.0", r.method, r.uri),
    }
}

pub(super) fn lines(messages: &[SipMessage]) -> Vec<String> {
    messages.iter().map(first_line).collect()
}

pub(super) fn events(ua: &mut UserAgent) -> Vec<UaEvent> {
    std::iter::from_fn(|| ua.poll_event()).collect()
}

pub(super) fn advance(ua: &mut UserAgent, start: Instant, until: Duration) {
    while let Some(at) = ua.poll_timeout() {
        if at > start + until {
            break;
        }
        ua.handle_timeout(at);
    }
}

/// Dials in and answers; returns the call and our To tag.
fn answered_call(ua: &mut UserAgent, t0: Instant) -> (CallKey, String) {
    ua.receive(t0, phone_request("INVITE", "z9hG4bK-i1", 1, None, OFFER).as_bytes(), phone());
    let got = events(ua);
    let [UaEvent::Incoming { call, .. }] = got.as_slice() else { panic!("one incoming call") };
    let call = *call;
    sent(ua);
    ua.answer(t0, call, "v=0\r\n".into());
    let out = sent(ua);
    let SipMessage::Response(ok) = &out[0] else { panic!() };
    let tag = Head::of(ok).unwrap().to.tag.unwrap();
    (call, tag)
}

#[test]
fn dial_in_answer_ack_and_remote_bye() {
    let t0 = Instant::now();
    let mut ua = ua();
    ua.receive(t0, phone_request("INVITE", "z9hG4bK-i1", 1, None, OFFER).as_bytes(), phone());
    assert_eq!(lines(&sent(&mut ua)), ["SIP/2.0 100 Trying"]);
    // The phone retransmits its INVITE: still one call.
    ua.receive(t0, phone_request("INVITE", "z9hG4bK-i1", 1, None, OFFER).as_bytes(), phone());
    let got = events(&mut ua);
    let [UaEvent::Incoming { call, head, .. }] = got.as_slice() else { panic!("exactly one call") };
    assert_eq!(head.from.user(), Some("alice"));
    let call = *call;
    sent(&mut ua);

    ua.answer(t0, call, "v=0\r\n".into());
    let out = sent(&mut ua);
    assert_eq!(lines(&out), ["SIP/2.0 200 OK"]);
    let text = out[0].to_string();
    assert!(text.contains("Contact: <sip:junction@127.0.0.1:5060>") && text.contains("Content-Type: application/sdp"));
    let SipMessage::Response(ok) = &out[0] else { panic!() };
    let tag = Head::of(ok).unwrap().to.tag.unwrap();

    // No ACK yet: the 2xx goes out again at T1 and 2·T1.
    advance(&mut ua, t0, Duration::from_millis(1600));
    assert_eq!(lines(&sent(&mut ua)), ["SIP/2.0 200 OK", "SIP/2.0 200 OK"]);
    let ack = phone_request("ACK", "z9hG4bK-a1", 1, Some(&tag), "");
    ua.receive(t0 + Duration::from_secs(2), ack.as_bytes(), phone());
    assert!(matches!(events(&mut ua).as_slice(), [UaEvent::Confirmed { .. }]));
    advance(&mut ua, t0, Duration::from_secs(10));
    assert!(sent(&mut ua).is_empty(), "the ACK stops the 2xx");

    let bye = phone_request("BYE", "z9hG4bK-b1", 2, Some(&tag), "");
    ua.receive(t0 + Duration::from_secs(10), bye.as_bytes(), phone());
    assert_eq!(lines(&sent(&mut ua)), ["SIP/2.0 200 OK"]);
    assert!(matches!(events(&mut ua).as_slice(), [UaEvent::Ended { reason: EndReason::RemoteBye, .. }]));
    assert_eq!(ua.call_count(), 0);
    advance(&mut ua, t0, Duration::from_secs(60));
    assert_eq!(ua.transaction_counts(), (0, 0));
}

#[test]
fn unacknowledged_answer_is_hung_up() {
    let t0 = Instant::now();
    let mut ua = ua();
    let (_, _) = answered_call(&mut ua, t0);
    advance(&mut ua, t0, Duration::from_secs(33));
    let out = lines(&sent(&mut ua));
    assert!(out.iter().filter(|l| l.as_str() == "SIP/2.0 200 OK").count() >= 6, "{out:?}");
    assert!(out.iter().any(|l| l == "BYE sip:alice@127.0.0.1:5099 SIP/2.0"), "{out:?}");
    assert!(matches!(events(&mut ua).as_slice(), [UaEvent::Ended { reason: EndReason::NoAck, .. }]));
}

#[test]
fn the_ack_deadline_is_configurable_and_frees_the_call() {
    let t0 = Instant::now();
    let limits = UaLimits { ack_timeout: Duration::from_secs(2), ..UaLimits::default() };
    let local: std::net::SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let mut ua = UserAgent::with_limits(TimerConfig::default(), limits, Locals::plain(local));
    let (call, _) = answered_call(&mut ua, t0);
    advance(&mut ua, t0, Duration::from_millis(1900));
    assert!(events(&mut ua).is_empty(), "still waiting for the ACK");
    advance(&mut ua, t0, Duration::from_millis(2100));
    assert!(matches!(events(&mut ua).as_slice(), [UaEvent::Ended { call: c, reason: EndReason::NoAck }] if *c == call));
    // The BYE's transaction times out (nobody answers) and every table is swept.
    advance(&mut ua, t0, Duration::from_secs(80));
    assert_eq!(ua.call_count(), 0);
    assert_eq!(ua.table_sizes(), [0, 0, 0, 0]);
    assert_eq!(ua.transaction_counts(), (0, 0));
}

#[test]
fn cancel_before_answer_terminates_the_invite() {
    let t0 = Instant::now();
    let mut ua = ua();
    ua.receive(t0, phone_request("INVITE", "z9hG4bK-i2", 1, None, OFFER).as_bytes(), phone());
    events(&mut ua);
    sent(&mut ua);
    ua.receive(t0, phone_request("CANCEL", "z9hG4bK-i2", 1, None, "").as_bytes(), phone());
    assert_eq!(lines(&sent(&mut ua)), ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]);
    assert!(matches!(events(&mut ua).as_slice(), [UaEvent::Ended { reason: EndReason::Cancelled, .. }]));
    assert_eq!(ua.call_count(), 0);
    // A CANCEL that matches nothing.
    ua.receive(t0, phone_request("CANCEL", "z9hG4bK-none", 1, None, "").as_bytes(), phone());
    assert_eq!(lines(&sent(&mut ua)), ["SIP/2.0 481 Call/Transaction Does Not Exist"]);
}

#[test]
fn reinvite_for_hold_is_offered_to_the_stack() {
    let t0 = Instant::now();
    let mut ua = ua();
    let (call, tag) = answered_call(&mut ua, t0);
    ua.receive(t0, phone_request("ACK", "z9hG4bK-a", 1, Some(&tag), "").as_bytes(), phone());
    events(&mut ua);
    let hold = OFFER.replace("RTP/AVP 0\r\n", "RTP/AVP 0\r\na=sendonly\r\n");
    ua.receive(t0, phone_request("INVITE", "z9hG4bK-r1", 2, Some(&tag), &hold).as_bytes(), phone());
    let got = events(&mut ua);
    let [UaEvent::Offer { sdp, .. }] = got.as_slice() else { panic!("an offer") };
    assert!(String::from_utf8_lossy(sdp).contains("sendonly"));
    assert_eq!(lines(&sent(&mut ua)), ["SIP/2.0 100 Trying"]);
    // A second re-INVITE while the first is open gets 491.
    ua.receive(t0, phone_request("INVITE", "z9hG4bK-r2", 3, Some(&tag), &hold).as_bytes(), phone());
    assert_eq!(lines(&sent(&mut ua)), ["SIP/2.0 100 Trying", "SIP/2.0 491 Request Pending"]);
    ua.answer_offer(t0, call, "v=0\r\n".into());
    assert_eq!(lines(&sent(&mut ua)), ["SIP/2.0 200 OK"]);
    ua.receive(t0, phone_request("ACK", "z9hG4bK-a2", 2, Some(&tag), "").as_bytes(), phone());
    let got = events(&mut ua);
    assert!(
        matches!(got.as_slice(), [UaEvent::Confirmed { initial: false, sdp, .. }] if sdp.is_empty()),
        "a re-INVITE's ACK is no new call: {got:?}"
    );
    // Out-of-order CSeq.
    ua.receive(t0, phone_request("INFO", "z9hG4bK-o", 2, Some(&tag), "").as_bytes(), phone());
    assert_eq!(lines(&sent(&mut ua)), ["SIP/2.0 500 Server Internal Error"]);
}

#[test]
fn refusals_need_no_stack_decision() {
    let t0 = Instant::now();
    let mut ua = ua();
    let cases = [
        (phone_request("BYE", "z9hG4bK-x1", 5, Some("nope"), ""), "SIP/2.0 481 Call/Transaction Does Not Exist"),
        (phone_request("OPTIONS", "z9hG4bK-x2", 1, None, ""), "SIP/2.0 200 OK"),
        (phone_request("REGISTER", "z9hG4bK-x3", 1, None, ""), "SIP/2.0 405 Method Not Allowed"),
        (
            phone_request("INVITE", "z9hG4bK-x4", 1, None, "")
                .replace("Max-Forwards", "Content-Type: text/plain\r\nMax-Forwards")
                .replace("Content-Length: 0", "Content-Length: 2\r\n\r\nhi"),
            "SIP/2.0 415 Unsupported Media Type",
        ),
        (phone_request("FOO", "z9hG4bK-x5", 1, None, ""), "SIP/2.0 501 Not Implemented"),
        (
            phone_request("INVITE", "z9hG4bK-x6", 1, None, "").replace("CSeq: 1 INVITE", "CSeq: x"),
            "SIP/2.0 400 Bad Request",
        ),
    ];
    for (request, expected) in cases {
        ua.receive(t0, request.as_bytes(), phone());
        let out = lines(&sent(&mut ua));
        assert_eq!(out.last().map(String::as_str), Some(expected), "{request}\n{out:?}");
    }
    let required = phone_request("INVITE", "z9hG4bK-x7", 1, None, OFFER)
        .replace("Max-Forwards", "Require: timer, foo\r\nMax-Forwards");
    ua.receive(t0, required.as_bytes(), phone());
    let out = sent(&mut ua);
    assert_eq!(first_line(out.last().unwrap()), "SIP/2.0 420 Bad Extension");
    assert!(out.last().unwrap().to_string().contains("Unsupported: foo"));
    for junk in [&b"\x00\xff garbage"[..], b"SIP/2.0 200 OK\r\n\r\n", b"INVITE sip:x SIP/2.0\r\n\r\n"] {
        ua.receive(t0, junk, phone());
    }
    assert!(sent(&mut ua).is_empty(), "nothing can be answered without a Via");
    assert!(events(&mut ua).is_empty());
    assert_eq!(ua.call_count(), 0);
}

pub(super) fn invitation(credentials: Option<(&str, &str)>) -> Invitation {
    Invitation {
        target: rsip::Uri::try_from(format!("sip:bob@{PHONE}")).unwrap(),
        to: phone(),
        from: "sip:standup@127.0.0.1".into(),
        sdp: OFFER.into(),
        credentials: credentials.map(|(u, p)| (u.into(), p.into())),
    }
}

/// A response of the far end to a request we sent.
pub(super) fn reply(request: &SipMessage, code: u16, tag: &str, extra: &str, body: &str) -> Vec<u8> {
    let SipMessage::Request(request) = request else { panic!("a request") };
    let mut response = crate::message::build::response(request, code, Some(tag));
    if !extra.is_empty() {
        let (name, value) = extra.split_once(": ").unwrap();
        crate::message::build::add_header(&mut response, crate::message::build::other(name, value));
    }
    if code == 200 && request.method == rsip::Method::Invite {
        crate::message::build::add_header(
            &mut response,
            crate::message::build::other("Contact", format!("<sip:bob@{PHONE}>")),
        );
        response = crate::message::build::response_with_body(response, "application/sdp", body.as_bytes().to_vec());
    }
    response.to_string().into_bytes()
}

#[test]
fn dial_out_rings_answers_acks_and_hangs_up() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = ua.invite(t0, invitation(None));
    let out = sent(&mut ua);
    assert_eq!(lines(&out), [format!("INVITE sip:bob@{PHONE} SIP/2.0")]);
    ua.receive(t0, &reply(&out[0], 180, "b1", "", ""), phone());
    assert!(matches!(events(&mut ua).as_slice(), [UaEvent::Progress { code: 180, .. }]));
    ua.receive(t0, &reply(&out[0], 200, "b1", "", OFFER), phone());
    let got = events(&mut ua);
    let [UaEvent::Answered { sdp, .. }] = got.as_slice() else { panic!("answered") };
    assert_eq!(sdp, OFFER.as_bytes());
    let acks = sent(&mut ua);
    assert_eq!(lines(&acks), [format!("ACK sip:bob@{PHONE} SIP/2.0")]);
    assert_eq!(Head::of(&acks[0]).unwrap().to.tag.as_deref(), Some("b1"));
    // A retransmitted 2xx gets the ACK again.
    ua.receive(t0, &reply(&out[0], 200, "b1", "", OFFER), phone());
    assert_eq!(lines(&sent(&mut ua)), [format!("ACK sip:bob@{PHONE} SIP/2.0")]);

    ua.hangup(t0, call);
    let bye = sent(&mut ua);
    assert_eq!(lines(&bye), [format!("BYE sip:bob@{PHONE} SIP/2.0")]);
    assert_eq!(Head::of(&bye[0]).unwrap().cseq, 2);
    ua.receive(t0, &reply(&bye[0], 200, "b1", "", ""), phone());
    assert_eq!(ua.call_count(), 0);
    assert!(events(&mut ua).is_empty());
}

#[test]
fn dial_out_answers_a_digest_challenge_once() {
    let t0 = Instant::now();
    let mut ua = ua();
    ua.invite(t0, invitation(Some(("junction", "pw"))));
    let first = sent(&mut ua);
    let mut nonces = crate::digest::Nonces::new(4);
    let challenge = format!("WWW-Authenticate: {}", nonces.challenge("sipp", t0, false));
    ua.receive(t0, &reply(&first[0], 401, "b1", &challenge, ""), phone());
    let out = sent(&mut ua);
    assert_eq!(
        lines(&out),
        ["ACK sip:bob@127.0.0.1:5099 SIP/2.0".to_owned(), format!("INVITE sip:bob@{PHONE} SIP/2.0")]
    );
    let SipMessage::Request(retry) = &out[1] else { panic!() };
    assert_eq!(Head::of(retry).unwrap().cseq, 2);
    let authorization = crate::message::header_value(retry, "Authorization").expect("Authorization");
    let uri = format!("sip:bob@{PHONE}");
    let request = crate::digest::Challenged { method: "INVITE", uri: &uri, realm: "sipp" };
    let verdict = nonces.verify(&authorization, request, "pw", t0);
    assert_eq!(verdict, crate::digest::Verdict::Valid);
    // A second challenge means the credentials are wrong.
    ua.receive(t0, &reply(&out[1], 401, "b2", &challenge, ""), phone());
    assert!(matches!(events(&mut ua).as_slice(), [UaEvent::Failed { code: 401, .. }]));
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn dial_out_answers_a_proxy_challenge_with_proxy_authorization() {
    let t0 = Instant::now();
    let mut ua = ua();
    ua.invite(t0, invitation(Some(("junction", "pw"))));
    let first = sent(&mut ua);
    let mut nonces = crate::digest::Nonces::new(4);
    let challenge = format!("Proxy-Authenticate: {}", nonces.challenge("proxy", t0, false));
    ua.receive(t0, &reply(&first[0], 407, "p1", &challenge, ""), phone());
    let out = sent(&mut ua);
    let SipMessage::Request(retry) = &out[1] else { panic!("a new INVITE") };
    assert!(crate::message::header_value(retry, "Authorization").is_none());
    let answer = crate::message::header_value(retry, "Proxy-Authorization").expect("Proxy-Authorization");
    let uri = format!("sip:bob@{PHONE}");
    let request = crate::digest::Challenged { method: "INVITE", uri: &uri, realm: "proxy" };
    let verdict = nonces.verify(&answer, request, "pw", t0);
    assert_eq!(verdict, crate::digest::Verdict::Valid);
}

#[test]
fn dial_out_cancel_waits_for_a_provisional_response() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = ua.invite(t0, invitation(None));
    let invite = sent(&mut ua);
    ua.hangup(t0, call);
    assert!(sent(&mut ua).is_empty(), "no CANCEL before a provisional response");
    ua.receive(t0, &reply(&invite[0], 180, "b1", "", ""), phone());
    let cancel = sent(&mut ua);
    assert_eq!(lines(&cancel), [format!("CANCEL sip:bob@{PHONE} SIP/2.0")]);
    assert_eq!(Head::of(&cancel[0]).unwrap().via.branch, Head::of(&invite[0]).unwrap().via.branch);
    ua.receive(t0, &reply(&cancel[0], 200, "b1", "", ""), phone());
    ua.receive(t0, &reply(&invite[0], 487, "b1", "", ""), phone());
    assert_eq!(lines(&sent(&mut ua)), [format!("ACK sip:bob@{PHONE} SIP/2.0")]);
    assert!(events(&mut ua).is_empty(), "a cancelled call ends quietly");
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn dial_out_failures_and_silence_are_reported() {
    let t0 = Instant::now();
    let mut ua = ua();
    ua.invite(t0, invitation(None));
    let invite = sent(&mut ua);
    ua.receive(t0, &reply(&invite[0], 486, "b1", "", ""), phone());
    assert!(matches!(events(&mut ua).as_slice(), [UaEvent::Failed { code: 486, .. }]));
    ua.invite(t0, invitation(None));
    advance(&mut ua, t0, Duration::from_secs(40));
    assert!(matches!(events(&mut ua).as_slice(), [UaEvent::Failed { code: 408, .. }]));
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn a_ping_answered_481_ends_the_call() {
    let t0 = Instant::now();
    let mut ua = ua();
    let (call, tag) = answered_call(&mut ua, t0);
    ua.receive(t0, phone_request("ACK", "z9hG4bK-a", 1, Some(&tag), "").as_bytes(), phone());
    events(&mut ua);
    ua.ping(t0, call);
    let options = sent(&mut ua);
    assert_eq!(lines(&options), ["OPTIONS sip:alice@127.0.0.1:5099 SIP/2.0"]);
    ua.receive(t0, &reply(&options[0], 481, "ph1", "", ""), phone());
    assert_eq!(lines(&sent(&mut ua)), ["BYE sip:alice@127.0.0.1:5099 SIP/2.0"]);
    assert!(matches!(events(&mut ua).as_slice(), [UaEvent::Ended { reason: EndReason::Unreachable, .. }]));
}

#[test]
fn mutated_messages_never_panic() {
    // A deterministic xorshift, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds = [
        phone_request("INVITE", "z9hG4bK-m", 1, None, OFFER),
        phone_request("BYE", "z9hG4bK-m", 2, Some("t"), ""),
        phone_request("INFO", "z9hG4bK-m", 3, Some("t"), "Signal=5"),
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-x\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContact: <sip:c@127.0.0.1>\r\nContent-Length: 0\r\n\r\n".to_owned(),
    ];
    let t0 = Instant::now();
    let mut ua = ua();
    let specials = [b':', b';', b'<', b'>', b'"', b'\r', b'\n', b' ', b'@', b'=', b',', 0xff, 0x00, b'[', b']'];
    for round in 0..20_000 {
        let seed = &seeds[round % seeds.len()];
        let mut bytes = seed.as_bytes().to_vec();
        for _ in 0..(next() % 6 + 1) {
            let at = (next() as usize) % bytes.len().max(1);
            match next() % 4 {
                0 => bytes[at] = specials[(next() as usize) % specials.len()],
                1 => bytes.truncate(at),
                2 => bytes.insert(at, specials[(next() as usize) % specials.len()]),
                _ => {
                    let len = (next() as usize) % 8;
                    bytes.drain(at..(at + len).min(bytes.len()));
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        ua.receive(t0, &bytes, phone());
        while ua.poll_transmit().is_some() {}
        while let Some(event) = ua.poll_event() {
            if let UaEvent::Incoming { call, .. } = event {
                ua.reject(t0, call, 486, Vec::new());
            }
        }
    }
    advance(&mut ua, t0, Duration::from_secs(120));
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn a_400_never_echoes_a_header_value_holding_a_line_break() {
    // Found by fuzzing (sip_ua): a bare CR inside a Via value was copied into the 400 that
    // answers a request rsip cannot parse, so the sender chose header lines of our response.
    let t0 = Instant::now();
    let mut ua = ua();
    let injected = phone_request("INVITE", "z9hG4bK-cr", 1, None, "")
        .replace("Max-Forwards: 70", "Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-x\rInjected: yes\r\nMax-Forwards: 70")
        .replace("Content-Length: 0", "Content-Length: 500");
    ua.receive(t0, injected.as_bytes(), phone());
    let out: Vec<_> = std::iter::from_fn(|| ua.poll_transmit()).collect();
    assert_eq!(out.len(), 1, "the request is still answered");
    let text = String::from_utf8_lossy(&out[0].bytes).into_owned();
    assert!(text.starts_with("SIP/2.0 400 "), "{text:?}");
    assert!(!text.contains("Injected"), "{text:?}");
    assert!(text.contains("branch=z9hG4bK-cr"), "the clean Via is echoed: {text:?}");
}

#[test]
fn an_invite_whose_contact_cannot_be_written_back_is_refused() {
    // Found by fuzzing (sip_ua): rsip read this Contact leniently, and the BYE sent to it later
    // had a request line nobody can parse, so the call could not be hung up.
    let t0 = Instant::now();
    let mut ua = ua();
    let invite = phone_request("INVITE", "z9hG4bK-ct", 1, None, OFFER)
        .replace("Contact: <sip:alice@127.0.0.1:5099>", "Contact: <sip       \t:alice@e\">")
        .replace("From: <sip:alice@127.0.0.1>", "From: <sip       \t:alice@e\">");
    ua.receive(t0, invite.as_bytes(), phone());
    let out = sent(&mut ua);
    assert_eq!(lines(&out).last().map(String::as_str), Some("SIP/2.0 400 Bad Request"), "{out:?}");
    assert_eq!(ua.call_count(), 0);
}

//! Carrier behaviour of the user agent on a synthetic clock: late offers (in the INVITE and in
//! re-INVITEs), RFC 4028 session timers on both sides of a call, and reliable provisional
//! responses (PRACK) with early media for calls we place.

use std::time::{Duration, Instant};

use rsip::SipMessage;

use super::tests::{OFFER, PHONE, advance, events, invitation, lines, phone, phone_request, reply, sent, ua};
use super::*;
use crate::message::header_value;

const ANSWER: &str =
    "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\n";

/// A phone's INVITE with extra header lines (each ending in CRLF).
fn invite_with(branch: &str, extra: &str, body: &str) -> String {
    phone_request("INVITE", branch, 1, None, body).replace("Max-Forwards", &format!("{extra}Max-Forwards"))
}

/// Takes the one incoming call, answers it with `sdp`, and returns it with our tag and the 200.
fn answer_incoming(ua: &mut UserAgent, t0: Instant, sdp: &str) -> (CallKey, String, SipMessage) {
    let got = events(ua);
    let [UaEvent::Incoming { call, .. }] = got.as_slice() else { panic!("one incoming call: {got:?}") };
    let call = *call;
    sent(ua);
    ua.answer(t0, call, sdp.into());
    let mut out = sent(ua);
    assert_eq!(lines(&out), ["SIP/2.0 200 OK"]);
    let ok = out.remove(0);
    let tag = Head::of(&ok).unwrap().to.tag.unwrap();
    (call, tag, ok)
}

fn header(message: &SipMessage, name: &str) -> Option<String> {
    match message {
        SipMessage::Request(r) => header_value(r, name),
        SipMessage::Response(r) => header_value(r, name),
    }
}

#[test]
fn a_late_offer_is_answered_with_our_offer_and_the_ack_brings_the_answer() {
    let t0 = Instant::now();
    let mut ua = ua();
    ua.receive(t0, phone_request("INVITE", "z9hG4bK-l1", 1, None, "").as_bytes(), phone());
    assert_eq!(lines(&sent(&mut ua)), ["SIP/2.0 100 Trying"]);
    let got = events(&mut ua);
    let [UaEvent::Incoming { call, request, .. }] = got.as_slice() else { panic!("an incoming call: {got:?}") };
    assert!(request.body.is_empty());
    let call = *call;
    ua.answer(t0, call, OFFER.into());
    let out = sent(&mut ua);
    assert!(out[0].to_string().contains("m=audio 6000"), "our offer is in the 2xx");
    let tag = Head::of(&out[0]).unwrap().to.tag.unwrap();
    let ack = phone_request("ACK", "z9hG4bK-la", 1, Some(&tag), ANSWER);
    ua.receive(t0 + Duration::from_millis(100), ack.as_bytes(), phone());
    let got = events(&mut ua);
    let [UaEvent::Confirmed { call: c, initial: true, sdp }] = got.as_slice() else { panic!("confirmed: {got:?}") };
    assert_eq!((*c, sdp.as_slice()), (call, ANSWER.as_bytes()));
    advance(&mut ua, t0, Duration::from_secs(5));
    assert!(sent(&mut ua).is_empty(), "the ACK stopped the 2xx");
}

#[test]
fn an_offerless_reinvite_asks_for_our_offer() {
    let t0 = Instant::now();
    let mut ua = ua();
    ua.receive(t0, phone_request("INVITE", "z9hG4bK-i1", 1, None, OFFER).as_bytes(), phone());
    let (call, tag, _) = answer_incoming(&mut ua, t0, ANSWER);
    ua.receive(t0, phone_request("ACK", "z9hG4bK-a1", 1, Some(&tag), "").as_bytes(), phone());
    events(&mut ua);
    ua.receive(t0, phone_request("INVITE", "z9hG4bK-r1", 2, Some(&tag), "").as_bytes(), phone());
    let got = events(&mut ua);
    assert!(matches!(got.as_slice(), [UaEvent::Offer { sdp, .. }] if sdp.is_empty()), "{got:?}");
    sent(&mut ua);
    ua.answer_offer(t0, call, ANSWER.into());
    assert_eq!(lines(&sent(&mut ua)), ["SIP/2.0 200 OK"]);
    let hold = OFFER.replace("RTP/AVP 0\r\n", "RTP/AVP 0\r\na=recvonly\r\n");
    ua.receive(t0, phone_request("ACK", "z9hG4bK-a2", 2, Some(&tag), &hold).as_bytes(), phone());
    let got = events(&mut ua);
    let [UaEvent::Confirmed { initial: false, sdp, .. }] = got.as_slice() else { panic!("confirmed: {got:?}") };
    assert!(String::from_utf8_lossy(sdp).contains("recvonly"));
}

#[test]
fn too_small_an_interval_gets_422_with_our_min_se() {
    let t0 = Instant::now();
    let mut ua = ua();
    let invite = invite_with("z9hG4bK-s1", "Supported: timer\r\nSession-Expires: 30\r\n", OFFER);
    ua.receive(t0, invite.as_bytes(), phone());
    let out = sent(&mut ua);
    assert_eq!(lines(&out).last().map(String::as_str), Some("SIP/2.0 422 Session Interval Too Small"));
    assert_eq!(header(out.last().unwrap(), "Min-SE").as_deref(), Some("90"));
    assert!(events(&mut ua).is_empty());
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn as_the_refresher_we_refresh_half_way_with_a_reinvite_or_an_update() {
    for update in [false, true] {
        let t0 = Instant::now();
        let mut ua = ua();
        let allow = if update { "Allow: INVITE, ACK, BYE, UPDATE\r\n" } else { "" };
        let extra = format!("Supported: timer\r\nSession-Expires: 120;refresher=uas\r\n{allow}");
        ua.receive(t0, invite_with("z9hG4bK-s2", &extra, OFFER).as_bytes(), phone());
        let (call, tag, ok) = answer_incoming(&mut ua, t0, ANSWER);
        assert_eq!(header(&ok, "Session-Expires").as_deref(), Some("120;refresher=uas"));
        assert_eq!(header(&ok, "Require").as_deref(), Some("timer"));
        ua.receive(t0, phone_request("ACK", "z9hG4bK-a1", 1, Some(&tag), "").as_bytes(), phone());
        events(&mut ua);
        assert_eq!(ua.session_timer(call), Some((Duration::from_secs(120), true)));

        advance(&mut ua, t0, Duration::from_secs(59));
        assert!(sent(&mut ua).is_empty(), "nothing before half-way");
        advance(&mut ua, t0, Duration::from_millis(60_100));
        let out = sent(&mut ua);
        let method = if update { "UPDATE" } else { "INVITE" };
        assert_eq!(lines(&out), [format!("{method} sip:alice@{PHONE} SIP/2.0")]);
        assert_eq!(header(&out[0], "Session-Expires").as_deref(), Some("120;refresher=uac"));
        let SipMessage::Request(refresh) = &out[0] else { panic!() };
        assert_eq!(refresh.body.is_empty(), update, "a re-INVITE refresh carries our SDP, an UPDATE none");
        let t1 = t0 + Duration::from_millis(60_100);
        ua.receive(t1, &reply(&out[0], 200, &tag, "Session-Expires: 120;refresher=uac", ANSWER), phone());
        let acks = lines(&sent(&mut ua));
        assert_eq!(acks.len(), usize::from(!update), "a re-INVITE's 2xx is acknowledged: {acks:?}");
        // Refreshed: the next refresh is due 60 s after this one, and the call never ends.
        advance(&mut ua, t1, Duration::from_secs(59));
        assert!(lines(&sent(&mut ua)).iter().all(|l| l.starts_with("ACK")), "no refresh before the next half-way");
        assert!(events(&mut ua).is_empty());
    }
}

#[test]
fn a_refresh_that_never_comes_ends_the_call_with_bye() {
    let t0 = Instant::now();
    let mut ua = ua();
    let extra = "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n";
    ua.receive(t0, invite_with("z9hG4bK-s3", extra, OFFER).as_bytes(), phone());
    let (call, tag, ok) = answer_incoming(&mut ua, t0, ANSWER);
    assert_eq!(header(&ok, "Session-Expires").as_deref(), Some("90;refresher=uac"));
    ua.receive(t0, phone_request("ACK", "z9hG4bK-a1", 1, Some(&tag), "").as_bytes(), phone());
    events(&mut ua);

    // The phone refreshes once with an UPDATE at 40 s: answered here, no stack decision.
    let refresh = phone_request("UPDATE", "z9hG4bK-u1", 2, Some(&tag), "")
        .replace("Max-Forwards", "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\nMax-Forwards");
    let t1 = t0 + Duration::from_secs(40);
    ua.receive(t1, refresh.as_bytes(), phone());
    let out = sent(&mut ua);
    assert_eq!(lines(&out), ["SIP/2.0 200 OK"]);
    assert_eq!(header(&out[0], "Session-Expires").as_deref(), Some("90;refresher=uac"));
    assert!(events(&mut ua).is_empty());

    // Then nothing: the session ends at 90 s minus a third (30 s) after the refresh.
    advance(&mut ua, t1, Duration::from_secs(59));
    assert!(sent(&mut ua).is_empty() && events(&mut ua).is_empty(), "still within the interval");
    advance(&mut ua, t1, Duration::from_millis(60_100));
    assert_eq!(lines(&sent(&mut ua)), [format!("BYE sip:alice@{PHONE} SIP/2.0")]);
    let got = events(&mut ua);
    assert!(matches!(got.as_slice(), [UaEvent::Ended { call: c, reason: EndReason::SessionExpired }] if *c == call));
    assert_eq!(EndReason::SessionExpired.as_str(), "session_expired");
}

#[test]
fn a_caller_without_timer_support_gets_no_timer() {
    let t0 = Instant::now();
    let mut ua = ua();
    ua.receive(t0, phone_request("INVITE", "z9hG4bK-s4", 1, None, OFFER).as_bytes(), phone());
    let (call, _, ok) = answer_incoming(&mut ua, t0, ANSWER);
    assert_eq!(header(&ok, "Session-Expires"), None);
    assert_eq!(ua.session_timer(call), None);
    assert!(ok.to_string().contains("Supported: 100rel, timer"));
}

#[test]
fn dial_out_asks_for_a_timer_retries_after_422_and_refreshes_as_the_uac() {
    let t0 = Instant::now();
    let mut ua = ua();
    let call = ua.invite(t0, invitation(None));
    let out = sent(&mut ua);
    assert_eq!(header(&out[0], "Session-Expires").as_deref(), Some("1800"));
    assert_eq!(header(&out[0], "Min-SE").as_deref(), Some("90"));
    ua.receive(t0, &reply(&out[0], 422, "b1", "Min-SE: 2000", ""), phone());
    let out = sent(&mut ua);
    assert_eq!(
        lines(&out),
        ["ACK sip:bob@127.0.0.1:5099 SIP/2.0".to_owned(), format!("INVITE sip:bob@{PHONE} SIP/2.0")]
    );
    assert_eq!(header(&out[1], "Session-Expires").as_deref(), Some("2000"));
    ua.receive(t0, &reply(&out[1], 200, "b1", "Session-Expires: 2000;refresher=uac", OFFER), phone());
    assert!(matches!(events(&mut ua).as_slice(), [UaEvent::Answered { .. }]));
    sent(&mut ua);
    assert_eq!(ua.session_timer(call), Some((Duration::from_secs(2000), true)));
    advance(&mut ua, t0, Duration::from_millis(1_000_100));
    let out = sent(&mut ua);
    assert_eq!(lines(&out), [format!("INVITE sip:bob@{PHONE} SIP/2.0")], "a re-INVITE refresh at 1000 s");
    // The refresh times out (no answer at all): the session is over.
    advance(&mut ua, t0, Duration::from_secs(1040));
    let got = events(&mut ua);
    assert!(matches!(got.as_slice(), [UaEvent::Ended { reason: EndReason::Unreachable, .. }]), "{got:?}");
}

#[test]
fn reliable_provisional_responses_are_pracked_once_and_bring_early_media() {
    let t0 = Instant::now();
    let mut ua = ua();
    ua.invite(t0, invitation(None));
    let out = sent(&mut ua);
    let SipMessage::Request(invite) = &out[0] else { panic!() };
    let mut progress = crate::message::build::response(invite, 183, Some("b1"));
    for (name, value) in [("Require", "100rel"), ("RSeq", "7"), ("Contact", "<sip:bob@127.0.0.1:5099>")] {
        crate::message::build::add_header(&mut progress, crate::message::build::other(name, value));
    }
    let progress = crate::message::build::response_with_body(progress, "application/sdp", ANSWER.into());
    let bytes = progress.to_string().into_bytes();
    ua.receive(t0, &bytes, phone());
    let out = sent(&mut ua);
    assert_eq!(lines(&out), [format!("PRACK sip:bob@{PHONE} SIP/2.0")]);
    assert_eq!(header(&out[0], "RAck").as_deref(), Some("7 1 INVITE"));
    let got = events(&mut ua);
    assert!(
        matches!(got.as_slice(), [UaEvent::EarlyMedia { sdp, .. }, UaEvent::Progress { code: 183, .. }] if sdp == ANSWER.as_bytes()),
        "{got:?}"
    );
    // Its retransmission is neither acknowledged again nor reported again as media.
    ua.receive(t0 + Duration::from_millis(500), &bytes, phone());
    assert!(lines(&sent(&mut ua)).iter().all(|l| !l.starts_with("PRACK")));
    assert!(events(&mut ua).iter().all(|e| !matches!(e, UaEvent::EarlyMedia { .. })));
}

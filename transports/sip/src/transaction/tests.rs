//! The transaction machines against a synthetic clock: retransmission schedules, absorbed
//! duplicates, generated ACKs and every timeout.

use std::time::{Duration, Instant};

use rsip::{Method, SipMessage};

use super::*;
use crate::message::build::{self, RequestSpec};
use crate::message::{Head, Peer, parse};

fn peer() -> Peer {
    Peer::udp("127.0.0.1:5099".parse().unwrap())
}

fn request(method: Method, branch: &str) -> rsip::Request {
    build::request(RequestSpec {
        method,
        uri: rsip::Uri::try_from("sip:standup@127.0.0.1:5060").unwrap(),
        via: format!("SIP/2.0/UDP 127.0.0.1:5099;branch={branch}"),
        from: "<sip:alice@127.0.0.1>;tag=f1".into(),
        to: "<sip:standup@127.0.0.1>".into(),
        call_id: "c1".into(),
        cseq: 1,
        contact: Some("<sip:alice@127.0.0.1:5099>".into()),
        route: Vec::new(),
        extra: Vec::new(),
    })
}

fn head(request: &rsip::Request) -> Head {
    Head::of(request).unwrap()
}

/// Status lines (or request lines) of everything queued for sending.
fn sent(layer: &mut Transactions) -> Vec<String> {
    std::iter::from_fn(|| layer.poll_transmit())
        .map(|t| {
            let text = String::from_utf8_lossy(&t.bytes).to_string();
            text.lines().next().unwrap_or_default().to_owned()
        })
        .collect()
}

/// Advances the clock to each deadline up to `until`, collecting what was sent and when.
fn run_until(layer: &mut Transactions, start: Instant, until: Duration) -> (Vec<(Duration, String)>, Vec<TxnEvent>) {
    let mut log = Vec::new();
    let mut events = Vec::new();
    while let Some(at) = layer.poll_timeout() {
        if at > start + until {
            break;
        }
        events.extend(layer.handle_timeout(at));
        for line in sent(layer) {
            log.push((at - start, line));
        }
    }
    (log, events)
}

#[test]
fn invite_server_answers_retransmissions_and_retransmits_failures_until_acked() {
    let t0 = Instant::now();
    let mut layer = Transactions::new(TimerConfig::default());
    let invite = request(Method::Invite, "z9hG4bK-s1");
    let event = layer.receive_request(t0, invite.clone(), head(&invite), peer());
    let Some(TxnEvent::Request { key: Some(key), .. }) = event else { panic!("new INVITE goes up: {event:?}") };
    assert_eq!(sent(&mut layer), ["SIP/2.0 100 Trying"]);

    // A retransmitted INVITE is answered with the last response and not passed up.
    assert!(layer.receive_request(t0, invite.clone(), head(&invite), peer()).is_none());
    assert_eq!(sent(&mut layer), ["SIP/2.0 100 Trying"]);

    layer.respond(t0, &key, build::response(&invite, 486, Some("t1")));
    assert_eq!(sent(&mut layer), ["SIP/2.0 486 Busy Here"]);
    // Timer G: T1, 2·T1, 4·T1, then capped at T2.
    let (log, events) = run_until(&mut layer, t0, Duration::from_millis(9_600));
    let times: Vec<u128> = log.iter().map(|(t, _)| t.as_millis()).collect();
    assert_eq!(times, [500, 1_500, 3_500, 7_500]);
    assert!(events.is_empty());

    let busy = build::response(&invite, 486, Some("t1"));
    let ack = build::ack_for_failure(&invite, &busy);
    assert!(layer.receive_request(t0 + Duration::from_secs(8), ack.clone(), head(&ack), peer()).is_none());
    assert_eq!(layer.server_state(&key), Some(ServerState::Confirmed));
    // Confirmed absorbs ACK retransmissions, then goes away after T4 (timer I).
    assert!(layer.receive_request(t0 + Duration::from_secs(9), ack.clone(), head(&ack), peer()).is_none());
    let (log, _) = run_until(&mut layer, t0, Duration::from_secs(14));
    assert!(log.is_empty(), "{log:?}");
    assert_eq!(layer.counts(), (0, 0));
}

#[test]
fn unacknowledged_failure_times_out_after_64_t1() {
    let t0 = Instant::now();
    let mut layer = Transactions::new(TimerConfig::default());
    let invite = request(Method::Invite, "z9hG4bK-s2");
    let Some(TxnEvent::Request { key: Some(key), .. }) =
        layer.receive_request(t0, invite.clone(), head(&invite), peer())
    else {
        panic!()
    };
    layer.respond(t0, &key, build::response(&invite, 404, Some("t")));
    let (_, events) = run_until(&mut layer, t0, Duration::from_secs(40));
    assert!(matches!(events.as_slice(), [TxnEvent::AckTimeout { .. }]), "{events:?}");
    assert_eq!(layer.counts(), (0, 0));
}

#[test]
fn accepted_invite_absorbs_retransmissions_and_passes_2xx_acks_up() {
    let t0 = Instant::now();
    let mut layer = Transactions::new(TimerConfig::default());
    let invite = request(Method::Invite, "z9hG4bK-s3");
    let Some(TxnEvent::Request { key: Some(key), .. }) =
        layer.receive_request(t0, invite.clone(), head(&invite), peer())
    else {
        panic!()
    };
    layer.respond(t0, &key, build::response(&invite, 200, Some("t")));
    sent(&mut layer);
    assert_eq!(layer.server_state(&key), Some(ServerState::Accepted));
    assert!(layer.receive_request(t0, invite.clone(), head(&invite), peer()).is_none());
    assert!(sent(&mut layer).is_empty(), "the dialog, not the transaction, resends a 2xx");
    // The dialog's 2xx retransmissions go out through the transaction.
    layer.respond(t0, &key, build::response(&invite, 200, Some("t")));
    assert_eq!(sent(&mut layer), ["SIP/2.0 200 OK"]);
    // An ACK with a new branch matches nothing and goes to the dialog.
    let ack = request(Method::Ack, "z9hG4bK-other");
    assert!(matches!(
        layer.receive_request(t0, ack.clone(), head(&ack), peer()),
        Some(TxnEvent::Request { key: None, .. })
    ));
    run_until(&mut layer, t0, Duration::from_secs(33));
    assert_eq!(layer.counts(), (0, 0), "timer L ends the Accepted state");
}

#[test]
fn non_invite_server_resends_its_final_response() {
    let t0 = Instant::now();
    let mut layer = Transactions::new(TimerConfig::default());
    let bye = request(Method::Bye, "z9hG4bK-s4");
    let Some(TxnEvent::Request { key: Some(key), .. }) = layer.receive_request(t0, bye.clone(), head(&bye), peer())
    else {
        panic!()
    };
    assert!(sent(&mut layer).is_empty(), "no 100 for non-INVITE");
    layer.respond(t0, &key, build::response(&bye, 200, Some("t")));
    assert_eq!(sent(&mut layer), ["SIP/2.0 200 OK"]);
    assert!(layer.receive_request(t0, bye.clone(), head(&bye), peer()).is_none());
    assert_eq!(sent(&mut layer), ["SIP/2.0 200 OK"]);
    run_until(&mut layer, t0, Duration::from_secs(33));
    assert_eq!(layer.counts(), (0, 0));
}

#[test]
fn invite_client_retransmits_with_doubling_intervals_until_timer_b() {
    let t0 = Instant::now();
    let mut layer = Transactions::new(TimerConfig::default());
    let key = layer.send(t0, request(Method::Invite, "z9hG4bK-c1"), peer()).unwrap();
    assert_eq!(sent(&mut layer).len(), 1);
    let (log, events) = run_until(&mut layer, t0, Duration::from_secs(40));
    let times: Vec<u128> = log.iter().map(|(t, _)| t.as_millis()).collect();
    assert_eq!(times, [500, 1_500, 3_500, 7_500, 15_500, 31_500]);
    assert!(matches!(events.as_slice(), [TxnEvent::Timeout { key: k }] if *k == key), "{events:?}");
    assert_eq!(layer.counts(), (0, 0));
}

fn response_to(request: &rsip::Request, code: u16) -> (rsip::Response, Head) {
    let response = build::response(request, code, Some("remote"));
    let SipMessage::Response(parsed) = parse(response.to_string().as_bytes()).unwrap() else { panic!() };
    let head = Head::of(&parsed).unwrap();
    (parsed, head)
}

#[test]
fn invite_client_acknowledges_failures_itself() {
    let t0 = Instant::now();
    let mut layer = Transactions::new(TimerConfig::default());
    let invite = request(Method::Invite, "z9hG4bK-c2");
    layer.send(t0, invite.clone(), peer()).unwrap();
    sent(&mut layer);
    let (ringing, head180) = response_to(&invite, 180);
    assert!(matches!(layer.receive_response(t0, ringing, head180), Some(TxnEvent::Response { .. })));
    let (log, _) = run_until(&mut layer, t0, Duration::from_secs(5));
    assert!(log.is_empty(), "a provisional response stops timer A: {log:?}");

    let (busy, head486) = response_to(&invite, 486);
    let up = layer.receive_response(t0 + Duration::from_secs(5), busy.clone(), head486.clone());
    assert!(matches!(up, Some(TxnEvent::Response { .. })));
    assert_eq!(sent(&mut layer), ["ACK sip:standup@127.0.0.1:5060 SIP/2.0"]);
    // The retransmitted 486 gets the same ACK and is not passed up again.
    assert!(layer.receive_response(t0 + Duration::from_secs(6), busy, head486).is_none());
    assert_eq!(sent(&mut layer), ["ACK sip:standup@127.0.0.1:5060 SIP/2.0"]);
}

#[test]
fn non_invite_client_caps_retransmissions_at_t2_and_times_out() {
    let t0 = Instant::now();
    let mut layer = Transactions::new(TimerConfig::default());
    layer.send(t0, request(Method::Bye, "z9hG4bK-c3"), peer()).unwrap();
    sent(&mut layer);
    let (log, events) = run_until(&mut layer, t0, Duration::from_secs(33));
    let times: Vec<u128> = log.iter().map(|(t, _)| t.as_millis()).collect();
    assert_eq!(&times[..6], [500, 1_500, 3_500, 7_500, 11_500, 15_500]);
    assert!(matches!(events.as_slice(), [TxnEvent::Timeout { .. }]));
}

#[test]
fn reliable_transports_never_retransmit() {
    let t0 = Instant::now();
    let mut layer = Transactions::new(TimerConfig::default());
    let tcp = Peer::tcp("127.0.0.1:5099".parse().unwrap());
    layer.send(t0, request(Method::Options, "z9hG4bK-c4"), tcp).unwrap();
    sent(&mut layer);
    let (log, events) = run_until(&mut layer, t0, Duration::from_secs(40));
    assert!(log.is_empty());
    assert_eq!(events.len(), 1, "timer F still applies");
}

#[test]
fn stray_2xx_for_a_finished_invite_goes_to_the_dialog() {
    let t0 = Instant::now();
    let mut layer = Transactions::new(TimerConfig::default());
    let invite = request(Method::Invite, "z9hG4bK-gone");
    let (ok, head) = response_to(&invite, 200);
    assert!(matches!(layer.receive_response(t0, ok, head), Some(TxnEvent::Response { key: None, .. })));
    let (busy, head) = response_to(&invite, 486);
    assert!(layer.receive_response(t0, busy, head).is_none());
}

#[test]
fn server_transactions_are_capped_per_source_and_in_all_and_swept() {
    let mut layer = Transactions::with_limits(TimerConfig::default(), TxnLimits { total: 5, per_source: 3 });
    let t0 = Instant::now();
    let from = |ip: &str| Peer::udp(format!("{ip}:5099").parse().unwrap());
    let options = |n: u32, peer: Peer, layer: &mut Transactions| {
        let request = request(Method::Options, &format!("z9hG4bK-flood{n}"));
        let passed = layer.receive_request(t0, request.clone(), head(&request), peer);
        if let Some(TxnEvent::Request { key: Some(key), .. }) = &passed {
            layer.respond(t0, key, build::response(&request, 200, Some("t")));
        }
        passed.is_some()
    };
    let flooder = from("192.0.2.66");
    let admitted: Vec<bool> = (0..10).map(|n| options(n, flooder, &mut layer)).collect();
    assert_eq!(admitted.iter().filter(|a| **a).count(), 3, "three from one address");
    let lines = sent(&mut layer);
    assert_eq!(lines.iter().filter(|l| *l == "SIP/2.0 503 Service Unavailable").count(), 7, "{lines:?}");
    assert_eq!(layer.counts().0, 3, "the refused ones left nothing behind");

    // Another sender still gets in, up to the total.
    assert!(options(100, from("192.0.2.1"), &mut layer));
    assert!(options(101, from("192.0.2.2"), &mut layer));
    assert!(!options(102, from("192.0.2.3"), &mut layer), "five in all");
    let refusal = std::iter::from_fn(|| layer.poll_transmit()).last().unwrap();
    let text = String::from_utf8_lossy(&refusal.bytes).to_string();
    assert!(text.contains("Retry-After: 10") && text.contains("Warning: 399 junction"), "{text}");
    assert_eq!(layer.overload(), (8, 3));

    // Once they linger out (timer J, 64·T1 over UDP) the table is empty and the flooder is
    // welcome again.
    run_until(&mut layer, t0, Duration::from_secs(33));
    assert_eq!(layer.counts(), (0, 0));
    assert_eq!(layer.overload().1, 0, "the per-source counts are swept too");
    assert!(options(200, flooder, &mut layer));
}

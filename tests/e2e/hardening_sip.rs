//! Issue 12's SIP attacks against the real binary, each landed while an unrelated call is
//! served and checked by its content (sipp phones hearing each other's tones):
//! - the RTP datagram that made the `rtp` crate panic inside a call (attack 2): dropped and
//!   counted, the attacked phone keeps hearing the room;
//! - an OPTIONS flood from one address (attack 5): 503 past the per-source cap, bounded memory,
//!   TCP connections gated at accept and closed when idle, while a call from elsewhere connects;
//! - dial-out by a room-admin token (attack 3): refused without `sip_call`, refused to numbers
//!   and hosts outside the trunk's lists, placed through an outbound trunk with digest;
//! - digest answers replayed or moved to another Request-URI, an INVITE never acknowledged,
//!   and the per-source call cap.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::sip::{
    OPEN_DIAL_IN, calls, code, collect, heard, pcmu_call, phone_publishers, sip_addr, states, tone, uac_args,
    wait_state,
};
use crate::support::audio::{G711, g711_to_pcm};
use crate::support::sip::{RtpRecorder, Sipp, dominant_hz, free_port, free_port_pair, scenario};
use crate::support::{TestServer, eventually};

/// Issue 12, attack 2: a one-byte header-extension element whose length runs past the packet.
const BAD_RTP: [u8; 20] =
    [0x90, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0xBE, 0xDE, 0x00, 0x01, 0x1F, 0x00, 0x00, 0x00];

/// The µ-law audio a phone heard from packets that arrived after `since`.
fn heard_since(recorder: &RtpRecorder, since: tokio::time::Instant) -> Vec<i16> {
    recorder
        .packets()
        .iter()
        .filter(|p| p.at > since && p.payload_type == 0)
        .flat_map(|p| g711_to_pcm(&p.payload, G711::MuLaw))
        .collect()
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap()
}

/// The value of the series of metric `name` with all of `labels` (`key="value"`), 0 when absent.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || (labels.is_empty() && l.starts_with(&format!("{name} "))))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_malformed_rtp_datagram_is_dropped_and_the_phone_keeps_hearing_the_room() {
    // A port range of its own: bob, who calls first, gets its first pair.
    let config = OPEN_DIAL_IN
        .replace("rtp_port_min = 30000\nrtp_port_max = 39999", "rtp_port_min = 38600\nrtp_port_max = 38603");
    let server = TestServer::start_with(&config, &[]).await;
    let dir = server.dir().to_path_buf();
    let bob_ears = RtpRecorder::start().await;
    let bob = pcmu_call("bob", bob_ears.port, crate::support::sip::play(&[tone(&dir, 1000, 7.0)], 0), 7000);
    let bob = Sipp::start(&dir, "bob", &bob, &uac_args(&server, "standup", &[]));
    phone_publishers(&server, "standup", 1).await;
    let alice_ears = RtpRecorder::start().await;
    let alice = pcmu_call("alice", alice_ears.port, crate::support::sip::play(&[tone(&dir, 440, 6.0)], 0), 6000);
    let alice = Sipp::start(&dir, "alice", &alice, &uac_args(&server, "standup", &[]));
    phone_publishers(&server, "standup", 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The attack on bob's RTP port, repeated, with its relatives and junk on the RTCP port.
    let attacked_at = tokio::time::Instant::now();
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let two_byte_cut = [0x90, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x00, 0x00, 0x01, 0, 0, 0, 7];
    let csrc_overflow = [0x8f, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    for _ in 0..20 {
        for datagram in [&BAD_RTP[..], &two_byte_cut[..], &csrc_overflow[..]] {
            attacker.send_to(datagram, "127.0.0.1:38600").await.unwrap();
        }
        attacker.send_to(&[0x80, 201, 0x00, 0x09, 0, 0, 0, 1], "127.0.0.1:38601").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    alice.finish().await.assert_ok("alice");
    bob.finish().await.assert_ok("bob");
    // Bob (attacked) kept hearing alice's 440 Hz, and alice (the other call) bob's 1000 Hz.
    for (who, ears, freq) in [("bob", &bob_ears, 440.0), ("alice", &alice_ears, 1000.0)] {
        let after = heard_since(ears, attacked_at + Duration::from_millis(300));
        let after = &after[..after.len().min(150 * 160)];
        assert!(after.len() >= 100 * 160, "{who} heard {} samples after the attack", after.len());
        assert!((dominant_hz(after) - freq).abs() <= 5.0, "{who} hears {freq} Hz after the attack");
    }
    let text = metrics(&server).await;
    let invalid = |kind: &str, reason: &str| {
        let (kind, reason) = (format!("kind=\"{kind}\""), format!("reason=\"{reason}\""));
        metric(&text, "junction_sip_invalid_media_total", &[&kind, &reason])
    };
    let dropped = invalid("rtp", "extension_element");
    assert!(dropped >= 40.0, "the attack datagrams were counted: {dropped}");
    assert!(invalid("rtp", "csrc") >= 20.0 && invalid("rtcp", "rtcp_length") >= 20.0, "{text}");
    assert_eq!(metric(&text, "junction_session_panics_total", &["transport=\"sip\""]), 0.0);
    assert_eq!(server.logs().matches("datagram dropped: ").count(), 1, "logged once per call");
    server.wait_for_no_peers().await;
    for call in calls(&server, "standup").await {
        assert_eq!((call["state"].as_str(), call["reason"].as_str()), (Some("ended"), Some("remote_hangup")), "{call}");
    }
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn options(target: &str, from: std::net::SocketAddr, n: usize) -> String {
    format!(
        "OPTIONS sip:junction@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-flood-{n}\r\n\
From: <sip:flood@{from}>;tag=f{n}\r\nTo: <sip:junction@{target}>\r\nCall-ID: flood-{n}\r\n\
CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn an_options_flood_gets_503_past_its_cap_while_a_call_from_elsewhere_connects() {
    let caps = "\nmax_transactions_per_source = 200\nmax_tcp_connections_per_source = 4\ntcp_idle_timeout_s = 1\n";
    let config = OPEN_DIAL_IN.replace("rtp_port_max = 39999\n", &format!("rtp_port_max = 39999{caps}"));
    let server = TestServer::start_with(&config, &[]).await;
    let dir = server.dir().to_path_buf();
    let target = sip_addr(&server);
    let before = rss_kib(server.pid());

    // 3 000 OPTIONS with fresh branches from 127.0.0.9, counted as the answers come back.
    let flooder = std::sync::Arc::new(UdpSocket::bind("127.0.0.9:0").await.unwrap());
    let from = flooder.local_addr().unwrap();
    let listener = flooder.clone();
    let answers = tokio::spawn(async move {
        let (mut ok, mut busy, mut retry_after) = (0, 0, false);
        let mut buf = vec![0u8; 4096];
        while let Ok(Ok((len, _))) = tokio::time::timeout(Duration::from_secs(2), listener.recv_from(&mut buf)).await {
            let text = String::from_utf8_lossy(&buf[..len]);
            if text.starts_with("SIP/2.0 200") {
                ok += 1;
            } else if text.starts_with("SIP/2.0 503") {
                busy += 1;
                retry_after |= text.contains("Retry-After: ");
            }
        }
        (ok, busy, retry_after)
    });
    for n in 0..3000 {
        flooder.send_to(options(&target, from, n).as_bytes(), &target).await.unwrap();
        if n % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    // Meanwhile two phones on 127.0.0.1 call in and hear each other.
    let (alice_ears, bob_ears) = (RtpRecorder::start().await, RtpRecorder::start().await);
    let mut phones = Vec::new();
    for (caller, freq, ears) in [("alice", 440, &alice_ears), ("bob", 1000, &bob_ears)] {
        let xml = pcmu_call(caller, ears.port, crate::support::sip::play(&[tone(&dir, freq, 4.0)], 0), 4000);
        phones.push((caller, Sipp::start(&dir, caller, &xml, &uac_args(&server, "standup", &[]))));
    }

    // TCP from the flooder: four connections at most, and idle ones are closed.
    let mut held = Vec::new();
    for _ in 0..6 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.9:0".parse().unwrap()).unwrap();
        held.push(socket.connect(target.parse().unwrap()).await.unwrap());
    }
    // All six read at once: the two past the gate are closed at accept, the four others by
    // the idle timeout (1 s after accept, so never before).
    let started = tokio::time::Instant::now();
    let reads = held.into_iter().map(|mut stream| async move {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "every connection is closed in the end: {read:?}");
        started.elapsed()
    });
    let closed_at = futures::future::join_all(reads).await;
    let at_once = closed_at.iter().filter(|d| **d < Duration::from_millis(900)).count();
    assert_eq!(at_once, 2, "two of six closed at accept (four per address), four when idle: {closed_at:?}");

    let (ok, busy, retry_after) = answers.await.unwrap();
    assert!(ok <= 200, "at most the per-source cap was admitted: {ok}");
    assert!(busy >= 2500 && retry_after, "the rest got 503 with Retry-After: {busy}");
    for (caller, phone) in phones {
        phone.finish().await.assert_ok(caller);
    }
    assert!((dominant_hz(&heard(&alice_ears)) - 1000.0).abs() <= 5.0, "alice hears bob during the flood");
    assert!((dominant_hz(&heard(&bob_ears)) - 440.0).abs() <= 5.0, "bob hears alice during the flood");

    let after = rss_kib(server.pid());
    eprintln!("RSS before the flood {before} KiB, after {after} KiB (+{} KiB)", after.saturating_sub(before));
    let text = metrics(&server).await;
    assert!(metric(&text, "junction_sip_overload_refused_total", &["scope=\"source\""]) >= 2500.0, "{text}");
    assert_eq!(metric(&text, "junction_sip_tcp_refused_total", &["scope=\"source\""]), 2.0);
    assert!(metric(&text, "junction_sip_transactions", &["side=\"server\""]) <= 220.0, "the table stayed small");
    server.wait_for_no_peers().await;
}

/// A sipp phone that answers Junction's call after a digest challenge, on `port`.
fn challenging_provider(dir: &std::path::Path, port: u16, rtp_port: u16) -> Sipp {
    let xml = scenario(
        "uas_auth.xml",
        &[("rtp_port", rtp_port.to_string()), ("password", "prov-pw".into()), ("nonce", "a1b2c3".into())],
    );
    let args: Vec<String> =
        ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", &free_port_pair().to_string(), "-p", &port.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    Sipp::start(dir, "provider", &xml, &args)
}

async fn dial_with(server: &TestServer, bearer: &str, room: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v1/rooms/{room}/sip/calls")))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn dial_out_needs_the_sip_call_grant_and_goes_only_where_the_trunk_allows() {
    // Direct dial is off (the default): calls go through the outbound trunk only.
    let config = OPEN_DIAL_IN.replace("allow_direct_dial = true\ndirect_dial_hosts = [\"127.0.0.1\"]\n", "");
    let server = TestServer::start_with(&config, &[]).await;
    let dir = server.dir().to_path_buf();
    let port = free_port();
    let trunk = json!({
        "name": "provider",
        "outbound": {
            "address": format!("127.0.0.1:{port}"),
            "username": "junction",
            "password": "prov-pw",
            "destinations": ["+1555"],
            "caller_ids": ["+15550100"]
        }
    });
    let (status, created) = server.call(Method::POST, "/v1/sip/trunks", Some(trunk)).await;
    assert_eq!(status, 201, "{created}");
    assert!(created["outbound"].get("password").is_none() && created["outbound"]["digest_auth"] == true, "{created}");

    // A phone in the room playing 440 Hz, which the called party should hear.
    let alice_ears = RtpRecorder::start().await;
    let alice = pcmu_call("alice", alice_ears.port, crate::support::sip::play(&[tone(&dir, 440, 6.0)], 0), 6000);
    let alice = Sipp::start(&dir, "alice", &alice, &uac_args(&server, "standup", &[]));
    phone_publishers(&server, "standup", 1).await;

    // The attack: a moderator's admin token, any host, a bank's caller id.
    let admin = server.token("standup", "moderator", json!({"admin": true})).await;
    let attack = json!({"to": "sip:+15551234@127.0.0.1:9;transport=tcp", "from": "sip:ceo@bank.example"});
    let (status, body) = dial_with(&server, &admin, "standup", attack.clone()).await;
    assert_eq!((status, code(&body)), (403, "sip_call_not_granted"), "{body}");
    let (status, body) = dial_with(&server, &admin, "standup", json!({"to": "+15551234"})).await;
    assert_eq!((status, code(&body)), (403, "sip_call_not_granted"), "{body}");

    // With the grant (a grant of its own: no admin needed), still only numbers the trunk may
    // call, as a caller id it may present; and it opens nothing else of the room's API.
    let caller = server.token("standup", "dialler", json!({"sip_call": true})).await;
    let peers = reqwest::Client::new().get(server.url("/v1/rooms/standup/peers")).bearer_auth(&caller).send();
    assert_eq!(peers.await.unwrap().status().as_u16(), 403, "a sip_call token lists no peers");
    let refused = [
        (attack, 403, "direct_dial_disabled"),
        (json!({"to": "+15551234", "from": "sip:ceo@bank.example"}), 403, "caller_id_not_allowed"),
        (json!({"to": "+442071234567"}), 403, "destination_not_allowed"),
        (json!({"to": "+15551234", "trunk": "ST_nope"}), 404, "trunk_not_found"),
    ];
    for (body, status_, code_) in refused {
        let (status, reply) = dial_with(&server, &caller, "standup", body.clone()).await;
        assert_eq!((status, code(&reply)), (status_, code_), "{body} -> {reply}");
    }
    // A token of another room, even with the grant, cannot dial from this one.
    let other = server.token("lobby", "dialler", json!({"admin": true, "sip_call": true})).await;
    let (status, _) = dial_with(&server, &other, "standup", json!({"to": "+15551234"})).await;
    assert_eq!(status, 403);

    // An allowed call: through the trunk, answered by the provider after its digest challenge.
    let provider_ears = RtpRecorder::start().await;
    let provider = challenging_provider(&dir, port, provider_ears.port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, call) = dial_with(&server, &caller, "standup", json!({"to": "+1 555 123-4"})).await;
    assert_eq!(status, 201, "{call}");
    assert_eq!(call["to"], format!("sip:+15551234@127.0.0.1:{port}"));
    let id = call["id"].as_str().unwrap().to_owned();
    let answered = wait_state(&server, "standup", &id, "answered").await;
    assert_eq!(answered["trunk"], created["id"]);
    eventually("the provider hears the room", Duration::from_secs(10), || async {
        (provider_ears.count() > 150).then_some(())
    })
    .await;
    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/standup/sip/calls/{id}"), None).await;
    assert_eq!(status, 204);
    let result = provider.finish().await;
    result.assert_ok("the provider");
    assert!(result.messages.contains("From: <sip:+15550100@"), "the trunk's caller id was presented");
    assert!((dominant_hz(&heard(&provider_ears)) - 440.0).abs() <= 5.0, "the provider hears alice");
    alice.finish().await.assert_ok("alice");
    server.wait_for_no_peers().await;
}

/// A raw INVITE to `sip:<room>@target` from `socket`, with `extra` header lines.
fn raw_invite(target: &str, room: &str, from: std::net::SocketAddr, call: &str, extra: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40010 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:{room}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{call}\r\n\
From: <sip:raw@{from}>;tag=r-{call}\r\nTo: <sip:{room}@{target}>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:raw@{from}>\r\nMax-Forwards: 70\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// Every message `socket` receives within `window`, whole.
async fn received(socket: &UdpSocket, window: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    while let Ok(Ok((len, _))) = tokio::time::timeout(window, socket.recv_from(&mut buf)).await {
        got.push(String::from_utf8_lossy(&buf[..len]).to_string());
    }
    got
}

#[tokio::test]
async fn digest_nonces_are_single_use_and_bound_to_the_request_uri_and_acks_have_a_deadline() {
    let config = r#"
[sip]
rtp_port_min = 30000
rtp_port_max = 39999
ack_timeout_s = 2
max_calls_per_source = 1
[[sip.trunks]]
name = "carrier"
username = "acme"
password = "acme-pw-42"
[[sip.trunks]]
name = "lab"
allowed_addresses = ["127.0.0.7/32"]
[[sip.dispatch_rules]]
kind = "callee"
"#;
    let server = TestServer::start_with(config, &[]).await;
    let dir = server.dir().to_path_buf();
    let target = sip_addr(&server);

    // A sipp phone authenticates over UDP and talks; its Authorization header is then replayed.
    let ears = RtpRecorder::start().await;
    let xml = scenario(
        "uac_auth.xml",
        &[("caller", "oscar".into()), ("rtp_port", ears.port.to_string()), ("talk_ms", "1500".into())],
    );
    // The digest uri must be the Request-URI (RFC 3261 §22.4); sipp (which adds the `sip:`) leaves the user out by default.
    let auth_uri = format!("support@{target}");
    let args = uac_args(&server, "support", &["-au", "acme", "-ap", "acme-pw-42", "-auth_uri", &auth_uri]);
    let phone = Sipp::start(&dir, "oscar", &xml, &args);
    phone_publishers(&server, "support", 1).await;
    let result = phone.finish().await;
    result.assert_ok("oscar");
    let authorization = result
        .messages
        .lines()
        .find(|l| l.starts_with("Authorization: Digest"))
        .expect("sipp's Authorization header")
        .to_owned();

    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let from = attacker.local_addr().unwrap();
    let replay = raw_invite(&target, "support", from, "replay-1", &format!("{authorization}\r\n"));
    attacker.send_to(replay.as_bytes(), &target).await.unwrap();
    let got = received(&attacker, Duration::from_millis(800)).await;
    let refusal = got.iter().find(|m| !m.starts_with("SIP/2.0 100")).expect("an answer to the replay");
    assert!(refusal.starts_with("SIP/2.0 401"), "a replayed nonce is challenged again: {refusal}");
    assert!(refusal.contains("stale=true"), "{refusal}");
    // The same answer moved to another Request-URI (another room).
    let moved = raw_invite(&target, "vault", from, "moved-1", &format!("{authorization}\r\n"));
    attacker.send_to(moved.as_bytes(), &target).await.unwrap();
    let got = received(&attacker, Duration::from_millis(800)).await;
    let refusal = got.iter().find(|m| !m.starts_with("SIP/2.0 100")).expect("an answer to the moved digest");
    assert!(refusal.starts_with("SIP/2.0 403") && refusal.contains("Request-URI"), "{refusal}");
    assert_eq!(calls(&server, "support").await.len(), 1, "only oscar's call got in");

    // From 127.0.0.7 (the lab trunk): an INVITE answered and never acknowledged is hung up
    // after sip.ack_timeout_s; meanwhile a second call from the same address is over its cap.
    let lab = UdpSocket::bind("127.0.0.7:0").await.unwrap();
    let lab_addr = lab.local_addr().unwrap();
    lab.send_to(raw_invite(&target, "noack", lab_addr, "noack-1", "").as_bytes(), &target).await.unwrap();
    let got = collect(&lab, Duration::from_millis(600)).await;
    assert!(got.iter().any(|(line, _)| line == "SIP/2.0 200 OK"), "{got:?}");
    lab.send_to(raw_invite(&target, "noack", lab_addr, "second-1", "").as_bytes(), &target).await.unwrap();
    let got = received(&lab, Duration::from_millis(600)).await;
    let over = got.iter().find(|m| m.contains("second-1") && m.starts_with("SIP/2.0 503")).expect("503 for the second");
    assert!(over.contains("Retry-After") && over.contains("calls from 127.0.0.7"), "{over}");
    let call = calls(&server, "noack").await.into_iter().next().expect("the unacknowledged call");
    let ended = wait_state(&server, "noack", call["id"].as_str().unwrap(), "ended").await;
    assert_eq!(ended["reason"], "no_ack");
    assert_eq!(states(&ended), ["answered", "ended"]);
    let got = collect(&lab, Duration::from_millis(1500)).await;
    assert!(got.iter().any(|(line, _)| line.starts_with("BYE ")), "Junction hung up with BYE: {got:?}");
    server.wait_for_no_peers().await;
}

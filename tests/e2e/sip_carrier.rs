//! What carriers and desk phones send (issue 21), against sipp scenarios written for each
//! behaviour: late offers (an INVITE without SDP, offerless re-INVITEs for hold and resume),
//! RFC 4028 session timers (422, Junction refreshing as the refresher, the phone's refresh
//! accepted, the BYE when it stops), and early media with PRACK on dial-out; and baresip (a
//! real softphone) over TLS with SDES-SRTP, heard by a WHEP viewer and hearing a WHIP publisher.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::sip::{
    OPEN_DIAL_IN, PCMU_AND_DTMF, calls, heard, pcmu_call, phone_publishers, phone_voice, states, tone, uac_args,
    wait_state, whip_tone,
};
use crate::support::audio::assert_tone;
use crate::support::baresip::{Baresip, Call as BaresipCall, loopback_certificate, tone_wav};
use crate::support::browser::WsClient;
use crate::support::sip::{RtpRecorder, Sipp, dominant_hz, free_port, free_port_pair, play, rms, scenario, tone_power};
use crate::support::webrtc_client::{ClientCodec, ClientOptions, WhipPublisher};
use crate::support::{TestServer, eventually};

/// The open loopback server with short session timers (RFC 4028 says 90 s at least; these
/// keep the tests to seconds).
fn short_timers(session_expires_s: u32, min_session_expires_s: u32) -> String {
    OPEN_DIAL_IN.replace(
        "rtp_port_max = 39999",
        &format!(
            "rtp_port_max = 39999\nsession_expires_s = {session_expires_s}\nmin_session_expires_s = {min_session_expires_s}"
        ),
    )
}

/// Milliseconds between the first time a call record entered `from` and `to`.
fn ms_between(call: &Value, from: &str, to: &str) -> u64 {
    let at = |state: &str| {
        call["events"]
            .as_array()
            .and_then(|events| events.iter().find(|e| e["state"] == state))
            .and_then(|e| e["at_ms"].as_u64())
            .unwrap_or_else(|| panic!("no {state} in {call}"))
    };
    at(to) - at(from)
}

#[tokio::test]
async fn a_late_offer_call_gets_our_offer_in_the_200_and_its_answer_from_the_ack() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();
    // Carol calls the Cisco way (no SDP in the INVITE) and plays 440 Hz; Dave calls with an
    // offer and plays 1000 Hz. Each must hear the other through the room.
    let carol_ears = RtpRecorder::start().await;
    let carol = scenario(
        "uac_late_offer.xml",
        &[
            ("caller", "carol".into()),
            ("rtp_port", carol_ears.port.to_string()),
            ("media", play(&[tone(&dir, 440, 4.0)], 0)),
            ("talk_ms", "4500".into()),
        ],
    );
    let carol = Sipp::start(&dir, "carol", &carol, &uac_args(&server, "late", &[]));
    let dave_ears = RtpRecorder::start().await;
    let dave = pcmu_call("dave", dave_ears.port, play(&[tone(&dir, 1000, 4.0)], 0), 4500);
    let dave = Sipp::start(&dir, "dave", &dave, &uac_args(&server, "late", &[]));
    let mut publishers = phone_publishers(&server, "late", 2).await;
    publishers.sort();
    assert_eq!(publishers, ["sip:carol", "sip:dave"]);
    carol.finish().await.assert_ok("carol (late offer)");
    dave.finish().await.assert_ok("dave");

    let carol_heard: Vec<i16> = heard(&carol_ears).chunks(1600).filter(|c| rms(c) > 0.05).flatten().copied().collect();
    assert!(carol_heard.len() >= 8000, "carol hears dave for a second at least ({} samples)", carol_heard.len());
    assert!((dominant_hz(&carol_heard) - 1000.0).abs() <= 5.0, "carol hears dave's 1000 Hz");
    let dave_heard: Vec<i16> = heard(&dave_ears).chunks(1600).filter(|c| rms(c) > 0.05).flatten().copied().collect();
    assert!(dave_heard.len() >= 8000, "dave hears carol for a second at least ({} samples)", dave_heard.len());
    assert!((dominant_hz(&dave_heard) - 440.0).abs() <= 5.0, "dave hears carol's 440 Hz");

    server.wait_for_no_peers().await;
    let calls = calls(&server, "late").await;
    let carol = calls.iter().find(|c| c["identity"] == "sip:carol").expect("carol's call");
    assert_eq!(carol["codec"], "pcmu", "the codec comes from the ACK's answer: {carol}");
    assert_eq!(carol["reason"], "remote_hangup");
    assert_eq!(states(carol), ["answered", "ended"]);
}

#[tokio::test]
async fn hold_and_resume_by_offerless_reinvites_are_answered_in_the_ack() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();
    let ears = RtpRecorder::start().await;
    let xml = scenario(
        "uac_hold_late.xml",
        &[("caller", "erin".into()), ("rtp_port", ears.port.to_string()), ("hold_ms", "2000".into())],
    );
    Sipp::start(&dir, "erin", &xml, &uac_args(&server, "hold", &[])).finish().await.assert_ok("erin");
    // The ACK's a=sendonly stops Junction's audio for the hold; a=sendrecv brings it back. The
    // RTP clock runs on, so the hold shows as one long timestamp step between 20 ms steps.
    let packets = ears.packets();
    assert!(packets.len() > 100, "{}", packets.len());
    let mut gaps: Vec<u32> = packets.windows(2).map(|w| w[1].timestamp.wrapping_sub(w[0].timestamp)).collect();
    gaps.sort_unstable();
    let longest = *gaps.last().unwrap();
    assert!(longest >= 8000 * 3 / 2, "a hold of about 2 s shows in the timestamps, longest step {longest}");
    assert_eq!(gaps[gaps.len() / 2], 160, "otherwise one packet per 20 ms");
    let last = packets.last().unwrap().at;
    let resumed = packets.iter().filter(|p| last.duration_since(p.at) < Duration::from_millis(1200)).count();
    assert!(resumed >= 40, "audio flows again after the resume ({resumed} packets in its last second)");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn session_timers_are_negotiated_and_refreshed_by_junction() {
    let server = TestServer::start_with(&short_timers(4, 2), &[]).await;
    let dir = server.dir().to_path_buf();
    let ears = RtpRecorder::start().await;
    let xml = scenario(
        "uac_timer_refresh.xml",
        &[
            ("caller", "fay".into()),
            ("rtp_port", ears.port.to_string()),
            ("interval", "4".into()),
            ("min_se", "2".into()),
        ],
    );
    // 422 for 1 s; then 4 s with Junction refreshing: two re-INVITEs, at about 2 s and 4 s.
    Sipp::start(&dir, "fay", &xml, &uac_args(&server, "timers", &[])).finish().await.assert_ok("fay");
    server.wait_for_no_peers().await;
    let calls = calls(&server, "timers").await;
    assert_eq!(calls.len(), 1, "the 422 made no call: {calls:?}");
    assert_eq!(calls[0]["reason"], "remote_hangup", "{}", calls[0]);
    let lasted = ms_between(&calls[0], "answered", "ended");
    assert!(lasted >= 3_500, "the call outlived its first interval half-way mark twice ({lasted} ms)");
}

#[tokio::test]
async fn a_refresh_that_stops_coming_ends_the_call_with_bye_and_says_why() {
    let server = TestServer::start_with(&short_timers(4, 2), &[]).await;
    let dir = server.dir().to_path_buf();
    let ears = RtpRecorder::start().await;
    let xml = scenario(
        "uac_timer_expiry.xml",
        &[
            ("caller", "gus".into()),
            ("rtp_port", ears.port.to_string()),
            ("interval", "3".into()),
            ("refresh_ms", "1500".into()),
            ("bye_within_ms", "4000".into()),
        ],
    );
    Sipp::start(&dir, "gus", &xml, &uac_args(&server, "expiry", &[])).finish().await.assert_ok("gus");
    server.wait_for_no_peers().await;
    let calls = calls(&server, "expiry").await;
    let call = &calls[0];
    assert_eq!(call["reason"], "session_expired", "{call}");
    // Without the UPDATE the session would have ended 2 s after the answer (3 s minus a
    // third); the refresh at 1.5 s moved that to 3.5 s.
    let lasted = ms_between(call, "answered", "ended");
    assert!((3_000..5_500).contains(&lasted), "ended {lasted} ms after the answer");
}

#[tokio::test]
async fn dial_out_hears_early_media_after_prack_while_the_far_end_rings() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();
    // The far end sends a reliable 183 with SDP and plays a 425 Hz ringback for 2 s before
    // it answers; a phone in the room hears it while the call is still ringing.
    let listener_ears = RtpRecorder::start().await;
    let listener = pcmu_call("hank", listener_ears.port, String::new(), 6000);
    let listener = Sipp::start(&dir, "hank", &listener, &uac_args(&server, "early", &[]));
    phone_publishers(&server, "early", 1).await;

    let far_ears = RtpRecorder::start().await;
    let far_port = free_port();
    let far = scenario(
        "uas_early_media.xml",
        &[("rtp_port", far_ears.port.to_string()), ("ringback", play(&[tone(&dir, 425, 2.0)], 0))],
    );
    let far_args: Vec<String> =
        ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", &free_port_pair().to_string(), "-p", &far_port.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let far = Sipp::start(&dir, "ivy", &far, &far_args);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, call) = server
        .call(Method::POST, "/v1/rooms/early/sip/calls", Some(json!({"to": format!("sip:ivy@127.0.0.1:{far_port}")})))
        .await;
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    // While it rings, the far end is already a publisher of the room.
    let ringing = wait_state(&server, "early", &id, "ringing").await;
    assert_eq!(ringing["codec"], "pcmu", "the early answer settled the codec: {ringing}");
    let answered = wait_state(&server, "early", &id, "answered").await;
    assert_eq!(states(&answered), ["dialing", "ringing", "answered"]);
    assert!(ms_between(&answered, "ringing", "answered") >= 1_500, "{answered}");
    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/early/sip/calls/{id}"), None).await;
    assert_eq!(status, 204);
    far.finish().await.assert_ok("ivy (dial-out with early media)");
    listener.finish().await.assert_ok("hank");

    let hank_heard: Vec<i16> =
        heard(&listener_ears).chunks(1600).filter(|c| rms(c) > 0.05).flatten().copied().collect();
    assert!(hank_heard.len() >= 8000, "hank hears the ringback ({} samples)", hank_heard.len());
    assert!((dominant_hz(&hank_heard) - 425.0).abs() <= 5.0, "hank hears the far end's 425 Hz ringback");
    server.wait_for_no_peers().await;
}

/// The open loopback server with SIP over TLS on a certificate for 127.0.0.1 and a trunk that
/// requires SRTP.
fn secure_config(cert: &std::path::Path, key: &std::path::Path) -> String {
    OPEN_DIAL_IN
        .replace(
            "[sip]\n",
            &format!(
                "[sip]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                cert.display(),
                key.display()
            ),
        )
        .replace("name = \"loopback\"", "name = \"loopback\"\nmedia_encryption = \"required\"")
}

#[tokio::test]
async fn a_softphone_over_tls_and_srtp_hears_a_whip_publisher_and_a_whep_viewer_hears_it() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = loopback_certificate(certs.path());
    let server = TestServer::start_with(&secure_config(&cert, &key), &[]).await;
    let dir = server.dir().to_path_buf();
    let tls_addr = server.service("sips").trim_start_matches("sip:").trim_end_matches(";transport=tls").to_owned();

    // A browser-side publisher: 1000 Hz Opus over WHIP.
    let token = server.token("secure", "browser", json!({"publish": true, "subscribe": false})).await;
    let publisher = WhipPublisher::connect(&server.base, "secure", &token, ClientOptions::new(&[ClientCodec::Opus]))
        .await
        .expect("WHIP publisher");
    let talking = tokio::spawn(async move {
        whip_tone(&publisher, 1000.0, 9).await;
        publisher
    });

    // baresip calls over TLS with SRTP mandatory and plays 440 Hz.
    let wav = tone_wav(&dir, 440.0, 8000, 10.0);
    let phone = Baresip::call(
        &dir,
        "alice",
        BaresipCall {
            account: "<sip:alice@127.0.0.1;transport=tls>;regint=0;mediaenc=srtp-mand;audio_codecs=PCMU",
            dial: &format!("sip:secure@{tls_addr};transport=tls"),
            ca: &cert,
            play: &wav,
            seconds: 8,
        },
    );

    // A WHEP viewer of the phone alone decodes its Opus track: the phone's 440 Hz, decrypted.
    let (viewer, pcm) = phone_voice(&server, "secure", "sip:alice").await;
    assert_tone(&pcm, 1, 48_000, 440.0, 2.0);

    // The phone decrypted and decoded the WHIP publisher's 1000 Hz (and not its own 440 Hz).
    let finished = phone.finish().await;
    assert!(finished.log.contains("SRTP is Enabled"), "baresip did not use SRTP:\n{}", finished.log);
    let heard = finished.heard();
    assert!(heard.len() >= 5 * 8000, "the phone heard {} samples", heard.len());
    let middle = &heard[2 * 8000..5 * 8000];
    assert!((dominant_hz(middle) - 1000.0).abs() <= 5.0, "the phone hears the WHIP publisher");
    assert!(tone_power(middle, 1000.0, 8000.0) > 50.0 * tone_power(middle, 440.0, 8000.0), "and not itself");

    let calls = calls(&server, "secure").await;
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0]["codec"].as_str(), calls[0]["media_encryption"].as_str()), (Some("pcmu"), Some("srtp")));
    assert_eq!(calls[0]["transport"], "tls", "{}", calls[0]);

    // The trunk requires SRTP: a plain RTP/AVP offer over UDP is refused with 488.
    let refused = scenario(
        "uac_refused.xml",
        &[
            ("caller", "mallory".into()),
            ("rtp_port", "40000".into()),
            ("formats", PCMU_AND_DTMF.0.into()),
            ("rtpmaps", PCMU_AND_DTMF.1.into()),
            ("code", "488".into()),
        ],
    );
    Sipp::start(&dir, "plain", &refused, &uac_args(&server, "secure", &[])).finish().await.assert_ok("488");

    viewer.close().await;
    talking.await.expect("publisher task").close().await;
    server.wait_for_no_peers().await;
}

/// A WHIP publisher in `room` sending a `freq` Hz tone for `seconds`.
async fn whip_voice(
    server: &TestServer,
    room: &str,
    identity: &str,
    freq: f64,
    seconds: u32,
) -> tokio::task::JoinHandle<()> {
    let token = server.token(room, identity, json!({"publish": true, "subscribe": false})).await;
    let publisher = WhipPublisher::connect(&server.base, room, &token, ClientOptions::new(&[ClientCodec::Opus]))
        .await
        .expect("WHIP publisher");
    tokio::spawn(async move {
        whip_tone(&publisher, freq, seconds).await;
        publisher.close().await;
    })
}

#[tokio::test]
async fn a_refer_from_the_phone_moves_its_call_to_the_room_the_dispatch_rules_give() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();
    // 600 Hz in the lobby, 1000 Hz in sales; the phone starts in the lobby and asks (REFER)
    // to go to `sales`, which the callee rule routes to room sales.
    let lobby = whip_voice(&server, "lobby", "host", 600.0, 9).await;
    let sales = whip_voice(&server, "sales", "agent", 1000.0, 9).await;
    let ears = RtpRecorder::start().await;
    let xml = scenario(
        "uac_refer.xml",
        &[
            ("caller", "carol".into()),
            ("rtp_port", ears.port.to_string()),
            ("formats", PCMU_AND_DTMF.0.into()),
            ("rtpmaps", PCMU_AND_DTMF.1.into()),
            ("media", play(&[tone(&dir, 440, 7.0)], 0)),
            ("before_ms", "1500".into()),
            ("refer_to", "sip:sales@127.0.0.1".into()),
            ("final", "200 OK".into()),
            ("talk_ms", "4500".into()),
        ],
    );
    let phone = Sipp::start(&dir, "carol", &xml, &uac_args(&server, "lobby", &[]));
    eventually("the phone in sales", Duration::from_secs(10), || async {
        let (_, body) = server.call(Method::GET, "/v1/rooms/sales/peers", None).await;
        body["peers"].as_array()?.iter().any(|p| p["identity"] == "sip:carol").then_some(())
    })
    .await;
    let (_, lobby_peers) = server.call(Method::GET, "/v1/rooms/lobby/peers", None).await;
    assert!(
        !lobby_peers["peers"].as_array().unwrap().iter().any(|p| p["identity"] == "sip:carol"),
        "the phone left the lobby: {lobby_peers}"
    );
    phone.finish().await.assert_ok("carol (REFER)");

    // Before the REFER the phone heard the lobby; from a second after it, sales alone.
    let pcm = ears.pcm(0);
    let (before, after) = (&pcm[8_000..12_000], &pcm[24_000..40_000]);
    assert!((dominant_hz(before) - 600.0).abs() <= 5.0, "the lobby first");
    assert!((dominant_hz(after) - 1000.0).abs() <= 5.0, "then sales");
    assert!(tone_power(after, 1000.0, 8000.0) > 50.0 * tone_power(after, 600.0, 8000.0), "and not the lobby");
    let calls = calls(&server, "sales").await;
    assert_eq!(calls.len(), 1, "the call's record moved with it");
    assert_eq!(calls[0]["transfers"][0]["to"], "sales", "{}", calls[0]);
    assert_eq!(calls[0]["transfers"][0]["status"], 200);
    assert_eq!(calls[0]["reason"], "remote_hangup");
    lobby.await.expect("lobby publisher");
    sales.await.expect("sales publisher");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn the_api_sends_digits_moves_a_call_and_transfers_the_phone_by_refer() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();
    let ears = RtpRecorder::start().await;
    let target = "sip:+15550100@192.0.2.1";
    let xml = scenario(
        "uac_referred.xml",
        &[
            ("caller", "dave".into()),
            ("rtp_port", ears.port.to_string()),
            ("formats", PCMU_AND_DTMF.0.into()),
            ("rtpmaps", PCMU_AND_DTMF.1.into()),
            ("refer_to", "sip:\\+15550100@192.0.2.1".into()),
        ],
    );
    let phone = Sipp::start(&dir, "dave", &xml, &uac_args(&server, "desk", &[]));
    phone_publishers(&server, "desk", 1).await;
    let id = calls(&server, "desk").await[0]["id"].as_str().unwrap().to_owned();
    let path = |room: &str, what: &str| format!("/v1/rooms/{room}/sip/calls/{id}/{what}");

    // Digits to the phone: RFC 4733 events (it offered telephone-event 101), in order.
    let (status, body) = server.call(Method::POST, &path("desk", "dtmf"), Some(json!({"digits": "19#"}))).await;
    assert_eq!(status, 202, "{body}");
    for (bad, why) in
        [(json!({"digits": "12x"}), "not a digit"), (json!({"digits": ""}), "empty"), (json!({}), "missing")]
    {
        let (status, body) = server.call(Method::POST, &path("desk", "dtmf"), Some(bad)).await;
        assert!(status == 422 || status == 400, "{why}: {status} {body}");
    }
    let events = eventually("three digits at the phone", Duration::from_secs(5), || async {
        let mut events: Vec<(u32, u8)> =
            ears.packets().iter().filter(|p| p.payload_type == 101).map(|p| (p.timestamp, p.payload[0])).collect();
        events.dedup();
        (events.len() == 3).then_some(events)
    })
    .await;
    assert_eq!(events.iter().map(|e| e.1).collect::<Vec<_>>(), [1, 9, 11], "1, 9, #");

    // Move the call to another room, then ask the phone to call someone else.
    let (status, moved) = server.call(Method::POST, &path("desk", "transfer"), Some(json!({"room": "desk2"}))).await;
    assert_eq!((status, moved["room"].as_str()), (200, Some("desk2")), "{moved}");
    phone_publishers(&server, "desk2", 1).await;

    // A room client addresses digits to the phone as `sip.dtmf` data.
    let token = server.token("desk2", "ivr", json!({"publish": false, "subscribe": false})).await;
    let (mut ivr, _) = WsClient::join(&server, &token).await;
    ivr.send(json!({"type": "data", "topic": "sip.dtmf", "to": ["sip:dave"], "payload": "7*", "id": 1})).await;
    assert_eq!(ivr.expect("ok").await["delivered"], 1);
    eventually("two more digits at the phone", Duration::from_secs(5), || async {
        let mut events: Vec<(u32, u8)> =
            ears.packets().iter().filter(|p| p.payload_type == 101).map(|p| (p.timestamp, p.payload[0])).collect();
        events.dedup();
        (events.iter().map(|e| e.1).collect::<Vec<_>>() == [1, 9, 11, 7, 10]).then_some(())
    })
    .await;
    ivr.close(1000).await;

    for (bad, code) in [(json!({}), 422), (json!({"room": "a", "to": target}), 422), (json!({"to": "mailto:x"}), 422)] {
        let (status, body) = server.call(Method::POST, &path("desk2", "transfer"), Some(bad)).await;
        assert_eq!(status, code, "{body}");
    }
    let (status, _) = server.call(Method::POST, &path("desk", "transfer"), Some(json!({"room": "x"}))).await;
    assert_eq!(status, 404, "the call is no longer in desk");
    let (status, referred) = server.call(Method::POST, &path("desk2", "transfer"), Some(json!({"to": target}))).await;
    assert_eq!(status, 202, "{referred}");
    let ended = wait_state(&server, "desk2", &id, "ended").await;
    assert_eq!(ended["reason"], "transferred", "{ended}");
    let transfers: Vec<(String, u64)> = ended["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["to"].as_str().unwrap().to_owned(), t["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(transfers, [("desk2".to_owned(), 200), (target.to_owned(), 200)]);
    phone.finish().await.assert_ok("dave (referred)");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn a_trunk_registers_with_its_provider_refreshes_recovers_and_unregisters() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();
    let registrar_port = free_port();
    let xml = scenario(
        "uas_registrar.xml",
        &[
            ("user", "junction-did".into()),
            ("password", "s3cret".into()),
            ("expires", "120".into()),
            ("short", "2".into()),
            ("long", "60".into()),
        ],
    );
    let args: Vec<String> =
        ["-i", "127.0.0.1", "-p", &registrar_port.to_string()].iter().map(|s| s.to_string()).collect();
    let registrar = Sipp::start(&dir, "registrar", &xml, &args);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let trunk = json!({
        "name": "did",
        "outbound": {
            "address": format!("127.0.0.1:{registrar_port}"),
            "username": "junction-did",
            "password": "s3cret",
            "destinations": ["+"],
            "caller_ids": ["+15550100"],
            "register": true,
            "register_expires_s": 120,
        },
    });
    let (status, created) = server.call(Method::POST, "/v1/sip/trunks", Some(trunk.clone())).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // Challenged, registered for 2 s, the refresh refused (503), the retry granted 60 s.
    let registered = eventually("the trunk registered for 60 s", Duration::from_secs(20), || async {
        let (_, trunk) = server.call(Method::GET, &format!("/v1/sip/trunks/{id}"), None).await;
        (trunk["registration"]["state"] == "registered" && trunk["registration"]["expires_s"] == 60).then_some(trunk)
    })
    .await;
    assert!(registered["outbound"].get("password").is_none(), "{registered}");
    let mut bad = trunk.clone();
    bad["outbound"]["register_expires_s"] = json!(5);
    let (status, body) = server.call(Method::POST, "/v1/sip/trunks", Some(bad)).await;
    assert_eq!(status, 400, "{body}");

    // Deleting the trunk unregisters it (Expires: 0).
    let (status, _) = server.call(Method::DELETE, &format!("/v1/sip/trunks/{id}"), None).await;
    assert_eq!(status, 204);
    registrar.finish().await.assert_ok("registrar");
}

#[tokio::test]
async fn digits_go_as_sip_info_to_a_phone_without_telephone_event() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();
    let ears = RtpRecorder::start().await;
    let xml = scenario(
        "uac_info_digits.xml",
        &[
            ("caller", "erin".into()),
            ("rtp_port", ears.port.to_string()),
            ("formats", "0".into()),
            ("rtpmaps", "      a=rtpmap:0 PCMU/8000".into()),
            ("first", "5".into()),
            ("second", "#".into()),
        ],
    );
    let phone = Sipp::start(&dir, "erin", &xml, &uac_args(&server, "desk", &[]));
    phone_publishers(&server, "desk", 1).await;
    let id = calls(&server, "desk").await[0]["id"].as_str().unwrap().to_owned();
    let (status, body) =
        server.call(Method::POST, &format!("/v1/rooms/desk/sip/calls/{id}/dtmf"), Some(json!({"digits": "5#"}))).await;
    assert_eq!(status, 202, "{body}");
    phone.finish().await.assert_ok("erin (INFO digits)");
    assert!(ears.packets().iter().all(|p| p.payload_type == 0), "no RFC 4733 events to a phone that offered none");
    server.wait_for_no_peers().await;
}

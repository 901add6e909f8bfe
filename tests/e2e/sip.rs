//! SIP end to end with sipp (Debian's sip-tester) as the phones: dial-in with a tone that the
//! other phones hear through the mixer (and never their own), with an RTMP publisher (ffmpeg)
//! as a voice that is not a phone, a WHEP viewer (the `webrtc` crate) decoding a phone's Opus and
//! a WHIP publisher a phone hears, PCMA, PCMU and Opus phones in one mix, dial-out with ringing, digest
//! challenges and CANCEL, PINs over RFC 4733 and SIP INFO, hold, RTP timeout, every refusal
//! code, retransmitted INVITEs, malformed datagrams — and live counts back to zero after each.
//!
//! A phone is sipp (signalling, RTP played from a pcap the test writes) plus the test's own RTP
//! recorder, which the phone's SDP names as its audio address (sipp 3.6 plays RTP but records
//! none); the test decodes what Junction sent there and looks for tones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::audio::{assert_tone, opus_to_pcm};
use crate::support::sip::{
    G711, RtpRecorder, SIPP_PCAPS, Sipp, dominant_hz, free_port, free_port_pair, play, rms, scenario, tone_power,
    write_g711_tone_pcap, write_opus_tone_pcap, write_tone_pcap,
};
use crate::support::webrtc_client::{ClientCodec, ClientOptions, MediaKind, WhepViewer, WhipPublisher};
use crate::support::{TestServer, eventually};

/// A loopback trunk and one rule: dial `sip:<room>@junction` to join `<room>`; dial-out may
/// go straight to phones on loopback.
pub(crate) const OPEN_DIAL_IN: &str = r#"
[sip]
rtp_port_min = 30000
rtp_port_max = 39999
allow_direct_dial = true
direct_dial_hosts = ["127.0.0.1"]
[[sip.trunks]]
name = "loopback"
allowed_addresses = ["127.0.0.0/8"]
[[sip.dispatch_rules]]
kind = "callee"
"#;

pub(crate) const PCMU_AND_DTMF: (&str, &str) =
    ("0 101", "      a=rtpmap:0 PCMU/8000\n      a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-15");

/// A server whose loopback trunk sends every call to `room`, behind `pin`.
async fn pin_room_server(room: &str, pin: &str) -> TestServer {
    let rule = format!("kind = \"direct\"\nroom = \"{room}\"\npin = \"{pin}\"");
    TestServer::start_with(&OPEN_DIAL_IN.replace(r#"kind = "callee""#, &rule), &[]).await
}

/// The scenario of a PCMU phone (RFC 4733 digits offered too) that calls, plays `media` with its
/// RTP going to `rtp_port`, and hangs up after `talk_ms`.
pub(crate) fn pcmu_call(caller: &str, rtp_port: u16, media: String, talk_ms: u32) -> String {
    scenario(
        "uac_call.xml",
        &[
            ("caller", caller.into()),
            ("rtp_port", rtp_port.to_string()),
            ("formats", PCMU_AND_DTMF.0.into()),
            ("rtpmaps", PCMU_AND_DTMF.1.into()),
            ("media", media),
            ("talk_ms", talk_ms.to_string()),
        ],
    )
}

pub(crate) fn sip_addr(server: &TestServer) -> String {
    server.service("sip").trim_start_matches("sip:").to_owned()
}

pub(crate) fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// Common sipp arguments for a phone calling `service` on the server.
pub(crate) fn uac_args(server: &TestServer, service: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        sip_addr(server),
        "-s".into(),
        service.into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-mi".into(),
        "127.0.0.1".into(),
        "-mp".into(),
        free_port_pair().to_string(),
        "-p".into(),
        free_port().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A tone pcap in the test's directory.
pub(crate) fn tone(dir: &Path, freq: u32, seconds: f64) -> PathBuf {
    let path = dir.join(format!("tone_{freq}.pcap"));
    if !path.exists() {
        write_tone_pcap(&path, f64::from(freq), seconds);
    }
    path
}

fn dtmf(key: &str) -> PathBuf {
    Path::new(SIPP_PCAPS).join(format!("dtmf_2833_{key}.pcap"))
}

/// The phone calls of a room, as the API reports them.
pub(crate) async fn calls(server: &TestServer, room: &str) -> Vec<Value> {
    let (status, body) = server.call(Method::GET, &format!("/v1/rooms/{room}/sip/calls"), None).await;
    assert_eq!(status, 200, "{body}");
    body["calls"].as_array().cloned().unwrap_or_default()
}

pub(crate) async fn call_state(server: &TestServer, room: &str, id: &str) -> Value {
    let (status, body) = server.call(Method::GET, &format!("/v1/rooms/{room}/sip/calls/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

pub(crate) async fn wait_state(server: &TestServer, room: &str, id: &str, state: &str) -> Value {
    eventually(&format!("call {id} {state}"), Duration::from_secs(20), || async {
        let call = call_state(server, room, id).await;
        (call["state"] == state).then_some(call)
    })
    .await
}

pub(crate) fn states(call: &Value) -> Vec<String> {
    call["events"].as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap().to_owned()).collect()
}

/// The identities in a room with an audio track, once `count` of them publish.
pub(crate) async fn phone_publishers(server: &TestServer, room: &str, count: usize) -> Vec<String> {
    eventually(&format!("{count} phones publishing audio in {room}"), Duration::from_secs(15), || async {
        let (status, body) = server.call(Method::GET, &format!("/v1/rooms/{room}"), None).await;
        if status != 200 {
            return None;
        }
        let names: Vec<String> = body["room"]["peers"]
            .as_array()?
            .iter()
            .filter(|p| p["tracks"].as_array().is_some_and(|t| t.iter().any(|t| t["kind"] == "audio")))
            .map(|p| p["identity"].as_str().unwrap_or_default().to_owned())
            .collect();
        (names.len() == count).then_some(names)
    })
    .await
}

/// The audio a phone heard between its 60th and 180th packet (1.2 s to 3.6 s into the call).
pub(crate) fn heard(recorder: &RtpRecorder) -> Vec<i16> {
    let pcm = recorder.pcm(60);
    pcm[..pcm.len().min(120 * 160)].to_vec()
}

/// ffmpeg publishing an audio-only AAC tone over RTMP with an ingress key: a room peer that is
/// not a phone.
async fn rtmp_tone(server: &TestServer, room: &str, identity: &str, freq: u32, seconds: u32) -> tokio::process::Child {
    let body = json!({"kind": "rtmp", "room": room, "identity": identity});
    let (status, ingress) = server.call(Method::POST, "/v1/ingress", Some(body)).await;
    assert_eq!(status, 201, "{ingress}");
    let url = format!("{}/{}", ingress["url"].as_str().unwrap(), ingress["stream_key"].as_str().unwrap());
    tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi"])
        .args(["-i", &format!("sine=frequency={freq}:sample_rate=48000")])
        .args(["-t", &seconds.to_string(), "-c:a", "aac", "-f", "flv", &url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg")
}

#[tokio::test]
async fn phones_hear_each_other_and_the_room_through_the_mixer_and_never_themselves() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();
    // A third voice that is not a phone: AAC over RTMP, reaching the mixer as Opus through the
    // engine's shared AAC->Opus variant.
    let radio_hz = 1700u32;
    let mut radio = rtmp_tone(&server, "standup", "radio", radio_hz, 9).await;
    let voices = [("alice", 440u32), ("bob", 1000)];
    let mut phones = Vec::new();
    for (caller, freq) in voices {
        let recorder = RtpRecorder::start().await;
        let xml = pcmu_call(caller, recorder.port, play(&[tone(&dir, freq, 4.0)], 0), 4500);
        phones.push((caller, freq, Sipp::start(&dir, caller, &xml, &uac_args(&server, "standup", &[])), recorder));
    }

    // Each phone publishes its voice as an Opus track of its own identity.
    let mut publishers = phone_publishers(&server, "standup", 2).await;
    publishers.sort();
    assert_eq!(publishers, ["sip:alice", "sip:bob"]);

    let mut recorders = Vec::new();
    for (caller, freq, sipp, recorder) in phones {
        sipp.finish().await.assert_ok(caller);
        recorders.push((caller, freq, recorder));
    }
    for (caller, own, recorder) in &recorders {
        let audio = heard(recorder);
        assert!(audio.len() >= 100 * 160, "{caller} received {} samples", audio.len());
        let own_power = tone_power(&audio, f64::from(*own), 8000.0);
        let others = recorders.iter().filter(|(c, _, _)| c != caller).map(|(c, f, _)| (c.to_string(), *f));
        for (other, freq) in others.chain([("radio".to_string(), radio_hz)]) {
            let power = tone_power(&audio, f64::from(freq), 8000.0);
            assert!(power > 1e-4, "{caller} should hear {other}'s {freq} Hz (power {power:e})");
            assert!(power > 50.0 * own_power, "{caller} hears itself: own {own_power:e} vs {other} {power:e}");
        }
    }

    let _ = radio.wait().await;
    server.wait_for_no_peers().await;
    let calls = calls(&server, "standup").await;
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(call["state"], "ended", "{call}");
        assert_eq!(call["reason"], "remote_hangup");
        assert_eq!(call["codec"], "pcmu");
        assert_eq!(states(call), ["answered", "ended"]);
    }
}

/// Two seconds of what `identity` (a phone, once it is in `room`) publishes, as a WHEP viewer of
/// that peer alone decodes it (48 kHz mono); the viewer is returned for the caller to close.
pub(crate) async fn phone_voice(server: &TestServer, room: &str, identity: &str) -> (WhepViewer, Vec<i16>) {
    eventually("the phone in the room", Duration::from_secs(10), || async {
        let (_, body) = server.call(Method::GET, &format!("/v1/rooms/{room}/peers"), None).await;
        body["peers"].as_array()?.iter().any(|p| p["identity"] == identity).then_some(())
    })
    .await;
    let viewer_token = server.token(room, "viewer", json!({"publish": false, "subscribe": true})).await;
    let query = format!("?identity={}", identity.replace(':', "%3A"));
    let mut viewer =
        WhepViewer::connect(&server.base, room, &viewer_token, &query, ClientOptions::new(&[ClientCodec::Opus]))
            .await
            .expect("WHEP viewer");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    viewer.discard_received();
    let mut packets = Vec::new();
    while packets.len() < 100 {
        match viewer.next_frame_of(MediaKind::Audio, Duration::from_secs(5)).await {
            Some(frame) => packets.push(frame.payload),
            None => break,
        }
    }
    assert_eq!(packets.len(), 100, "two seconds of the phone's Opus");
    (viewer, opus_to_pcm(&packets, 1))
}

/// Sends a `freq` Hz Opus tone (20 ms packets, libopus) over WHIP for `seconds`, in real time.
pub(crate) async fn whip_tone(publisher: &WhipPublisher, freq: f64, seconds: u32) {
    let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Audio).expect("opus");
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for n in 0..seconds as usize * 50 {
        ticker.tick().await;
        let pcm: Vec<i16> = (0..960)
            .map(|i| (8_000.0 * (std::f64::consts::TAU * freq * (n * 960 + i) as f64 / 48_000.0).sin()) as i16)
            .collect();
        let packet = encoder.encode_vec(&pcm, 4_000).expect("encode");
        publisher.send_audio(bytes::Bytes::from(packet), Duration::from_millis(20)).await.expect("send audio");
    }
}

#[tokio::test]
async fn a_whep_viewer_hears_the_phone_and_the_phone_hears_a_whip_publisher() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();

    // A browser-side publisher: a 1000 Hz Opus tone over WHIP (the webrtc crate, not str0m).
    let token = server.token("standup", "browser", json!({"publish": true, "subscribe": false})).await;
    let publisher = WhipPublisher::connect(&server.base, "standup", &token, ClientOptions::new(&[ClientCodec::Opus]))
        .await
        .expect("WHIP publisher");
    let talking = tokio::spawn(async move {
        whip_tone(&publisher, 1000.0, 7).await;
        publisher
    });

    // The phone: 440 Hz from sipp, and what it hears in the recorder.
    let ears = RtpRecorder::start().await;
    let xml = pcmu_call("alice", ears.port, play(&[tone(&dir, 440, 5.0)], 0), 5500);
    let phone = Sipp::start(&dir, "alice", &xml, &uac_args(&server, "standup", &[]));

    // A WHEP viewer of the phone alone decodes its Opus track and finds the phone's tone.
    let (viewer, pcm) = phone_voice(&server, "standup", "sip:alice").await;
    assert_tone(&pcm, 1, 48_000, 440.0, 2.0);
    // The phone's track is its own voice, not the mix it hears.
    assert!(
        tone_power(&pcm, 440.0, 48_000.0) > 50.0 * tone_power(&pcm, 1000.0, 48_000.0),
        "the phone's track carries the WHIP publisher"
    );

    phone.finish().await.assert_ok("alice");
    // The phone heard the WHIP publisher's 1000 Hz through the mixer, and not its own 440 Hz.
    let heard = heard(&ears);
    assert!((dominant_hz(&heard) - 1000.0).abs() <= 5.0, "the phone hears the WHIP publisher");
    assert!(tone_power(&heard, 1000.0, 8000.0) > 50.0 * tone_power(&heard, 440.0, 8000.0), "and not itself");

    viewer.close().await;
    talking.await.expect("publisher task").close().await;
    server.wait_for_no_peers().await;
    let calls = calls(&server, "standup").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["codec"], "pcmu", "{}", calls[0]);
    assert_eq!(calls[0]["reason"], "remote_hangup", "{}", calls[0]);
}

#[tokio::test]
async fn pcma_pcmu_and_opus_phones_hear_each_other_and_a_missing_room_is_404() {
    let server = TestServer::start_with(&format!("[rooms]\nauto_create = false\n{OPEN_DIAL_IN}"), &[]).await;
    let dir = server.dir().to_path_buf();

    // 404: the rule routes `sip:nowhere@...` to room `nowhere`, which does not exist.
    let xml = scenario(
        "uac_refused.xml",
        &[
            ("caller", "ivan".into()),
            ("rtp_port", "40000".into()),
            ("formats", PCMU_AND_DTMF.0.into()),
            ("rtpmaps", PCMU_AND_DTMF.1.into()),
            ("code", "404".into()),
        ],
    );
    Sipp::start(&dir, "r404", &xml, &uac_args(&server, "nowhere", &[])).finish().await.assert_ok("404");
    assert_eq!(server.call(Method::GET, "/v1/rooms/nowhere", None).await.0, 404, "no room was made");

    let (status, _) = server.call(Method::POST, "/v1/rooms", Some(json!({"name": "standup"}))).await;
    assert_eq!(status, 201);
    let pcma = ("8 101", "      a=rtpmap:8 PCMA/8000\n      a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-15");
    let opus = ("96", "      a=rtpmap:96 opus/48000/2");
    let alaw_tone = dir.join("tone_440_pcma.pcap");
    write_g711_tone_pcap(&alaw_tone, 440.0, 4.0, G711::ALaw);
    let opus_tone = dir.join("tone_1700_opus.pcap");
    write_opus_tone_pcap(&opus_tone, 1700.0, 4.0, 96);
    let voices = [
        ("alice", "pcma", 440.0, pcma, alaw_tone),
        ("bob", "pcmu", 1000.0, PCMU_AND_DTMF, tone(&dir, 1000, 4.0)),
        ("olive", "opus", 1700.0, opus, opus_tone),
    ];
    let mut phones = Vec::new();
    for (caller, codec, freq, formats, pcap) in voices.clone() {
        let recorder = RtpRecorder::start().await;
        let xml = scenario(
            "uac_call.xml",
            &[
                ("caller", caller.into()),
                ("rtp_port", recorder.port.to_string()),
                ("formats", formats.0.into()),
                ("rtpmaps", formats.1.into()),
                ("media", play(&[pcap], 0)),
                ("talk_ms", "4500".into()),
            ],
        );
        phones.push((
            caller,
            codec,
            freq,
            Sipp::start(&dir, caller, &xml, &uac_args(&server, "standup", &[])),
            recorder,
        ));
    }
    for (caller, codec, own, sipp, recorder) in phones {
        sipp.finish().await.assert_ok(caller);
        // What the phone got is in its own codec, on its own payload type.
        let (payload_type, rate) = match codec {
            "pcma" => (8, 8000.0),
            "pcmu" => (0, 8000.0),
            _ => (96, 48_000.0),
        };
        assert!(recorder.packets().iter().all(|p| p.payload_type == payload_type), "{caller} gets only {codec}");
        let audio = match codec {
            "pcma" => recorder.pcm_of(G711::ALaw, 60),
            "pcmu" => recorder.pcm_of(G711::MuLaw, 60),
            _ => opus_to_pcm(&recorder.opus_payloads(96, 60), 1),
        };
        let per_packet = (rate / 50.0) as usize;
        let audio = &audio[..audio.len().min(120 * per_packet)];
        assert!(audio.len() >= 100 * per_packet, "{caller} received {} samples", audio.len());
        let own_power = tone_power(audio, own, rate);
        for (other, _, freq, _, _) in voices.iter().filter(|v| v.0 != caller) {
            let power = tone_power(audio, *freq, rate);
            if power <= 1e-4 {
                eprintln!("{caller} does not hear {other}; junction's log:\n{}", server.logs());
            }
            assert!(power > 1e-4, "{caller} ({codec}) should hear {other}'s {freq} Hz (power {power:e})");
            assert!(power > 50.0 * own_power, "{caller} hears itself: own {own_power:e} vs {other} {power:e}");
        }
    }

    server.wait_for_no_peers().await;
    let mut codecs: Vec<String> =
        calls(&server, "standup").await.iter().map(|c| c["codec"].as_str().unwrap_or_default().to_owned()).collect();
    codecs.sort();
    assert_eq!(codecs, ["opus", "pcma", "pcmu"]);
}

#[tokio::test]
async fn dial_out_rings_answers_carries_audio_both_ways_and_hangs_up() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();

    // Alice dials in and plays 440 Hz; the room then calls Bob, who plays 1000 Hz.
    let alice_ears = RtpRecorder::start().await;
    let alice = pcmu_call("alice", alice_ears.port, play(&[tone(&dir, 440, 6.0)], 0), 6500);
    let alice = Sipp::start(&dir, "alice", &alice, &uac_args(&server, "standup", &[]));
    phone_publishers(&server, "standup", 1).await;

    let bob_ears = RtpRecorder::start().await;
    let bob_port = free_port();
    let bob = scenario(
        "uas_answer.xml",
        &[
            ("rtp_port", bob_ears.port.to_string()),
            ("ring_ms", "800".into()),
            ("media", play(&[tone(&dir, 1000, 6.0)], 0)),
        ],
    );
    let bob_args: Vec<String> =
        ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", &free_port_pair().to_string(), "-p", &bob_port.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let bob = Sipp::start(&dir, "bob", &bob, &bob_args);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, call) = server
        .call(Method::POST, "/v1/rooms/standup/sip/calls", Some(json!({"to": format!("sip:bob@127.0.0.1:{bob_port}")})))
        .await;
    assert_eq!(status, 201, "{call}");
    assert_eq!(call["state"], "dialing");
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["identity"], "sip:bob");
    let id = call["id"].as_str().unwrap().to_owned();
    let answered = wait_state(&server, "standup", &id, "answered").await;
    assert_eq!(states(&answered), ["dialing", "ringing", "answered"]);
    assert_eq!(answered["codec"], "pcmu");

    // Let both talk, then hang up through the API.
    eventually("bob hears the room", Duration::from_secs(10), || async { (bob_ears.count() > 200).then_some(()) })
        .await;
    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/standup/sip/calls/{id}"), None).await;
    assert_eq!(status, 204);
    bob.finish().await.assert_ok("bob (dial-out)");
    let ended = wait_state(&server, "standup", &id, "ended").await;
    assert_eq!(ended["reason"], "api_hangup");
    alice.finish().await.assert_ok("alice");

    let bob_heard = heard(&bob_ears);
    assert!((dominant_hz(&bob_heard) - 440.0).abs() <= 5.0, "bob hears alice's 440 Hz");
    let alice_heard = alice_ears.pcm(0);
    let loud: Vec<i16> = alice_heard.chunks(1600).filter(|c| rms(c) > 0.05).flatten().copied().collect();
    assert!(loud.len() >= 8000, "alice hears bob for at least a second ({} samples)", loud.len());
    assert!((dominant_hz(&loud) - 1000.0).abs() <= 5.0, "alice hears bob's 1000 Hz");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn dial_out_answers_the_far_ends_digest_challenge() {
    // The far end is the provider of an outbound trunk that challenges every INVITE.
    let port = free_port();
    let trunk = format!(
        r#"
[[sip.trunks]]
id = "carrier"
name = "carrier"
[sip.trunks.outbound]
address = "127.0.0.1:{port}"
username = "junction"
password = "s3cret-pw"
destinations = ["+1555"]
caller_ids = ["board"]
"#
    );
    let server = TestServer::start_with(&format!("{OPEN_DIAL_IN}{trunk}"), &[]).await;
    let dir = server.dir().to_path_buf();
    let (status, _) = server.call(Method::POST, "/v1/rooms", Some(json!({"name": "board"}))).await;
    assert_eq!(status, 201);

    let ears = RtpRecorder::start().await;
    let xml = scenario(
        "uas_auth.xml",
        &[("rtp_port", ears.port.to_string()), ("password", "s3cret-pw".into()), ("nonce", "4f2e8b0c5a1d".into())],
    );
    let args: Vec<String> =
        ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", &free_port_pair().to_string(), "-p", &port.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let phone = Sipp::start(&dir, "carrier", &xml, &args);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = json!({"to": "+15550100", "trunk": "carrier", "from": "sip:board@junction"});
    let (status, call) = server.call(Method::POST, "/v1/rooms/board/sip/calls", Some(body)).await;
    assert_eq!(status, 201, "{call}");
    assert_eq!(call["trunk"], "carrier");
    assert_eq!(call["to"], format!("sip:+15550100@127.0.0.1:{port}"));
    let id = call["id"].as_str().unwrap().to_owned();
    let answered = wait_state(&server, "board", &id, "answered").await;
    assert_eq!(answered["identity"], "sip:+15550100");
    eventually("RTP to the phone", Duration::from_secs(5), || async { (ears.count() > 10).then_some(()) }).await;
    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/board/sip/calls/{id}"), None).await;
    assert_eq!(status, 204);
    phone.finish().await.assert_ok("the challenging phone");
    assert!(phone_saw_authorization(&dir, "carrier"), "the second INVITE carried Authorization");
    server.wait_for_no_peers().await;
}

fn phone_saw_authorization(dir: &Path, name: &str) -> bool {
    std::fs::read_to_string(dir.join(format!("{name}_messages.log")))
        .unwrap_or_default()
        .contains("Authorization: Digest username=\"junction\"")
}

#[tokio::test]
async fn dial_out_cancelled_while_ringing_and_refused_calls_fail_with_their_status() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();
    let (status, _) = server.call(Method::POST, "/v1/rooms", Some(json!({"name": "lobby"}))).await;
    assert_eq!(status, 201);
    let uas_args = |port: u16| -> Vec<String> {
        ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", &free_port_pair().to_string(), "-p", &port.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };

    // CANCEL before answer.
    let port = free_port();
    let ringing = Sipp::start(&dir, "ringing", &scenario("uas_cancel.xml", &[]), &uas_args(port));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, call) = server
        .call(Method::POST, "/v1/rooms/lobby/sip/calls", Some(json!({"to": format!("sip:dave@127.0.0.1:{port}")})))
        .await;
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    wait_state(&server, "lobby", &id, "ringing").await;
    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/lobby/sip/calls/{id}"), None).await;
    assert_eq!(status, 204);
    ringing.finish().await.assert_ok("the phone that got CANCEL");
    let ended = call_state(&server, "lobby", &id).await;
    assert_eq!((ended["state"].as_str(), ended["reason"].as_str()), (Some("ended"), Some("api_hangup")));
    let (status, body) = server.call(Method::DELETE, &format!("/v1/rooms/lobby/sip/calls/{id}"), None).await;
    assert_eq!((status, code(&body)), (409, "call_over"));

    // Busy here, busy everywhere, decline: each failure keeps the far end's status.
    for (code_, reason) in [(486u16, "Busy Here"), (600, "Busy Everywhere"), (480, "Temporarily Unavailable")] {
        let port = free_port();
        let xml = scenario("uas_reject.xml", &[("code", code_.to_string()), ("reason", reason.into())]);
        let phone = Sipp::start(&dir, &format!("reject{code_}"), &xml, &uas_args(port));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, call) = server
            .call(Method::POST, "/v1/rooms/lobby/sip/calls", Some(json!({"to": format!("sip:erin@127.0.0.1:{port}")})))
            .await;
        assert_eq!(status, 201, "{call}");
        let id = call["id"].as_str().unwrap().to_owned();
        let failed = wait_state(&server, "lobby", &id, "failed").await;
        assert_eq!(failed["status"], code_);
        assert_eq!(failed["reason"], reason);
        phone.finish().await.assert_ok(&format!("the phone answering {code_}"));
    }
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn dial_out_requests_are_checked() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let (status, body) =
        server.call(Method::POST, "/v1/rooms/nowhere/sip/calls", Some(json!({"to": "sip:bob@127.0.0.1:5999"}))).await;
    assert_eq!((status, code(&body)), (404, "room_not_found"));
    server.call(Method::POST, "/v1/rooms", Some(json!({"name": "here"}))).await;
    let cases = [
        (json!({"to": "mailto:bob@example.com"}), 400, "invalid_field"),
        (json!({"to": "not a uri"}), 400, "invalid_field"),
        (json!({"to": "sip:bob@127.0.0.1", "trunk": "ST_missing"}), 404, "trunk_not_found"),
        (json!({"to": "sip:bob@no-such-host.invalid"}), 403, "direct_dial_host_not_allowed"),
        (json!({"to": "+15550100"}), 422, "no_outbound_trunk"),
        (json!({"to": "sip:bob@127.0.0.1", "from": "a\r\nX-Evil: 1"}), 400, "invalid_field"),
        (json!({"from": "x"}), 400, "invalid_field"),
    ];
    for (body, status_, code_) in cases {
        let (status, reply) = server.call(Method::POST, "/v1/rooms/here/sip/calls", Some(body.clone())).await;
        assert_eq!((status, code(&reply)), (status_, code_), "{body} -> {reply}");
    }
    let (status, body) = server.call(Method::GET, "/v1/rooms/here/sip/calls/SC_nope", None).await;
    assert_eq!((status, code(&body)), (404, "call_not_found"));
}

#[tokio::test]
async fn pin_rooms_prompt_and_admit_on_rfc4733_digits() {
    let server = pin_room_server("board", "1234").await;
    let dir = server.dir().to_path_buf();
    let ears = RtpRecorder::start().await;
    let keys: Vec<PathBuf> = ["1", "2", "3", "4", "pound"].iter().map(|k| dtmf(k)).collect();
    let media = format!("<pause milliseconds=\"1500\"/>\n{}", play(&keys, 400));
    let xml = pcmu_call("frank", ears.port, media, 2000);
    let phone = Sipp::start(&dir, "frank", &xml, &uac_args(&server, "anything", &[]));
    let pin = eventually("a call waiting for its PIN", Duration::from_secs(10), || async {
        calls(&server, "board").await.into_iter().find(|c| c["state"] == "pin")
    })
    .await;
    let id = pin["id"].as_str().unwrap().to_owned();
    let room = server.call(Method::GET, "/v1/rooms/board", None).await.1;
    let in_room = room["room"]["peers"].as_array().map_or(0, |p| p.len());
    assert_eq!(in_room, 0, "not in the room before the PIN: {room}");

    let answered = wait_state(&server, "board", &id, "answered").await;
    assert_eq!(states(&answered), ["pin", "answered"]);
    assert_eq!(phone_publishers(&server, "board", 1).await, ["sip:frank"]);
    phone.finish().await.assert_ok("frank");

    // The prompt: two 600 Hz beeps in the first second of the call.
    let prompt: Vec<i16> = ears.pcm(0).into_iter().take(8000).collect();
    assert!((dominant_hz(&prompt) - 600.0).abs() <= 5.0, "the PIN prompt is a 600 Hz tone");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn three_wrong_pins_hang_up_and_info_digits_work_too() {
    let server = pin_room_server("vault", "2580").await;
    let dir = server.dir().to_path_buf();

    let ears = RtpRecorder::start().await;
    let wrong: Vec<PathBuf> = ["9", "pound", "9", "pound", "9", "pound"].iter().map(|k| dtmf(k)).collect();
    let xml = scenario(
        "uac_wait_bye.xml",
        &[
            ("caller", "mallory".into()),
            ("rtp_port", ears.port.to_string()),
            ("media", format!("<pause milliseconds=\"1000\"/>\n{}", play(&wrong, 500))),
        ],
    );
    Sipp::start(&dir, "mallory", &xml, &uac_args(&server, "vault", &[])).finish().await.assert_ok("mallory");
    let calls_ = calls(&server, "vault").await;
    assert_eq!(calls_.len(), 1);
    assert_eq!((calls_[0]["state"].as_str(), calls_[0]["reason"].as_str()), (Some("ended"), Some("pin_failed")));

    // The same PIN rule over SIP INFO.
    let ears = RtpRecorder::start().await;
    let xml = scenario(
        "uac_info_pin.xml",
        &[
            ("caller", "grace".into()),
            ("rtp_port", ears.port.to_string()),
            ("d1", "2".into()),
            ("d2", "5".into()),
            ("d3", "8".into()),
            ("d4", "0".into()),
            ("talk_ms", "1500".into()),
        ],
    );
    let phone = Sipp::start(&dir, "grace", &xml, &uac_args(&server, "vault", &[]));
    assert_eq!(phone_publishers(&server, "vault", 1).await, ["sip:grace"]);
    phone.finish().await.assert_ok("grace");
    let grace = calls(&server, "vault").await.into_iter().find(|c| c["identity"] == "sip:grace").unwrap();
    assert_eq!(states(&grace), ["pin", "answered", "ended"]);
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn refusals_carry_their_own_status_codes() {
    let config = r#"
[sip]
rtp_port_min = 30000
rtp_port_max = 39999
max_calls = 3
[[sip.trunks]]
name = "sales"
allowed_addresses = ["127.0.0.0/8"]
numbers = ["100", "200", "300"]
[[sip.dispatch_rules]]
kind = "direct"
room = "sales"
numbers = ["100"]
[[sip.dispatch_rules]]
kind = "direct"
room = "tiny"
numbers = ["200"]
"#;
    let server = TestServer::start_with(config, &[]).await;
    let dir = server.dir().to_path_buf();
    let (status, _) = server.call(Method::POST, "/v1/rooms", Some(json!({"name": "tiny", "max_peers": 1}))).await;
    assert_eq!(status, 201);

    let refused = |name: &str, caller: &str, number: &str, code_: u16, formats: (&str, &str)| {
        let xml = scenario(
            "uac_refused.xml",
            &[
                ("caller", caller.into()),
                ("rtp_port", "40000".into()),
                ("formats", formats.0.into()),
                ("rtpmaps", formats.1.into()),
                ("code", code_.to_string()),
            ],
        );
        Sipp::start(&dir, name, &xml, &uac_args(&server, number, &[]))
    };
    // 403: no trunk carries number 999. 404: the trunk carries 300 but no rule routes it.
    refused("r403", "ivan", "999", 403, PCMU_AND_DTMF).finish().await.assert_ok("403");
    refused("r404", "ivan", "300", 404, PCMU_AND_DTMF).finish().await.assert_ok("404");
    // 488: a G.729-only offer.
    let g729 = ("18", "      a=rtpmap:18 G729/8000");
    refused("r488", "ivan", "100", 488, g729).finish().await.assert_ok("488");

    // Two calls up: judy in sales, karl filling the one seat of tiny.
    let waiting = |caller: &str, number: &str| {
        let xml = scenario(
            "uac_wait_bye.xml",
            &[("caller", caller.into()), ("rtp_port", "40002".into()), ("media", String::new())],
        );
        Sipp::start(&dir, caller, &xml, &uac_args(&server, number, &[]))
    };
    let judy = waiting("judy", "100");
    let karl = waiting("karl", "200");
    eventually("judy and karl in", Duration::from_secs(10), || async {
        (server.health().await["peers"].as_u64() == Some(4)).then_some(())
    })
    .await;
    // 486: judy is already in sales. 600: tiny is full.
    refused("r486", "judy", "100", 486, PCMU_AND_DTMF).finish().await.assert_ok("486");
    refused("r600", "lena", "200", 600, PCMU_AND_DTMF).finish().await.assert_ok("600");
    // 503: max_calls = 3 with a third call up.
    let mike = waiting("mike", "100");
    eventually("mike in", Duration::from_secs(10), || async {
        (calls(&server, "sales").await.len() == 2).then_some(())
    })
    .await;
    refused("r503", "nina", "100", 503, PCMU_AND_DTMF).finish().await.assert_ok("503");

    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    for status in [403, 404, 486, 488, 503, 600] {
        assert!(
            metrics.contains(&format!("junction_sip_refused_total{{status=\"{status}\"}} 1")),
            "{status}:\n{metrics}"
        );
    }
    assert!(metrics.contains("junction_sip_calls 3"), "three calls up");

    // Deleting the rooms hangs the phones up (Junction sends BYE).
    for room in ["sales", "tiny"] {
        let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/{room}"), None).await;
        assert_eq!(status, 204);
    }
    for (name, phone) in [("judy", judy), ("karl", karl), ("mike", mike)] {
        phone.finish().await.assert_ok(name);
    }
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn digest_trunks_challenge_and_admit_over_tcp() {
    let config = r#"
[sip]
rtp_port_min = 30000
rtp_port_max = 39999
[[sip.trunks]]
name = "carrier"
username = "acme"
password = "acme-pw-42"
[[sip.dispatch_rules]]
kind = "callee"
"#;
    let server = TestServer::start_with(config, &[]).await;
    let dir = server.dir().to_path_buf();
    let ears = RtpRecorder::start().await;
    let xml = scenario(
        "uac_auth.xml",
        &[("caller", "oscar".into()), ("rtp_port", ears.port.to_string()), ("talk_ms", "1500".into())],
    );
    // The digest uri must be the Request-URI (RFC 3261 §22.4); sipp (which adds the `sip:`) leaves the user out by default.
    let auth_uri = format!("support@{}", sip_addr(&server));
    let args = uac_args(&server, "support", &["-t", "t1", "-au", "acme", "-ap", "acme-pw-42", "-auth_uri", &auth_uri]);
    let phone = Sipp::start(&dir, "oscar", &xml, &args);
    assert_eq!(phone_publishers(&server, "support", 1).await, ["sip:oscar"]);
    let result = phone.finish().await;
    result.assert_ok("oscar over TCP");
    assert!(result.messages.contains("WWW-Authenticate: Digest realm=\"junction\""), "a 401 challenge came first");
    let calls = calls(&server, "support").await;
    assert_eq!(calls[0]["trunk"].as_str().map(|t| t.starts_with("ST_")), Some(true));
    server.wait_for_no_peers().await;
}

/// Collects what arrives on `socket` for `window`: (first line, To tag) of each message.
pub(crate) async fn collect(socket: &tokio::net::UdpSocket, window: Duration) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((len, _))) = tokio::time::timeout(window, socket.recv_from(&mut buf)).await {
        let text = String::from_utf8_lossy(&buf[..len]).to_string();
        let tag = text
            .lines()
            .find(|l| l.starts_with("To:"))
            .and_then(|l| l.split(";tag=").nth(1))
            .unwrap_or_default()
            .to_owned();
        got.push((text.lines().next().unwrap_or_default().to_owned(), tag));
    }
    got
}

#[tokio::test]
async fn a_retransmitted_invite_makes_one_call() {
    // sipp answers every repeated 200 with its own last message, so this phone is written by
    // hand: it sends its INVITE twice on one branch, as a phone does when its first copy or
    // the 100 Trying is lost.
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let target = sip_addr(&server);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40006 RTP/AVP 0\r\n";
    let request = |method: &str, branch: &str, cseq: u32, to_tag: &str, body: &str| {
        let content_type = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        format!(
            "{method} sip:once@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n\
From: <sip:peggy@{local}>;tag=peg\r\nTo: <sip:once@{target}>{to_tag}\r\nCall-ID: retrans-1\r\n\
CSeq: {cseq} {method}\r\nContact: <sip:peggy@{local}>\r\nMax-Forwards: 70\r\n{content_type}\
Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let invite = request("INVITE", "z9hG4bK-retrans", 1, "", sdp);
    socket.send_to(invite.as_bytes(), &target).await.unwrap();
    socket.send_to(invite.as_bytes(), &target).await.unwrap();
    let got = collect(&socket, Duration::from_millis(1200)).await;
    // Junction answers at once, so the copy finds the transaction already accepted (RFC 6026)
    // and is absorbed: one 100, and the one 2xx retransmitted until the ACK.
    let trying = got.iter().filter(|(line, _)| line == "SIP/2.0 100 Trying").count();
    assert_eq!(trying, 1, "{got:?}");
    let oks: Vec<&String> = got.iter().filter(|(line, _)| line == "SIP/2.0 200 OK").map(|(_, tag)| tag).collect();
    assert!(
        !oks.is_empty() && oks.iter().all(|tag| *tag == oks[0]),
        "one dialog, its 2xx retransmitted until the ACK: {got:?}"
    );
    let to_tag = format!(";tag={}", oks[0]);

    socket.send_to(request("ACK", "z9hG4bK-ack", 1, &to_tag, "").as_bytes(), &target).await.unwrap();
    assert!(collect(&socket, Duration::from_millis(1200)).await.is_empty(), "the ACK stops the 2xx");
    let calls_ = calls(&server, "once").await;
    assert_eq!(calls_.len(), 1, "{calls_:?}");
    assert_eq!(calls_[0]["state"], "answered");

    socket.send_to(request("BYE", "z9hG4bK-bye", 2, &to_tag, "").as_bytes(), &target).await.unwrap();
    let got = collect(&socket, Duration::from_millis(500)).await;
    assert_eq!(got.first().map(|g| g.0.as_str()), Some("SIP/2.0 200 OK"), "{got:?}");
    let ended = wait_state(&server, "once", calls_[0]["id"].as_str().unwrap(), "ended").await;
    assert_eq!(ended["reason"], "remote_hangup");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn a_silent_phone_is_reaped_by_the_rtp_timeout() {
    let config = format!("{OPEN_DIAL_IN}\n").replace("rtp_port_max = 39999", "rtp_port_max = 39999\nrtp_timeout_s = 2");
    let server = TestServer::start_with(&config, &[]).await;
    let dir = server.dir().to_path_buf();
    let xml = scenario(
        "uac_wait_bye.xml",
        &[("caller", "quiet".into()), ("rtp_port", "40004".into()), ("media", String::new())],
    );
    // sipp sends no RTP at all and waits: Junction must hang up on its own.
    Sipp::start(&dir, "quiet", &xml, &uac_args(&server, "silence", &[])).finish().await.assert_ok("quiet");
    let calls = calls(&server, "silence").await;
    assert_eq!((calls[0]["state"].as_str(), calls[0]["reason"].as_str()), (Some("ended"), Some("rtp_timeout")));
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn a_phone_that_vanishes_on_hold_is_found_dead_by_options() {
    let config = OPEN_DIAL_IN.replace("rtp_port_max = 39999", "rtp_port_max = 39999\nrtp_timeout_s = 2");
    let server = TestServer::start_with(&config, &[]).await;
    let dir = server.dir().to_path_buf();
    let ears = RtpRecorder::start().await;
    let xml = scenario("uac_hold_vanish.xml", &[("caller", "sam".into()), ("rtp_port", ears.port.to_string())]);
    // sipp holds the call and exits without hanging up; nothing answers Junction's OPTIONS.
    Sipp::start(&dir, "sam", &xml, &uac_args(&server, "gone", &[])).finish().await.assert_ok("sam");
    let id = calls(&server, "gone").await[0]["id"].as_str().unwrap().to_owned();
    let ended = wait_state(&server, "gone", &id, "ended").await;
    assert_eq!(ended["reason"], "unreachable");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn hold_stops_the_audio_and_resume_restarts_it() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();
    let ears = RtpRecorder::start().await;
    let xml = scenario(
        "uac_hold.xml",
        &[("caller", "rita".into()), ("rtp_port", ears.port.to_string()), ("hold_ms", "2000".into())],
    );
    Sipp::start(&dir, "rita", &xml, &uac_args(&server, "hold", &[])).finish().await.assert_ok("rita");
    // On hold nothing is sent but the RTP clock runs on: one step of the timeline is the hold.
    let packets = ears.packets();
    assert!(packets.len() > 100, "{}", packets.len());
    let mut gaps: Vec<u32> = packets.windows(2).map(|w| w[1].timestamp.wrapping_sub(w[0].timestamp)).collect();
    assert!(packets.windows(2).all(|w| w[1].sequence == w[0].sequence.wrapping_add(1)), "no packet lost");
    gaps.sort_unstable();
    let longest = *gaps.last().unwrap();
    assert!(longest >= 8000 * 3 / 2, "a hold of about 2 s shows in the timestamps, longest step {longest}");
    assert_eq!(gaps[gaps.len() / 2], 160, "otherwise one packet per 20 ms");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn malformed_datagrams_get_no_panic_and_only_rfc_3261_answers() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let target = sip_addr(&server);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let via = format!("Via: SIP/2.0/UDP {local};branch=z9hG4bK-junk");
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 1500],
        b"\r\n\r\n".to_vec(),
        b"INVITE sip:x SIP/2.0\r\nVia: nothing\r\n".to_vec(),
        format!("INVITE sip:x SIP/2.0\r\n{via}\r\nCSeq: one INVITE\r\nContent-Length: 99999\r\n\r\n").into_bytes(),
        format!("INVITE sip:x SIP/2.0\r\n{via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: x INVITE\r\n\r\n").into_bytes(),
        format!("FROB sip:x SIP/2.0\r\n{via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 FROB\r\n\r\n").into_bytes(),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK-x\r\n\r\n".to_vec(),
        "INVITE sip:ü@☃ SIP/2.0\r\nVia: ☃\r\n\r\n".as_bytes().to_vec(),
    ];
    for datagram in &junk {
        socket.send_to(datagram, &target).await.unwrap();
    }
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((len, _))) = tokio::time::timeout(Duration::from_millis(700), socket.recv_from(&mut buf)).await {
        let text = String::from_utf8_lossy(&buf[..len]).to_string();
        answers.push(text.lines().next().unwrap_or_default().to_owned());
        assert!(text.contains("Warning: 399 junction"), "refusals say why: {text}");
    }
    answers.sort();
    // 400 for the requests that cannot be parsed but can be answered (a bad CSeq, a body
    // shorter than its Content-Length, a request line rsip rejects), 501 for the unknown
    // method; nothing for what has no Via to answer to, nor for the stray response.
    assert_eq!(
        answers,
        [
            "SIP/2.0 400 Bad Request",
            "SIP/2.0 400 Bad Request",
            "SIP/2.0 400 Bad Request",
            "SIP/2.0 501 Not Implemented"
        ]
    );

    // Garbage on TCP closes that connection only.
    let mut tcp = tokio::net::TcpStream::connect(&target).await.unwrap();
    tcp.write_all(b"INVITE sip:x SIP/2.0\r\nContent-Length: nope\r\n\r\n").await.unwrap();
    tcp.write_all(&vec![b'x'; 70_000]).await.ok();

    // The server still works: OPTIONS is answered.
    let options = format!(
        "OPTIONS sip:junction@{target} SIP/2.0\r\n{via}2\r\nFrom: <sip:probe@{local}>;tag=p\r\nTo: <sip:junction@{target}>\r\nCall-ID: probe-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    socket.send_to(options.as_bytes(), &target).await.unwrap();
    let (len, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await.unwrap().unwrap();
    let reply = String::from_utf8_lossy(&buf[..len]).to_string();
    assert!(
        reply.starts_with("SIP/2.0 200 OK\r\n") && reply.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"),
        "{reply}"
    );
    assert_eq!(server.health().await["status"], "ok");
}

#[tokio::test]
async fn trunks_and_dispatch_rules_are_managed_through_the_api() {
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let (status, trunk) = server
        .call(
            Method::POST,
            "/v1/sip/trunks",
            Some(json!({"name": "carrier", "allowed_addresses": ["192.0.2.0/24"], "username": "u", "password": "p", "numbers": ["+15550100"]})),
        )
        .await;
    assert_eq!(status, 201, "{trunk}");
    let id = trunk["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ST_"));
    assert!(trunk.get("password").is_none(), "passwords are never shown: {trunk}");
    assert_eq!(trunk["digest_auth"], true);
    let (status, list) = server.call(Method::GET, "/v1/sip/trunks", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["trunks"].as_array().unwrap().len(), 2, "the configured one and the new one");
    let (status, shown) = server.call(Method::GET, &format!("/v1/sip/trunks/{id}"), None).await;
    assert_eq!((status, shown["numbers"].clone()), (200, json!(["+15550100"])));

    let (status, rule) = server
        .call(
            Method::POST,
            "/v1/sip/dispatch-rules",
            Some(json!({"kind": "direct", "room": "board", "pin": "0042", "trunks": [id]})),
        )
        .await;
    assert_eq!(status, 201, "{rule}");
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    assert!(rule_id.starts_with("SDR_"));
    let (status, rules) = server.call(Method::GET, "/v1/sip/dispatch-rules", None).await;
    assert_eq!((status, rules["dispatch_rules"].as_array().unwrap().len()), (200, 2));

    let bad = [
        ("/v1/sip/trunks", json!({"name": "open"}), 400, "invalid_field"),
        ("/v1/sip/trunks", json!({"name": "x", "allowed_addresses": ["not-a-net"]}), 400, "invalid_field"),
        ("/v1/sip/trunks", json!({"name": "x", "username": "u"}), 400, "invalid_field"),
        (
            "/v1/sip/trunks",
            json!({"id": "mine", "name": "x", "allowed_addresses": ["10.0.0.0/8"]}),
            400,
            "invalid_field",
        ),
        ("/v1/sip/dispatch-rules", json!({"kind": "direct"}), 400, "invalid_field"),
        ("/v1/sip/dispatch-rules", json!({"kind": "callee", "room": "x"}), 400, "invalid_field"),
        ("/v1/sip/dispatch-rules", json!({"kind": "direct", "room": "x", "pin": "12ab"}), 400, "invalid_field"),
        ("/v1/sip/dispatch-rules", json!({"kind": "everyone"}), 400, "invalid_field"),
    ];
    for (path, body, status_, code_) in bad {
        let (status, reply) = server.call(Method::POST, path, Some(body.clone())).await;
        assert_eq!((status, code(&reply)), (status_, code_), "{body} -> {reply}");
    }

    for (path, missing) in [
        (format!("/v1/sip/trunks/{id}"), "trunk_not_found"),
        (format!("/v1/sip/dispatch-rules/{rule_id}"), "dispatch_rule_not_found"),
    ] {
        let (status, _) = server.call(Method::DELETE, &path, None).await;
        assert_eq!(status, 204);
        let (status, body) = server.call(Method::GET, &path, None).await;
        assert_eq!((status, code(&body)), (404, missing));
    }
    let response = reqwest::Client::new().get(server.url("/v1/sip/trunks")).send().await.unwrap();
    assert_eq!(response.status(), 401, "behind the API key");
    let (_, openapi) = server.call(Method::GET, "/v1/openapi.json", None).await;
    for path in [
        "/v1/sip/trunks",
        "/v1/sip/trunks/{id}",
        "/v1/sip/dispatch-rules",
        "/v1/sip/dispatch-rules/{id}",
        "/v1/rooms/{room}/sip/calls",
        "/v1/rooms/{room}/sip/calls/{id}",
    ] {
        assert!(openapi["paths"][path].is_object(), "openapi lacks {path}");
    }
}

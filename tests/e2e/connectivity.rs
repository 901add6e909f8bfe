//! Connectivity from restrictive networks, with real Chromium in a network namespace the test
//! creates ([`ClientNet`]): its UDP to the server is dropped by nftables, so the way in is the
//! media plane's passive TCP candidate (ICE-TCP); with TCP to the media port and to the TURN
//! port dropped too, only the built-in TURN server's TLS port is left (`?relay=1`, Chromium
//! trusting the test CA through its NSS database). The room's video comes from real ffmpeg over
//! RTMP on the host: a picture red on the left and blue on the right, which the tab must show.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::netns::ClientNet;
use crate::support::players::{ffmpeg_push_sources, ingress};
use crate::support::webrtc_client::synthetic;
use crate::support::webrtc_client::{ClientOptions, MediaKind, WhepViewer, WhipPublisher};
use crate::support::{TestServer, chromium, eventually};
use crate::whip::{collect, of_kind, send_media};

/// Red on the left half, blue on the right.
const HALVES: &str = "color=c=red:size=320x240:rate=30,drawbox=x=160:y=0:w=160:h=240:color=blue:t=fill";

/// The server for `net`'s clients: HTTP and the media plane on the host's end of the link.
async fn server_for(net: &ClientNet) -> TestServer {
    let host = net.host_ip;
    TestServer::start_with(&format!("[http]\nlisten = \"{host}:0\"\n[webrtc]\nudp_listen = \"{host}:0\"\n"), &[]).await
}

/// Starts the camera: ffmpeg publishing [`HALVES`] into `room` over RTMP, until it is in the room.
async fn camera(server: &TestServer, room: &str) -> tokio::process::Child {
    let (key, url) = ingress(server, room, "camera").await;
    let camera = ffmpeg_push_sources(
        &format!("{url}/{key}"),
        HALVES,
        "sine=frequency=440:sample_rate=48000",
        40,
        &["-tune", "zerolatency", "-g", "30"],
    );
    eventually("the RTMP camera in the room", Duration::from_secs(15), || async {
        let (_, body) = server.call(reqwest::Method::GET, &format!("/v1/rooms/{room}/peers"), None).await;
        body["peers"].as_array().is_some_and(|p| p.iter().any(|p| p["identity"] == "camera")).then_some(())
    })
    .await;
    camera
}

/// Asserts the tab decoded the camera and shows its two halves.
fn assert_shows_the_camera(result: &Value) {
    assert_eq!(result["error"], Value::Null, "the room page reported an error: {result}");
    let frames = |stats: &Value| {
        stats.as_array().map_or(0, |s| s.iter().filter_map(|r| r["framesDecoded"].as_u64()).max().unwrap_or(0))
    };
    let (before, after) = (frames(&result["first"]), frames(&result["second"]));
    assert!(before > 0 && after > before + 20, "the tab keeps decoding ({before} -> {after} in 2 s)");
    let (left, right) = (rgb(&result["halves"]["left"]), rgb(&result["halves"]["right"]));
    assert!(left[0] > 150 && left[2] < 80, "the left half is red: {left:?}");
    assert!(right[2] > 150 && right[0] < 80, "the right half is blue: {right:?}");
}

/// The port of a `scheme://host:port` or `scheme:host:port` service URL.
fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {url}"))
}

/// A CA and a certificate for `ip` signed by it: (CA PEM, certificate PEM, key PEM).
fn test_ca_and_certificate(ip: std::net::Ipv4Addr) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Junction test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec![ip.to_string()]).expect("params");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let certificate = params.signed_by(&key, &issuer).expect("certificate");
    (ca.pem(), certificate.pem(), key.serialize_pem())
}

/// A home directory whose NSS database (what Chromium on Linux trusts beside its own roots)
/// trusts `ca_pem`, made with `certutil` (libnss3-tools).
fn home_trusting(dir: &Path, ca_pem: &str) {
    let nssdb = dir.join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let ca = dir.join("test-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let db = format!("sql:{}", nssdb.display());
    for args in [
        vec!["-N", "-d", &db, "--empty-password"],
        vec!["-A", "-d", &db, "-n", "junction-test-ca", "-t", "C,,", "-i", ca.to_str().unwrap()],
    ] {
        let output = std::process::Command::new("certutil").args(&args).output().expect("certutil (libnss3-tools)");
        assert!(output.status.success(), "certutil {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// `POST /v1/rooms/{room}/tokens` for `identity` (publishing or watching): the token and the ICE
/// servers handed out with it.
async fn mint(server: &TestServer, room: &str, identity: &str, publish: bool) -> Value {
    let grants = json!({"publish": publish, "subscribe": !publish});
    let body = json!({"identity": identity, "grants": grants});
    let (status, minted) = server.call(reqwest::Method::POST, &format!("/v1/rooms/{room}/tokens"), Some(body)).await;
    assert_eq!(status, 201, "{minted}");
    minted
}

fn rgb(value: &Value) -> [i64; 3] {
    let channel = |i: usize| value[i].as_i64().unwrap_or(-1);
    [channel(0), channel(1), channel(2)]
}

#[tokio::test]
async fn a_browser_whose_udp_is_dropped_joins_over_ice_tcp_and_shows_the_room() {
    let _turn = chromium::many_tabs_turn().await;
    let net = ClientNet::create();
    net.drop_udp_to_host();
    let server = server_for(&net).await;
    let tcp = server.service("webrtc-tcp").to_owned();
    assert!(tcp.starts_with(&format!("tcp://{}:", net.host_ip)), "the TCP candidate's address: {tcp}");

    let _camera = camera(&server, "lobby").await;

    let token = server.token("lobby", "behind-firewall", json!({"publish": false, "subscribe": true})).await;
    let result =
        chromium::run_in(&net, "connectivity.mjs", json!({"base": server.base, "room": "lobby", "token": token})).await;

    assert_shows_the_camera(&result);
    let selected = result["selected"].as_array().cloned().unwrap_or_default();
    assert!(!selected.is_empty(), "a selected candidate pair: {result}");
    for pair in &selected {
        assert_eq!(pair["local"]["protocol"], "tcp", "the tab's end is TCP: {pair}");
        assert_eq!(pair["remote"]["protocol"], "tcp", "the server's end is its TCP candidate: {pair}");
        assert_eq!(
            format!("tcp://{}:{}", pair["remote"]["address"].as_str().unwrap_or(""), pair["remote"]["port"]),
            tcp
        );
    }
    println!("ICE-TCP: pair {selected:?}, halves {}", result["halves"]);
}

#[tokio::test]
async fn a_browser_that_can_reach_only_the_turn_tls_port_joins_through_the_relay() {
    let _turn = chromium::many_tabs_turn().await;
    let net = ClientNet::create();
    let dir = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = test_ca_and_certificate(net.host_ip);
    let (cert_file, key_file) = (dir.path().join("turn-cert.pem"), dir.path().join("turn-key.pem"));
    std::fs::write(&cert_file, certificate).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let host = net.host_ip;
    let server = TestServer::start_with(
        &format!(
            "[http]\nlisten = \"{host}:0\"\n[webrtc]\nudp_listen = \"{host}:0\"\n\
             [turn]\nenabled = true\nudp_listen = \"{host}:0\"\ntls_listen = \"{host}:0\"\n\
             tls_cert = {cert_file:?}\ntls_key = {key_file:?}\n"
        ),
        &[],
    )
    .await;
    // Nothing but HTTP and TURN over TLS: no UDP at all, no TCP to the media plane or to TURN's
    // plain port.
    net.drop_udp_to_host();
    net.drop_tcp_to_host(port_of(server.service("webrtc-tcp")));
    net.drop_tcp_to_host(port_of(server.service("turn-tcp").trim_end_matches("?transport=tcp")));
    let turns = server.service("turns").to_owned();
    assert_eq!(turns, format!("turns:{host}:{}", port_of(&turns)));
    let _camera = camera(&server, "lobby").await;

    // The tokens endpoint hands out the relay with a credential for the identity.
    let minted = mint(&server, "lobby", "behind-proxy", false).await;
    let relay = &minted["ice_servers"][0];
    assert!(
        relay["urls"].as_array().unwrap().iter().any(|u| u.as_str() == Some(&format!("{turns}?transport=tcp"))),
        "{minted}"
    );
    assert!(relay["username"].as_str().unwrap().ends_with(":behind-proxy"), "username `expiry:identity`: {minted}");

    let home = tempfile::tempdir().unwrap();
    home_trusting(home.path(), &ca);
    let mut node = net.command("node");
    node.env("HOME", home.path());
    let args = json!({"base": server.base, "room": "lobby", "token": minted["token"], "relay": true});
    let result = chromium::run_with(node, "connectivity.mjs", args).await;

    assert_shows_the_camera(&result);
    let selected = result["selected"].as_array().cloned().unwrap_or_default();
    assert!(!selected.is_empty(), "a selected candidate pair: {result}");
    for pair in &selected {
        assert_eq!(pair["local"]["type"], "relay", "the tab's end is the TURN relay: {pair}");
        assert_eq!(pair["local"]["relayProtocol"], "tls", "reached over TLS: {pair}");
        assert_eq!(pair["remote"]["protocol"], "udp", "the relay speaks UDP to the media plane: {pair}");
    }
    println!("TURN/TLS: pair {selected:?}, halves {}", result["halves"]);
}

/// The value of an unlabelled Prometheus sample, or of the one whose labels contain `label`.
fn sample(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn an_independent_stack_publishes_through_turn_over_udp_with_the_credential_it_was_given() {
    let server = TestServer::start_with("[turn]\nenabled = true\nudp_listen = \"127.0.0.1:0\"\n", &[]).await;
    let minted = mint(&server, "stage", "relayed", true).await;
    let relay = &minted["ice_servers"][0];
    let udp: Vec<String> = relay["urls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str())
        .filter(|u| u.ends_with("?transport=udp"))
        .map(str::to_owned)
        .collect();
    assert_eq!(udp, [format!("{}?transport=udp", server.service("turn"))]);
    let credential = (relay["username"].as_str().unwrap().to_owned(), relay["credential"].as_str().unwrap().to_owned());

    // The webrtc crate (webrtc-rs) with iceTransportPolicy relay: its only candidate is the
    // relayed one, so every packet goes through the TURN server.
    let options = ClientOptions { turn: Some((udp, credential.0, credential.1)), ..ClientOptions::h264_opus() };
    let publisher = WhipPublisher::connect(&server.base, "stage", minted["token"].as_str().unwrap(), options)
        .await
        .expect("WHIP publish through TURN");
    // The WHIP answer's Link headers offer the relay too, with a credential of the publisher's own.
    let turn_link = publisher.links().iter().find(|l| l.contains("transport=udp")).cloned().unwrap_or_default();
    assert!(turn_link.contains("rel=\"ice-server\"") && turn_link.contains(":relayed\""), "{:?}", publisher.links());

    let viewer_token = server.token("stage", "viewer", json!({"publish": false, "subscribe": true})).await;
    let mut viewer = WhepViewer::connect(&server.base, "stage", &viewer_token, "", ClientOptions::h264_opus())
        .await
        .expect("WHEP view");
    send_media(&publisher, 0, 90, 30).await;
    let frames = collect(&mut viewer, Duration::from_secs(2)).await;
    let video = of_kind(&frames, MediaKind::Video);
    assert!(video.len() >= 45, "only {} of 90 relayed frames arrived", video.len());
    for frame in &video {
        synthetic::assert_h264_unchanged(&frame.payload, 30, "changed on the way through the relay");
    }
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    let relayed = sample(&metrics, "junction_turn_relayed_bytes_total", "to_peer");
    assert!(relayed > 60_000.0, "the media went through the relay: {relayed} bytes");
    assert_eq!(sample(&metrics, "junction_turn_allocations", ""), 1.0, "one allocation");
    println!("TURN/UDP: {} frames through the relay, {relayed} bytes relayed to the media plane", video.len());
}

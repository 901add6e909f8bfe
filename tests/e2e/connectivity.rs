//! Connectivity from restrictive networks, with real Chromium in a network namespace the test
//! creates ([`ClientNet`]): its UDP to the server is dropped by nftables, so the only way in is
//! the media plane's passive TCP candidate (ICE-TCP). The room's video comes from real ffmpeg
//! over RTMP on the host: a picture red on the left and blue on the right, which the tab must
//! show.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::netns::ClientNet;
use crate::support::players::{ffmpeg_push_sources, ingress};
use crate::support::{TestServer, chromium, eventually};

/// Red on the left half, blue on the right.
const HALVES: &str = "color=c=red:size=320x240:rate=30,drawbox=x=160:y=0:w=160:h=240:color=blue:t=fill";

/// The server for `net`'s clients: HTTP and the media plane on the host's end of the link.
async fn server_for(net: &ClientNet) -> TestServer {
    let host = net.host_ip;
    TestServer::start_with(&format!("[http]\nlisten = \"{host}:0\"\n[webrtc]\nudp_listen = \"{host}:0\"\n"), &[]).await
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

    let (key, url) = ingress(&server, "lobby", "camera").await;
    let _camera = ffmpeg_push_sources(
        &format!("{url}/{key}"),
        HALVES,
        "sine=frequency=440:sample_rate=48000",
        40,
        &["-tune", "zerolatency", "-g", "30"],
    );
    eventually("the RTMP camera in the room", Duration::from_secs(15), || async {
        let (_, body) = server.call(reqwest::Method::GET, "/v1/rooms/lobby/peers", None).await;
        body["peers"].as_array().is_some_and(|p| p.iter().any(|p| p["identity"] == "camera")).then_some(())
    })
    .await;

    let token = server.token("lobby", "behind-firewall", json!({"publish": false, "subscribe": true})).await;
    let result =
        chromium::run_in(&net, "connectivity.mjs", json!({"base": server.base, "room": "lobby", "token": token})).await;

    assert_eq!(result["error"], Value::Null, "the room page reported an error: {result}");
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
    let frames = |stats: &Value| {
        stats.as_array().map_or(0, |s| s.iter().filter_map(|r| r["framesDecoded"].as_u64()).max().unwrap_or(0))
    };
    let (before, after) = (frames(&result["first"]), frames(&result["second"]));
    assert!(before > 0 && after > before + 20, "the tab keeps decoding over TCP ({before} -> {after} in 2 s)");
    let (left, right) = (rgb(&result["halves"]["left"]), rgb(&result["halves"]["right"]));
    assert!(left[0] > 150 && left[2] < 80, "the left half is red: {left:?}");
    assert!(right[2] > 150 && right[0] < 80, "the right half is blue: {right:?}");
    println!("ICE-TCP: {before} -> {after} frames in 2 s, left {left:?}, right {right:?}, pair {selected:?}");
}

//! WHIP meets a browser room: real Chromium publishes through `/whip.html`, and another Chromium
//! tab in the same room on the demo page (`/room/{room}`, the WebSocket signalling and the SDK)
//! sees the WHIP publisher as an ordinary peer and decodes its camera. (The other direction, a
//! WHEP viewer watching a browser room peer, is in `browser`.)

use serde_json::{Value, json};

use crate::support::{TestServer, chromium};

fn frames_decoded(stats: &Value) -> u64 {
    stats.as_array().map_or(0, |s| s.iter().filter_map(|r| r["framesDecoded"].as_u64()).max().unwrap_or(0))
}

#[tokio::test]
async fn a_browser_room_peer_sees_and_decodes_a_whip_publisher() {
    let server = TestServer::start().await;
    let publish_token = server.token("lobby", "camera", json!({"publish": true, "subscribe": false})).await;
    let room_token = server.token("lobby", "watcher", json!({"publish": true, "subscribe": true})).await;
    let result = chromium::run(
        "room_watches_whip.mjs",
        json!({"base": server.base, "room": "lobby", "publishToken": publish_token, "roomToken": room_token}),
    )
    .await;

    assert_eq!(result["error"], Value::Null, "the room page reported an error: {result}");
    let peers = result["peers"].as_array().cloned().unwrap_or_default();
    let camera = peers.iter().find(|p| p["identity"] == "camera").unwrap_or_else(|| panic!("no WHIP peer: {result}"));
    assert_eq!(camera["transport"], "whip", "{result}");
    let tiles = result["tiles"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = tiles.iter().filter(|t| t["peer"] == "camera").filter_map(|t| t["kind"].as_str()).collect();
    assert!(kinds.contains(&"video") && kinds.contains(&"audio"), "a tile per WHIP track: {result}");
    let (before, after) = (frames_decoded(&result["first"]), frames_decoded(&result["second"]));
    assert!(before > 0 && after > before + 10, "the room tab keeps decoding the WHIP camera ({before} -> {after})");
    println!("WHIP -> browser room: {before} -> {after} frames decoded in 2 s");
    server.wait_for_no_peers().await;
}

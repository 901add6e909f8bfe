//! WHIP and WHEP with a real Chromium (headless, fake camera and microphone): one tab
//! publishes through the `/whip.html` demo page, another plays the room through `/whep.html`,
//! and the player keeps decoding video. With simulcast, the publisher's three layers become
//! the track's layers and the player still decodes.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestServer, chromium};

fn stat<'a>(stats: &'a Value, kind: &str) -> &'a Value {
    stats.as_array().and_then(|s| s.iter().find(|r| r["kind"] == kind)).unwrap_or(&Value::Null)
}

async fn publish_and_play(simulcast: bool) -> (TestServer, Value, Value) {
    let server = TestServer::start().await;
    let room = if simulcast { "browser-simulcast" } else { "browser" };
    let publish_token = server.token(room, "camera", json!({"publish": true, "subscribe": false})).await;
    let view_token = server.token(room, "viewer", json!({"publish": false, "subscribe": true})).await;
    let args = json!({
        "base": server.base, "room": room, "simulcast": simulcast,
        "publishToken": publish_token, "viewToken": view_token,
    });
    let (result, room_state) = tokio::join!(chromium::run("whip_whep.mjs", args), async {
        // Look at the room while both tabs are in it.
        crate::support::eventually("both browser peers in the room", std::time::Duration::from_secs(60), || async {
            let (_, body) = server.call(Method::GET, &format!("/v1/rooms/{room}"), None).await;
            let peers = body["room"]["peers"].as_array().cloned().unwrap_or_default();
            let has_tracks = peers.iter().any(|p| p["tracks"].as_array().is_some_and(|t| t.len() == 2));
            (peers.len() == 2 && has_tracks).then_some(body)
        })
        .await
    });
    (server, result, room_state)
}

fn assert_decoding(result: &Value) {
    let (first, second) = (stat(&result["first"], "video"), stat(&result["second"], "video"));
    let (before, after) = (first["framesDecoded"].as_u64().unwrap_or(0), second["framesDecoded"].as_u64().unwrap_or(0));
    assert!(before > 0, "the WHEP tab decoded no video: {result}");
    // A frozen stream stays put; a Chromium starved of CPU by the rest of the suite may encode
    // a few frames per second only, so growth is all that is asked.
    assert!(after > before + 3, "framesDecoded did not keep growing ({before} -> {after}): {result}");
    let audio =
        (stat(&result["first"], "audio")["packets"].as_u64(), stat(&result["second"], "audio")["packets"].as_u64());
    assert!(matches!(audio, (Some(a), Some(b)) if b > a), "audio packets did not keep arriving: {result}");
    println!("WHEP tab: {} -> {} frames decoded in 2 s, {}", before, after, second);
    assert_eq!(result["logs"], json!([]), "the tabs logged errors or warnings");
}

#[tokio::test]
async fn chromium_publishes_with_whip_html_and_another_tab_plays_with_whep_html() {
    let (server, result, room) = publish_and_play(false).await;
    assert_decoding(&result);
    let publisher = room["room"]["peers"].as_array().unwrap().iter().find(|p| p["identity"] == "camera").unwrap();
    assert_eq!(publisher["transport"], "whip");
    let codecs: Vec<&str> =
        publisher["tracks"].as_array().unwrap().iter().map(|t| t["codec"].as_str().unwrap()).collect();
    assert!(codecs.contains(&"opus"), "{codecs:?}");
    assert!(result["whipResource"].as_str().unwrap().starts_with("/whip/browser/"), "{result}");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn chromium_simulcast_whip_becomes_a_three_layer_track_a_whep_tab_decodes() {
    let (server, result, room) = publish_and_play(true).await;
    assert_decoding(&result);
    let publisher = room["room"]["peers"].as_array().unwrap().iter().find(|p| p["identity"] == "camera").unwrap();
    let video = publisher["tracks"].as_array().unwrap().iter().find(|t| t["kind"] == "video").unwrap();
    let rids: Vec<&str> = video["layers"].as_array().unwrap().iter().map(|l| l["rid"].as_str().unwrap()).collect();
    assert_eq!(rids, ["q", "h", "f"], "layers lowest first: {video}");
    let sent_rids: Vec<&str> = result["sent"].as_array().unwrap().iter().filter_map(|s| s["rid"].as_str()).collect();
    assert_eq!(sent_rids.len(), 3, "Chromium sent three encodings: {}", result["sent"]);
    let width = stat(&result["second"], "video")["frameWidth"].as_u64().unwrap_or(0);
    println!("simulcast: the WHEP tab received a {width} px wide layer");
    server.wait_for_no_peers().await;
}

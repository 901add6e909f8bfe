//! The state store end to end: a server given a `data_dir` is killed with SIGKILL and started
//! again on the same directory. What the operator created comes back — an API-created room with
//! its settings, an RTMP ingress key (real ffmpeg publishes with it afterwards and the tone and
//! pictures are checked in what a player records), a SIP trunk and dispatch rule — and so does a
//! webhook that could not be delivered before the kill: it arrives once the receiver is up.
//! A room deleted before the kill stays deleted.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use junction_audio::codec::tone;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::rtmp::{TONE_HZ, ffmpeg_pull, ffmpeg_push, ffprobe, finish, ingress};
use crate::support::audio::decode_file_audio;
use crate::support::{TestServer, eventually};

/// A port nobody listens on yet: the webhook receiver comes up there after the restart.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn a_killed_server_restarts_with_rooms_ingress_keys_sip_trunks_rules_and_pending_webhooks() {
    let hook_port = free_port();
    let config = format!(
        "[webhook]\nurls = [\"http://127.0.0.1:{hook_port}/hook\"]\nsecret = \"whsec-store-0123456789abcdef\"\n\
         max_attempts = 100\ntimeout_ms = 500\n"
    );
    let server = TestServer::start_with(&config, &[]).await;

    let room = json!({"name": "durable", "max_peers": 7, "empty_timeout_s": 600, "metadata": {"floor": 3}});
    let (status, body) = server.call(Method::POST, "/v1/rooms", Some(room)).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = server.call(Method::POST, "/v1/rooms", Some(json!({"name": "gone"}))).await;
    assert_eq!(status, 201);
    let (status, _) = server.call(Method::DELETE, "/v1/rooms/gone", None).await;
    assert_eq!(status, 204);
    let (key, _) = ingress(&server, "durable", "obs").await;
    let trunk = json!({"name": "carrier", "allowed_addresses": ["127.0.0.1/32"], "numbers": ["+15550100"]});
    let (status, trunk) = server.call(Method::POST, "/v1/sip/trunks", Some(trunk)).await;
    assert_eq!(status, 201, "{trunk}");
    let rule = json!({"kind": "direct", "room": "durable", "pin": "4321", "trunks": [trunk["id"]]});
    let (status, rule) = server.call(Method::POST, "/v1/sip/dispatch-rules", Some(rule)).await;
    assert_eq!(status, 201, "{rule}");
    // The receiver is down: room_started for `durable` is being retried when the server dies.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at_ms = unix_ms();

    let server = server.kill_and_restart().await;
    let deliveries: Arc<Mutex<Vec<Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", hook_port)).await.expect("the hook port is free");
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Arc<Mutex<Vec<Value>>>>,
                 axum::Json(event): axum::Json<Value>| async move {
                    seen.lock().await.push(event);
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(deliveries.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (status, body) = server.call(Method::GET, "/v1/rooms/durable", None).await;
    assert_eq!(status, 200, "the API-created room is back: {body}");
    let restored = &body["room"];
    assert_eq!((restored["max_peers"].as_u64(), restored["empty_timeout_s"].as_u64()), (Some(7), Some(600)));
    assert_eq!(restored["metadata"], json!({"floor": 3}));
    let (status, _) = server.call(Method::GET, "/v1/rooms/gone", None).await;
    assert_eq!(status, 404, "a deleted room stays deleted");
    let (_, listed) = server.call(Method::GET, "/v1/ingress", None).await;
    let keys: Vec<&str> =
        listed["ingress"].as_array().unwrap().iter().filter_map(|i| i["stream_key"].as_str()).collect();
    assert_eq!(keys, [key.as_str()]);
    let (status, again) =
        server.call(Method::GET, &format!("/v1/sip/trunks/{}", trunk["id"].as_str().unwrap()), None).await;
    assert_eq!((status, &again), (200, &trunk), "the trunk is back as it was created");
    let (status, again) =
        server.call(Method::GET, &format!("/v1/sip/dispatch-rules/{}", rule["id"].as_str().unwrap()), None).await;
    assert_eq!((status, &again), (200, &rule), "the dispatch rule is back as it was created");

    let before_kill = eventually("the webhook queued before the kill", Duration::from_secs(20), || async {
        let seen = deliveries.lock().await;
        seen.iter()
            .find(|e| {
                e["event"] == "room_started"
                    && e["room"]["name"] == "durable"
                    && e["created_at_ms"].as_u64().is_some_and(|t| t < killed_at_ms)
            })
            .cloned()
    })
    .await;
    println!("delivered after the restart: {before_kill}");

    // The stored key still publishes: ffmpeg pushes with it, and a player records the tone.
    let rtmp = server.service("rtmp").to_owned();
    let token = server.token("durable", "viewer", json!({"publish": false, "subscribe": true})).await;
    let out = server.dir().join("after-restart.flv");
    let player = ffmpeg_pull(&format!("{rtmp}/durable/obs?token={token}"), 3, &out);
    let publisher = ffmpeg_push(&format!("{rtmp}/{key}"), 6);
    let (played, stderr) = finish(player, Duration::from_secs(40)).await;
    assert!(played, "ffmpeg could not play the restored key's stream: {stderr}");
    let (pushed, stderr) = finish(publisher, Duration::from_secs(40)).await;
    assert!(pushed, "ffmpeg could not publish with the restored key: {stderr}");
    let counted =
        ffprobe(&out, &["-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames"]).await;
    let frames: u32 = counted["streams"][0]["nb_read_frames"].as_str().unwrap().parse().unwrap();
    assert!(frames >= 60, "{frames} frames decoded");
    let samples = decode_file_audio(&out, 16_000).await;
    let found = tone::dominant_frequency_i16(&samples, 1, 16_000).expect("audible audio");
    assert!((found - TONE_HZ).abs() <= 2.0, "dominant frequency {found} Hz");
}

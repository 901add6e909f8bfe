//! The browser WebSocket protocol (transports/browser/src/protocol.rs, session/): text frames
//! from four browsers into their signalling sessions — join, leave, update, subscribe,
//! set_layer, mute, data, mesh signals, direct calls, SFU offers/answers/candidates — against a
//! real engine with a published camera, with room events and relayed messages fed back as the
//! socket driver feeds them (see `junction_browser::fuzz`).
//!
//! Input: frames separated by [`crate::SEPARATOR`]; each starts with one byte: the browser (low
//! two bits), a binary frame instead (bit 2), a camera event before it (bit 3: mute, unmute or
//! unpublish, by the frame's length), a resumed socket before it (bit 4: the client says it
//! received as many messages as the frame has bytes). Placeholders: `$s0`..`$s3` stand for the browsers'
//! session ids, `$track` for the camera's track id, `$call` for the last call id handed out.
//!
//! Checked: every message out is JSON with a `type`, and once all sessions end the registry has
//! forgotten them and their calls.

use std::sync::OnceLock;

use junction_browser::fuzz::Browsers;
use junction_webrtc::{WebrtcConfig, WebrtcTransport};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

fn runtime() -> &'static (Runtime, WebrtcTransport) {
    static RUNTIME: OnceLock<(Runtime, WebrtcTransport)> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let config = WebrtcConfig { udp_listen: ([127, 0, 0, 1], 0).into(), ..WebrtcConfig::default() };
        let webrtc = runtime
            .block_on(junction_webrtc::listen(&config, CancellationToken::new()))
            .expect("the WebRTC media plane starts on loopback");
        (runtime, webrtc)
    })
}

pub fn run(data: &[u8]) {
    let (runtime, webrtc) = runtime();
    runtime.block_on(drive(data, webrtc.clone()));
}

async fn drive(data: &[u8], webrtc: WebrtcTransport) {
    let mut browsers = Browsers::new(Some(webrtc));
    let mut call = String::new();
    for record in crate::records(data) {
        let Some((&control, frame)) = record.split_first() else { continue };
        if control & 0b1000 != 0 {
            browsers.camera_event(frame.len() as u8);
        }
        let index = usize::from(control & 0b11);
        if control & 0b1_0000 != 0 {
            browsers.resume(index, frame.len() as u64);
        }
        if control & 0b100 != 0 {
            browsers.binary(index);
        } else {
            let mut text = frame.to_vec();
            for i in 0..browsers.len() {
                let id = browsers.session_id(i).unwrap_or_default();
                text = crate::substitute(&text, format!("$s{i}").as_bytes(), id.as_bytes());
            }
            text = crate::substitute(&text, b"$track", browsers.track_id().unwrap_or_default().as_bytes());
            text = crate::substitute(&text, b"$call", call.as_bytes());
            browsers.text(index, &String::from_utf8_lossy(&text)).await;
        }
        for (_, message) in browsers.drain().await {
            let value: serde_json::Value =
                serde_json::from_str(&message).unwrap_or_else(|err| panic!("not JSON ({err}): {message}"));
            assert!(value["type"].is_string(), "a message without a type: {message}");
            if let Some(id) = value["call"].as_str() {
                call = id.to_owned();
            }
        }
    }
    for index in 0..browsers.len() {
        browsers.text(index, r#"{"type":"leave"}"#).await;
    }
    browsers.drain().await;
    assert_eq!(browsers.registered(), (0, 0), "sessions or calls outlive their sessions");
    // Let the tasks the sessions started (media sessions) see their end.
    tokio::task::yield_now().await;
}

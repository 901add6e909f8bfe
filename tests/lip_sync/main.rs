//! Lip sync in every cell of the matrix where both media flow (docs/interop.md): for each
//! publisher with video and audio — a Chromium room tab, Chromium's `/whip.html`, ffmpeg over RTMP,
//! ffmpeg's CMAF into stock `moq-pub` — a source that flashes white while it beeps is first
//! recorded by ffmpeg over RTMP and by stock `moq-sub` (beep minus flash on the recording's
//! timeline) while an independent WebRTC stack (the `webrtc` crate) receives it over WHEP (beep
//! minus flash on the sender's clock, through the RTCP sender reports, as every WebRTC receiver
//! synchronises: `support::wire_sync`), then watched by a Chromium room tab and a Chromium
//! `/whep.html` player (beep minus flash as presented, against Chromium's own peer-to-peer offset
//! measured in the same run). Recordings and the WebRTC wire must be within 80 ms; Chromium
//! viewers within 200 ms of Chromium's own offset (`support::lipsync::BROWSER_GUARD_MS`: its
//! settling moves them over about ±120 ms run to run; docs/interop.md lists the figures). Pictures,
//! motion and the tone are checked in the recordings too.
//!
//! These measure time, and Chromium's capture and playout starve when another test shares the
//! two cores (a browser source measured -143 ms beside another browser test, -13 ms alone), so
//! they are a test binary of their own — cargo runs test binaries one after another — whose
//! tests take turns ([`one_at_a_time`]), and within a test the recorders and Chromium's viewers
//! take turns too. They share the end-to-end tests' support code.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Child;
use tokio::task::JoinHandle;

#[path = "../e2e/support/mod.rs"]
mod support;

use support::lipsync::{BAR_MS, BROWSER_HZ, assert_browser_sync, assert_recording_sync};
use support::moq::wait_for_peer;
use support::players::{
    ffmpeg_pull, finish, flashing_into_moq_pub, flashing_into_rtmp, moq_sub, pictures, recorded_tone, stop_moq_sub,
    viewer_token,
};
use support::wire_sync::{WireSync, WireViewer, wire_sync};
use support::{TestServer, chromium};

/// Held by each test for its whole run: the binary's tests measure one at a time, whatever
/// `--test-threads` says.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// How long the RTMP player records, in seconds.
const RECORD_SECONDS: u32 = 6;

/// The viewers of `peer` that keep what they got: ffmpeg over RTMP and stock moq-sub (H.264
/// and AAC) record it; a `webrtc`-crate WHEP viewer measures it on the wire (`support::wire_sync`).
struct Recorders {
    rtmp: Child,
    moq: Child,
    flv: PathBuf,
    mp4: PathBuf,
    wire: [JoinHandle<WireSync>; 2],
}

impl Recorders {
    async fn start(server: &TestServer, room: &str, peer: &str) -> Self {
        let flv = server.dir().join(format!("{room}.flv"));
        let rtmp_token = viewer_token(server, room, "rtmp").await;
        let rtmp =
            ffmpeg_pull(&format!("{}/{room}/{peer}?token={rtmp_token}", server.service("rtmp")), RECORD_SECONDS, &flv);
        let mp4 = server.dir().join(format!("{room}.mp4"));
        let moq = moq_sub(server, room, peer, &viewer_token(server, room, "moq").await, &mp4);
        let mut wire = Vec::new();
        for (viewer, identity) in [(WireViewer::Whep, "wire-whep"), (WireViewer::RoomPeer, "wire-peer")] {
            let token = viewer_token(server, room, identity).await;
            let (base, room, peer) = (server.base.clone(), room.to_owned(), peer.to_owned());
            wire.push(tokio::spawn(wire_sync(viewer, base, room, peer, token, u64::from(RECORD_SECONDS))));
        }
        let wire = wire.try_into().map_err(|_| ()).expect("two wire viewers");
        Self { rtmp, moq, flv, mp4, wire }
    }

    /// Waits for the RTMP recording, stops moq-sub, and checks both: pictures that move, the
    /// `hz` tone, lip sync; and the wire viewer's lip sync. Returns what was measured, for the
    /// log.
    async fn check(self, server: &TestServer, hz: u32) -> String {
        let (played, stderr) = finish(self.rtmp, Duration::from_secs(60)).await;
        stop_moq_sub(self.moq, &self.mp4).await;
        assert!(played, "ffmpeg could not play over RTMP: {stderr}");
        let mut figures = Vec::new();
        for (file, who) in [(&self.flv, "RTMP player"), (&self.mp4, "moq-sub")] {
            let (decoded, changes) = pictures(file).await;
            let log = std::fs::read_to_string(file.with_extension("log")).unwrap_or_default();
            if decoded < 60 || changes * 3 <= decoded {
                let server_log: Vec<String> =
                    server.logs().lines().filter(|l| !l.contains("webrtc")).map(str::to_owned).collect();
                let tail = server_log[server_log.len().saturating_sub(80)..].join("\n");
                panic!("{who}: {decoded} pictures, {changes} changes\n{log}\nserver:\n{tail}");
            }
            let found = recorded_tone(file).await;
            assert!((found - f64::from(hz)).abs() <= 3.0, "{who} hears {found} Hz, not {hz} Hz");
            let sync = assert_recording_sync(file, who).await;
            figures.push(format!("{who} {sync:+.0} ms"));
        }
        for (task, who) in self.wire.into_iter().zip(["WHEP", "room peer"]) {
            let wire = task.await.expect("wire viewer task");
            assert!(
                wire.offset_ms.abs() <= BAR_MS,
                "WebRTC {who} on the wire ({:?}): beep {:+.0} ms from its flash ({} pairs)",
                wire.codec,
                wire.offset_ms,
                wire.pairs
            );
            figures.push(format!("{who} wire ({:?}, {} frames) {:+.0} ms", wire.codec, wire.frames, wire.offset_ms));
        }
        figures.join(", ")
    }
}

/// Checks the room tab's and the WHEP player's lip sync in a browser scenario's result.
fn check_browsers(result: &Value) -> String {
    let (tab, reference) = assert_browser_sync(result, "tab", "room tab");
    let (whep, _) = assert_browser_sync(result, "whep", "WHEP player");
    format!("room tab {tab:+.0} ms, WHEP {whep:+.0} ms (Chromium peer-to-peer {reference:+.0} ms)")
}

/// How long after the publisher's media arrived Chromium's viewer pages open: once the recorders
/// are done and checked. Opening pages takes the two cores for a moment, which moves what the
/// recorders measure, and stock `moq-sub` starting then can fall so far behind that the server
/// skips groups (TOO_FAR_BEHIND), which it does not survive.
const VIEWERS_AFTER: Duration = Duration::from_secs(RECORD_SECONDS as u64 + 5);

/// Tokens for a room tab and a WHEP player watching `peer` in the publishing browser, opened
/// [`VIEWERS_AFTER`] the publisher's media arrived.
async fn watchers(server: &TestServer, room: &str, peer: &str) -> Value {
    json!({
        "peer": peer, "tab": viewer_token(server, room, "watching-tab").await,
        "whep": viewer_token(server, room, "watching-whep").await, "after_ms": VIEWERS_AFTER.as_millis() as u64,
    })
}

/// A browser publisher (`scenario`: publish.mjs or publish_whip.mjs) as `peer` of `room`, in sync
/// at all four viewers.
async fn browser_publisher_in_sync(scenario: &'static str, room: &str, peer: &str) -> String {
    let server = TestServer::start().await;
    let token = server.token(room, peer, json!({"publish": true, "subscribe": false})).await;
    let args = json!({
        "base": server.base, "room": room, "token": token, "hold_ms": 9_000,
        "synced_hz": BROWSER_HZ, "watch": watchers(&server, room, peer).await,
    });
    let browser = tokio::spawn(chromium::run(scenario, args));
    wait_for_peer(&server, room, peer, |p| p["tracks"].as_array().is_some_and(|t| t.len() == 2)).await;
    let recorded = Recorders::start(&server, room, peer).await.check(&server, BROWSER_HZ).await;
    let published = browser.await.expect("browser task");
    format!("{recorded}, {}", check_browsers(&published))
}

/// A publisher already flashing and beeping at `hz` as `peer` of `room`, watched by a room tab
/// and a WHEP player (listen.mjs) while it is recorded.
async fn watched_in_sync(server: &TestServer, room: &str, peer: &str, hz: u32) -> String {
    // Viewers join a stream that is already running, as they usually do.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recorded = Recorders::start(server, room, peer).await.check(server, hz).await;
    let args = json!({
        "base": server.base, "room": room, "token": viewer_token(server, room, "tab").await, "peer": peer,
        "sync": true, "whep": viewer_token(server, room, "whep").await,
    });
    let watched = chromium::run("listen.mjs", args).await;
    let heard = watched["heard"]["hz"].as_f64().unwrap_or_default();
    assert!((heard - f64::from(hz)).abs() <= 3.0, "the room tab hears {heard} Hz: {watched}");
    format!("{recorded}, {}", check_browsers(&watched))
}

#[tokio::test]
async fn a_browser_tab_publisher_is_in_sync_at_every_viewer() {
    let _turn = one_at_a_time().await;
    let figures = browser_publisher_in_sync("publish.mjs", "tab-sync", "tab").await;
    println!("room tab (VP8, Opus) -> {figures}");
}

#[tokio::test]
async fn a_whip_publisher_is_in_sync_at_every_viewer() {
    let _turn = one_at_a_time().await;
    let figures = browser_publisher_in_sync("publish_whip.mjs", "whip-sync", "cam").await;
    println!("WHIP (VP8, Opus) -> {figures}");
}

#[tokio::test]
async fn an_rtmp_publisher_is_in_sync_at_every_viewer() {
    let _turn = one_at_a_time().await;
    const HZ: u32 = 660;
    let server = TestServer::start().await;
    let room = "rtmp-sync";
    let _ffmpeg = flashing_into_rtmp(&server, room, HZ, &["-tune", "zerolatency", "-g", "25"]).await;
    let figures = watched_in_sync(&server, room, "obs", HZ).await;
    println!("RTMP (H.264, AAC) -> {figures}");
}

#[tokio::test]
async fn a_moq_publisher_is_in_sync_at_every_viewer() {
    let _turn = one_at_a_time().await;
    const HZ: u32 = 880;
    let server = TestServer::start().await;
    let room = "moq-sync";
    let publish_token = server.token(room, "cam", json!({"publish": true, "subscribe": false})).await;
    let _publisher = flashing_into_moq_pub(&server, room, &publish_token, HZ);
    wait_for_peer(&server, room, "cam", |p| p["tracks"].as_array().is_some_and(|t| t.len() == 2)).await;
    let figures = watched_in_sync(&server, room, "cam", HZ).await;
    println!("MoQ (H.264, AAC) -> {figures}");
}

//! The room outputs that show more than one peer, end to end: two Chromium room tabs publish
//! VP8 cameras of their own (a red and a blue canvas, each with a white box sweeping across) and
//! microphones of their own (red: a quiet 660 Hz, blue: a loud 880 Hz) into one room. An `hls`
//! grid is played by ffmpeg (nobody here wrote it) and a `grid` recording is decoded by ffprobe
//! and ffmpeg: both are one 1280x720 H.264 picture whose two halves show the two tabs (one red,
//! one blue) with their boxes moving, and AAC carrying the room's mix (880 Hz dominant). An `hls`
//! output without a `peer` follows the active speaker, not the first publisher (red): blue's
//! picture with the mix while blue talks loudest; once blue's microphone is muted (the
//! operator's mute), red's picture and 660 Hz.
//! Options a grid cannot take are refused naming the field; a grid past `video.max_grids` fails
//! naming the key, and runs once a place is free.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::hls::publishes;
use crate::rtmp::ffprobe;
use crate::support::TestServer;
use crate::support::chromium::{self, many_tabs_turn};
use crate::support::moq::wait_for_peer;
use crate::support::players::{ffmpeg_pull, finish, recorded_tone};

const HZ: f64 = 880.0;
const QUIET_HZ: f64 = 660.0;
/// Thumbnails the pictures are checked at (each tab's picture spans rows 4.5 to 13.5).
const THUMB: (usize, usize) = (32, 18);

/// Every picture of `file` scaled to [`THUMB`], as RGB.
async fn thumbnails(file: &Path) -> Vec<Vec<u8>> {
    let scale = format!("scale={}:{}", THUMB.0, THUMB.1);
    let output = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-vf", &scale, "-pix_fmt", "rgb24", "-f", "rawvideo", "-"])
        .output()
        .await
        .expect("ffmpeg");
    assert!(output.status.success(), "ffmpeg decoding {}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
    output.stdout.chunks_exact(THUMB.0 * THUMB.1 * 3).map(<[u8]>::to_vec).collect()
}

/// One half of a thumbnail (rows 6 to 11, inside the tab's picture): its mean red minus mean
/// blue, and the column of the brightest pixels (the white box).
fn half(picture: &[u8], right: bool) -> (f64, usize) {
    let columns = THUMB.0 / 2;
    let first = if right { columns } else { 0 };
    let (mut red_minus_blue, mut brightness) = (0.0, vec![0u32; columns]);
    for row in 6..12 {
        for (column, bright) in brightness.iter_mut().enumerate() {
            let at = (row * THUMB.0 + first + column) * 3;
            let (r, g, b) = (picture[at], picture[at + 1], picture[at + 2]);
            red_minus_blue += f64::from(r) - f64::from(b);
            *bright += u32::from(r) + u32::from(g) + u32::from(b);
        }
    }
    let brightest = (0..columns).max_by_key(|c| brightness[*c]).unwrap_or_default();
    (red_minus_blue / (6 * columns) as f64, brightest)
}

/// The mean red minus blue of the centre of a thumbnail (a full-frame picture's colour).
fn centre(picture: &[u8]) -> f64 {
    let mut sum = 0.0;
    for row in 6..12 {
        for column in 8..24 {
            let at = (row * THUMB.0 + column) * 3;
            sum += f64::from(picture[at]) - f64::from(picture[at + 2]);
        }
    }
    sum / 96.0
}

/// Checks an active-speaker file: past its first half second, at least 80 % of its pictures are
/// the speaker's colour (`red`, else blue), and its sound is `hz`. Returns a summary.
async fn check_speaker(file: &Path, red: bool, hz: f64, what: &str) -> String {
    let pictures = thumbnails(file).await;
    assert!(pictures.len() >= 45, "{what}: {} pictures decoded", pictures.len());
    let settled = &pictures[15..];
    let shown = settled.iter().filter(|p| if red { centre(p) > 60.0 } else { centre(p) < -60.0 }).count();
    let colour = if red { "red" } else { "blue" };
    assert!(shown * 10 >= settled.len() * 8, "{what}: {shown} of {} pictures are {colour}", settled.len());
    let heard = recorded_tone(file).await;
    assert!((heard - hz).abs() <= 3.0, "{what}: {heard} Hz, expected {hz}");
    format!("{what}: {shown} of {} pictures {colour}, {heard:.1} Hz", settled.len())
}

/// Checks a grid file: one 1280x720 H.264 picture of both tabs, their halves red and blue
/// (either way round), the box moving in each; AAC with the tone. Returns a summary.
async fn check_grid(file: &Path, what: &str) -> String {
    let streams = ffprobe(file, &["-show_entries", "stream=codec_name,width,height"]).await;
    let codecs: Vec<&str> =
        streams["streams"].as_array().unwrap().iter().filter_map(|s| s["codec_name"].as_str()).collect();
    assert_eq!(codecs, ["h264", "aac"], "{what}: {streams}");
    assert_eq!(
        (streams["streams"][0]["width"].as_u64(), streams["streams"][0]["height"].as_u64()),
        (Some(1280), Some(720))
    );
    let pictures = thumbnails(file).await;
    assert!(pictures.len() >= 90, "{what}: {} pictures decoded", pictures.len());
    // The first second may still show one tab alone (until the other's keyframe is in).
    let settled = &pictures[30..];
    let colored = settled
        .iter()
        .filter(|p| {
            let (left, right) = (half(p, false).0, half(p, true).0);
            (left > 60.0 && right < -60.0) || (left < -60.0 && right > 60.0)
        })
        .count();
    assert!(
        colored * 10 >= settled.len() * 9,
        "{what}: {colored} of {} pictures show a red and a blue half",
        settled.len()
    );
    for right in [false, true] {
        let positions: std::collections::BTreeSet<usize> = settled.iter().map(|p| half(p, right).1).collect();
        assert!(
            positions.len() >= 5,
            "{what}: the box of the {} half moves: columns {positions:?}",
            if right { "right" } else { "left" }
        );
    }
    let heard = recorded_tone(file).await;
    assert!((heard - HZ).abs() <= 3.0, "{what}: the room's mix is {heard} Hz");
    format!(
        "{what}: {} pictures, {colored} of {} with a red and a blue half, {heard:.1} Hz",
        pictures.len(),
        settled.len()
    )
}

#[tokio::test]
async fn two_browser_tabs_in_a_grid_in_hls_and_a_recording_and_followed_as_they_speak() {
    // Two tabs encoding, two grids composing and a transcoder for the followed tab keep a core
    // or more busy: this scenario takes its turn with the other many-tab ones.
    let _turn = many_tabs_turn().await;
    // Two grids at once here: the grid HLS output and the grid recording.
    let server = TestServer::start_with("[video]\nmax_grids = 2\n", &[]).await;
    let room = "grid";
    let mut tokens = Vec::new();
    for identity in ["red", "blue"] {
        tokens.push(server.token(room, identity, json!({"publish": true, "subscribe": true})).await);
    }
    let args = json!({
        "base": server.base, "room": room, "tokens": tokens, "colors": ["#d04020", "#2050d0"],
        "voices": [{"hz": QUIET_HZ, "gain": 0.1}, {"hz": HZ, "gain": 0.5}], "hold_ms": 24_000,
    });
    let browser = tokio::spawn(chromium::run("grid.mjs", args));
    wait_for_peer(&server, room, "red", |p| publishes(p, "vp8")).await;
    let blue = wait_for_peer(&server, room, "blue", |p| publishes(p, "vp8")).await;

    let components = format!("/v1/rooms/{room}/components");
    for body in [
        json!({"type": "hls", "layout": "grid", "peer": "red"}),
        json!({"type": "recording", "layout": "grid", "peer": "red"}),
    ] {
        let (status, error) = server.call(Method::POST, &components, Some(body.clone())).await;
        assert_eq!(status, 422, "{body} -> {error}");
        assert!(error["error"]["message"].as_str().unwrap_or_default().contains("peer"), "{body} -> {error}");
    }
    let (status, recording) =
        server.call(Method::POST, &components, Some(json!({"type": "recording", "layout": "grid"}))).await;
    assert_eq!(status, 201, "{recording}");
    let (mut urls, mut ids) = (Vec::new(), Vec::new());
    let viewer = server.token(room, "viewer", json!({"publish": false, "subscribe": true})).await;
    for layout in ["grid", "single"] {
        let body = json!({"type": "hls", "layout": layout, "segment_s": 1, "part_ms": 250});
        let (status, hls) = server.call(Method::POST, &components, Some(body)).await;
        assert_eq!(status, 201, "{hls}");
        urls.push(format!("{}?token={viewer}", hls["url"].as_str().unwrap()));
        ids.push(hls["id"].as_str().unwrap().to_owned());
    }
    let speaker = format!("{components}/{}", ids[1]);
    // Both grids hold their slots before a third is asked for: the recording takes its slot
    // only after creating its directory (on the blocking pool), so on a loaded machine a third
    // grid asked for at once could take it first, and the recording would fail instead.
    for id in [recording["id"].as_str().unwrap(), ids[0].as_str()] {
        crate::support::eventually("a grid running", Duration::from_secs(20), || async {
            let (_, view) = server.call(Method::GET, &format!("{components}/{id}"), None).await;
            (view["state"] == "running").then_some(())
        })
        .await;
    }
    let started = Instant::now();
    // A third grid is past video.max_grids: it fails at once, naming the key.
    let (status, third) = server.call(Method::POST, &components, Some(json!({"type": "hls", "layout": "grid"}))).await;
    assert_eq!(status, 201, "{third}");
    let third = third["id"].as_str().unwrap().to_owned();
    let failed = crate::support::eventually("the third grid failed", Duration::from_secs(10), || async {
        let (_, view) = server.call(Method::GET, &format!("{components}/{third}"), None).await;
        (view["state"] == "failed").then_some(view)
    })
    .await;
    assert!(failed["reason"].as_str().unwrap_or_default().contains("video.max_grids"), "{failed}");
    for url in &urls {
        ready(url).await;
    }
    // The output without a peer follows the speaker: blue, the loud one (red published first).
    following(&server, &speaker, "blue").await;
    tokio::time::sleep(SWITCHED).await;

    // ffmpeg plays the grid, and the output following the speaker from its live edge.
    let (grid_file, speaker_file) = (server.dir().join("grid-hls.mp4"), server.dir().join("speaker-blue.mp4"));
    let (grid_played, speaker_played) = tokio::join!(
        finish(ffmpeg_pull(&urls[0], 5, &grid_file), PULL),
        finish(pull_live_edge(&urls[1], 4, &speaker_file), PULL)
    );
    assert!(grid_played.0, "ffmpeg playing the grid: {}", grid_played.1);
    assert!(speaker_played.0, "ffmpeg playing the speaker: {}", speaker_played.1);
    let hls_summary = check_grid(&grid_file, "hls grid").await;
    let blue_summary = check_speaker(&speaker_file, false, HZ, "speaker (blue talking)").await;

    // The recording ran alongside for at least 7 s; deleting it closes its one file.
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(started.elapsed())).await;
    let id = recording["id"].as_str().unwrap();
    assert_eq!(server.call(Method::DELETE, &format!("{components}/{id}"), None).await.0, 204);
    let dir = PathBuf::from(recording["path"].as_str().unwrap());
    let manifest = crate::support::eventually("the grid file closed", Duration::from_secs(10), || async {
        let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).ok()?).ok()?;
        manifest["files"][0]["end_unix_ms"].is_f64().then_some(manifest)
    })
    .await;
    assert_eq!(manifest["layout"], "grid", "{manifest}");
    assert_eq!(manifest["files"].as_array().map(Vec::len), Some(1), "one composed file: {manifest}");
    assert_eq!(manifest["files"][0]["codec"], "h264,aac", "{manifest}");
    let file = dir.join(manifest["files"][0]["file"].as_str().unwrap());
    let recording_summary = check_grid(&file, "grid recording").await;
    // The deleted recording gave its place back: a grid runs again.
    let (status, again) = server.call(Method::POST, &components, Some(json!({"type": "hls", "layout": "grid"}))).await;
    assert_eq!(status, 201, "{again}");
    let again = again["id"].as_str().unwrap().to_owned();
    crate::support::eventually("a grid running in the freed place", Duration::from_secs(10), || async {
        let (_, view) = server.call(Method::GET, &format!("{components}/{again}"), None).await;
        (view["state"] == "running").then_some(())
    })
    .await;
    assert_eq!(server.call(Method::DELETE, &format!("{components}/{again}"), None).await.0, 204);

    // The operator mutes blue's microphone: red is the loudest left, and followed after a second.
    let tracks = blue["tracks"].as_array().unwrap();
    let microphone = tracks.iter().find(|t| t["kind"] == "audio").and_then(|t| t["id"].as_str()).unwrap();
    let (status, muted) = server
        .call(Method::POST, &format!("/v1/rooms/{room}/tracks/{microphone}/mute"), Some(json!({"muted": true})))
        .await;
    assert_eq!(status, 200, "muting blue: {muted}");
    following(&server, &speaker, "red").await;
    tokio::time::sleep(SWITCHED).await;
    let speaker_file = server.dir().join("speaker-red.mp4");
    let (ok, stderr) = finish(pull_live_edge(&urls[1], 3, &speaker_file), PULL).await;
    assert!(ok, "ffmpeg playing the speaker: {stderr}");
    let red_summary = check_speaker(&speaker_file, true, QUIET_HZ, "speaker (blue muted)").await;

    let tabs = browser.await.expect("the publishing tabs");
    assert_eq!(tabs["errors"], json!([null, null]), "{tabs}");
    println!(
        "{hls_summary}; {recording_summary}; {blue_summary}; {red_summary}; tabs {}",
        json!({"sent": tabs["sent"], "visible": tabs["visible"]})
    );
}

/// How long an ffmpeg pull may take.
const PULL: Duration = Duration::from_secs(30);
/// From a switch of the followed peer until the last complete 1 s segment began after it.
const SWITCHED: Duration = Duration::from_millis(2500);

/// Waits until the speaker-following output (`component`, its API path) shows `peer`.
async fn following(server: &TestServer, component: &str, peer: &str) {
    crate::support::eventually(&format!("the output following {peer}"), Duration::from_secs(20), || async {
        let (_, view) = server.call(Method::GET, component, None).await;
        (view["following"] == peer).then_some(())
    })
    .await;
}

/// ffmpeg playing `url` for `seconds` from its last complete segment (not three back, as it
/// does by default), copying the streams into `out`.
fn pull_live_edge(url: &str, seconds: u32, out: &Path) -> tokio::process::Child {
    tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-live_start_index", "-1", "-i", url])
        .args(["-t", &seconds.to_string(), "-c", "copy", "-y"])
        .arg(out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg")
}

/// Waits until a playlist lists two whole segments (ffmpeg's player reads segments, not parts).
async fn ready(url: &str) {
    crate::support::eventually("two segments in the playlist", Duration::from_secs(20), || async {
        let text = reqwest::get(url).await.ok()?.text().await.ok()?;
        (text.contains("#EXT-X-PART:") && text.contains("seg-1.m4s")).then_some(())
    })
    .await;
}

//! Players and publishers the cross-protocol tests share (the pair matrix and the lip sync
//! binary): ffmpeg publishing lavfi sources over RTMP and playing RTMP into a file, ffmpeg's CMAF
//! into stock `moq-pub`, stock `moq-sub` recording, and the checks made on what they recorded
//! (pictures that move, the tone).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::TestServer;
use super::audio::{decode_file_audio, dominant_frequency};
use super::lipsync;
use super::moq::{MoqTarget, tool, wait_for_peer};
use super::x264::frame_md5s;

/// Creates an RTMP ingress; returns (stream key, encoder URL).
pub async fn ingress(server: &TestServer, room: &str, identity: &str) -> (String, String) {
    let body = json!({"kind": "rtmp", "room": room, "identity": identity});
    let (status, value) = server.call(Method::POST, "/v1/ingress", Some(body)).await;
    assert_eq!(status, 201, "{value}");
    (value["stream_key"].as_str().unwrap().to_owned(), value["url"].as_str().unwrap().to_owned())
}

/// ffmpeg publishing the lavfi sources `video` and `audio` to `url` as FLV for `seconds`: libx264
/// `veryfast` with the `x264` arguments after it (`-tune zerolatency` for no B-frames, as WebRTC
/// viewers need; `-bf 2` for some) and AAC.
pub fn ffmpeg_push_sources(url: &str, video: &str, audio: &str, seconds: u32, x264: &[&str]) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio])
        .args(["-t", &seconds.to_string(), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"])
        .args(x264)
        .args(["-c:a", "aac", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg")
}

/// ffmpeg playing `url` for `seconds`, copying the streams into `out`.
pub fn ffmpeg_pull(url: &str, seconds: u32, out: &Path) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i", url, "-t", &seconds.to_string(), "-c", "copy", "-y"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg")
}

/// Waits for an ffmpeg to exit; returns (success, its stderr).
pub async fn finish(child: Child, timeout: Duration) -> (bool, String) {
    let output = tokio::time::timeout(timeout, child.wait_with_output()).await.expect("ffmpeg finished in time");
    let output = output.expect("ffmpeg output");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Runs `program` with `args`, its stderr into `log`, killed when dropped.
pub fn spawn(program: &Path, args: &[&str], stdin: Stdio, stdout: Stdio, log: &Path) -> Child {
    Command::new(program)
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(std::fs::File::create(log).expect("log file"))
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()))
}

/// ffmpeg reading `input` (its input and codec arguments) and pacing it out as CMAF, one fragment
/// per frame, into stock moq-pub publishing `name` at `url` (trusting `ca`, logging to `log`).
/// Both processes are returned: dropping them ends the publication.
pub fn cmaf_into_moq_pub(input: &[&str], ca: &str, name: &str, url: &str, log: &Path) -> (Child, Child) {
    let mut packager = Command::new("ffmpeg")
        .args(["-v", "error", "-re"])
        .args(input)
        .args(["-f", "mp4", "-movflags", "cmaf+separate_moof+delay_moov+skip_trailer+frag_every_frame", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg");
    let cmaf: Stdio = packager.stdout.take().unwrap().try_into().unwrap();
    let moq_pub = spawn(&tool("moq-pub"), &["--name", name, "--tls-root", ca, url], cmaf, Stdio::null(), log);
    (packager, moq_pub)
}

/// The dominant frequency of a recording's audio (decoded by ffmpeg at 16 kHz, mono), leaving
/// out its first half second.
pub async fn recorded_tone(file: &Path) -> f64 {
    let samples = decode_file_audio(file, 16_000).await;
    let settled = &samples[samples.len().min(8_000)..];
    assert!(settled.len() >= 16_000, "{}: only {} samples of audio", file.display(), samples.len());
    dominant_frequency(settled, 1, 16_000).unwrap_or(0.0)
}

/// Decoded pictures of a recording's first video stream, and how many differ from the one before.
pub async fn pictures(file: &Path) -> (usize, usize) {
    let md5s = frame_md5s(file).await;
    let changes = md5s.windows(2).filter(|w| w[0] != w[1]).count();
    (md5s.len(), changes)
}

/// Stock moq-sub reading `peer` of `room` into `out` (its log beside it), asking for H.264 and
/// AAC.
pub fn moq_sub(server: &TestServer, room: &str, peer: &str, token: &str, out: &Path) -> Child {
    let target = MoqTarget::of(server);
    spawn(
        &tool("moq-sub"),
        &[
            "--name",
            &format!("{room}/{peer}"),
            "--catalog",
            "--tls-root",
            target.ca.to_str().unwrap(),
            &target.https(&format!("/{room}?jwt={token}&video=h264&audio=aac")),
        ],
        Stdio::null(),
        Stdio::from(std::fs::File::create(out).unwrap()),
        &out.with_extension("log"),
    )
}

/// Stops a `moq-sub` recording into `out` and cuts the file after its last whole MP4 box: the
/// kill can land while moq-sub writes a fragment, and ffmpeg refuses a file whose last box is a
/// half-written `moof` ("error reading header"), though every fragment before it is whole.
pub async fn stop_moq_sub(mut sub: Child, out: &Path) {
    sub.kill().await.unwrap();
    let recorded = std::fs::read(out).unwrap_or_default();
    let whole = whole_boxes_len(&recorded);
    if whole < recorded.len() {
        std::fs::OpenOptions::new().write(true).open(out).unwrap().set_len(whole as u64).unwrap();
    }
}

/// The length of the run of whole top-level MP4 boxes `file` starts with.
fn whole_boxes_len(file: &[u8]) -> usize {
    let mut at = 0;
    while let Some(header) = file.get(at..at + 8) {
        let size = match u32::from_be_bytes([header[0], header[1], header[2], header[3]]) {
            // A 64-bit size follows the type.
            1 => match file.get(at + 8..at + 16) {
                Some(large) => u64::from_be_bytes(large.try_into().unwrap()),
                None => break,
            },
            // "To the end of the file": whole by definition.
            0 => (file.len() - at) as u64,
            size => u64::from(size),
        };
        match usize::try_from(size).ok().filter(|&size| size >= 8).and_then(|size| at.checked_add(size)) {
            Some(end) if end <= file.len() => at = end,
            _ => break,
        }
    }
    at
}

pub async fn viewer_token(server: &TestServer, room: &str, identity: &str) -> String {
    server.token(room, identity, json!({"publish": false, "subscribe": true})).await
}

/// ffmpeg pushing the flashing, beeping source (`hz`, x264 with `x264` options, AAC) over RTMP
/// as `obs` of `room` for 40 s; returns it once the peer has both tracks, with the peer.
pub async fn flashing_into_rtmp(server: &TestServer, room: &str, hz: u32, x264: &[&str]) -> (Child, Value) {
    let (key, url) = ingress(server, room, "obs").await;
    let ffmpeg =
        ffmpeg_push_sources(&format!("{url}/{key}"), lipsync::SOURCE_VIDEO, &lipsync::source_audio(hz), 40, x264);
    let obs = wait_for_peer(server, room, "obs", |p| p["tracks"].as_array().is_some_and(|t| t.len() == 2)).await;
    (ffmpeg, obs)
}

/// ffmpeg's CMAF of the flashing, beeping source (`hz`; H.264 and AAC, one fragment per frame)
/// into stock moq-pub, publishing `room/feed` with `token` for 40 s.
pub fn flashing_into_moq_pub(server: &TestServer, room: &str, token: &str, hz: u32) -> (Child, Child) {
    let target = MoqTarget::of(server);
    let audio = lipsync::source_audio(hz);
    let input = [
        "-f",
        "lavfi",
        "-i",
        lipsync::SOURCE_VIDEO,
        "-f",
        "lavfi",
        "-i",
        &audio,
        "-t",
        "40",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "25",
        "-tune",
        "zerolatency",
        "-c:a",
        "aac",
    ];
    cmaf_into_moq_pub(
        &input,
        target.ca.to_str().unwrap(),
        &format!("{room}/feed"),
        &target.https(&format!("/{room}?jwt={token}")),
        &server.dir().join("moq-pub.log"),
    )
}

#[cfg(test)]
mod tests {
    use super::whole_boxes_len;

    fn mp4_box(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut b = ((8 + body) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.resize(8 + body, 0);
        b
    }

    #[test]
    fn a_recording_is_cut_after_its_last_whole_box() {
        let whole = [mp4_box(b"ftyp", 20), mp4_box(b"moov", 100), mp4_box(b"moof", 96), mp4_box(b"mdat", 300)].concat();
        assert_eq!(whole_boxes_len(&whole), whole.len());
        let half_moof = [&whole[..], &mp4_box(b"moof", 96)[..50]].concat();
        assert_eq!(whole_boxes_len(&half_moof), whole.len(), "a moof cut mid-write goes");
        let short_header = [&whole[..], &[0, 0, 1][..]].concat();
        assert_eq!(whole_boxes_len(&short_header), whole.len());
        let bad_size = [&whole[..], &[0, 0, 0, 4, b'f', b'r', b'e', b'e'][..]].concat();
        assert_eq!(whole_boxes_len(&bad_size), whole.len(), "a size under a header is not a box");
    }
}

//! Across protocols: real ffmpeg publishes H.264 and AAC over RTMP, an independent WebRTC
//! client (the `webrtc` crate) watches the room over WHEP. The viewer negotiated Opus, so it
//! hears the AAC through the engine's AAC->Opus variant — decoded here, it is the same tone —
//! and gets the H.264 access units with their parameter sets, on monotonic timestamps; the
//! offset between audio and video at the viewer, measured as a browser would from the RTCP sender
//! reports, stays within 40 ms.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::process::Command;

use crate::support::audio::{assert_tone, opus_to_pcm};
use crate::support::webrtc_client::{
    ClientCodec, ClientOptions, MediaKind, ReceivedFrame, SenderReportSeen, WhepViewer, synthetic,
};
use crate::support::{TestServer, eventually};

const TONE_HZ: f64 = 440.0;

#[tokio::test]
async fn a_whep_viewer_watches_an_rtmp_publisher_with_aac_transcoded_to_opus() {
    let server = TestServer::start().await;
    let (status, ingress) = server
        .call(
            reqwest::Method::POST,
            "/v1/ingress",
            Some(json!({"kind": "rtmp", "room": "mixed", "identity": "ffmpeg"})),
        )
        .await;
    assert_eq!(status, 201, "{ingress}");
    let url = format!("{}/{}", ingress["url"].as_str().unwrap(), ingress["stream_key"].as_str().unwrap());
    let viewer_token = server.token("mixed", "viewer", json!({"subscribe": true, "publish": false})).await;
    let mut viewer = WhepViewer::connect(&server.base, "mixed", &viewer_token, "", ClientOptions::h264_opus())
        .await
        .expect("WHEP view");

    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency={TONE_HZ}:sample_rate=48000")])
        .args(["-t", "4", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"])
        .args(["-g", "30", "-c:a", "aac", "-f", "flv", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg");

    let mut frames = Vec::new();
    while let Some(frame) = viewer.next_frame(Duration::from_secs(8)).await {
        frames.push(frame);
        if frames.len() > 400 {
            break;
        }
    }
    let _ = ffmpeg.kill().await;

    let video: Vec<_> = frames.iter().filter(|f| f.kind() == MediaKind::Video).collect();
    assert!(video.len() >= 30, "{} H.264 frames arrived", video.len());
    assert!(video.iter().all(|f| f.codec == ClientCodec::H264));
    let first = synthetic::nal_units(&video[0].payload);
    let types: Vec<u8> = first.iter().map(|nal| nal[0] & 0x1f).collect();
    assert!(video[0].keyframe && types.contains(&7) && types.contains(&8), "starts on SPS+PPS+IDR: {types:?}");
    for pair in video.windows(2) {
        let step = pair[1].rtp_timestamp.wrapping_sub(pair[0].rtp_timestamp);
        assert!(step > 0 && step < 90_000, "video timestamps step {step}");
    }

    let audio: Vec<&[u8]> = frames.iter().filter(|f| f.kind() == MediaKind::Audio).map(|f| &f.payload[..]).collect();
    assert!(audio.len() >= 50, "{} Opus packets arrived", audio.len());
    let pcm = opus_to_pcm(&audio, 1);
    let found = assert_tone(&pcm, 1, 48_000, TONE_HZ, 10.0);

    // A/V offset at the viewer, as a browser synchronises: each frame's sender time comes from
    // its stream's RTCP sender reports; how much later audio arrives than video against that
    // common clock is the offset.
    let reports = viewer.sender_reports();
    let video_lateness = lateness_ms(&frames, MediaKind::Video, 90_000, &reports);
    let audio_lateness = lateness_ms(&frames, MediaKind::Audio, 48_000, &reports);
    let av_offset = audio_lateness - video_lateness;
    println!(
        "RTMP -> WHEP: {} H.264 frames, {} Opus packets, tone {found:.1} Hz, A/V offset {av_offset:+.1} ms (positive: audio behind video)",
        video.len(),
        audio.len()
    );
    // The bar for lip sync (docs/protocol-whip-whep.md, "Lip sync").
    assert!(av_offset.abs() <= 40.0, "audio and video {av_offset:+.1} ms apart at the viewer");

    assert_eq!(viewer.delete().await.unwrap(), 200);
    eventually("the RTMP publisher to go", Duration::from_secs(15), || async {
        (server.health().await["peers"] == 0).then_some(())
    })
    .await;
}

/// Median over the frames of `kind` of (arrival - the sender's time of the frame), in ms on an
/// arbitrary common origin. As a receiver does, a frame's sender time maps its RTP timestamp
/// through the latest sender report of its stream received before it; a report made before the
/// stream sent anything (packet count 0) maps nothing and is skipped.
fn lateness_ms(frames: &[ReceivedFrame], kind: MediaKind, clock_rate: u32, reports: &[SenderReportSeen]) -> f64 {
    let origin = frames[0].received_at;
    let mut lateness: Vec<f64> = frames
        .iter()
        .filter(|f| f.kind() == kind)
        .filter_map(|f| {
            let report = reports
                .iter()
                .filter(|r| r.ssrc == f.ssrc && r.packet_count > 0 && r.received_at <= f.received_at)
                .last()?;
            let since_report = f64::from(f.rtp_timestamp.wrapping_sub(report.rtp_time) as i32) / f64::from(clock_rate);
            let sent = report.ntp_seconds() + since_report;
            Some(f.received_at.duration_since(origin).as_secs_f64() * 1000.0 - sent * 1000.0)
        })
        .collect();
    assert!(!lateness.is_empty(), "no sender report for the {kind:?} stream");
    lateness.sort_by(f64::total_cmp);
    lateness[lateness.len() / 2]
}

//! Lip sync at a WebRTC viewer as RTCP puts it, before any player's own delays: an independent
//! WebRTC stack (the `webrtc` crate) watches a flashing, beeping publisher for a few seconds, over
//! WHEP or as a room peer; every received video frame is decoded by ffmpeg (mean luma), every Opus packet by
//! libopus; each flash's RTP time and each beep onset's RTP time are mapped to the sender's clock
//! through their own stream's RTCP sender reports — exactly what a browser synchronises audio
//! and video on — and beep minus flash is the offset any receiver that synchronises correctly
//! presents. This is the server's part of a browser viewer's lip sync, without the browser's
//! playout noise (`tests/browser/lipsync.mjs` measures what Chromium presents, noise included).

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::audio::OpusToPcm;
use super::webrtc_client::{
    ClientCodec, ClientOptions, MediaKind, ReceivedFrame, RoomClient, SenderReportSeen, WhepViewer,
};

/// What a wire viewer measured.
#[derive(Debug)]
pub struct WireSync {
    /// Beep minus flash on the sender's clock, median over the pairs, in ms.
    pub offset_ms: f64,
    pub pairs: usize,
    /// The video codec received (the publisher's, or a variant's).
    pub codec: ClientCodec,
    pub frames: usize,
}

/// How a wire viewer watches: as a WHEP player, or as a room peer over the WebSocket protocol
/// (the path of a browser room tab: the server's offers, an m-line per track).
#[derive(Debug, Clone, Copy)]
pub enum WireViewer {
    Whep,
    RoomPeer,
}

/// Watches `peer` of `room` (`token` may subscribe, and is a room peer's only way in) for
/// `seconds` as `viewer`, offering VP8, H.264 and Opus, and measures the offset; panics when it
/// cannot (no flashes, no reports).
pub async fn wire_sync(
    viewer: WireViewer,
    base: String,
    room: String,
    peer: String,
    token: String,
    seconds: u64,
) -> WireSync {
    let options = ClientOptions::new(&[ClientCodec::Vp8, ClientCodec::H264, ClientCodec::Opus]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let (frames, reports) = match viewer {
        WireViewer::Whep => {
            let mut whep = WhepViewer::connect(&base, &room, &token, &format!("?identity={peer}"), options)
                .await
                .unwrap_or_else(|err| panic!("WHEP wire viewer of {peer}: {err}"));
            let received = receive_until(&mut whep, deadline).await;
            let _ = whep.delete().await;
            whep.close().await;
            received
        }
        WireViewer::RoomPeer => {
            let mut tab = RoomClient::receiver(&base, &token, options)
                .await
                .unwrap_or_else(|err| panic!("room peer wire viewer of {peer}: {err}"));
            let received = receive_until(&mut tab, deadline).await;
            let _ = tab.leave().await;
            received
        }
    };
    measure(viewer, &peer, &frames, &reports).await
}

/// A `webrtc`-crate viewer as the wire check reads it.
trait Receiver {
    async fn next(&mut self, timeout: Duration) -> Option<ReceivedFrame>;
    fn reports(&self) -> Vec<SenderReportSeen>;
}

impl Receiver for WhepViewer {
    async fn next(&mut self, timeout: Duration) -> Option<ReceivedFrame> {
        self.next_frame(timeout).await
    }

    fn reports(&self) -> Vec<SenderReportSeen> {
        self.sender_reports()
    }
}

impl Receiver for RoomClient {
    async fn next(&mut self, timeout: Duration) -> Option<ReceivedFrame> {
        self.next_frame(timeout).await
    }

    fn reports(&self) -> Vec<SenderReportSeen> {
        self.sender_reports()
    }
}

/// Every frame `viewer` receives until `deadline`, and the sender reports it saw by then.
async fn receive_until(
    viewer: &mut impl Receiver,
    deadline: tokio::time::Instant,
) -> (Vec<ReceivedFrame>, Vec<SenderReportSeen>) {
    let mut frames = Vec::new();
    while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
        match viewer.next(left).await {
            Some(frame) => frames.push(frame),
            None => break,
        }
    }
    (frames, viewer.reports())
}

/// Beep minus flash in what a wire viewer received.
async fn measure(viewer: WireViewer, peer: &str, frames: &[ReceivedFrame], reports: &[SenderReportSeen]) -> WireSync {
    let peer = format!("{viewer:?} wire viewer of {peer}");
    let video: Vec<&ReceivedFrame> =
        frames.iter().filter(|f| f.kind() == MediaKind::Video).skip_while(|f| !f.keyframe).collect();
    let received = frames.iter().filter(|f| f.kind() == MediaKind::Video).count();
    assert!(video.len() >= 25, "{peer}: {} decodable video frames of {received} received", video.len());
    let codec = video[0].codec;
    let lumas = mean_lumas(&video).await;
    assert_eq!(lumas.len(), video.len(), "{peer}: ffmpeg decoded every {codec:?} frame received");
    let flashes: Vec<f64> = (1..video.len())
        .filter(|&i| lumas[i] > 200.0 && lumas[i - 1] <= 200.0)
        .filter_map(|i| sender_seconds(video[i], 90_000, reports))
        .collect();

    let mut decoder = OpusToPcm::new(1);
    let mut pcm = Vec::new();
    // (first sample index, frame) of each Opus packet.
    let mut packets = Vec::new();
    for frame in frames.iter().filter(|f| f.kind() == MediaKind::Audio) {
        packets.push((pcm.len(), frame));
        decoder.decode(&frame.payload, &mut pcm).unwrap_or_else(|err| panic!("Opus packet: {err}"));
    }
    let beeps: Vec<f64> = onsets(&pcm)
        .into_iter()
        .filter_map(|sample| {
            let (start, frame) = packets.iter().rev().find(|(start, _)| *start <= sample)?;
            let at = ReceivedFrame {
                rtp_timestamp: frame.rtp_timestamp.wrapping_add((sample - start) as u32),
                ..ReceivedFrame::clone(frame)
            };
            sender_seconds(&at, 48_000, reports)
        })
        .collect();
    let offsets = super::lipsync::paired_offsets(&flashes, &beeps);
    assert!(offsets.len() >= 3, "{peer}: flashes {flashes:?} and beeps {beeps:?} do not pair up");
    WireSync { offset_ms: offsets[offsets.len() / 2], pairs: offsets.len(), codec, frames: video.len() }
}

/// The sender's time of `frame` in seconds: its RTP timestamp through the sender report of its
/// stream received nearest to it (reports made before the stream sent anything map nothing).
fn sender_seconds(frame: &ReceivedFrame, clock_rate: u32, reports: &[SenderReportSeen]) -> Option<f64> {
    let distance = |r: &SenderReportSeen| {
        r.received_at.max(frame.received_at).duration_since(r.received_at.min(frame.received_at))
    };
    let report = reports.iter().filter(|r| r.ssrc == frame.ssrc && r.packet_count > 0).min_by_key(|r| distance(r))?;
    let since = f64::from(frame.rtp_timestamp.wrapping_sub(report.rtp_time) as i32) / f64::from(clock_rate);
    Some(report.ntp_seconds() + since)
}

/// Sample indexes where a beep starts: above 0.05 of full scale after at least 200 ms below.
fn onsets(pcm: &[i16]) -> Vec<usize> {
    let (mut quiet, mut found) = (0usize, Vec::new());
    for (i, sample) in pcm.iter().enumerate() {
        if sample.unsigned_abs() > 1_638 {
            if quiet > 9_600 {
                found.push(i);
            }
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    found
}

/// Mean luma (0-255) of each frame, decoded by ffmpeg from an Annex B (H.264) or IVF (VP8) file.
async fn mean_lumas(video: &[&ReceivedFrame]) -> Vec<f64> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, format) = match video[0].codec {
        ClientCodec::H264 => (dir.path().join("wire.h264"), "h264"),
        _ => (dir.path().join("wire.ivf"), "ivf"),
    };
    let mut bytes = Vec::new();
    if format == "ivf" {
        bytes.extend_from_slice(b"DKIF\0\0\x20\0VP80");
        bytes.extend_from_slice(&[0; 4]); // width, height: the frames say
        bytes.extend_from_slice(&90_000u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(video.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
    }
    for (i, frame) in video.iter().enumerate() {
        if format == "ivf" {
            bytes.extend_from_slice(&(frame.payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&(i as u64).to_le_bytes());
        }
        bytes.extend_from_slice(&frame.payload);
    }
    tokio::fs::File::create(&path).await.unwrap().write_all(&bytes).await.unwrap();
    let output = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", format, "-i"])
        .arg(&path)
        .args(["-vf", "scale=16:9,format=gray", "-fps_mode", "passthrough", "-f", "rawvideo", "-"])
        .output()
        .await
        .expect("ffmpeg runs");
    output.stdout.chunks_exact(144).map(|luma| luma.iter().map(|v| f64::from(*v)).sum::<f64>() / 144.0).collect()
}

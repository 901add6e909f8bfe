//! The browser transport driven by an independent WebRTC stack (the `webrtc` crate, not the
//! server's str0m) over the WebSocket protocol: one peer publishes synthetic VP8 and Opus
//! frames that carry their index, another receives them through the SFU — bytes, RTP timestamps
//! and a keyframe request round trip checked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::support::webrtc_client::{
    ClientCodec, ClientOptions, MediaKind, ReceivedFrame, RoomClient, starts_at_a_keyframe, synthetic,
};
use crate::support::{TestServer, eventually};

/// One video frame every 40 ms: 3600 ticks of the 90 kHz clock, exactly.
const VIDEO_FRAME: Duration = Duration::from_millis(40);
const VIDEO_TICKS: u32 = 3_600;
/// One Opus packet every 20 ms: 960 ticks of the 48 kHz clock.
const AUDIO_FRAME: Duration = Duration::from_millis(20);
const AUDIO_TICKS: u32 = 960;
/// The sender gives up after this many audio packets (a minute), should a test hang.
const MAX_PACKETS: u32 = 3_000;

/// What the publisher sent: each video frame by index (which were key frames is decided as
/// keyframe requests come in).
#[derive(Default)]
struct Sent {
    video: Mutex<HashMap<u32, Bytes>>,
}

impl Sent {
    fn video(&self, index: u32) -> Option<Bytes> {
        self.video.lock().ok()?.get(&index).cloned()
    }
}

/// Publishes Opus packet `n` every 20 ms and VP8 frame `n / 2` every other packet, a key frame
/// first and then whenever the publisher received a new keyframe request, until `stop`.
async fn publish(alice: Arc<RoomClient>, sent: Arc<Sent>, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(AUDIO_FRAME);
    let mut requests_answered = alice.keyframe_requests();
    for n in 0..MAX_PACKETS {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tick.tick().await;
        alice.send_audio(synthetic::opus_packet(n), AUDIO_FRAME).await.expect("send audio");
        if n % 2 == 0 {
            let index = n / 2;
            let requests = alice.keyframe_requests();
            let keyframe = index == 0 || requests > requests_answered;
            requests_answered = requests;
            let frame = synthetic::vp8_frame(index, keyframe);
            if let Ok(mut video) = sent.video.lock() {
                video.insert(index, frame.clone());
            }
            alice.send_video(frame, VIDEO_FRAME).await.expect("send video");
        }
    }
}

/// Checks received frames of one kind against what was sent: payload bytes by index, indexes
/// increasing, and RTP timestamps advancing by `ticks` per index, as the publisher stamped them.
fn check_frames(
    frames: &[ReceivedFrame],
    ticks: u32,
    sent: &dyn Fn(u32) -> Option<Bytes>,
    index: fn(&Bytes) -> Option<u32>,
) {
    let mut previous: Option<(u32, &ReceivedFrame)> = None;
    for frame in frames {
        let i = index(&frame.payload).unwrap_or_else(|| panic!("no index in {:?}", frame.payload));
        let expected = sent(i).unwrap_or_else(|| panic!("frame {i} was never sent"));
        assert_eq!(frame.payload, expected, "payload of {:?} frame {i}", frame.codec);
        if let Some((last, last_frame)) = previous {
            assert!(i > last, "{:?} frame {i} after frame {last}", frame.codec);
            assert_eq!(
                frame.rtp_timestamp.wrapping_sub(last_frame.rtp_timestamp),
                (i - last).wrapping_mul(ticks),
                "{:?} RTP timestamp of frame {i} against frame {last}",
                frame.codec
            );
            // The server numbers VP8 pictures per subscriber, one per frame it sent.
            if frame.codec == ClientCodec::Vp8 {
                let (id, last_id) = (frame.vp8_picture_id.expect("a picture id"), last_frame.vp8_picture_id);
                let step = id.wrapping_sub(last_id.expect("a picture id")) & 0x7fff;
                assert_eq!(u32::from(step), i - last, "VP8 picture id of frame {i} ({id}) against frame {last}");
            }
        }
        previous = Some((i, frame));
    }
}

/// Receives until `video` video frames and `audio` audio packets arrived (or 10 s passed).
async fn receive(bob: &mut RoomClient, video: usize, audio: usize) -> (Vec<ReceivedFrame>, Vec<ReceivedFrame>) {
    let (mut videos, mut audios) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while videos.len() < video || audios.len() < audio {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(frame) = bob.next_frame(left).await else { break };
        match frame.kind() {
            MediaKind::Video => videos.push(frame),
            MediaKind::Audio => audios.push(frame),
        }
    }
    (videos, audios)
}

#[tokio::test]
async fn webrtc_rs_peer_receives_vp8_and_opus_another_published_over_the_websocket() {
    let server = TestServer::start().await;
    let codecs = ClientOptions::new(&[ClientCodec::Vp8, ClientCodec::Opus]);
    let alice_token = server.token("studio", "alice", json!({})).await;
    let alice = RoomClient::publisher(&server.base, &alice_token, codecs.clone()).await.expect("alice joins");
    let alice = Arc::new(alice);
    let sent = Arc::new(Sent::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(publish(alice.clone(), sent.clone(), stop.clone()));
    // A track is published once its first packet arrived.
    let mut published = Vec::new();
    for _ in 0..2 {
        let message = alice.expect("published", Duration::from_secs(10)).await.expect("published");
        published
            .push((message["track"]["id"].as_str().expect("track id").to_owned(), message["track"]["codec"].clone()));
    }
    published.sort_by_key(|(_, codec)| codec.to_string());
    assert_eq!(published.iter().map(|(_, c)| c.as_str().unwrap_or_default()).collect::<Vec<_>>(), ["opus", "vp8"]);

    let bob_token = server.token("studio", "bob", json!({})).await;
    let mut bob = RoomClient::receiver(&server.base, &bob_token, codecs.clone()).await.expect("bob joins");
    let mut subscribed = Vec::new();
    for _ in 0..2 {
        let message = bob.expect("subscribed", Duration::from_secs(10)).await.expect("subscribed");
        subscribed.push((message["track"].as_str().expect("track").to_owned(), message["codec"].clone()));
    }
    subscribed.sort_by_key(|(_, codec)| codec.to_string());
    assert_eq!(subscribed, published, "bob receives alice's tracks in their own codecs");

    // Bob's first frames: everything sent, in order, with the publisher's timing.
    let (videos, audios) = receive(&mut bob, 30, 60).await;
    assert!(videos.len() >= 30 && audios.len() >= 60, "received {} video, {} audio frames", videos.len(), audios.len());
    starts_at_a_keyframe(&videos);
    check_frames(&videos, VIDEO_TICKS, &|i| sent.video(i), synthetic::vp8_index);
    check_frames(&audios, AUDIO_TICKS, &|i| Some(synthetic::opus_packet(i)), synthetic::opus_index);

    // A second subscriber gets the same frames (the server packetises each once for both),
    // with picture ids of its own.
    let carol_token = server.token("studio", "carol", json!({})).await;
    let mut carol = RoomClient::receiver(&server.base, &carol_token, codecs.clone()).await.expect("carol joins");
    let (carol_videos, _) = receive(&mut carol, 30, 0).await;
    assert!(carol_videos.len() >= 30, "carol received {} video frames", carol_videos.len());
    starts_at_a_keyframe(&carol_videos);
    check_frames(&carol_videos, VIDEO_TICKS, &|i| sent.video(i), synthetic::vp8_index);
    carol.leave().await.expect("carol leaves");

    // Bob's PLI reaches Alice as a keyframe request, and the key frame she sends reaches Bob.
    let settled = eventually("alice's keyframe requests to settle", Duration::from_secs(10), || {
        let alice = alice.clone();
        async move {
            let before = alice.keyframe_requests();
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            (alice.keyframe_requests() == before).then_some(before)
        }
    })
    .await;
    bob.take_received();
    let frame = bob.next_frame_of(MediaKind::Video, Duration::from_secs(5)).await.expect("video keeps coming");
    let requested_after = synthetic::vp8_index(&frame.payload).expect("index");
    bob.request_keyframe().await.expect("bob sends a PLI");
    eventually("bob's PLI to reach alice", Duration::from_secs(5), || async {
        (alice.keyframe_requests() > settled).then_some(())
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (index, keyframe) = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = bob.next_frame_of(MediaKind::Video, left).await.expect("the requested key frame reaches bob");
        let index = synthetic::vp8_index(&frame.payload).expect("index");
        if frame.keyframe && index > requested_after {
            break (index, frame);
        }
    };
    assert_eq!(keyframe.payload, sent.video(index).expect("sent"), "the requested key frame's bytes");

    stop.store(true, Ordering::SeqCst);
    sender.await.expect("sender");
    let alice = Arc::try_unwrap(alice).ok().expect("the sender is done with alice");
    alice.leave().await.expect("alice leaves");
    bob.leave().await.expect("bob leaves");
    server.wait_for_no_peers().await;
}

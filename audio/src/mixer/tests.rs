//! The mixer against a real engine on tokio's paused clock: two publishers with different
//! tones, listeners that must hear the others and not themselves.

use std::time::{Duration, Instant};

use junction_core::{Codec, MediaFrame, MediaTime, PeerId, PublishRequest, RoomId, TransportKind};

use super::*;
use crate::codec::g711::G711Encoder;
use crate::codec::tone::{dominant_frequency, rms, sine_from};
use crate::codec::{AudioEncoder, G711Law};
use junction_engine::{Endpoint, Engine, EngineConfig, JoinRequest, TrackPublisher};

fn join_and_publish(engine: &Engine, room: &RoomId, who: &str) -> (Endpoint, TrackPublisher) {
    let joined =
        engine.join(JoinRequest::new(room.clone(), PeerId::new(who).unwrap(), TransportKind::Internal)).expect("join");
    let publisher = joined.endpoint.rpc.publish(PublishRequest::new("mic", Codec::Pcmu)).expect("publish");
    (joined.endpoint, publisher)
}

/// 20 ms of a tone as a PCMU frame, frame number `n`.
fn tone_frame(encoder: &mut G711Encoder, freq: f64, amplitude: f32, n: u64) -> MediaFrame {
    let pcm = sine_from(n * 160, freq, amplitude, 8000, 1, 160);
    let payload = encoder.encode(&pcm).expect("encode");
    MediaFrame::audio(Codec::Pcmu, MediaTime::new(n * 160, 8000), Instant::now(), payload)
}

#[tokio::test(start_paused = true)]
async fn each_listener_hears_the_others_and_not_itself() {
    let engine = Engine::new(EngineConfig::default());
    let mixer = Mixer::new(engine.clone(), MixConfig::default());
    let room = RoomId::new("mix").unwrap();
    let (_alice, alice_mic) = join_and_publish(&engine, &room, "alice");
    let (_bob, bob_mic) = join_and_publish(&engine, &room, "bob");
    let mut alice_hears = mixer.listen(&room, &PeerId::new("alice").unwrap()).unwrap();
    let mut bob_hears = mixer.listen(&room, &PeerId::new("bob").unwrap()).unwrap();
    let mut carol_hears = mixer.listen(&room, &PeerId::new("carol").unwrap()).unwrap();
    assert_eq!(mixer.active_rooms(), 1, "one mix for the room, however many listeners");
    let mixer_peer = PeerId::new(IDENTITY).unwrap();
    assert!(engine.room(&room).unwrap().peers.iter().any(|p| p.info.identity == mixer_peer));

    let (mut enc_a, mut enc_b) = (G711Encoder::new(G711Law::MuLaw), G711Encoder::new(G711Law::MuLaw));
    let (mut heard_a, mut heard_b, mut heard_c) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..100 {
        alice_mic.send(tone_frame(&mut enc_a, 440.0, 0.3, n)).unwrap();
        bob_mic.send(tone_frame(&mut enc_b, 1000.0, 0.3, n)).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Some(frame) = alice_hears.try_recv() {
            heard_a.extend(frame);
        }
        while let Some(frame) = bob_hears.try_recv() {
            heard_b.extend(frame);
        }
        while let Some(frame) = carol_hears.try_recv() {
            heard_c.extend(frame);
        }
    }
    // The second half, well past the prebuffer.
    let tail = |v: &Vec<f32>| v[v.len() / 2..].to_vec();
    let (a, b, c) = (tail(&heard_a), tail(&heard_b), tail(&heard_c));
    let freq = |s: &[f32]| dominant_frequency(s, 1, MIX_RATE).unwrap_or(0.0);
    assert!((freq(&a) - 1000.0).abs() < 5.0, "alice hears bob's 1000 Hz, got {}", freq(&a));
    assert!((freq(&b) - 440.0).abs() < 5.0, "bob hears alice's 440 Hz, got {}", freq(&b));
    // Carol hears both: her mix is alice's minus-one plus bob's, sample for sample.
    assert_eq!(heard_a.len(), heard_c.len());
    let residual: Vec<f32> = heard_c.iter().zip(heard_a.iter().zip(&heard_b)).map(|(c, (a, b))| c - a - b).collect();
    assert!(rms(&residual) < 1e-4, "carol's mix is the sum of both voices");
    assert!(rms(&c) > 0.2, "and it is loud: {}", rms(&c));

    drop((alice_hears, bob_hears, carol_hears));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mixer.active_rooms(), 0, "the mix stops with its last listener");
    assert!(!engine.room(&room).unwrap().peers.iter().any(|p| p.info.identity == mixer_peer), "and leaves the room");
}

#[tokio::test(start_paused = true)]
async fn a_closed_room_ends_the_listeners() {
    let engine = Engine::new(EngineConfig::default());
    let mixer = Mixer::new(engine.clone(), MixConfig::default());
    let room = RoomId::new("gone").unwrap();
    let mut listener = mixer.listen(&room, &PeerId::new("phone").unwrap()).unwrap();
    assert!(listener.recv().await.is_some(), "silence frames while nobody speaks");
    engine.delete_room(&room).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(1), async { while listener.recv().await.is_some() {} }).await;
    assert!(ended.is_ok(), "recv returns None once the room is gone");
    assert_eq!(mixer.active_rooms(), 0);
    assert_eq!(engine.stats().peers, 0);
}

#[tokio::test(start_paused = true)]
async fn the_mixer_takes_no_seat_in_a_full_room() {
    let engine = Engine::new(EngineConfig::default());
    let room = RoomId::new("one-seat").unwrap();
    engine.create_room(Some(room.clone()), junction_core::RoomOptions { max_peers: 1, ..Default::default() }).unwrap();
    let (_phone, _mic) = join_and_publish(&engine, &room, "phone");
    let mixer = Mixer::new(engine.clone(), MixConfig::default());
    let _listener = mixer.listen(&room, &PeerId::new("phone").unwrap()).expect("the mixer joins a full room");
    let late = engine.join(JoinRequest::new(room.clone(), PeerId::new("late").unwrap(), TransportKind::Webrtc));
    assert!(matches!(late, Err(junction_core::ContractError::RoomFull { .. })), "the seat is still the phone's");
}

/// A frame payload that makes the room mix task panic (tests only).
pub(super) const PANIC_PAYLOAD: &[u8] = b"junction-test: panic in the mix";

/// Alice speaks `frames` 20 ms frames of 440 Hz from frame `from`; returns what `listener` heard.
async fn speak(mic: &TrackPublisher, listener: &mut MixListener, from: u64, frames: u64) -> Vec<f32> {
    let mut encoder = G711Encoder::new(G711Law::MuLaw);
    let mut heard = Vec::new();
    for n in from..from + frames {
        mic.send(tone_frame(&mut encoder, 440.0, 0.3, n)).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Some(frame) = listener.try_recv() {
            heard.extend(frame);
        }
    }
    heard
}

#[tokio::test(start_paused = true)]
async fn a_panicking_mix_is_restarted_for_the_same_listeners() {
    let engine = Engine::new(EngineConfig::default());
    let mixer = Mixer::new(engine.clone(), MixConfig::default());
    let room = RoomId::new("phoenix").unwrap();
    let (_alice, alice_mic) = join_and_publish(&engine, &room, "alice");
    let mut bob_hears = mixer.listen(&room, &PeerId::new("bob").unwrap()).unwrap();
    let before = speak(&alice_mic, &mut bob_hears, 0, 50).await;
    assert!((dominant_frequency(&before[before.len() / 2..], 1, MIX_RATE).unwrap() - 440.0).abs() < 5.0);

    let poison = MediaFrame::audio(Codec::Pcmu, MediaTime::new(50 * 160, 8000), Instant::now(), PANIC_PAYLOAD.into());
    alice_mic.send(poison).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    while bob_hears.try_recv().is_some() {}
    let after = speak(&alice_mic, &mut bob_hears, 60, 50).await;
    assert!(after.len() >= 960 * 40, "the listener is fed again: {} samples", after.len());
    let found = dominant_frequency(&after[after.len() / 2..], 1, MIX_RATE).unwrap();
    assert!((found - 440.0).abs() < 5.0, "and hears alice again: {found} Hz");
    assert_eq!(mixer.active_rooms(), 1);
    let mixer_peer = PeerId::new(IDENTITY).unwrap();
    assert_eq!(engine.room(&room).unwrap().peers.iter().filter(|p| p.info.identity == mixer_peer).count(), 1);
}

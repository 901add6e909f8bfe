//! Helpers for driving the engine in tests: an engine on a manual clock, joins, frame builders.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::{
    Codec, EndpointEvent, MediaFrame, MediaOut, MediaTime, PeerId, PublishRequest, RoomId, TrackId, TransportKind,
};
use junction_engine::{AdapterRegistry, Endpoint, Engine, EngineConfig, JoinRequest, Joined, ManualClock};

pub fn ids(room: &str, peer: &str) -> (RoomId, PeerId) {
    (RoomId::new(room).unwrap(), PeerId::new(peer).unwrap())
}

pub fn engine() -> (Engine, ManualClock) {
    engine_with(unhurried(), AdapterRegistry::default())
}

/// The default configuration, but subscriber queues keep frames for an hour: for tests that
/// move the clock on and read what was queued only at the end.
pub fn unhurried() -> EngineConfig {
    EngineConfig { subscriber_queue_delay: Duration::from_secs(3600), ..EngineConfig::default() }
}

pub fn engine_with(config: EngineConfig, adapters: AdapterRegistry) -> (Engine, ManualClock) {
    let clock = ManualClock::new();
    (Engine::with_parts(config, Arc::new(clock.clone()), adapters), clock)
}

pub fn join(engine: &Engine, room: &str, peer: &str) -> Joined {
    let (room, peer) = ids(room, peer);
    engine.join(JoinRequest::new(room, peer, TransportKind::Internal)).expect("join")
}

pub fn join_with(engine: &Engine, room: &str, peer: &str, f: impl FnOnce(&mut JoinRequest)) -> Joined {
    let (room, peer) = ids(room, peer);
    let mut req = JoinRequest::new(room, peer, TransportKind::Internal);
    f(&mut req);
    engine.join(req).expect("join")
}

pub fn video(seq: u64, keyframe: bool, at: Instant) -> MediaFrame {
    MediaFrame::video(Codec::Vp8, MediaTime::new(seq * 3000, 90_000), keyframe, at, Bytes::from(format!("v{seq}")))
}

pub fn audio(seq: u64, at: Instant) -> MediaFrame {
    MediaFrame::audio(Codec::Opus, MediaTime::new(seq * 960, 48_000), at, Bytes::from(format!("a{seq}")))
}

pub fn publish(endpoint: &Endpoint, name: &str, codec: Codec) -> junction_engine::TrackPublisher {
    endpoint.rpc.publish(PublishRequest::new(name, codec)).expect("publish")
}

/// Every event queued for this endpoint right now.
pub fn events(endpoint: &mut Endpoint) -> Vec<EndpointEvent> {
    std::iter::from_fn(|| endpoint.rpc.try_next_event()).collect()
}

/// Every media item queued for this endpoint right now.
pub fn media(endpoint: &mut Endpoint) -> Vec<MediaOut> {
    let mut out = Vec::new();
    endpoint.media.drain_into(&mut out, usize::MAX);
    out
}

pub fn frames_of(items: &[MediaOut], track: &TrackId) -> Vec<MediaFrame> {
    items
        .iter()
        .filter_map(|m| match m {
            MediaOut::Frame { track: t, frame } if t == track => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

pub fn keyframe_requests(items: &[MediaOut]) -> Vec<(TrackId, u8)> {
    items
        .iter()
        .filter_map(|m| match m {
            MediaOut::KeyframeRequest { track, layer } => Some((track.clone(), *layer)),
            _ => None,
        })
        .collect()
}

pub const FRAME: Duration = Duration::from_millis(33);

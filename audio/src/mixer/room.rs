//! One room's mix task: it owns the mixer's endpoint in the room, decodes every audio track
//! once (to 48 kHz mono), and every 20 ms hands each listener its minus-one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use junction_core::{
    Codec, EndpointEvent, LayerPreference, MediaKind, MediaOut, RoomId, SubscribeOptions, TrackId, TrackInfo,
};
use parking_lot::Mutex;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::RoomMix;
use super::core::{MIX_RATE, MixConfig, MixCore};
use super::speaker::SpeakerTracker;
use crate::codec::g711::{G711Decoder, G711Law};
use crate::codec::opus::OpusDecoder;
use crate::codec::{AudioDecoder, CodecError, Resampler};
use junction_engine::endpoint::{EndpointMedia, EndpointRpc};
use junction_engine::room::Joined;

/// Codecs the mixer decodes itself; others reach it through the engine's transcoded variants.
const DECODED: [Codec; 3] = [Codec::Opus, Codec::Pcmu, Codec::Pcma];

/// One source track: its decoder and the resampler to the mix rate. Public so that the fuzz
/// target for a phone's media can run what the mixer runs on the payloads a call publishes.
pub struct SourceDecoder {
    decoder: Box<dyn AudioDecoder>,
    resampler: Resampler,
    decoded: Vec<f32>,
    mono: Vec<f32>,
    resampled: Vec<f32>,
    failures: u64,
}

impl SourceDecoder {
    /// A decoder for a track in `codec`: Opus, PCMU or PCMA (the codecs the mixer takes; any
    /// other is read as PCMU).
    pub fn new(codec: Codec) -> Result<Self, CodecError> {
        let decoder: Box<dyn AudioDecoder> = match codec {
            Codec::Opus => Box::new(OpusDecoder::new(1)?),
            other => Box::new(G711Decoder::new(G711Law::from_codec(other).unwrap_or(G711Law::MuLaw))),
        };
        let resampler = Resampler::new(decoder.sample_rate(), MIX_RATE, 1)?;
        Ok(Self { decoder, resampler, decoded: Vec::new(), mono: Vec::new(), resampled: Vec::new(), failures: 0 })
    }

    /// Decodes one frame into 48 kHz mono samples (in `self.resampled`).
    pub fn decode(&mut self, payload: &[u8]) -> Result<&[f32], CodecError> {
        self.decoded.clear();
        self.mono.clear();
        self.resampled.clear();
        self.decoder.decode(payload, &mut self.decoded)?;
        crate::codec::pcm::remix(&self.decoded, self.decoder.channels(), 1, &mut self.mono);
        self.resampler.process(&self.mono, &mut self.resampled)?;
        Ok(&self.resampled)
    }
}

pub(super) struct RoomTask {
    room: RoomId,
    rpc: EndpointRpc,
    media: EndpointMedia,
    existing: Vec<TrackInfo>,
    mix: Arc<RoomMix>,
    core: MixCore,
    speakers: SpeakerTracker,
    decoders: HashMap<TrackId, SourceDecoder>,
    rooms: Arc<Mutex<HashMap<RoomId, Arc<RoomMix>>>>,
}

impl RoomTask {
    pub(super) fn new(
        joined: Joined,
        mix: Arc<RoomMix>,
        config: MixConfig,
        rooms: Arc<Mutex<HashMap<RoomId, Arc<RoomMix>>>>,
        room: RoomId,
    ) -> Self {
        let (rpc, media) = joined.endpoint.split();
        Self {
            room,
            rpc,
            media,
            existing: joined.tracks,
            mix,
            core: MixCore::new(config),
            speakers: SpeakerTracker::default(),
            decoders: HashMap::new(),
            rooms,
        }
    }

    fn add(&mut self, track: &TrackInfo) {
        if track.kind != MediaKind::Audio || self.decoders.contains_key(&track.id) {
            return;
        }
        let options = SubscribeOptions { codecs: DECODED.to_vec(), layer: LayerPreference::Highest };
        let subscribed = match self.rpc.subscribe(&track.id, options) {
            Ok(subscribed) => subscribed,
            Err(err) => {
                debug!(room = %self.room, track = %track.id, "mixer cannot take this track: {err}");
                return;
            }
        };
        match SourceDecoder::new(subscribed.codec) {
            Ok(decoder) => {
                self.decoders.insert(track.id.clone(), decoder);
                self.core.add_source(track.id.clone(), track.peer.clone());
                debug!(room = %self.room, track = %track.id, peer = %track.peer, codec = %subscribed.codec, "mixing track");
            }
            Err(err) => warn!(room = %self.room, track = %track.id, "mixer cannot decode this track: {err}"),
        }
    }

    fn remove(&mut self, track: &TrackId) {
        self.decoders.remove(track);
        self.core.remove_source(track);
    }

    fn on_frame(&mut self, track: &TrackId, payload: &[u8]) {
        // Lets the tests stand in for a bug in the mix: see `a_panicking_mix_is_restarted`.
        #[cfg(test)]
        if payload == super::tests::PANIC_PAYLOAD {
            panic!("test-injected panic in the room mix");
        }
        let Some(decoder) = self.decoders.get_mut(track) else { return };
        match decoder.decode(payload) {
            Ok(samples) => self.core.push(track, samples),
            Err(err) => {
                decoder.failures += 1;
                if decoder.failures.is_power_of_two() {
                    debug!(room = %self.room, track = %track, failures = decoder.failures, "mixer: {err}");
                }
            }
        }
    }

    /// Sends each listener its minus-one. Returns false once nobody listens any more (the
    /// mix is then unregistered, so a new listener starts a new one).
    fn deliver(&mut self) -> bool {
        let frame = self.core.tick();
        if let Some(speaker) = self.speakers.observe(&frame) {
            debug!(room = %self.room, %speaker, "active speaker");
            self.mix.speaker.send_replace(Some(speaker));
        }
        {
            let listeners = self.mix.listeners.lock();
            if !listeners.is_empty() {
                for listener in listeners.iter() {
                    // A listener that does not keep up loses frames, never stalls the mix.
                    let _ = listener.frames.try_send(frame.minus(&listener.identity));
                }
                return true;
            }
        }
        let mut rooms = self.rooms.lock();
        if !self.mix.listeners.lock().is_empty() {
            return true;
        }
        self.unregister(&mut rooms);
        false
    }

    fn unregister(&self, rooms: &mut HashMap<RoomId, Arc<RoomMix>>) {
        unregister(rooms, &self.room, &self.mix);
    }

    pub(super) async fn run(mut self) {
        info!(room = %self.room, "room mix started");
        for track in std::mem::take(&mut self.existing) {
            self.add(&track);
        }
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                _ = self.mix.stop.cancelled() => break,
                event = self.rpc.next_event() => match event {
                    Some(EndpointEvent::TrackPublished(track)) => self.add(&track),
                    Some(EndpointEvent::TrackUnpublished { track, .. } | EndpointEvent::Unsubscribed { track }) => {
                        self.remove(&track)
                    }
                    Some(EndpointEvent::Closed { reason }) => {
                        debug!(room = %self.room, reason = reason.as_str(), "mixer left the room");
                        break;
                    }
                    None => break,
                    Some(_) => {}
                },
                item = self.media.recv() => match item {
                    Some(first) => {
                        batch.push(first);
                        self.media.drain_into(&mut batch, 64);
                        for item in batch.drain(..) {
                            if let MediaOut::Frame { track, frame } = item {
                                self.on_frame(&track, &frame.payload);
                            }
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if !self.deliver() {
                        break;
                    }
                }
            }
        }
        end_mix(&self.rooms, &self.room, &self.mix);
        info!(room = %self.room, "room mix stopped");
    }
}

fn unregister(rooms: &mut HashMap<RoomId, Arc<RoomMix>>, room: &RoomId, mix: &Arc<RoomMix>) {
    mix.stop.cancel();
    if rooms.get(room).is_some_and(|m| Arc::ptr_eq(m, mix)) {
        rooms.remove(room);
    }
}

/// Ends a room's mix for good: a new listener starts a new one, and the listeners still
/// attached see the end (their senders go with the slots).
pub(super) fn end_mix(rooms: &Mutex<HashMap<RoomId, Arc<RoomMix>>>, room: &RoomId, mix: &Arc<RoomMix>) {
    unregister(&mut rooms.lock(), room, mix);
    mix.listeners.lock().clear();
}

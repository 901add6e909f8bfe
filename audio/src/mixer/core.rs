//! The mixing arithmetic, with no clock and no I/O: a jitter buffer of 48 kHz mono PCM per
//! source track, and every 20 ms tick one frame that sums the N loudest sources, from which
//! each listener gets its *minus-one* — the mix without the sources it publishes itself.

use std::collections::{BTreeMap, VecDeque};

use junction_core::{PeerId, TrackId};

/// The mixer's sample rate.
pub const MIX_RATE: u32 = 48_000;
/// Samples in one 20 ms mix frame (mono).
pub const FRAME_SAMPLES: usize = 960;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixConfig {
    /// How many of the loudest sources are mixed at a time.
    pub speakers: usize,
    /// Frames a source buffers before it is first mixed (absorbs network jitter).
    pub prebuffer_frames: usize,
    /// Most frames a source may buffer; older audio is dropped beyond that (bounds latency).
    pub max_buffer_frames: usize,
}

impl Default for MixConfig {
    fn default() -> Self {
        Self { speakers: 3, prebuffer_frames: 2, max_buffer_frames: 10 }
    }
}

struct Source {
    owner: PeerId,
    buffer: VecDeque<f32>,
    /// Being mixed; false while (re)filling the prebuffer after a start or an underrun.
    playing: bool,
}

/// One tick's mix: the sum of the selected sources, and each of them on its own so a
/// listener's own voice can be taken back out.
#[derive(Debug, Clone, Default)]
pub struct MixFrame {
    total: Vec<f32>,
    parts: Vec<(PeerId, Vec<f32>)>,
}

impl MixFrame {
    /// The mix without what `listener` publishes, clipped to -1..=1.
    pub fn minus(&self, listener: &PeerId) -> Vec<f32> {
        let mut out = self.total.clone();
        if out.is_empty() {
            out.resize(FRAME_SAMPLES, 0.0);
        }
        for (owner, part) in &self.parts {
            if owner == listener {
                for (o, p) in out.iter_mut().zip(part) {
                    *o -= p;
                }
            }
        }
        for sample in &mut out {
            *sample = sample.clamp(-1.0, 1.0);
        }
        out
    }

    /// Whose audio is in this frame.
    pub fn speakers(&self) -> Vec<&PeerId> {
        self.parts.iter().map(|(peer, _)| peer).collect()
    }

    /// The RMS level of each speaker in this frame.
    pub fn levels(&self) -> impl Iterator<Item = (&PeerId, f32)> {
        self.parts.iter().map(|(peer, part)| {
            let energy: f32 = part.iter().map(|s| s * s).sum();
            (peer, (energy / part.len().max(1) as f32).sqrt())
        })
    }
}

/// Every source of one room and the mixing of them.
pub struct MixCore {
    config: MixConfig,
    sources: BTreeMap<TrackId, Source>,
}

impl MixCore {
    pub fn new(config: MixConfig) -> Self {
        Self { config, sources: BTreeMap::new() }
    }

    pub fn add_source(&mut self, track: TrackId, owner: PeerId) {
        self.sources.entry(track).or_insert(Source { owner, buffer: VecDeque::new(), playing: false });
    }

    pub fn remove_source(&mut self, track: &TrackId) {
        self.sources.remove(track);
    }

    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// Appends decoded 48 kHz mono samples of `track`.
    pub fn push(&mut self, track: &TrackId, samples: &[f32]) {
        let max = self.config.max_buffer_frames.max(1) * FRAME_SAMPLES;
        let Some(source) = self.sources.get_mut(track) else { return };
        source.buffer.extend(samples.iter().copied());
        let excess = source.buffer.len().saturating_sub(max);
        source.buffer.drain(..excess);
    }

    /// Takes the next 20 ms of every playing source and mixes the loudest.
    pub fn tick(&mut self) -> MixFrame {
        let prebuffer = self.config.prebuffer_frames * FRAME_SAMPLES;
        let mut chunks: Vec<(f32, PeerId, Vec<f32>)> = Vec::new();
        for source in self.sources.values_mut() {
            if !source.playing {
                if source.buffer.len() < prebuffer.max(FRAME_SAMPLES) {
                    continue;
                }
                source.playing = true;
            }
            if source.buffer.len() < FRAME_SAMPLES {
                // Underrun: play what is left, then refill the prebuffer.
                source.playing = false;
                if source.buffer.is_empty() {
                    continue;
                }
            }
            let take = source.buffer.len().min(FRAME_SAMPLES);
            let mut chunk: Vec<f32> = source.buffer.drain(..take).collect();
            chunk.resize(FRAME_SAMPLES, 0.0);
            let energy = chunk.iter().map(|s| s * s).sum::<f32>();
            chunks.push((energy, source.owner.clone(), chunk));
        }
        chunks.sort_by(|a, b| b.0.total_cmp(&a.0));
        chunks.truncate(self.config.speakers.max(1));
        let mut total = vec![0.0f32; FRAME_SAMPLES];
        for (_, _, chunk) in &chunks {
            for (t, s) in total.iter_mut().zip(chunk) {
                *t += s;
            }
        }
        MixFrame { total, parts: chunks.into_iter().map(|(_, owner, chunk)| (owner, chunk)).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str) -> PeerId {
        PeerId::new(name).unwrap()
    }

    fn track(name: &str) -> TrackId {
        TrackId::new(name).unwrap()
    }

    fn level(value: f32) -> Vec<f32> {
        vec![value; FRAME_SAMPLES]
    }

    #[test]
    fn each_listener_hears_everyone_but_itself() {
        let mut core = MixCore::new(MixConfig { prebuffer_frames: 1, ..MixConfig::default() });
        core.add_source(track("a"), peer("alice"));
        core.add_source(track("b"), peer("bob"));
        core.push(&track("a"), &level(0.25));
        core.push(&track("b"), &level(0.5));
        let frame = core.tick();
        assert_eq!(frame.minus(&peer("alice"))[0], 0.5);
        assert_eq!(frame.minus(&peer("bob"))[0], 0.25);
        assert_eq!(frame.minus(&peer("carol"))[0], 0.75);
        assert_eq!(frame.speakers().len(), 2);
    }

    #[test]
    fn only_the_loudest_are_mixed_and_the_sum_is_clipped() {
        let mut core = MixCore::new(MixConfig { speakers: 2, prebuffer_frames: 1, ..MixConfig::default() });
        for (name, value) in [("a", 0.9), ("b", 0.6), ("c", 0.1)] {
            core.add_source(track(name), peer(name));
            core.push(&track(name), &level(value));
        }
        let frame = core.tick();
        let mut speakers: Vec<&str> = frame.speakers().iter().map(|p| p.as_str()).collect();
        speakers.sort();
        assert_eq!(speakers, ["a", "b"]);
        assert_eq!(frame.minus(&peer("c"))[0], 1.0, "0.9 + 0.6 clipped");
        assert!((frame.minus(&peer("a"))[0] - 0.6).abs() < 1e-6);
    }

    #[test]
    fn sources_prebuffer_and_recover_from_underruns() {
        let mut core = MixCore::new(MixConfig { prebuffer_frames: 2, ..MixConfig::default() });
        core.add_source(track("a"), peer("alice"));
        core.push(&track("a"), &level(0.5));
        assert!(core.tick().speakers().is_empty(), "one frame is not enough to start");
        core.push(&track("a"), &level(0.5));
        assert_eq!(core.tick().speakers().len(), 1);
        assert_eq!(core.tick().speakers().len(), 1);
        assert!(core.tick().speakers().is_empty(), "ran dry: waits for the prebuffer again");
        assert_eq!(core.tick().minus(&peer("bob")), vec![0.0; FRAME_SAMPLES], "silence, not nothing");
    }

    #[test]
    fn buffers_are_bounded() {
        let mut core = MixCore::new(MixConfig { max_buffer_frames: 3, prebuffer_frames: 1, ..MixConfig::default() });
        core.add_source(track("a"), peer("alice"));
        for i in 0..10 {
            core.push(&track("a"), &level(i as f32 / 10.0));
        }
        // Only the newest three frames are left: 0.7, 0.8, 0.9.
        assert!((core.tick().minus(&peer("x"))[0] - 0.7).abs() < 1e-6);
        core.remove_source(&track("a"));
        assert_eq!(core.source_count(), 0);
    }
}

//! Who the room's active speaker is, from the mix's ticks (sans I/O: one [`MixFrame`] in every
//! 20 ms, a new speaker out when it changes). Each speaker's level is smoothed over about
//! 200 ms; the loudest smoothed level above speech level (-40 dBFS) challenges the active
//! speaker, and takes over once it has stayed the loudest for [`HOLD`] — so a cough or a short
//! interjection does not switch a following view, and a pause keeps the last speaker on.

use std::collections::HashMap;

use junction_core::PeerId;

use super::core::MixFrame;

/// How long a challenger must stay the loudest to become the active speaker, in 20 ms ticks
/// (1 s); with nobody active yet, the first speaker takes over at once.
pub const HOLD: u32 = 50;
/// The RMS level speech is above (-40 dBFS).
const SPEECH_RMS: f32 = 0.01;
/// The weight of a new tick in a smoothed level (about 10 ticks, 200 ms).
const SMOOTHING: f32 = 0.1;
/// A level this low is forgotten (the map holds only peers heard recently).
const FORGOTTEN_RMS: f32 = 1e-4;

#[derive(Debug, Default)]
pub struct SpeakerTracker {
    levels: HashMap<PeerId, f32>,
    active: Option<PeerId>,
    challenger: Option<(PeerId, u32)>,
}

impl SpeakerTracker {
    pub fn active(&self) -> Option<&PeerId> {
        self.active.as_ref()
    }

    /// Takes one tick of the mix; the new active speaker when it changed.
    pub fn observe(&mut self, frame: &MixFrame) -> Option<PeerId> {
        for level in self.levels.values_mut() {
            *level *= 1.0 - SMOOTHING;
        }
        for (peer, rms) in frame.levels() {
            *self.levels.entry(peer.clone()).or_default() += SMOOTHING * rms;
        }
        self.levels.retain(|_, level| *level >= FORGOTTEN_RMS);
        let loudest = self
            .levels
            .iter()
            .filter(|(_, level)| **level >= SPEECH_RMS)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(peer, _)| peer.clone());
        let Some(loudest) = loudest else {
            self.challenger = None;
            return None;
        };
        if self.active.as_ref() == Some(&loudest) {
            self.challenger = None;
            return None;
        }
        let held = match self.challenger.take() {
            Some((peer, ticks)) if peer == loudest => ticks + 1,
            _ => 1,
        };
        if self.active.is_none() || held >= HOLD {
            self.active = Some(loudest.clone());
            return Some(loudest);
        }
        self.challenger = Some((loudest, held));
        None
    }
}

#[cfg(test)]
mod tests {
    use junction_core::TrackId;

    use super::*;
    use crate::mixer::core::{FRAME_SAMPLES, MixConfig, MixCore};

    /// Ticks of a mix in which `a` and `b` speak at these RMS levels.
    fn tick(core: &mut MixCore, a: f32, b: f32) -> MixFrame {
        for (name, rms) in [("a", a), ("b", b)] {
            // A square wave of amplitude `rms` has that RMS.
            let samples: Vec<f32> = (0..FRAME_SAMPLES).map(|i| if i % 2 == 0 { rms } else { -rms }).collect();
            core.push(&TrackId::new(name).unwrap(), &samples);
        }
        core.tick()
    }

    #[test]
    fn the_loudest_takes_over_after_holding_and_a_pause_keeps_the_last() {
        let mut core = MixCore::new(MixConfig { prebuffer_frames: 1, ..MixConfig::default() });
        for name in ["a", "b"] {
            core.add_source(TrackId::new(name).unwrap(), PeerId::new(name).unwrap());
        }
        let mut tracker = SpeakerTracker::default();
        let (a, b) = (PeerId::new("a").unwrap(), PeerId::new("b").unwrap());
        // Silence: nobody.
        for _ in 0..20 {
            assert_eq!(tracker.observe(&tick(&mut core, 0.0, 0.001)), None);
        }
        // `a` speaks: active within a few ticks (its smoothed level crosses speech level).
        let changes: Vec<_> = (0..20).filter_map(|_| tracker.observe(&tick(&mut core, 0.2, 0.001))).collect();
        assert_eq!(changes, vec![a.clone()]);
        // `b` coughs louder for 0.4 s: no switch.
        for _ in 0..20 {
            assert_eq!(tracker.observe(&tick(&mut core, 0.05, 0.5)), None);
        }
        assert_eq!(tracker.active(), Some(&a));
        for _ in 0..30 {
            assert_eq!(tracker.observe(&tick(&mut core, 0.3, 0.0)), None);
        }
        // `b` talks: it takes over once it has been the loudest for a second.
        let switched = (1..=80).find(|_| tracker.observe(&tick(&mut core, 0.05, 0.3)).is_some()).unwrap();
        assert!((HOLD as usize..HOLD as usize + 15).contains(&switched), "after {switched} ticks");
        assert_eq!(tracker.active(), Some(&b));
        // Everyone pauses: `b` stays.
        for _ in 0..100 {
            assert_eq!(tracker.observe(&tick(&mut core, 0.0, 0.0)), None);
        }
        assert_eq!(tracker.active(), Some(&b));
    }
}

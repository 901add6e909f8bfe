//! One subscriber's view of one track: which simulcast layer it is on, whether it waits for a
//! keyframe, the timestamp offset that keeps its timeline continuous across layer switches, and
//! the bounded queue its frames go into.
//!
//! The publisher's thread runs [`Subscription::offer`] for every frame and every subscriber, so
//! it takes one uncontended lock and never blocks: a frame the peer's queue refuses (at its cap,
//! or a delta of a video track whose stale frames the queue dropped) sends the subscriber back
//! to "waiting for a keyframe" (video) and asks the publisher for one.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use junction_core::{LayerPreference, MediaFrame, MediaKind, TrackId};

use crate::meter::{LinkQuality, RateMeter};
use crate::queue::{MediaSender, Refused};
use parking_lot::Mutex;

/// What became of one frame offered to one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    Forwarded,
    /// Not for this subscriber (another layer, or before its first keyframe).
    Skipped,
    /// The subscriber's queue was full.
    Dropped,
}

/// Set when a subscriber needs a keyframe of a layer it is not receiving yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WantKeyframe(pub u8);

pub(crate) struct Subscription {
    /// The id the subscriber knows the track by (the original's, even when attached to a
    /// transcoded variant).
    pub(crate) track: TrackId,
    tx: MediaSender,
    state: Mutex<SubState>,
    /// The bitrate this subscriber can take, in bits/s (0 = unknown).
    pub(crate) wanted_bps: AtomicU64,
    /// What is forwarded to this subscriber, for the stats API.
    pub(crate) rate: RateMeter,
    /// The subscriber's connection as its transport measures it.
    pub(crate) link: Mutex<Option<LinkQuality>>,
}

struct SubState {
    preference: LayerPreference,
    /// The layer being forwarded; `None` while waiting for a keyframe.
    current: Option<u8>,
    /// The last layer forwarded, kept across drops so resuming on it keeps the same offset.
    last_layer: Option<u8>,
    /// Added to publisher timestamps (simulcast only).
    offset: i64,
    last_out: Option<(u64, Instant)>,
    /// Set while a simulcast subscriber with nothing flowing waits for a keyframe.
    waiting: Option<Waiting>,
}

struct Waiting {
    since: Instant,
    /// The best layer under the preference seen flowing meanwhile: the one to fall back to.
    best: u8,
}

/// How long a simulcast subscriber with nothing flowing waits for its target layer's keyframe
/// before it starts from a keyframe of another layer under its preference. A layer can count as
/// active (a packet was seen) while its encoder produces nothing yet.
const TARGET_KEYFRAME_PATIENCE: Duration = Duration::from_millis(1500);

impl Subscription {
    pub(crate) fn new(track: TrackId, tx: MediaSender, preference: LayerPreference) -> Self {
        Self {
            track,
            tx,
            state: Mutex::new(SubState {
                preference,
                current: None,
                last_layer: None,
                offset: 0,
                last_out: None,
                waiting: None,
            }),
            wanted_bps: AtomicU64::new(0),
            rate: RateMeter::default(),
            link: Mutex::new(None),
        }
    }

    /// Waits for a keyframe again before forwarding anything (after frames were held back).
    pub(crate) fn restart(&self) {
        self.state.lock().current = None;
    }

    pub(crate) fn set_preference(&self, preference: LayerPreference) {
        self.state.lock().preference = preference;
    }

    pub(crate) fn preference(&self) -> LayerPreference {
        self.state.lock().preference
    }

    /// The layer being forwarded, if any.
    pub(crate) fn current_layer(&self) -> Option<u8> {
        self.state.lock().current
    }

    /// Offers one frame of a track with `layer_count` layers, of which `active` (a bit mask) are
    /// currently being sent, at `now` (the engine clock). Returns what happened and, when the
    /// subscriber waits for a layer, which keyframe it needs.
    pub(crate) fn offer(
        &self,
        frame: &MediaFrame,
        layer_count: u8,
        active: u8,
        now: Instant,
    ) -> (Offer, Option<WantKeyframe>) {
        let simulcast = layer_count > 1;
        let mut st = self.state.lock();
        let target = if simulcast { target_layer(st.preference, layer_count, active) } else { 0 };
        let mut want = None;
        if st.current == Some(frame.layer) {
            if target != frame.layer {
                want = Some(WantKeyframe(target));
            }
        } else {
            // Only a subscriber with nothing flowing falls back; one on another layer keeps it
            // until the target's keyframe.
            let mut fallback = false;
            if st.current.is_none() && simulcast && frame.layer <= st.preference.cap() {
                let waiting = st.waiting.get_or_insert(Waiting { since: frame.arrival, best: frame.layer });
                fallback = frame.arrival.saturating_duration_since(waiting.since) >= TARGET_KEYFRAME_PATIENCE;
                if frame.layer > waiting.best || active & (1 << waiting.best) == 0 {
                    waiting.best = frame.layer;
                }
            }
            if frame.layer != target && !(fallback && frame.keyframe) {
                // The target's keyframe may never come (an encoder the publisher paused); the
                // best layer that does flow is asked for one too, or the fallback would wait on
                // a keyframe nobody requested.
                let ask_fallback = fallback && st.waiting.as_ref().is_some_and(|w| w.best == frame.layer);
                return (Offer::Skipped, ask_fallback.then_some(WantKeyframe(frame.layer)));
            }
            if !frame.keyframe {
                return (Offer::Skipped, Some(WantKeyframe(target)));
            }
            st.waiting = None;
            if frame.layer != target {
                want = Some(WantKeyframe(target));
            }
            if simulcast && st.last_layer != Some(frame.layer) {
                st.offset = match st.last_out {
                    Some((ticks, at)) => {
                        let elapsed = frame.arrival.saturating_duration_since(at);
                        let step = (elapsed.as_nanos() * frame.time.rate as u128 / 1_000_000_000).max(1) as i64;
                        (ticks as i64 + step) - frame.time.ticks as i64
                    }
                    None => 0,
                };
            }
            st.current = Some(frame.layer);
            st.last_layer = Some(frame.layer);
        }

        let mut out = frame.clone();
        if st.offset != 0 {
            out.time.ticks = (out.time.ticks as i64).wrapping_add(st.offset) as u64;
        }
        if simulcast {
            st.last_out = Some((out.time.ticks, frame.arrival));
        }
        match self.tx.try_send(self.track.clone(), out, now) {
            Ok(()) => (Offer::Forwarded, want),
            Err(Refused::Dropped) => {
                if frame.codec.kind() == MediaKind::Video {
                    st.current = None;
                    want = Some(WantKeyframe(target));
                }
                (Offer::Dropped, want)
            }
            Err(Refused::Closed) => (Offer::Skipped, None),
        }
    }
}

/// The layer a subscriber should receive: the best active layer at or under its preference; if
/// none under it is active, the lowest active one; with nothing active, the preference itself.
pub(crate) fn target_layer(preference: LayerPreference, layer_count: u8, active: u8) -> u8 {
    let cap = preference.cap().min(layer_count.saturating_sub(1));
    if active == 0 {
        return cap;
    }
    (0..=cap).rev().find(|l| active & (1 << l) != 0).unwrap_or_else(|| active.trailing_zeros() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_prefers_best_active_layer_under_the_cap() {
        let all = 0b111;
        assert_eq!(target_layer(LayerPreference::Highest, 3, all), 2);
        assert_eq!(target_layer(LayerPreference::AtMost(1), 3, all), 1);
        assert_eq!(target_layer(LayerPreference::Highest, 3, 0b011), 1, "top layer paused");
        assert_eq!(target_layer(LayerPreference::AtMost(0), 3, 0b110), 1, "low layer paused");
        assert_eq!(target_layer(LayerPreference::AtMost(9), 2, 0), 1, "nothing seen yet");
    }

    #[test]
    fn a_target_layer_that_never_sends_a_keyframe_does_not_freeze_the_subscriber() {
        let engine = crate::Engine::new(crate::EngineConfig::default());
        let (tx, mut rx) = crate::queue::media_queue(engine.shared());
        let sub = Subscription::new(TrackId::new("TR_cam").unwrap(), tx, LayerPreference::Highest);
        let start = Instant::now();
        let frame = |layer: u8, ms: u64, keyframe: bool| {
            let at = start + Duration::from_millis(ms);
            MediaFrame::video(
                junction_core::Codec::Vp8,
                junction_core::MediaTime::new(ms * 90, 90_000),
                keyframe,
                at,
                bytes::Bytes::from_static(b"x"),
            )
            .with_layer(layer)
        };
        // Layer 2 counts as active but only layer 1 sends keyframes.
        let (offer, want) = sub.offer(&frame(1, 0, true), 3, 0b111, Instant::now());
        assert!(matches!(offer, Offer::Skipped) && want.is_none(), "the target is layer 2 at first");
        let (offer, _) = sub.offer(&frame(1, 1000, true), 3, 0b111, Instant::now());
        assert!(matches!(offer, Offer::Skipped), "still within the patience");
        let (offer, want) = sub.offer(&frame(0, 1550, false), 3, 0b111, Instant::now());
        assert!(matches!(offer, Offer::Skipped) && want.is_none(), "a lower layer than the best flowing one");
        let (offer, want) = sub.offer(&frame(1, 1550, false), 3, 0b111, Instant::now());
        assert!(matches!(offer, Offer::Skipped), "a delta cannot start the stream");
        assert!(matches!(want, Some(WantKeyframe(1))), "the best flowing layer is asked for a keyframe");
        let (offer, want) = sub.offer(&frame(1, 1600, true), 3, 0b111, Instant::now());
        assert!(matches!(offer, Offer::Forwarded), "after it, layer 1's keyframe starts the stream");
        assert!(matches!(want, Some(WantKeyframe(2))), "and layer 2's keyframe is still asked for");
        assert!(rx.try_recv().is_ok());
        let (offer, _) = sub.offer(&frame(1, 1633, false), 3, 0b111, Instant::now());
        assert!(matches!(offer, Offer::Forwarded), "layer 1 keeps flowing");
        // Layer 2's keyframe moves the subscriber up.
        let (offer, _) = sub.offer(&frame(2, 1666, true), 3, 0b111, Instant::now());
        assert!(matches!(offer, Offer::Forwarded));
        let (offer, _) = sub.offer(&frame(1, 1700, false), 3, 0b111, Instant::now());
        assert!(matches!(offer, Offer::Skipped), "layer 1 stops after the switch");
        let (offer, want) = sub.offer(&frame(1, 4000, true), 3, 0b111, Instant::now());
        assert!(matches!(offer, Offer::Skipped) && want.is_none(), "a flowing subscriber never falls back");
    }
}

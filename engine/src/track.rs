//! A published track as a pub-sub channel. The publisher's [`TrackPublisher::send`] fans a frame
//! out to every subscription on the caller's thread: the subscriber list is an `ArcSwap` that
//! membership changes replace (copy on write), so frames take no lock shared with other tracks
//! or with room membership.
//!
//! A track may also own transcoded *variants* (see [`crate::adapt`]): one per target codec,
//! shared by every subscriber that needs that codec. A variant is a track too; a keyframe asked
//! of it is asked of the original, for the simulcast layer its transcoder reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use junction_core::{Codec, LayerPreference, MediaFrame, MediaKind, MediaOut, TrackId, TrackInfo};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::adapt::Variant;
use crate::meter::{LayerMeter, LinkQuality, Rate};
use crate::shared::Shared;
use crate::subscription::{Offer, Subscription, target_layer};

/// Most simulcast layers a track may have.
pub const MAX_LAYERS: usize = 4;

/// A layer counts as being sent if a frame of it arrived this recently.
const LAYER_IDLE_NS: u64 = 1_500_000_000;

/// What a track's subscribers ask of it: how many there are and the highest simulcast layer any
/// of them wants. The cluster's relay pulls a mirrored track from its origin node only while it
/// has subscribers here, and only up to that layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    pub subscribers: usize,
    /// The highest [`LayerPreference::cap`] among the subscribers (0 with none).
    pub max_layer: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("track {track} is unpublished")]
    TrackClosed { track: TrackId },
    #[error("frame of layer {layer} on track {track}, which has {layers} layer(s)")]
    NoSuchLayer { track: TrackId, layer: u8, layers: u8 },
}

pub(crate) struct Track {
    pub(crate) id: TrackId,
    info: ArcSwap<TrackInfo>,
    layer_count: u8,
    subscribers: ArcSwap<Vec<Arc<Subscription>>>,
    /// Feedback to the publisher (keyframe requests, bitrate hints).
    feedback: mpsc::Sender<Box<MediaOut>>,
    shared: Arc<Shared>,
    layer_seen_ns: [AtomicU64; MAX_LAYERS],
    /// When the track was published, on the engine's clock: until a layer has had time to show
    /// up, it counts as being sent, so the first subscribers do not hop up through the layers.
    published_ns: u64,
    keyframe_asked_ns: [AtomicU64; MAX_LAYERS],
    last_hint_bps: AtomicU64,
    pub(crate) demand: watch::Sender<Demand>,
    closed: AtomicBool,
    pub(crate) variants: Mutex<HashMap<Codec, Variant>>,
    /// Target codecs whose transcoder failed for good, with why: not started again.
    pub(crate) failed_variants: Mutex<HashMap<Codec, String>>,
    /// Set on a transcoded variant: what its transcoder reads.
    input: Option<VariantInput>,
    /// Rates, last keyframe and link quality per layer, for the stats API.
    meters: [LayerMeter; MAX_LAYERS],
    /// Muted by an operator: frames still arrive (and are counted) but go to no subscriber.
    held: AtomicBool,
}

/// What a transcoded variant reads: the original track and the transcoder's subscription on it.
pub(crate) struct VariantInput {
    pub(crate) origin: Weak<Track>,
    pub(crate) source: Arc<Subscription>,
}

impl Track {
    pub(crate) fn new(info: TrackInfo, feedback: mpsc::Sender<Box<MediaOut>>, shared: Arc<Shared>) -> Self {
        Self::with_input(info, feedback, shared, None)
    }

    /// A transcoded variant of `origin` whose transcoder reads it through `source`.
    pub(crate) fn variant_of(info: TrackInfo, origin: &Arc<Track>, source: Arc<Subscription>) -> Self {
        let input = VariantInput { origin: Arc::downgrade(origin), source };
        Self::with_input(info, origin.feedback.clone(), origin.shared.clone(), Some(input))
    }

    fn with_input(
        info: TrackInfo,
        feedback: mpsc::Sender<Box<MediaOut>>,
        shared: Arc<Shared>,
        input: Option<VariantInput>,
    ) -> Self {
        let layer_count = info.layers.len().clamp(1, MAX_LAYERS) as u8;
        let published_ns = shared.clock.now().saturating_duration_since(shared.epoch).as_nanos() as u64 + 1;
        Self {
            id: info.id.clone(),
            info: ArcSwap::from_pointee(info),
            layer_count,
            subscribers: ArcSwap::from_pointee(Vec::new()),
            feedback,
            shared,
            layer_seen_ns: Default::default(),
            published_ns,
            keyframe_asked_ns: Default::default(),
            last_hint_bps: AtomicU64::new(0),
            demand: watch::Sender::new(Demand::default()),
            closed: AtomicBool::new(false),
            variants: Mutex::new(HashMap::new()),
            failed_variants: Mutex::new(HashMap::new()),
            input,
            meters: Default::default(),
            held: AtomicBool::new(false),
        }
    }

    /// What this track's transcoder reads, if it is a variant.
    pub(crate) fn variant_input(&self) -> Option<&VariantInput> {
        self.input.as_ref()
    }

    pub(crate) fn info(&self) -> Arc<TrackInfo> {
        self.info.load_full()
    }

    pub(crate) fn update_info(&self, f: impl Fn(&mut TrackInfo)) {
        self.info.rcu(|old| {
            let mut new = TrackInfo::clone(old);
            f(&mut new);
            new
        });
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        self.subscribers.load().len()
    }

    pub(crate) fn add_subscriber(&self, sub: Arc<Subscription>) {
        self.subscribers.rcu(|old| {
            let mut list = Vec::clone(old);
            list.push(sub.clone());
            list
        });
        self.refresh_demand();
    }

    /// Removes `sub`; returns how many subscribers remain.
    pub(crate) fn remove_subscriber(&self, sub: &Arc<Subscription>) -> usize {
        let old = self.subscribers.rcu(|old| old.iter().filter(|s| !Arc::ptr_eq(s, sub)).cloned().collect::<Vec<_>>());
        self.refresh_demand();
        old.len().saturating_sub(1)
    }

    /// Recomputes [`Demand`] after a subscription came, went or changed its layer preference.
    pub(crate) fn refresh_demand(&self) {
        let subscribers = self.subscribers.load();
        let demand = Demand {
            subscribers: subscribers.len(),
            max_layer: subscribers.iter().map(|s| s.preference().cap()).max().unwrap_or(0),
        };
        self.demand.send_if_modified(|current| std::mem::replace(current, demand) != demand);
    }

    /// Marks the track unpublished and drops every subscription and variant.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.subscribers.store(Arc::new(Vec::new()));
        self.refresh_demand();
        let variants: Vec<Variant> = self.variants.lock().drain().map(|(_, v)| v).collect();
        for variant in variants {
            variant.stop(&self.shared);
        }
    }

    fn ns_since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.shared.epoch).as_nanos() as u64 + 1
    }

    /// Fans `frame` out to every subscriber. Never blocks.
    pub(crate) fn send(&self, frame: MediaFrame) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::TrackClosed { track: self.id.clone() });
        }
        if frame.layer >= self.layer_count {
            return Err(SendError::NoSuchLayer {
                track: self.id.clone(),
                layer: frame.layer,
                layers: self.layer_count,
            });
        }
        let at = self.ns_since_epoch(frame.arrival);
        self.layer_seen_ns[frame.layer as usize].store(at, Ordering::Relaxed);
        let active = self.active_layers(at);
        let meter = &self.meters[frame.layer as usize];
        meter.rate.count(at, frame.payload.len());
        if frame.keyframe && frame.codec.kind() == MediaKind::Video {
            *meter.keyframe.lock() = Some(frame.payload.clone());
        }

        let counters = &self.shared.counters;
        counters.frames_in.add(1);
        if self.held.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (mut forwarded, mut dropped) = (0, 0);
        let now = self.shared.clock.now();
        for sub in self.subscribers.load().iter() {
            let (offer, want) = sub.offer(&frame, self.layer_count, active, now);
            match offer {
                Offer::Forwarded => {
                    forwarded += 1;
                    sub.rate.count(at, frame.payload.len());
                }
                Offer::Dropped => dropped += 1,
                Offer::Skipped => {}
            }
            if let Some(want) = want {
                self.ask_keyframe(want.0, at);
            }
        }
        counters.frames_forwarded.add(forwarded);
        counters.bytes_forwarded.add(forwarded * frame.payload.len() as u64);
        counters.frames_dropped.add(dropped);
        Ok(())
    }

    /// Holds back (or lets through again) every frame of this track: an operator's mute. On
    /// release, video subscribers start again from a keyframe, which is asked for.
    pub(crate) fn hold(&self, held: bool) {
        if self.held.swap(held, Ordering::AcqRel) == held || held {
            return;
        }
        for sub in self.subscribers.load().iter() {
            sub.restart();
        }
        for layer in 0..self.layer_count {
            self.ask_keyframe_now(layer);
        }
    }

    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// The track as peers and operators are shown it: muted by its publisher or an operator.
    pub(crate) fn shown_info(&self) -> TrackInfo {
        let mut info = TrackInfo::clone(&self.info());
        info.muted = self.shown_muted();
        info
    }

    /// Muted as peers and operators are told: by its publisher or held by an operator.
    pub(crate) fn shown_muted(&self) -> bool {
        self.info().muted || self.is_held()
    }

    /// The publisher's transport measured `layer`'s stream.
    pub(crate) fn report_link(&self, layer: u8, quality: LinkQuality) {
        if let Some(meter) = self.meters.get(layer as usize) {
            *meter.link.lock() = Some(quality.sanitized());
        }
    }

    /// Per layer: its rate over the last second, whether it is being sent, its last keyframe
    /// and its link quality.
    pub(crate) fn layer_readings(&self) -> Vec<(Rate, bool, Option<bytes::Bytes>, Option<LinkQuality>)> {
        let now = self.now_ns();
        let active = self.active_layers(now);
        self.meters[..self.layer_count as usize]
            .iter()
            .enumerate()
            .map(|(layer, m)| (m.rate.read(now), active & (1 << layer) != 0, m.keyframe.lock().clone(), *m.link.lock()))
            .collect()
    }

    /// Now, on the engine's clock, as the meters and layer records count time.
    pub(crate) fn now_ns(&self) -> u64 {
        self.ns_since_epoch(self.shared.clock.now())
    }

    /// Subscribers, counting those served through transcoded variants (each variant holds one
    /// subscription on the original: its transcoder's).
    pub(crate) fn subscriber_total(&self) -> usize {
        let variants = self.variants.lock();
        self.subscriber_count() - variants.len() + variants.values().map(|v| v.track.subscriber_count()).sum::<usize>()
    }

    fn active_layers(&self, now_ns: u64) -> u8 {
        if self.layer_count == 1 {
            return 1;
        }
        let young = now_ns.saturating_sub(self.published_ns) <= LAYER_IDLE_NS;
        let mut mask = 0u8;
        for layer in 0..self.layer_count as usize {
            let seen = self.layer_seen_ns[layer].load(Ordering::Relaxed);
            if (seen == 0 && young) || (seen != 0 && now_ns.saturating_sub(seen) <= LAYER_IDLE_NS) {
                mask |= 1 << layer;
            }
        }
        mask
    }

    /// Asks the publisher for a keyframe of `layer`, at most once per configured interval.
    pub(crate) fn ask_keyframe(&self, layer: u8, now_ns: u64) {
        if let Some(input) = &self.input {
            // A variant's transcoder sends a keyframe when the original does: ask the original,
            // for the layer the transcoder is on (or waits for), whatever `layer` says.
            if let Some(origin) = input.origin.upgrade() {
                let source = &input.source;
                let layer = source.current_layer().unwrap_or_else(|| origin.target_now(source.preference()));
                origin.ask_keyframe(layer, now_ns);
            }
            return;
        }
        let interval = self.shared.config.keyframe_request_interval.as_nanos() as u64;
        let slot = &self.keyframe_asked_ns[(layer as usize).min(MAX_LAYERS - 1)];
        let last = slot.load(Ordering::Relaxed);
        if last != 0 && now_ns.saturating_sub(last) < interval {
            return;
        }
        if slot.compare_exchange(last, now_ns, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        self.shared.counters.keyframe_requests.add(1);
        let _ = self.feedback.try_send(Box::new(MediaOut::KeyframeRequest { track: self.id.clone(), layer }));
    }

    pub(crate) fn ask_keyframe_now(&self, layer: u8) {
        let now = self.now_ns();
        self.ask_keyframe(layer, now);
    }

    /// The layer a subscriber preferring `preference` should get among the layers being sent
    /// now: a keyframe request for a layer the publisher does not send would go unanswered.
    pub(crate) fn target_now(&self, preference: LayerPreference) -> u8 {
        let now = self.now_ns();
        target_layer(preference, self.layer_count, self.active_layers(now))
    }

    /// Tells the publisher the most any subscriber can take, when that moved by over 10 %.
    pub(crate) fn refresh_bitrate_hint(&self) {
        let best = self.subscribers.load().iter().map(|s| s.wanted_bps.load(Ordering::Relaxed)).max().unwrap_or(0);
        let last = self.last_hint_bps.load(Ordering::Relaxed);
        if best == 0 || best.abs_diff(last) * 10 < last {
            return;
        }
        self.last_hint_bps.store(best, Ordering::Relaxed);
        let _ = self.feedback.try_send(Box::new(MediaOut::BitrateHint { track: self.id.clone(), bps: best }));
    }
}

/// The media half's handle on one published track: frames go in here.
#[derive(Clone)]
pub struct TrackPublisher {
    pub(crate) track: Arc<Track>,
}

impl TrackPublisher {
    pub fn id(&self) -> &TrackId {
        &self.track.id
    }

    pub fn info(&self) -> TrackInfo {
        TrackInfo::clone(&self.track.info())
    }

    /// Fans the frame out to the track's subscribers. Never blocks: a subscriber whose queue is
    /// full loses the frame and waits for the next keyframe.
    pub fn send(&self, frame: MediaFrame) -> Result<(), SendError> {
        self.track.send(frame)
    }

    /// Subscribers of this track, counting those served through transcoded variants.
    pub fn subscriber_count(&self) -> usize {
        self.track.subscriber_total()
    }

    pub fn is_closed(&self) -> bool {
        self.track.is_closed()
    }

    /// Reports how the publisher's connection carries `layer` (loss, round trip, jitter), for
    /// the stats API; the latest report replaces the one before.
    pub fn report_link(&self, layer: u8, quality: LinkQuality) {
        self.track.report_link(layer, quality);
    }

    /// Follows what this track's subscribers ask of it (see [`Demand`]).
    pub fn demand(&self) -> watch::Receiver<Demand> {
        self.track.demand.subscribe()
    }
}

impl std::fmt::Debug for TrackPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackPublisher").field("track", &self.track.id).finish()
    }
}

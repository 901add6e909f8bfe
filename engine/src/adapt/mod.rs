//! Codec adaptation: when a subscriber cannot receive a track's codec (a browser and an RTMP
//! publisher's AAC), the engine attaches it to a *variant* of the track in a codec it accepts.
//! A variant is created by the first subscriber that needs it, shared by every later one, and
//! stopped when its last subscriber leaves — one transcoder per track and target codec, never
//! one per subscriber.
//!
//! Transcoders themselves are plug-ins ([`FrameTranscoder`]) registered per (from, to) pair in an
//! [`AdapterRegistry`] (`registry.rs`); the codec implementations live in junction-audio.
//!
//! Transcoders run on a runtime of their own (one worker thread per core), never on the async
//! workers that carry signalling and media: decoding, resampling and encoding take tens to
//! hundreds of microseconds per frame, and a track whose frames are expensive must not hold up
//! everyone else (at worst it delays other transcoders, whose work per frame is bounded too).
//! A dedicated thread per variant was measured against this pool (`junction bench rtmp`, 20
//! RTMP publishers each watched over WHEP): it cost 22 % more server CPU, the pool 6 % more than
//! transcoding on the async workers, each with lower forwarding latency. Frames reach a
//! transcoder through the variant's bounded subscription queue, so one that falls behind loses
//! frames, never memory. A transcoder that panics, or fails on [`MAX_CONSECUTIVE_FAILURES`]
//! frames in a row, ends its variant: the variant is closed, the failure is remembered on the
//! track (a later subscriber needing that codec gets `TranscodeUnavailable` instead of a transcoder
//! that fails again), and the room detaches the variant's subscribers and tells them
//! (`Unsubscribed`, then `SubscriptionFailed` with the reason). Nothing else is affected.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use junction_core::{Codec, LayerPreference, MediaOut, TrackInfo};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use crate::queue::{MediaReceiver, media_queue};
use crate::shared::Shared;
use crate::subscription::Subscription;
use crate::track::{Demand, Track, VariantInput};

pub(crate) mod registry;

pub use registry::{AdapterRegistry, FrameTranscoder, LayerMove, TranscodeError, TranscoderFactory};

/// Input frames in a row that may fail before a transcoder counts as broken.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 100;

/// What the room does when a variant fails for good: detach its subscribers and tell them.
/// Called on the transcoding runtime with the variant's track and the reason.
pub(crate) type OnVariantFailure = Box<dyn FnOnce(&Arc<Track>, String) + Send>;

/// A running variant: the transcoded track subscribers attach to (which holds the transcoder's
/// own subscription on the original, see [`VariantInput`]), and its task on the transcoding
/// runtime.
pub(crate) struct Variant {
    pub(crate) track: Arc<Track>,
    task: AbortHandle,
}

impl Variant {
    /// Takes the transcoder's subscription off `origin`.
    fn detach_from(&self, origin: &Track) {
        if let Some(input) = self.track.variant_input() {
            origin.remove_subscriber(&input.source);
        }
    }

    pub(crate) fn stop(self, shared: &Shared) {
        self.task.abort();
        self.track.close();
        shared.counters.variants.add(-1);
    }
}

/// The runtime transcoders run on: worker threads of its own (one per core), never the server's
/// async workers. Built on first use.
fn transcoding_runtime() -> Result<&'static tokio::runtime::Handle, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("transcode")
            .build()
            .map_err(|err| err.to_string())
    });
    runtime.as_ref().map(|runtime| runtime.handle()).map_err(Clone::clone)
}

/// The variant of `origin` in `codec`, started if it is not running yet, for a viewer that
/// prefers `layer` of a simulcast original. `on_failure` is called if its transcoder fails for
/// good.
pub(crate) fn variant_for(
    origin: &Arc<Track>,
    codec: Codec,
    layer: LayerPreference,
    factory: &TranscoderFactory,
    shared: &Arc<Shared>,
    on_failure: OnVariantFailure,
) -> Result<Arc<Track>, TranscodeError> {
    let mut variants = origin.variants.lock();
    if let Some(existing) = variants.get(&codec) {
        return Ok(existing.track.clone());
    }
    let info = origin.info();
    if let Some(reason) = origin.failed_variants.lock().get(&codec) {
        return Err(TranscodeError::Failed { from: info.codec, to: codec, reason: reason.clone() });
    }
    let input = input_preference(&info, layer);
    let (transcoder, params) = factory(&input_info(&info, input))?;
    // A variant is one stream whatever the original's simulcast layers: the transcoder reads
    // the layer its viewers want (see `Worker::follow_viewers`) and encodes one picture size.
    let variant_info = TrackInfo { codec, params, layers: Vec::new(), ..TrackInfo::clone(&info) };

    let runtime = transcoding_runtime().map_err(|reason| TranscodeError::Setup {
        from: info.codec,
        to: codec,
        reason: format!("no runtime: {reason}"),
    })?;
    let (tx, rx) = media_queue(shared);
    let source = Arc::new(Subscription::new(origin.id.clone(), tx, input));
    let track = Arc::new(Track::variant_of(variant_info, origin, source.clone()));
    let worker = Worker {
        input: rx,
        transcoder,
        output: track.clone(),
        viewers: track.demand.subscribe(),
        from: info.codec,
        to: codec,
        shared: shared.clone(),
        on_failure,
    };
    let task = runtime.spawn(worker.run()).abort_handle();
    origin.add_subscriber(source);
    debug!(track = %origin.id, from = %info.codec, to = %codec, ?input, "started transcoded variant");
    shared.counters.variants.add(1);
    variants.insert(codec, Variant { track: track.clone(), task });
    Ok(track)
}

/// How a variant reads a simulcast original for viewers whose best wish is `wanted`: `Highest`
/// for the top layer (or a single-layer original), so that it follows the top layer that is
/// being sent.
fn input_preference(info: &TrackInfo, wanted: LayerPreference) -> LayerPreference {
    let top = info.layers.len().saturating_sub(1);
    match wanted {
        LayerPreference::AtMost(layer) if usize::from(layer) < top => LayerPreference::AtMost(layer),
        _ => LayerPreference::Highest,
    }
}

/// The original as its transcoder will read it: the picture size of the layer it starts on,
/// when the publisher declared one.
fn input_info(info: &TrackInfo, input: LayerPreference) -> TrackInfo {
    let mut info = TrackInfo::clone(info);
    if let LayerPreference::AtMost(layer) = input
        && let Some(declared) = info.layers.get(usize::from(layer))
        && let (Some(width), Some(height)) = (declared.width, declared.height)
    {
        (info.params.width, info.params.height) = (Some(width), Some(height));
    }
    info
}

/// Stops `origin`'s variant in `codec` if nobody is attached to it any more.
pub(crate) fn release_if_unused(origin: &Arc<Track>, codec: Codec, shared: &Shared) {
    let mut variants = origin.variants.lock();
    let unused = variants.get(&codec).is_some_and(|v| v.track.subscriber_count() == 0);
    if unused && let Some(variant) = variants.remove(&codec) {
        variant.detach_from(origin);
        debug!(track = %origin.id, to = %codec, "stopped transcoded variant");
        variant.stop(shared);
    }
}

/// One variant's transcoder and everything its task needs.
struct Worker {
    input: MediaReceiver,
    transcoder: Box<dyn FrameTranscoder>,
    output: Arc<Track>,
    /// What the variant's viewers ask of it (their number and best layer).
    viewers: watch::Receiver<Demand>,
    from: Codec,
    to: Codec,
    shared: Arc<Shared>,
    on_failure: OnVariantFailure,
}

impl Worker {
    /// Transcodes frames until the variant stops or the transcoder fails for good.
    async fn run(mut self) {
        let cpu = metrics::counter!("junction_transcode_cpu_microseconds_total", "from" => self.from.as_str());
        let mut out = Vec::new();
        let (mut failures, mut in_a_row) = (0u64, 0u32);
        while let Some(item) = self.input.recv().await {
            let MediaOut::Frame { frame, .. } = item else { continue };
            if self.viewers.has_changed().unwrap_or(false) {
                self.follow_viewers();
            }
            let started = Instant::now();
            let result = catch_unwind(AssertUnwindSafe(|| self.transcoder.transcode(&frame, &mut out)));
            cpu.increment(started.elapsed().as_micros() as u64);
            match result {
                Ok(Ok(())) => in_a_row = 0,
                Ok(Err(err)) => {
                    failures += 1;
                    in_a_row += 1;
                    if in_a_row >= MAX_CONSECUTIVE_FAILURES {
                        return self.fail(format!("{in_a_row} frames in a row failed, the last with: {err}"));
                    }
                    if failures.is_power_of_two() {
                        warn!(track = %self.output.id, failures, "transcoder: {err}");
                    }
                }
                Err(panic) => {
                    let message = crate::supervise::panic_message(panic.as_ref());
                    return self.fail(format!("the transcoder panicked: {message}"));
                }
            }
            if self.transcoder.wants_keyframe() {
                // Asked of the original, for the layer the transcoder reads (see `Track`).
                self.output.ask_keyframe_now(0);
            }
            for frame in out.drain(..) {
                if self.output.send(frame).is_err() {
                    return;
                }
            }
        }
    }

    /// Moves the transcoder to the simulcast layer the variant's viewers want now: the best any
    /// of them prefers (an RTMP or MoQ player takes the top one; a WebRTC viewer the one its
    /// bandwidth or tile allows). The switch happens at that layer's next keyframe, which is asked
    /// for; the transcoder is told so that it encodes the new layer at its own size.
    fn follow_viewers(&mut self) {
        let viewers = *self.viewers.borrow_and_update();
        let Some(VariantInput { origin, source }) = self.output.variant_input() else { return };
        let Some(origin) = origin.upgrade() else { return };
        if viewers.subscribers == 0 {
            return;
        }
        let info = origin.info();
        let input = input_preference(&info, LayerPreference::AtMost(viewers.max_layer));
        if input == source.preference() {
            return;
        }
        debug!(track = %origin.id, to = %self.to, ?input, "transcoded variant follows its viewers' layer");
        source.set_preference(input);
        origin.refresh_demand();
        // The new layer's keyframe, which the transcoder's subscription waits for to switch.
        origin.ask_keyframe_now(origin.target_now(input));
        self.transcoder.input_changed(match input {
            LayerPreference::Highest => LayerMove::ToTop(info.layers.len().saturating_sub(1) as u8),
            LayerPreference::AtMost(_) => LayerMove::BelowTop,
        });
    }

    /// Ends the variant: out of its track's variants, remembered as failed, closed, and the
    /// room told.
    fn fail(self, reason: String) {
        metrics::counter!("junction_transcoders_failed_total", "from" => self.from.as_str(), "to" => self.to.as_str())
            .increment(1);
        warn!(track = %self.output.id, from = %self.from, to = %self.to, "transcoded variant ended: {reason}");
        let Some(origin) = self.output.variant_input().and_then(|input| input.origin.upgrade()) else { return };
        let removed = {
            let mut variants = origin.variants.lock();
            let ours = variants.get(&self.to).is_some_and(|v| Arc::ptr_eq(&v.track, &self.output));
            origin.failed_variants.lock().insert(self.to, reason.clone());
            if ours { variants.remove(&self.to) } else { None }
        };
        let Some(variant) = removed else { return };
        variant.detach_from(&origin);
        variant.stop(&self.shared);
        (self.on_failure)(&self.output, reason);
    }
}

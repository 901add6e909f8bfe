//! Codec adaptation: when a subscriber cannot receive a track's codec (a browser and an RTMP
//! publisher's AAC), the engine attaches it to a *variant* of the track in a codec it accepts.
//! A variant is created by the first subscriber that needs it, shared by every later one, and
//! stopped when its last subscriber leaves — one transcoder per track and target codec, never
//! one per subscriber.
//!
//! Transcoders themselves are plug-ins ([`FrameTranscoder`]) registered per (from, to) pair in an
//! [`AdapterRegistry`]; the codec implementations live in [`crate::codec`].

use std::sync::Arc;
use std::time::Instant;

use junction_core::{Codec, CodecParams, LayerPreference, MediaFrame, MediaOut, TrackInfo};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use crate::engine::Shared;
use crate::subscription::Subscription;
use crate::track::Track;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    #[error("cannot set up a {from}->{to} transcoder: {reason}")]
    Setup { from: Codec, to: Codec, reason: String },
    #[error("decoding {codec}: {reason}")]
    Decode { codec: Codec, reason: String },
    #[error("encoding {codec}: {reason}")]
    Encode { codec: Codec, reason: String },
}

/// Turns frames of one codec into frames of another. Runs on the variant's own task.
pub trait FrameTranscoder: Send + 'static {
    /// Feeds one input frame; pushes zero or more output frames onto `out`.
    fn transcode(&mut self, frame: &MediaFrame, out: &mut Vec<MediaFrame>) -> Result<(), TranscodeError>;
}

/// Builds a transcoder for a track; returns it with the parameters of its output.
pub type TranscoderFactory =
    Arc<dyn Fn(&TrackInfo) -> Result<(Box<dyn FrameTranscoder>, CodecParams), TranscodeError> + Send + Sync>;

/// The (from, to) codec pairs the engine can adapt, with their factories.
#[derive(Clone, Default)]
pub struct AdapterRegistry {
    routes: Vec<(Codec, Codec, TranscoderFactory)>,
}

impl AdapterRegistry {
    pub fn register(&mut self, from: Codec, to: Codec, factory: TranscoderFactory) {
        self.routes.retain(|(f, t, _)| !(*f == from && *t == to));
        self.routes.push((from, to, factory));
    }

    /// The first accepted codec that `from` can be turned into, in the subscriber's order.
    pub(crate) fn route(&self, from: Codec, accepted: &[Codec]) -> Option<(Codec, TranscoderFactory)> {
        accepted.iter().find_map(|to| {
            self.routes.iter().find(|(f, t, _)| *f == from && t == to).map(|(_, t, factory)| (*t, factory.clone()))
        })
    }

    pub fn routes(&self) -> impl Iterator<Item = (Codec, Codec)> + '_ {
        self.routes.iter().map(|(f, t, _)| (*f, *t))
    }
}

impl std::fmt::Debug for AdapterRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.routes().map(|(a, b)| format!("{a}->{b}"))).finish()
    }
}

/// A running variant: the transcoded track subscribers attach to, the transcoder's own
/// subscription on the original, and the task between them.
pub(crate) struct Variant {
    pub(crate) track: Arc<Track>,
    source: Arc<Subscription>,
    task: AbortHandle,
}

impl Variant {
    pub(crate) fn stop(self, shared: &Shared) {
        self.task.abort();
        self.track.close();
        shared.counters.variants.add(-1);
    }
}

/// The variant of `origin` in `codec`, started if it is not running yet.
pub(crate) fn variant_for(
    origin: &Arc<Track>,
    codec: Codec,
    factory: &TranscoderFactory,
    shared: &Arc<Shared>,
) -> Result<Arc<Track>, TranscodeError> {
    let mut variants = origin.variants.lock();
    if let Some(existing) = variants.get(&codec) {
        return Ok(existing.track.clone());
    }
    let info = origin.info();
    let (transcoder, params) = factory(&info)?;
    let variant_info = TrackInfo { codec, params, ..TrackInfo::clone(&info) };
    let track = Arc::new(Track::new(variant_info, origin.feedback_sender(), shared.clone()));

    let (tx, rx) = mpsc::channel(shared.config.subscriber_queue);
    let source = Arc::new(Subscription::new(origin.id.clone(), tx, LayerPreference::Highest));
    origin.add_subscriber(source.clone());
    let task = tokio::spawn(run_transcoder(rx, transcoder, track.clone(), info.codec)).abort_handle();
    debug!(track = %origin.id, from = %info.codec, to = %codec, "started transcoded variant");
    shared.counters.variants.add(1);
    variants.insert(codec, Variant { track: track.clone(), source, task });
    Ok(track)
}

/// Stops `origin`'s variant in `codec` if nobody is attached to it any more.
pub(crate) fn release_if_unused(origin: &Arc<Track>, codec: Codec, shared: &Shared) {
    let mut variants = origin.variants.lock();
    let unused = variants.get(&codec).is_some_and(|v| v.track.subscriber_count() == 0);
    if unused && let Some(variant) = variants.remove(&codec) {
        origin.remove_subscriber(&variant.source);
        debug!(track = %origin.id, to = %codec, "stopped transcoded variant");
        variant.stop(shared);
    }
}

async fn run_transcoder(
    mut input: mpsc::Receiver<MediaOut>,
    mut transcoder: Box<dyn FrameTranscoder>,
    output: Arc<Track>,
    from: Codec,
) {
    let cpu = metrics::counter!("junction_transcode_cpu_microseconds_total", "from" => from.as_str());
    let mut out = Vec::new();
    let mut failures = 0u64;
    while let Some(item) = input.recv().await {
        let MediaOut::Frame { frame, .. } = item else { continue };
        let started = Instant::now();
        let result = transcoder.transcode(&frame, &mut out);
        cpu.increment(started.elapsed().as_micros() as u64);
        if let Err(err) = result {
            failures += 1;
            if failures.is_power_of_two() {
                warn!(track = %output.id, failures, "transcoder: {err}");
            }
        }
        for frame in out.drain(..) {
            if output.send(frame).is_err() {
                return;
            }
        }
    }
}

//! The plug-in side of codec adaptation: what a transcoder is ([`FrameTranscoder`], built per
//! track by a [`TranscoderFactory`]), how it fails ([`TranscodeError`]), and the registry of
//! (from, to) codec pairs the engine can adapt ([`AdapterRegistry`]). It depends on nothing else
//! in the engine, so the engine's shared state can hold a registry without a circle.

use std::sync::Arc;

use junction_core::{Codec, CodecParams, MediaFrame, TrackInfo};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    #[error("cannot set up a {from}->{to} transcoder: {reason}")]
    Setup { from: Codec, to: Codec, reason: String },
    #[error("decoding {codec}: {reason}")]
    Decode { codec: Codec, reason: String },
    #[error("encoding {codec}: {reason}")]
    Encode { codec: Codec, reason: String },
    #[error("the {from}->{to} transcoder of this track failed earlier: {reason}")]
    Failed { from: Codec, to: Codec, reason: String },
}

/// Turns frames of one codec into frames of another. Runs on the transcoding runtime; the
/// work it does per input frame must be bounded (the audio transcoders cap what one frame may
/// decode to, and their rates come from validated codec parameters).
pub trait FrameTranscoder: Send + 'static {
    /// Feeds one input frame; pushes zero or more output frames onto `out`.
    fn transcode(&mut self, frame: &MediaFrame, out: &mut Vec<MediaFrame>) -> Result<(), TranscodeError>;

    /// Whether the transcoder needs a keyframe from the publisher (a video decoder that starts,
    /// or lost its place); asked after every frame, and clears what it reports. The engine
    /// passes the request on, rate-limited like any subscriber's.
    fn wants_keyframe(&mut self) -> bool {
        false
    }

    /// The variant's viewers moved it to another simulcast layer of the original, which comes
    /// from that layer's next keyframe on, possibly at another picture size (see
    /// [`LayerMove`]). Until the first call a video transcoder keeps the size it started with,
    /// whatever layer the publisher falls back to.
    fn input_changed(&mut self, _to: LayerMove) {}
}

/// Where a variant's viewers moved its transcoder on a simulcast original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerMove {
    /// To the top layer (its index): what players that cannot take a picture size change
    /// mid-stream (CMAF init segments: MoQ, HLS, recordings) ask for. That layer's first keyframe
    /// sets the size, kept from then on whatever the publisher falls back to. Frames of a lower
    /// layer still queued from before the move, or sent while the top layer is paused, are
    /// scaled to the size the encoder has.
    ToTop(u8),
    /// Below the top, as only viewers that take any size (WebRTC, by bandwidth or tile) ask:
    /// every layer read from now on is encoded at its own size, from its first keyframe.
    BelowTop,
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
    pub fn route(&self, from: Codec, accepted: &[Codec]) -> Option<(Codec, TranscoderFactory)> {
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

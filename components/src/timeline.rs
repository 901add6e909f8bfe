//! A track of an output that interleaves tracks on one timeline (an HLS stream, a grid
//! recording's file): its CMAF description and where its frames fall. Each track is anchored at
//! its first frame's capture instant, counted from the output's origin, and then advanced by its
//! frames' own media time, so tracks captured together play together.

use std::time::Instant;

use junction_cmaf::{DecodeTimes, InitTrack, SampleDefaults, TrackCodec, initial_config, nominal_duration, timescale};
use junction_core::{Codec, CodecParams, MediaFrame};

pub struct PlacedTrack {
    pub codec: Codec,
    pub params: CodecParams,
    pub timescale: u32,
    /// The decoder configuration, once known (from the params, or a video keyframe).
    pub config: Option<TrackCodec>,
    /// (first frame's ticks, its place on the timeline in this track's ticks).
    anchor: Option<(u64, u64)>,
    pub decode: DecodeTimes,
}

impl PlacedTrack {
    pub fn new(codec: Codec, params: CodecParams) -> PlacedTrack {
        let timescale = timescale(codec, &params);
        let decode = DecodeTimes::new(nominal_duration(codec, timescale));
        PlacedTrack { codec, config: initial_config(codec, &params), params, timescale, anchor: None, decode }
    }

    /// `frame`'s (decode, presentation) time in this track's ticks on a timeline that starts at
    /// `origin`.
    pub fn place(&mut self, frame: &MediaFrame, origin: Instant) -> (u64, u64) {
        let ticks = frame.time.rebase(self.timescale).ticks;
        let scale = u64::from(self.timescale);
        let (first, base) = *self.anchor.get_or_insert_with(|| {
            let since = frame.captured.saturating_duration_since(origin);
            (ticks, (since.as_micros() as u64).saturating_mul(scale) / 1_000_000)
        });
        let pts = base.saturating_add(ticks.saturating_sub(first));
        (self.decode.next(pts), pts)
    }

    /// The track in an init segment, as MP4 track `id` (once its configuration is known).
    pub fn init_track(&self, id: u32) -> Option<InitTrack> {
        Some(InitTrack {
            id,
            timescale: self.timescale,
            codec: self.config.clone()?,
            defaults: SampleDefaults::default(),
        })
    }
}

//! A track of an fMP4 output (an HLS stream, a recording's file): its CMAF description, where
//! its frames fall and their fragments. Each track is anchored at its first frame's capture
//! instant, counted from the output's origin, and then advanced by its frames' own media time,
//! so tracks of one output captured together play together.

use std::time::Instant;

use bytes::Bytes;
use junction_cmaf::{
    CmafError, DecodeTimes, FragmentSample, InitTrack, SampleDefaults, TrackCodec, fragment_header, initial_config,
    nominal_duration, sample_payload, timescale,
};
use junction_core::{Codec, CodecParams, MediaFrame};

pub struct PlacedTrack {
    pub codec: Codec,
    pub params: CodecParams,
    pub timescale: u32,
    /// The decoder configuration, once known (from the params, or a video keyframe).
    pub config: Option<TrackCodec>,
    /// (first frame's ticks, its place on the timeline in this track's ticks).
    anchor: Option<(u64, u64)>,
    decode: DecodeTimes,
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

    /// A new timeline (a new file): the next frame is anchored afresh, decode times start over.
    pub fn restart(&mut self) {
        self.anchor = None;
        self.decode = DecodeTimes::new(nominal_duration(self.codec, self.timescale));
    }

    /// `frame`, placed at `(dts, pts)`, as fragment number `sequence` of MP4 track `id`: the
    /// fragment's header (`moof` and the `mdat` header) and the sample.
    pub fn fragment(
        &self,
        id: u32,
        sequence: u32,
        frame: &MediaFrame,
        (dts, pts): (u64, u64),
    ) -> Result<(Bytes, Bytes), CmafError> {
        let payload = sample_payload(self.codec, frame.payload.clone());
        let sample = FragmentSample::presented(dts, pts, self.decode.duration(), frame.keyframe);
        Ok((fragment_header(id, sequence, sample, payload.len())?, payload))
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

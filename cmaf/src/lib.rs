//! CMAF packaging (fragmented MP4): an init segment (ftyp + moov, one trak per track) and
//! fragments (moof + mdat). Building and parsing both, with the mp4-atom crate doing the box
//! encoding; what is here is the mapping between boxes and Junction's codecs, timestamps and
//! keyframes, and a guard that walks boxes before mp4-atom decodes them. It is the media format
//! `moq-pub` and `moq-sub` put in MoQ objects (one fragment per object), and the one recordings
//! write (and HLS is to): a crate of its own so those outputs share it without one transport
//! importing another. [`initial_config`], [`video_config`] and [`sample_payload`] say what a
//! Junction track and its frames are in CMAF.

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod fragment;
mod guard;
mod init;
mod picture;
mod track_config;
mod vpx_av1;

pub use fragment::{FragmentSample, fragment_header, parse_fragment};
pub use init::{InitTrack, ParsedTrack, SampleDefaults, TrackCodec, build_init, parse_init};
pub use picture::{h264_dimensions, picture_size};
pub use track_config::{
    CARRIED_AUDIO, CARRIED_VIDEO, DecodeTimes, audio_config, h264_config, initial_config, nominal_duration,
    sample_payload, timescale, video_config,
};
pub use vpx_av1::{
    Av1Config, VpxConfig, av1_sample, av1_sequence_config, vp8_config, vp8_keyframe_size, vp9_keyframe_config,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmafError {
    #[error("malformed MP4 box: {0}")]
    Atom(String),
    #[error("the {0} box is missing")]
    Missing(&'static str),
    #[error("{what} ({value}) is out of range")]
    OutOfRange { what: &'static str, value: u64 },
    #[error("sample {index} ({size} bytes at offset {offset}) overruns the {total}-byte object")]
    SampleOverrun { index: usize, offset: u64, size: u64, total: usize },
    #[error("the fragment is for track {found}, expected {expected}")]
    WrongTrack { expected: u32, found: u32 },
}

impl From<mp4_atom::Error> for CmafError {
    fn from(err: mp4_atom::Error) -> Self {
        CmafError::Atom(err.to_string())
    }
}

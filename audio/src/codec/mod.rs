//! The engine's audio codec toolkit: PCM buffers and channel mixing, G.711, Opus, AAC-LC,
//! sample-rate conversion, and the [`FrameTranscoder`](junction_engine::FrameTranscoder)s built from them
//! that the engine's shared codec adaptation runs ([`default_adapters`]).
//!
//! Every decoder turns one frame's payload into interleaved `f32` PCM (`-1.0..=1.0`) at its own
//! rate; every encoder takes fixed-size interleaved `f32` frames. Transports that need PCM
//! themselves (a SIP mixer, a test) use the codecs directly:
//!
//! ```
//! use junction_audio::codec::{AudioDecoder, AudioEncoder, g711::G711Encoder, g711::G711Decoder, G711Law};
//!
//! let mut encoder = G711Encoder::new(G711Law::MuLaw);
//! let packet = encoder.encode(&vec![0.25; encoder.frame_samples()]).unwrap();
//! let mut pcm = Vec::new();
//! G711Decoder::new(G711Law::MuLaw).decode(&packet, &mut pcm).unwrap();
//! assert_eq!(pcm.len(), 160);
//! ```

pub mod aac;
pub mod g711;
pub mod opus;
pub mod pcm;
pub mod resample;
pub mod tone;
pub mod transcode;

use bytes::Bytes;
use junction_core::Codec;

pub use g711::G711Law;
pub use pcm::{PcmFrame, SampleFifo};
pub use resample::Resampler;
pub use transcode::{AudioConfig, AudioTranscoder, adapters, default_adapters};

/// What went wrong in a codec, with the codec and the library's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("cannot set up the {codec} codec: {reason}")]
    Setup { codec: Codec, reason: String },
    #[error("decoding {codec}: {reason}")]
    Decode { codec: Codec, reason: String },
    #[error("encoding {codec}: {reason}")]
    Encode { codec: Codec, reason: String },
    #[error("resampling {from} Hz -> {to} Hz: {reason}")]
    Resample { from: u32, to: u32, reason: String },
}

impl CodecError {
    pub(crate) fn setup(codec: Codec, reason: impl ToString) -> Self {
        CodecError::Setup { codec, reason: reason.to_string() }
    }

    pub(crate) fn decode(codec: Codec, reason: impl ToString) -> Self {
        CodecError::Decode { codec, reason: reason.to_string() }
    }

    pub(crate) fn encode(codec: Codec, reason: impl ToString) -> Self {
        CodecError::Encode { codec, reason: reason.to_string() }
    }
}

/// Decodes one codec's frames into interleaved `f32` PCM at [`Self::sample_rate`] with
/// [`Self::channels`] channels.
pub trait AudioDecoder: Send {
    fn codec(&self) -> Codec;
    fn sample_rate(&self) -> u32;
    fn channels(&self) -> u8;
    /// Decodes one frame's payload, appending its samples to `out`; returns the samples per
    /// channel appended. On error nothing is appended and the decoder stays usable.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<f32>) -> Result<usize, CodecError>;
    /// Appends `frames` samples per channel standing in for lost input: the codec's loss
    /// concealment where it has one (Opus), silence otherwise.
    fn conceal(&mut self, frames: usize, out: &mut Vec<f32>) {
        out.resize(out.len() + frames * usize::from(self.channels()), 0.0);
    }
}

/// Encodes fixed-size frames of interleaved `f32` PCM into one codec's frames.
pub trait AudioEncoder: Send {
    fn codec(&self) -> Codec;
    fn sample_rate(&self) -> u32;
    fn channels(&self) -> u8;
    /// Samples per channel in every frame [`Self::encode`] takes.
    fn frame_samples(&self) -> usize;
    /// The encoder's algorithmic delay in samples per channel: a decoder's output lags the
    /// encoder's input by this much (Opus lookahead, AAC priming). Transcoders drop this many
    /// samples at the start of a stream so decoded output lines up with the frame timestamps.
    fn delay(&self) -> usize;
    /// Encodes exactly `frame_samples() * channels()` samples into one frame's payload.
    fn encode(&mut self, pcm: &[f32]) -> Result<Bytes, CodecError>;
}

/// Checks that an encoder was handed exactly one frame.
pub(crate) fn check_frame_len(encoder: &dyn AudioEncoder, pcm: &[f32]) -> Result<(), CodecError> {
    let expected = encoder.frame_samples() * usize::from(encoder.channels());
    if pcm.len() == expected {
        Ok(())
    } else {
        Err(CodecError::encode(encoder.codec(), format!("got {} samples, a frame is {expected}", pcm.len())))
    }
}

//! Which transcoder the engine builds for a (from, to) pair and a track, and the parameters of
//! what it produces.

use std::sync::Arc;

use bytes::Bytes;
use junction_core::{Codec, CodecParams, TrackInfo};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::AudioTranscoder;
use crate::codec::aac::{AacConfig, AacDecoder, AacEncoder};
use crate::codec::g711::{G711Decoder, G711Encoder, G711Law};
use crate::codec::opus::{self, OpusDecoder, OpusEncoder, OpusMode};
use crate::codec::{AudioDecoder, AudioEncoder, CodecError};
use junction_engine::adapt::{AdapterRegistry, FrameTranscoder, TranscodeError};

/// The audio codecs the toolkit converts between.
const AUDIO_CODECS: [Codec; 4] = [Codec::Opus, Codec::Aac, Codec::Pcmu, Codec::Pcma];
/// AAC output rate: Opus's, so Opus->AAC needs no resampling.
const AAC_OUTPUT_RATE: u32 = 48_000;

/// The `[audio]` section: how the transcoders encode the audio they make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// libopus's complexity (0-10) for the Opus the transcoders make: AAC from RTMP, SRT and
    /// WHIP publishers and G.711 from phones, for WebRTC and MoQ listeners [5]. Encoding is the
    /// largest share of what an AAC publisher's WebRTC viewers cost (docs/benchmarks.md); at 10,
    /// libopus's own default, which adds its signal analysis from 7 up, the whole AAC->Opus
    /// transcoder takes about half as much CPU again as at 5 (docs/codecs.md#cost), for a
    /// difference few listeners hear at these bitrates (64 kb/s mono, 96 kb/s stereo).
    pub opus_complexity: u8,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self { opus_complexity: 5 }
    }
}

impl AudioConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.opus_complexity > opus::MAX_COMPLEXITY {
            return Err(("audio.opus_complexity", format!("must be 0 to {}", opus::MAX_COMPLEXITY)));
        }
        Ok(())
    }
}

/// A registry with a transcoder for every ordered pair of Opus, AAC, PCMU and PCMA; among them
/// AAC->Opus (RTMP publisher, browser viewer), Opus->AAC (browser publisher, RTMP viewer) and
/// G.711<->Opus (phones).
pub fn adapters(config: AudioConfig) -> AdapterRegistry {
    let mut registry = AdapterRegistry::default();
    for from in AUDIO_CODECS {
        for to in AUDIO_CODECS.into_iter().filter(|to| *to != from) {
            registry.register(
                from,
                to,
                Arc::new(move |info: &TrackInfo| build_transcoder_with(config, from, to, info)),
            );
        }
    }
    registry
}

/// [`adapters`] with the default [`AudioConfig`].
pub fn default_adapters() -> AdapterRegistry {
    adapters(AudioConfig::default())
}

/// A transcoder from the track's codec `from` into `to`, with the parameters of its output
/// (the default [`AudioConfig`]).
pub fn build_transcoder(
    from: Codec,
    to: Codec,
    track: &TrackInfo,
) -> Result<(Box<dyn FrameTranscoder>, CodecParams), TranscodeError> {
    build_transcoder_with(AudioConfig::default(), from, to, track)
}

/// [`build_transcoder`] encoding as `config` says.
pub fn build_transcoder_with(
    config: AudioConfig,
    from: Codec,
    to: Codec,
    track: &TrackInfo,
) -> Result<(Box<dyn FrameTranscoder>, CodecParams), TranscodeError> {
    let setup = |e: CodecError| TranscodeError::Setup { from, to, reason: e.to_string() };
    let decoder = decoder_for(from, to, &track.params).map_err(setup)?;
    let (encoder, params) = encoder_for(config, from, to, decoder.channels()).map_err(setup)?;
    debug!(track = %track.id, %from, to = %to, in_rate = decoder.sample_rate(), out_rate = encoder.sample_rate(), channels = encoder.channels(), "building transcoder");
    let transcoder = AudioTranscoder::new(decoder, encoder).map_err(setup)?;
    Ok((Box::new(transcoder), params))
}

fn decoder_for(from: Codec, to: Codec, params: &CodecParams) -> Result<Box<dyn AudioDecoder>, CodecError> {
    Ok(match from {
        Codec::Aac => {
            // The AudioSpecificConfig should be there; without it, assume AAC-LC at the clock
            // rate and channel count the publisher declared.
            let asc = match &params.config {
                Some(asc) => asc.clone(),
                None => AacConfig::lc(params.clock_rate, params.channels.clamp(1, 2)).to_asc(),
            };
            Box::new(AacDecoder::new(&asc)?)
        }
        Codec::Opus => {
            // Phones get mono; others keep stereo when the publisher declared it.
            let stereo = to != Codec::Pcmu && to != Codec::Pcma && opus::fmtp_is_stereo(params.fmtp.as_deref());
            Box::new(OpusDecoder::new(if stereo { 2 } else { 1 })?)
        }
        Codec::Pcmu | Codec::Pcma => Box::new(G711Decoder::new(G711Law::from_codec(from).unwrap_or(G711Law::MuLaw))),
        other => return Err(CodecError::setup(other, "not an audio codec the toolkit decodes")),
    })
}

fn encoder_for(
    config: AudioConfig,
    from: Codec,
    to: Codec,
    channels: u8,
) -> Result<(Box<dyn AudioEncoder>, CodecParams), CodecError> {
    let channels = channels.clamp(1, 2);
    Ok(match to {
        Codec::Opus => {
            let phone = matches!(from, Codec::Pcmu | Codec::Pcma);
            let (mode, bitrate) = match (phone, channels) {
                (true, _) => (OpusMode::Voice, 32_000),
                (false, 1) => (OpusMode::Music, 64_000),
                (false, _) => (OpusMode::Music, 96_000),
            };
            let mut encoder = OpusEncoder::new(channels, mode, Some(bitrate))?;
            encoder.set_complexity(config.opus_complexity)?;
            // Opus is always opus/48000/2 in SDP; the fmtp says whether it is really stereo.
            let params = CodecParams {
                clock_rate: opus::RATE,
                channels: 2,
                fmtp: Some(opus::fmtp(channels)),
                ..CodecParams::default()
            };
            (Box::new(encoder), params)
        }
        Codec::Aac => {
            let encoder = AacEncoder::new(AAC_OUTPUT_RATE, channels, 64_000 * u32::from(channels))?;
            let params = CodecParams {
                clock_rate: AAC_OUTPUT_RATE,
                channels,
                config: Some(Bytes::clone(&encoder.audio_specific_config())),
                ..CodecParams::default()
            };
            (Box::new(encoder), params)
        }
        Codec::Pcmu | Codec::Pcma => {
            let law = G711Law::from_codec(to).unwrap_or(G711Law::MuLaw);
            (Box::new(G711Encoder::new(law)), CodecParams::for_codec(to))
        }
        other => return Err(CodecError::setup(other, "not an audio codec the toolkit encodes")),
    })
}

//! AAC-LC decoding on symphonia's pure-Rust decoder, configured from the AudioSpecificConfig.

use std::panic::{AssertUnwindSafe, catch_unwind};

use junction_core::Codec;
use symphonia::core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder as _, AudioDecoderOptions};
use symphonia::core::packet::PacketRef;
use symphonia::core::units::{Duration, Timestamp};
use symphonia::default::codecs::AacDecoder as SymphoniaAac;

use super::{AOT_AAC_LC, AacConfig, FRAME_SAMPLES};
use crate::codec::{AudioDecoder, CodecError};

/// Decodes raw AAC-LC frames (mono or stereo, 1024 samples each) into PCM at the stream's rate.
pub struct AacDecoder {
    inner: SymphoniaAac,
    params: AudioCodecParameters,
    config: AacConfig,
    scratch: Vec<f32>,
}

impl AacDecoder {
    /// A decoder for the stream an AudioSpecificConfig describes. HE-AAC (SBR/PS), more than
    /// two channels and in-band channel layouts are refused: the decoder does plain AAC-LC.
    pub fn new(asc: &[u8]) -> Result<Self, CodecError> {
        let config = AacConfig::parse(asc).map_err(|e| CodecError::setup(Codec::Aac, e))?;
        if config.object_type != AOT_AAC_LC || !(1..=2).contains(&config.channels) {
            return Err(CodecError::setup(
                Codec::Aac,
                format!(
                    "only mono/stereo AAC-LC is supported, not object type {} with {} channels",
                    config.object_type, config.channels
                ),
            ));
        }
        let mut params = AudioCodecParameters::new();
        params.for_codec(CODEC_ID_AAC).with_extra_data(asc.into());
        let inner = SymphoniaAac::try_new(&params, &AudioDecoderOptions::default())
            .map_err(|e| CodecError::setup(Codec::Aac, e))?;
        Ok(Self { inner, params, config, scratch: Vec::with_capacity(FRAME_SAMPLES * 2) })
    }

    pub fn config(&self) -> AacConfig {
        self.config
    }

    fn decode_inner(&mut self, payload: &[u8]) -> Result<(), String> {
        let packet = PacketRef::new(0, Timestamp::new(0), Duration::new(FRAME_SAMPLES as u64), payload);
        let decoded = self.inner.decode_ref(&packet).map_err(|e| e.to_string())?;
        if decoded.spec().channels().count() != usize::from(self.config.channels) {
            return Err(format!(
                "frame has {} channels, the stream {}",
                decoded.spec().channels().count(),
                self.config.channels
            ));
        }
        decoded.copy_to_vec_interleaved(&mut self.scratch);
        Ok(())
    }
}

impl AudioDecoder for AacDecoder {
    fn codec(&self) -> Codec {
        Codec::Aac
    }
    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }
    fn channels(&self) -> u8 {
        self.config.channels
    }
    fn decode(&mut self, payload: &[u8], out: &mut Vec<f32>) -> Result<usize, CodecError> {
        // The payload comes from the network: a decoder bug on a malformed frame must cost
        // that frame, not the variant's task.
        let result = catch_unwind(AssertUnwindSafe(|| self.decode_inner(payload)));
        let failure = match result {
            Ok(Ok(())) => {
                out.extend_from_slice(&self.scratch);
                return Ok(self.scratch.len() / usize::from(self.config.channels));
            }
            Ok(Err(reason)) => reason,
            Err(_) => {
                // A panic may have left it half-updated: start afresh.
                if let Ok(fresh) = SymphoniaAac::try_new(&self.params, &AudioDecoderOptions::default()) {
                    self.inner = fresh;
                }
                "decoder panicked on a malformed frame".to_owned()
            }
        };
        Err(CodecError::decode(Codec::Aac, failure))
    }
}

//! AAC-LC encoding on the Fraunhofer FDK AAC library (crate `fdk-aac`, which builds the
//! library from its bundled sources). Note the library's own licence (the "Software License
//! for The Fraunhofer FDK AAC Codec Library for Android"): redistribution is allowed with its
//! notice; AAC patent licensing is the deployer's business.

use bytes::Bytes;
use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};
use junction_core::Codec;

use super::{AacConfig, FRAME_SAMPLES};
use crate::codec::pcm::f32_to_i16;
use crate::codec::{AudioEncoder, CodecError, check_frame_len};

/// Encodes 1024-sample frames of PCM into raw AAC-LC frames; [`Self::audio_specific_config`]
/// is what a receiver needs to decode them (FLV sequence header, `CodecParams::config`).
pub struct AacEncoder {
    inner: Encoder,
    config: AacConfig,
    asc: Bytes,
    delay: usize,
    pcm: Vec<i16>,
    out: Vec<u8>,
}

impl AacEncoder {
    /// A constant-bitrate encoder (`bitrate` bits/s) for mono or stereo at `sample_rate`.
    pub fn new(sample_rate: u32, channels: u8, bitrate: u32) -> Result<Self, CodecError> {
        let channels = channels.clamp(1, 2);
        let setup = |e: fdk_aac::enc::EncoderError| CodecError::setup(Codec::Aac, e);
        let inner = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(bitrate),
            sample_rate,
            transport: Transport::Raw,
            channels: if channels == 2 { ChannelMode::Stereo } else { ChannelMode::Mono },
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(setup)?;
        let info = inner.info().map_err(setup)?;
        if info.frameLength as usize != FRAME_SAMPLES {
            return Err(CodecError::setup(Codec::Aac, format!("unexpected frame length {}", info.frameLength)));
        }
        let asc_len = (info.confSize as usize).min(info.confBuf.len());
        let asc = Bytes::copy_from_slice(info.confBuf.get(..asc_len).unwrap_or_default());
        let config = AacConfig::parse(&asc).map_err(|e| CodecError::setup(Codec::Aac, e))?;
        Ok(Self {
            inner,
            config,
            asc,
            delay: info.nDelay as usize,
            pcm: Vec::with_capacity(FRAME_SAMPLES * 2),
            out: vec![0; (info.maxOutBufBytes as usize).max(2048)],
        })
    }

    /// The AudioSpecificConfig of the stream this encoder produces.
    pub fn audio_specific_config(&self) -> Bytes {
        self.asc.clone()
    }

    pub fn config(&self) -> AacConfig {
        self.config
    }
}

impl AudioEncoder for AacEncoder {
    fn codec(&self) -> Codec {
        Codec::Aac
    }
    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }
    fn channels(&self) -> u8 {
        self.config.channels
    }
    fn frame_samples(&self) -> usize {
        FRAME_SAMPLES
    }
    fn delay(&self) -> usize {
        self.delay
    }
    fn encode(&mut self, pcm: &[f32]) -> Result<Bytes, CodecError> {
        check_frame_len(self, pcm)?;
        self.pcm.clear();
        self.pcm.extend(pcm.iter().map(|s| f32_to_i16(*s)));
        let info = self.inner.encode(&self.pcm, &mut self.out).map_err(|e| CodecError::encode(Codec::Aac, e))?;
        if info.input_consumed != self.pcm.len() {
            return Err(CodecError::encode(
                Codec::Aac,
                format!("consumed {} of {} samples", info.input_consumed, self.pcm.len()),
            ));
        }
        Ok(Bytes::copy_from_slice(self.out.get(..info.output_size).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::aac::AacDecoder;
    use crate::codec::{AudioDecoder, tone};

    #[test]
    fn encode_decode_keeps_a_tone_and_reports_its_config() {
        for (rate, channels) in [(48_000, 2), (44_100, 1)] {
            let mut encoder = AacEncoder::new(rate, channels, 64_000 * u32::from(channels)).unwrap();
            assert_eq!(encoder.config(), AacConfig::lc(rate, channels));
            let mut decoder = AacDecoder::new(&encoder.audio_specific_config()).unwrap();
            let pcm = tone::sine(880.0, 0.5, rate, channels, FRAME_SAMPLES * 40);
            let mut decoded = Vec::new();
            let mut sizes = Vec::new();
            for frame in pcm.chunks(FRAME_SAMPLES * usize::from(channels)) {
                let packet = encoder.encode(frame).unwrap();
                sizes.push(packet.len());
                if !packet.is_empty() {
                    decoder.decode(&packet, &mut decoded).unwrap();
                }
            }
            eprintln!("AAC {rate} Hz x{channels}: delay {} samples, frame sizes {:?}", encoder.delay(), &sizes[..4]);
            let found = tone::dominant_frequency(&decoded, channels, rate).unwrap();
            assert!((found - 880.0).abs() < 2.0, "{rate} Hz: found {found}");
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let asc = AacConfig::lc(44_100, 2).to_asc();
        let mut decoder = AacDecoder::new(&asc).unwrap();
        let mut state = 7u32;
        let mut out = Vec::new();
        for len in 0..400 {
            let junk: Vec<u8> = (0..len % 97)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (state >> 16) as u8
                })
                .collect();
            if decoder.decode(&junk, &mut out).is_err() {
                continue;
            }
        }
        assert!(AacDecoder::new(&[0x12]).is_err());
        // HE-AAC (object type 5) is refused at setup, not mis-decoded.
        assert!(AacDecoder::new(&AacConfig { object_type: 5, sample_rate: 44_100, channels: 2 }.to_asc()).is_err());
    }
}

//! Opus encoding and decoding at 48 kHz, mono or stereo, on libopus (the `opus` crate, which
//! builds libopus from source with cmake).

use bytes::Bytes;
use junction_core::Codec;

use super::{AudioDecoder, AudioEncoder, CodecError, check_frame_len};

/// Opus's RTP clock and the rate we always encode and decode at.
pub const RATE: u32 = 48_000;
/// Samples per channel in a 20 ms frame.
pub const FRAME_SAMPLES: usize = 960;
/// The longest Opus packet: 120 ms.
const MAX_PACKET_SAMPLES: usize = 5_760;
/// libopus's recommended output buffer for one packet.
const MAX_PACKET_BYTES: usize = 4_000;

/// The fmtp we announce for Opus we produce: 10 ms minimum packet time, in-band FEC understood,
/// and the stereo flags when the stream is stereo.
pub fn fmtp(channels: u8) -> String {
    if channels >= 2 {
        "minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1".to_owned()
    } else {
        "minptime=10;useinbandfec=1".to_owned()
    }
}

/// Whether an Opus fmtp line says the sender sends stereo (`sprop-stereo=1` or `stereo=1`).
pub fn fmtp_is_stereo(fmtp: Option<&str>) -> bool {
    fmtp.unwrap_or_default()
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .any(|(k, v)| (k.eq_ignore_ascii_case("sprop-stereo") || k.eq_ignore_ascii_case("stereo")) && v.trim() == "1")
}

fn channels_of(channels: u8) -> opus::Channels {
    if channels >= 2 { opus::Channels::Stereo } else { opus::Channels::Mono }
}

/// What the encoder is tuned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusMode {
    /// Speech (`OPUS_APPLICATION_VOIP`): phones, conferencing.
    Voice,
    /// Music and mixed content (`OPUS_APPLICATION_AUDIO`): streams.
    Music,
}

/// Encodes 20 ms frames of 48 kHz PCM into Opus packets.
pub struct OpusEncoder {
    inner: opus::Encoder,
    channels: u8,
    lookahead: usize,
    packet: Vec<u8>,
}

impl OpusEncoder {
    /// An encoder at `bitrate` bits/s (libopus chooses when `None`).
    pub fn new(channels: u8, mode: OpusMode, bitrate: Option<u32>) -> Result<Self, CodecError> {
        let application = match mode {
            OpusMode::Voice => opus::Application::Voip,
            OpusMode::Music => opus::Application::Audio,
        };
        let setup = |e: opus::Error| CodecError::setup(Codec::Opus, e);
        let mut inner = opus::Encoder::new(RATE, channels_of(channels), application).map_err(setup)?;
        if let Some(bps) = bitrate {
            inner.set_bitrate(opus::Bitrate::Bits(i32::try_from(bps).unwrap_or(i32::MAX))).map_err(setup)?;
        }
        inner.set_inband_fec(true).map_err(setup)?;
        let lookahead = usize::try_from(inner.get_lookahead().map_err(setup)?).unwrap_or(0);
        Ok(Self { inner, channels: channels.clamp(1, 2), lookahead, packet: vec![0; MAX_PACKET_BYTES] })
    }

    /// libopus's complexity, 0 (cheapest) to 10 (its default): CPU against quality.
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), CodecError> {
        let complexity = i32::from(complexity.min(MAX_COMPLEXITY));
        self.inner.set_complexity(complexity).map_err(|e| CodecError::setup(Codec::Opus, e))
    }
}

/// libopus's highest complexity, and its default.
pub const MAX_COMPLEXITY: u8 = 10;

impl AudioEncoder for OpusEncoder {
    fn codec(&self) -> Codec {
        Codec::Opus
    }
    fn sample_rate(&self) -> u32 {
        RATE
    }
    fn channels(&self) -> u8 {
        self.channels
    }
    fn frame_samples(&self) -> usize {
        FRAME_SAMPLES
    }
    fn delay(&self) -> usize {
        self.lookahead
    }
    fn encode(&mut self, pcm: &[f32]) -> Result<Bytes, CodecError> {
        check_frame_len(self, pcm)?;
        let len = self.inner.encode_float(pcm, &mut self.packet).map_err(|e| CodecError::encode(Codec::Opus, e))?;
        Ok(Bytes::copy_from_slice(self.packet.get(..len).unwrap_or_default()))
    }
}

/// Decodes Opus packets (any duration, mono or stereo) into 48 kHz PCM with a fixed channel
/// count; libopus mixes or duplicates channels as needed.
pub struct OpusDecoder {
    inner: opus::Decoder,
    channels: u8,
    scratch: Vec<f32>,
    /// Samples per channel of the last good packet: the size concealment works in.
    last_packet_samples: usize,
}

impl OpusDecoder {
    pub fn new(channels: u8) -> Result<Self, CodecError> {
        let inner = opus::Decoder::new(RATE, channels_of(channels)).map_err(|e| CodecError::setup(Codec::Opus, e))?;
        let channels = channels.clamp(1, 2);
        Ok(Self {
            inner,
            channels,
            scratch: vec![0.0; MAX_PACKET_SAMPLES * usize::from(channels)],
            last_packet_samples: FRAME_SAMPLES,
        })
    }
}

impl AudioDecoder for OpusDecoder {
    fn codec(&self) -> Codec {
        Codec::Opus
    }
    fn sample_rate(&self) -> u32 {
        RATE
    }
    fn channels(&self) -> u8 {
        self.channels
    }
    fn decode(&mut self, payload: &[u8], out: &mut Vec<f32>) -> Result<usize, CodecError> {
        if payload.is_empty() {
            // libopus would take an empty packet for a lost one; a sender never sends one.
            return Err(CodecError::decode(Codec::Opus, "empty packet"));
        }
        let frames = self
            .inner
            .decode_float(payload, &mut self.scratch, false)
            .map_err(|e| CodecError::decode(Codec::Opus, e))?;
        out.extend_from_slice(self.scratch.get(..frames * usize::from(self.channels)).unwrap_or_default());
        self.last_packet_samples = frames.max(120);
        Ok(frames)
    }

    /// libopus's packet-loss concealment, which fades out over a few packets; silence for
    /// whatever is not a multiple of 2.5 ms.
    fn conceal(&mut self, frames: usize, out: &mut Vec<f32>) {
        let channels = usize::from(self.channels);
        let mut left = frames;
        while left >= 120 {
            // PLC works in multiples of 2.5 ms (120 samples) up to one packet.
            let chunk = (left.min(self.last_packet_samples) / 120) * 120;
            let Some(buffer) = self.scratch.get_mut(..chunk * channels) else { break };
            match self.inner.decode_float(&[], buffer, false) {
                Ok(n) if n > 0 => {
                    out.extend_from_slice(self.scratch.get(..n.min(left) * channels).unwrap_or_default());
                    left -= n.min(left);
                }
                _ => break,
            }
        }
        out.resize(out.len() + left * channels, 0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tone;

    fn round_trip(channels: u8, mode: OpusMode, freq: f64) -> Vec<f32> {
        round_trip_at(channels, mode, freq, MAX_COMPLEXITY)
    }

    fn round_trip_at(channels: u8, mode: OpusMode, freq: f64, complexity: u8) -> Vec<f32> {
        let pcm = tone::sine(freq, 0.5, RATE, channels, FRAME_SAMPLES * 50);
        let mut encoder = OpusEncoder::new(channels, mode, None).unwrap();
        encoder.set_complexity(complexity).unwrap();
        let mut decoder = OpusDecoder::new(channels).unwrap();
        let mut decoded = Vec::new();
        for frame in pcm.chunks(FRAME_SAMPLES * usize::from(channels)) {
            let packet = encoder.encode(frame).unwrap();
            assert!(!packet.is_empty() && packet.len() < 1500);
            assert_eq!(decoder.decode(&packet, &mut decoded).unwrap(), FRAME_SAMPLES);
        }
        assert_eq!(decoded.len(), pcm.len());
        decoded
    }

    #[test]
    fn encode_decode_keeps_a_440_hz_tone() {
        for (channels, mode) in [(1, OpusMode::Voice), (2, OpusMode::Music)] {
            let decoded = round_trip(channels, mode, 440.0);
            let found = tone::dominant_frequency(&decoded, channels, RATE).unwrap();
            assert!((found - 440.0).abs() < 2.0, "{channels} channels: {found} Hz");
            assert!(tone::rms(&decoded) > 0.3, "the tone kept its level");
        }
    }

    #[test]
    fn every_complexity_keeps_the_tone_and_past_the_highest_is_the_highest() {
        for complexity in [0, 5, MAX_COMPLEXITY, u8::MAX] {
            let decoded = round_trip_at(2, OpusMode::Music, 440.0, complexity);
            let found = tone::dominant_frequency(&decoded, 2, RATE).unwrap();
            assert!((found - 440.0).abs() < 2.0, "complexity {complexity}: {found} Hz");
            assert!(tone::rms(&decoded) > 0.3, "complexity {complexity}: the tone kept its level");
        }
    }

    #[test]
    fn decoded_output_lags_by_the_lookahead() {
        // The encoder's lookahead is the delay transcoders compensate for: measure it.
        let mut pcm = vec![0.0; FRAME_SAMPLES * 5];
        pcm.extend(tone::sine(1000.0, 0.5, RATE, 1, FRAME_SAMPLES * 5));
        let mut encoder = OpusEncoder::new(1, OpusMode::Music, None).unwrap();
        let mut decoder = OpusDecoder::new(1).unwrap();
        let mut decoded = Vec::new();
        for frame in pcm.chunks(FRAME_SAMPLES) {
            decoder.decode(&encoder.encode(frame).unwrap(), &mut decoded).unwrap();
        }
        let lag = tone::onset(&decoded, 1, 0.1).unwrap() as i64 - tone::onset(&pcm, 1, 0.1).unwrap() as i64;
        assert!((lag - encoder.delay() as i64).abs() <= 48, "lag {lag} vs lookahead {}", encoder.delay());
    }

    #[test]
    fn bad_packets_are_errors_and_loss_is_concealed() {
        let mut decoder = OpusDecoder::new(2).unwrap();
        let mut out = Vec::new();
        assert!(decoder.decode(&[], &mut out).is_err());
        // A code-3 packet announcing more frames than it has bytes for.
        assert!(decoder.decode(&[0xFF, 0xFF, 0xFF], &mut out).is_err());
        assert!(out.is_empty());
        decoder.conceal(1000, &mut out);
        assert_eq!(out.len(), 2000);
        assert!(fmtp_is_stereo(Some("minptime=10; sprop-stereo=1")));
        assert!(!fmtp_is_stereo(Some("minptime=10;useinbandfec=1")));
        assert_eq!(fmtp(1), "minptime=10;useinbandfec=1");
    }
}

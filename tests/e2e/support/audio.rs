//! Audio checks for end-to-end tests: decode what a client received (Opus packets via libopus,
//! G.711 payloads, media files via ffmpeg) to 16-bit PCM and find the tone in it.
//!
//! G.711 is junction-audio's (`audio/src/codec/g711.rs`; one implementation in the tree, checked
//! against ffmpeg's in `audio/tests/codec_ffmpeg.rs`), and so is the frequency finder: what these
//! tests are about is what the server sends, not the arithmetic of a codec table.

use junction_audio::codec::tone;

/// The two G.711 laws: µ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8).
pub use junction_audio::codec::G711Law as G711;

/// Opus's RTP clock and the rate [`OpusToPcm`] decodes at.
pub const OPUS_RATE: u32 = 48_000;
/// G.711's rate.
pub const G711_RATE: u32 = 8_000;

/// The strongest frequency (Hz) in interleaved 16-bit PCM; `None` for silence or under 256
/// samples per channel.
pub fn dominant_frequency(samples: &[i16], channels: u8, rate: u32) -> Option<f64> {
    tone::dominant_frequency_i16(samples, channels, rate)
}

/// Panics unless `samples` carry a tone of `expected` Hz (within `tolerance` Hz); returns the
/// frequency found.
pub fn assert_tone(samples: &[i16], channels: u8, rate: u32, expected: f64, tolerance: f64) -> f64 {
    let found = dominant_frequency(samples, channels, rate)
        .unwrap_or_else(|| panic!("no tone in {} samples (silence or too short)", samples.len()));
    assert!((found - expected).abs() <= tolerance, "expected a {expected} Hz tone, found {found:.1} Hz");
    found
}

/// Decodes a stream of Opus packets (as RTP payloads) with libopus at 48 kHz.
pub struct OpusToPcm {
    decoder: opus::Decoder,
    channels: u8,
    buffer: Vec<i16>,
}

impl OpusToPcm {
    /// `channels`: 1 or 2, what the PCM should have (libopus mixes or duplicates as needed).
    pub fn new(channels: u8) -> Self {
        let layout = if channels >= 2 { opus::Channels::Stereo } else { opus::Channels::Mono };
        let decoder = opus::Decoder::new(OPUS_RATE, layout).expect("libopus decoder");
        Self { decoder, channels: channels.clamp(1, 2), buffer: vec![0; 5_760 * 2] }
    }

    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// Decodes one packet, appending its samples (interleaved) to `out`; returns samples per
    /// channel, or libopus's error.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<i16>) -> Result<usize, opus::Error> {
        let frames = self.decoder.decode(packet, &mut self.buffer, false)?;
        out.extend_from_slice(&self.buffer[..frames * usize::from(self.channels)]);
        Ok(frames)
    }
}

/// Decodes Opus packets to interleaved 16-bit PCM at 48 kHz; panics on a packet libopus rejects.
pub fn opus_to_pcm<P: AsRef<[u8]>>(packets: &[P], channels: u8) -> Vec<i16> {
    let mut decoder = OpusToPcm::new(channels);
    let mut pcm = Vec::new();
    for (i, packet) in packets.iter().enumerate() {
        decoder.decode(packet.as_ref(), &mut pcm).unwrap_or_else(|e| panic!("Opus packet {i}: {e}"));
    }
    pcm
}

/// Decodes G.711 payload bytes (one per sample, 8 kHz mono) to 16-bit PCM.
pub fn g711_to_pcm(payload: &[u8], law: G711) -> Vec<i16> {
    payload.iter().map(|byte| law.decode(*byte)).collect()
}

/// The audio of a media file, decoded by ffmpeg to mono at `rate`.
pub async fn decode_file_audio(path: &std::path::Path, rate: u32) -> Vec<i16> {
    let output = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-vn", "-ac", "1", "-ar", &rate.to_string(), "-f", "s16le", "-"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("ffmpeg runs");
    assert!(output.status.success(), "decoding audio: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_reference_points() {
        assert_eq!(g711_to_pcm(&[0xFF, 0x80, 0x00], G711::MuLaw), [0, 32_124, -32_124]);
        assert_eq!(g711_to_pcm(&[0xD5, 0x55, 0xAA, 0x2A], G711::ALaw), [8, -8, 32_256, -32_256]);
    }

    #[test]
    fn finds_the_tone_in_opus_packets() {
        let mut encoder = opus::Encoder::new(OPUS_RATE, opus::Channels::Mono, opus::Application::Audio).unwrap();
        let tone: Vec<i16> = (0..48_000)
            .map(|n| (8_000.0 * (std::f64::consts::TAU * 440.0 * n as f64 / 48_000.0).sin()) as i16)
            .collect();
        let packets: Vec<Vec<u8>> = tone.chunks_exact(960).map(|c| encoder.encode_vec(c, 4_000).unwrap()).collect();
        let stereo = opus_to_pcm(&packets, 2);
        assert_eq!(stereo.len(), 48_000 * 2);
        assert_tone(&stereo, 2, OPUS_RATE, 440.0, 1.0);
        assert!(dominant_frequency(&[0; 4_800], 1, OPUS_RATE).is_none());
    }
}

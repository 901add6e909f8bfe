//! The room's audio mix as an AAC track for the outputs that play it (a `grid`, and an `hls`
//! output following the active speaker): 20 ms frames of the mixer's 48 kHz mono PCM in,
//! AAC-LC frames out (FDK, mono, 64 kb/s), timed by the samples encoded on the output's clock.
//! Where the mix skipped ticks (a busy runtime), silence fills the gap, so sound and clock stay
//! together.

use std::time::{Duration, Instant};

use junction_audio::codec::AudioEncoder;
use junction_audio::codec::aac::AacEncoder;
use junction_audio::mixer::MIX_RATE;
use junction_core::{Codec, CodecParams, MediaFrame, MediaTime};

/// The mixed sound's AAC bitrate (mono).
const BITRATE: u32 = 64_000;
/// Audio the mix may fall behind the clock before the gap is filled with silence.
const SLACK: Duration = Duration::from_millis(100);

pub struct MixAudio {
    encoder: AacEncoder,
    pcm: Vec<f32>,
    samples: u64,
    clock: Instant,
}

impl MixAudio {
    /// An encoder whose time zero is `clock`, and the parameters of the track it makes.
    pub fn new(clock: Instant) -> Result<(MixAudio, CodecParams), String> {
        let encoder = AacEncoder::new(MIX_RATE, 1, BITRATE).map_err(|e| format!("the mix's AAC encoder: {e}"))?;
        let mut params = CodecParams::for_codec(Codec::Aac);
        (params.clock_rate, params.channels, params.config) = (MIX_RATE, 1, Some(encoder.audio_specific_config()));
        Ok((MixAudio { encoder, pcm: Vec::new(), samples: 0, clock }, params))
    }

    /// Takes 20 ms of mix heard at `now`; pushes the AAC frames it completes onto `out`.
    pub fn push(&mut self, mix: &[f32], now: Instant, out: &mut Vec<MediaFrame>) -> Result<(), String> {
        let rate = u64::from(MIX_RATE);
        let due = (now.saturating_duration_since(self.clock).as_micros() as u64) * rate / 1_000_000;
        let queued = self.samples + self.pcm.len() as u64 + mix.len() as u64;
        let slack = SLACK.as_micros() as u64 * rate / 1_000_000;
        if due > queued + slack {
            self.pcm.resize(self.pcm.len() + (due - queued) as usize, 0.0);
        }
        self.pcm.extend_from_slice(mix);
        let frame = self.encoder.frame_samples();
        while self.pcm.len() >= frame {
            let payload = self.encoder.encode(&self.pcm[..frame]).map_err(|e| format!("the mix's AAC: {e}"))?;
            self.pcm.drain(..frame);
            let time = MediaTime::new(self.samples, MIX_RATE);
            let captured = self.clock + Duration::from_micros(self.samples * 1_000_000 / rate);
            self.samples += frame as u64;
            if !payload.is_empty() {
                out.push(MediaFrame::audio(Codec::Aac, time, now, payload).captured_at(captured));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_the_samples_and_a_stalled_mix_is_filled_with_silence() {
        let t0 = Instant::now();
        let (mut audio, params) = MixAudio::new(t0).unwrap();
        assert_eq!((params.clock_rate, params.channels), (48_000, 1));
        assert!(params.config.is_some(), "the AudioSpecificConfig");
        let mut out = Vec::new();
        for n in 0..50u64 {
            audio.push(&[0.1; 960], t0 + Duration::from_millis(n * 20), &mut out).unwrap();
        }
        let times: Vec<u64> = out.iter().map(|f| f.time.ticks).collect();
        assert!(times.windows(2).all(|w| w[1] - w[0] == 1024), "{times:?}");
        // Half a second without mix: the next frames are placed after the gap.
        let before = audio.samples + audio.pcm.len() as u64;
        audio.push(&[0.1; 960], t0 + Duration::from_millis(1_500), &mut out).unwrap();
        let after = audio.samples + audio.pcm.len() as u64;
        assert!(after - before >= 48_000 / 2, "silence filled the gap: {} samples", after - before);
    }
}

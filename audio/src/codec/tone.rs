//! Test signals and their analysis: sine generation, the dominant frequency of a PCM block
//! (windowed FFT with peak interpolation), signal-to-noise ratio and onset detection. Used by
//! the codec tests, the end-to-end tests (which check that a tone crossed the server intact)
//! and the bench tool.

use realfft::RealFftPlanner;

use super::pcm::i16_to_f32;

/// `frames` samples per channel of a sine at `freq` Hz and `amplitude` (0..=1), interleaved,
/// the same in every channel.
pub fn sine(freq: f64, amplitude: f32, rate: u32, channels: u8, frames: usize) -> Vec<f32> {
    sine_from(0, freq, amplitude, rate, channels, frames)
}

/// Like [`sine`], starting at sample `start` of the endless tone (for generating it in pieces).
pub fn sine_from(start: u64, freq: f64, amplitude: f32, rate: u32, channels: u8, frames: usize) -> Vec<f32> {
    let step = std::f64::consts::TAU * freq / f64::from(rate.max(1));
    let mut out = Vec::with_capacity(frames * usize::from(channels));
    for n in 0..frames as u64 {
        let value = amplitude * ((start + n) as f64 * step).sin() as f32;
        out.extend(std::iter::repeat_n(value, usize::from(channels.max(1))));
    }
    out
}

/// The strongest frequency in interleaved `samples` (channels averaged), in Hz, or `None` if
/// there are fewer than 256 frames or only silence. Uses up to 2^15 frames from the middle of
/// the block, a Hann window and parabolic interpolation between FFT bins: a clean tone is found
/// to within a fraction of a bin (about 0.5 Hz over half a second of 48 kHz audio).
pub fn dominant_frequency(samples: &[f32], channels: u8, rate: u32) -> Option<f64> {
    let channels = usize::from(channels.max(1));
    let mono: Vec<f32> = samples.chunks_exact(channels).map(|f| f.iter().sum::<f32>() / channels as f32).collect();
    if mono.len() < 256 {
        return None;
    }
    let n = mono.len().min(1 << 15);
    let start = (mono.len() - n) / 2;
    let mut window: Vec<f32> = mono[start..start + n]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let hann = 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / (n - 1) as f32).cos();
            s * hann
        })
        .collect();
    let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n);
    let mut spectrum = fft.make_output_vec();
    fft.process(&mut window, &mut spectrum).ok()?;
    let power: Vec<f64> = spectrum.iter().map(|c| f64::from(c.norm_sqr())).collect();
    // Skip DC and the lowest bins (window leakage of any offset).
    let (peak, peak_power) =
        power.iter().enumerate().skip(2).max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, p)| (i, *p))?;
    if peak_power <= 1e-9 || peak + 1 >= power.len() {
        return None;
    }
    // Parabolic interpolation of the log magnitude around the peak.
    let (a, b, c) = (power[peak - 1].max(1e-20).ln(), peak_power.ln(), power[peak + 1].max(1e-20).ln());
    let denominator = a - 2.0 * b + c;
    let offset = if denominator.abs() > 1e-12 { 0.5 * (a - c) / denominator } else { 0.0 };
    Some((peak as f64 + offset.clamp(-0.5, 0.5)) * f64::from(rate) / n as f64)
}

/// [`dominant_frequency`] of 16-bit samples.
pub fn dominant_frequency_i16(samples: &[i16], channels: u8, rate: u32) -> Option<f64> {
    let samples: Vec<f32> = samples.iter().map(|s| i16_to_f32(*s)).collect();
    dominant_frequency(&samples, channels, rate)
}

/// Signal-to-noise ratio in dB of `test` against `reference`, sample by sample (they must be
/// aligned; the shorter length is used).
pub fn snr_db(reference: &[f32], test: &[f32]) -> f64 {
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for (r, t) in reference.iter().zip(test) {
        signal += f64::from(*r).powi(2);
        noise += f64::from(r - t).powi(2);
    }
    10.0 * (signal / noise.max(1e-20)).log10()
}

/// Root mean square of the samples.
pub fn rms(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// The first frame (sample per channel) where the signal's magnitude reaches `threshold`: where
/// a tone starts after silence.
pub fn onset(samples: &[f32], channels: u8, threshold: f32) -> Option<usize> {
    let channels = usize::from(channels.max(1));
    samples.iter().position(|s| s.abs() >= threshold).map(|i| i / channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_frequency_of_a_tone_among_noise() {
        for (freq, rate, channels) in [(440.0, 48_000, 2), (660.0, 44_100, 1), (1000.0, 8_000, 1), (123.4, 16_000, 1)] {
            let mut pcm = sine(freq, 0.5, rate, channels, rate as usize / 2);
            // Deterministic pseudo-noise at -30 dB.
            let mut state = 1u32;
            for s in &mut pcm {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *s += (state >> 8) as f32 / (1 << 24) as f32 * 0.03 - 0.015;
            }
            let found = dominant_frequency(&pcm, channels, rate).unwrap();
            assert!((found - freq).abs() < 1.0, "{freq} Hz at {rate} Hz found as {found}");
        }
        assert_eq!(dominant_frequency(&[0.0; 4800], 1, 48_000), None);
        assert_eq!(dominant_frequency(&[0.5; 100], 1, 48_000), None);
    }

    #[test]
    fn onset_and_snr() {
        let mut pcm = vec![0.0; 200];
        pcm.extend(sine_from(1, 440.0, 0.5, 48_000, 2, 100));
        assert_eq!(onset(&pcm, 2, 0.01), Some(100));
        assert!(snr_db(&pcm, &pcm) > 100.0);
        assert!((rms(&sine(100.0, 1.0, 48_000, 1, 48_000)) - 0.5f64.sqrt()).abs() < 1e-3);
    }
}

//! Raw audio: interleaved PCM frames, `f32`/`i16` sample conversion, channel up/down-mixing,
//! and a FIFO that cuts a stream of samples into the fixed frame sizes encoders need.

use std::time::Duration;

/// A block of interleaved PCM: `samples.len() == frames() * channels`, values in `-1.0..=1.0`.
#[derive(Debug, Clone, PartialEq)]
pub struct PcmFrame {
    pub samples: Vec<f32>,
    pub rate: u32,
    pub channels: u8,
}

impl PcmFrame {
    pub fn new(samples: Vec<f32>, rate: u32, channels: u8) -> Self {
        Self { samples, rate, channels: channels.max(1) }
    }

    pub fn silence(frames: usize, rate: u32, channels: u8) -> Self {
        Self::new(vec![0.0; frames * usize::from(channels.max(1))], rate, channels)
    }

    pub fn from_i16(samples: &[i16], rate: u32, channels: u8) -> Self {
        Self::new(samples.iter().map(|s| i16_to_f32(*s)).collect(), rate, channels)
    }

    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.frames() as f64 / f64::from(self.rate.max(1)))
    }

    pub fn to_i16(&self) -> Vec<i16> {
        self.samples.iter().map(|s| f32_to_i16(*s)).collect()
    }

    /// The same audio with `channels` channels (see [`remix`]).
    pub fn remixed(&self, channels: u8) -> PcmFrame {
        let mut samples = Vec::with_capacity(self.frames() * usize::from(channels.max(1)));
        remix(&self.samples, self.channels, channels, &mut samples);
        PcmFrame::new(samples, self.rate, channels)
    }
}

pub fn i16_to_f32(sample: i16) -> f32 {
    f32::from(sample) / 32768.0
}

/// Scales and clamps to the `i16` range.
pub fn f32_to_i16(sample: f32) -> i16 {
    (sample * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// Appends `input` (interleaved, `from` channels) to `out` with `to` channels. Down to mono
/// averages the channels; mono up to several copies it into each; otherwise channels are kept
/// in order, extra input channels dropped and missing output channels filled with the first.
pub fn remix(input: &[f32], from: u8, to: u8, out: &mut Vec<f32>) {
    let (from, to) = (usize::from(from.max(1)), usize::from(to.max(1)));
    if from == to {
        out.extend_from_slice(input);
        return;
    }
    for frame in input.chunks_exact(from) {
        if to == 1 {
            out.push(frame.iter().sum::<f32>() / from as f32);
        } else {
            out.extend((0..to).map(|c| frame.get(c).or(frame.first()).copied().unwrap_or(0.0)));
        }
    }
}

/// Interleaved samples in, fixed-size frames out.
#[derive(Debug, Default)]
pub struct SampleFifo {
    buf: Vec<f32>,
    read: usize,
}

impl SampleFifo {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, samples: &[f32]) {
        self.buf.extend_from_slice(samples);
    }

    /// Buffered samples (all channels).
    pub fn len(&self) -> usize {
        self.buf.len() - self.read
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next `n` samples, if that many are buffered; they are consumed.
    pub fn pop(&mut self, n: usize) -> Option<&[f32]> {
        if self.len() < n {
            return None;
        }
        if self.read > 0 && self.read >= self.buf.len() / 2 {
            // Compact once half is consumed, while nothing is borrowed: bounded memory, and
            // each sample is moved at most once on average.
            self.buf.drain(..self.read);
            self.read = 0;
        }
        let start = self.read;
        self.read += n;
        self.buf.get(start..start + n)
    }

    /// Drops up to `n` buffered samples; returns how many were dropped.
    pub fn discard(&mut self, n: usize) -> usize {
        let dropped = n.min(self.len());
        self.read += dropped;
        dropped
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.read = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remix_down_averages_and_up_copies() {
        let mut out = Vec::new();
        remix(&[0.5, -0.5, 1.0, 0.0], 2, 1, &mut out);
        assert_eq!(out, [0.0, 0.5]);
        out.clear();
        remix(&[0.25, -1.0], 1, 2, &mut out);
        assert_eq!(out, [0.25, 0.25, -1.0, -1.0]);
        let frame = PcmFrame::new(vec![0.1, 0.3], 48_000, 2).remixed(1);
        assert_eq!((frame.frames(), frame.channels), (1, 1));
        assert!((frame.samples[0] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn i16_conversion_round_trips_and_clamps() {
        for s in [i16::MIN, -1000, -1, 0, 1, 1000, i16::MAX] {
            assert_eq!(f32_to_i16(i16_to_f32(s)), s);
        }
        assert_eq!(f32_to_i16(2.0), i16::MAX);
        assert_eq!(f32_to_i16(-2.0), i16::MIN);
    }

    #[test]
    fn fifo_cuts_fixed_frames_in_order() {
        let mut fifo = SampleFifo::new();
        let mut next = 0.0f32;
        let mut expected = 0.0f32;
        for round in 0..200 {
            let chunk: Vec<f32> = (0..(round % 7 + 1) * 37)
                .map(|_| {
                    next += 1.0;
                    next
                })
                .collect();
            fifo.push(&chunk);
            while let Some(frame) = fifo.pop(160) {
                for s in frame {
                    expected += 1.0;
                    assert_eq!(*s, expected);
                }
            }
            assert!(fifo.len() < 160);
        }
        let pending = fifo.len();
        assert_eq!(pending, (next - expected) as usize);
        assert_eq!(fifo.discard(1000), pending);
        assert!(fifo.is_empty());
    }
}

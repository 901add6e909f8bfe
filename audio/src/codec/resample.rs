//! Sample-rate conversion between any two rates (8, 16, 44.1, 48 kHz ...) on rubato's
//! synchronous FFT resampler, fed with arbitrary-sized blocks and buffering internally. The
//! resampler's own delay is trimmed from the start of its output, so output sample `n * to /
//! from` is input sample `n`: timestamps need no correction for it.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

use super::CodecError;

/// The lowest rate resampled (AAC's lowest standard rate).
pub const MIN_RATE: u32 = 7_350;
/// The highest rate resampled (AAC's highest standard rate).
pub const MAX_RATE: u32 = 96_000;

/// Converts interleaved `f32` PCM from one rate to another; a plain copy when they are equal.
pub struct Resampler {
    from: u32,
    to: u32,
    channels: usize,
    inner: Option<Fft<f32>>,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    /// Output frames still to drop: the resampler's delay, at the start and after a reset.
    trim: usize,
}

impl Resampler {
    pub fn new(from: u32, to: u32, channels: u8) -> Result<Self, CodecError> {
        let channels = usize::from(channels.max(1));
        let error = |e: &dyn std::fmt::Display| CodecError::Resample { from, to, reason: e.to_string() };
        if ![from, to].iter().all(|rate| (MIN_RATE..=MAX_RATE).contains(rate)) {
            return Err(error(&format!("rates must be within {MIN_RATE}..={MAX_RATE} Hz")));
        }
        let inner = if from == to {
            None
        } else {
            // 10 ms chunks keep the added latency small (the delay is half an FFT block).
            let chunk = (from as usize / 100).max(1);
            let fft =
                Fft::<f32>::new(from as usize, to as usize, chunk, channels, FixedSync::Both).map_err(|e| error(&e))?;
            Some(fft)
        };
        let mut resampler = Self { from, to, channels, inner, pending: Vec::new(), scratch: Vec::new(), trim: 0 };
        resampler.reset();
        Ok(resampler)
    }

    pub fn from_rate(&self) -> u32 {
        self.from
    }

    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Resamples `input` (interleaved), appending whatever output is ready to `out`. Input that
    /// does not fill a whole internal chunk waits for the next call.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), CodecError> {
        let channels = self.channels;
        let Some(inner) = self.inner.as_mut() else {
            out.extend_from_slice(input);
            return Ok(());
        };
        let error =
            |e: &dyn std::fmt::Display| CodecError::Resample { from: self.from, to: self.to, reason: e.to_string() };
        self.pending.extend_from_slice(input);
        loop {
            let need = inner.input_frames_next();
            if self.pending.len() < need * channels {
                return Ok(());
            }
            let input = InterleavedSlice::new(&self.pending, channels, need).map_err(|e| error(&e))?;
            let capacity = self.scratch.len() / channels;
            let mut output = InterleavedSlice::new_mut(&mut self.scratch, channels, capacity).map_err(|e| error(&e))?;
            let (read, written) = inner.process_into_buffer(&input, &mut output, None).map_err(|e| error(&e))?;
            self.pending.drain(..read * channels);
            let skip = self.trim.min(written);
            self.trim -= skip;
            out.extend_from_slice(self.scratch.get(skip * channels..written * channels).unwrap_or_default());
        }
    }

    /// Forgets buffered input and filter state, as after a discontinuity.
    pub fn reset(&mut self) {
        self.pending.clear();
        if let Some(inner) = self.inner.as_mut() {
            inner.reset();
            self.trim = inner.output_delay();
            self.scratch = vec![0.0; inner.output_frames_max() * self.channels];
        }
    }

    /// The resampler's delay in output frames (trimmed from its output; reported so that a
    /// caller flushing the pipeline knows how much silence pushes real samples out).
    pub fn delay(&self) -> usize {
        self.inner.as_ref().map_or(0, |r| r.output_delay())
    }

    /// Input frames buffered, not yet resampled.
    pub fn pending_frames(&self) -> usize {
        self.pending.len() / self.channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tone;

    #[test]
    fn keeps_a_tones_frequency_both_ways() {
        let cases =
            [(8_000, 48_000), (48_000, 8_000), (16_000, 48_000), (48_000, 16_000), (44_100, 48_000), (48_000, 44_100)];
        for (from, to) in cases {
            for channels in [1u8, 2] {
                let mut resampler = Resampler::new(from, to, channels).unwrap();
                let input = tone::sine(1000.0, 0.5, from, channels, from as usize);
                let mut out = Vec::new();
                // Odd block sizes, as decoders deliver them.
                for block in input.chunks(usize::from(channels) * 333) {
                    resampler.process(block, &mut out).unwrap();
                }
                let frames = out.len() / usize::from(channels);
                let expected = to as usize;
                assert!(frames <= expected && frames + to as usize / 20 >= expected, "{from}->{to}: {frames} frames");
                let found = tone::dominant_frequency(&out, channels, to).unwrap();
                assert!((found - 1000.0).abs() < 1.0, "{from}->{to} x{channels}: {found} Hz");
                assert!((tone::rms(&out[out.len() / 4..]) - 0.5 / 2f64.sqrt()).abs() < 0.02, "level kept");
            }
        }
    }

    #[test]
    fn output_lines_up_with_input_after_trimming_the_delay() {
        for (from, to) in [(44_100, 48_000), (8_000, 48_000), (48_000, 8_000)] {
            let mut input = vec![0.0; from as usize / 10];
            input.extend(tone::sine(440.0, 0.5, from, 1, from as usize / 10));
            let mut resampler = Resampler::new(from, to, 1).unwrap();
            let mut out = Vec::new();
            resampler.process(&input, &mut out).unwrap();
            let onset = tone::onset(&out, 1, 0.2).unwrap() as f64 / f64::from(to);
            let expected = tone::onset(&input, 1, 0.2).unwrap() as f64 / f64::from(from);
            assert!((onset - expected).abs() < 0.0005, "{from}->{to}: onset {onset} s, input {expected} s");
        }
    }

    #[test]
    fn rates_outside_the_aac_range_are_refused() {
        for (from, to) in [(1, 48_000), (48_000, 1), (0, 8_000), (8_000, 192_000)] {
            assert!(Resampler::new(from, to, 1).is_err(), "{from}->{to}");
        }
        assert!(Resampler::new(7_350, 96_000, 2).is_ok());
    }

    #[test]
    fn same_rate_is_a_copy() {
        let mut resampler = Resampler::new(48_000, 48_000, 2).unwrap();
        let mut out = Vec::new();
        resampler.process(&[0.1, 0.2, 0.3], &mut out).unwrap();
        assert_eq!(out, [0.1, 0.2, 0.3]);
    }
}

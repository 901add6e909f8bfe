//! The tones a caller hears while entering a PIN: a prompt (two 600 Hz beeps), a low buzz for a
//! wrong PIN, a high beep when it is accepted. 48 kHz mono PCM, played out 20 ms at a time.

use std::collections::VecDeque;

use junction_audio::codec::tone::sine;
use junction_audio::mixer::{FRAME_SAMPLES, MIX_RATE};

pub const PROMPT_HZ: f64 = 600.0;
pub const WRONG_HZ: f64 = 300.0;
pub const ACCEPTED_HZ: f64 = 900.0;

const AMPLITUDE: f32 = 0.3;

fn tone(freq: f64, ms: usize) -> Vec<f32> {
    sine(freq, AMPLITUDE, MIX_RATE, 1, MIX_RATE as usize * ms / 1000)
}

fn silence(ms: usize) -> Vec<f32> {
    vec![0.0; MIX_RATE as usize * ms / 1000]
}

/// "Enter your PIN": beep, pause, beep.
pub fn prompt() -> Vec<f32> {
    [tone(PROMPT_HZ, 400), silence(200), tone(PROMPT_HZ, 400), silence(200)].concat()
}

pub fn wrong() -> Vec<f32> {
    [tone(WRONG_HZ, 600), silence(300)].concat()
}

pub fn accepted() -> Vec<f32> {
    [tone(ACCEPTED_HZ, 300), silence(100)].concat()
}

/// Queued prompt audio, taken a frame at a time.
#[derive(Debug, Default)]
pub struct PromptQueue {
    samples: VecDeque<f32>,
}

impl PromptQueue {
    pub fn play(&mut self, samples: Vec<f32>) {
        self.samples.extend(samples);
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The next 20 ms, padded with silence at the end of the queue; `None` when empty.
    pub fn next_frame(&mut self) -> Option<Vec<f32>> {
        if self.samples.is_empty() {
            return None;
        }
        let take = self.samples.len().min(FRAME_SAMPLES);
        let mut frame: Vec<f32> = self.samples.drain(..take).collect();
        frame.resize(FRAME_SAMPLES, 0.0);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_audio::codec::tone::dominant_frequency;

    #[test]
    fn prompts_play_out_in_frames() {
        let mut queue = PromptQueue::default();
        queue.play(prompt());
        let mut heard = Vec::new();
        while let Some(frame) = queue.next_frame() {
            assert_eq!(frame.len(), FRAME_SAMPLES);
            heard.extend(frame);
        }
        assert_eq!(heard.len(), MIX_RATE as usize * 1200 / 1000);
        let freq = dominant_frequency(&heard[..MIX_RATE as usize * 400 / 1000], 1, MIX_RATE).unwrap();
        assert!((freq - PROMPT_HZ).abs() < 2.0);
        assert!(queue.next_frame().is_none());
    }
}

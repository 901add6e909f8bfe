//! Audio transcoding for the engine's shared variants: [`AudioTranscoder`] decodes a track's
//! frames to PCM, remixes channels, resamples, re-frames and encodes them in another codec, and
//! keeps the output's timestamps locked to the input's. [`adapters`] registers one for every
//! pair of Opus, AAC, PCMU and PCMA, encoding as the `[audio]` section ([`AudioConfig`]) says.
//!
//! Timestamps. The first input frame's time, rebased to the output clock, is the first output
//! frame's time; each output frame then advances by the samples it carries. What is
//! compensated so that decoded output lines up with the input's timestamps (and so with video):
//! - the encoder's algorithmic delay (Opus lookahead, 312 samples = 6.5 ms; FDK AAC-LC's
//!   delay, reported by the library): that many samples are dropped at the start of each run,
//!   so output frame `k`, once decoded, plays the input audio of time `start + k * frame`;
//! - the resampler's filter delay, trimmed inside [`Resampler`](super::Resampler).
//!
//! Input decoders add none: by RTP and container conventions a frame's decoded samples belong
//! at its own timestamp (an AAC source's priming is already in its timestamps).
//!
//! Arrival. Receivers line audio up with video through the wall-clock instant each frame is sent
//! with (RTCP sender reports map it to the RTP clock), so an output frame carries the instant its
//! media time reached the server, not the instant it left the encoder: the arrival of the input
//! frame that completed it, moved back by how far the output frame's time lags that input's.
//! Without this, buffering in the resampler and re-framing (up to an input plus an output frame)
//! would make transcoded audio look later than the video it was captured with.
//!
//! Gaps and bad input. Each input frame's time is checked against where the previous one
//! ended (5 ms of jitter tolerated, as RTMP's millisecond timestamps need). A gap of up to one
//! second (lost packets, a frame that failed to decode) is filled with the decoder's
//! concealment — Opus PLC, silence for the others — so the output stays continuous. A longer
//! gap (a muted or stalled publisher) flushes what is buffered and starts a new run at the new
//! time: output timestamps jump with the input's. Concealment is budgeted: never more than the
//! audio actually received plus one second, so a publisher stamping frames far apart cannot make
//! the transcoder generate audio much faster than it sends it (gaps beyond the budget start a
//! new run, which costs at most a couple of frames). A frame earlier than expected (a publisher's
//! clock reset) re-anchors the input clock while the output carries on, so output timestamps
//! never go backwards. A frame that fails to decode is an error for that frame only.
//!
//! Bounded work. One input frame may decode to at most [`MAX_FRAME_MS`] of audio (at least
//! [`MIN_FRAME_CAP`] samples per channel): a frame decoding to more is refused before it is
//! resampled or encoded. With the resampler's rates bounded and the concealment budget above,
//! the work one input frame causes is bounded whatever the publisher sends.

mod routes;

pub use routes::{AudioConfig, adapters, build_transcoder, build_transcoder_with, default_adapters};

use std::time::{Duration, Instant};

use junction_core::{Codec, MediaFrame, MediaTime};
use tracing::debug;

use super::pcm::{SampleFifo, remix};
use super::{AudioDecoder, AudioEncoder, CodecError, Resampler};
use junction_engine::adapt::{FrameTranscoder, TranscodeError};

/// Input jitter tolerated before a frame counts as a gap or a jump back, in milliseconds.
const JITTER_MS: u64 = 5;
/// The longest gap filled with concealment; longer ones start a new run.
const MAX_FILL_MS: u64 = 1_000;
/// The most an output frame's arrival is moved back from its input's.
const MAX_LAG: Duration = Duration::from_secs(1);
/// The most audio one input frame may decode to, in milliseconds (Opus packets hold up to
/// 120 ms; AAC frames 1024 samples, 139 ms at the lowest standard rate).
pub const MAX_FRAME_MS: u64 = 200;
/// The least cap on samples per channel one input frame may decode to, whatever the rate.
pub const MIN_FRAME_CAP: usize = 2_048;

/// Decoder -> channel remix -> resampler -> fixed-size frames -> encoder, with timestamps.
pub struct AudioTranscoder {
    decoder: Box<dyn AudioDecoder>,
    encoder: Box<dyn AudioEncoder>,
    resampler: Resampler,
    fifo: SampleFifo,
    decoded: Vec<f32>,
    remixed: Vec<f32>,
    resampled: Vec<f32>,
    input: Option<InputClock>,
    /// Output-clock time of the next frame the encoder emits.
    next_out: u64,
    /// Encoder-rate frames still to drop at the start of the current run.
    trim: usize,
    /// Decoder-rate samples that may still be concealed (refilled by decoded audio, up to
    /// `MAX_FILL_MS`).
    conceal_budget: u64,
    /// Output time minus input time, in output ticks: the output carries on where it was when a
    /// run starts at or an input re-anchors to an earlier time.
    out_ahead: u64,
}

/// The input frame being transcoded, which output frames take their arrival and capture time
/// from.
#[derive(Debug, Clone, Copy)]
struct Arrived {
    /// Its time, on the output's clock.
    ticks: u64,
    at: Instant,
    captured: Instant,
}

/// Where the input is expected to continue: the run's anchor plus what has been decoded since.
#[derive(Debug, Clone, Copy)]
struct InputClock {
    anchor: MediaTime,
    decoded: u64,
    decoder_rate: u32,
}

impl InputClock {
    fn expected(&self, rate: u32) -> u64 {
        let anchor = self.anchor.rebase(rate).ticks;
        // Saturating: timestamps come from the network.
        anchor
            .saturating_add((u128::from(self.decoded) * u128::from(rate) / u128::from(self.decoder_rate.max(1))) as u64)
    }
}

impl AudioTranscoder {
    pub fn new(decoder: Box<dyn AudioDecoder>, encoder: Box<dyn AudioEncoder>) -> Result<Self, CodecError> {
        let resampler = Resampler::new(decoder.sample_rate(), encoder.sample_rate(), encoder.channels())?;
        let mut transcoder = Self {
            decoder,
            encoder,
            resampler,
            fifo: SampleFifo::new(),
            decoded: Vec::new(),
            remixed: Vec::new(),
            resampled: Vec::new(),
            input: None,
            next_out: 0,
            trim: 0,
            conceal_budget: 0,
            out_ahead: 0,
        };
        transcoder.conceal_budget = transcoder.max_conceal();
        Ok(transcoder)
    }

    /// Samples per channel one input frame may decode to.
    fn max_frame_samples(&self) -> usize {
        let at_rate = u64::from(self.decoder.sample_rate()) * MAX_FRAME_MS / 1000;
        (at_rate as usize).max(MIN_FRAME_CAP)
    }

    fn max_conceal(&self) -> u64 {
        u64::from(self.decoder.sample_rate()) * MAX_FILL_MS / 1000
    }

    pub fn input_codec(&self) -> Codec {
        self.decoder.codec()
    }

    pub fn output_codec(&self) -> Codec {
        self.encoder.codec()
    }

    /// The output's timestamp clock: the encoder's sample rate.
    pub fn output_rate(&self) -> u32 {
        self.encoder.sample_rate()
    }

    fn start_run(&mut self, at: MediaTime) {
        self.input = Some(InputClock { anchor: at, decoded: 0, decoder_rate: self.decoder.sample_rate() });
        let at_out = at.rebase(self.output_rate()).ticks;
        self.next_out = self.next_out.max(at_out);
        self.out_ahead = self.next_out - at_out;
        self.trim = self.encoder.delay();
        self.fifo.clear();
    }

    /// Checks `at` against where the input should continue; fills short gaps, restarts the run
    /// after long ones.
    fn follow_input_clock(
        &mut self,
        at: MediaTime,
        arrived: Arrived,
        out: &mut Vec<MediaFrame>,
    ) -> Result<(), TranscodeError> {
        let Some(clock) = self.input else {
            self.start_run(at);
            return Ok(());
        };
        let rate = u64::from(at.rate.max(1));
        let expected = clock.expected(at.rate.max(1));
        let jitter = (rate * JITTER_MS / 1000).max(1);
        if at.ticks > expected.saturating_add(jitter) {
            let gap = at.ticks - expected;
            let fill =
                (u128::from(gap) * u128::from(clock.decoder_rate) / u128::from(rate)).min(u128::from(u64::MAX)) as u64;
            if fill <= self.conceal_budget {
                self.conceal_budget -= fill;
                let fill = fill as usize;
                self.decoded.clear();
                let mut decoded = std::mem::take(&mut self.decoded);
                self.decoder.conceal(fill, &mut decoded);
                if let Some(clock) = self.input.as_mut() {
                    clock.decoded += fill as u64;
                }
                let result = self.push_pcm(&decoded, arrived, out);
                self.decoded = decoded;
                result?;
            } else {
                debug!(from = %self.input_codec(), to = %self.output_codec(), gap_ms = gap / rate.div_ceil(1000), "transcoder: input gap, new run");
                self.flush(arrived, out)?;
                self.start_run(at);
            }
        } else if at.ticks.saturating_add(jitter) < expected {
            debug!(from = %self.input_codec(), to = %self.output_codec(), "transcoder: input went back in time, re-anchored");
            self.input = Some(InputClock { anchor: at, decoded: 0, ..clock });
            let buffered = (self.fifo.len() / usize::from(self.encoder.channels()).max(1)) as u64;
            self.out_ahead = self.next_out.saturating_add(buffered).saturating_sub(at.rebase(self.output_rate()).ticks);
        }
        Ok(())
    }

    /// Pushes enough silence through to emit every buffered real sample, then drops the rest.
    fn flush(&mut self, arrived: Arrived, out: &mut Vec<MediaFrame>) -> Result<(), TranscodeError> {
        let (decoder_rate, output_rate) = (u64::from(self.decoder.sample_rate()), u64::from(self.output_rate()));
        let tail_out = (self.resampler.delay() + self.encoder.delay() + self.encoder.frame_samples()) as u64;
        let tail = (tail_out * decoder_rate).div_ceil(output_rate.max(1)) as usize + self.resampler.pending_frames();
        let silence = vec![0.0; tail * usize::from(self.decoder.channels())];
        let result = self.push_pcm(&silence, arrived, out);
        self.fifo.clear();
        self.resampler.reset();
        result
    }

    /// Remixes, resamples, trims and encodes decoded PCM; emits every complete frame.
    fn push_pcm(&mut self, pcm: &[f32], arrived: Arrived, out: &mut Vec<MediaFrame>) -> Result<(), TranscodeError> {
        let channels = self.encoder.channels();
        self.remixed.clear();
        remix(pcm, self.decoder.channels(), channels, &mut self.remixed);
        self.resampled.clear();
        self.resampler.process(&self.remixed, &mut self.resampled).map_err(|e| self.encode_error(e))?;
        let channels = usize::from(channels);
        let trimmed = self.trim.min(self.resampled.len() / channels);
        self.trim -= trimmed;
        self.fifo.push(self.resampled.get(trimmed * channels..).unwrap_or_default());

        let frame_len = self.encoder.frame_samples() * channels;
        let (codec, rate) = (self.output_codec(), self.output_rate());
        let mut first_error = None;
        let out_ahead = self.out_ahead;
        while let Some(samples) = self.fifo.pop(frame_len) {
            let time = MediaTime::new(self.next_out, rate);
            let arrival = moved_back(time, out_ahead, arrived.ticks, arrived.at);
            let captured = moved_back(time, out_ahead, arrived.ticks, arrived.captured);
            self.next_out = self.next_out.saturating_add(self.encoder.frame_samples() as u64);
            match self.encoder.encode(samples) {
                Ok(payload) if !payload.is_empty() => {
                    out.push(MediaFrame::audio(codec, time, arrival, payload).captured_at(captured))
                }
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(self.encode_error(e)),
            None => Ok(()),
        }
    }

    fn encode_error(&self, error: CodecError) -> TranscodeError {
        TranscodeError::Encode { codec: self.output_codec(), reason: error.to_string() }
    }
}

/// When an output frame stamped `time` reached the server (or was captured): the input frame's
/// instant `at` (its arrival, or its capture time), moved back by how far `time` (mapped to the
/// input's timeline) lags the input's time `input_ticks`. Never later than `at`, so never in
/// the future.
fn moved_back(time: MediaTime, out_ahead: u64, input_ticks: u64, at: Instant) -> Instant {
    let lag_ticks = input_ticks.saturating_sub(time.ticks.saturating_sub(out_ahead));
    let lag = Duration::from_secs_f64(lag_ticks as f64 / f64::from(time.rate.max(1))).min(MAX_LAG);
    at.checked_sub(lag).unwrap_or(at)
}

impl FrameTranscoder for AudioTranscoder {
    fn transcode(&mut self, frame: &MediaFrame, out: &mut Vec<MediaFrame>) -> Result<(), TranscodeError> {
        if frame.codec != self.input_codec() {
            return Err(TranscodeError::Decode {
                codec: frame.codec,
                reason: format!("a {} transcoder was given a {} frame", self.input_codec(), frame.codec),
            });
        }
        // `MediaTime::new` never makes a 0 Hz clock, but its fields are public.
        let time = MediaTime { ticks: frame.time.ticks, rate: frame.time.rate.max(1) };
        let arrived =
            Arrived { ticks: time.rebase(self.output_rate()).ticks, at: frame.arrival, captured: frame.captured };
        self.follow_input_clock(time, arrived, out)?;
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.clear();
        let cap = self.max_frame_samples();
        let result = match self.decoder.decode(&frame.payload, &mut decoded) {
            Ok(samples) if samples > cap => Err(TranscodeError::Decode {
                codec: frame.codec,
                reason: format!("one frame decoded to {samples} samples per channel, more than the {cap} allowed"),
            }),
            Ok(samples) => {
                if let Some(clock) = self.input.as_mut() {
                    clock.decoded += samples as u64;
                }
                self.conceal_budget = (self.conceal_budget + samples as u64).min(self.max_conceal());
                self.push_pcm(&decoded, arrived, out)
            }
            Err(e) => Err(TranscodeError::Decode { codec: frame.codec, reason: e.to_string() }),
        };
        self.decoded = decoded;
        result
    }
}

#[cfg(test)]
mod tests;

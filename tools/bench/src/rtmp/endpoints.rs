//! The RTMP load's two kinds of client: a publisher that streams synthetic H.264 + AAC in real
//! time (FLV tags, timestamps from its own media clock), and a player that receives a peer's
//! stream and records every frame it recognises.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use junction_core::h264;
use rml_rtmp::sessions::ClientSessionEvent;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::media::{AAC_FRAME_SAMPLES, AAC_RATE, AacSource, RunClock, Stamp, Stream, VideoPattern};
use crate::stats::{Outcome, Traffic};
use junction_testkit::rtmp::RtmpConnection;

pub struct Publisher {
    pub host: String,
    pub key: String,
    pub pattern: VideoPattern,
    pub aac: Arc<AacSource>,
    pub clock: RunClock,
    pub video: Stream,
    pub audio: Stream,
}

fn video_tag(keyframe: bool, nals: &[Bytes]) -> Bytes {
    let mut tag = BytesMut::with_capacity(5 + nals.iter().map(|n| n.len() + 4).sum::<usize>());
    // Frame type (1 key, 2 inter) | codec 7 (AVC); packet type 1 (NAL units); composition time 0.
    tag.put_slice(&[if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0]);
    for nal in nals {
        tag.put_u32(nal.len() as u32);
        tag.put_slice(nal);
    }
    tag.freeze()
}

fn audio_tag(header: bool, body: &[u8]) -> Bytes {
    let mut tag = BytesMut::with_capacity(2 + body.len());
    // AAC, 44 kHz, 16-bit, stereo; packet type 0 (AudioSpecificConfig) or 1 (raw frame).
    tag.put_slice(&[0xaf, u8::from(!header)]);
    tag.put_slice(body);
    tag.freeze()
}

impl Publisher {
    /// Connects and publishes; returns once the server accepted the stream and has its headers.
    pub async fn start(&self) -> anyhow::Result<RtmpConnection> {
        let mut connection = RtmpConnection::connect(&self.host, "live").await?;
        connection.publish(&self.key).await?;
        connection
            .send_metadata(u32::from(self.pattern.width), u32::from(self.pattern.height), Some(self.pattern.fps as f32))
            .await?;
        let mut header = BytesMut::from(&[0x17, 0, 0, 0, 0][..]);
        header.put_slice(&self.pattern.avc_config());
        connection.send_video(0, header.freeze()).await?;
        connection.send_audio(0, audio_tag(true, &self.aac.config)).await?;
        Ok(connection)
    }

    /// Streams in real time until `stop`.
    pub async fn run(&self, mut connection: RtmpConnection, stop: CancellationToken) -> anyhow::Result<()> {
        let start = tokio::time::Instant::now();
        let mut video = tokio::time::interval_at(start, self.pattern.interval());
        let audio_period = Duration::from_secs_f64(AAC_FRAME_SAMPLES as f64 / f64::from(AAC_RATE));
        let mut audio = tokio::time::interval_at(start, audio_period);
        // A publisher that fell behind catches up, like an encoder with a full buffer.
        video.set_missed_tick_behavior(MissedTickBehavior::Burst);
        audio.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let fps = u64::from(self.pattern.fps);
        let mut keyframes = self.pattern.keyframes();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = video.tick() => {
                    let sent_us = self.clock.now_us();
                    let seq = self.video.log.push(sent_us);
                    let keyframe = keyframes.next();
                    let nals = self.pattern.h264_nals(Stamp { stream: self.video.id, seq, sent_us }, keyframe);
                    let timestamp = (seq * 1000 / fps) as u32;
                    connection.send_video(timestamp, video_tag(keyframe, &nals)).await?;
                }
                _ = audio.tick() => {
                    let seq = self.audio.log.push(self.clock.now_us());
                    let timestamp = (seq * AAC_FRAME_SAMPLES * 1000 / u64::from(AAC_RATE)) as u32;
                    connection.send_audio(timestamp, audio_tag(false, &self.aac.frame(seq))).await?;
                }
                read = connection.read_some() => connection.absorb(read?).await?,
            }
        }
    }
}

/// An RTMP player of one peer: records stamped video and recognised AAC frames.
pub struct Player {
    pub host: String,
    /// `<room>/<identity>?token=<jwt>`.
    pub play_path: String,
    pub clock: RunClock,
    pub aac: Arc<AacSource>,
    pub audio: Stream,
    pub traffic: Arc<Traffic>,
}

impl Player {
    pub async fn run(&self, stop: CancellationToken) -> Outcome {
        let mut outcome = Outcome::default();
        let started = Instant::now();
        let result = tokio::select! {
            _ = stop.cancelled() => Ok(()),
            result = self.receive(&mut outcome, started) => result,
        };
        if let Err(err) = result {
            outcome.error = Some(format!("{err:#}"));
            if outcome.join_us.is_none() {
                self.traffic.mark_failed();
            }
        }
        outcome
    }

    async fn receive(&self, outcome: &mut Outcome, started: Instant) -> anyhow::Result<()> {
        let mut connection = RtmpConnection::connect(&self.host, "live").await?;
        connection.play(&self.play_path).await?;
        let mut length_size = 4;
        loop {
            let event = connection.next_event().await?;
            let now = Instant::now();
            let now_us = self.clock.micros(now);
            let (video, data) = match event {
                ClientSessionEvent::VideoDataReceived { data, .. } => (true, data),
                ClientSessionEvent::AudioDataReceived { data, .. } => (false, data),
                _ => continue,
            };
            self.traffic.add(1, data.len() as u64);
            outcome.log.packets += 1;
            outcome.log.bytes += data.len() as u64;
            let recognised = if video {
                match data.get(1) {
                    Some(0) => {
                        if let Some(config) = data.get(5..).and_then(|c| h264::AvcConfig::parse(c).ok()) {
                            length_size = config.length_size;
                        }
                        None
                    }
                    Some(1) => video_stamp(data.get(5..).unwrap_or_default(), length_size)
                        .map(|s| (s.stream, s.seq, s.sent_us)),
                    _ => None,
                }
            } else if data.get(1) == Some(&1) {
                let body = data.get(2..).unwrap_or_default();
                self.aac.recognise(body).and_then(|index| {
                    let (seq, sent_us) = self.audio.log.resolve(index, self.aac.cycle(), now_us)?;
                    Some((self.audio.id, seq, sent_us))
                })
            } else {
                None
            };
            if let Some((stream, seq, sent_us)) = recognised {
                if outcome.join_us.is_none() {
                    outcome.join_us = Some(now.saturating_duration_since(started).as_micros() as u64);
                    self.traffic.mark_joined();
                }
                let latency = now_us.saturating_sub(sent_us);
                outcome.log.frame(stream, seq, self.traffic.measuring().then_some(latency));
            }
        }
    }
}

/// The stamp in an AVCC access unit's slice NAL unit.
fn video_stamp(avcc: &[u8], length_size: usize) -> Option<Stamp> {
    let nals = h264::avcc_nals(avcc, length_size).ok()?;
    nals.iter().filter(|n| matches!(h264::nal_type(n), 1 | 5)).find_map(|n| Stamp::find(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VideoSize;

    #[test]
    fn video_tags_carry_avcc_nal_units_with_the_stamp() {
        let pattern = VideoPattern::new(VideoSize::P360, 30, Duration::from_secs(2));
        let stamp = Stamp { stream: 3, seq: 0, sent_us: 42 };
        let tag = video_tag(true, &pattern.h264_nals(stamp, true));
        assert_eq!(&tag[..2], &[0x17, 1]);
        assert_eq!(video_stamp(&tag[5..], 4), Some(stamp));
        assert_eq!(video_stamp(&tag[5..9], 4), None, "truncated");
    }
}

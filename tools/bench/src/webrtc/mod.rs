//! The load tool's WebRTC clients, on str0m as a sans-I/O library: a WHIP publisher that sends
//! synthetic stamped video (VP8 or H.264) and Opus in real time and answers keyframe requests
//! like an encoder, and a WHEP viewer that counts what arrives and when. Each is one tokio task
//! owning its `Rtc` and UDP socket.

mod arrival;
mod openssl_dtls;
mod peer;
pub mod turn;
pub mod whip;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use str0m::format::Codec as WireCodec;
use str0m::media::{Direction, Frequency, MediaTime};
use str0m::{Event, IceConnectionState};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use peer::{DtlsCertKind, Peer, PeerKit, VideoCodec};

use super::media::Stream;
use super::media::{RunClock, Stamp, VideoPattern, opus_frame};
use super::stats::{Outcome, Traffic};

/// How long ICE and DTLS get to complete.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub struct WhipPublisher {
    pub http: reqwest::Client,
    pub endpoint: String,
    pub token: String,
    pub kit: PeerKit,
    pub pattern: VideoPattern,
    pub clock: RunClock,
    pub video: Stream,
    pub audio: Stream,
}

/// A connected publisher, ready to stream.
pub struct Connected {
    peer: Peer,
    pub location: Option<String>,
}

impl WhipPublisher {
    /// Offers, posts and waits until ICE and DTLS are up.
    pub async fn connect(&self) -> anyhow::Result<Connected> {
        let (mut peer, offer, pending) = Peer::offer(&self.kit, Direction::SendOnly).await?;
        let session = whip::post_offer(&self.http, &self.endpoint, &self.token, offer).await?;
        peer.accept(pending, &session.answer).await?;
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        loop {
            let next = peer.flush(&mut events).await?;
            if events.drain(..).any(|e| matches!(e, Event::Connected)) {
                return Ok(Connected { peer, location: session.location });
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => bail!("ICE/DTLS with the server did not complete"),
                received = peer.receive() => { received?; }
                _ = tokio::time::sleep_until(next.into()) => peer.timeout(Instant::now())?,
            }
        }
    }

    /// Streams in real time until `stop`, then leaves with DELETE.
    pub async fn run(&self, connected: Connected, stop: CancellationToken) -> anyhow::Result<()> {
        let Connected { mut peer, location } = connected;
        let result = self.stream(&mut peer, stop).await;
        if let Some(location) = location {
            whip::delete(&self.http, &location, &self.token).await;
        }
        result
    }

    async fn stream(&self, peer: &mut Peer, stop: CancellationToken) -> anyhow::Result<()> {
        let (video_mid, audio_mid) = (peer.video, peer.audio);
        let video_codec = match self.kit.codec {
            VideoCodec::Vp8 => WireCodec::Vp8,
            VideoCodec::H264 => WireCodec::H264,
        };
        let video_pt = peer.payload_type(video_mid, video_codec)?;
        let audio_pt = peer.payload_type(audio_mid, WireCodec::Opus)?;
        let start = tokio::time::Instant::now();
        let mut video = tokio::time::interval_at(start, self.pattern.interval());
        let mut audio = tokio::time::interval_at(start, Duration::from_millis(20));
        video.set_missed_tick_behavior(MissedTickBehavior::Burst);
        audio.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut keyframes = self.pattern.keyframes();
        let video_ticks = 90_000 / u64::from(self.pattern.fps);
        let mut events = Vec::new();
        loop {
            let next = peer.flush(&mut events).await?;
            for event in events.drain(..) {
                match event {
                    Event::KeyframeRequest(_) => keyframes.request(),
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        bail!("the server stopped answering ICE")
                    }
                    _ => {}
                }
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = video.tick() => {
                    let now = Instant::now();
                    let sent_us = self.clock.micros(now);
                    let seq = self.video.log.push(sent_us);
                    let stamp = Stamp { stream: self.video.id, seq, sent_us };
                    let keyframe = keyframes.next();
                    let frame = match self.kit.codec {
                        VideoCodec::Vp8 => self.pattern.vp8(stamp, keyframe),
                        VideoCodec::H264 => self.pattern.h264_annexb(stamp, keyframe),
                    };
                    let time = MediaTime::new(seq * video_ticks, Frequency::NINETY_KHZ);
                    let writer = peer.rtc.writer(video_mid).context("the video m-line is gone")?;
                    writer.write(video_pt, now, time, frame.to_vec())?;
                }
                _ = audio.tick() => {
                    let now = Instant::now();
                    let sent_us = self.clock.micros(now);
                    let seq = self.audio.log.push(sent_us);
                    let frame = opus_frame(Stamp { stream: self.audio.id, seq, sent_us });
                    let time = MediaTime::new(seq * 960, Frequency::FORTY_EIGHT_KHZ);
                    let writer = peer.rtc.writer(audio_mid).context("the audio m-line is gone")?;
                    writer.write(audio_pt, now, time, frame.to_vec())?;
                }
                received = peer.receive() => { received?; }
                _ = tokio::time::sleep_until(next.into()) => peer.timeout(Instant::now())?,
            }
        }
    }
}

pub struct WhepViewer {
    pub http: reqwest::Client,
    pub endpoint: String,
    pub token: String,
    pub kit: PeerKit,
    pub clock: RunClock,
    pub traffic: std::sync::Arc<Traffic>,
    /// The viewer counts as joined once ICE and DTLS are up, not at its first frame (a room
    /// with nothing published: idle subscribers).
    pub idle: bool,
}

impl WhepViewer {
    /// Watches until `stop`, then leaves with DELETE; says how it went.
    pub async fn run(&self, stop: CancellationToken) -> Outcome {
        let mut outcome = Outcome::default();
        let started = Instant::now();
        let mut location = None;
        if let Err(err) = self.watch(&mut outcome, &mut location, started, stop).await {
            outcome.error = Some(format!("{err:#}"));
            if outcome.join_us.is_none() {
                self.traffic.mark_failed();
            }
        }
        if let Some(location) = location {
            whip::delete(&self.http, &location, &self.token).await;
        }
        outcome
    }

    async fn watch(
        &self,
        outcome: &mut Outcome,
        location: &mut Option<String>,
        started: Instant,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let (mut peer, offer, pending) = Peer::offer(&self.kit, Direction::RecvOnly).await?;
        let session = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            session = whip::post_offer(&self.http, &self.endpoint, &self.token, offer) => session?,
        };
        *location = session.location;
        peer.accept(pending, &session.answer).await?;
        let mut events = Vec::new();
        let mut connected = false;
        loop {
            let next = peer.flush(&mut events).await?;
            for event in events.drain(..) {
                match event {
                    Event::Connected => {
                        connected = true;
                        if self.idle {
                            outcome.join_us = Some(started.elapsed().as_micros() as u64);
                            self.traffic.mark_joined();
                        }
                    }
                    Event::MediaData(data) => {
                        let Some(stamp) = Stamp::find(&data.data) else {
                            // Media the server made (transcoded audio) carries no stamp: its
                            // delay is read from its media time against its arrival.
                            let arrival = self.clock.micros(peer.arrived());
                            outcome.log.unstamped_frame(data.time.as_micros(), arrival, self.traffic.measuring());
                            self.traffic.add_unstamped();
                            continue;
                        };
                        // When the datagram that completed the frame reached the socket.
                        let now = peer.arrived();
                        if outcome.join_us.is_none() {
                            outcome.join_us = Some(now.saturating_duration_since(started).as_micros() as u64);
                            self.traffic.mark_joined();
                        }
                        let latency = self.clock.micros(now).saturating_sub(stamp.sent_us);
                        outcome.log.frame(stamp.stream, stamp.seq, self.traffic.measuring().then_some(latency));
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        bail!("the server stopped answering ICE")
                    }
                    _ => {}
                }
            }
            if !connected && started.elapsed() > CONNECT_TIMEOUT {
                bail!("ICE/DTLS with the server did not complete in {CONNECT_TIMEOUT:?}");
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                received = peer.receive() => {
                    let datagram = received?;
                    if datagram.rtp {
                        self.traffic.add(1, datagram.len as u64);
                        outcome.log.packets += 1;
                        outcome.log.bytes += datagram.len as u64;
                        if self.traffic.measuring() {
                            outcome.log.tool_wait.record(datagram.waited.as_micros() as u64);
                        }
                    }
                }
                _ = tokio::time::sleep_until(next.into()) => peer.timeout(Instant::now())?,
            }
        }
    }
}

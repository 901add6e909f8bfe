//! The `file` component: a media file played into the room as a peer, paced in real time. The
//! file comes from the server's disk (`file:///…`) or is fetched once over HTTPS (bounded in
//! size and time) into a temporary file; its first audio track ([`decode`]) is resampled to
//! 48 kHz mono, encoded to Opus and published as the peer's `file` track every 20 ms; its first
//! H.264, VP8 or VP9 video track ([`video`]) is published as the `video` track, each frame sent
//! when its decode time comes. From the start again when `loop` is set: an audio-only file loops
//! seamlessly; with video, each pass starts when both tracks have ended, on the audio clock, so
//! the two stay in step however many times the file loops.

pub mod decode;
pub mod video;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_audio::codec::opus::{OpusEncoder, OpusMode};
use junction_audio::codec::{AudioEncoder as _, Resampler, SampleFifo};
use junction_core::{
    Codec, CodecParams, EndpointEvent, MediaFrame, MediaTime, PeerId, PublishRequest, RoomId, TrackSource,
    TransportKind,
};
use junction_engine::{DuplicatePolicy, Engine, JoinRequest};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use self::decode::FileAudio;
use self::video::{FileVideo, VideoSample};
use crate::Ended;

/// 20 ms at 48 kHz.
const FRAME: usize = 960;
const RATE: u32 = 48_000;
/// Largest file fetched over HTTPS, and the time the fetch may take.
const MAX_DOWNLOAD: u64 = 512 * 1024 * 1024;
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// What a `file` component is created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    /// `file:///absolute/path` on the server, or `https://…`.
    pub url: String,
    /// The peer's identity in the room.
    pub identity: PeerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Start again at the end (until the component is deleted).
    #[serde(default, rename = "loop")]
    pub repeat: bool,
}

impl FileOptions {
    /// Checks what serde cannot: the field and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match self.source() {
            Some(Source::Path(path)) if !path.is_file() => {
                Err(("url", format!("{} is not a file on the server", path.display())))
            }
            Some(_) => Ok(()),
            None => Err(("url", "file:///absolute/path or https://… (at most 2048 characters)".into())),
        }
    }

    fn source(&self) -> Option<Source> {
        if self.url.len() > 2048 {
            return None;
        }
        if let Some(path) = self.url.strip_prefix("file://") {
            let path = PathBuf::from(path);
            return path.is_absolute().then_some(Source::Path(path));
        }
        let https = self.url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        (https && reqwest::Url::parse(&self.url).is_ok()).then(|| Source::Https(self.url.clone()))
    }
}

enum Source {
    Path(PathBuf),
    Https(String),
}

/// Fetches an HTTPS file into `dir`; returns its path.
async fn download(url: &str, dir: &Path) -> Result<PathBuf, String> {
    let fetch = async {
        let mut response = reqwest::get(url).await.map_err(|e| format!("fetching {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("fetching {url}: HTTP {}", response.status()));
        }
        if response.content_length().is_some_and(|len| len > MAX_DOWNLOAD) {
            return Err(format!("{url} is larger than {MAX_DOWNLOAD} bytes"));
        }
        let name = url.rsplit('/').next().and_then(|n| n.rsplit('.').next().map(|e| format!("media.{e}")));
        let path = dir.join(name.filter(|n| n.len() < 40).unwrap_or_else(|| "media".into()));
        let mut file = tokio::fs::File::create(&path).await.map_err(|e| format!("keeping {url}: {e}"))?;
        let mut written: u64 = 0;
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("fetching {url}: {e}"))? {
            written += chunk.len() as u64;
            if written > MAX_DOWNLOAD {
                return Err(format!("{url} is larger than {MAX_DOWNLOAD} bytes"));
            }
            file.write_all(&chunk).await.map_err(|e| format!("keeping {url}: {e}"))?;
        }
        file.flush().await.map_err(|e| format!("keeping {url}: {e}"))?;
        Ok(path)
    };
    tokio::time::timeout(DOWNLOAD_TIMEOUT, fetch).await.map_err(|_| format!("fetching {url} took too long"))?
}

/// One file's PCM at 48 kHz mono, reopened at the end when looping.
struct Pcm {
    path: PathBuf,
    file: FileAudio,
    resampler: Resampler,
    fifo: SampleFifo,
    /// The last packet's PCM as decoded, downmixed, and resampled (buffers kept between packets).
    decoded: Vec<f32>,
    mono: Vec<f32>,
    resampled: Vec<f32>,
    repeat: bool,
}

impl Pcm {
    fn open(path: PathBuf, repeat: bool) -> Result<Pcm, String> {
        let mut file = FileAudio::open(&path).map_err(|e| e.to_string())?;
        let mut decoded = Vec::new();
        // The format is certain once a packet is decoded.
        if !file.next(&mut decoded).map_err(|e| e.to_string())? {
            return Err("the file has no audio in it".into());
        }
        let (rate, _) = file.format();
        let resampler = Resampler::new(rate, RATE, 1).map_err(|e| e.to_string())?;
        let (fifo, mono, resampled) = (SampleFifo::new(), Vec::new(), Vec::new());
        let mut pcm = Pcm { path, file, resampler, fifo, decoded, mono, resampled, repeat };
        pcm.queue_decoded()?;
        Ok(pcm)
    }

    /// Downmixes, resamples and queues the packet in `decoded`.
    fn queue_decoded(&mut self) -> Result<(), String> {
        let channels = usize::from(self.file.format().1.max(1));
        self.mono.clear();
        self.mono.extend(self.decoded.chunks(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32));
        self.resampled.clear();
        self.resampler.process(&self.mono, &mut self.resampled).map_err(|e| e.to_string())?;
        self.fifo.push(&self.resampled);
        Ok(())
    }

    /// The next 20 ms, or `None` at the end (without `loop`).
    fn frame(&mut self) -> Result<Option<Vec<f32>>, String> {
        while self.fifo.len() < FRAME {
            self.decoded.clear();
            if self.file.next(&mut self.decoded).map_err(|e| e.to_string())? {
                self.queue_decoded()?;
            } else if self.repeat {
                debug!(path = %self.path.display(), "looping");
                let mut again = Pcm::open(self.path.clone(), true)?;
                let queued = again.fifo.len();
                if let Some(start) = again.fifo.pop(queued) {
                    self.fifo.push(start);
                }
                self.file = again.file;
                self.resampler = again.resampler;
            } else if self.fifo.is_empty() {
                return Ok(None);
            } else {
                // The last partial frame, padded with silence.
                let missing = FRAME - self.fifo.len();
                self.fifo.push(&vec![0.0; missing]);
            }
        }
        Ok(self.fifo.pop(FRAME).map(<[f32]>::to_vec))
    }
}

/// Everything a playing file needs from its component.
pub struct Playback {
    pub engine: Engine,
    pub room: RoomId,
    pub options: FileOptions,
    /// Where a fetched file is kept while it plays.
    pub scratch: PathBuf,
    pub stop: CancellationToken,
}

/// Plays the file until it ends, the room ends the peer, or `stop`. `running` is called once
/// the peer is in the room and its track published.
pub async fn play(playback: Playback, running: impl FnOnce()) -> Result<Ended, String> {
    let Playback { engine, room, options, scratch, stop } = playback;
    let path = match options.source() {
        Some(Source::Path(path)) => path,
        Some(Source::Https(url)) => tokio::select! {
            _ = stop.cancelled() => return Ok(Ended::Closed("deleted".into())),
            path = download(&url, &scratch) => path?,
        },
        None => return Err("url: not a file:// or https:// URL".into()),
    };
    let repeat = options.repeat;
    let (mut pcm, mut video) = open_media(path.clone(), repeat).await?;

    let mut join = JoinRequest::new(room.clone(), options.identity.clone(), TransportKind::Internal);
    join.name = options.name.clone();
    join.metadata = serde_json::json!({"component": "file", "url": options.url});
    join.auto_subscribe = false;
    join.on_duplicate = DuplicatePolicy::Reject;
    let joined = engine.join(join).map_err(|e| e.to_string())?;
    let (mut rpc, _media) = joined.endpoint.split();
    let audio_track = match &pcm {
        Some(_) => {
            let params = CodecParams {
                clock_rate: RATE,
                channels: 2,
                fmtp: Some(junction_audio::codec::opus::fmtp(1)),
                ..CodecParams::default()
            };
            let request =
                PublishRequest::new("file", Codec::Opus).with_source(TrackSource::Unknown).with_params(params);
            Some(rpc.publish(request).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let video_track = match &video {
        Some(video) => {
            let (codec, params) = video.track();
            let request =
                PublishRequest::new("video", codec).with_source(TrackSource::Camera).with_params(params.clone());
            Some((codec, rpc.publish(request).map_err(|e| e.to_string())?))
        }
        None => None,
    };
    let mut encoder = OpusEncoder::new(1, OpusMode::Music, Some(64_000)).map_err(|e| e.to_string())?;
    info!(room = %room, peer = %options.identity, path = %path.display(), video = video.is_some(), "file playing");
    running();

    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut ticks: u64 = 0;
    // Where this pass starts on the 90 kHz clock, and the video frame waiting for its time.
    let mut pass_offset: u64 = 0;
    let mut next_video: Option<VideoSample> = next_sample(&mut video)?;
    let (mut audio_done, mut video_done) = (pcm.is_none(), next_video.is_none());
    loop {
        if audio_done && video_done {
            if !repeat {
                return Ok(Ended::Finished);
            }
            debug!(path = %path.display(), "looping");
            (pcm, video) = open_media(path.clone(), repeat).await?;
            // The next pass starts now on the audio clock (or the video's own, without audio).
            pass_offset = if audio_track.is_some() {
                ticks * FRAME as u64 * video::CLOCK / u64::from(RATE)
            } else {
                (start.elapsed().as_micros() as u64) * video::CLOCK / 1_000_000
            };
            next_video = next_sample(&mut video)?;
            (audio_done, video_done) = (pcm.is_none(), next_video.is_none());
        }
        let video_due = next_video.as_ref().map(|sample| start + clock_duration(pass_offset + sample.dts));
        tokio::select! {
            _ = stop.cancelled() => return Ok(Ended::Closed("deleted".into())),
            event = rpc.next_event() => match event {
                Some(EndpointEvent::Closed { reason }) => return Ok(Ended::Closed(reason.as_str().to_owned())),
                None => return Ok(Ended::Closed("session closed".into())),
                Some(_) => {}
            },
            _ = tick.tick(), if audio_track.is_some() => {
                let time = MediaTime::new(ticks * FRAME as u64, RATE);
                ticks += 1;
                if audio_done {
                    continue; // waiting for the video to finish this pass
                }
                let Some(samples) = pcm.as_mut().map(Pcm::frame).transpose()?.flatten() else {
                    audio_done = true;
                    continue;
                };
                let payload: Bytes = encoder.encode(&samples).map_err(|e| e.to_string())?;
                if let Some(track) = &audio_track {
                    let _ = track.send(MediaFrame::audio(Codec::Opus, time, Instant::now(), payload));
                }
            }
            _ = sleep_until(video_due) => {
                if let (Some(sample), Some((codec, track))) = (next_video.take(), &video_track) {
                    let time = MediaTime::new(pass_offset + sample.pts, video::CLOCK as u32);
                    let _ = track.send(MediaFrame::video(*codec, time, sample.keyframe, Instant::now(), sample.payload));
                }
                next_video = next_sample(&mut video)?;
                video_done = next_video.is_none();
            }
        }
    }
}

/// Opens the file's audio (if any) and video (if any); a file with neither is an error. The
/// audio loops by itself only when there is no video to keep in step with.
async fn open_media(path: PathBuf, repeat: bool) -> Result<(Option<Pcm>, Option<FileVideo>), String> {
    tokio::task::spawn_blocking(move || {
        let video = FileVideo::open(&path).map_err(|e| e.to_string())?;
        let audio = match Pcm::open(path, repeat && video.is_none()) {
            Ok(pcm) => Some(pcm),
            Err(err) if video.is_none() => return Err(err),
            Err(_) => None,
        };
        Ok((audio, video))
    })
    .await
    .map_err(|_| "opening the file failed".to_owned())?
}

fn next_sample(video: &mut Option<FileVideo>) -> Result<Option<VideoSample>, String> {
    video.as_mut().map(FileVideo::next_sample).transpose().map(Option::flatten).map_err(|e| e.to_string())
}

/// 90 kHz ticks as a duration.
fn clock_duration(ticks: u64) -> Duration {
    Duration::from_micros(ticks.saturating_mul(1_000_000) / video::CLOCK)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_audio::codec::tone::{dominant_frequency, sine_from};

    /// A 16-bit PCM WAV of `seconds` of `freq` Hz.
    fn wav(path: &Path, freq: f64, rate: u32, channels: u8, seconds: f64) {
        let frames = (f64::from(rate) * seconds) as usize;
        let samples = sine_from(0, freq, 0.5, rate, channels, frames);
        let data: Vec<u8> = samples.iter().flat_map(|s| ((s * 32_767.0) as i16).to_le_bytes()).collect();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"RIFF");
        bytes.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        bytes.extend_from_slice(b"WAVEfmt ");
        bytes.extend_from_slice(&16u32.to_le_bytes());
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.extend_from_slice(&u16::from(channels).to_le_bytes());
        bytes.extend_from_slice(&rate.to_le_bytes());
        bytes.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
        bytes.extend_from_slice(&(2 * u16::from(channels)).to_le_bytes());
        bytes.extend_from_slice(&16u16.to_le_bytes());
        bytes.extend_from_slice(b"data");
        bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&data);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_stereo_44k_wav_comes_out_as_48k_mono_frames_of_its_tone_and_loops() {
        let dir = std::env::temp_dir().join(format!("junction-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tone.wav");
        wav(&path, 523.0, 44_100, 2, 1.0);
        let mut once = Pcm::open(path.clone(), false).unwrap();
        let mut frames = Vec::new();
        while let Some(frame) = once.frame().unwrap() {
            assert_eq!(frame.len(), FRAME);
            frames.extend(frame);
        }
        let seconds = frames.len() as f64 / f64::from(RATE);
        assert!((0.95..=1.05).contains(&seconds), "{seconds} s of audio");
        let hz = dominant_frequency(&frames[4_800..43_200], 1, RATE).unwrap();
        assert!((hz - 523.0).abs() < 3.0, "{hz} Hz");

        let mut looping = Pcm::open(path, true).unwrap();
        for _ in 0..150 {
            assert!(looping.frame().unwrap().is_some(), "a looping file never ends");
        }
        assert!(matches!(FileAudio::open(&dir.join("missing.wav")), Err(decode::DecodeError::Open { .. })));
        std::fs::write(dir.join("junk.wav"), b"RIFF1234WAVEjunkjunkjunk").unwrap();
        assert!(FileAudio::open(&dir.join("junk.wav")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn options_are_checked() {
        let options = |url: &str| FileOptions {
            url: url.into(),
            identity: PeerId::new("music").unwrap(),
            name: None,
            repeat: false,
        };
        assert!(options("https://media.example/hold.mp3").validate().is_ok());
        assert_eq!(options("http://media.example/hold.mp3").validate().unwrap_err().0, "url");
        assert_eq!(options("file://relative.wav").validate().unwrap_err().0, "url");
        assert!(options("file:///nonexistent/hold.wav").validate().unwrap_err().1.contains("not a file"));
    }
}

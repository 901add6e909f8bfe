//! The `grid` layout of the room outputs (HLS and recordings): the whole room as one picture and
//! one sound. A service peer of the room subscribes to every video track (in its own codec: the
//! grid decodes H.264, VP8, VP9 and AV1 itself), a thread of its own composes their latest
//! pictures at [`FPS`] into one H.264 picture ([`junction_video::grid`]), and the room's audio
//! mix (the mixer service, listened to by a peer that publishes nothing, so every speaker is in
//! it) is encoded as AAC. Out come frames of two tracks on one clock ([`Composition`]). The
//! thread keeps the codecs off the async runtime; frames it cannot take in time are dropped and
//! their track resumes at its next keyframe.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_audio::mixer::Mixer;
use junction_core::{
    CloseReason, Codec, CodecParams, EndpointEvent, Grants, MediaFrame, MediaKind, MediaOut, MediaTime, PeerId, RoomId,
    SubscribeOptions, TrackId, TrackInfo, TransportKind,
};
use junction_engine::{EndpointMedia, EndpointRpc, Engine, JoinRequest, PeerRole};
use junction_video::grid::{Fed, Grid, GridSettings, MAX_SOURCES};
use junction_video::limit::Limit;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Ended;
use crate::mix_audio::MixAudio;

/// Pictures per second of a grid.
pub const FPS: u32 = 30;
/// The grid's picture (720p).
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 720;
/// Compressed frames waiting for the compose thread; more are dropped (the track then waits
/// for a keyframe).
const INPUT_QUEUE: usize = 64;
/// Composed frames waiting for the output.
const OUTPUT_QUEUE: usize = 64;
/// How often the thread asks one source for a keyframe at most.
const KEYFRAME_PATIENCE: Duration = Duration::from_secs(1);

/// What grids need from the server: the room mixer (their sound, and the speaker an output
/// follows) and the bound on compositions at once (`video.max_grids`). Cheap to clone.
#[derive(Clone)]
pub struct Grids {
    pub mixer: Mixer,
    limit: Arc<Limit>,
}

impl Grids {
    pub fn new(mixer: Mixer, max: usize) -> Grids {
        Grids { mixer, limit: Limit::new(max, "junction_grid_compositions") }
    }
}

/// A grid to run in `room`, joined as `identity`.
pub struct GridRun {
    pub engine: Engine,
    pub grids: Grids,
    pub room: RoomId,
    pub identity: PeerId,
    pub metadata: serde_json::Value,
    /// Seconds between keyframes of the composed video.
    pub keyframe_interval_s: f64,
    pub stop: CancellationToken,
}

/// A running grid: the parameters of its two tracks and their frames. The frames end when the
/// grid does; [`Composition::ended`] says why.
pub struct Composition {
    pub video: CodecParams,
    pub audio: CodecParams,
    pub frames: mpsc::Receiver<MediaFrame>,
    task: tokio::task::JoinHandle<Result<Ended, String>>,
}

impl Composition {
    /// How the grid ended (once `frames` gave `None`).
    pub async fn ended(self) -> Result<Ended, String> {
        self.task.await.unwrap_or_else(|_| Err("internal error (the grid's task failed)".into()))
    }
}

/// What the async side hands the compose thread.
enum Input {
    Add(TrackId, Codec),
    Remove(TrackId),
    Frame(TrackId, Bytes, bool),
}

/// What the compose thread tells the async side (its pictures go straight to the output).
enum Output {
    NeedsKeyframe(TrackId),
    Failed(String),
}

/// Joins the room and starts composing, unless `video.max_grids` compositions already run.
/// Must be called inside a tokio runtime.
pub fn start(run: GridRun) -> Result<Composition, String> {
    let GridRun { engine, grids, room, identity, metadata, keyframe_interval_s, stop } = run;
    let max = grids.limit.max();
    let slot =
        grids.limit.take().ok_or_else(|| format!("video.max_grids ({max}) grid compositions are already running"))?;
    let keyframe_interval = ((keyframe_interval_s * f64::from(FPS)).round() as u32).max(1);
    let settings = GridSettings { width: WIDTH, height: HEIGHT, fps: FPS, keyframe_interval };
    let grid = Grid::new(settings).map_err(|e| format!("the grid's encoder: {e}"))?;
    let clock = Instant::now();
    let (mix_audio, audio) = MixAudio::new(clock)?;
    let mut video = CodecParams::for_codec(Codec::H264);
    (video.width, video.height) = (Some(WIDTH), Some(HEIGHT));
    video.fmtp = Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into());

    let mut join = JoinRequest::new(room.clone(), identity.clone(), TransportKind::Internal);
    join.role = PeerRole::Service;
    join.takes_seat = false;
    join.auto_subscribe = false;
    join.grants = Grants { publish: false, subscribe: true, admin: false, sip_call: false };
    join.metadata = metadata;
    let joined = engine.join(join).map_err(|e| e.to_string())?;
    let listener = grids.mixer.listen(&room, &identity).map_err(|e| e.to_string())?;
    let (rpc, media) = joined.endpoint.split();

    let (inputs, thread_inputs) = std::sync::mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let (thread_outputs, outputs) = mpsc::channel(OUTPUT_QUEUE);
    let (frames_tx, frames) = mpsc::channel(OUTPUT_QUEUE);
    std::thread::Builder::new()
        .name("junction-grid".into())
        .spawn({
            let (queued, pictures) = (queued.clone(), frames_tx.clone());
            move || compose(grid, thread_inputs, queued, (pictures, thread_outputs), clock)
        })
        .map_err(|e| format!("cannot start the grid's thread: {e}"))?;
    let mut feed = Feed {
        room,
        rpc,
        media,
        inputs,
        queued,
        outputs,
        frames: frames_tx,
        sources: HashSet::new(),
        resyncing: HashSet::new(),
        audio: mix_audio,
    };
    for track in &joined.tracks {
        feed.offer(track);
    }
    let task = tokio::spawn(async move {
        let ended = feed.run(listener, stop).await;
        feed.rpc.leave(CloseReason::Left);
        // The thread ends with the feed's channels; the place is free for another grid.
        drop(slot);
        ended
    });
    Ok(Composition { video, audio, frames, task })
}

/// The async side: the room's events and media in, the compose thread fed, frames out.
struct Feed {
    room: RoomId,
    rpc: EndpointRpc,
    media: EndpointMedia,
    /// To the compose thread (control messages always go; frames while fewer than
    /// [`INPUT_QUEUE`] wait, counted by `queued`).
    inputs: Sender<Input>,
    queued: Arc<AtomicUsize>,
    outputs: mpsc::Receiver<Output>,
    frames: mpsc::Sender<MediaFrame>,
    /// Video tracks given to the thread.
    sources: HashSet<TrackId>,
    /// Tracks that lost a frame on the way to the thread: skipped until their next keyframe.
    resyncing: HashSet<TrackId>,
    audio: MixAudio,
}

impl Feed {
    /// Subscribes to a video track in a codec the grid decodes.
    fn offer(&mut self, track: &TrackInfo) {
        if track.kind != MediaKind::Video || self.sources.contains(&track.id) || self.sources.len() >= MAX_SOURCES {
            return;
        }
        let codecs =
            junction_cmaf::CARRIED_VIDEO.into_iter().filter(|c| junction_video::codec::can_decode(*c)).collect();
        match self.rpc.subscribe(&track.id, SubscribeOptions { codecs, ..SubscribeOptions::default() }) {
            Ok(subscribed) => {
                debug!(room = %self.room, track = %track.id, codec = %subscribed.codec, "grid composes a track");
                if self.inputs.send(Input::Add(track.id.clone(), subscribed.codec)).is_ok() {
                    self.sources.insert(track.id.clone());
                    let _ = self.media.request_keyframe(&track.id);
                }
            }
            Err(err) => debug!(room = %self.room, track = %track.id, "grid cannot take a track: {err}"),
        }
    }

    /// Drops a track that went away, and takes a video track left out while the grid was full.
    fn forget(&mut self, track: &TrackId) {
        if !self.sources.remove(track) {
            return;
        }
        self.resyncing.remove(track);
        let _ = self.inputs.send(Input::Remove(track.clone()));
        let snapshot = self.rpc.snapshot();
        for waiting in snapshot.peers.iter().flat_map(|p| p.tracks.iter()) {
            self.offer(waiting);
        }
    }

    fn frame(&mut self, track: TrackId, frame: MediaFrame) {
        if !self.sources.contains(&track) {
            return;
        }
        if self.resyncing.contains(&track) {
            if !frame.keyframe {
                return;
            }
            self.resyncing.remove(&track);
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= INPUT_QUEUE {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let _ = self.media.request_keyframe(&track);
            self.resyncing.insert(track);
            return;
        }
        let _ = self.inputs.send(Input::Frame(track, frame.payload, frame.keyframe));
    }

    async fn run(
        &mut self,
        mut mix: junction_audio::mixer::MixListener,
        stop: CancellationToken,
    ) -> Result<Ended, String> {
        let mut encoded = Vec::new();
        let mut mixing = true;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(Ended::Closed("deleted".into())),
                event = self.rpc.next_event() => match event {
                    Some(EndpointEvent::TrackPublished(track)) => self.offer(&track),
                    Some(EndpointEvent::TrackUnpublished { track, .. } | EndpointEvent::Unsubscribed { track }) => {
                        self.forget(&track)
                    }
                    Some(EndpointEvent::Closed { reason }) => return Ok(Ended::Closed(reason.as_str().to_owned())),
                    None => return Ok(Ended::Closed("session closed".into())),
                    Some(_) => {}
                },
                out = self.media.recv() => match out {
                    Some(MediaOut::Frame { track, frame }) => self.frame(track, frame),
                    Some(_) => {}
                    None => return Ok(Ended::Closed("session closed".into())),
                },
                pcm = mix.recv(), if mixing => {
                    // The mix ends with the room; the room's own close event says why.
                    let Some(pcm) = pcm else {
                        mixing = false;
                        continue;
                    };
                    self.audio.push(&pcm, Instant::now(), &mut encoded)?;
                    for frame in encoded.drain(..) {
                        if self.frames.send(frame).await.is_err() {
                            return Ok(Ended::Closed("output closed".into()));
                        }
                    }
                }
                out = self.outputs.recv() => match out {
                    Some(Output::NeedsKeyframe(track)) => {
                        let _ = self.media.request_keyframe(&track);
                    }
                    Some(Output::Failed(reason)) => return Err(reason),
                    None => return Err("the grid's thread ended".into()),
                },
            }
        }
    }
}

/// The compose thread: sources' frames decoded as they come, a picture composed and encoded
/// every 1/[`FPS`] s (skipping ticks it is too late for) and sent to the output's `pictures`,
/// until the async side goes away.
fn compose(
    mut grid: Grid<TrackId>,
    inputs: std::sync::mpsc::Receiver<Input>,
    queued: Arc<AtomicUsize>,
    (pictures, outputs): (mpsc::Sender<MediaFrame>, mpsc::Sender<Output>),
    clock: Instant,
) {
    let period = Duration::from_secs(1) / FPS;
    let mut next = Instant::now();
    let mut asked: HashMap<TrackId, Instant> = HashMap::new();
    loop {
        let now = Instant::now();
        if now >= next {
            match grid.compose(false) {
                Ok(Some(packet)) => {
                    let since = next.saturating_duration_since(clock);
                    let time = MediaTime::new((since.as_micros() as u64) * 9 / 100, 90_000);
                    let frame =
                        MediaFrame::video(Codec::H264, time, packet.keyframe, now, packet.payload).captured_at(next);
                    if pictures.blocking_send(frame).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(err) => {
                    let _ = outputs.blocking_send(Output::Failed(format!("composing the grid: {err}")));
                    return;
                }
            }
            metrics::counter!("junction_grid_pictures_total").increment(1);
            next += period;
            if next < now {
                // Too late for these ticks: the next one from now (the operator sees them).
                let skipped = (now - next).as_nanos() / period.as_nanos() + 1;
                metrics::counter!("junction_grid_skipped_pictures_total").increment(skipped as u64);
                next = now + period;
            }
            continue;
        }
        let input = match inputs.recv_timeout(next - now) {
            Ok(input) => input,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let wants_keyframe = match input {
            Input::Add(track, codec) => match grid.add(track.clone(), codec) {
                Ok(_) => None,
                Err(err) => {
                    warn!(track = %track, "the grid cannot decode a track: {err}");
                    None
                }
            },
            Input::Remove(track) => {
                grid.remove(&track);
                asked.remove(&track);
                None
            }
            Input::Frame(track, payload, keyframe) => {
                queued.fetch_sub(1, Ordering::AcqRel);
                (grid.feed(&track, &payload, keyframe) == Fed::NeedsKeyframe).then_some(track)
            }
        };
        if let Some(track) = wants_keyframe
            && asked.get(&track).is_none_or(|at| at.elapsed() >= KEYFRAME_PATIENCE)
        {
            asked.insert(track.clone(), Instant::now());
            if outputs.blocking_send(Output::NeedsKeyframe(track)).is_err() {
                return;
            }
        }
    }
}

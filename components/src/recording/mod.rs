//! The `recording` component. `"layout": "tracks"`: every track of the room (or of one `peer`)
//! written to a file of its own — fragmented MP4 for H.264, AV1 and AAC ([`track`]), live WebM
//! for VP8, VP9 and Opus ([`webm`]) — under `<recording.dir>/<room>/<component id>/`,
//! with a `manifest.json` giving each file's wall-clock start so they line up ([`manifest`]).
//! The recorder is a service peer of the room: it subscribes to every track, takes no seat and
//! is not listed; tracks in codecs neither carries (G.711) reach it as the engine's Opus
//! variant. `"layout": "grid"`: the room composed into one file ([`composed`], fed by
//! [`crate::grid`]). Files are written a whole fragment (block) per frame, so a crash or SIGKILL
//! leaves files that play up to their last frame; a restarted server starts the recording again and its new
//! files join the same manifest. With `[recording.s3]`, each file is copied to S3-compatible
//! storage once closed, then the manifest ([`upload`]); files a crash cut short are copied when
//! the recording starts again.

mod composed;
mod manifest;
mod track;
mod upload;
mod webm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use junction_core::{
    CloseReason, Codec, CodecParams, EndpointEvent, Grants, MediaKind, MediaOut, PeerId, RoomId, TrackId, TrackInfo,
    TrackSource, TransportKind,
};
use junction_engine::{EndpointMedia, EndpointRpc, Engine, JoinRequest, PeerRole};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Ended;
use crate::grid::{self, Composition, GridRun, Grids};
use crate::wall_clock::WallClock;
use composed::ComposedMuxer;
pub use manifest::{FileEntry, Manifest};
use object_store::ObjectStore;
use track::{Step, TrackMuxer};
pub use upload::S3Config;
use upload::{Done, Job, Uploads};
use webm::{WEBM_CODECS, WebmMuxer};

/// Files one recording may write (each track, each new resolution, each restart begins one):
/// a room that churns tracks forever stops its recording instead of filling a directory.
const MAX_FILES: usize = 4096;

/// How often a video track without a file yet asks its publisher for a keyframe again.
const KEYFRAME_RETRY: Duration = Duration::from_secs(2);

/// Time between the keyframes of a grid recording's picture (where a player can seek to).
const GRID_KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);

/// How long a stopping recording waits for its copies to object storage.
const UPLOAD_PATIENCE: Duration = Duration::from_secs(120);

/// The `[recording]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Where recordings are written, `<dir>/<room>/<component id>/` [`<data_dir>/recordings`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Copy finished files to S3-compatible storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
}

impl RecordingConfig {
    /// What recordings use: the directory (`default_dir` when `dir` is not set) and the object
    /// store; an error names what is wrong with `[recording.s3]`.
    pub fn resolve(&self, default_dir: PathBuf) -> Result<Recordings, String> {
        let s3 = match &self.s3 {
            Some(config) => Some(Arc::new(S3Target {
                store: config.store()?,
                bucket: config.bucket.clone(),
                prefix: config.prefix.clone(),
                keep_local: config.keep_local,
            })),
            None => None,
        };
        Ok(Recordings { dir: self.dir.clone().unwrap_or(default_dir), s3 })
    }
}

/// Where recordings go, resolved from [`RecordingConfig`].
#[derive(Clone)]
pub struct Recordings {
    pub dir: PathBuf,
    pub s3: Option<Arc<S3Target>>,
}

/// The object storage recordings are copied to.
pub struct S3Target {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    keep_local: bool,
}

/// How a recording lays its media out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// A file per track, lined up by the manifest.
    #[default]
    Tracks,
    /// One file: every video publisher in one picture, with the room's audio mix.
    Grid,
}

/// What a `recording` component is created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingOptions {
    #[serde(default)]
    pub layout: Layout,
    /// Record this peer's tracks only (default: every peer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerId>,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Tracks => "tracks",
            Layout::Grid => "grid",
        }
    }
}

impl RecordingOptions {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.layout == Layout::Grid && self.peer.is_some() {
            return Err(("peer", "a grid shows every peer: leave peer out".into()));
        }
        Ok(())
    }
}

/// A recording to run: where, what, and the token that stops it.
pub struct Recorder {
    pub engine: Engine,
    /// The room mixer and the grid bound (what a grid records).
    pub grids: Grids,
    pub room: RoomId,
    pub component: String,
    pub options: RecordingOptions,
    /// The recording's own directory.
    pub dir: PathBuf,
    pub s3: Option<Arc<S3Target>>,
    pub stop: CancellationToken,
}

/// The directory of a recording under `root` (`recording.dir`).
pub fn directory(root: &Path, room: &RoomId, component: &str) -> PathBuf {
    root.join(path_safe(room.as_str())).join(path_safe(component))
}

/// An id as a file or directory name that is safe everywhere (S3 keys, Windows shares): `:`,
/// `@`, `+` and `~` become `_`, and a name of dots alone (a room called `..`) becomes
/// underscores, so no id leaves its directory.
fn path_safe(id: &str) -> String {
    let name: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') { c } else { '_' }).collect();
    if name.chars().all(|c| c == '.') { "_".repeat(name.len()) } else { name }
}

/// How a recorded track's frames become files: a file per track, or the grid's one file.
enum Muxer {
    Track(TrackMuxer),
    Webm(WebmMuxer),
    Composed(Box<ComposedMuxer>),
}

/// A track being recorded (or a grid's composition): its muxer and the file it writes now.
struct Recorded {
    info: TrackInfo,
    codec: Codec,
    /// What the manifest says the file holds (`h264`, `opus`; `h264,aac` for a grid).
    codecs: String,
    /// File names are `<stem>-<n>.mp4` (`.webm`).
    stem: String,
    muxer: Muxer,
    file: Option<(usize, tokio::fs::File)>,
    asked_keyframe: Option<Instant>,
}

struct Session {
    dir: PathBuf,
    manifest: Manifest,
    clock: WallClock,
    tracks: HashMap<TrackId, Recorded>,
    s3: Option<Arc<S3Target>>,
    uploads: Option<Uploads>,
}

impl Session {
    fn track_added(&mut self, info: TrackInfo, codec: Codec, params: CodecParams) {
        debug!(room = %self.manifest.room, track = %info.id, peer = %info.peer, %codec, "recording a track");
        let kind = if info.kind == MediaKind::Video { "video" } else { "audio" };
        let stem = format!("{}-{kind}", path_safe(info.peer.as_str()));
        let muxer = if WEBM_CODECS.contains(&codec) {
            Muxer::Webm(WebmMuxer::new(codec, params))
        } else {
            Muxer::Track(TrackMuxer::new(codec, params))
        };
        let codecs = codec.as_str().to_owned();
        let recorded = Recorded { info, codec, codecs, stem, muxer, file: None, asked_keyframe: None };
        self.tracks.insert(recorded.info.id.clone(), recorded);
    }

    /// Ends a track's file (the track went away, or the recording stops).
    async fn close_file(&mut self, track: &TrackId) -> Result<(), String> {
        let Some(recorded) = self.tracks.get_mut(track) else { return Ok(()) };
        let Some((index, mut file)) = recorded.file.take() else { return Ok(()) };
        file.flush().await.map_err(|e| format!("writing {}: {e}", self.manifest.files[index].file))?;
        self.manifest.files[index].end_unix_ms = Some(self.clock.unix_ms(Instant::now()));
        self.copy(Some(index));
        self.save().await
    }

    /// The object key of a file of this recording.
    fn key(&self, file: &str) -> Option<String> {
        let s3 = self.s3.as_ref()?;
        let (room, component) = (path_safe(self.manifest.room.as_str()), path_safe(&self.manifest.component));
        Some(format!("{}{room}/{component}/{file}", s3.prefix))
    }

    /// Queues the copy of file `index` (or of the manifest) to object storage, when configured.
    fn copy(&self, index: Option<usize>) {
        let (Some(uploads), Some(s3)) = (&self.uploads, &self.s3) else { return };
        let file = index.map_or(manifest::FILE_NAME, |index| self.manifest.files[index].file.as_str());
        let Some(key) = self.key(file) else { return };
        let job = Job { index, path: self.dir.join(file), key };
        if !uploads.queue(job) {
            warn!(bucket = %s3.bucket, file, "the copy queue is full: the file stays on disk until the recording restarts");
        }
    }

    /// Marks a finished copy in the manifest and copies the manifest after a file.
    async fn copied(&mut self, done: Done) -> Result<(), String> {
        let (Some(index), Ok(())) = (done.index, &done.result) else { return Ok(()) };
        if let (Some(entry), Some(s3)) = (self.manifest.files.get_mut(index), &self.s3) {
            entry.object = Some(format!("s3://{}/{}", s3.bucket, done.key));
        }
        self.save().await?;
        self.copy(None);
        Ok(())
    }

    async fn save(&self) -> Result<(), String> {
        self.manifest
            .save(&self.dir)
            .await
            .map_err(|e| format!("writing {}: {e}", self.dir.join(manifest::FILE_NAME).display()))
    }

    /// Writes one frame of `track` into its file, beginning a file where the muxer says so.
    async fn write(&mut self, track: &TrackId, frame: &junction_core::MediaFrame) -> Result<(), String> {
        let Some(recorded) = self.tracks.get_mut(track) else { return Ok(()) };
        let pushed = match &mut recorded.muxer {
            Muxer::Track(muxer) => muxer.push(frame),
            Muxer::Webm(muxer) => Ok(muxer.push(frame)),
            Muxer::Composed(muxer) => muxer.push(frame),
        };
        let step = match pushed {
            Ok(Some(step)) => step,
            Ok(None) => return Ok(()),
            Err(err) => {
                debug!(track = %track, "frame not recorded: {err}");
                return Ok(());
            }
        };
        match step {
            Step::Append(bytes) => {
                if let Some((index, file)) = recorded.file.as_mut() {
                    let name = &self.manifest.files[*index].file;
                    file.write_all(&bytes).await.map_err(|e| format!("writing {name}: {e}"))?;
                }
                Ok(())
            }
            Step::Open { bytes, captured, codec_string } => {
                self.close_file(track).await?;
                if self.manifest.files.len() >= MAX_FILES {
                    return Err(format!("the recording reached its {MAX_FILES} files"));
                }
                let Some(recorded) = self.tracks.get_mut(track) else { return Ok(()) };
                let info = &recorded.info;
                let (extension, timescale) = match &recorded.muxer {
                    Muxer::Webm(_) => ("webm", webm::TIMESCALE),
                    _ => ("mp4", junction_cmaf::timescale(recorded.codec, &recorded.info.params)),
                };
                let name = format!("{}-{}.{extension}", recorded.stem, self.manifest.files.len() + 1);
                let path = self.dir.join(&name);
                let mut file = tokio::fs::File::create(&path).await.map_err(|e| format!("creating {name}: {e}"))?;
                file.write_all(&bytes).await.map_err(|e| format!("writing {name}: {e}"))?;
                self.manifest.files.push(FileEntry {
                    file: name,
                    peer: info.peer.clone(),
                    track: info.id.clone(),
                    name: info.name.clone(),
                    kind: info.kind,
                    codec: recorded.codecs.clone(),
                    codec_string,
                    source_codec: (info.codec != recorded.codec).then(|| info.codec.as_str().to_owned()),
                    timescale,
                    start_unix_ms: self.clock.unix_ms(captured),
                    end_unix_ms: None,
                    object: None,
                });
                recorded.file = Some((self.manifest.files.len() - 1, file));
                self.save().await
            }
        }
    }

    async fn close_all(&mut self) -> Result<(), String> {
        let tracks: Vec<TrackId> = self.tracks.keys().cloned().collect();
        for track in tracks {
            self.close_file(&track).await?;
        }
        Ok(())
    }
}

/// Runs a recording until it is deleted (`Closed("deleted")`), its room closes, or a write
/// fails (`Err`, the component fails with the reason); `running` is called once the recorder
/// is in the room.
pub async fn record(recorder: Recorder, running: impl FnOnce()) -> Result<Ended, String> {
    let Recorder { engine, grids, room, component, options, dir, s3, stop } = recorder;
    tokio::fs::create_dir_all(&dir).await.map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut manifest = Manifest::load(&dir).await.unwrap_or_else(|| Manifest::new(room.clone(), component.clone()));
    // Files an earlier run left open were cut by a crash: they stay listed without an end.
    manifest.component = component.clone();
    manifest.layout = options.layout.as_str().into();
    let identity = PeerId::new(format!("recorder:{component}")).map_err(|e| e.to_string())?;
    let metadata = serde_json::json!({"component": "recording", "id": component});
    let source = match options.layout {
        Layout::Tracks => {
            let mut join = JoinRequest::new(room.clone(), identity.clone(), TransportKind::Internal);
            join.role = PeerRole::Service;
            join.takes_seat = false;
            join.grants = Grants { publish: false, subscribe: true, admin: false, sip_call: false };
            join.accept_codecs = junction_cmaf::CARRIED_VIDEO.into_iter().chain(junction_cmaf::CARRIED_AUDIO).collect();
            join.metadata = metadata;
            let joined = engine.join(join).map_err(|e| e.to_string())?;
            Source::Tracks(joined.endpoint.split())
        }
        Layout::Grid => {
            let run = GridRun {
                engine,
                grids,
                room: room.clone(),
                identity: identity.clone(),
                metadata,
                keyframe_interval_s: GRID_KEYFRAME_INTERVAL.as_secs_f64(),
                stop: stop.clone(),
            };
            Source::Grid(grid::start(run)?)
        }
    };
    let uploads = s3.as_ref().map(|s3| Uploads::start(s3.store.clone(), s3.keep_local));
    let mut session =
        Session { dir: dir.clone(), manifest, clock: WallClock::now(), tracks: HashMap::new(), s3, uploads };
    session.save().await?;
    // Files an earlier run did not get to copy (a crash cut it short) are copied now.
    for index in 0..session.manifest.files.len() {
        if session.manifest.files[index].object.is_none() && dir.join(&session.manifest.files[index].file).is_file() {
            session.copy(Some(index));
        }
    }
    info!(room = %room, component = %component, dir = %dir.display(), layout = options.layout.as_str(), "recording");
    running();

    let ended = match source {
        Source::Tracks((rpc, media)) => record_tracks(&mut session, rpc, media, &options, &stop).await,
        Source::Grid(composition) => record_grid(&mut session, composition, identity).await,
    };
    let mut closed = session.close_all().await;
    if let Some(uploads) = session.uploads.take() {
        for done in uploads.finish(UPLOAD_PATIENCE).await {
            closed = closed.and(session.copied(done).await);
        }
        // The manifest as it ends, with every copy marked.
        if let (Some(s3), Some(key)) = (&session.s3, session.key(manifest::FILE_NAME)) {
            let job = Job { index: None, path: dir.join(manifest::FILE_NAME), key };
            if let Err(err) = upload::copy(&s3.store, &job).await {
                warn!(room = %room, component = %component, "cannot copy the manifest to object storage: {err}");
            }
        }
    }
    info!(room = %room, component = %component, files = session.manifest.files.len(), "recording ended");
    closed.and(ended)
}

/// Where a recording's media comes from.
enum Source {
    /// Its own endpoint in the room (`tracks`).
    Tracks((EndpointRpc, EndpointMedia)),
    /// A grid (`grid`).
    Grid(Composition),
}

/// The `tracks` layout: every subscribed track into its own files.
async fn record_tracks(
    session: &mut Session,
    mut rpc: EndpointRpc,
    mut media: EndpointMedia,
    options: &RecordingOptions,
    stop: &CancellationToken,
) -> Result<Ended, String> {
    let (room, component) = (session.manifest.room.clone(), session.manifest.component.clone());
    let mut retry = tokio::time::interval(KEYFRAME_RETRY);
    let ended = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ok(Ended::Closed("deleted".into())),
            event = rpc.next_event() => match event {
                Some(EndpointEvent::Subscribed { track, codec, params }) => {
                    if options.peer.as_ref().is_some_and(|peer| *peer != track.peer) {
                        let _ = rpc.unsubscribe(&track.id);
                        continue;
                    }
                    let video = track.kind == MediaKind::Video;
                    let id = track.id.clone();
                    session.track_added(track, codec, params);
                    if video && let Some(recorded) = session.tracks.get_mut(&id) {
                        recorded.asked_keyframe = Some(Instant::now());
                        let _ = media.request_keyframe(&id);
                    }
                }
                Some(EndpointEvent::Unsubscribed { track }) => {
                    if let Err(err) = session.close_file(&track).await {
                        break Err(err);
                    }
                    session.tracks.remove(&track);
                }
                Some(EndpointEvent::SubscriptionFailed { track, reason }) => {
                    warn!(room = %room, component = %component, track = %track, "a track cannot be recorded: {reason}");
                }
                Some(EndpointEvent::Closed { reason }) => break Ok(Ended::Closed(reason.as_str().to_owned())),
                None => break Ok(Ended::Closed("session closed".into())),
                Some(_) => {}
            },
            out = media.recv() => match out {
                Some(MediaOut::Frame { track, frame }) => {
                    if let Err(err) = session.write(&track, &frame).await {
                        break Err(err);
                    }
                }
                Some(_) => {}
                None => break Ok(Ended::Closed("session closed".into())),
            },
            Some(done) = next_copy(&mut session.uploads) => {
                if let Err(err) = session.copied(done).await {
                    break Err(err);
                }
            }
            _ = retry.tick() => {
                for (id, recorded) in &mut session.tracks {
                    let waiting = recorded.file.is_none() && recorded.info.kind == MediaKind::Video;
                    if waiting && recorded.asked_keyframe.is_none_or(|at| at.elapsed() >= KEYFRAME_RETRY) {
                        recorded.asked_keyframe = Some(Instant::now());
                        let _ = media.request_keyframe(id);
                    }
                }
            }
        }
    };
    rpc.leave(CloseReason::Left);
    ended
}

/// The `grid` layout: the composition into one file.
async fn record_grid(session: &mut Session, mut composition: Composition, identity: PeerId) -> Result<Ended, String> {
    let id = TrackId::generate();
    let info = TrackInfo {
        id: id.clone(),
        peer: identity,
        name: "grid".into(),
        kind: MediaKind::Video,
        source: TrackSource::Camera,
        codec: Codec::H264,
        params: composition.video.clone(),
        layers: Vec::new(),
        muted: false,
    };
    let muxer = Muxer::Composed(Box::new(ComposedMuxer::new(composition.video.clone(), composition.audio.clone())));
    let recorded = Recorded {
        info,
        codec: Codec::H264,
        codecs: "h264,aac".into(),
        stem: "grid".into(),
        muxer,
        file: None,
        asked_keyframe: None,
    };
    session.tracks.insert(id.clone(), recorded);
    loop {
        tokio::select! {
            frame = composition.frames.recv() => match frame {
                Some(frame) => session.write(&id, &frame).await?,
                None => break,
            },
            Some(done) = next_copy(&mut session.uploads) => session.copied(done).await?,
        }
    }
    composition.ended().await
}

/// The next finished copy, when copies are made.
async fn next_copy(uploads: &mut Option<Uploads>) -> Option<Done> {
    match uploads {
        Some(uploads) => uploads.done.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_only_portable_characters_and_stay_in_their_directory() {
        assert_eq!(path_safe("sip:+4930@pbx~1"), "sip__4930_pbx_1");
        assert_eq!(path_safe("cam-1.a"), "cam-1.a");
        let root = Path::new("/srv/recordings");
        for room in ["..", ".", "..."] {
            let dir = directory(root, &RoomId::new(room).unwrap(), "CO_x");
            assert_eq!(dir.parent(), Some(root.join("_".repeat(room.len())).as_path()), "{room}");
        }
    }

    #[test]
    fn options_default_to_tracks_and_refuse_unknown_layouts() {
        let options: RecordingOptions = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(options, RecordingOptions { layout: Layout::Tracks, peer: None });
        let mosaic = serde_json::from_value::<RecordingOptions>(serde_json::json!({"layout": "mosaic"}));
        assert!(mosaic.unwrap_err().to_string().contains("unknown variant `mosaic`"));
        let grid: RecordingOptions = serde_json::from_value(serde_json::json!({"layout": "grid"})).unwrap();
        assert_eq!(grid.validate(), Ok(()));
        let one: RecordingOptions = serde_json::from_value(serde_json::json!({"layout": "grid", "peer": "a"})).unwrap();
        assert_eq!(one.validate().unwrap_err().0, "peer", "a grid of one peer is refused");
    }
}

//! The `hls` component: the room as LL-HLS (fMP4/CMAF, H.264 + AAC). `"layout": "single"` is
//! one peer, `peer` (its video and audio; the engine transcodes VP8/VP9/AV1 and Opus for it),
//! or else the room's active speaker (its video, and the room's mix as the sound); `"grid"` is
//! every video publisher composed into one picture with the room's audio mix
//! ([`crate::grid`]). Served at `/hls/{room}/{id}/index.m3u8`
//! ([`serve`]) to holders of a subscribe token for the room, or to anyone when `public`. The
//! outputs live in memory: a bounded window of segments ([`playlist`]), made by [`muxer`].

mod muxer;
mod playlist;
mod serve;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use junction_audio::mixer::MixListener;
use junction_core::{
    CloseReason, Codec, EndpointEvent, Grants, MediaKind, MediaOut, PeerId, RoomId, SubscribeOptions, TrackId,
    TrackInfo, TransportKind,
};
use junction_engine::{EndpointMedia, EndpointRpc, Engine, JoinRequest, PeerRole};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::Ended;
use crate::grid::{self, GridRun, Grids};
use crate::mix_audio::MixAudio;
use muxer::HlsMuxer;
use playlist::Timing;
pub(crate) use serve::routes;

/// How an HLS output composes the room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HlsLayout {
    /// One peer's video and audio.
    #[default]
    Single,
    /// Every video publisher in one picture, with the room's audio mix.
    Grid,
}

/// The most media an output keeps, in seconds (window × segment_s).
const MAX_WINDOW_S: f64 = 120.0;

fn default_segment() -> f64 {
    2.0
}
fn default_part() -> u64 {
    500
}
fn default_window() -> usize {
    6
}

/// What an `hls` component is created with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HlsOptions {
    #[serde(default)]
    pub layout: HlsLayout,
    /// The peer to follow (default: the room's active speaker's video, with the room's mix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerId>,
    /// Served to anyone (a CDN pulling it), not only to holders of a subscribe token.
    #[serde(default)]
    pub public: bool,
    /// Segment duration aimed at, in seconds (segments end at a keyframe).
    #[serde(default = "default_segment")]
    pub segment_s: f64,
    /// Partial segment duration aimed at, in ms.
    #[serde(default = "default_part")]
    pub part_ms: u64,
    /// Complete segments kept and listed.
    #[serde(default = "default_window")]
    pub window: usize,
}

impl Eq for HlsOptions {}

impl HlsOptions {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.layout == HlsLayout::Grid && self.peer.is_some() {
            return Err(("peer", "a grid shows every peer: leave peer out".into()));
        }
        if !(1.0..=10.0).contains(&self.segment_s) {
            return Err(("segment_s", format!("{} is not between 1 and 10", self.segment_s)));
        }
        if !(100..=2000).contains(&self.part_ms) || self.part_ms as f64 >= self.segment_s * 1000.0 {
            return Err(("part_ms", format!("{} is not between 100 and 2000, below segment_s", self.part_ms)));
        }
        if !(3..=60).contains(&self.window) {
            return Err(("window", format!("{} is not between 3 and 60", self.window)));
        }
        // The window is held in memory: two minutes of media at most.
        if self.window as f64 * self.segment_s > MAX_WINDOW_S {
            return Err((
                "window",
                format!("{} segments of {} s is more than {MAX_WINDOW_S} s", self.window, self.segment_s),
            ));
        }
        Ok(())
    }

    fn timing(&self) -> Timing {
        Timing { segment: self.segment_s, part: self.part_ms as f64 / 1000.0, window: self.window }
    }
}

/// One output as the HTTP side sees it: its media and a counter bumped whenever it grows.
pub struct HlsOutput {
    public: bool,
    /// The peer a `single` output shows now (the API's `following`).
    following: Mutex<Option<PeerId>>,
    muxer: Mutex<HlsMuxer>,
    changed: watch::Sender<u64>,
}

/// An output's key: its room and component id.
type OutputKey = (RoomId, String);

/// The outputs being served.
#[derive(Clone, Default)]
pub struct HlsOutputs {
    outputs: Arc<Mutex<HashMap<OutputKey, Arc<HlsOutput>>>>,
}

impl HlsOutputs {
    fn get(&self, room: &RoomId, id: &str) -> Option<Arc<HlsOutput>> {
        self.outputs.lock().get(&(room.clone(), id.to_owned())).cloned()
    }

    /// The peer a running `single` output shows now.
    pub fn following(&self, room: &RoomId, id: &str) -> Option<PeerId> {
        self.get(room, id)?.following.lock().clone()
    }

    /// Stops serving a deleted component's output.
    pub fn remove(&self, room: &RoomId, id: &str) {
        self.outputs.lock().remove(&(room.clone(), id.to_owned()));
    }
}

/// The URL path of an output's playlist.
pub fn playlist_path(room: &RoomId, id: &str) -> String {
    format!("/hls/{room}/{id}/index.m3u8")
}

/// An HLS output to run.
pub struct HlsRun {
    pub engine: Engine,
    /// The room mixer and the grid bound (a grid, an output following the speaker).
    pub grids: Grids,
    pub room: RoomId,
    pub component: String,
    pub options: HlsOptions,
    pub outputs: HlsOutputs,
    pub stop: CancellationToken,
}

/// The peer an output follows and the tracks it took from it.
struct Following {
    peer: Option<PeerId>,
    tracks: HashMap<MediaKind, TrackId>,
    /// What it takes from the peer: video and audio, or video alone (the sound is the mix).
    kinds: &'static [MediaKind],
}

impl Following {
    /// Follows `peer` from now on, as the output's view says (`following`).
    fn show(&mut self, peer: Option<PeerId>, output: &HlsOutput) {
        output.following.lock().clone_from(&peer);
        self.peer = peer;
    }

    /// Subscribes to `track` when it is the followed peer's first of its kind (adopting its
    /// peer when none is followed and the options name none).
    fn offer(&mut self, track: &TrackInfo, fixed: bool, rpc: &EndpointRpc, media: &EndpointMedia, output: &HlsOutput) {
        if self.peer.is_none() && !fixed && track.kind == MediaKind::Video {
            self.show(Some(track.peer.clone()), output);
        }
        if self.peer.as_ref() != Some(&track.peer)
            || self.tracks.contains_key(&track.kind)
            || !self.kinds.contains(&track.kind)
        {
            return;
        }
        let codecs = match track.kind {
            MediaKind::Video => vec![Codec::H264],
            MediaKind::Audio => vec![Codec::Aac],
        };
        match rpc.subscribe(&track.id, SubscribeOptions { codecs, ..SubscribeOptions::default() }) {
            Ok(subscribed) => {
                debug!(track = %track.id, codec = %subscribed.codec, "hls output takes a track");
                output.muxer.lock().set_track(track.id.clone(), subscribed.codec, subscribed.params);
                self.tracks.insert(track.kind, track.id.clone());
                if track.kind == MediaKind::Video {
                    let _ = media.request_keyframe(&track.id);
                }
            }
            Err(err) => debug!(track = %track.id, "hls output cannot take a track: {err}"),
        }
    }

    /// Offers `tracks`, video first, so an unnamed peer is adopted by its video.
    fn offer_all<'a>(
        &mut self,
        tracks: impl IntoIterator<Item = &'a TrackInfo>,
        fixed: bool,
        rpc: &EndpointRpc,
        media: &EndpointMedia,
        output: &HlsOutput,
    ) {
        let mut tracks: Vec<&TrackInfo> = tracks.into_iter().collect();
        tracks.sort_by_key(|t| t.kind != MediaKind::Video);
        for track in tracks {
            self.offer(track, fixed, rpc, media, output);
        }
    }

    /// Follows `speaker` instead of the peer followed now, if it publishes video (a speaker
    /// without, a phone, leaves the picture as it is).
    fn follow_speaker(&mut self, speaker: &PeerId, rpc: &EndpointRpc, media: &EndpointMedia, output: &HlsOutput) {
        if self.peer.as_ref() == Some(speaker) {
            return;
        }
        let snapshot = rpc.snapshot();
        let tracks: Vec<&TrackInfo> = snapshot
            .peers
            .iter()
            .flat_map(|p| p.tracks.iter())
            .filter(|t| t.peer == *speaker && t.kind == MediaKind::Video)
            .collect();
        if tracks.is_empty() {
            return;
        }
        debug!(%speaker, "hls output follows the active speaker");
        for (_, track) in self.tracks.drain() {
            let _ = rpc.unsubscribe(&track);
            output.muxer.lock().remove_track(&track);
        }
        self.show(Some(speaker.clone()), output);
        self.offer_all(tracks, false, rpc, media, output);
    }
}

/// Runs an output until it is deleted or its room closes; `running` is called once it is in
/// the room.
pub async fn run(hls: HlsRun, running: impl FnOnce()) -> Result<Ended, String> {
    let output = Arc::new(HlsOutput {
        public: hls.options.public,
        following: Mutex::new(None),
        muxer: Mutex::new(HlsMuxer::new(hls.options.timing(), Instant::now())),
        changed: watch::channel(0).0,
    });
    hls.outputs.outputs.lock().insert((hls.room.clone(), hls.component.clone()), output.clone());
    let (room, component) = (hls.room.clone(), hls.component.clone());
    let identity = PeerId::new(format!("hls:{component}")).map_err(|e| e.to_string())?;
    let ended = match hls.options.layout {
        HlsLayout::Single => follow(hls, identity, &output, running).await,
        HlsLayout::Grid => compose(hls, identity, &output, running).await,
    };
    output.muxer.lock().finish();
    output.changed.send_modify(|n| *n += 1);
    info!(room = %room, component = %component, "hls output ended");
    ended
}

/// The `grid` layout: the composition's two tracks into the output.
async fn compose(hls: HlsRun, identity: PeerId, output: &HlsOutput, running: impl FnOnce()) -> Result<Ended, String> {
    let HlsRun { engine, grids, room, component, options, stop, .. } = hls;
    let metadata = serde_json::json!({"component": "hls", "id": component});
    let keyframe_interval_s = options.segment_s;
    let run = GridRun { engine, grids, room: room.clone(), identity, metadata, keyframe_interval_s, stop };
    let mut composition = grid::start(run)?;
    let (video, audio) = (TrackId::generate(), TrackId::generate());
    {
        let mut muxer = output.muxer.lock();
        muxer.set_track(video.clone(), Codec::H264, composition.video.clone());
        muxer.set_track(audio.clone(), Codec::Aac, composition.audio.clone());
    }
    info!(room = %room, component = %component, "hls output running (grid)");
    running();
    while let Some(frame) = composition.frames.recv().await {
        let track = if frame.codec == Codec::H264 { &video } else { &audio };
        if output.muxer.lock().push(track, &frame) {
            output.changed.send_modify(|n| *n += 1);
        }
    }
    composition.ended().await
}

/// The `single` layout: the followed peer's tracks into the output. Without a `peer` option it
/// follows the room's active speaker (the mixer's, [`Mixer::listen`]) with its video, and the
/// sound is the room's mix.
async fn follow(hls: HlsRun, identity: PeerId, output: &HlsOutput, running: impl FnOnce()) -> Result<Ended, String> {
    let HlsRun { engine, grids, room, component, options, stop, .. } = hls;
    let mut join = JoinRequest::new(room.clone(), identity.clone(), TransportKind::Internal);
    join.role = PeerRole::Service;
    join.takes_seat = false;
    join.auto_subscribe = false;
    join.grants = Grants { publish: false, subscribe: true, admin: false, sip_call: false };
    join.metadata = serde_json::json!({"component": "hls", "id": component});
    let joined = engine.join(join).map_err(|e| e.to_string())?;
    let existing = joined.tracks;
    let (mut rpc, mut media) = joined.endpoint.split();
    let fixed = options.peer.is_some();
    // Following the speaker: the room's mix as the sound, and who speaks.
    let mut mix = None;
    let mut speaker = None;
    let mut sound = None;
    if !fixed {
        let listener = grids.mixer.listen(&room, &identity).map_err(|e| e.to_string())?;
        speaker = Some(listener.speaker());
        mix = Some(listener);
        let (audio, params) = MixAudio::new(Instant::now())?;
        let track = TrackId::generate();
        output.muxer.lock().set_track(track.clone(), Codec::Aac, params);
        sound = Some((audio, track));
    }
    let kinds: &'static [MediaKind] = if fixed { &[MediaKind::Video, MediaKind::Audio] } else { &[MediaKind::Video] };
    let mut following = Following { peer: None, tracks: HashMap::new(), kinds };
    following.show(options.peer.clone(), output);
    following.offer_all(&existing, fixed, &rpc, &media, output);
    info!(room = %room, component = %component, peer = ?following.peer, speaker = !fixed, "hls output running");
    running();

    // Segments end at keyframes: ask for one every segment (publishers that take requests).
    let mut keyframes = tokio::time::interval(Duration::from_secs_f64(options.segment_s));
    let mut encoded = Vec::new();
    let ended = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ended::Closed("deleted".into()),
            event = rpc.next_event() => match event {
                Some(EndpointEvent::TrackPublished(track)) => {
                    following.offer(&track, fixed, &rpc, &media, output);
                }
                Some(EndpointEvent::TrackUnpublished { track, .. } | EndpointEvent::Unsubscribed { track }) => {
                    if following.tracks.values().any(|t| *t == track) {
                        following.tracks.retain(|_, t| *t != track);
                        output.muxer.lock().remove_track(&track);
                    }
                    if following.tracks.is_empty() && !fixed && following.peer.is_some() {
                        // The followed peer is gone: the next one with video.
                        following.show(None, output);
                        let snapshot = rpc.snapshot();
                        let tracks = snapshot.peers.iter().flat_map(|p| p.tracks.iter());
                        following.offer_all(tracks, fixed, &rpc, &media, output);
                    }
                }
                Some(EndpointEvent::Closed { reason }) => break Ended::Closed(reason.as_str().to_owned()),
                None => break Ended::Closed("session closed".into()),
                Some(_) => {}
            },
            out = media.recv() => match out {
                Some(MediaOut::Frame { track, frame }) => {
                    if output.muxer.lock().push(&track, &frame) {
                        output.changed.send_modify(|n| *n += 1);
                    }
                }
                Some(_) => {}
                None => break Ended::Closed("session closed".into()),
            },
            pcm = next_mix(&mut mix), if mix.is_some() => {
                let (Some(pcm), Some((audio, track))) = (pcm, sound.as_mut()) else {
                    // The mix ended with the room: its close event says why.
                    mix = None;
                    continue;
                };
                audio.push(&pcm, Instant::now(), &mut encoded)?;
                let mut muxer = output.muxer.lock();
                let published = encoded.drain(..).fold(false, |published, frame| muxer.push(track, &frame) | published);
                drop(muxer);
                if published {
                    output.changed.send_modify(|n| *n += 1);
                }
            }
            changed = next_speaker(&mut speaker), if speaker.is_some() => {
                match changed {
                    Some(Some(who)) => following.follow_speaker(&who, &rpc, &media, output),
                    Some(None) => {}
                    None => speaker = None,
                }
            }
            _ = keyframes.tick() => {
                if let Some(video) = following.tracks.get(&MediaKind::Video) {
                    let _ = media.request_keyframe(video);
                }
            }
        }
    };
    rpc.leave(CloseReason::Left);
    Ok(ended)
}

/// The next 20 ms of the room's mix (`None` once it ended).
async fn next_mix(mix: &mut Option<MixListener>) -> Option<Vec<f32>> {
    match mix {
        Some(mix) => mix.recv().await,
        None => std::future::pending().await,
    }
}

/// The active speaker once it changes (`None` once the mix ended).
async fn next_speaker(speaker: &mut Option<watch::Receiver<Option<PeerId>>>) -> Option<Option<PeerId>> {
    match speaker {
        Some(speaker) => speaker.changed().await.ok().map(|()| speaker.borrow_and_update().clone()),
        None => std::future::pending().await,
    }
}

//! One peer of the room as a MoQ broadcast in namespace `(room, identity)`: its tracks muxed
//! into CMAF, one object per frame, a new group at every video keyframe (audio groups follow
//! the video's, or last a second on audio-only peers), plus `0.mp4` (init segment) and
//! `.catalog`, rewritten as new groups whenever the peer's tracks change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use junction_core::{Codec, CodecParams, MediaFrame, MediaKind, PeerId, RoomId, TrackId};
use moq_transport::coding::TrackNamespace;
use moq_transport::serve::{TrackReader, Tracks, TracksReader, TracksRequest, TracksWriter};
use tracing::{debug, trace};

use super::catalog::{CatalogEntry, catalog_json};
use crate::codecs;
use crate::naming::{self, CATALOG_TRACK, INIT_TRACK};
use crate::out_track::OutTrack;
use junction_cmaf::{DecodeTimes, FragmentSample, InitTrack, SampleDefaults, TrackCodec, build_init, fragment_header};

/// How long a new broadcast waits for every track's decoder configuration (a video track's
/// first keyframe) before publishing an init segment with the tracks that are ready.
const INIT_GRACE: Duration = Duration::from_secs(3);

/// MoQ publisher priorities (lower is more important): audio before video.
const PRIORITY_AUDIO: u8 = 64;
const PRIORITY_VIDEO: u8 = 128;
const PRIORITY_METADATA: u8 = 0;

/// A track's clock, anchored so all tracks of the peer share one timeline: the first frame's
/// timestamp maps to its arrival time since the broadcast began.
#[derive(Debug, Clone, Copy)]
struct TrackClock {
    first_ticks: u64,
    base: u64,
}

struct MediaTrack {
    id: u32,
    engine: TrackId,
    kind: MediaKind,
    params: CodecParams,
    out: OutTrack,
    config: Option<TrackCodec>,
    timescale: u32,
    sequence: u32,
    clock: Option<TrackClock>,
    decode: DecodeTimes,
    group_start_dts: u64,
    /// An audio track's next group, set when the peer's video starts one.
    pending_group: Option<u64>,
}

pub struct PeerBroadcast {
    identity: PeerId,
    namespace: TrackNamespace,
    writer: TracksWriter,
    reader: TracksReader,
    _requests: TracksRequest,
    catalog: OutTrack,
    init: OutTrack,
    tracks: BTreeMap<u32, MediaTrack>,
    /// The tracks (id, configuration) of the init segment last published.
    published: Option<Vec<(u32, TrackCodec)>>,
    created: Instant,
    group_seq: u64,
    /// Serving tasks currently reading this broadcast.
    users: Arc<AtomicUsize>,
    idle_since: Option<Instant>,
}

/// Held by a task serving one of the broadcast's tracks.
pub struct BroadcastUser(Arc<AtomicUsize>);

impl Drop for BroadcastUser {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PeerBroadcast {
    pub fn new(room: &RoomId, identity: PeerId, now: Instant) -> Option<PeerBroadcast> {
        let namespace = naming::peer_namespace(room, &identity);
        let (mut writer, requests, mut reader) = Tracks::new(namespace.clone()).produce();
        let catalog = OutTrack::create(&mut writer, &mut reader, CATALOG_TRACK, PRIORITY_METADATA)?;
        let init = OutTrack::create(&mut writer, &mut reader, INIT_TRACK, PRIORITY_METADATA)?;
        Some(PeerBroadcast {
            identity,
            namespace,
            writer,
            reader,
            _requests: requests,
            catalog,
            init,
            tracks: BTreeMap::new(),
            published: None,
            created: now,
            group_seq: 0,
            users: Arc::default(),
            idle_since: Some(now),
        })
    }

    pub fn has_track(&self, engine: &TrackId) -> bool {
        self.tracks.values().any(|t| &t.engine == engine)
    }

    /// A reader of one of the broadcast's tracks, with a guard counting the reader as a user.
    pub fn reader(&mut self, name: &str) -> Option<(TrackReader, BroadcastUser)> {
        let track = self.reader.get_track_reader(&self.namespace, name)?;
        self.users.fetch_add(1, Ordering::AcqRel);
        self.idle_since = None;
        Some((track, BroadcastUser(self.users.clone())))
    }

    /// How long nobody has been reading the broadcast.
    pub fn idle_for(&mut self, now: Instant) -> Duration {
        if self.users.load(Ordering::Acquire) > 0 {
            self.idle_since = None;
            return Duration::ZERO;
        }
        now.saturating_duration_since(*self.idle_since.get_or_insert(now))
    }

    /// Adds a track the engine now delivers to this session as `codec`/`params`. The caller
    /// calls [`PeerBroadcast::refresh`] once it added what it had to add: an init segment made
    /// after the first of several tracks would hold that one alone, and players such as
    /// `moq-sub` read only the first init segment.
    pub fn add_track(&mut self, id: u32, engine: TrackId, codec: Codec, params: CodecParams) {
        let name = naming::media_track_name(id);
        let kind = codec.kind();
        let priority = if kind == MediaKind::Audio { PRIORITY_AUDIO } else { PRIORITY_VIDEO };
        let Some(out) = OutTrack::create(&mut self.writer, &mut self.reader, &name, priority) else { return };
        let config = junction_cmaf::initial_config(codec, &params);
        let timescale = codecs::timescale(codec, &params);
        let decode = DecodeTimes::new(junction_cmaf::nominal_duration(codec, timescale));
        debug!(peer = %self.identity, track = %engine, id, %codec, "egress track added");
        self.tracks.insert(
            id,
            MediaTrack {
                id,
                engine,
                kind,
                params,
                out,
                config,
                timescale,
                sequence: 0,
                clock: None,
                decode,
                group_start_dts: 0,
                pending_group: None,
            },
        );
    }

    pub fn remove_track(&mut self, engine: &TrackId, now: Instant) {
        let Some(id) = self.tracks.values().find(|t| &t.engine == engine).map(|t| t.id) else { return };
        // Dropping the track's writer ends it for its subscribers (PUBLISH_DONE).
        self.tracks.remove(&id);
        self.writer.remove(&self.namespace, naming::media_track_name(id));
        debug!(peer = %self.identity, track = %engine, id, "egress track removed");
        self.refresh(now);
    }

    /// Publishes a new init segment and catalog when the set of ready tracks changed and either
    /// every track is ready or the grace period is over.
    pub fn refresh(&mut self, now: Instant) {
        let ready: Vec<(u32, TrackCodec)> =
            self.tracks.values().filter_map(|t| t.config.clone().map(|c| (t.id, c))).collect();
        if self.published.as_ref() == Some(&ready) {
            return;
        }
        let all_ready = ready.len() == self.tracks.len();
        let waited = now.saturating_duration_since(self.created) >= INIT_GRACE;
        if ready.is_empty() && !(self.published.is_some() && all_ready) {
            return;
        }
        if !all_ready && !waited {
            return;
        }
        let init_tracks: Vec<InitTrack> = ready
            .iter()
            .map(|(id, codec)| InitTrack {
                id: *id,
                timescale: self.tracks.get(id).map_or(90_000, |t| t.timescale),
                codec: codec.clone(),
                defaults: SampleDefaults::default(),
            })
            .collect();
        let init = match build_init(&init_tracks) {
            Ok(init) => init,
            Err(err) => {
                debug!(peer = %self.identity, "cannot build init segment: {err}");
                return;
            }
        };
        let entries: Vec<CatalogEntry> = init_tracks.iter().map(|t| self.catalog_entry(t)).collect();
        let _ = self.init.publish_single(init);
        let _ = self.catalog.publish_single(catalog_json(&entries, None));
        debug!(peer = %self.identity, tracks = ready.len(), "published init segment and catalog");
        self.published = Some(ready);
    }

    fn catalog_entry(&self, track: &InitTrack) -> CatalogEntry {
        let (width, height) = track
            .codec
            .dimensions()
            .map_or((None, None), |(width, height)| (Some(u32::from(width)), Some(u32::from(height))));
        let (sample_rate, channels) = match &track.codec {
            TrackCodec::Aac { sample_rate, channels, .. } => (Some(*sample_rate), Some((*channels).min(255) as u8)),
            TrackCodec::Opus { channels, .. } => (Some(48_000), Some((*channels).min(255) as u8)),
            _ => (None, None),
        };
        CatalogEntry {
            namespace: naming::namespace_path(&self.namespace),
            name: naming::media_track_name(track.id),
            kind: track.codec.codec().kind(),
            codec: track.codec.codec_string(),
            width,
            height,
            sample_rate,
            channels,
        }
    }

    /// Muxes one frame of `engine` into its track.
    pub fn on_frame(&mut self, engine: &TrackId, frame: MediaFrame, now: Instant) {
        let Some(id) = self.tracks.values().find(|t| &t.engine == engine).map(|t| t.id) else { return };
        let has_video = self.tracks.values().any(|t| t.kind == MediaKind::Video);
        let config_changed = match self.tracks.get_mut(&id) {
            Some(track) if track.kind == MediaKind::Video => track.update_video_config(&frame),
            _ => false,
        };
        if config_changed {
            self.refresh(now);
        }
        let Some(track) = self.tracks.get(&id) else { return };
        if track.config.is_none() {
            trace!(peer = %self.identity, id, "frame before the track's decoder configuration: dropped");
            return;
        }
        let (dts, pts) = self.sample_times(id, &frame);
        let Some(track) = self.tracks.get_mut(&id) else { return };

        // Groups: video at keyframes; audio with the peer's video, or every second without video.
        let new_group = match track.kind {
            MediaKind::Video => frame.keyframe.then(|| {
                self.group_seq += 1;
                self.group_seq
            }),
            MediaKind::Audio => match track.pending_group.take() {
                Some(group) => Some(group),
                None if !track.out.has_open_group()
                    || (!has_video && dts.saturating_sub(track.group_start_dts) >= u64::from(track.timescale)) =>
                {
                    self.group_seq += 1;
                    Some(self.group_seq)
                }
                None => None,
            },
        };
        if let Some(group) = new_group {
            if track.out.start_group(group).is_ok() {
                track.group_start_dts = dts;
            }
            if track.kind == MediaKind::Video {
                for other in self.tracks.values_mut().filter(|t| t.kind == MediaKind::Audio) {
                    other.pending_group = Some(group);
                }
            }
        }
        let Some(track) = self.tracks.get_mut(&id) else { return };
        if !track.out.has_open_group() {
            trace!(peer = %self.identity, id, "video frame before a keyframe: dropped");
            return;
        }
        track.write_sample(frame, dts, pts);
    }

    /// The frame's (decode, presentation) time on the broadcast's timeline. Frames arrive in
    /// decode order stamped with presentation times; when those go backwards (B-frames) the
    /// decode time keeps increasing and the sample carries a negative composition offset.
    fn sample_times(&mut self, id: u32, frame: &MediaFrame) -> (u64, u64) {
        let created = self.created;
        let Some(track) = self.tracks.get_mut(&id) else { return (0, 0) };
        let ticks = frame.time.rebase(track.timescale).ticks;
        let clock = *track.clock.get_or_insert_with(|| {
            let since = frame.arrival.saturating_duration_since(created);
            let base = (since.as_micros() as u64).saturating_mul(u64::from(track.timescale)) / 1_000_000;
            TrackClock { first_ticks: ticks, base }
        });
        let pts = clock.base.saturating_add(ticks.saturating_sub(clock.first_ticks));
        (track.decode.next(pts), pts)
    }
}

impl MediaTrack {
    /// Takes what a keyframe says (an H.264 SPS/PPS, a VP8/VP9 frame header, an AV1 sequence
    /// header) as the track's configuration; true when it changed.
    fn update_video_config(&mut self, frame: &MediaFrame) -> bool {
        if !frame.keyframe {
            return false;
        }
        let Some(config) = codecs::video_config(frame.codec, &frame.payload, &self.params) else { return false };
        if self.config.as_ref() == Some(&config) {
            return false;
        }
        self.config = Some(config);
        true
    }

    fn write_sample(&mut self, frame: MediaFrame, dts: u64, pts: u64) {
        let payload = junction_cmaf::sample_payload(frame.codec, frame.payload);
        self.sequence = self.sequence.wrapping_add(1);
        let sample = FragmentSample::presented(dts, pts, self.decode.duration(), frame.keyframe);
        let header = match fragment_header(self.id, self.sequence, sample, payload.len()) {
            Ok(header) => header,
            Err(err) => {
                debug!(id = self.id, "cannot frame a sample: {err}");
                return;
            }
        };
        if let Err(err) = self.out.write_object(&[&header, &payload]) {
            trace!(id = self.id, "object not written: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use junction_core::h264;
    use junction_core::{MediaTime, TrackId};
    use moq_transport::serve::{SubgroupsReader, TrackReaderMode};

    use super::*;
    use junction_cmaf::{ParsedTrack, parse_fragment, parse_init};

    fn video(ticks: u64, keyframe: bool, at: Instant) -> MediaFrame {
        junction_cmaf::fixtures::h264_frame(ticks, keyframe, at)
    }

    fn opus(ticks: u64, at: Instant) -> MediaFrame {
        MediaFrame::audio(Codec::Opus, MediaTime::new(ticks, 48_000), at, Bytes::from_static(&[0xfc, 0xff, 0xfe]))
    }

    async fn groups(broadcast: &mut PeerBroadcast, name: &str) -> SubgroupsReader {
        let (track, _user) = broadcast.reader(name).unwrap();
        let TrackReaderMode::Subgroups(groups) = track.mode().await.unwrap() else { panic!("subgroups") };
        groups
    }

    /// (group id, objects) of every group available now.
    async fn drain(groups: &mut SubgroupsReader) -> Vec<(u64, Vec<Bytes>)> {
        let mut out = Vec::new();
        let wait = Duration::from_millis(30);
        while let Ok(Ok(Some(mut group))) = tokio::time::timeout(wait, groups.next()).await {
            let mut objects = Vec::new();
            while let Ok(Ok(Some(object))) = tokio::time::timeout(wait, group.read_next()).await {
                objects.push(object);
            }
            out.push((group.group_id, objects));
        }
        out
    }

    #[tokio::test]
    async fn frames_become_cmaf_objects_grouped_at_keyframes() {
        let room = RoomId::new("lobby").unwrap();
        let t0 = Instant::now();
        let mut broadcast = PeerBroadcast::new(&room, PeerId::new("cam").unwrap(), t0).unwrap();
        let (video_id, audio_id) = (TrackId::generate(), TrackId::generate());
        // Audio first (a browser publishes its microphone before its camera): the init segment
        // still waits for the video's configuration instead of going out with audio alone.
        broadcast.add_track(2, audio_id.clone(), Codec::Opus, CodecParams::for_codec(Codec::Opus));
        broadcast.add_track(1, video_id.clone(), Codec::H264, CodecParams::for_codec(Codec::H264));
        broadcast.refresh(t0);
        let mut init = groups(&mut broadcast, INIT_TRACK).await;
        let mut catalog = groups(&mut broadcast, CATALOG_TRACK).await;
        let mut video_groups = groups(&mut broadcast, "1.m4s").await;
        let mut audio_groups = groups(&mut broadcast, "2.m4s").await;

        // Before the first keyframe: no decoder configuration, no init segment, no video.
        broadcast.on_frame(&video_id, video(0, false, t0), t0);
        broadcast.on_frame(&audio_id, opus(0, t0), t0);
        assert!(drain(&mut init).await.is_empty());

        // A keyframe carries SPS/PPS: the init segment lists both tracks.
        let ms = |n: u64| t0 + Duration::from_millis(n);
        broadcast.on_frame(&video_id, video(3_000, true, ms(33)), ms(33));
        broadcast.on_frame(&audio_id, opus(960, ms(20)), ms(40));
        broadcast.on_frame(&video_id, video(6_000, false, ms(66)), ms(66));
        broadcast.on_frame(&video_id, video(4_500, false, ms(70)), ms(70)); // a B-frame
        broadcast.on_frame(&video_id, video(9_000, true, ms(100)), ms(100));
        broadcast.on_frame(&audio_id, opus(1_920, ms(40)), ms(110));

        let inits = drain(&mut init).await;
        assert_eq!(inits.len(), 1, "one init segment once every track was ready");
        let tracks = parse_init(&inits[0].1[0]).unwrap();
        let ParsedTrack::Supported(video_track) = &tracks[0] else { panic!("{tracks:?}") };
        assert!(matches!(video_track.codec, TrackCodec::H264 { width: 320, height: 240, .. }));
        assert!(matches!(&tracks[1], ParsedTrack::Supported(t) if t.codec.codec() == Codec::Opus));
        let catalogs = drain(&mut catalog).await;
        let json: serde_json::Value = serde_json::from_slice(&catalogs[0].1[0]).unwrap();
        assert_eq!(json["tracks"][0]["name"], "1.m4s");
        assert_eq!(json["tracks"][1]["selectionParams"]["codec"], "opus");

        // Video: a group per keyframe, a keyframe first in each; the pre-keyframe frame was dropped.
        let video_groups = drain(&mut video_groups).await;
        let shape: Vec<(u64, usize)> = video_groups.iter().map(|(g, objects)| (*g, objects.len())).collect();
        // (Group 1 is the audio's: it started before any video keyframe.)
        assert_eq!(shape, vec![(2, 3), (3, 1)]);
        let samples: Vec<_> = video_groups
            .iter()
            .flat_map(|(_, objects)| objects.iter())
            .map(|object| parse_fragment(object, video_track, 1024).unwrap().remove(0))
            .collect();
        assert_eq!(samples.iter().map(|s| s.keyframe).collect::<Vec<_>>(), vec![true, false, false, true]);
        let dts: Vec<u64> = samples.iter().map(|s| s.decode_time).collect();
        assert!(dts.windows(2).all(|w| w[0] < w[1]), "decode times increase: {dts:?}");
        let pts: Vec<i64> = samples.iter().map(|s| s.decode_time as i64 + s.composition_offset).collect();
        assert_eq!(pts[2] - pts[0], 1_500, "the B-frame keeps its presentation time: {pts:?}");
        // Samples are AVCC (length-prefixed) with the SPS/PPS kept in band.
        let nals = h264::avcc_nals(&samples[0].data, 4).unwrap();
        assert_eq!(nals.iter().map(|n| h264::nal_type(n)).collect::<Vec<_>>(), vec![7, 8, 5]);

        // Audio groups follow the video's once there is video: 2 and 3 begin with its keyframes.
        let audio = drain(&mut audio_groups).await;
        assert_eq!(audio.iter().map(|(g, _)| *g).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_track_that_never_gets_ready_is_left_out_after_the_grace_period() {
        let room = RoomId::new("lobby").unwrap();
        let t0 = Instant::now();
        let mut broadcast = PeerBroadcast::new(&room, PeerId::new("cam").unwrap(), t0).unwrap();
        broadcast.add_track(1, TrackId::generate(), Codec::H264, CodecParams::for_codec(Codec::H264));
        broadcast.add_track(2, TrackId::generate(), Codec::Opus, CodecParams::for_codec(Codec::Opus));
        let mut init = groups(&mut broadcast, INIT_TRACK).await;
        broadcast.refresh(t0 + Duration::from_secs(1));
        assert!(drain(&mut init).await.is_empty());
        broadcast.refresh(t0 + INIT_GRACE);
        let inits = drain(&mut init).await;
        let tracks = parse_init(&inits[0].1[0]).unwrap();
        assert_eq!(tracks.iter().map(|t| t.id()).collect::<Vec<_>>(), vec![2], "audio only until video is ready");
    }
}

//! The publish side of a session: a namespace a MoQ publisher announced under the room, read as
//! `moq-pub` writes it — `.catalog`, the init segment it names, and one CMAF track per media
//! track — and published into the room as tracks of the session's peer. Each fragment becomes
//! engine frames: H.264 in Annex B with SPS/PPS before every IDR, AAC as raw access units with
//! the AudioSpecificConfig in the track parameters, Opus packets as they are.
//!
//! A namespace without a CMAF catalog (a clock, application data) is not media: it is only
//! relayed to MoQ subscribers (see `hub`).
//!
//! What a publisher sends is bounded before it is parsed (the `[moq]` limits): the catalog and
//! the init segment in bytes, the tracks read from a catalog, each fragment in bytes and in
//! samples (a larger fragment is skipped). Each track's codec parameters are validated
//! ([`CodecParams::validate`](junction_core::CodecParams::validate)) before it is published: a
//! bad one ends the publisher's session with PROTOCOL_VIOLATION.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::h264::{self, AvcConfig};
use junction_core::{
    CodecConfigError, ContractError, MediaFrame, MediaKind, MediaTime, PublishRequest, TrackId, TrackSource,
};
use junction_engine::TrackPublisher;
use moq_transport::coding::TrackNamespace;
use moq_transport::serve::{ServeError, SubgroupReader, TrackReader, TrackReaderMode, TracksReader};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::codecs;
use crate::config::MoqConfig;
use crate::naming::{CATALOG_TRACK, INIT_TRACK, PeerTrack};
use junction_cmaf::{CmafError, InitTrack, ParsedTrack, TrackCodec, parse_fragment, parse_init};

/// How long the init segment may take once the catalog named it.
const INIT_WAIT: Duration = Duration::from_secs(10);

/// What an ingest task asks of the session that owns the peer's endpoint.
pub enum IngestRequest {
    Publish {
        request: PublishRequest,
        reply: oneshot::Sender<Result<TrackPublisher, ContractError>>,
    },
    Unpublish {
        track: TrackId,
    },
    /// The publisher sent what the server refuses to carry: end its session with this reason.
    Violation(String),
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the namespace has no {track} track: {source}")]
    NoTrack { track: &'static str, source: ServeError },
    #[error("the catalog is not a CMAF catalog: {0}")]
    NotCatalog(String),
    #[error("the init segment {name} cannot be read: {source}")]
    Init { name: String, source: CmafError },
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("the session is gone")]
    SessionGone,
    #[error("the room refused the track: {0}")]
    Refused(ContractError),
    #[error("track {track}: {source}")]
    BadCodec { track: String, source: CodecConfigError },
    #[error("the {track} object is {size} bytes, over the {limit}-byte limit")]
    TooLarge { track: String, size: usize, limit: usize },
    #[error("track read failed: {0}")]
    Serve(#[from] ServeError),
}

impl IngestError {
    /// Whether the publisher broke the rules (rather than the namespace not being media): its
    /// session is ended.
    pub fn is_violation(&self) -> bool {
        matches!(self, IngestError::BadCodec { .. })
    }
}

/// An object of a track, or its declared size when that is over `max` bytes (then it is not
/// read; the publisher's chunks of it are dropped with the group).
enum Object {
    Read(Bytes),
    TooLarge(usize),
}

/// Reads the next object of `group`, if there is one, without concatenating more than `max`
/// bytes of it.
async fn next_object(group: &mut SubgroupReader, max: usize) -> Result<Option<Object>, ServeError> {
    let Some(mut object) = group.next().await? else { return Ok(None) };
    if object.info.size > max {
        return Ok(Some(Object::TooLarge(object.info.size)));
    }
    let mut data = Vec::with_capacity(object.info.size);
    while let Some(chunk) = object.read().await? {
        if data.len() + chunk.len() > max {
            return Ok(Some(Object::TooLarge(data.len() + chunk.len())));
        }
        data.extend_from_slice(&chunk);
    }
    Ok(Some(Object::Read(Bytes::from(data))))
}

/// Reads the first object of the first group `track` delivers, refusing one over `max` bytes.
async fn first_object(track: TrackReader, name: &str, max: usize) -> Result<Bytes, IngestError> {
    let TrackReaderMode::Subgroups(mut groups) = track.mode().await? else {
        return Err(ServeError::Mode.into());
    };
    let mut group = groups.next().await?.ok_or(ServeError::Done)?;
    match next_object(&mut group, max).await?.ok_or(ServeError::Done)? {
        Object::Read(bytes) => Ok(bytes),
        Object::TooLarge(size) => Err(IngestError::TooLarge { track: name.to_owned(), size, limit: max }),
    }
}

/// Ingests one announced namespace until it ends.
pub async fn run(
    namespace: TrackNamespace,
    label: String,
    mut tracks: TracksReader,
    requests: mpsc::Sender<IngestRequest>,
    limits: Arc<MoqConfig>,
) -> Result<(), IngestError> {
    let no_track = |track| {
        move |err| match err {
            IngestError::Serve(source) => IngestError::NoTrack { track, source },
            other => other,
        }
    };
    let catalog_track = tracks.subscribe(namespace.clone(), CATALOG_TRACK).ok_or(IngestError::SessionGone)?;
    let catalog =
        first_object(catalog_track, CATALOG_TRACK, limits.max_init_bytes).await.map_err(no_track(CATALOG_TRACK))?;
    let (catalog, init_name) = read_catalog(&catalog)?;
    let init_track = tracks.subscribe(namespace.clone(), init_name.as_str()).ok_or(IngestError::SessionGone)?;
    let init = tokio::time::timeout(INIT_WAIT, first_object(init_track, &init_name, limits.max_init_bytes))
        .await
        .map_err(|_| IngestError::Timeout(init_name.clone()))?
        .map_err(no_track(INIT_TRACK))?;
    let parsed = parse_init(&init).map_err(|source| IngestError::Init { name: init_name.clone(), source })?;

    let mut pumps = tokio::task::JoinSet::new();
    let mut published = Vec::new();
    if catalog.tracks.len() > limits.max_tracks_per_namespace {
        warn!(namespace = %namespace, tracks = catalog.tracks.len(), limit = limits.max_tracks_per_namespace, "catalog lists more tracks than the limit: the first ones are ingested");
    }
    for (index, entry) in catalog.tracks.iter().enumerate().take(limits.max_tracks_per_namespace) {
        let Some(found) = trak_for(index, &entry.name, &parsed) else {
            warn!(namespace = %namespace, track = %entry.name, "catalog track has no trak in the init segment");
            continue;
        };
        let init_track = match found {
            ParsedTrack::Supported(track) => track.clone(),
            ParsedTrack::Unsupported { sample_entry, .. } => {
                info!(namespace = %namespace, track = %entry.name, %sample_entry, "codec not supported: not ingested");
                continue;
            }
        };
        let codec = init_track.codec.codec();
        let source = if codec.kind() == MediaKind::Video { TrackSource::Camera } else { TrackSource::Microphone };
        let params = codecs::publish_params(&init_track);
        params.validate(codec).map_err(|source| IngestError::BadCodec { track: entry.name.clone(), source })?;
        let request =
            PublishRequest::new(format!("{label}/{}", entry.name), codec).with_source(source).with_params(params);
        let (reply, answer) = oneshot::channel();
        requests.send(IngestRequest::Publish { request, reply }).await.map_err(|_| IngestError::SessionGone)?;
        let publisher = answer.await.map_err(|_| IngestError::SessionGone)?.map_err(IngestError::Refused)?;
        info!(namespace = %namespace, track = %entry.name, engine = %publisher.id(), %codec, "ingesting MoQ track");
        published.push(Unpublisher { track: publisher.id().clone(), requests: requests.clone() });
        let media = tracks.subscribe(namespace.clone(), entry.name.as_str()).ok_or(IngestError::SessionGone)?;
        pumps.spawn(pump(media, init_track, publisher, limits.clone()));
    }
    while let Some(result) = pumps.join_next().await {
        match result {
            Ok(Err(err)) => debug!(namespace = %namespace, "ingested track ended: {err}"),
            Err(err) => warn!(namespace = %namespace, "ingest task failed: {err}"),
            Ok(Ok(())) => {}
        }
    }
    drop(published);
    Ok(())
}

/// The catalog a publisher's `.catalog` track carries, and the name of its init segment track.
pub(crate) fn read_catalog(object: &[u8]) -> Result<(moq_catalog::Root, String), IngestError> {
    let catalog: moq_catalog::Root =
        serde_json::from_slice(object).map_err(|err| IngestError::NotCatalog(err.to_string()))?;
    // moq-sub's rule: the init segment is the one the first track names; catalog track i is the
    // init segment's trak i (unless the name says `<trak id>.m4s`).
    let first = catalog.tracks.first().ok_or_else(|| IngestError::NotCatalog("it lists no tracks".into()))?;
    let init_name = first.init_track.clone().unwrap_or_else(|| INIT_TRACK.to_owned());
    Ok((catalog, init_name))
}

/// The init segment's trak for catalog track `index`, named `name`.
pub(crate) fn trak_for<'a>(index: usize, name: &str, parsed: &'a [ParsedTrack]) -> Option<&'a ParsedTrack> {
    let by_name = match PeerTrack::parse(name) {
        Some(PeerTrack::Media(id)) => parsed.iter().find(|t| t.id() == id),
        _ => None,
    };
    by_name.or_else(|| parsed.get(index))
}

/// Unpublishes an ingested track when the ingest ends, however it ends.
struct Unpublisher {
    track: TrackId,
    requests: mpsc::Sender<IngestRequest>,
}

impl Drop for Unpublisher {
    fn drop(&mut self) {
        let _ = self.requests.try_send(IngestRequest::Unpublish { track: self.track.clone() });
    }
}

/// Reads one media track's fragments into engine frames, starting at the newest group.
async fn pump(
    track: TrackReader,
    init: InitTrack,
    publisher: TrackPublisher,
    limits: Arc<MoqConfig>,
) -> Result<(), IngestError> {
    let TrackReaderMode::Subgroups(mut groups) = track.mode().await? else {
        return Err(IngestError::Serve(ServeError::Mode));
    };
    let avc = match &init.codec {
        TrackCodec::H264 { avc, .. } => Some(avc.clone()),
        _ => None,
    };
    let mut started = false;
    let mut warned = false;
    while let Some(mut group) = groups.next().await? {
        // A new subscription replays the publisher's recent groups; live media starts at the
        // newest one.
        if !started {
            if groups.latest().is_some_and(|(newest, _)| group.group_id < newest) {
                continue;
            }
            started = true;
        }
        while let Some(object) = next_object(&mut group, limits.max_fragment_bytes).await? {
            let object = match object {
                Object::Read(object) => object,
                Object::TooLarge(size) => {
                    if !warned {
                        warn!(
                            track = init.id,
                            size,
                            limit = limits.max_fragment_bytes,
                            "CMAF fragment over the size limit skipped"
                        );
                        warned = true;
                    }
                    continue;
                }
            };
            let frames = match fragment_frames(&object, &init, avc.as_ref(), limits.max_samples_per_fragment) {
                Ok(frames) => frames,
                Err(err) => {
                    if !warned {
                        warn!(track = init.id, "unreadable CMAF fragment skipped: {err}");
                        warned = true;
                    }
                    continue;
                }
            };
            for frame in frames {
                if publisher.send(frame).is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// The engine frames of one CMAF fragment (samples whose data cannot be read are dropped).
pub(crate) fn fragment_frames(
    object: &Bytes,
    init: &InitTrack,
    avc: Option<&AvcConfig>,
    max_samples: usize,
) -> Result<Vec<MediaFrame>, CmafError> {
    let samples = parse_fragment(object, init, max_samples)?;
    Ok(samples
        .into_iter()
        .filter_map(|sample| {
            let pts = sample.decode_time.saturating_add_signed(sample.composition_offset);
            to_frame(init, avc, pts, sample.keyframe, sample.data)
        })
        .collect())
}

/// One CMAF sample as an engine frame.
fn to_frame(init: &InitTrack, avc: Option<&AvcConfig>, pts: u64, keyframe: bool, data: Bytes) -> Option<MediaFrame> {
    let codec = init.codec.codec();
    let time = MediaTime::new(pts, init.timescale);
    let arrival = Instant::now();
    match avc {
        Some(avc) => {
            let annexb = h264::avcc_to_annexb_frame(&data, avc).ok()?;
            let keyframe = keyframe || h264::is_keyframe(&annexb);
            Some(MediaFrame::video(codec, time.rebase(90_000), keyframe, arrival, annexb))
        }
        None if codec.kind() == MediaKind::Video => {
            Some(MediaFrame::video(codec, time.rebase(90_000), keyframe, arrival, data))
        }
        None => {
            let rate = match &init.codec {
                TrackCodec::Aac { sample_rate, .. } if *sample_rate > 0 => *sample_rate,
                _ => 48_000,
            };
            Some(MediaFrame::audio(codec, time.rebase(rate), arrival, data))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_cmaf::SampleDefaults;

    #[test]
    fn avcc_samples_become_annexb_keyframes_with_parameter_sets() {
        let sps: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda];
        let pps: &[u8] = &[0x68, 0xce, 0x0f, 0xc8];
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x21];
        let avc = AvcConfig::from_parameter_sets(sps, pps).unwrap();
        let init = InitTrack {
            id: 1,
            timescale: 12_800,
            codec: TrackCodec::H264 { avc: avc.clone(), width: 320, height: 240 },
            defaults: SampleDefaults::default(),
        };
        let frame = to_frame(&init, Some(&avc), 12_800, false, h264::to_avcc([idr])).unwrap();
        assert!(frame.keyframe, "an IDR is a keyframe whatever the sample flags say");
        assert_eq!(frame.time, MediaTime::new(90_000, 90_000));
        let nals: Vec<&[u8]> = h264::annexb_nals(&frame.payload).collect();
        assert_eq!(nals, vec![sps, pps, idr]);
        // A sample whose length prefix lies is dropped, not a panic.
        assert!(to_frame(&init, Some(&avc), 0, true, Bytes::from_static(&[0, 0, 0, 99, 1])).is_none());
    }
}

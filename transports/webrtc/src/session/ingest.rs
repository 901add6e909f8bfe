//! Media the peer sends: each receiving m-line becomes a published track the first time media
//! arrives on it (the codec is whatever payload type the peer actually uses), simulcast rids
//! become the track's layers, and every depacketised frame becomes a [`MediaFrame`]. Keyframe
//! requests for these tracks go back to the peer as PLI (or FIR), per rid.

use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::{Codec, LayerInfo, MediaFrame, MediaTime, PublishRequest, TrackId, TrackInfo, TrackSource};
use junction_engine::{EndpointRpc, LinkQuality, TrackPublisher};
use str0m::Rtc;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind as WireKind, Mid, Rid};
use str0m::stats::MediaIngressStats;
use tracing::{debug, info, warn};

use super::h264_fixup::ParameterSets;
use super::sender_clock::SenderClock;
use super::signals::TrackLabel;
use crate::codec;

/// Least time between two keyframe requests this server itself sends for one layer (after loss).
const LOSS_KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// A receiving m-line.
pub(crate) struct IngestLine {
    pub(crate) mid: Mid,
    pub(crate) kind: WireKind,
    /// Simulcast layers, lowest first; empty without simulcast.
    pub(crate) layers: Vec<LayerInfo>,
    published: Option<Published>,
    /// Publishing was refused (no grant, limits): media on this line is dropped.
    refused: bool,
    /// Per layer: H.264 parameter sets and the last keyframe request sent after a loss.
    streams: Vec<StreamState>,
}

#[derive(Default)]
struct StreamState {
    parameter_sets: ParameterSets,
    asked_at: Option<Instant>,
}

struct Published {
    publisher: TrackPublisher,
    codec: Codec,
    clock_rate: u32,
}

impl IngestLine {
    pub(crate) fn new(mid: Mid, kind: WireKind, layers: Vec<LayerInfo>) -> Self {
        let streams = (0..layers.len().max(1)).map(|_| StreamState::default()).collect();
        Self { mid, kind, layers, published: None, refused: false, streams }
    }

    fn layer_of(&self, rid: Option<Rid>) -> Option<usize> {
        match rid {
            _ if self.layers.is_empty() => Some(0),
            Some(rid) => self.layers.iter().position(|l| l.rid == rid.to_string()),
            None => None,
        }
    }

    fn rid_of(&self, layer: u8) -> Option<Rid> {
        self.layers.get(layer as usize).map(|l| Rid::from(l.rid.as_str()))
    }
}

/// Every receiving m-line of a session.
#[derive(Default)]
pub(crate) struct Ingest {
    lines: Vec<IngestLine>,
    /// Whether this session may publish at all (WHEP viewers may not).
    enabled: bool,
    /// The peer's names and sources for its m-lines, when its signalling gives them.
    labels: Vec<TrackLabel>,
    /// Tracks published since the last [`Ingest::take_published`].
    fresh: Vec<(Mid, TrackInfo)>,
    /// The peer's capture clock: each frame's `captured`.
    clock: SenderClock,
}

impl Ingest {
    pub(crate) fn new(lines: Vec<IngestLine>, enabled: bool) -> Self {
        Self { lines, enabled, labels: Vec::new(), fresh: Vec::new(), clock: SenderClock::default() }
    }

    /// Names and sources for the tracks of the peer's m-lines (newer labels win).
    pub(crate) fn label(&mut self, labels: Vec<TrackLabel>) {
        for label in labels {
            self.labels.retain(|l| l.mid != label.mid);
            self.labels.push(label);
        }
    }

    /// Tracks published since the last call, with the m-line each comes from.
    pub(crate) fn take_published(&mut self) -> Vec<(Mid, TrackInfo)> {
        std::mem::take(&mut self.fresh)
    }

    pub(crate) fn has(&self, mid: Mid) -> bool {
        self.lines.iter().any(|l| l.mid == mid)
    }

    pub(crate) fn add(&mut self, line: IngestLine) {
        self.lines.push(line);
    }

    /// The peer stopped sending on `mid` (renegotiated it away): its track is unpublished.
    pub(crate) fn stop(&mut self, mid: Mid, rpc: &EndpointRpc) {
        if let Some(at) = self.lines.iter().position(|l| l.mid == mid) {
            let line = self.lines.remove(at);
            if let Some(published) = line.published {
                let _ = rpc.unpublish(published.publisher.id());
            }
        }
    }

    /// One depacketised frame from the peer.
    pub(crate) fn on_media(&mut self, rtc: &mut Rtc, rpc: &EndpointRpc, data: MediaData) {
        if !self.enabled {
            return;
        }
        let Some(line) = self.lines.iter_mut().find(|l| l.mid == data.mid) else { return };
        if line.refused {
            return;
        }
        let Some(codec) = codec::from_wire(data.params.spec().codec) else {
            debug!(mid = %data.mid, codec = ?data.params.spec().codec, "media in a codec the engine does not carry");
            return;
        };
        let Some(layer) = line.layer_of(data.rid) else {
            debug!(mid = %data.mid, rid = ?data.rid, "media on an rid that was not announced");
            return;
        };
        if line.published.as_ref().is_none_or(|p| p.codec != codec) {
            let label = self.labels.iter().find(|l| l.mid == line.mid.to_string());
            publish(line, rpc, codec, &data, label);
            if let Some(published) = &line.published {
                self.fresh.push((line.mid, published.publisher.info()));
            }
        }
        let Some(published) = &line.published else { return };

        let payload = Bytes::copy_from_slice(&data.data);
        let stream = &mut line.streams[layer];
        let (payload, keyframe) = match codec {
            Codec::H264 => {
                let fixed = stream.parameter_sets.fix(payload);
                (fixed.payload, fixed.keyframe)
            }
            _ if codec.kind() == junction_core::MediaKind::Audio => (payload, true),
            _ => (payload, data.is_keyframe()),
        };
        let time = MediaTime::new(data.time.numer(), data.time.denom());
        let captured = self.clock.captured(&data);
        let arrival = data.network_time;
        let frame = MediaFrame { codec, time, keyframe, layer: layer as u8, arrival, captured, payload };
        if published.publisher.send(frame).is_err() {
            // Unpublished under us (the room is closing): the session ends with it shortly.
            return;
        }
        if !data.contiguous && line.kind == WireKind::Video {
            let now = data.network_time;
            if stream.asked_at.is_none_or(|at| now.saturating_duration_since(at) >= LOSS_KEYFRAME_INTERVAL) {
                stream.asked_at = Some(now);
                let rid = line.rid_of(layer as u8);
                request_keyframe(rtc, line.mid, rid);
            }
        }
    }

    /// str0m measured one of the peer's streams: the track's layer gets its loss and jitter,
    /// and the connection's round trip when the stream has none of its own (browsers send no
    /// RTCP XR, from which a receiver's round trip comes).
    pub(crate) fn on_stats(&self, stats: &MediaIngressStats, connection_rtt: Option<Duration>) {
        let Some(line) = self.lines.iter().find(|l| l.mid == stats.mid) else { return };
        let (Some(published), Some(layer)) = (&line.published, line.layer_of(stats.rid)) else { return };
        let quality = link_quality(stats.loss, stats.rtt.or(connection_rtt), Some(stats.jitter), published.clock_rate);
        published.publisher.report_link(layer as u8, quality);
    }

    /// A subscriber needs a keyframe of one of this peer's tracks.
    pub(crate) fn on_keyframe_request(&mut self, rtc: &mut Rtc, track: &TrackId, layer: u8) {
        let Some(line) = self.lines.iter().find(|l| l.published.as_ref().is_some_and(|p| p.publisher.id() == track))
        else {
            return;
        };
        request_keyframe(rtc, line.mid, line.rid_of(layer));
    }

    /// The most the subscribers of `track` can take: told to the peer as REMB, which encoders
    /// that negotiated it use as a ceiling (simulcast layers are chosen per subscriber instead).
    pub(crate) fn on_bitrate_hint(&mut self, rtc: &mut Rtc, track: &TrackId, bps: u64) {
        let Some(line) = self.lines.iter().find(|l| l.published.as_ref().is_some_and(|p| p.publisher.id() == track))
        else {
            return;
        };
        if !line.layers.is_empty() {
            return;
        }
        if let Some(stream) = rtc.direct_api().stream_rx_by_mid(line.mid, None) {
            stream.request_remb(str0m::bwe::Bitrate::bps(bps));
        }
    }
}

fn publish(line: &mut IngestLine, rpc: &EndpointRpc, codec: Codec, data: &MediaData, label: Option<&TrackLabel>) {
    if let Some(old) = line.published.take() {
        info!(mid = %line.mid, from = %old.codec, to = %codec, "publisher changed codec; republishing the track");
        let _ = rpc.unpublish(old.publisher.id());
    }
    let source = match (label, line.kind) {
        (Some(label), _) => label.source,
        (None, WireKind::Audio) => TrackSource::Microphone,
        (None, WireKind::Video) => TrackSource::Camera,
    };
    let name = label.map_or_else(|| line.mid.to_string(), |l| l.name.clone());
    let request = PublishRequest::new(name, codec)
        .with_source(source)
        .with_params(codec::params_of(&data.params))
        .with_layers(line.layers.clone());
    match rpc.publish(request) {
        Ok(publisher) => {
            info!(mid = %line.mid, track = %publisher.id(), %codec, layers = line.layers.len(), "publishing");
            let clock_rate = data.params.spec().clock_rate.get();
            line.published = Some(Published { publisher, codec, clock_rate });
        }
        Err(err) => {
            warn!(mid = %line.mid, %codec, "cannot publish: {err}");
            line.refused = true;
        }
    }
}

/// A stream's link quality from str0m's figures: loss as a fraction, the round trip, and RTCP
/// jitter in RTP timestamp units of `clock_rate` (converted to milliseconds).
pub(crate) fn link_quality(
    loss: Option<f32>,
    rtt: Option<Duration>,
    jitter: Option<u32>,
    clock_rate: u32,
) -> LinkQuality {
    LinkQuality {
        loss,
        rtt_ms: rtt.map(|rtt| rtt.as_secs_f32() * 1000.0),
        jitter_ms: jitter.filter(|_| clock_rate > 0).map(|j| j as f32 * 1000.0 / clock_rate as f32),
    }
}

/// Asks the peer for a keyframe: PLI where negotiated, else FIR.
fn request_keyframe(rtc: &mut Rtc, mid: Mid, rid: Option<Rid>) {
    let Some(mut writer) = rtc.writer(mid) else { return };
    let kind = if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
        KeyframeRequestKind::Pli
    } else if writer.is_request_keyframe_possible(KeyframeRequestKind::Fir) {
        KeyframeRequestKind::Fir
    } else {
        return;
    };
    if let Err(err) = writer.request_keyframe(rid, kind) {
        // Before the first packet of that stream there is nothing to ask yet.
        debug!(%mid, ?rid, "keyframe request not sent: {err}");
    }
}

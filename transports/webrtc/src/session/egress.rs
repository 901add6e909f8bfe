//! Media the peer receives: each sending m-line carries at most one subscribed track at a time
//! (which one is the policy's choice: `viewer.rs`, `room.rs`). Frames of that track are written
//! with the payload type negotiated for their codec and a timestamp kept continuous across
//! source changes; VP8 and H.264 frames as the packets every subscriber of the frame shares
//! (`fanout_packets.rs`), numbered by this m-line's stream, with its own VP8 picture ids; other
//! codecs and audio through str0m's frame writer. The peer's PLI/FIR go to the engine as
//! keyframe requests; its bandwidth estimate picks simulcast layers and is reported to the
//! publishers.
//!
//! Video is forwarded unpaced by default (`webrtc.pace_video`), as mediasoup and Janus do: the
//! publisher's encoder already paced it, and str0m's pacer, which sends at 1.1 x the bandwidth
//! estimate, holds each keyframe for a few hundred milliseconds and a track that cannot go down
//! a layer for seconds. With pacing on, when the oldest packet the pacer holds for an m-line has
//! waited longer than `webrtc.max_send_delay_ms`, that m-line's frames are shed until the
//! backlog is back under it and a keyframe (asked for) can start the picture again. Audio is
//! never paced nor shed.

use std::time::{Duration, Instant};

use junction_core::{Codec, LayerInfo, LayerPreference, MediaFrame, MediaKind, TrackId};
use junction_engine::{EndpointMedia, EndpointRpc, SubscribedTrack};
use str0m::Rtc;
use str0m::bwe::Bitrate;
use str0m::media::{Frequency, MediaTime as WireTime, Mid, Pt};
use str0m::rtp::RtpWrite;
use str0m::stats::MediaEgressStats;
use tracing::{debug, info};

use super::simulcast::choose_layer;
use super::timeline::Timeline;
use crate::codec;
use crate::fanout_packets::{FanoutPackets, Packet};

/// Bitrate set aside for each audio m-line when sharing the estimate between video m-lines.
const AUDIO_BPS: u64 = 64_000;
/// What a single-layer video track may need: the estimator probes up to it, since such a track
/// cannot be scaled down to fit and would queue behind a lower estimate.
const UNLAYERED_VIDEO_BPS: u64 = 6_000_000;
/// The estimate used before the first one arrives.
pub(crate) const INITIAL_ESTIMATE_BPS: u64 = 1_000_000;
/// VP8 picture ids are 15 bits here (RFC 7741 §4.2, M bit set).
const VP8_PICTURE_ID_MASK: u16 = 0x7fff;

/// A sending m-line.
pub(crate) struct EgressLine {
    pub(crate) mid: Mid,
    pub(crate) kind: MediaKind,
    /// Codecs negotiated on this m-line, the peer's preference first.
    pub(crate) codecs: Vec<Codec>,
    source: Option<Source>,
    timeline: Timeline,
    /// Whether the m-line's send stream was told to be paced or not (`webrtc.pace_video`),
    /// which is done once the stream exists, and again for each source attached.
    pacing_set: bool,
    /// The VP8 picture id of the m-line's next frame (15 bits): the m-line's own sequence,
    /// written into the shared packets as str0m serialises them, continuous across sources.
    picture_id: u16,
}

struct Source {
    track: TrackId,
    /// The codec frames arrive in (the engine may transcode for this peer).
    codec: Codec,
    fmtp: Option<String>,
    layers: Vec<LayerInfo>,
    /// The simulcast layer asked for.
    layer: Option<u8>,
    /// A layer the peer chose itself, which the bandwidth estimate does not change.
    forced: Option<u8>,
    /// Payload type and clock rate chosen for `codec`.
    payload: Option<(Codec, Pt, u32)>,
    /// Video frames are held back until a keyframe: the peer could decode nothing before it.
    /// Set when the source starts and when a paced backlog is shed.
    keyframe_needed: bool,
}

impl EgressLine {
    pub(crate) fn new(mid: Mid, kind: MediaKind, codecs: Vec<Codec>) -> Self {
        Self {
            mid,
            kind,
            codecs,
            source: None,
            timeline: Timeline::default(),
            pacing_set: false,
            picture_id: rand::random::<u16>() & VP8_PICTURE_ID_MASK,
        }
    }
}

/// A change of what an m-line carries, for the signalling layer ([`crate::SessionEvent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineChange {
    Sending { mid: Mid, track: TrackId },
    Stopped { mid: Mid, track: TrackId },
}

pub(crate) struct Egress {
    lines: Vec<EgressLine>,
    changes: Vec<LineChange>,
    estimate_bps: u64,
    connected: bool,
    /// A frame's arrival from its publisher (a WebRTC publisher's: its last datagram read by
    /// the UDP driver) to its write here, audio and video apart.
    audio_latency: metrics::Histogram,
    video_latency: metrics::Histogram,
    max_send_delay: Duration,
    pace_video: bool,
    /// Video frames dropped because the pacer's backlog was too old.
    shed: metrics::Counter,
    /// Video frames packetised once for all their subscribers.
    packets: FanoutPackets,
}

impl Egress {
    pub(crate) fn new(
        lines: Vec<EgressLine>,
        SendPacing { max_send_delay, pace_video }: SendPacing,
        packets: FanoutPackets,
    ) -> Self {
        Self {
            lines,
            changes: Vec::new(),
            estimate_bps: INITIAL_ESTIMATE_BPS,
            connected: false,
            audio_latency: metrics::histogram!("junction_webrtc_forward_latency_seconds", "kind" => "audio"),
            video_latency: metrics::histogram!("junction_webrtc_forward_latency_seconds", "kind" => "video"),
            max_send_delay,
            pace_video,
            shed: metrics::counter!("junction_webrtc_video_frames_shed_total"),
            packets,
        }
    }

    /// Whether an audio m-line writes with payload type `pt`: the send queue's urgent lane
    /// takes those packets (`send_batch::Lane`).
    pub(crate) fn is_audio_pt(&self, pt: u8) -> bool {
        self.lines.iter().any(|line| {
            line.kind == MediaKind::Audio
                && line.source.as_ref().and_then(|s| s.payload).is_some_and(|(_, written, _)| *written == pt)
        })
    }

    pub(crate) fn kinds(&self) -> Vec<MediaKind> {
        self.lines.iter().map(|l| l.kind).collect()
    }

    pub(crate) fn codecs(&self, index: usize) -> &[Codec] {
        self.lines.get(index).map_or(&[], |l| &l.codecs)
    }

    pub(crate) fn source_of(&self, index: usize) -> Option<&TrackId> {
        self.lines.get(index).and_then(|l| l.source.as_ref()).map(|s| &s.track)
    }

    pub(crate) fn has_mid(&self, mid: Mid) -> bool {
        self.lines.iter().any(|l| l.mid == mid)
    }

    pub(crate) fn add_line(&mut self, line: EgressLine) -> usize {
        self.lines.push(line);
        self.lines.len() - 1
    }

    pub(crate) fn line_of(&self, mid: Mid) -> Option<usize> {
        self.lines.iter().position(|l| l.mid == mid)
    }

    /// The m-line carrying `track`.
    pub(crate) fn line_carrying(&self, track: &TrackId) -> Option<usize> {
        self.lines.iter().position(|l| l.source.as_ref().is_some_and(|s| s.track == *track))
    }

    /// An idle m-line of `kind` that negotiated `codec`.
    pub(crate) fn idle_line(&self, kind: MediaKind, codec: Codec) -> Option<usize> {
        self.lines.iter().position(|l| l.kind == kind && l.source.is_none() && l.codecs.contains(&codec))
    }

    /// Starts sending a subscribed track on m-line `index`: picks its simulcast layer from the
    /// estimate and, once connected, asks for a keyframe to start from.
    pub(crate) fn attach(
        &mut self,
        index: usize,
        subscribed: &SubscribedTrack,
        rpc: &EndpointRpc,
        media: &EndpointMedia,
    ) {
        let budget = self.video_budget_with(index);
        let Some(line) = self.lines.get_mut(index) else { return };
        let track = &subscribed.track.id;
        let layers = subscribed.track.layers.clone();
        let layer = (layers.len() > 1).then(|| choose_layer(budget, &layers, None));
        if let Some(layer) = layer {
            let _ = rpc.set_layer(track, LayerPreference::AtMost(layer));
        }
        info!(mid = %line.mid, %track, codec = %subscribed.codec, publisher = %subscribed.track.peer, ?layer, "sending track");
        if let Some(old) = line.source.take() {
            self.changes.push(LineChange::Stopped { mid: line.mid, track: old.track });
        }
        line.source = Some(Source {
            track: track.clone(),
            codec: subscribed.codec,
            fmtp: subscribed.params.fmtp.clone(),
            layers,
            layer,
            forced: None,
            payload: None,
            keyframe_needed: line.kind == MediaKind::Video,
        });
        // The line may have been renegotiated since its stream was last told: tell it again.
        line.pacing_set = false;
        self.changes.push(LineChange::Sending { mid: line.mid, track: track.clone() });
        if self.connected {
            let _ = media.request_keyframe(track);
        }
    }

    /// Stops sending on m-line `index`; returns the track it carried.
    pub(crate) fn detach(&mut self, index: usize) -> Option<TrackId> {
        let line = self.lines.get_mut(index)?;
        let old = line.source.take()?;
        self.changes.push(LineChange::Stopped { mid: line.mid, track: old.track.clone() });
        Some(old.track)
    }

    /// What changed since the last call.
    pub(crate) fn take_changes(&mut self) -> Vec<LineChange> {
        std::mem::take(&mut self.changes)
    }

    /// ICE and DTLS are up. What was written before is not lost: str0m holds a stream's packets
    /// until SRTP is ready and sends them then, so a source that already started from a keyframe
    /// goes on (resetting it here threw away up to a GOP of a publisher that cannot make a
    /// keyframe on request, as RTMP and SRT cannot). A video source still waiting for its first
    /// keyframe asks again: a request made before may have been merged into an earlier one.
    pub(crate) fn on_connected(&mut self, media: &EndpointMedia) {
        self.connected = true;
        for line in &self.lines {
            if let Some(source) = &line.source
                && line.kind == MediaKind::Video
                && source.keyframe_needed
            {
                let _ = media.request_keyframe(&source.track);
            }
        }
    }

    /// One frame of a subscription. A video source's frames before its first keyframe are
    /// dropped, each asking the publisher for one again (the engine spaces the requests out):
    /// the engine may have handed its keyframe over before this m-line carried the track, and
    /// a request made then may have been merged into an earlier one.
    pub(crate) fn write(&mut self, rtc: &mut Rtc, media: &EndpointMedia, track: &TrackId, frame: MediaFrame) {
        let Some(line) = self.lines.iter_mut().find(|l| l.source.as_ref().is_some_and(|s| s.track == *track)) else {
            // A frame of a track this session just stopped sending.
            return;
        };
        let Some(source) = line.source.as_mut() else { return };
        if line.kind == MediaKind::Video
            && paced_backlog(rtc, line.mid, &mut line.pacing_set, self.pace_video) > self.max_send_delay
        {
            // Everything after this frame depends on it: the picture starts again at a
            // keyframe once the backlog has drained.
            if !source.keyframe_needed {
                debug!(mid = %line.mid, %track, "video backlog past the send delay: shedding to the next keyframe");
            }
            source.keyframe_needed = true;
            let _ = media.request_keyframe(track);
            self.shed.increment(1);
            return;
        }
        if source.keyframe_needed {
            if !frame.keyframe {
                let _ = media.request_keyframe(track);
                return;
            }
            source.keyframe_needed = false;
        }
        let Some((pt, rate)) = payload_type(rtc, line.mid, source, frame.codec) else { return };
        let ticks = line.timeline.map(track, frame.time, frame.arrival, rate);
        // Sender reports map RTP time to the instant written with it: when the frame was
        // captured, so that a viewer lines up tracks captured together (`MediaFrame::captured`).
        if FanoutPackets::shares(frame.codec) {
            let packets = self.packets.packets(&frame, Instant::now());
            if !write_shared(rtc, line.mid, (pt, ticks as u32, frame.captured), &packets, &mut line.picture_id) {
                return;
            }
        } else {
            let Some(frequency) = Frequency::new(rate) else { return };
            let Some(writer) = rtc.writer(line.mid) else { return };
            if let Err(err) = writer.write(pt, frame.captured, WireTime::new(ticks, frequency), &frame.payload[..]) {
                debug!(mid = %line.mid, "frame not written: {err}");
                return;
            }
        }
        let latency = if line.kind == MediaKind::Audio { &self.audio_latency } else { &self.video_latency };
        latency.record(Instant::now().saturating_duration_since(frame.arrival).as_secs_f64());
    }

    /// The peer chose a simulcast layer (`None`: back to the bandwidth estimate's choice).
    pub(crate) fn force_layer(&mut self, track: &TrackId, forced: Option<u8>, rpc: &EndpointRpc) {
        let budget = self.video_budget();
        for line in &mut self.lines {
            let Some(source) = line.source.as_mut().filter(|s| s.track == *track) else { continue };
            source.forced = forced;
            let layer = forced.unwrap_or_else(|| choose_layer(budget, &source.layers, None));
            source.layer = Some(layer);
            info!(mid = %line.mid, %track, layer, forced = forced.is_some(), "simulcast layer chosen");
            let _ = rpc.set_layer(track, LayerPreference::AtMost(layer));
        }
    }

    /// str0m summed up the peer's receiver reports for one sending m-line: the subscription
    /// gets its loss, round trip and the jitter the peer measured.
    pub(crate) fn on_stats(&self, stats: &MediaEgressStats, connection_rtt: Option<Duration>, media: &EndpointMedia) {
        let Some(source) = self.lines.iter().find(|l| l.mid == stats.mid).and_then(|l| l.source.as_ref()) else {
            return;
        };
        let clock_rate = source.payload.map_or(0, |(_, _, rate)| rate);
        let jitter = stats.remote.as_ref().map(|remote| remote.jitter);
        let quality = super::ingest::link_quality(stats.loss, stats.rtt.or(connection_rtt), jitter, clock_rate);
        let _ = media.report_link(&source.track, quality);
    }

    /// The peer asked for a keyframe on one of its receiving m-lines.
    pub(crate) fn on_keyframe_request(&mut self, mid: Mid, media: &EndpointMedia) {
        if let Some(source) = self.lines.iter().find(|l| l.mid == mid).and_then(|l| l.source.as_ref()) {
            let _ = media.request_keyframe(&source.track);
        }
    }

    /// A new bandwidth estimate towards the peer: re-pick simulcast layers and tell publishers.
    pub(crate) fn on_estimate(&mut self, bps: u64, rpc: &EndpointRpc, media: &EndpointMedia) {
        self.estimate_bps = bps;
        let budget = self.video_budget();
        for line in &mut self.lines {
            let Some(source) = line.source.as_mut() else { continue };
            if line.kind != MediaKind::Video {
                continue;
            }
            let _ = media.report_bitrate(&source.track, budget);
            if source.layers.len() > 1 && source.forced.is_none() {
                let layer = choose_layer(budget, &source.layers, source.layer);
                if Some(layer) != source.layer {
                    debug!(mid = %line.mid, track = %source.track, layer, budget, "switching simulcast layer");
                    source.layer = Some(layer);
                    let _ = rpc.set_layer(&source.track, LayerPreference::AtMost(layer));
                }
            }
        }
    }

    /// The estimate shared between the video m-lines that carry something.
    fn video_budget(&self) -> u64 {
        self.video_budget_with(usize::MAX)
    }

    /// The same, counting m-line `extra` as carrying something too.
    fn video_budget_with(&self, extra: usize) -> u64 {
        let busy = |(i, l): &(usize, &EgressLine)| l.source.is_some() || *i == extra;
        let count = |kind| self.lines.iter().enumerate().filter(|e| e.1.kind == kind && busy(e)).count() as u64;
        self.estimate_bps.saturating_sub(count(MediaKind::Audio) * AUDIO_BPS) / count(MediaKind::Video).max(1)
    }

    /// Tells the bandwidth estimator what to probe for: enough for the best layer everywhere.
    pub(crate) fn update_bwe_target(&self, rtc: &mut Rtc) {
        let desired: u64 = self
            .lines
            .iter()
            .filter_map(|l| l.source.as_ref().map(|s| (l.kind, s)))
            .map(|(kind, source)| match kind {
                MediaKind::Audio => AUDIO_BPS,
                MediaKind::Video => {
                    source.layers.iter().filter_map(|l| l.max_bitrate).max().unwrap_or(UNLAYERED_VIDEO_BPS)
                }
            })
            .sum();
        if desired > 0 {
            rtc.bwe().set_bitrate(Bitrate::ZERO, Bitrate::bps(desired));
        }
    }
}

/// The payload type `source`'s frames in `codec` are written with on `mid`, and its clock rate;
/// `None` while the m-line does not send, or negotiated nothing for the codec.
fn payload_type(rtc: &mut Rtc, mid: Mid, source: &mut Source, codec: Codec) -> Option<(Pt, u32)> {
    let writer = rtc.writer(mid)?;
    if let Some((chosen, pt, rate)) = source.payload
        && chosen == codec
    {
        return Some((pt, rate));
    }
    let fmtp = if codec == source.codec { source.fmtp.as_deref() } else { None };
    let Some(pt) = codec::pick_pt(writer.payload_params(), codec, fmtp) else {
        debug!(%mid, %codec, "no payload type for this codec on the m-line");
        return None;
    };
    let rate = writer.payload_params().find(|p| p.pt() == pt).map(|p| p.spec().clock_rate.get())?;
    source.payload = Some((codec, pt, rate));
    Some((pt, rate))
}

/// Writes a frame's shared packets ([`FanoutPackets`]) on `mid`'s stream, stamped `(pt, RTP
/// time, capture instant)`: numbered from the stream's own sequence (which the frame writer
/// shares), the last one marked, each one resendable, and a VP8 one with the m-line's next
/// picture id written in as str0m serialises it. Whether anything was written.
fn write_shared(
    rtc: &mut Rtc,
    mid: Mid,
    (pt, time, captured): (Pt, u32, Instant),
    packets: &[Packet],
    picture_id: &mut u16,
) -> bool {
    let mut api = rtc.direct_api();
    let Some(stream) = api.stream_tx_by_mid(mid, None) else { return false };
    let last = packets.len().saturating_sub(1);
    for (index, packet) in packets.iter().enumerate() {
        let mut write = RtpWrite::new(pt, stream.next_seq_no(), time, captured, packet.payload.clone())
            .marker(index == last)
            .nackable(true);
        if let Some(patch) = packet.vp8.and_then(|vp8| vp8.patch().picture_id(*picture_id).build().ok()) {
            write = write.vp8_patch(patch);
        }
        stream.write_rtp(write);
    }
    // A frame's packets are all of one codec.
    if packets.first().is_some_and(|p| p.vp8.is_some()) {
        *picture_id = picture_id.wrapping_add(1) & VP8_PICTURE_ID_MASK;
    }
    !packets.is_empty()
}

/// How a session sends video (`webrtc.pace_video`, `webrtc.max_send_delay_ms`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendPacing {
    pub(crate) max_send_delay: Duration,
    pub(crate) pace_video: bool,
}

/// Tells `mid`'s video stream whether to go through the pacer, once the stream exists
/// (`pacing_set`); with pacing on, says how long the oldest packet the pacer holds for it has
/// waited, as of the pacer's last update (every timeout runs one). Unpaced video never waits
/// there, so it is not looked up again.
fn paced_backlog(rtc: &mut Rtc, mid: Mid, pacing_set: &mut bool, paced: bool) -> Duration {
    if *pacing_set && !paced {
        return Duration::ZERO;
    }
    let mut api = rtc.direct_api();
    let Some(stream) = api.stream_tx_by_mid(mid, None) else { return Duration::ZERO };
    if !*pacing_set {
        stream.set_unpaced(!paced);
        *pacing_set = true;
    }
    let first_unsent = if paced { stream.queue_info().and_then(|q| q.first_unsent()) } else { None };
    first_unsent.map_or(Duration::ZERO, |at| Instant::now().saturating_duration_since(at))
}

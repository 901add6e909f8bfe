//! The room policy (browsers in a call): every track the peer is subscribed to — by the
//! engine's auto-subscribe or by its signalling layer — goes out on an m-line of its own. An
//! idle m-line of the right kind and codec is reused; otherwise the session renegotiates: it
//! adds sendonly m-lines in a local offer for the signalling layer to deliver, and starts
//! sending once the answer comes back. One offer is outstanding at a time; a remote offer in
//! the meantime rolls ours back, and its tracks wait for the next one.

use junction_core::{EndpointEvent, TrackId};
use junction_engine::{EndpointMedia, EndpointRpc, SubscribedTrack};
use str0m::Rtc;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind as WireKind, Mid};
use tracing::{debug, info};

use super::egress::{Egress, EgressLine};
use super::signals::OfferedTrack;
use crate::codec;
use crate::error::SessionError;

#[derive(Default)]
pub(crate) struct RoomEgress {
    /// Subscriptions without an m-line yet, in arrival order.
    waiting: Vec<SubscribedTrack>,
    negotiating: Option<Negotiation>,
    /// m-lines offered so far: numbers each one's msid track id (see `place`).
    offered_lines: u64,
    /// Offers made so far: numbers each one.
    offers: u64,
}

struct Negotiation {
    /// The offer's number in this session (from 1).
    id: u64,
    pending: SdpPendingOffer,
    /// The m-lines the offer adds, and the subscriptions they are for.
    added: Vec<(Mid, SubscribedTrack)>,
}

impl RoomEgress {
    /// Starts from the subscriptions the peer already has.
    pub(crate) fn new(existing: Vec<SubscribedTrack>) -> Self {
        Self { waiting: existing, negotiating: None, offered_lines: 0, offers: 0 }
    }

    pub(crate) fn on_room_event(&mut self, event: &EndpointEvent, egress: &mut Egress) {
        match event {
            EndpointEvent::Subscribed { track, codec, params } => {
                let offered =
                    self.negotiating.as_ref().is_some_and(|n| n.added.iter().any(|(_, s)| s.track.id == track.id));
                if egress.line_carrying(&track.id).is_some() || offered {
                    return;
                }
                let subscribed = SubscribedTrack { track: track.clone(), codec: *codec, params: params.clone() };
                self.waiting.retain(|s| s.track.id != track.id);
                self.waiting.push(subscribed);
            }
            EndpointEvent::Unsubscribed { track } | EndpointEvent::TrackUnpublished { track, .. } => {
                self.forget(track, egress);
            }
            _ => {}
        }
    }

    fn forget(&mut self, track: &TrackId, egress: &mut Egress) {
        self.waiting.retain(|s| s.track.id != *track);
        if let Some(index) = egress.line_carrying(track) {
            egress.detach(index);
        }
        if let Some(negotiation) = &mut self.negotiating {
            negotiation.added.retain(|(_, s)| s.track.id != *track);
        }
    }

    /// Puts waiting subscriptions on idle m-lines; returns a local offer, with its number, when
    /// some still need one and no offer is outstanding.
    pub(crate) fn place(
        &mut self,
        egress: &mut Egress,
        rtc: &mut Rtc,
        rpc: &EndpointRpc,
        media: &EndpointMedia,
    ) -> Option<(u64, String)> {
        let mut still_waiting = Vec::new();
        for subscribed in std::mem::take(&mut self.waiting) {
            match egress.idle_line(subscribed.track.kind, subscribed.codec) {
                Some(index) => egress.attach(index, &subscribed, rpc, media),
                None => still_waiting.push(subscribed),
            }
        }
        self.waiting = still_waiting;
        egress.update_bwe_target(rtc);
        if self.waiting.is_empty() || self.negotiating.is_some() {
            return None;
        }
        let mut api = rtc.sdp_api();
        let mut added = Vec::new();
        for subscribed in std::mem::take(&mut self.waiting) {
            let kind = match subscribed.track.kind {
                junction_core::MediaKind::Audio => WireKind::Audio,
                junction_core::MediaKind::Video => WireKind::Video,
            };
            let stream = subscribed.track.peer.to_string();
            // An m-line keeps its msid after it stops carrying a track, and browsers refuse an
            // SDP in which two m-lines share one (Chromium: "Duplicate a=msid lines"), so a track
            // offered again after an unsubscribe gets a fresh msid track id. Clients map m-lines
            // to room tracks by mid (the signalling layer's offer lists them), not by msid.
            self.offered_lines += 1;
            let msid_track = format!("{}.{}", subscribed.track.id, self.offered_lines);
            let mid = api.add_media(kind, Direction::SendOnly, Some(stream), Some(msid_track), None);
            added.push((mid, subscribed));
        }
        let (offer, pending) = api.apply()?;
        self.offers += 1;
        info!(m_lines = added.len(), offer = self.offers, "renegotiating: offering new m-lines");
        self.negotiating = Some(Negotiation { id: self.offers, pending, added });
        Some((self.offers, offer.to_sdp_string()))
    }

    /// The peer's answer to our offer: the new m-lines start sending.
    pub(crate) fn on_answer(
        &mut self,
        sdp: &str,
        egress: &mut Egress,
        rtc: &mut Rtc,
        rpc: &EndpointRpc,
        media: &EndpointMedia,
    ) -> Result<(), SessionError> {
        let Some(negotiation) = self.negotiating.take() else {
            return Err(SessionError::OfferRefused("no offer of ours is waiting for an answer".into()));
        };
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|err| SessionError::BadSdp(err.to_string()))?;
        if let Err(err) = rtc.sdp_api().accept_answer(negotiation.pending, answer) {
            // The m-lines were not added; their subscriptions wait for the next offer.
            self.waiting.extend(negotiation.added.into_iter().map(|(_, s)| s));
            return Err(SessionError::OfferRefused(err.to_string()));
        }
        for (mid, subscribed) in negotiation.added {
            let Some(m) = rtc.media(mid).filter(|m| !m.disabled()) else {
                debug!(%mid, "the peer rejected the m-line");
                continue;
            };
            let remote_pts = m.remote_pts().to_vec();
            let payloads = rtc.codec_config().params().iter().filter(|p| remote_pts.contains(&p.pt()));
            let codecs = codec::codecs_of(payloads);
            let index = egress.add_line(EgressLine::new(mid, subscribed.track.kind, codecs));
            egress.attach(index, &subscribed, rpc, media);
        }
        Ok(())
    }

    /// The m-lines of the outstanding offer and the room tracks they carry.
    pub(crate) fn offered(&self) -> Vec<OfferedTrack> {
        let Some(negotiation) = &self.negotiating else { return Vec::new() };
        negotiation
            .added
            .iter()
            .map(|(mid, s)| OfferedTrack {
                mid: mid.to_string(),
                track: s.track.id.clone(),
                peer: s.track.peer.clone(),
                kind: s.track.kind,
                source: s.track.source,
            })
            .collect()
    }

    /// A remote offer replaced ours: its subscriptions wait for the next one. Returns the
    /// abandoned offer's number.
    pub(crate) fn abandon_offer(&mut self) -> Option<u64> {
        let negotiation = self.negotiating.take()?;
        self.waiting.extend(negotiation.added.into_iter().map(|(_, s)| s));
        Some(negotiation.id)
    }
}

//! Sending m-lines that follow the peer's subscriptions ([`EgressPolicy::Subscriptions`]): when
//! the engine subscribes the peer to a track, the session offers an m-line for it (reusing an
//! inactive one of the same kind, else adding one); when the subscription ends, the m-line goes
//! inactive in the next offer. One offer is in flight at a time; what changes meanwhile goes in
//! the next. An offer from the peer wins over ours (str0m rolls ours back): the session answers
//! it and offers again.
//!
//! [`EgressPolicy::Subscriptions`]: super::EgressPolicy::Subscriptions

use junction_core::{Codec, MediaKind, TrackId, TrackInfo};
use junction_endpoint::{EndpointMedia, EndpointRpc};
use str0m::Rtc;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, Mid};
use tracing::{debug, info};

use super::egress::{Egress, EgressLine};
use super::signals::{OfferedTrack, SessionSignal};
use crate::error::SessionError;
use crate::negotiate::line_codecs;

/// A subscription the peer has.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub(crate) track: TrackInfo,
    /// The codec frames arrive in.
    pub(crate) codec: Codec,
    pub(crate) fmtp: Option<String>,
}

struct Pending {
    offer: SdpPendingOffer,
    /// The track each m-line of the offer will carry once answered.
    assign: Vec<(Mid, TrackId)>,
}

#[derive(Default)]
pub(crate) struct Renegotiation {
    wanted: Vec<Wanted>,
    pending: Option<Pending>,
}

impl Renegotiation {
    pub(crate) fn want(&mut self, wanted: Wanted) {
        self.wanted.retain(|w| w.track.id != wanted.track.id);
        self.wanted.push(wanted);
    }

    pub(crate) fn unwant(&mut self, track: &TrackId) {
        self.wanted.retain(|w| w.track.id != *track);
    }

    /// The peer's own offer rolled ours back.
    pub(crate) fn rolled_back(&mut self) {
        if self.pending.take().is_some() {
            debug!("our offer was rolled back by the peer's");
        }
    }

    /// Makes the next offer if the m-lines no longer match the subscriptions and no offer is
    /// in flight.
    pub(crate) fn offer(&mut self, rtc: &mut Rtc, egress: &mut Egress) -> Option<SessionSignal> {
        if self.pending.is_some() {
            return None;
        }
        // Lines carrying a track no longer subscribed stop at once.
        let stale: Vec<TrackId> = egress
            .carried()
            .filter(|(_, _, track)| !self.wanted.iter().any(|w| w.track.id == **track))
            .map(|(_, _, track)| track.clone())
            .collect();
        for track in &stale {
            egress.on_unsubscribed(track);
        }
        let lines: Vec<(Mid, MediaKind, Option<TrackId>, Direction)> = egress
            .lines()
            .filter_map(|(mid, kind, track)| {
                let direction = rtc.media(mid)?.direction();
                Some((mid, kind, track.cloned(), direction))
            })
            .collect();

        let mut api = rtc.sdp_api();
        let mut free: Vec<(Mid, MediaKind)> = Vec::new();
        for (mid, kind, track, direction) in &lines {
            if track.is_some() {
                continue;
            }
            if *direction == Direction::Inactive {
                free.push((*mid, *kind));
            } else {
                api.set_direction(*mid, Direction::Inactive);
            }
        }
        let mut assign = Vec::new();
        for wanted in &self.wanted {
            if lines.iter().any(|(_, _, track, _)| track.as_ref() == Some(&wanted.track.id)) {
                continue;
            }
            let kind = wanted.track.kind;
            let mid = match free.iter().position(|(_, k)| *k == kind) {
                Some(index) => {
                    let (mid, _) = free.remove(index);
                    api.set_direction(mid, Direction::SendOnly);
                    mid
                }
                None => api.add_media(
                    wire_kind(kind),
                    Direction::SendOnly,
                    Some(wanted.track.peer.to_string()),
                    Some(wanted.track.id.to_string()),
                    None,
                ),
            };
            assign.push((mid, wanted.track.id.clone()));
        }
        if !api.has_changes() {
            return None;
        }
        let (offer, pending) = api.apply()?;
        let carried = lines.iter().filter_map(|(mid, _, track, _)| Some((*mid, track.clone()?)));
        let tracks = carried
            .chain(assign.iter().cloned())
            .filter_map(|(mid, track)| {
                let wanted = self.wanted.iter().find(|w| w.track.id == track)?;
                Some(OfferedTrack {
                    mid: mid.to_string(),
                    track,
                    peer: wanted.track.peer.clone(),
                    kind: wanted.track.kind,
                    source: wanted.track.source,
                })
            })
            .collect();
        info!(new = assign.len(), "offering the peer a renegotiation");
        self.pending = Some(Pending { offer: pending, assign });
        Some(SessionSignal::Offer { sdp: offer.to_sdp_string(), tracks })
    }

    /// The peer answered our offer: the m-lines start carrying their tracks.
    pub(crate) fn on_answer(
        &mut self,
        rtc: &mut Rtc,
        answer: &str,
        egress: &mut Egress,
        rpc: &EndpointRpc,
        media: &EndpointMedia,
    ) -> Result<(), SessionError> {
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|err| SessionError::BadSdp(err.to_string()))?;
        let pending = self.pending.take().ok_or(SessionError::NoOfferPending)?;
        rtc.sdp_api()
            .accept_answer(pending.offer, answer)
            .map_err(|err| SessionError::AnswerRefused(err.to_string()))?;
        for (mid, track) in pending.assign {
            // A subscription that ended while the offer was out stays unassigned.
            let Some(wanted) = self.wanted.iter().find(|w| w.track.id == track) else { continue };
            if !egress.has_line(mid) {
                let Some(line) = rtc.media(mid) else { continue };
                let codecs = line_codecs(rtc, line);
                egress.add_line(EgressLine::new(mid, wanted.track.kind, codecs));
            }
            egress.attach(mid, wanted, rpc, media);
        }
        Ok(())
    }
}

fn wire_kind(kind: MediaKind) -> str0m::media::MediaKind {
    match kind {
        MediaKind::Audio => str0m::media::MediaKind::Audio,
        MediaKind::Video => str0m::media::MediaKind::Video,
    }
}

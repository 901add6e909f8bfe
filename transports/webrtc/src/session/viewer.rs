//! The viewer policy (WHEP): the m-lines are fixed by the peer's offer and nothing
//! renegotiates. Each m-line shows the track [`Assignment`] chooses — the newest of its kind,
//! optionally of one identity — and the session subscribes and unsubscribes by itself to follow
//! publishers as they come, go and reconnect.

use junction_core::{EndpointEvent, SubscribeOptions, TrackId};
use junction_engine::{EndpointMedia, EndpointRpc};
use str0m::Rtc;
use tracing::info;

use super::assign::{Assignment, RoomTrack};
use super::egress::Egress;

pub(crate) struct Viewer {
    assignment: Assignment,
}

impl Viewer {
    pub(crate) fn new(assignment: Assignment) -> Self {
        Self { assignment }
    }

    pub(crate) fn on_room_event(
        &mut self,
        event: &EndpointEvent,
        egress: &mut Egress,
        rtc: &mut Rtc,
        rpc: &EndpointRpc,
        media: &EndpointMedia,
    ) {
        match event {
            EndpointEvent::TrackPublished(track) => {
                self.assignment.add(RoomTrack { id: track.id.clone(), peer: track.peer.clone(), kind: track.kind });
            }
            EndpointEvent::TrackUnpublished { track, .. } => {
                self.assignment.remove(track);
                if let Some(index) = egress.line_carrying(track) {
                    egress.detach(index);
                }
            }
            EndpointEvent::Unsubscribed { track } => {
                if let Some(index) = egress.line_carrying(track) {
                    egress.detach(index);
                }
            }
            _ => return,
        }
        self.reassign(egress, rtc, rpc, media);
    }

    /// Subscribes and unsubscribes until every m-line carries what the assignment chooses.
    pub(crate) fn reassign(&mut self, egress: &mut Egress, rtc: &mut Rtc, rpc: &EndpointRpc, media: &EndpointMedia) {
        let kinds = egress.kinds();
        // Each refusal removes one (line, track) pair, so this ends; the bound is a backstop.
        for _ in 0..=kinds.len() * 8 {
            let changed: Vec<(usize, Option<TrackId>)> = self
                .assignment
                .choose(&kinds)
                .into_iter()
                .enumerate()
                .filter(|(index, wanted)| egress.source_of(*index) != wanted.as_ref())
                .collect();
            if changed.is_empty() {
                break;
            }
            // Stop first, then start: a track moving between m-lines must not be unsubscribed
            // after its new m-line subscribed to it.
            for (index, _) in &changed {
                if let Some(old) = egress.detach(*index) {
                    let _ = rpc.unsubscribe(&old);
                }
            }
            for (index, wanted) in changed {
                let Some(track) = wanted else { continue };
                let options = SubscribeOptions { codecs: egress.codecs(index).to_vec(), ..SubscribeOptions::default() };
                match rpc.subscribe(&track, options) {
                    Ok(subscribed) => egress.attach(index, &subscribed, rpc, media),
                    Err(err) => {
                        info!(%track, "m-line {index} cannot carry the track: {err}");
                        self.assignment.refuse(index, &track);
                    }
                }
            }
        }
        egress.update_bwe_target(rtc);
    }
}

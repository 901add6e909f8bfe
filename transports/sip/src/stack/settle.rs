//! Where a call's media is settled by the far end's SDP answer and its task starts: the answer
//! to a call we placed (in the 2xx, or earlier in a reliable 183 — early media, so the room
//! hears the far end ringing), and the answer in the ACK of a late-offer call we admitted (our
//! 2xx carried the offer). Also the ACK answering the offer of a 2xx to an offerless re-INVITE.

use std::time::Instant;

use junction_core::TransportKind;
use junction_engine::{DuplicatePolicy, JoinRequest};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Stack;
use crate::call::{self, CallEnd, CallSetup, Entry, ToCall};
use crate::calls::CallState;
use crate::sdp;
use crate::ua::CallKey;

impl Stack {
    /// The ACK of our 2xx: for a late offer (the first INVITE's, or a re-INVITE's, without
    /// SDP) its body is the answer to the offer our 2xx carried.
    pub(super) fn confirmed(&mut self, call: CallKey, initial: bool, body: &[u8]) {
        let waiting = self.live.get(&call).is_some_and(|l| l.pending.is_some());
        if initial && waiting {
            if let Err(end) = self.settle(call, body, Some(CallState::Answered)) {
                warn!(call = ?self.live.get(&call).map(|l| l.id.clone()), reason = %end.describe(), "late-offer call cannot go on");
                self.ua.hangup(Instant::now(), call);
                self.finish(call, end);
            }
        } else if !initial && !body.is_empty() {
            self.reanswered(call, body);
        }
        self.tell(call, ToCall::Confirmed);
    }

    /// A reliable provisional response of a call we placed carried the far end's answer:
    /// the call starts (the room hears the ringback) while the record still says ringing.
    pub(super) fn early_media(&mut self, call: CallKey, body: &[u8]) {
        if let Err(end) = self.settle(call, body, None) {
            warn!(call = ?self.live.get(&call).map(|l| l.id.clone()), reason = %end.describe(), "early answer unusable");
            self.ua.hangup(Instant::now(), call);
            self.finish(call, end);
        }
    }

    /// The far end answered a call we placed: settle the codec (unless an early answer did),
    /// join the room, start the call.
    pub(super) fn answered(&mut self, call: CallKey, body: &[u8]) {
        let started = self.live.get(&call).is_some_and(|l| l.pending.is_none() && l.media.is_some());
        let settled = if started {
            if let Some(live) = self.live.get(&call) {
                info!(room = %live.room, peer = %live.identity, call = %live.id, "call answered by the far end after early media");
                self.book.transition(&live.id, CallState::Answered, Some(200), None);
            }
            Ok(())
        } else {
            self.settle(call, body, Some(CallState::Answered))
        };
        if let Err(end) = settled {
            warn!(call = ?self.live.get(&call).map(|l| l.id.clone()), reason = %end.describe(), "answered call cannot go on");
            self.ua.hangup(Instant::now(), call);
            self.finish(call, end);
        }
    }

    /// Negotiates the far end's answer and starts the call's task with what was pending;
    /// `state` is what the call record moves to (none while ringing with early media).
    fn settle(&mut self, call: CallKey, body: &[u8], state: Option<CallState>) -> Result<(), CallEnd> {
        let services = self.call_services();
        let Some(live) = self.live.get_mut(&call) else { return Ok(()) };
        let Some(pending) = live.pending.take() else { return Ok(()) };
        if body.is_empty() {
            return Err(CallEnd::Failed("the far end sent no SDP answer".into()));
        }
        let media = sdp::parse(body)
            .and_then(|answer| sdp::negotiate_answer(&answer, pending.offered.as_ref()))
            .map_err(|err| CallEnd::Failed(format!("the far end's SDP answer: {err}")))?;
        let entry = match pending.entry {
            Some(entry) => entry,
            None => {
                let mut join = JoinRequest::new(live.room.clone(), live.identity.clone(), TransportKind::Sip);
                join.metadata = json!({"sip": {"call": live.id, "direction": "outbound"}});
                join.auto_subscribe = false;
                join.on_duplicate = DuplicatePolicy::Reject;
                let joined = self.engine.join(join).map_err(|err| CallEnd::Failed(err.to_string()))?;
                Entry::Joined(joined.endpoint)
            }
        };
        let (task, inbox) = mpsc::channel(32);
        call::spawn(CallSetup {
            id: live.id.clone(),
            key: call,
            room: live.room.clone(),
            identity: live.identity.clone(),
            name: pending.name,
            metadata: pending.metadata,
            sockets: pending.sockets,
            media: media.clone(),
            entry,
            services,
            inbox,
        })
        .map_err(CallEnd::Failed)?;
        live.task = Some(task);
        live.media = Some(media.clone());
        info!(room = %live.room, peer = %live.identity, call = %live.id, codec = %media.codec, "call media settled");
        self.book.set_media(&live.id, &media);
        if let Some(state) = state {
            self.book.transition(&live.id, state, Some(200), None);
        }
        Ok(())
    }

    /// The answer (in an ACK) to the offer our 2xx made for an offerless re-INVITE: hold or
    /// resume as the far end says. The offer held only the call's codec; an answer that does
    /// not keep it is a broken far end, and the call goes on unchanged.
    fn reanswered(&mut self, call: CallKey, body: &[u8]) {
        let Some(live) = self.live.get_mut(&call) else { return };
        let Some(current) = live.media.clone() else { return };
        let ours = current.srtp.as_ref().map(sdp::Srtp::ours);
        match sdp::parse(body).and_then(|answer| sdp::negotiate_answer(&answer, ours.as_ref())) {
            Ok(media) if media.codec == current.codec => {
                info!(call = %live.id, direction = media.direction.as_str(), "late-offer re-INVITE answered in the ACK");
                live.media = Some(media.clone());
                if let Some(task) = &live.task {
                    let _ = task.try_send(ToCall::Renegotiated(media));
                }
            }
            Ok(_) | Err(_) => warn!(call = %live.id, "the ACK's SDP answer does not fit our offer; media unchanged"),
        }
    }
}

//! Our answers to INVITEs, re-INVITEs and UPDATEs: the 2xx with our SDP (an answer, or an
//! offer when theirs had none), its session-timer headers (RFC 4028 §9), retransmitted until
//! the ACK for INVITEs; and refusals with the status the stack chose.

use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, headers};

use super::session_timer::{self, SessionTimer, UasDecision};
use super::{CallKey, PendingOffer, PendingOk, Phase, Retransmit, UserAgent, dialog, warning};
use crate::message::build;
use crate::transaction::{ServerKey, encode};

impl UserAgent {
    /// Answers an INVITE we were offered with 200 and our SDP — the answer to its offer, or
    /// our offer when it had none (the ACK then brings the answer).
    pub fn answer(&mut self, now: Instant, call_key: CallKey, sdp: String) {
        let policy = self.timer_policy;
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let Phase::Offered { txn, request } = &call.phase else { return };
        let (txn, request) = (txn.clone(), request.clone());
        call.phase = Phase::Established;
        let mut extra = Vec::new();
        if let UasDecision::Run { expires, require } = session_timer::decide_as_uas(&request, policy) {
            call.timer = Some(SessionTimer::new(now, expires, false));
            extra.push(build::other("Session-Expires", expires.render()));
            if require {
                extra.push(Header::Require(headers::Require::new("timer")));
            }
        }
        let pending = self.send_ok(now, call_key, txn, &request, sdp, extra);
        if let Some(call) = self.calls.get_mut(&call_key) {
            call.pending_ok = pending.map(|p| PendingOk { initial: true, ..p });
        }
    }

    /// Answers a re-INVITE or UPDATE with 200 and our SDP (an offer, for a re-INVITE that
    /// had none). Accepting it refreshes the session timer.
    pub fn answer_offer(&mut self, now: Instant, call_key: CallKey, sdp: String) {
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let Some(PendingOffer { txn, request }) = call.pending_offer.take() else { return };
        let extra = self.refresh_answer_headers(now, call_key, &request);
        let pending = self.send_ok(now, call_key, txn, &request, sdp, extra);
        if request.method == Method::Invite
            && let Some(call) = self.calls.get_mut(&call_key)
        {
            call.pending_ok = pending;
        }
    }

    /// Refuses a re-INVITE or UPDATE (488 for an offer we cannot take); the call goes on as
    /// it was.
    pub fn reject_offer(&mut self, now: Instant, call_key: CallKey, code: u16, reason: &str) {
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let Some(PendingOffer { txn, request }) = call.pending_offer.take() else { return };
        let tag = call.dialog.local_tag.clone();
        let mut response = build::response(&request, code, Some(&tag));
        build::add_header(&mut response, warning(reason));
        self.txns.respond(now, &txn, response);
    }

    /// Sends a 2xx with our SDP; for an INVITE returns what retransmits it until the ACK.
    fn send_ok(
        &mut self,
        now: Instant,
        call_key: CallKey,
        txn: ServerKey,
        request: &Request,
        sdp: String,
        extra: Vec<Header>,
    ) -> Option<PendingOk> {
        let call = self.calls.get_mut(&call_key)?;
        let contact = dialog::Dialog::contact(call.dialog.local, call.dialog.peer.transport);
        let mut response = build::response(request, 200, Some(&call.dialog.local_tag));
        build::add_header(&mut response, Header::Contact(headers::Contact::new(contact)));
        build::add_header(&mut response, Self::allow());
        build::add_header(&mut response, Self::supported());
        for header in extra {
            build::add_header(&mut response, header);
        }
        call.local_sdp = Some(sdp.clone());
        let response = build::response_with_body(response, "application/sdp", sdp.into_bytes());
        let bytes = encode(&response);
        let to = call.dialog.peer;
        self.txns.respond(now, &txn, response);
        if request.method != Method::Invite {
            return None;
        }
        let timers = self.txns.timers();
        Some(PendingOk {
            initial: false,
            bytes,
            to,
            retransmit: Retransmit { next: now + timers.t1, interval: timers.t1, give_up: now + self.ack_timeout },
        })
    }

    /// Refuses an INVITE we were offered with `code` (and extra headers: a challenge, a
    /// Warning saying why); the call is forgotten.
    pub fn reject(&mut self, now: Instant, call_key: CallKey, code: u16, extra: Vec<Header>) {
        let Some(call) = self.calls.get(&call_key) else { return };
        let Phase::Offered { txn, request } = &call.phase else { return };
        let mut response = build::response(request, code, Some(&call.dialog.local_tag));
        for header in extra {
            build::add_header(&mut response, header);
        }
        let txn = txn.clone();
        self.txns.respond(now, &txn, response);
        self.remove(call_key);
    }
}

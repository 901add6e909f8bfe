//! Requests inside a dialog: BYE, re-INVITE (with or without an offer), UPDATE (a session
//! refresh, or an offer), INFO, OPTIONS, REFER and NOTIFY (transfers, in [`super::transfer`]). Out-of-order
//! CSeqs get 500, overlapping offers 491, an interval under our Min-SE 422 (RFC 4028).

use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, headers};

use super::session_timer::{self, SessionTimer, UasDecision};
use super::{CallKey, EndReason, PendingOffer, Phase, UaEvent, UserAgent, warning};
use crate::message::{Head, build, content_type};
use crate::transaction::ServerKey;

impl UserAgent {
    pub(super) fn in_dialog(&mut self, now: Instant, key: ServerKey, request: Request, head: Head) {
        let Some(call_key) = self.find_dialog(&head) else {
            self.reply(now, &key, &request, 481, vec![warning("no such call")]);
            return;
        };
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        // §12.2.2: requests must come in CSeq order.
        if call.dialog.remote_cseq.is_some_and(|last| head.cseq <= last) {
            self.reply(now, &key, &request, 500, vec![warning("CSeq out of order")]);
            return;
        }
        call.dialog.remote_cseq = Some(head.cseq);
        if super::inbound::allows_update(&request) {
            call.remote_update = true;
        }
        let local_tag = call.dialog.local_tag.clone();
        match request.method {
            Method::Bye => {
                let ending = matches!(call.phase, Phase::Ending);
                let response = build::response(&request, 200, Some(&local_tag));
                self.txns.respond(now, &key, response);
                self.remove(call_key);
                if !ending {
                    self.events.push_back(UaEvent::Ended { call: call_key, reason: EndReason::RemoteBye });
                }
            }
            Method::Invite | Method::Update => self.on_reoffer(now, call_key, key, request),
            Method::Info => {
                let response = build::response(&request, 200, Some(&local_tag));
                self.txns.respond(now, &key, response);
                self.events.push_back(UaEvent::Info {
                    call: call_key,
                    content_type: content_type(&request),
                    body: request.body.clone(),
                });
            }
            Method::Refer => self.on_refer(now, call_key, key, &request),
            Method::Notify => self.on_notify(now, call_key, key, &request),
            Method::Options => {
                let mut response = build::response(&request, 200, Some(&local_tag));
                build::add_header(&mut response, Self::allow());
                build::add_header(&mut response, Self::supported());
                self.txns.respond(now, &key, response);
            }
            Method::PRack => {
                // We answer INVITEs at once and never send reliable provisional responses.
                let mut response = build::response(&request, 481, Some(&local_tag));
                build::add_header(&mut response, warning("no reliable provisional response to acknowledge"));
                self.txns.respond(now, &key, response);
            }
            _ => {
                let mut response = build::response(&request, 405, Some(&local_tag));
                build::add_header(&mut response, Self::allow());
                self.txns.respond(now, &key, response);
            }
        }
    }

    /// A re-INVITE or UPDATE. An UPDATE without a body only refreshes the session, answered
    /// here; anything with an offer (or a re-INVITE asking for ours) goes to the stack.
    fn on_reoffer(&mut self, now: Instant, call_key: CallKey, key: ServerKey, request: Request) {
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let update = request.method == Method::Update;
        let busy = call.pending_offer.is_some()
            || (!update && call.pending_ok.is_some())
            || !matches!(call.phase, Phase::Established);
        if busy && !(update && request.body.is_empty() && matches!(call.phase, Phase::Established)) {
            self.reply(now, &key, &request, 491, vec![]);
            return;
        }
        if self.refuse_unfit_offer(now, &key, &request) {
            return;
        }
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        if update && request.body.is_empty() {
            // A refresh (RFC 4028 §7.4 / RFC 3311): 200 with the session's new interval.
            let mut response = build::response(&request, 200, Some(&call.dialog.local_tag));
            for header in self.refresh_answer_headers(now, call_key, &request) {
                build::add_header(&mut response, header);
            }
            self.txns.respond(now, &key, response);
            return;
        }
        call.pending_offer = Some(PendingOffer { txn: key.clone(), request: request.clone() });
        if !update {
            self.invites.insert(key, call_key);
        }
        self.events.push_back(UaEvent::Offer { call: call_key, sdp: request.body.clone() });
    }

    /// Applies the session-timer headers of a request we are about to accept (its 2xx is a
    /// refresh) and returns the headers that 2xx carries.
    pub(super) fn refresh_answer_headers(&mut self, now: Instant, call_key: CallKey, request: &Request) -> Vec<Header> {
        let policy = self.timer_policy;
        let Some(call) = self.calls.get_mut(&call_key) else { return Vec::new() };
        match session_timer::decide_as_uas(request, policy) {
            UasDecision::Run { expires, require } => {
                match call.timer.as_mut() {
                    Some(timer) => timer.refreshed(now, Some(expires), false),
                    None => call.timer = Some(SessionTimer::new(now, expires, false)),
                }
                let mut extra = vec![build::other("Session-Expires", expires.render())];
                if require {
                    extra.push(Header::Require(headers::Require::new("timer")));
                }
                extra
            }
            // A UAC that no longer asks for a timer (and does not support one) turns it off.
            UasDecision::None | UasDecision::TooSmall { .. } => {
                call.timer = None;
                Vec::new()
            }
        }
    }
}

//! Provisional responses to a call we placed: ringing and session progress, the early dialog
//! they set up, PRACK for the reliable ones (RFC 3262: `Require: 100rel` and `RSeq`, each
//! acknowledged once, retransmissions discarded), and the early answer — SDP in a 183 —
//! which lets media flow before the far end answers (ringback heard by the room).

use std::time::Instant;

use rsip::{Method, Response};

use super::session_timer::lists_option;
use super::{CallKey, Phase, Purpose, UaEvent, UserAgent, dialog};
use crate::message::{Head, build, content_type, header_value};

impl UserAgent {
    pub(super) fn on_provisional(&mut self, now: Instant, call_key: CallKey, response: &Response, head: &Head) {
        let code = response.status_code.code();
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let Phase::Calling { invite, provisional, cancel } = &mut call.phase else { return };
        let first = !*provisional;
        *provisional = true;
        if *cancel {
            // §9.1: the CANCEL we held back can go now.
            if first {
                let request = build::cancel_for(invite);
                let to = call.dialog.peer;
                if let Some(txn) = self.txns.send(now, request, to) {
                    self.clients.insert(txn, (call_key, Purpose::Cancel));
                }
            }
            return;
        }
        // The early dialog (§12.1.2): the far end's tag, target and route set.
        if head.to.tag.is_some() {
            call.dialog.remote_tag = head.to.tag.clone();
            if let Some(target) = header_value(response, "Contact").and_then(|c| dialog::addr_spec(&c)) {
                call.dialog.remote_target = target;
            }
            call.dialog.route_set = dialog::record_routes(response).into_iter().rev().collect();
        }
        if lists_option(response, "Require", "100rel") {
            let Some(rseq) = header_value(response, "RSeq").and_then(|v| v.trim().parse::<u32>().ok()) else {
                return;
            };
            // RFC 3262 §4: each reliable response is acknowledged once; a retransmission (or
            // one older than the last) is discarded.
            if call.last_rseq.is_some_and(|last| rseq <= last) {
                return;
            }
            call.last_rseq = Some(rseq);
            let rack = build::other("RAck", format!("{rseq} {} INVITE", head.cseq));
            let prack = call.dialog.request(Method::PRack, vec![rack]);
            self.send_in_dialog(now, call_key, prack, Purpose::Prack);
        }
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let is_sdp = content_type(response).is_some_and(|ct| ct == "application/sdp");
        if is_sdp && !response.body.is_empty() && !call.early_answer {
            call.early_answer = true;
            self.events.push_back(UaEvent::EarlyMedia { call: call_key, sdp: response.body.clone() });
        }
        self.events.push_back(UaEvent::Progress { call: call_key, code });
    }
}

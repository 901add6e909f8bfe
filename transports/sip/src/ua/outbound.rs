//! Requests the user agent sends and the responses they get: placing a call (INVITE offering
//! 100rel and session timers, with digest answers to 401/407 and a retry after 422),
//! acknowledging its 2xx, cancelling it before it is answered, hanging up with BYE, and
//! in-dialog OPTIONS to check the far end is still there. Provisional responses are in
//! [`super::early`]; session refreshes in [`super::refresh`].

use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response, headers};

use super::session_timer::{self, SessionExpires, SessionTimer};
use super::{Call, CallKey, Credentials, EndReason, Invitation, Phase, Purpose, UaEvent, UserAgent, dialog};
use crate::message::build::{self, ALLOW, RequestSpec, SUPPORTED};
use crate::message::{Head, header_value};
use crate::transaction::{ClientKey, Transmit, encode};

/// Digest challenges answered per call before giving up (a second one means wrong credentials).
const MAX_AUTH_TRIES: u8 = 1;

impl UserAgent {
    /// Places a call: sends the INVITE and returns the call's key. Progress, answer or failure
    /// come back as events.
    pub fn invite(&mut self, now: Instant, invitation: Invitation) -> CallKey {
        let call = self.new_key();
        let local = self.local_for(invitation.to);
        let local_tag = build::new_tag();
        let call_id = format!("{}@{}", junction_core::ids::random_id("", 20), local.ip());
        let dialog = dialog::Dialog {
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
            remote_tag: None,
            local_uri: format!("<{}>", invitation.from),
            remote_uri: format!("<{}>", invitation.target),
            local_cseq: 1,
            remote_cseq: None,
            remote_target: invitation.target.clone(),
            route_set: Vec::new(),
            peer: invitation.to,
            local,
        };
        let policy = self.timer_policy;
        let mut extra = vec![
            Header::Allow(headers::Allow::new(ALLOW)),
            Header::Supported(headers::Supported::new(SUPPORTED.join(", "))),
        ];
        extra.extend(session_timer::uac_headers(policy.expires, policy.min, None));
        let request = build::request(RequestSpec {
            method: Method::Invite,
            uri: invitation.target.clone(),
            via: dialog::Dialog::via(local, invitation.to.transport, &build::new_branch()),
            from: format!("<{}>;tag={local_tag}", invitation.from),
            to: dialog.remote_uri.clone(),
            call_id,
            cseq: 1,
            contact: Some(dialog::Dialog::contact(local, invitation.to.transport)),
            route: Vec::new(),
            extra,
        });
        let request = build::request_with_body(request, "application/sdp", invitation.sdp.clone().into_bytes());
        self.dialogs.insert((dialog.call_id.clone(), local_tag), call);
        let phase = match self.txns.send(now, request.clone(), invitation.to) {
            Some(txn) => {
                self.clients.insert(txn.clone(), (call, Purpose::Invite));
                Phase::Calling { invite: request, provisional: false, cancel: false }
            }
            None => Phase::Ending,
        };
        let mut entry = Call::new(dialog, phase);
        entry.credentials = invitation.credentials.map(|(username, password)| Credentials { username, password });
        entry.local_sdp = Some(invitation.sdp);
        self.calls.insert(call, entry);
        call
    }

    /// Ends a call whatever its state: refuses an unanswered INVITE (480), cancels one we sent
    /// (once it has a provisional response, §9.1), or sends BYE.
    pub fn hangup(&mut self, now: Instant, call_key: CallKey) {
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        match &mut call.phase {
            Phase::Offered { .. } => {
                let why = super::inbound::warning("the call was ended before it was answered");
                self.reject(now, call_key, 480, vec![why]);
            }
            Phase::Calling { invite, provisional, cancel, .. } => {
                *cancel = true;
                if *provisional {
                    let cancel = build::cancel_for(invite);
                    let to = call.dialog.peer;
                    if let Some(txn) = self.txns.send(now, cancel, to) {
                        self.clients.insert(txn, (call_key, Purpose::Cancel));
                    }
                }
            }
            Phase::Established => {
                call.pending_ok = None;
                call.timer = None;
                let pending_offer = call.pending_offer.take();
                let bye = call.dialog.request(Method::Bye, Vec::new());
                let local_tag = call.dialog.local_tag.clone();
                call.phase = Phase::Ending;
                if let Some(offer) = pending_offer {
                    self.txns.respond(now, &offer.txn, build::response(&offer.request, 487, Some(&local_tag)));
                }
                if !self.send_in_dialog(now, call_key, bye, Purpose::Bye) {
                    self.remove(call_key);
                }
            }
            Phase::Ending => {}
        }
    }

    /// Sends an in-dialog OPTIONS; a 408/481 or no answer ends the call as unreachable.
    pub fn ping(&mut self, now: Instant, call_key: CallKey) {
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        if !matches!(call.phase, Phase::Established) {
            return;
        }
        let options = call.dialog.request(Method::Options, Vec::new());
        self.send_in_dialog(now, call_key, options, Purpose::Ping);
    }

    pub(super) fn handle_response(&mut self, now: Instant, key: Option<ClientKey>, response: Response, head: Head) {
        let Some(key) = key else {
            self.reacknowledge(&head);
            return;
        };
        if self.on_register_response(now, &key, &response) {
            return;
        }
        let Some((call_key, purpose)) = self.clients.get(&key).copied() else { return };
        let code = response.status_code.code();
        match purpose {
            Purpose::Invite => self.on_invite_response(now, call_key, response, head),
            Purpose::Bye if code >= 200 => self.remove(call_key),
            Purpose::Ping if code == 408 || code == 481 => self.unreachable(now, call_key),
            // Any other final answer (even 405 or 501) proves the far end is there.
            Purpose::Ping if code >= 200 => self.events.push_back(UaEvent::Alive { call: call_key }),
            Purpose::Refresh { invite } => self.on_refresh_response(now, call_key, invite, &response, &head),
            Purpose::Refer if code >= 200 => self.on_refer_response(call_key, code),
            _ => {}
        }
    }

    pub(super) fn on_client_timeout(&mut self, now: Instant, key: ClientKey) {
        if self.on_register_timeout(now, &key) {
            return;
        }
        let Some((call_key, purpose)) = self.clients.remove(&key) else { return };
        match purpose {
            Purpose::Invite => {
                let cancelled =
                    self.calls.get(&call_key).is_some_and(|c| matches!(c.phase, Phase::Calling { cancel: true, .. }));
                if matches!(self.calls.get(&call_key).map(|c| &c.phase), Some(Phase::Calling { .. })) {
                    self.remove(call_key);
                    if !cancelled {
                        let reason = "no response from the far end".to_owned();
                        self.events.push_back(UaEvent::Failed { call: call_key, code: 408, reason });
                    }
                }
            }
            Purpose::Bye => self.remove(call_key),
            // RFC 4028 §10: a refresh that gets no answer ends the session.
            Purpose::Ping | Purpose::Refresh { .. } => self.unreachable(now, call_key),
            Purpose::Refer => self.events.push_back(UaEvent::TransferProgress { call: call_key, code: 408 }),
            Purpose::Cancel | Purpose::Prack | Purpose::Info | Purpose::Notify => {}
        }
    }

    pub(super) fn unreachable(&mut self, now: Instant, call_key: CallKey) {
        self.end_with(now, call_key, EndReason::Unreachable);
    }

    /// Hangs up a live call ourselves and tells the stack why.
    pub(super) fn end_with(&mut self, now: Instant, call_key: CallKey, reason: EndReason) {
        if !self.calls.get(&call_key).is_some_and(|c| matches!(c.phase, Phase::Established)) {
            return;
        }
        self.hangup(now, call_key);
        self.events.push_back(UaEvent::Ended { call: call_key, reason });
    }

    /// A 2xx retransmission for a call we placed: send its ACK again (§13.2.2.4).
    fn reacknowledge(&mut self, head: &Head) {
        let Some(tag) = head.from.tag.clone() else { return };
        let Some(call_key) = self.dialogs.get(&(head.call_id.clone(), tag)).copied() else { return };
        if let Some((bytes, to)) = self.calls.get(&call_key).and_then(|c| c.ack.clone()) {
            self.transmits.push_back(Transmit { to, bytes });
        }
    }

    /// ACKs a 2xx of ours in a dialog (the INVITE's, or a re-INVITE refresh's), and keeps the
    /// ACK for retransmissions of that 2xx.
    pub(super) fn acknowledge(&mut self, call_key: CallKey, cseq: u32) {
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let ack = call.dialog.request_with_cseq(Method::Ack, cseq, Vec::new());
        let to = call.dialog.next_hop();
        let bytes = encode(&ack);
        self.transmits.push_back(Transmit { to, bytes: bytes.clone() });
        call.ack = Some((bytes, to));
    }

    fn on_invite_response(&mut self, now: Instant, call_key: CallKey, response: Response, head: Head) {
        let code = response.status_code.code();
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let Phase::Calling { cancel, .. } = &mut call.phase else {
            if (200..300).contains(&code) {
                self.reacknowledge(&head);
            }
            return;
        };
        let cancelled = *cancel;
        match code {
            100 => {}
            101..=199 => self.on_provisional(now, call_key, &response, &head),
            200..=299 => {
                call.dialog.remote_tag = head.to.tag.clone();
                if let Some(target) = header_value(&response, "Contact").and_then(|c| dialog::addr_spec(&c)) {
                    call.dialog.remote_target = target;
                }
                call.dialog.route_set = dialog::record_routes(&response).into_iter().rev().collect();
                call.phase = Phase::Established;
                call.remote_update = super::inbound::allows_update(&response);
                // RFC 4028 §7.2: a 2xx without Session-Expires means no session timer.
                call.timer = SessionExpires::of(&response).map(|se| SessionTimer::new(now, se, true));
                self.acknowledge(call_key, head.cseq);
                if cancelled {
                    // The answer crossed our CANCEL: acknowledge it, then hang up.
                    self.hangup(now, call_key);
                } else {
                    self.events.push_back(UaEvent::Answered { call: call_key, sdp: response.body.clone() });
                }
            }
            401 | 407 if !cancelled && call.auth_tries < MAX_AUTH_TRIES && call.credentials.is_some() => {
                call.auth_tries += 1;
                let answer = authorization(call, &response, code);
                let retried = answer.and_then(|(name, value)| reissue(call, &[(name, value)]));
                self.send_reissued(now, call_key, retried, code, &response);
            }
            // RFC 4028 §7.4: our interval is under the far end's Min-SE; once, with theirs.
            422 if !cancelled && !call.min_se_retried => {
                call.min_se_retried = true;
                let min = session_timer::min_se(&response).unwrap_or(0).max(self.timer_policy.min);
                let retried = reissue(
                    call,
                    &[
                        ("Session-Expires", SessionExpires { seconds: min, refresher: None }.render()),
                        ("Min-SE", min.to_string()),
                    ],
                );
                self.send_reissued(now, call_key, retried, code, &response);
            }
            _ => {
                if cancelled {
                    self.remove(call_key);
                } else {
                    self.fail(call_key, code, &response);
                }
            }
        }
    }

    /// Sends an INVITE rewritten after a 401/407/422, or fails the call with that response.
    fn send_reissued(
        &mut self,
        now: Instant,
        call_key: CallKey,
        request: Option<Request>,
        code: u16,
        response: &Response,
    ) {
        let Some(to) = self.calls.get(&call_key).map(|c| c.dialog.peer) else { return };
        match request.and_then(|request| self.txns.send(now, request.clone(), to).map(|txn| (txn, request))) {
            Some((txn, request)) => {
                self.clients.insert(txn, (call_key, Purpose::Invite));
                if let Some(call) = self.calls.get_mut(&call_key) {
                    call.phase = Phase::Calling { invite: request, provisional: false, cancel: false };
                }
            }
            None => self.fail(call_key, code, response),
        }
    }

    pub(super) fn fail(&mut self, call_key: CallKey, code: u16, response: &Response) {
        self.remove(call_key);
        let reason = match &response.status_code {
            rsip::StatusCode::Other(_, reason) => reason.clone(),
            _ => build::reason_phrase(code).to_owned(),
        };
        self.events.push_back(UaEvent::Failed { call: call_key, code, reason });
    }
}

/// The digest answer to a 401 (`Authorization`) or 407 (`Proxy-Authorization`) for the call's
/// INVITE (§22.2).
fn authorization(call: &Call, response: &Response, code: u16) -> Option<(&'static str, String)> {
    let credentials = call.credentials.as_ref()?;
    let Phase::Calling { invite, .. } = &call.phase else { return None };
    let (challenge_name, answer_name) =
        if code == 407 { ("Proxy-Authenticate", "Proxy-Authorization") } else { ("WWW-Authenticate", "Authorization") };
    let challenge = header_value(response, challenge_name)?;
    let uri = invite.uri.to_string();
    let answer = crate::digest::authorize(&challenge, "INVITE", &uri, &credentials.username, &credentials.password)?;
    Some((answer_name, answer))
}

/// The call's INVITE again, with a fresh branch, the next CSeq, and `replace` headers set
/// (added, or replacing those of the same name).
fn reissue(call: &mut Call, replace: &[(&str, String)]) -> Option<Request> {
    let Phase::Calling { invite, .. } = &call.phase else { return None };
    call.dialog.local_cseq += 1;
    let replaced = |header: &Header| {
        let name = header.to_string();
        let name = name.split(':').next().unwrap_or_default().trim().to_owned();
        replace.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name))
    };
    let mut headers = rsip::Headers::default();
    for header in invite.headers.iter() {
        match header {
            Header::Via(_) => headers.push(Header::Via(headers::Via::new(dialog::Dialog::via(
                call.dialog.local,
                call.dialog.peer.transport,
                &build::new_branch(),
            )))),
            Header::CSeq(_) => {
                headers.push(Header::CSeq(headers::CSeq::new(format!("{} INVITE", call.dialog.local_cseq))))
            }
            Header::ContentLength(_) => {
                for (name, value) in replace {
                    headers.push(build::other(name, value.clone()));
                }
                headers.push(header.clone());
            }
            other if replaced(other) => {}
            other => headers.push(other.clone()),
        }
    }
    Some(Request { headers, ..invite.clone() })
}

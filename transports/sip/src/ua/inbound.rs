//! Requests the user agent receives outside a dialog: new INVITEs (handed to the stack — with
//! an offer, or without one for a late offer), CANCEL, the ACK of our 2xx, and everything it
//! refuses on its own with the status RFC 3261 and RFC 4028 prescribe (400, 405, 415, 420,
//! 422, 481, 482, 501). Requests inside a dialog are in [`super::in_dialog`].

use std::collections::VecDeque;
use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, headers};

use super::session_timer::{self, UasDecision};
use super::{Call, CallKey, EndReason, Phase, UaEvent, UserAgent, dialog};
use crate::message::build::{self, ALLOW, SUPPORTED};
use crate::message::{Head, Peer, RawMessage, content_type, header_value};
use crate::transaction::{ServerKey, Transmit, encode};

/// Answers a request whose mandatory headers are missing or malformed with 400 (§8.2.6).
pub(super) fn bad_request(out: &mut VecDeque<Transmit>, request: &Request, from: Peer, reason: &str) {
    if request.method == Method::Ack || !request.headers.iter().any(|h| matches!(h, Header::Via(_))) {
        return;
    }
    let mut response = build::response(request, 400, Some(&build::new_tag()));
    build::add_header(&mut response, warning(reason));
    out.push_back(Transmit { to: from, bytes: encode(&response) });
}

/// Answers a request rsip could not parse: 501 for a method nobody knows (§21.5.2), 400
/// otherwise — written from the raw header lines, since there is no parsed message to echo.
pub(super) fn bad_raw_request(out: &mut VecDeque<Transmit>, raw: &RawMessage, from: Peer, reason: &str) {
    let method = raw.method().unwrap_or_default();
    if method.eq_ignore_ascii_case("ACK") {
        return;
    }
    let known = Method::all().iter().any(|m| m.to_string().eq_ignore_ascii_case(method));
    let code = if known || method.is_empty() { 400 } else { 501 };
    let copied: Vec<&(String, String)> = raw
        .headers
        .iter()
        .filter(|(n, _)| ["Via", "From", "To", "Call-ID", "CSeq"].iter().any(|k| n.eq_ignore_ascii_case(k)))
        // A value holding a line break (or any control byte) would write header lines of the
        // sender's choosing into our response: such a header is not echoed (found by fuzzing).
        .filter(|(_, v)| !v.chars().any(|c| c.is_control() && c != '\t'))
        .collect();
    if !copied.iter().any(|(n, _)| n.eq_ignore_ascii_case("Via")) {
        return;
    }
    let mut text = format!("SIP/2.0 {code} {}\r\n", build::reason_phrase(code));
    for (name, value) in copied {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    let reason: String = reason.chars().filter(|c| *c != '"' && !c.is_control()).take(120).collect();
    text.push_str(&format!(
        "Warning: 399 junction \"{reason}\"\r\nServer: {}\r\nContent-Length: 0\r\n\r\n",
        build::AGENT
    ));
    out.push_back(Transmit { to: from, bytes: text.into_bytes().into() });
}

pub(crate) use crate::message::build::warning;

impl UserAgent {
    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        key: Option<ServerKey>,
        request: Request,
        head: Head,
        from: Peer,
    ) {
        if request.method == Method::Ack {
            self.on_ack(&head, request.body);
            return;
        }
        let Some(key) = key else { return };
        if request.method == Method::Cancel {
            self.on_cancel(now, &key, &request);
        } else if head.to.tag.is_some() {
            self.in_dialog(now, key, request, head);
        } else {
            self.out_of_dialog(now, key, request, head, from);
        }
    }

    /// Sends a response without any dialog bookkeeping.
    pub(super) fn reply(&mut self, now: Instant, key: &ServerKey, request: &Request, code: u16, extra: Vec<Header>) {
        let mut response = build::response(request, code, Some(&build::new_tag()));
        for header in extra {
            build::add_header(&mut response, header);
        }
        self.txns.respond(now, key, response);
    }

    /// 415 for a body that is not SDP (none is a late offer), 422 with our `Min-SE` for a
    /// session interval below it (RFC 4028); whether the request was refused.
    pub(super) fn refuse_unfit_offer(&mut self, now: Instant, key: &ServerKey, request: &Request) -> bool {
        let is_sdp = content_type(request).is_some_and(|ct| ct == "application/sdp");
        if !request.body.is_empty() && !is_sdp {
            let accept = Header::Accept(headers::Accept::new("application/sdp"));
            self.reply(now, key, request, 415, vec![accept]);
            return true;
        }
        if let UasDecision::TooSmall { min } = session_timer::decide_as_uas(request, self.timer_policy) {
            self.reply(now, key, request, 422, vec![build::other("Min-SE", min.to_string())]);
            return true;
        }
        false
    }

    pub(super) fn allow() -> Header {
        Header::Allow(headers::Allow::new(ALLOW))
    }

    pub(super) fn supported() -> Header {
        Header::Supported(headers::Supported::new(SUPPORTED.join(", ")))
    }

    fn out_of_dialog(&mut self, now: Instant, key: ServerKey, request: Request, head: Head, from: Peer) {
        match request.method {
            Method::Invite => self.on_invite(now, key, request, head, from),
            Method::Options => {
                let extra =
                    vec![Self::allow(), Self::supported(), Header::Accept(headers::Accept::new("application/sdp"))];
                self.reply(now, &key, &request, 200, extra);
            }
            Method::Bye | Method::Info | Method::Update | Method::PRack => {
                self.reply(now, &key, &request, 481, vec![warning("no such call")]);
            }
            _ => self.reply(now, &key, &request, 405, vec![Self::allow()]),
        }
    }

    /// Option tags of a `Require` header we do not support (RFC 3261 §8.2.2.3).
    fn unsupported(request: &Request) -> Vec<String> {
        crate::message::header_values(request, "Require")
            .iter()
            .flat_map(|v| v.split(',').map(|t| t.trim().to_owned()).collect::<Vec<_>>())
            .filter(|tag| !tag.is_empty() && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(tag)))
            .collect()
    }

    /// A new INVITE: checked for what no stack decision can fix, then handed to the stack.
    fn on_invite(&mut self, now: Instant, key: ServerKey, request: Request, head: Head, from: Peer) {
        // §8.2.2.2: the same request arriving over another path (a new branch, same Call-ID,
        // From tag and CSeq) is a loop or a fork, not a new call.
        let merged = self.calls.values().any(|c| {
            c.dialog.call_id == head.call_id
                && c.dialog.remote_tag == head.from.tag
                && c.dialog.remote_cseq == Some(head.cseq)
        });
        if merged {
            self.reply(now, &key, &request, 482, vec![warning("this INVITE already arrived by another path")]);
            return;
        }
        let unsupported = Self::unsupported(&request);
        if !unsupported.is_empty() {
            let header = Header::Unsupported(headers::Unsupported::new(unsupported.join(", ")));
            self.reply(now, &key, &request, 420, vec![header]);
            return;
        }
        // An INVITE without a body is a late offer: our 2xx will carry the offer.
        if self.refuse_unfit_offer(now, &key, &request) {
            return;
        }

        let remote_target = crate::message::header_value(&request, "Contact")
            .and_then(|c| dialog::addr_spec(&c))
            .or_else(|| dialog::sendable(head.from.uri.clone()));
        let Some(remote_target) = remote_target else {
            // Our in-dialog requests (BYE, re-INVITE) go to this URI: one we cannot write is a
            // call we could never hang up.
            self.reply(now, &key, &request, 400, vec![warning("the Contact (or From) URI cannot be used")]);
            return;
        };
        // Our in-dialog requests echo From and To: values we could not write back (control
        // characters, an unclosed quote or bracket that rsip read leniently) refuse the call.
        let local_uri = strip_tag(&header_value(&request, "To").unwrap_or_default());
        let remote_uri = strip_tag(&header_value(&request, "From").unwrap_or_default());
        if !dialog::echoable(&local_uri) || !dialog::echoable(&remote_uri) {
            self.reply(now, &key, &request, 400, vec![warning("the From or To header cannot be used")]);
            return;
        }
        let call = self.new_key();
        let local = self.local_for(from);
        let dialog = dialog::Dialog {
            call_id: head.call_id.clone(),
            local_tag: build::new_tag(),
            remote_tag: head.from.tag.clone(),
            local_uri,
            remote_uri,
            local_cseq: 0,
            remote_cseq: Some(head.cseq),
            remote_target,
            route_set: dialog::record_routes(&request),
            peer: from,
            local,
        };
        self.dialogs.insert((dialog.call_id.clone(), dialog.local_tag.clone()), call);
        self.invites.insert(key.clone(), call);
        let mut entry = Call::new(dialog, Phase::Offered { txn: key, request: request.clone() });
        entry.remote_update = allows_update(&request);
        self.calls.insert(call, entry);
        self.events.push_back(UaEvent::Incoming { call, request: Box::new(request), head: Box::new(head), from });
    }

    pub(super) fn find_dialog(&self, head: &Head) -> Option<CallKey> {
        let tag = head.to.tag.clone()?;
        self.dialogs.get(&(head.call_id.clone(), tag)).copied()
    }

    /// §9.2: a CANCEL ends an INVITE we have not answered (487), and is answered 200 either
    /// way; one that matches no INVITE gets 481.
    fn on_cancel(&mut self, now: Instant, key: &ServerKey, request: &Request) {
        let invite_key = ServerKey { method: Method::Invite.to_string(), ..key.clone() };
        let Some(call_key) = self.invites.get(&invite_key).copied() else {
            self.reply(now, key, request, 481, vec![warning("no INVITE to cancel")]);
            return;
        };
        let tag = self.calls.get(&call_key).map(|c| c.dialog.local_tag.clone());
        self.txns.respond(now, key, build::response(request, 200, tag.as_deref()));
        let Some(call) = self.calls.get(&call_key) else { return };
        if let Phase::Offered { txn, request: invite } = &call.phase {
            let terminated = build::response(invite, 487, tag.as_deref());
            let txn = txn.clone();
            self.txns.respond(now, &txn, terminated);
            self.remove(call_key);
            self.events.push_back(UaEvent::Ended { call: call_key, reason: EndReason::Cancelled });
        }
    }

    /// An ACK outside any transaction: the ACK of a 2xx we sent. When that 2xx carried our
    /// offer (a late offer), the ACK's body is the answer.
    fn on_ack(&mut self, head: &Head, body: Vec<u8>) {
        let Some(call_key) = self.find_dialog(head) else { return };
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let Some(pending) = call.pending_ok.take() else { return };
        self.events.push_back(UaEvent::Confirmed { call: call_key, initial: pending.initial, sdp: body });
    }
}

/// Whether a request or response's Allow header lists UPDATE.
pub(super) fn allows_update(message: &impl rsip::message::HasHeaders) -> bool {
    crate::message::header_values(message, "Allow")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
}

/// A From/To value without its tag parameter.
fn strip_tag(value: &str) -> String {
    let (addr, params) = match value.rfind('>') {
        Some(end) => value.split_at(end + 1),
        None => match value.find(';') {
            Some(at) => value.split_at(at),
            None => (value, ""),
        },
    };
    let kept: Vec<&str> = params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("tag="))
        .collect();
    let mut out = addr.trim().to_owned();
    for param in kept {
        out.push(';');
        out.push_str(param);
    }
    out
}

#[cfg(test)]
mod strip_tests {
    #[test]
    fn strips_only_the_tag() {
        assert_eq!(super::strip_tag("\"A\" <sip:a@h>;tag=1;x=y"), "\"A\" <sip:a@h>;x=y");
        assert_eq!(super::strip_tag("sip:a@h;tag=1"), "sip:a@h");
        assert_eq!(super::strip_tag("<sip:a@h>"), "<sip:a@h>");
    }
}

//! Call transfer with REFER (RFC 3515) inside a dialog, both ways. A REFER from the far end is
//! accepted (202) and handed to the stack, which reports how the transfer went with NOTIFYs of
//! the implicit `refer` subscription (a `message/sipfrag` status line, RFC 3420). A REFER we
//! send asks the far end to call someone else; its NOTIFYs come back as progress, and the
//! stack hangs up once the new call is up.

use std::time::Instant;

use rsip::{Header, Method, Request};

use super::{CallKey, Phase, Purpose, UaEvent, UserAgent, warning};
use crate::message::{build, content_type, header_value};
use crate::transaction::ServerKey;

/// The `message/sipfrag` content type of REFER's NOTIFYs.
const SIPFRAG: &str = "message/sipfrag;version=2.0";
/// Longest Refer-To value taken.
const MAX_REFER_TO: usize = 512;

/// The status code in a sipfrag body (`SIP/2.0 180 Ringing`).
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body.get(..body.len().min(256))?).ok()?;
    let line = text.lines().next()?.trim();
    let mut words = line.split_ascii_whitespace();
    (words.next()? == "SIP/2.0").then_some(())?;
    words.next()?.parse().ok().filter(|code| (100..700).contains(code))
}

impl UserAgent {
    /// A REFER in a call: 202 and an event, or 400 without a usable Refer-To, 491 while the
    /// call is not set up.
    pub(super) fn on_refer(&mut self, now: Instant, call_key: CallKey, key: ServerKey, request: &Request) {
        let Some(call) = self.calls.get(&call_key) else { return };
        if !matches!(call.phase, Phase::Established) {
            self.reply(now, &key, request, 491, vec![warning("the call is not set up")]);
            return;
        }
        let refer_to = header_value(request, "Refer-To").or_else(|| header_value(request, "r"));
        let Some(refer_to) = refer_to.filter(|v| !v.trim().is_empty() && v.len() <= MAX_REFER_TO) else {
            self.reply(now, &key, request, 400, vec![warning("a REFER needs one Refer-To")]);
            return;
        };
        let local_tag = call.dialog.local_tag.clone();
        self.txns.respond(now, &key, build::response(request, 202, Some(&local_tag)));
        self.events.push_back(UaEvent::Refer { call: call_key, refer_to: refer_to.trim().to_owned() });
    }

    /// Reports a transfer's progress to the far end that asked for it: `code` is the status of
    /// the new leg (100 at once, then the final one, which ends the subscription).
    pub fn notify_transfer(&mut self, now: Instant, call_key: CallKey, code: u16) {
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let state = if code >= 200 { "terminated;reason=noresource" } else { "active;expires=60" };
        let extra = vec![build::other("Event", "refer"), build::other("Subscription-State", state)];
        let request = call.dialog.request(Method::Notify, extra);
        let body = format!("SIP/2.0 {code} {}\r\n", build::reason_phrase(code)).into_bytes();
        let request = build::request_with_body(request, SIPFRAG, body);
        self.send_in_dialog(now, call_key, request, Purpose::Notify);
    }

    /// Asks the far end to call `target` instead (blind transfer): REFER with Refer-To and
    /// Referred-By. Its answer and NOTIFYs come back as [`UaEvent::TransferProgress`].
    pub fn refer(&mut self, now: Instant, call_key: CallKey, target: &str) -> bool {
        let Some(call) = self.calls.get_mut(&call_key) else { return false };
        if !matches!(call.phase, Phase::Established) {
            return false;
        }
        let referred_by = call.dialog.local_uri.clone();
        let extra: Vec<Header> =
            vec![build::other("Refer-To", format!("<{target}>")), build::other("Referred-By", referred_by)];
        let request = call.dialog.request(Method::Refer, extra);
        self.send_in_dialog(now, call_key, request, Purpose::Refer)
    }

    /// A NOTIFY in a call: the progress of a REFER we sent. 200, and the sipfrag's status as
    /// an event; anything but a `refer` event gets 489.
    pub(super) fn on_notify(&mut self, now: Instant, call_key: CallKey, key: ServerKey, request: &Request) {
        let Some(call) = self.calls.get(&call_key) else { return };
        let local_tag = call.dialog.local_tag.clone();
        let event = header_value(request, "Event").or_else(|| header_value(request, "o")).unwrap_or_default();
        if !event.split(';').next().is_some_and(|e| e.trim().eq_ignore_ascii_case("refer")) {
            self.reply(now, &key, request, 489, vec![warning("only refer subscriptions are known")]);
            return;
        }
        self.txns.respond(now, &key, build::response(request, 200, Some(&local_tag)));
        let is_sipfrag = content_type(request).is_some_and(|ct| ct.starts_with("message/sipfrag"));
        if let Some(code) = is_sipfrag.then(|| sipfrag_status(&request.body)).flatten() {
            self.events.push_back(UaEvent::TransferProgress { call: call_key, code });
        }
    }

    /// The answer to our REFER: a refusal ends the transfer at once.
    pub(super) fn on_refer_response(&mut self, call_key: CallKey, code: u16) {
        if code >= 300 {
            self.events.push_back(UaEvent::TransferProgress { call: call_key, code });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sipfrag_status;

    #[test]
    fn reads_sipfrag_status_lines() {
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying\r\n"), Some(100));
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK"), Some(200));
        assert_eq!(sipfrag_status(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n"), Some(486));
        for bad in [&b""[..], b"HTTP/1.1 200 OK", b"SIP/2.0 99 x", b"SIP/2.0 abc", &[0xff, 0xfe]] {
            assert_eq!(sipfrag_status(bad), None, "{bad:?}");
        }
    }
}

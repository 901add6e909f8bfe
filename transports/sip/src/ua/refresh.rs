//! Session refreshes (RFC 4028 §7.4, §10): when we are the refresher, a re-INVITE carrying our
//! last SDP unchanged (same `o=` version, so no media change) or, when the far end allows it, an
//! UPDATE without a body, sent half-way through the interval; the answer sets the new interval
//! (a 422 raises it to the far end's Min-SE and tries again; a 491 or 5xx tries again shortly).
//! A session whose refresh never came — ours unanswered, or theirs missing — is ended with BYE.

use std::time::{Duration, Instant};

use rsip::{Method, Response};

use super::session_timer::{self, SessionExpires};
use super::{CallKey, EndReason, Phase, Purpose, UserAgent};
use crate::message::{Head, build};

/// How long to wait before refreshing again after a 491 (glare) or a 5xx.
const RETRY_AFTER: Duration = Duration::from_secs(2);

impl UserAgent {
    /// Sends a refresh or ends the session, whichever of its timer is due.
    pub(super) fn session_timer_due(&mut self, now: Instant, call_key: CallKey) {
        let Some(call) = self.calls.get(&call_key) else { return };
        let Some(timer) = call.timer else { return };
        if !matches!(call.phase, Phase::Established) {
            return;
        }
        if now >= timer.expires_at() {
            self.end_with(now, call_key, EndReason::SessionExpired);
            return;
        }
        if timer.refresh_at().is_some_and(|at| now >= at) {
            self.send_refresh(now, call_key);
        }
    }

    fn send_refresh(&mut self, now: Instant, call_key: CallKey) {
        let min = self.timer_policy.min;
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let Some(timer) = call.timer.as_mut() else { return };
        // An offer of the far end's in progress is answered first (RFC 3261 §14.1): try later.
        if call.pending_offer.is_some() || call.pending_ok.is_some() {
            timer.retry_at = Some(now + RETRY_AFTER);
            return;
        }
        timer.refreshing = true;
        timer.retry_at = None;
        let mut headers =
            session_timer::uac_headers(timer.refresh_header().seconds, min, Some(session_timer::Role::Uac));
        headers.push(Self::supported());
        headers.push(Self::allow());
        let invite = !call.remote_update;
        let request = if invite {
            let request = call.dialog.request(Method::Invite, headers);
            let sdp = call.local_sdp.clone().unwrap_or_default();
            build::request_with_body(request, "application/sdp", sdp.into_bytes())
        } else {
            call.dialog.request(Method::Update, headers)
        };
        if !self.send_in_dialog(now, call_key, request, Purpose::Refresh { invite }) {
            // The transaction table is full: no refresh this time; the session may still
            // be refreshed before it expires.
            if let Some(timer) = self.calls.get_mut(&call_key).and_then(|c| c.timer.as_mut()) {
                timer.refreshing = false;
                timer.retry_at = Some(now + RETRY_AFTER);
            }
        }
    }

    /// The far end's answer to one of our refreshes.
    pub(super) fn on_refresh_response(
        &mut self,
        now: Instant,
        call_key: CallKey,
        invite: bool,
        response: &Response,
        head: &Head,
    ) {
        let code = response.status_code.code();
        if code < 200 {
            return;
        }
        if invite && (200..300).contains(&code) {
            self.acknowledge(call_key, head.cseq);
        }
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        let Some(timer) = call.timer.as_mut() else { return };
        match code {
            200..=299 => timer.refreshed(now, SessionExpires::of(response), true),
            // §6: our interval is under their Min-SE: raise it and refresh again at once.
            422 => {
                let raised = session_timer::min_se(response).unwrap_or(0);
                timer.refreshing = false;
                if u64::from(raised) > timer.interval.as_secs() {
                    timer.interval = Duration::from_secs(u64::from(raised));
                    timer.retry_at = Some(now);
                } else {
                    // A 422 that asks for nothing more than we sent: no retry storm.
                    timer.retry_at = Some(now + RETRY_AFTER);
                }
            }
            // §10: a 408 or 481 means the session is gone.
            408 | 481 => self.end_with(now, call_key, EndReason::Unreachable),
            // Glare, a busy server, or a far end that refuses the refresh: try again shortly;
            // without a successful refresh the session still ends at its expiry.
            _ => {
                timer.refreshing = false;
                timer.retry_at = Some(now + RETRY_AFTER);
            }
        }
    }
}

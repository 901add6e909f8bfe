//! RFC 4028 session timers, sans I/O: reading and writing `Session-Expires` / `Min-SE`, the
//! negotiation of an interval and a refresher, and the clock of one dialog's timer — when we
//! refresh (half-way through the interval, when we are the refresher) and when a session
//! whose refresh never came is over (RFC 4028 §10: the interval minus a third, at most 32 s).

use std::time::{Duration, Instant};

use rsip::Request;

use crate::message::{build, header_value, header_values};

/// RFC 4028 §4: the smallest interval anyone may ask for, unless configured lower for tests.
pub const RFC_MIN_SE: u32 = 90;

/// Which side refreshes the session, as RFC 4028 names them: the dialog's UAC or UAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Uac,
    Uas,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Uac => "uac",
            Role::Uas => "uas",
        }
    }
}

/// A `Session-Expires` value: the interval in seconds and, if named, the refresher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    pub seconds: u32,
    pub refresher: Option<Role>,
}

impl SessionExpires {
    /// Parses `1800;refresher=uac` (parameters in any order and case).
    pub fn parse(value: &str) -> Option<SessionExpires> {
        let mut parts = value.split(';');
        let seconds = parts.next()?.trim().parse().ok()?;
        let mut refresher = None;
        for param in parts {
            if let Some((name, value)) = param.split_once('=')
                && name.trim().eq_ignore_ascii_case("refresher")
            {
                refresher = match value.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Role::Uac),
                    "uas" => Some(Role::Uas),
                    _ => None,
                };
            }
        }
        Some(SessionExpires { seconds, refresher })
    }

    /// The header value.
    pub fn render(self) -> String {
        match self.refresher {
            Some(role) => format!("{};refresher={}", self.seconds, role.as_str()),
            None => self.seconds.to_string(),
        }
    }

    /// The `Session-Expires` of a message, if it has a readable one.
    pub fn of(message: &impl rsip::message::HasHeaders) -> Option<SessionExpires> {
        header_value(message, "Session-Expires").and_then(|v| Self::parse(&v))
    }
}

/// Whether a message lists `tag` in a `Supported` (or `Require`) header.
pub fn lists_option(message: &impl rsip::message::HasHeaders, header: &str, tag: &str) -> bool {
    header_values(message, header).iter().flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(tag))
}

/// The `Min-SE` of a message (seconds), if it has one.
pub fn min_se(message: &impl rsip::message::HasHeaders) -> Option<u32> {
    header_value(message, "Min-SE").and_then(|v| v.split(';').next()?.trim().parse().ok())
}

/// Our session-timer policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerPolicy {
    /// The interval we ask for and grant when the far end names none.
    pub expires: u32,
    /// The smallest interval we accept (our Min-SE).
    pub min: u32,
}

impl Default for TimerPolicy {
    fn default() -> Self {
        Self { expires: 1800, min: RFC_MIN_SE }
    }
}

/// What a UAS does with the session-timer headers of an INVITE, re-INVITE or UPDATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasDecision {
    /// No session timer for this session.
    None,
    /// The interval is shorter than our Min-SE: answer 422 with `Min-SE: min`.
    TooSmall { min: u32 },
    /// Run a timer: put `Session-Expires` (and `Require: timer` when `require`) in the 2xx.
    Run { expires: SessionExpires, require: bool },
}

/// RFC 4028 §9: how a UAS answers the session-timer headers of a request.
pub fn decide_as_uas(request: &Request, policy: TimerPolicy) -> UasDecision {
    let supports = lists_option(request, "Supported", "timer") || lists_option(request, "Require", "timer");
    let floor = policy.min.max(min_se(request).unwrap_or(0));
    match SessionExpires::of(request) {
        Some(asked) if asked.seconds < policy.min => UasDecision::TooSmall { min: policy.min },
        Some(asked) => {
            // Without a named refresher the UAS chooses: we refresh ourselves, reliably.
            let refresher = match asked.refresher {
                Some(role) if supports => role,
                _ => Role::Uas,
            };
            let seconds = asked.seconds.max(floor);
            UasDecision::Run { expires: SessionExpires { seconds, refresher: Some(refresher) }, require: supports }
        }
        // §9: a UAS may add a timer only when the UAC supports the extension; a UAC that does
        // not would never refresh, and a session that nobody refreshes is not torn down here.
        None if supports => UasDecision::Run {
            expires: SessionExpires { seconds: policy.expires.max(floor), refresher: Some(Role::Uas) },
            require: true,
        },
        None => UasDecision::None,
    }
}

/// The headers a UAC puts in an INVITE (or a refresh) asking for `seconds`.
pub fn uac_headers(seconds: u32, min: u32, refresher: Option<Role>) -> Vec<rsip::Header> {
    vec![
        build::other("Session-Expires", SessionExpires { seconds, refresher }.render()),
        build::other("Min-SE", min.to_string()),
    ]
}

/// One dialog's session timer. Refreshers are named per transaction (RFC 4028 §7, §9): `uac`
/// is whoever sent the INVITE or UPDATE that set the interval, so a timer is built from the
/// negotiated value and which side of that transaction we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval: Duration,
    /// Whether we send the refreshes.
    pub we_refresh: bool,
    /// When the session was last refreshed (a 2xx to an INVITE or UPDATE, either way).
    pub refreshed_at: Instant,
    /// Whether a refresh of ours is out and unanswered.
    pub refreshing: bool,
    /// When to try a refresh again after one that failed (491, 5xx) or could not be sent.
    pub retry_at: Option<Instant>,
}

fn we_refresh(negotiated: SessionExpires, we_sent_request: bool) -> bool {
    let refresher = negotiated.refresher.unwrap_or(Role::Uas);
    (refresher == Role::Uac) == we_sent_request
}

impl SessionTimer {
    /// The timer a 2xx set up: `we_sent_request` says whether we were the UAC of the request.
    pub fn new(now: Instant, negotiated: SessionExpires, we_sent_request: bool) -> SessionTimer {
        SessionTimer {
            interval: Duration::from_secs(u64::from(negotiated.seconds.max(1))),
            we_refresh: we_refresh(negotiated, we_sent_request),
            refreshed_at: now,
            refreshing: false,
            retry_at: None,
        }
    }

    /// When we send our next refresh (we are the refresher): half-way (RFC 4028 §10).
    pub fn refresh_at(&self) -> Option<Instant> {
        (self.we_refresh && !self.refreshing).then(|| self.retry_at.unwrap_or(self.refreshed_at + self.interval / 2))
    }

    /// When the session is over without a refresh: as the refresher, at the end of the
    /// interval; otherwise the interval minus min(32 s, a third), so our BYE goes out first.
    pub fn expires_at(&self) -> Instant {
        if self.we_refresh {
            self.refreshed_at + self.interval
        } else {
            let margin = (self.interval / 3).min(Duration::from_secs(32));
            self.refreshed_at + self.interval - margin
        }
    }

    /// The next instant this timer needs attention.
    pub fn deadline(&self) -> Instant {
        self.refresh_at().map_or(self.expires_at(), |at| at.min(self.expires_at()))
    }

    /// A refresh came through: ours answered 2xx, or the far end's accepted. A new value
    /// (and refresher) comes with it when the 2xx or the request named one.
    pub fn refreshed(&mut self, now: Instant, negotiated: Option<SessionExpires>, we_sent_request: bool) {
        if let Some(negotiated) = negotiated {
            self.interval = Duration::from_secs(u64::from(negotiated.seconds.max(1)));
            if negotiated.refresher.is_some() {
                self.we_refresh = we_refresh(negotiated, we_sent_request);
            }
        }
        self.refreshed_at = now;
        self.refreshing = false;
        self.retry_at = None;
    }

    /// The `Session-Expires` our refreshes carry: we send them, so we are their UAC.
    pub fn refresh_header(&self) -> SessionExpires {
        SessionExpires { seconds: self.interval.as_secs() as u32, refresher: Some(Role::Uac) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-1\r\n\
From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match crate::message::parse(text.as_bytes()).unwrap() {
            rsip::SipMessage::Request(request) => request,
            _ => panic!("a request"),
        }
    }

    #[test]
    fn headers_parse_and_render() {
        assert_eq!(
            SessionExpires::parse("1800;refresher=UAC"),
            Some(SessionExpires { seconds: 1800, refresher: Some(Role::Uac) })
        );
        assert_eq!(SessionExpires::parse(" 90 ;x=y"), Some(SessionExpires { seconds: 90, refresher: None }));
        assert_eq!(SessionExpires::parse("soon"), None);
        assert_eq!(SessionExpires { seconds: 4, refresher: Some(Role::Uas) }.render(), "4;refresher=uas");
        let request = invite("Supported: 100rel, timer\r\nSession-Expires: 120\r\nMin-SE: 100\r\n");
        assert!(lists_option(&request, "Supported", "timer"));
        assert!(!lists_option(&request, "Require", "timer"));
        assert_eq!(min_se(&request), Some(100));
    }

    #[test]
    fn the_uas_decision_follows_rfc_4028_section_9() {
        let policy = TimerPolicy { expires: 1800, min: 90 };
        let decide = |extra: &str| decide_as_uas(&invite(extra), policy);
        assert_eq!(decide(""), UasDecision::None, "no timer for a UAC that knows none");
        assert_eq!(decide("Session-Expires: 60\r\n"), UasDecision::TooSmall { min: 90 });
        let run = |seconds, refresher, require| UasDecision::Run {
            expires: SessionExpires { seconds, refresher: Some(refresher) },
            require,
        };
        assert_eq!(decide("Supported: timer\r\n"), run(1800, Role::Uas, true));
        assert_eq!(decide("Supported: timer\r\nSession-Expires: 300;refresher=uac\r\n"), run(300, Role::Uac, true));
        // A refresher named by a UAC without timer support cannot be the UAC.
        assert_eq!(decide("Session-Expires: 300;refresher=uac\r\n"), run(300, Role::Uas, false));
        // The far end's own Min-SE is honoured too.
        assert_eq!(decide("Supported: timer\r\nSession-Expires: 100\r\nMin-SE: 120\r\n"), run(120, Role::Uas, true));
    }

    #[test]
    fn the_clock_refreshes_half_way_and_expires_before_the_end() {
        let t0 = Instant::now();
        // A far end's INVITE asking us (its UAS) to refresh.
        let asked = SessionExpires { seconds: 90, refresher: Some(Role::Uas) };
        let mut ours = SessionTimer::new(t0, asked, false);
        assert_eq!(ours.refresh_at(), Some(t0 + Duration::from_secs(45)));
        assert_eq!(ours.expires_at(), t0 + Duration::from_secs(90));
        ours.refreshing = true;
        assert_eq!(ours.deadline(), t0 + Duration::from_secs(90), "no second refresh while one is out");
        ours.refreshed(t0 + Duration::from_secs(45), None, true);
        assert_eq!(ours.refresh_at(), Some(t0 + Duration::from_secs(90)));
        assert_eq!(ours.refresh_header().render(), "90;refresher=uac");

        let theirs = SessionTimer::new(t0, SessionExpires { seconds: 90, refresher: Some(Role::Uac) }, false);
        assert_eq!(theirs.refresh_at(), None);
        assert_eq!(theirs.expires_at(), t0 + Duration::from_secs(60), "90 s minus a third");
        let long = SessionTimer::new(t0, SessionExpires { seconds: 1800, refresher: Some(Role::Uac) }, false);
        assert_eq!(long.expires_at(), t0 + Duration::from_secs(1768), "the margin is at most 32 s");
        // Our INVITE's 2xx naming us (its UAC) the refresher; the far end's re-INVITE then
        // takes the job over (it is the UAC of that one).
        let mut placed = SessionTimer::new(t0, SessionExpires { seconds: 120, refresher: Some(Role::Uac) }, true);
        assert!(placed.we_refresh);
        placed.refreshed(t0, Some(SessionExpires { seconds: 120, refresher: Some(Role::Uac) }), false);
        assert!(!placed.we_refresh);
    }
}

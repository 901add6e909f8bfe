//! SIP signalling: messages from phones and trunks into the sans-I/O `UserAgent`
//! (transports/sip/src/ua), the code the SIP stack runs for every UDP datagram and every message
//! framed off a TCP connection: the wire normalisation and rsip's parser (message/), the
//! transaction layer (transaction/: retransmissions, timers, ACK matching) and the dialog layer
//! (ua/: INVITE, ACK, BYE, CANCEL, re-INVITE, INFO, OPTIONS, digest answers to 401/407).
//!
//! Input: messages separated by [`crate::SEPARATOR`], each starting with four control bytes —
//! over TCP (`u8` odd) or UDP, which of four addresses sent it (`u8`), milliseconds before it
//! arrives (`u16`, little endian; timers fire meanwhile) — and one byte for the stack's decision
//! on what it raised (answer, refuse, leave ringing, hang up). The harness places one call of
//! its own first, so responses have a transaction to match; placeholders in a message stand
//! for what the fuzzer cannot guess: `$branch`, `$callid`, `$ftag` (of our last request) and
//! `$ttag` (the To tag of our last response).
//!
//! Checked: everything the user agent sends parses with its own parser (except a 400 to a request
//! that did not parse, which echoes what it could read of it), and once every call is
//! hung up and five minutes pass, no call or transaction is left.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use junction_sip::message::{self, Head, Peer};
use junction_sip::transaction::TimerConfig;
use junction_sip::ua::{CallKey, Invitation, Locals, UaEvent, UserAgent};
use rsip::SipMessage;

const OUR_SDP: &str = "v=0\r\no=- 7 7 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

fn address(index: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + index % 4], 5060))
}

/// Values of our last messages that a far end would echo.
#[derive(Default)]
struct Echo {
    branch: Vec<u8>,
    call_id: Vec<u8>,
    from_tag: Vec<u8>,
    to_tag: Vec<u8>,
}

impl Echo {
    fn apply(&self, data: &[u8]) -> Vec<u8> {
        let data = crate::substitute(data, b"$branch", &self.branch);
        let data = crate::substitute(&data, b"$callid", &self.call_id);
        let data = crate::substitute(&data, b"$ftag", &self.from_tag);
        crate::substitute(&data, b"$ttag", &self.to_tag)
    }
}

struct Harness {
    ua: UserAgent,
    now: Instant,
    calls: Vec<CallKey>,
    echo: Echo,
}

impl Harness {
    fn flush(&mut self) {
        while let Some(transmit) = self.ua.poll_transmit() {
            let parsed = message::parse(&transmit.bytes);
            let Ok(sent) = parsed else {
                // A 400 answers a request that did not parse, echoing what it could read of it.
                if !transmit.bytes.starts_with(b"SIP/2.0 400 ") {
                    panic!("the user agent sent what it cannot parse:\n{}", String::from_utf8_lossy(&transmit.bytes));
                }
                continue;
            };
            let head = match &sent {
                SipMessage::Request(request) => Head::of(request),
                SipMessage::Response(response) => Head::of(response),
            };
            let Ok(head) = head else { continue };
            match sent {
                SipMessage::Request(_) => {
                    self.echo.branch = head.via.branch.into_bytes();
                    self.echo.call_id = head.call_id.into_bytes();
                    self.echo.from_tag = head.from.tag.unwrap_or_default().into_bytes();
                }
                SipMessage::Response(_) => {
                    if let Some(tag) = head.to.tag {
                        self.echo.to_tag = tag.into_bytes();
                    }
                }
            }
        }
    }

    fn decide(&mut self, decision: u8) {
        while let Some(event) = self.ua.poll_event() {
            match event {
                UaEvent::Incoming { call, .. } => {
                    self.calls.push(call);
                    match decision % 4 {
                        0 => self.ua.answer(self.now, call, OUR_SDP.to_owned()),
                        1 => self.ua.reject(self.now, call, 486, Vec::new()),
                        2 => {}
                        _ => self.ua.hangup(self.now, call),
                    }
                }
                UaEvent::Offer { call, .. } => match decision % 2 {
                    0 => self.ua.answer_offer(self.now, call, OUR_SDP.to_owned()),
                    _ => self.ua.reject_offer(self.now, call, 488, "no common codec"),
                },
                UaEvent::Answered { call, .. } | UaEvent::Confirmed { call, .. } | UaEvent::EarlyMedia { call, .. } => {
                    match decision % 3 {
                        0 => self.ua.ping(self.now, call),
                        1 => self.ua.hangup(self.now, call),
                        _ => {}
                    }
                }
                UaEvent::Info { content_type, body, .. } => {
                    let _ = junction_sip::media::dtmf::info_digit(content_type.as_deref(), &body);
                }
                UaEvent::Refer { call, .. } => {
                    self.ua.notify_transfer(self.now, call, 100);
                    self.ua.notify_transfer(self.now, call, if decision % 2 == 0 { 200 } else { 404 });
                }
                UaEvent::Progress { .. }
                | UaEvent::Failed { .. }
                | UaEvent::Alive { .. }
                | UaEvent::Ended { .. }
                | UaEvent::TransferProgress { .. }
                | UaEvent::Registration { .. } => {}
            }
            self.flush();
        }
    }

    /// Moves the clock to `until`, firing every timer due on the way.
    fn advance(&mut self, until: Instant) {
        while let Some(deadline) = self.ua.poll_timeout().filter(|d| *d <= until) {
            self.now = self.now.max(deadline);
            self.ua.handle_timeout(self.now);
            self.flush();
            self.decide(2);
        }
        self.now = self.now.max(until);
    }
}

pub fn run(data: &[u8]) {
    let local = SocketAddr::from(([192, 0, 2, 1], 5060));
    let mut harness = Harness {
        ua: UserAgent::new(TimerConfig::default(), Locals::plain(local)),
        now: Instant::now(),
        calls: Vec::new(),
        echo: Echo::default(),
    };
    let Ok(target) = rsip::Uri::try_from("sip:+15551234@10.0.0.1:5060") else { return };
    let invitation = Invitation {
        target,
        to: Peer::udp(address(0)),
        from: "sip:standup@junction".to_owned(),
        sdp: OUR_SDP.to_owned(),
        credentials: Some(("trunk-user".to_owned(), "trunk-secret".to_owned())),
    };
    let ours = harness.ua.invite(harness.now, invitation);
    harness.calls.push(ours);
    harness.flush();

    for record in crate::records(data) {
        let mut u = Unstructured::new(record);
        let (Ok(tcp), Ok(source), Ok(delay), Ok(decision)) =
            (u.arbitrary::<u8>(), u.arbitrary::<u8>(), u.arbitrary::<u16>(), u.arbitrary::<u8>())
        else {
            continue;
        };
        let bytes = harness.echo.apply(u.take_rest());
        harness.advance(harness.now + Duration::from_millis(u64::from(delay)));
        let peer = if tcp % 2 == 1 { Peer::tcp(address(source)) } else { Peer::udp(address(source)) };
        harness.ua.receive(harness.now, &bytes, peer);
        harness.flush();
        harness.decide(decision);
    }

    // Wind down: hang up everything, then let five minutes of timers run.
    for call in std::mem::take(&mut harness.calls) {
        harness.ua.hangup(harness.now, call);
        harness.flush();
    }
    harness.advance(harness.now + Duration::from_secs(300));
    assert_eq!(harness.ua.call_count(), 0, "calls outlive their hangup by five minutes");
    assert_eq!(harness.ua.transaction_counts(), (0, 0), "transactions outlive their calls by five minutes");
}

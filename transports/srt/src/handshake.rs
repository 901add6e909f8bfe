//! The listener side of SRT handshakes, sans I/O: datagrams from addresses that have no open
//! stream come here; what comes out is a reply to send, a question for the caller (may this
//! stream id publish?), or a connected stream to hand to its own task.
//!
//! The handshake state machine itself is srt-protocol's `Listen`, one per source address. What
//! this module adds is what a server facing the internet needs around it, and what srt-tokio's
//! listener does not do: the table of half-open handshakes is capped ([`MAX_PENDING`], the oldest
//! evicted first) and swept after [`HANDSHAKE_TIMEOUT`], so spoofed sources cannot grow it; and
//! the caller's key material is read before srt-protocol sees it ([`CallerKeys`]), because
//! srt-protocol reaches `unimplemented!()` on key material it does not expect (sent to a listener
//! without a passphrase, of another key length than the listener's, or of the wrong kind): such
//! material is taken out of the handshake and the access decision refuses the caller with SRT's
//! own reject code. And every call into srt-protocol still runs under `catch_unwind` (its parser
//! has `unimplemented!()` for unknown handshake extensions too): a handshake that panics is
//! refused, nothing else is lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use srt_protocol::connection::Connection;
use srt_protocol::options::KeySize;
use srt_protocol::packet::{
    ControlTypes, CoreRejectReason, HandshakeVsInfo, KeyFlags, Packet, RejectReason, SrtControlPacket,
};
use srt_protocol::protocol::pending_connection::listen::Listen;
use srt_protocol::protocol::pending_connection::{
    AccessControlRequest, AccessControlResponse, ConnectionReject, ConnectionResult,
};
use srt_protocol::settings::ConnInitSettings;

/// Half-open handshakes held at once; a new one evicts the oldest.
pub const MAX_PENDING: usize = 1024;
/// How long a handshake may take from its first packet.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a handshake packet led to.
#[derive(Debug)]
pub enum Step {
    /// Nothing to do (a stray or malformed packet, a retransmission already answered).
    Nothing,
    /// A packet for the caller.
    Reply(Packet, SocketAddr),
    /// The caller asks to connect: answer with [`Handshakes::decide`].
    Ask(AccessControlRequest),
    /// The stream is open: its packets go to its own task from now on.
    Connected { reply: Option<(Packet, SocketAddr)>, connection: Box<Connection> },
    /// The handshake ended without a stream; the packet (if any) tells the caller why.
    Refused { reply: Option<(Packet, SocketAddr)>, reason: String },
}

/// What a caller's handshake carried in the way of key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallerKeys {
    /// None: the caller does not encrypt.
    #[default]
    None,
    /// A key request for keys of this length.
    Request(KeySize),
    /// Key material this listener cannot take (keys without a passphrase here, a length that is
    /// not 16, 24 or 32 bytes, a response where a request belongs); taken out of the handshake.
    Unusable,
}

struct Pending {
    listen: Listen,
    since: Instant,
    keys: CallerKeys,
}

/// Counts a panic srt-protocol had under `catch_unwind` (`junction_srt_contained_panics_total`).
fn count_panic(counter: &mut u64) {
    *counter += 1;
    metrics::counter!("junction_srt_contained_panics_total").increment(1);
}

/// Reads the key material of a handshake and takes out what srt-protocol must not see.
fn screen_keys(packet: &mut Packet, listener_encrypts: bool) -> Option<CallerKeys> {
    let Packet::Control(control) = packet else { return None };
    let ControlTypes::Handshake(shake) = &mut control.control_type else { return None };
    let HandshakeVsInfo::V5(info) = &mut shake.info else { return None };
    let keys = match &info.ext_km {
        None => return Some(CallerKeys::None),
        Some(SrtControlPacket::KeyRefreshRequest(km)) => {
            let count = [KeyFlags::EVEN, KeyFlags::ODD].iter().filter(|f| km.key_flags.contains(**f)).count();
            let length = match count {
                0 => None,
                count => km.wrapped_keys.len().checked_sub(8).map(|keys| keys / count),
            };
            match length {
                Some(16) => CallerKeys::Request(KeySize::AES128),
                Some(24) => CallerKeys::Request(KeySize::AES192),
                Some(32) => CallerKeys::Request(KeySize::AES256),
                _ => CallerKeys::Unusable,
            }
        }
        Some(_) => CallerKeys::Unusable,
    };
    if !listener_encrypts || keys == CallerKeys::Unusable {
        info.ext_km = None;
        return Some(if listener_encrypts { CallerKeys::Unusable } else { keys });
    }
    if let CallerKeys::Request(size) = keys {
        // srt-protocol compares the announced size with ours; the decision adopts the caller's.
        info.key_size = size;
    }
    Some(keys)
}

/// The handshakes in progress on one listener.
pub struct Handshakes {
    settings: ConnInitSettings,
    pending: HashMap<SocketAddr, Pending>,
    /// Calls into srt-protocol that panicked (each cost one handshake).
    pub contained_panics: u64,
}

impl Handshakes {
    /// `settings`: what every stream starts with (latency, passphrase, buffers).
    pub fn new(settings: ConnInitSettings) -> Self {
        Self { settings, pending: HashMap::new(), contained_panics: 0 }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The key material the caller at `from` sent in its handshake (asked after [`Step::Ask`]).
    pub fn caller_keys(&self, from: SocketAddr) -> CallerKeys {
        self.pending.get(&from).map_or(CallerKeys::None, |p| p.keys)
    }

    /// Takes a handshake packet from `from`.
    pub fn handle(&mut self, now: Instant, mut packet: Packet, from: SocketAddr) -> Step {
        if !self.pending.contains_key(&from) {
            if !matches!(packet, Packet::Control(_)) {
                return Step::Nothing; // data for a stream that is not (or no longer) open
            }
            if self.pending.len() >= MAX_PENDING {
                self.evict_oldest();
            }
            let listen = Listen::new(self.settings.copy_randomize(), true);
            self.pending.insert(from, Pending { listen, since: now, keys: CallerKeys::None });
        }
        let listener_encrypts = self.settings.key_settings.is_some();
        let Some(pending) = self.pending.get_mut(&from) else { return Step::Nothing };
        if let Some(keys) = screen_keys(&mut packet, listener_encrypts) {
            pending.keys = keys;
        }
        let result = catch_unwind(AssertUnwindSafe(|| pending.listen.handle_packet(now, Ok((packet, from)))));
        match result {
            Ok(result) => self.step(from, result),
            Err(_) => {
                count_panic(&mut self.contained_panics);
                self.pending.remove(&from);
                Step::Refused { reply: None, reason: "malformed handshake".into() }
            }
        }
    }

    /// Answers the question [`Step::Ask`] put for `from`.
    pub fn decide(&mut self, now: Instant, from: SocketAddr, response: AccessControlResponse) -> Step {
        let Some(pending) = self.pending.get_mut(&from) else { return Step::Nothing };
        let accepting = matches!(response, AccessControlResponse::Accepted(_));
        let encrypting = self.settings.key_settings.is_some();
        let answered = catch_unwind(AssertUnwindSafe(|| pending.listen.handle_access_control_response(now, response)));
        let result = match answered {
            Ok(result) => result,
            Err(_) if accepting => {
                // srt-protocol gave up on the caller's key material (a case the screen does not
                // know). Its state is untouched by the failed accept, so the same handshake can
                // still be refused properly.
                count_panic(&mut self.contained_panics);
                let reason = if encrypting { CoreRejectReason::BadSecret } else { CoreRejectReason::Unsecure };
                let refusal = AccessControlResponse::Rejected(RejectReason::Core(reason));
                match catch_unwind(AssertUnwindSafe(|| pending.listen.handle_access_control_response(now, refusal))) {
                    Ok(result) => result,
                    Err(_) => ConnectionResult::NotHandled(
                        srt_protocol::protocol::pending_connection::ConnectError::ExpectedAccessControlResponse,
                    ),
                }
            }
            Err(_) => {
                count_panic(&mut self.contained_panics);
                self.pending.remove(&from);
                return Step::Refused { reply: None, reason: "handshake failed".into() };
            }
        };
        self.step(from, result)
    }

    /// Forgets handshakes older than [`HANDSHAKE_TIMEOUT`].
    pub fn sweep(&mut self, now: Instant) {
        self.pending.retain(|_, pending| now.saturating_duration_since(pending.since) < HANDSHAKE_TIMEOUT);
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self.pending.iter().min_by_key(|(_, p)| p.since).map(|(addr, _)| *addr) {
            self.pending.remove(&oldest);
        }
    }

    fn step(&mut self, from: SocketAddr, result: ConnectionResult) -> Step {
        match result {
            ConnectionResult::SendPacket((packet, to)) => Step::Reply(packet, to),
            ConnectionResult::RequestAccess(request) => Step::Ask(request),
            ConnectionResult::Connected(reply, connection) => {
                self.pending.remove(&from);
                Step::Connected { reply, connection: Box::new(connection) }
            }
            ConnectionResult::Reject(reply, reject) => {
                self.pending.remove(&from);
                let reason = match reject {
                    ConnectionReject::Rejecting(reason) | ConnectionReject::Rejected(reason) => reason.to_string(),
                };
                Step::Refused { reply, reason }
            }
            ConnectionResult::NotHandled(_) | ConnectionResult::NoAction | ConnectionResult::Failure(_) => {
                Step::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use srt_protocol::packet::SeqNumber;
    use srt_protocol::protocol::pending_connection::connect::Connect;
    use srt_protocol::settings::KeySettings;

    use super::*;

    const LISTENER: &str = "127.0.0.1:8890";
    const CALLER: &str = "127.0.0.1:40000";

    fn keys(size: KeySize, passphrase: &str) -> Option<KeySettings> {
        Some(KeySettings { key_size: size, passphrase: passphrase.to_owned().try_into().unwrap() })
    }

    /// A packet as it would cross the wire: serialised and parsed back.
    fn wire(packet: &Packet) -> Packet {
        let mut bytes = Vec::new();
        packet.serialize(&mut bytes);
        Packet::parse(&mut Cursor::new(&bytes[..]), false).expect("our packets parse")
    }

    /// Runs srt-protocol's own caller against the listener until the listener asks, then
    /// answers with `decide`; returns (what the listener did last, what the caller saw last).
    /// No call into srt-protocol may have panicked on the way.
    fn handshake(
        listener_keys: Option<KeySettings>,
        caller_keys: Option<KeySettings>,
        decide: impl Fn(&AccessControlRequest, CallerKeys) -> AccessControlResponse,
    ) -> (Step, ConnectionResult) {
        let now = Instant::now();
        let (listener_addr, caller_addr): (SocketAddr, SocketAddr) =
            (LISTENER.parse().unwrap(), CALLER.parse().unwrap());
        let mut handshakes = Handshakes::new(ConnInitSettings { key_settings: listener_keys, ..Default::default() });
        let caller_settings = ConnInitSettings { key_settings: caller_keys, ..Default::default() };
        let mut caller = Connect::new(
            listener_addr,
            caller_addr.ip(),
            caller_settings,
            Some("sk_key".to_owned()),
            SeqNumber::new_truncate(7),
        );
        let ConnectionResult::SendPacket((mut packet, _)) = caller.handle_tick(now) else { panic!("no induction") };
        for _ in 0..4 {
            let mut step = handshakes.handle(now, wire(&packet), caller_addr);
            if let Step::Ask(request) = &step {
                assert_eq!(request.stream_id.as_deref().map(String::as_str), Some("sk_key"));
                let response = decide(request, handshakes.caller_keys(caller_addr));
                step = handshakes.decide(now, caller_addr, response);
            }
            let reply = match &step {
                Step::Reply(reply, _) => reply.clone(),
                Step::Connected { reply: Some((reply, _)), .. } | Step::Refused { reply: Some((reply, _)), .. } => {
                    reply.clone()
                }
                other => panic!("the listener did not answer: {other:?}"),
            };
            let seen = caller.handle_packet(Ok((wire(&reply), listener_addr)), now);
            match seen {
                ConnectionResult::SendPacket((next, _)) => packet = next,
                seen => {
                    assert_eq!(handshakes.contained_panics, 0, "srt-protocol panicked");
                    return (step, seen);
                }
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn a_caller_is_asked_about_and_connects_once_accepted() {
        let (step, seen) = handshake(None, None, |_, keys| {
            assert_eq!(keys, CallerKeys::None);
            AccessControlResponse::Accepted(None)
        });
        assert!(matches!(step, Step::Connected { .. }), "{step:?}");
        assert!(matches!(seen, ConnectionResult::Connected(..)), "{seen:?}");
    }

    #[test]
    fn a_refused_caller_hears_the_reason() {
        let refusal = RejectReason::Server(srt_protocol::packet::ServerRejectReason::Unauthorized);
        let (step, seen) = handshake(None, None, |_, _| AccessControlResponse::Rejected(refusal));
        assert!(matches!(step, Step::Refused { .. }), "{step:?}");
        let ConnectionResult::Reject(_, ConnectionReject::Rejected(reason)) = seen else { panic!("{seen:?}") };
        assert_eq!(reason, refusal);
    }

    #[test]
    fn an_encrypting_caller_of_a_plain_listener_is_refused_without_reaching_srt_protocol_s_panic() {
        let (step, seen) = handshake(None, keys(KeySize::AES128, "passphrase-123"), |_, keys| {
            assert_eq!(keys, CallerKeys::Request(KeySize::AES128));
            AccessControlResponse::Rejected(RejectReason::Core(CoreRejectReason::Unsecure))
        });
        assert!(matches!(step, Step::Refused { .. }), "{step:?}");
        assert!(matches!(seen, ConnectionResult::Reject(..)), "{seen:?}");
    }

    #[test]
    fn the_caller_s_key_length_is_adopted_and_a_wrong_passphrase_refused() {
        let listener = keys(KeySize::AES128, "passphrase-123");
        let accept = |_: &AccessControlRequest, keys| {
            let CallerKeys::Request(size) = keys else { panic!("{keys:?}") };
            AccessControlResponse::Accepted(super::tests::keys(size, "passphrase-123"))
        };
        let (step, seen) = handshake(listener.clone(), keys(KeySize::AES256, "passphrase-123"), accept);
        assert!(matches!(step, Step::Connected { .. }), "{step:?}");
        assert!(matches!(seen, ConnectionResult::Connected(..)), "{seen:?}");

        let (step, _) = handshake(listener, keys(KeySize::AES128, "another-secret"), accept);
        let Step::Refused { reason, .. } = step else { panic!("{step:?}") };
        assert_eq!(reason, "wrong password");
    }

    #[test]
    fn half_open_handshakes_are_capped_and_swept() {
        let now = Instant::now();
        let mut handshakes = Handshakes::new(ConnInitSettings::default());
        let mut caller = Connect::new(
            LISTENER.parse().unwrap(),
            [127, 0, 0, 1].into(),
            ConnInitSettings::default(),
            None,
            SeqNumber::new_truncate(1),
        );
        let ConnectionResult::SendPacket((induction, _)) = caller.handle_tick(now) else { panic!() };
        for port in 0..(MAX_PENDING as u16 + 100) {
            let step = handshakes.handle(now, induction.clone(), SocketAddr::from(([10, 0, 0, 1], port)));
            assert!(matches!(step, Step::Reply(..)), "{step:?}");
        }
        assert_eq!(handshakes.pending(), MAX_PENDING);
        handshakes.sweep(now + HANDSHAKE_TIMEOUT);
        assert_eq!(handshakes.pending(), 0);
    }
}

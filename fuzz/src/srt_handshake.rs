//! SRT handshakes and streams: datagrams into the listener's `Handshakes`
//! (transports/srt/src/handshake.rs: srt-protocol's `Listen` behind the key-material screen and
//! the capped table) and, once a stream is open, into its srt-protocol `DuplexConnection`, the
//! code the SRT listener runs for every datagram. Packets are parsed as the server does
//! (`server::parse_packet`, srt-protocol's parser under `catch_unwind`).
//!
//! To get past the SYN cookie, the harness runs srt-protocol's own caller (`Connect`) and the
//! fuzzer edits what it sends: input is messages separated by [`crate::SEPARATOR`], each
//! `op: u8` then bytes. `op % 4`: 0 = the caller's next packet with the bytes XORed over it,
//! 1 = the bytes as a datagram of their own, 2 = time passes (first byte × 100 ms), 3 = the
//! caller's packet as is. The first byte of the input picks the listener's and the caller's
//! encryption (none, same passphrase, another passphrase, another key length).
//!
//! Panics inside srt-protocol are contained by the server (the handshake is refused; an open
//! stream's task ends); one that escapes Junction's code is a crash.

use std::io::Cursor;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use junction_srt::handshake::{CallerKeys, Handshakes, Step};
use junction_srt::server::parse_packet;
use srt_protocol::connection::DuplexConnection;
use srt_protocol::options::KeySize;
use srt_protocol::packet::{Packet, RejectReason, SeqNumber, ServerRejectReason};
use srt_protocol::protocol::pending_connection::connect::Connect;
use srt_protocol::protocol::pending_connection::{AccessControlResponse, ConnectionResult};
use srt_protocol::settings::{ConnInitSettings, KeySettings};

fn keys(size: KeySize, passphrase: &str) -> Option<KeySettings> {
    Some(KeySettings { key_size: size, passphrase: passphrase.to_owned().try_into().ok()? })
}

fn serialize(packet: &Packet) -> Vec<u8> {
    let mut bytes = Vec::new();
    packet.serialize(&mut bytes);
    bytes
}

pub fn run(data: &[u8]) {
    let Some((&setup, rest)) = data.split_first() else { return };
    let (listener_keys, caller_keys) = match setup % 4 {
        0 => (None, None),
        1 => (keys(KeySize::AES128, "fuzz-passphrase"), keys(KeySize::AES128, "fuzz-passphrase")),
        2 => (keys(KeySize::AES128, "fuzz-passphrase"), keys(KeySize::AES256, "another-one")),
        _ => (None, keys(KeySize::AES192, "fuzz-passphrase")),
    };
    let listener_addr: SocketAddr = ([127, 0, 0, 1], 8890).into();
    let caller_addr: SocketAddr = ([127, 0, 0, 2], 40000).into();
    let mut now = Instant::now();
    let mut handshakes =
        Handshakes::new(ConnInitSettings { key_settings: listener_keys.clone(), ..Default::default() });
    let caller_settings = ConnInitSettings { key_settings: caller_keys, ..Default::default() };
    let mut caller = Connect::new(
        listener_addr,
        caller_addr.ip(),
        caller_settings,
        Some("sk_key".into()),
        SeqNumber::new_truncate(1),
    );
    let mut next = match caller.handle_tick(now) {
        ConnectionResult::SendPacket((packet, _)) => Some(packet),
        _ => None,
    };
    let mut stream: Option<DuplexConnection> = None;

    for record in crate::records(rest) {
        let Some((&op, bytes)) = record.split_first() else { continue };
        let datagram = match op % 4 {
            0 | 3 => {
                let Some(packet) = &next else { continue };
                let mut wire = serialize(packet);
                if op % 4 == 0 {
                    for (byte, mask) in wire.iter_mut().zip(bytes) {
                        *byte ^= mask;
                    }
                }
                wire
            }
            1 => bytes.to_vec(),
            _ => {
                now += Duration::from_millis(100 * u64::from(bytes.first().copied().unwrap_or(1)));
                handshakes.sweep(now);
                if let Some(connection) = &mut stream
                    && catch_unwind(AssertUnwindSafe(|| connection.check_timers(now))).is_err()
                {
                    stream = None;
                }
                continue;
            }
        };
        let Some(packet) = parse_packet(&datagram, false) else { continue };

        if let Some(connection) = &mut stream {
            // An open stream's task: a panic ends that stream (supervise::contain in the server).
            let fed = catch_unwind(AssertUnwindSafe(|| {
                connection.handle_packet_input(now, Ok((packet, caller_addr)));
                while connection.next_packet(now).is_some() {}
                while connection.next_data(now).is_some() {}
            }));
            if fed.is_err() {
                stream = None;
            }
            continue;
        }

        let mut step = handshakes.handle(now, packet, caller_addr);
        if let Step::Ask(request) = &step {
            let response = match (handshakes.caller_keys(caller_addr), &listener_keys) {
                (CallerKeys::Unusable, _) | (CallerKeys::Request(_), None) => {
                    AccessControlResponse::Rejected(RejectReason::Server(ServerRejectReason::Forbidden))
                }
                (CallerKeys::Request(size), Some(ours)) => {
                    AccessControlResponse::Accepted(Some(KeySettings { key_size: size, ..ours.clone() }))
                }
                (CallerKeys::None, _) if request.stream_id.is_none() => {
                    AccessControlResponse::Rejected(RejectReason::Server(ServerRejectReason::BadRequest))
                }
                (CallerKeys::None, _) => AccessControlResponse::Accepted(None),
            };
            step = handshakes.decide(now, caller_addr, response);
        }
        let reply = match step {
            Step::Reply(reply, _) => Some(reply),
            Step::Connected { reply, connection } => {
                stream = Some(DuplexConnection::new(*connection));
                reply.map(|(reply, _)| reply)
            }
            Step::Refused { reply, .. } => reply.map(|(reply, _)| reply),
            Step::Nothing | Step::Ask(_) => None,
        };
        // The caller hears the answer as it would off the wire.
        if let Some(reply) = reply {
            let parsed = Packet::parse(&mut Cursor::new(&serialize(&reply)[..]), false);
            let Ok(parsed) = parsed else { panic!("the listener sent what does not parse: {reply:?}") };
            if let ConnectionResult::SendPacket((packet, _)) = caller.handle_packet(Ok((parsed, listener_addr)), now) {
                next = Some(packet);
            }
        }
    }
}

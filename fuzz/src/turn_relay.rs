//! The TURN server (transports/turn/src/relay.rs): what clients send on each listener and what
//! relay sockets receive from peers, through `Relay::on_client` / `Relay::on_peer`, with time
//! moving on (`Relay::sweep`), as the server's tasks do.
//!
//! Input: records separated by [`crate::SEPARATOR`], each starting with a control byte: bits
//! 0-1 say where it comes from (a UDP, TCP or TLS client, or a peer datagram on the first
//! relay), bit 2 signs it (a STUN message that decodes gets USERNAME, REALM, NONCE and
//! MESSAGE-INTEGRITY of a valid credential, so the authenticated handlers see the fuzzer's
//! attributes), bits 3-7 advance the clock by that many seconds. A valid client has allocated
//! before the input starts, so permissions, channels and data have an allocation to act on.
//! Checked: nothing panics, nothing is relayed to anyone but the media plane, allocations stay
//! within their bound.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytecodec::{DecodeExt, EncodeExt};
use junction_turn::TurnSecret;
use junction_turn::relay::{Attribute, Client, Limits, Listener, MediaPeer, Out, Relay, RelayId};
use stun_codec::rfc5389::attributes::{MessageIntegrity, Nonce, Realm, Username};
use stun_codec::rfc5766::attributes::RequestedTransport;
use stun_codec::rfc5766::methods::ALLOCATE;
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};

const REALM: &str = "junction";
const MAX_ALLOCATIONS: usize = 4;

fn media() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 7882))
}

struct Signer {
    username: String,
    password: String,
    nonce: String,
}

impl Signer {
    /// Adds the credential and integrity to a message that decodes; `None` if it does not.
    fn sign(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut msg = MessageDecoder::<Attribute>::new().decode_from_bytes(bytes).ok()?.ok()?;
        let username = Username::new(self.username.clone()).ok()?;
        let realm = Realm::new(REALM.into()).ok()?;
        msg.add_attribute(username.clone());
        msg.add_attribute(realm.clone());
        msg.add_attribute(Nonce::new(self.nonce.clone()).ok()?);
        let integrity = MessageIntegrity::new_long_term_credential(&msg, &username, &realm, &self.password).ok()?;
        msg.add_attribute(integrity);
        MessageEncoder::new().encode_into_bytes(msg).ok()
    }
}

fn allocate_request() -> Vec<u8> {
    let mut msg = Message::<Attribute>::new(MessageClass::Request, ALLOCATE, TransactionId::new([7; 12]));
    msg.add_attribute(RequestedTransport::new(17));
    MessageEncoder::new().encode_into_bytes(msg).unwrap_or_default()
}

/// The nonce of the first response in `out` that has one.
fn nonce_of(out: &[Out]) -> Option<String> {
    out.iter().find_map(|o| match o {
        Out::ToClient { bytes, .. } => {
            let msg = MessageDecoder::<Attribute>::new().decode_from_bytes(bytes).ok()?.ok()?;
            msg.get_attribute::<Nonce>().map(|n| n.value().to_owned())
        }
        _ => None,
    })
}

pub fn run(data: &[u8]) {
    let secret = TurnSecret::new(b"fuzz".to_vec());
    let limits =
        Limits { max_allocations: MAX_ALLOCATIONS, max_allocations_per_credential: 2, bytes_per_second: 10_000 };
    let mut relay = Relay::new(REALM.into(), secret.clone(), vec![MediaPeer::same(media())], limits);
    let start = Instant::now();
    let wall = SystemTime::now();
    let credential = secret.mint("fuzzer", Duration::from_secs(3600), wall);
    let mut next_relay = 0u64;
    let mut open = || {
        next_relay += 1;
        Some((RelayId(next_relay), SocketAddr::from(([10, 0, 0, 2], 50_000 + next_relay as u16))))
    };
    let first = Client { listener: Listener::Udp, addr: SocketAddr::from(([192, 0, 2, 1], 5000)) };
    let challenge = relay.on_client(start, wall, first, &allocate_request(), &mut open);
    let Some(nonce) = nonce_of(&challenge.out) else { panic!("an unsigned Allocate is challenged with a nonce") };
    let signer = Signer { username: credential.username, password: credential.password, nonce };
    let signed = signer.sign(&allocate_request()).expect("signs");
    relay.on_client(start, wall, first, &signed, &mut open);
    assert_eq!(relay.allocations(), 1, "the valid client allocated");

    let mut now = start;
    for record in crate::records(data) {
        let Some((&control, body)) = record.split_first() else { continue };
        now += Duration::from_secs(u64::from(control >> 3));
        let signed = if control & 4 != 0 { signer.sign(body) } else { None };
        let body = signed.as_deref().unwrap_or(body);
        let listener = match control & 3 {
            0 => Some(Listener::Udp),
            1 => Some(Listener::Tcp),
            2 => Some(Listener::Tls),
            _ => None,
        };
        let step = match listener {
            Some(listener) => {
                // Mostly the allocated client; sometimes another address of the same listener.
                let port = if body.len() % 5 == 0 { 5001 } else { 5000 };
                let client = Client { listener, addr: SocketAddr::from(([192, 0, 2, 1], port)) };
                relay.on_client(now, wall, client, body, &mut open)
            }
            None => relay.on_peer(now, RelayId(1), media(), body),
        };
        for out in &step.out {
            if let Out::ToPeer { peer, .. } = out {
                assert_eq!(*peer, media(), "relayed to a peer other than the media plane");
            }
        }
        assert!(relay.allocations() <= MAX_ALLOCATIONS, "allocations past their bound");
        relay.sweep(now);
    }
}

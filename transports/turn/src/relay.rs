//! The TURN server's state machine (RFC 8656, UDP relays only), sans I/O: bytes from a client
//! or from a relay's peer, and the time, in; bytes to send out. [`crate::server`] drives it.
//!
//! Hand-written on `stun_codec` (messages, attributes, MESSAGE-INTEGRITY): the maintained Rust
//! TURN servers have no hook to restrict peers (webrtc-rs `turn`, medea-turn) or relay only
//! between their own clients (turn-rs), and this server must relay **only to Junction's media
//! plane**: CreatePermission for any other IP and ChannelBind for any other address are refused
//! 403, Send indications to any other address are dropped. It authenticates with the long-term
//! mechanism over ephemeral credentials ([`crate::credentials`]) and stateless nonces (an HMAC
//! of their time, stale after [`NONCE_LIFETIME`]), and bounds everything a client can grow:
//! allocations in all and per credential (486), lifetime (at most an hour), permissions and
//! channels (only the media addresses qualify), and bandwidth per allocation each way (a token
//! bucket; what exceeds it is dropped).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytecodec::{DecodeExt, EncodeExt};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use stun_codec::rfc5389::attributes::{
    ErrorCode, Fingerprint, MessageIntegrity, Nonce, Realm, Software, UnknownAttributes, Username, XorMappedAddress,
};
use stun_codec::rfc5389::errors::{BadRequest, StaleNonce, Unauthorized};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::rfc5766::attributes::{
    ChannelNumber, Data, DontFragment, EvenPort, Lifetime, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayAddress,
};
use stun_codec::rfc5766::errors::{
    AllocationMismatch, AllocationQuotaReached, Forbidden, InsufficientCapacity, UnsupportedTransportProtocol,
    WrongCredentials,
};
use stun_codec::rfc5766::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};

use crate::credentials::TurnSecret;

stun_codec::define_attribute_enums!(
    Attribute,
    AttributeDecoder,
    AttributeEncoder,
    [
        Username,
        MessageIntegrity,
        ErrorCode,
        UnknownAttributes,
        Realm,
        Nonce,
        XorMappedAddress,
        Software,
        Fingerprint,
        ChannelNumber,
        Lifetime,
        XorPeerAddress,
        Data,
        XorRelayAddress,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken
    ]
);

/// A nonce is good for this long; then the client is told 438 and retries with a new one.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(3600);
/// Allocation lifetimes: the default and the most a client may ask for.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// UDP, the only transport relayed (REQUESTED-TRANSPORT).
const PROTO_UDP: u8 = 17;

/// Which listener a client came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    Udp,
    Tcp,
    Tls,
}

/// A client: its listener and transport address (one allocation each, RFC 8656 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    pub listener: Listener,
    pub addr: SocketAddr,
}

/// Names one relay socket of the I/O layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u64);

/// What the I/O layer sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    ToClient {
        client: Client,
        bytes: Vec<u8>,
    },
    ToPeer {
        relay: RelayId,
        peer: SocketAddr,
        bytes: Vec<u8>,
    },
    /// The allocation is gone: its relay socket can close.
    CloseRelay(RelayId),
}

/// How much clients may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_allocations: usize,
    pub max_allocations_per_credential: usize,
    /// Bytes per second each way per allocation; 0: unlimited.
    pub bytes_per_second: u64,
}

struct Allocation {
    username: String,
    relay: RelayId,
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    /// Channel -> peer, with expiry.
    channels: HashMap<u16, (SocketAddr, Instant)>,
    to_peer: Bucket,
    to_client: Bucket,
}

impl Allocation {
    /// Whether a current permission covers `ip`.
    fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|until| *until > now)
    }

    /// The current channel bound to `peer`, if any.
    fn channel_to(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels.iter().find(|(_, (p, until))| *p == peer && *until > now).map(|(c, _)| *c)
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(now: Instant, rate: u64) -> Self {
        Self { tokens: rate as f64, at: now }
    }

    /// Takes `len` bytes, refilling at `rate` per second up to a second's worth.
    fn take(&mut self, now: Instant, rate: u64, len: usize) -> bool {
        if rate == 0 {
            return true;
        }
        let rate = rate as f64;
        self.tokens = (self.tokens + rate * now.saturating_duration_since(self.at).as_secs_f64()).min(rate);
        self.at = now;
        if self.tokens < len as f64 {
            return false;
        }
        self.tokens -= len as f64;
        true
    }
}

/// Why something a client sent went nowhere (metric labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Malformed,
    NoAllocation,
    NoPermission,
    PeerNotMedia,
    OverBandwidth,
}

impl Dropped {
    pub fn reason(self) -> &'static str {
        match self {
            Dropped::Malformed => "malformed",
            Dropped::NoAllocation => "no_allocation",
            Dropped::NoPermission => "no_permission",
            Dropped::PeerNotMedia => "peer_not_media",
            Dropped::OverBandwidth => "over_bandwidth",
        }
    }
}

/// One address of Junction's media plane: as clients know it (a candidate's address, maybe a
/// public one behind NAT) and where the relay delivers to it (its bound address on this host,
/// so relayed media never depends on the NAT sending it back in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPeer {
    pub advertised: SocketAddr,
    pub local: SocketAddr,
}

impl MediaPeer {
    /// A media address that is the same for clients and the relay.
    pub fn same(addr: SocketAddr) -> Self {
        Self { advertised: addr, local: addr }
    }
}

/// Where the relay sends what a client sends to `peer` (an advertised media address).
fn deliver_to(media: &[MediaPeer], peer: SocketAddr) -> SocketAddr {
    media.iter().find(|m| m.advertised == peer).map_or(peer, |m| m.local)
}

/// Whether `addr` is one of the media plane's addresses as clients know them (a peer).
fn is_media(media: &[MediaPeer], addr: SocketAddr) -> bool {
    media.iter().any(|m| m.advertised == addr)
}

/// Whether `ip` is a media plane host (what a permission may name: permissions are per IP).
fn is_media_ip(media: &[MediaPeer], ip: IpAddr) -> bool {
    media.iter().any(|m| m.advertised.ip() == ip)
}

/// The state of one TURN server.
pub struct Relay {
    realm: String,
    secret: TurnSecret,
    nonce_key: [u8; 32],
    /// Junction's media plane: the only peers.
    media: Vec<MediaPeer>,
    limits: Limits,
    allocations: HashMap<Client, Allocation>,
    by_relay: HashMap<RelayId, Client>,
    per_username: HashMap<String, usize>,
}

/// The outcome of one input: what to send, and what was dropped (for the metrics).
#[derive(Debug, Default)]
pub struct Step {
    pub out: Vec<Out>,
    pub dropped: Option<Dropped>,
    /// An error response was sent: its code.
    pub refused: Option<u16>,
}

impl Step {
    fn drop(reason: Dropped) -> Step {
        Step { dropped: Some(reason), ..Step::default() }
    }
}

type Msg = Message<Attribute>;

fn decode(bytes: &[u8]) -> Option<Msg> {
    MessageDecoder::<Attribute>::new().decode_from_bytes(bytes).ok()?.ok()
}

fn encode(msg: Msg) -> Vec<u8> {
    // Encoding a message built here only fails for attributes out of range, which none are.
    MessageEncoder::new().encode_into_bytes(msg).unwrap_or_default()
}

fn is_channel_data(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| (0x40..0x80).contains(b))
}

/// ChannelData for `channel`, padded to 4 bytes on stream listeners (RFC 8656 §12.5).
fn channel_data(channel: u16, data: &[u8], listener: Listener) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    if listener != Listener::Udp {
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

impl Relay {
    pub fn new(realm: String, secret: TurnSecret, media: Vec<MediaPeer>, limits: Limits) -> Self {
        Self {
            realm,
            secret,
            nonce_key: rand::random(),
            media,
            limits,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_username: HashMap::new(),
        }
    }

    pub fn allocations(&self) -> usize {
        self.allocations.len()
    }

    /// A nonce: its issue time and an HMAC of it, so nothing is kept per client.
    fn nonce(&self, now: SystemTime) -> String {
        let issued = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format!("{issued:x}-{}", self.nonce_tag(issued))
    }

    fn nonce_tag(&self, issued: u64) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.nonce_key).expect("any key length");
        mac.update(&issued.to_be_bytes());
        mac.finalize().into_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn nonce_fresh(&self, nonce: &str, now: SystemTime) -> bool {
        let Some((issued, tag)) = nonce.split_once('-') else { return false };
        let Ok(issued) = u64::from_str_radix(issued, 16) else { return false };
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        tag == self.nonce_tag(issued) && now.saturating_sub(issued) < NONCE_LIFETIME.as_secs()
    }

    /// Handles bytes from a client.
    pub fn on_client(
        &mut self,
        now: Instant,
        wall: SystemTime,
        client: Client,
        bytes: &[u8],
        open_relay: &mut dyn FnMut() -> Option<(RelayId, SocketAddr)>,
    ) -> Step {
        if is_channel_data(bytes) {
            return self.channel_data_from_client(now, client, bytes);
        }
        let Some(msg) = decode(bytes) else { return Step::drop(Dropped::Malformed) };
        match (msg.class(), msg.method()) {
            (MessageClass::Request, BINDING) => {
                let mut response = Msg::new(MessageClass::SuccessResponse, BINDING, msg.transaction_id());
                response.add_attribute(XorMappedAddress::new(client.addr));
                self.reply(client, response, None)
            }
            (MessageClass::Indication, SEND) => self.send_indication(now, client, &msg),
            (MessageClass::Request, method)
                if [ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND].contains(&method) =>
            {
                let (username, password) = match self.authenticate(&msg, wall) {
                    Ok(credential) => credential,
                    Err(challenge) => return self.reply(client, challenge, None),
                };
                self.authenticated(now, client, &msg, username, password, open_relay)
            }
            _ => Step::default(),
        }
    }

    /// The username and password of a request whose integrity verifies with a fresh nonce, or
    /// the 400/401/438 to answer.
    fn authenticate(&self, msg: &Msg, wall: SystemTime) -> Result<(String, String), Msg> {
        let challenge = |code: ErrorCode| {
            let mut response = Msg::new(MessageClass::ErrorResponse, msg.method(), msg.transaction_id());
            response.add_attribute(code);
            if let Ok(realm) = Realm::new(self.realm.clone()) {
                response.add_attribute(realm);
            }
            if let Ok(nonce) = Nonce::new(self.nonce(wall)) {
                response.add_attribute(nonce);
            }
            response
        };
        let Some(integrity) = msg.get_attribute::<MessageIntegrity>() else {
            return Err(challenge(Unauthorized.into()));
        };
        let (Some(username), Some(nonce)) = (msg.get_attribute::<Username>(), msg.get_attribute::<Nonce>()) else {
            return Err(challenge(BadRequest.into()));
        };
        if !self.nonce_fresh(nonce.value(), wall) {
            return Err(challenge(StaleNonce.into()));
        }
        let Ok(password) = self.secret.password_for(username.name(), wall) else {
            return Err(challenge(Unauthorized.into()));
        };
        let realm = Realm::new(self.realm.clone()).map_err(|_| challenge(Unauthorized.into()))?;
        if integrity.check_long_term_credential(username, &realm, &password).is_err() {
            return Err(challenge(Unauthorized.into()));
        }
        Ok((username.name().to_owned(), password))
    }

    fn authenticated(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Msg,
        username: String,
        password: String,
        open_relay: &mut dyn FnMut() -> Option<(RelayId, SocketAddr)>,
    ) -> Step {
        let sign = Some((username.as_str(), password.as_str()));
        let error = |code: ErrorCode| {
            let mut response = Msg::new(MessageClass::ErrorResponse, msg.method(), msg.transaction_id());
            response.add_attribute(code);
            response
        };
        if msg.method() == ALLOCATE {
            return match self.allocate(now, client, msg, &username, open_relay) {
                Ok(response) => self.reply(client, response, sign),
                Err(code) => self.reply(client, error(code), sign),
            };
        }
        let Some(allocation) = self.allocations.get_mut(&client) else {
            return self.reply(client, error(AllocationMismatch.into()), sign);
        };
        if allocation.username != username {
            return self.reply(client, error(WrongCredentials.into()), sign);
        }
        let mut response = Msg::new(MessageClass::SuccessResponse, msg.method(), msg.transaction_id());
        let peers: Vec<SocketAddr> = msg
            .attributes()
            .filter_map(|a| if let Attribute::XorPeerAddress(p) = a { Some(p.address()) } else { None })
            .collect();
        match msg.method() {
            REFRESH => {
                let asked = msg.get_attribute::<Lifetime>().map_or(DEFAULT_LIFETIME, |l| l.lifetime());
                if asked.is_zero() {
                    let step_out = self.remove(client);
                    response.add_attribute(Lifetime::new(Duration::ZERO).expect("zero fits"));
                    let mut step = self.reply(client, response, sign);
                    step.out.extend(step_out);
                    return step;
                }
                let lifetime = asked.min(MAX_LIFETIME);
                allocation.expires = now + lifetime;
                response.add_attribute(Lifetime::new(lifetime).expect("an hour fits"));
            }
            CREATE_PERMISSION => {
                if peers.is_empty() {
                    return self.reply(client, error(BadRequest.into()), sign);
                }
                if peers.iter().any(|p| !is_media_ip(&self.media, p.ip())) {
                    return self.reply(client, error(Forbidden.into()), sign);
                }
                for peer in peers {
                    allocation.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
                }
            }
            CHANNEL_BIND => {
                let channel = msg.get_attribute::<ChannelNumber>().map(|c| c.value());
                let (Some(channel), [peer]) = (channel, peers.as_slice()) else {
                    return self.reply(client, error(BadRequest.into()), sign);
                };
                if !(0x4000..=0x7fff).contains(&channel) {
                    return self.reply(client, error(BadRequest.into()), sign);
                }
                if !is_media(&self.media, *peer) {
                    return self.reply(client, error(Forbidden.into()), sign);
                }
                let taken = allocation.channels.iter().any(|(c, (p, _))| (*c == channel) != (p == peer));
                if taken {
                    return self.reply(client, error(BadRequest.into()), sign);
                }
                allocation.channels.insert(channel, (*peer, now + CHANNEL_LIFETIME));
                allocation.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
            }
            _ => return Step::default(),
        }
        self.reply(client, response, sign)
    }

    fn allocate(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Msg,
        username: &str,
        open_relay: &mut dyn FnMut() -> Option<(RelayId, SocketAddr)>,
    ) -> Result<Msg, ErrorCode> {
        if self.allocations.contains_key(&client) {
            return Err(AllocationMismatch.into());
        }
        match msg.get_attribute::<RequestedTransport>() {
            None => return Err(BadRequest.into()),
            Some(t) if t.protocol() != PROTO_UDP => return Err(UnsupportedTransportProtocol.into()),
            Some(_) => {}
        }
        if msg.get_attribute::<ReservationToken>().is_some() || msg.get_attribute::<EvenPort>().is_some() {
            // Reserved port pairs are for RTP/RTCP on separate ports, which WebRTC does not use.
            return Err(BadRequest.into());
        }
        let held = self.per_username.get(username).copied().unwrap_or(0);
        if held >= self.limits.max_allocations_per_credential || self.allocations.len() >= self.limits.max_allocations {
            return Err(AllocationQuotaReached.into());
        }
        let Some((relay, relay_addr)) = open_relay() else { return Err(InsufficientCapacity.into()) };
        let lifetime = msg
            .get_attribute::<Lifetime>()
            .map_or(DEFAULT_LIFETIME, |l| l.lifetime())
            .clamp(DEFAULT_LIFETIME, MAX_LIFETIME);
        let rate = self.limits.bytes_per_second;
        self.allocations.insert(
            client,
            Allocation {
                username: username.to_owned(),
                relay,
                expires: now + lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                to_peer: Bucket::new(now, rate),
                to_client: Bucket::new(now, rate),
            },
        );
        self.by_relay.insert(relay, client);
        *self.per_username.entry(username.to_owned()).or_default() += 1;
        let mut response = Msg::new(MessageClass::SuccessResponse, ALLOCATE, msg.transaction_id());
        response.add_attribute(XorRelayAddress::new(relay_addr));
        response.add_attribute(Lifetime::new(lifetime).expect("an hour fits"));
        response.add_attribute(XorMappedAddress::new(client.addr));
        Ok(response)
    }

    fn send_indication(&mut self, now: Instant, client: Client, msg: &Msg) -> Step {
        let (Some(peer), Some(data)) = (msg.get_attribute::<XorPeerAddress>(), msg.get_attribute::<Data>()) else {
            return Step::drop(Dropped::Malformed);
        };
        let peer = peer.address();
        if !is_media(&self.media, peer) {
            return Step::drop(Dropped::PeerNotMedia);
        }
        let rate = self.limits.bytes_per_second;
        let Some(allocation) = self.allocations.get_mut(&client) else { return Step::drop(Dropped::NoAllocation) };
        if !allocation.permits(peer.ip(), now) {
            return Step::drop(Dropped::NoPermission);
        }
        if !allocation.to_peer.take(now, rate, data.data().len()) {
            return Step::drop(Dropped::OverBandwidth);
        }
        let peer = deliver_to(&self.media, peer);
        Step {
            out: vec![Out::ToPeer { relay: allocation.relay, peer, bytes: data.data().to_vec() }],
            ..Step::default()
        }
    }

    fn channel_data_from_client(&mut self, now: Instant, client: Client, bytes: &[u8]) -> Step {
        if bytes.len() < 4 {
            return Step::drop(Dropped::Malformed);
        }
        let channel = u16::from_be_bytes([bytes[0], bytes[1]]);
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let Some(data) = bytes.get(4..4 + len) else { return Step::drop(Dropped::Malformed) };
        let rate = self.limits.bytes_per_second;
        let Some(allocation) = self.allocations.get_mut(&client) else { return Step::drop(Dropped::NoAllocation) };
        let Some((peer, until)) = allocation.channels.get(&channel).copied() else {
            return Step::drop(Dropped::NoPermission);
        };
        if until <= now {
            return Step::drop(Dropped::NoPermission);
        }
        if !allocation.to_peer.take(now, rate, len) {
            return Step::drop(Dropped::OverBandwidth);
        }
        let peer = deliver_to(&self.media, peer);
        Step { out: vec![Out::ToPeer { relay: allocation.relay, peer, bytes: data.to_vec() }], ..Step::default() }
    }

    /// Handles a datagram that arrived on a relay socket from `from`.
    pub fn on_peer(&mut self, now: Instant, relay: RelayId, from: SocketAddr, bytes: &[u8]) -> Step {
        let Some(client) = self.by_relay.get(&relay).copied() else { return Step::drop(Dropped::NoAllocation) };
        let rate = self.limits.bytes_per_second;
        let Some(allocation) = self.allocations.get_mut(&client) else { return Step::drop(Dropped::NoAllocation) };
        // Only the media plane's own port speaks through a relay (permissions are per IP). It
        // is shown to the client as the address the client knows it by: the one it has a
        // channel to, else one it has a permission for.
        let mut known = self.media.iter().filter(|m| m.local == from).map(|m| m.advertised).peekable();
        if known.peek().is_none() {
            return Step::drop(Dropped::PeerNotMedia);
        }
        let on_channel = known.clone().find_map(|a| allocation.channel_to(a, now).map(|c| (a, Some(c))));
        let Some((from, channel)) =
            on_channel.or_else(|| known.find(|a| allocation.permits(a.ip(), now)).map(|a| (a, None)))
        else {
            return Step::drop(Dropped::NoPermission);
        };
        if !allocation.to_client.take(now, rate, bytes.len()) {
            return Step::drop(Dropped::OverBandwidth);
        }
        let bytes = match channel {
            Some(channel) => channel_data(channel, bytes, client.listener),
            None => {
                let mut indication = Msg::new(MessageClass::Indication, DATA, TransactionId::new(rand::random()));
                indication.add_attribute(XorPeerAddress::new(from));
                let Ok(data) = Data::new(bytes.to_vec()) else { return Step::drop(Dropped::Malformed) };
                indication.add_attribute(data);
                encode(indication)
            }
        };
        Step { out: vec![Out::ToClient { client, bytes }], ..Step::default() }
    }

    /// A stream client's connection ended: so does its allocation (RFC 8656 §3.1).
    pub fn client_gone(&mut self, client: Client) -> Vec<Out> {
        self.remove(client)
    }

    /// Ends expired allocations, permissions and channels.
    pub fn sweep(&mut self, now: Instant) -> Vec<Out> {
        let expired: Vec<Client> = self.allocations.iter().filter(|(_, a)| a.expires <= now).map(|(c, _)| *c).collect();
        let mut out = Vec::new();
        for client in expired {
            out.extend(self.remove(client));
        }
        for allocation in self.allocations.values_mut() {
            allocation.permissions.retain(|_, until| *until > now);
            allocation.channels.retain(|_, (_, until)| *until > now);
        }
        out
    }

    fn remove(&mut self, client: Client) -> Vec<Out> {
        let Some(allocation) = self.allocations.remove(&client) else { return Vec::new() };
        self.by_relay.remove(&allocation.relay);
        if let Some(count) = self.per_username.get_mut(&allocation.username) {
            *count -= 1;
            if *count == 0 {
                self.per_username.remove(&allocation.username);
            }
        }
        vec![Out::CloseRelay(allocation.relay)]
    }

    /// Encodes a response, signed with the client's credential when given, with a FINGERPRINT.
    fn reply(&self, client: Client, mut response: Msg, sign: Option<(&str, &str)>) -> Step {
        let refused = response.get_attribute::<ErrorCode>().map(|e| e.code());
        if let Some((username, password)) = sign
            && let (Ok(username), Ok(realm)) = (Username::new(username.to_owned()), Realm::new(self.realm.clone()))
            && let Ok(integrity) = MessageIntegrity::new_long_term_credential(&response, &username, &realm, password)
        {
            response.add_attribute(integrity);
        }
        if let Ok(fingerprint) = Fingerprint::new(&response) {
            response.add_attribute(fingerprint);
        }
        Step { out: vec![Out::ToClient { client, bytes: encode(response) }], dropped: None, refused }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "junction";
    const MEDIA: &str = "10.0.0.1:7882";

    fn relay(limits: Limits) -> Relay {
        Relay::new(
            REALM.into(),
            TurnSecret::new(b"s3cret".to_vec()),
            vec![MediaPeer::same(MEDIA.parse().unwrap())],
            limits,
        )
    }

    fn limits() -> Limits {
        Limits { max_allocations: 100, max_allocations_per_credential: 2, bytes_per_second: 0 }
    }

    fn client(port: u16, listener: Listener) -> Client {
        Client { listener, addr: SocketAddr::from(([192, 0, 2, 1], port)) }
    }

    /// A test client: its credential and the nonce it was last given.
    struct Tester {
        client: Client,
        username: String,
        password: String,
        nonce: Option<String>,
        next_relay: u64,
    }

    impl Tester {
        fn new(relay: &Relay, client: Client, identity: &str) -> Tester {
            let credential = relay.secret.mint(identity, Duration::from_secs(600), SystemTime::now());
            Tester { client, username: credential.username, password: credential.password, nonce: None, next_relay: 1 }
        }

        fn request(&self, method: stun_codec::Method, attributes: Vec<Attribute>, sign: bool) -> Vec<u8> {
            let mut msg = Msg::new(MessageClass::Request, method, TransactionId::new(rand::random()));
            for attribute in attributes {
                msg.add_attribute(attribute);
            }
            if sign {
                let username = Username::new(self.username.clone()).unwrap();
                let realm = Realm::new(REALM.into()).unwrap();
                msg.add_attribute(username.clone());
                msg.add_attribute(realm.clone());
                msg.add_attribute(Nonce::new(self.nonce.clone().unwrap_or_default()).unwrap());
                let integrity =
                    MessageIntegrity::new_long_term_credential(&msg, &username, &realm, &self.password).unwrap();
                msg.add_attribute(integrity);
            }
            encode(msg)
        }

        /// Sends `bytes` and returns the one response, decoded (learning a new nonce from it).
        fn exchange(&mut self, relay: &mut Relay, bytes: &[u8]) -> Msg {
            let mut next = self.next_relay;
            let mut open = || {
                next += 1;
                Some((RelayId(next), SocketAddr::from(([10, 0, 0, 2], 50_000 + next as u16))))
            };
            let step = relay.on_client(Instant::now(), SystemTime::now(), self.client, bytes, &mut open);
            self.next_relay = next;
            let [Out::ToClient { client, bytes }] = step.out.as_slice() else { panic!("one response: {:?}", step.out) };
            assert_eq!(*client, self.client);
            let response = decode(bytes).expect("a STUN response");
            if let Some(nonce) = response.get_attribute::<Nonce>() {
                self.nonce = Some(nonce.value().to_owned());
            }
            response
        }

        fn code(response: &Msg) -> Option<u16> {
            response.get_attribute::<ErrorCode>().map(|e| e.code())
        }

        /// Allocates (after the 401 challenge); returns the relayed address or the error code.
        fn allocate(&mut self, relay: &mut Relay) -> Result<SocketAddr, u16> {
            let udp = || vec![Attribute::RequestedTransport(RequestedTransport::new(PROTO_UDP))];
            let challenge = self.exchange(relay, &self.request(ALLOCATE, udp(), false));
            assert_eq!(Self::code(&challenge), Some(401), "an unsigned Allocate is challenged");
            let response = self.exchange(relay, &self.request(ALLOCATE, udp(), true));
            match Self::code(&response) {
                Some(code) => Err(code),
                None => Ok(response.get_attribute::<XorRelayAddress>().expect("a relayed address").address()),
            }
        }

        fn peer_request(
            &mut self,
            relay: &mut Relay,
            method: stun_codec::Method,
            peer: &str,
            channel: Option<u16>,
        ) -> Option<u16> {
            let mut attributes = vec![Attribute::XorPeerAddress(XorPeerAddress::new(peer.parse().unwrap()))];
            if let Some(channel) = channel {
                attributes.push(Attribute::ChannelNumber(ChannelNumber::new(channel).unwrap()));
            }
            let response = self.exchange(relay, &self.request(method, attributes, true));
            let signed = response.get_attribute::<MessageIntegrity>().is_some();
            assert!(signed, "responses to authenticated requests are signed");
            Self::code(&response)
        }
    }

    #[test]
    fn a_client_allocates_and_relays_only_to_the_media_plane() {
        let mut relay = relay(limits());
        let mut alice = Tester::new(&relay, client(5000, Listener::Udp), "alice");
        let relayed = alice.allocate(&mut relay).expect("allocated");
        assert_eq!(relayed.ip(), IpAddr::from([10, 0, 0, 2]));

        // Permissions: the media plane's IP only; channels: its exact address only.
        assert_eq!(alice.peer_request(&mut relay, CREATE_PERMISSION, "203.0.113.9:7882", None), Some(403));
        assert_eq!(
            alice.peer_request(&mut relay, CREATE_PERMISSION, "10.0.0.1:9", None),
            None,
            "permissions are per IP"
        );
        // With a permission and no channel, the media plane's packets come as Data indications;
        // another port of its host is no peer, permission or not.
        let now = Instant::now();
        let step = relay.on_peer(now, RelayId(2), MEDIA.parse().unwrap(), b"x");
        let [Out::ToClient { bytes, .. }] = step.out.as_slice() else { panic!("{:?}", step.out) };
        let indication = decode(bytes).unwrap();
        assert_eq!((indication.class(), indication.method()), (MessageClass::Indication, DATA));
        assert_eq!(indication.get_attribute::<Data>().unwrap().data(), b"x");
        let step = relay.on_peer(now, RelayId(2), "10.0.0.1:9".parse().unwrap(), b"x");
        assert_eq!((step.out.len(), step.dropped), (0, Some(Dropped::PeerNotMedia)));
        assert_eq!(alice.peer_request(&mut relay, CHANNEL_BIND, "10.0.0.1:22", Some(0x4001)), Some(403));
        assert_eq!(alice.peer_request(&mut relay, CHANNEL_BIND, MEDIA, Some(0x4001)), None);

        // ChannelData goes to the media plane; its answer comes back on the channel.
        let mut open = || None;
        let data = channel_data(0x4001, b"stun check", Listener::Udp);
        let step = relay.on_client(now, SystemTime::now(), alice.client, &data, &mut open);
        let [Out::ToPeer { peer, bytes, .. }] = step.out.as_slice() else { panic!("{:?}", step.out) };
        assert_eq!((peer.to_string().as_str(), bytes.as_slice()), (MEDIA, &b"stun check"[..]));
        let step = relay.on_peer(now, RelayId(2), MEDIA.parse().unwrap(), b"answer");
        assert_eq!(
            step.out,
            vec![Out::ToClient { client: alice.client, bytes: channel_data(0x4001, b"answer", Listener::Udp) }]
        );
        // Anything from elsewhere is dropped.
        assert_eq!(
            relay.on_peer(now, RelayId(2), "203.0.113.9:1".parse().unwrap(), b"x").dropped,
            Some(Dropped::PeerNotMedia)
        );

        // A Send indication to another port of the media host is dropped here.
        let mut send = Msg::new(MessageClass::Indication, SEND, TransactionId::new([1; 12]));
        send.add_attribute(XorPeerAddress::new("10.0.0.1:22".parse().unwrap()));
        send.add_attribute(Data::new(b"ssh?".to_vec()).unwrap());
        let step = relay.on_client(now, SystemTime::now(), alice.client, &encode(send), &mut open);
        assert_eq!((step.out.len(), step.dropped), (0, Some(Dropped::PeerNotMedia)));
    }

    #[test]
    fn behind_nat_the_relay_reaches_the_media_plane_at_its_bound_address() {
        let media = MediaPeer { advertised: "203.0.113.7:7882".parse().unwrap(), local: MEDIA.parse().unwrap() };
        let mut relay = Relay::new(REALM.into(), TurnSecret::new(b"s3cret".to_vec()), vec![media], limits());
        let mut dave = Tester::new(&relay, client(8000, Listener::Udp), "dave");
        dave.allocate(&mut relay).unwrap();
        assert_eq!(
            dave.peer_request(&mut relay, CREATE_PERMISSION, MEDIA, None),
            Some(403),
            "the private address is no peer"
        );
        assert_eq!(dave.peer_request(&mut relay, CHANNEL_BIND, "203.0.113.7:7882", Some(0x4003)), None);
        let now = Instant::now();
        let mut open = || None;
        let step = relay.on_client(
            now,
            SystemTime::now(),
            dave.client,
            &channel_data(0x4003, b"rtp", Listener::Udp),
            &mut open,
        );
        let [Out::ToPeer { peer, .. }] = step.out.as_slice() else { panic!("{:?}", step.out) };
        assert_eq!(peer.to_string(), MEDIA, "delivered on this host, not through the NAT");
        let step = relay.on_peer(now, RelayId(2), MEDIA.parse().unwrap(), b"back");
        assert_eq!(
            step.out,
            vec![Out::ToClient { client: dave.client, bytes: channel_data(0x4003, b"back", Listener::Udp) }]
        );
        let step = relay.on_peer(now, RelayId(2), "203.0.113.7:7882".parse().unwrap(), b"spoofed");
        assert_eq!(step.dropped, Some(Dropped::PeerNotMedia), "the public address never sends to a relay itself");
    }

    #[test]
    fn forged_expired_and_stale_credentials_are_refused() {
        let mut relay = relay(limits());
        let mut mallory = Tester::new(&relay, client(5001, Listener::Udp), "mallory");
        mallory.password = "guessed".into();
        assert_eq!(mallory.allocate(&mut relay), Err(401));

        let mut late = Tester::new(&relay, client(5002, Listener::Udp), "late");
        let expired = relay.secret.mint("late", Duration::ZERO, SystemTime::now() - Duration::from_secs(5));
        (late.username, late.password) = (expired.username, expired.password);
        assert_eq!(late.allocate(&mut relay), Err(401), "an expired credential");

        let mut old = Tester::new(&relay, client(5003, Listener::Udp), "old");
        let udp = vec![Attribute::RequestedTransport(RequestedTransport::new(PROTO_UDP))];
        old.nonce = Some(format!("{:x}-{}", 1_000, relay.nonce_tag(1_000)));
        let response = old.exchange(&mut relay, &old.request(ALLOCATE, udp.clone(), true));
        assert_eq!(Tester::code(&response), Some(438), "a nonce from long ago is stale");
        old.nonce = Some("0-0000000000000000".into());
        let response = old.exchange(&mut relay, &old.request(ALLOCATE, udp, true));
        assert_eq!(Tester::code(&response), Some(438), "a forged nonce is stale");
        assert_eq!(relay.allocations(), 0);
    }

    #[test]
    fn allocations_are_bounded_per_credential_and_freed_by_refresh_zero_and_expiry() {
        let mut relay = relay(limits());
        let mut first = Tester::new(&relay, client(6000, Listener::Udp), "bob");
        let mut second = Tester::new(&relay, client(6001, Listener::Tcp), "bob");
        let mut third = Tester::new(&relay, client(6002, Listener::Udp), "bob");
        (second.username, second.password) = (first.username.clone(), first.password.clone());
        (third.username, third.password) = (first.username.clone(), first.password.clone());
        assert!(first.allocate(&mut relay).is_ok() && second.allocate(&mut relay).is_ok());
        assert_eq!(third.allocate(&mut relay), Err(486), "two per credential");
        assert_eq!(first.allocate(&mut relay), Err(437), "one allocation per client address");

        // Refresh with lifetime 0 deletes the allocation and closes its relay socket.
        let zero = vec![Attribute::Lifetime(Lifetime::new(Duration::ZERO).unwrap())];
        let mut open = || None;
        let bytes = first.request(REFRESH, zero, true);
        let step = relay.on_client(Instant::now(), SystemTime::now(), first.client, &bytes, &mut open);
        assert!(step.out.iter().any(|o| matches!(o, Out::CloseRelay(_))), "{:?}", step.out);
        assert!(third.allocate(&mut relay).is_ok(), "the freed place is taken");

        // A stream client's connection ends its allocation; expiry ends the rest.
        assert_eq!(relay.client_gone(second.client).len(), 1);
        assert_eq!(relay.sweep(Instant::now() + MAX_LIFETIME + Duration::from_secs(1)).len(), 1);
        assert_eq!(relay.allocations(), 0);
        assert!(relay.per_username.is_empty());
    }

    #[test]
    fn bandwidth_per_allocation_is_bounded_and_stream_channel_data_is_padded() {
        let mut relay = relay(Limits { bytes_per_second: 1000, ..limits() });
        let mut carol = Tester::new(&relay, client(7000, Listener::Tls), "carol");
        carol.allocate(&mut relay).unwrap();
        assert_eq!(carol.peer_request(&mut relay, CHANNEL_BIND, MEDIA, Some(0x4002)), None);
        let now = Instant::now();
        let mut open = || None;
        let packet = channel_data(0x4002, &[7u8; 301], Listener::Tls);
        assert_eq!(packet.len() % 4, 0, "padded on a stream");
        let passed = (0..5)
            .filter(|_| relay.on_client(now, SystemTime::now(), carol.client, &packet, &mut open).dropped.is_none())
            .count();
        assert_eq!(passed, 3, "1000 bytes a second: three 301-byte packets, not five");
        let later = now + Duration::from_secs(1);
        assert!(
            relay.on_client(later, SystemTime::now(), carol.client, &packet, &mut open).dropped.is_none(),
            "refilled"
        );
        // Garbage is dropped, never a panic.
        for junk in [&[0x40u8][..], &[0x40, 1, 0xff, 0xff], &[0, 1, 0, 8, 0x21, 0x12], b"\x00\x03\x00\x00"] {
            assert!(relay.on_client(now, SystemTime::now(), carol.client, junk, &mut open).out.is_empty());
        }
    }
}

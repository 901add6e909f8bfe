//! A minimal TURN client for the load tool (RFC 8656 over UDP): one allocation per peer, one
//! channel to the server's media address, its datagrams carried as ChannelData. Enough to put a
//! str0m peer behind a relay (its local candidate is the relayed address), so that a run
//! measures what relaying costs the server. Written on stun_codec (messages and long-term
//! MESSAGE-INTEGRITY); the maintained TURN clients own their sockets and cannot sit under a
//! sans-I/O `Rtc`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::rfc5389::attributes::{ErrorCode, MessageIntegrity, Nonce, Realm, Username};
use stun_codec::rfc5766::attributes::{ChannelNumber, Lifetime, RequestedTransport, XorPeerAddress, XorRelayAddress};
use stun_codec::rfc5766::methods::{ALLOCATE, CHANNEL_BIND, REFRESH};
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, Method, TransactionId};
use tokio::net::UdpSocket;

stun_codec::define_attribute_enums!(
    Attribute,
    AttributeDecoder,
    AttributeEncoder,
    [
        Username,
        MessageIntegrity,
        ErrorCode,
        Realm,
        Nonce,
        XorRelayAddress,
        XorPeerAddress,
        ChannelNumber,
        Lifetime,
        RequestedTransport
    ]
);

/// The one channel a peer binds (to the server's media address).
const CHANNEL: u16 = 0x4000;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A TURN server and a credential for it, as the tokens endpoint hands them out.
#[derive(Debug, Clone)]
pub struct TurnServer {
    pub addr: SocketAddr,
    pub username: String,
    pub password: String,
}

/// One allocation.
pub struct Relay {
    pub server: SocketAddr,
    /// The relayed transport address (the peer's local candidate).
    pub relayed: SocketAddr,
    /// The peer the channel is bound to.
    pub peer: Option<SocketAddr>,
    username: String,
    password: String,
    realm: String,
    nonce: String,
}

type Msg = Message<Attribute>;

fn request(method: Method) -> Msg {
    Msg::new(MessageClass::Request, method, TransactionId::new(rand::random()))
}

fn encode(msg: Msg) -> anyhow::Result<Vec<u8>> {
    MessageEncoder::new().encode_into_bytes(msg).map_err(|err| anyhow::anyhow!("cannot encode a STUN message: {err}"))
}

fn decode(bytes: &[u8]) -> Option<Msg> {
    MessageDecoder::<Attribute>::new().decode_from_bytes(bytes).ok()?.ok()
}

/// Sends `bytes` to `server` and waits for the answer to that transaction.
async fn exchange(socket: &UdpSocket, server: SocketAddr, bytes: &[u8]) -> anyhow::Result<Msg> {
    let id = decode(bytes).context("a request of ours")?.transaction_id();
    socket.send_to(bytes, server).await?;
    let mut buf = [0u8; 1500];
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        loop {
            let (len, from) = socket.recv_from(&mut buf).await?;
            if from == server
                && let Some(msg) = decode(&buf[..len])
                && msg.transaction_id() == id
            {
                return Ok(msg);
            }
        }
    })
    .await
    .context("the TURN server did not answer")?
}

impl Relay {
    /// Allocates on `server` from `socket`: the 401 challenge, then the signed request.
    pub async fn allocate(socket: &UdpSocket, server: &TurnServer) -> anyhow::Result<Relay> {
        let mut allocate = request(ALLOCATE);
        allocate.add_attribute(RequestedTransport::new(17));
        let challenge = exchange(socket, server.addr, &encode(allocate)?).await?;
        let (Some(realm), Some(nonce)) = (challenge.get_attribute::<Realm>(), challenge.get_attribute::<Nonce>())
        else {
            bail!("the TURN server sent no challenge");
        };
        let mut relay = Relay {
            server: server.addr,
            relayed: server.addr,
            peer: None,
            username: server.username.clone(),
            password: server.password.clone(),
            realm: realm.text().to_owned(),
            nonce: nonce.value().to_owned(),
        };
        let mut allocate = request(ALLOCATE);
        allocate.add_attribute(RequestedTransport::new(17));
        let answer = exchange(socket, server.addr, &relay.sign(allocate)?).await?;
        if let Some(error) = answer.get_attribute::<ErrorCode>() {
            bail!("TURN Allocate refused: {} {}", error.code(), error.reason_phrase());
        }
        relay.relayed = answer.get_attribute::<XorRelayAddress>().context("no relayed address")?.address();
        Ok(relay)
    }

    /// Binds the channel to `peer` (the server's media address) and waits for the answer.
    pub async fn bind(&mut self, socket: &UdpSocket, peer: SocketAddr) -> anyhow::Result<()> {
        let mut bind = request(CHANNEL_BIND);
        bind.add_attribute(ChannelNumber::new(CHANNEL).expect("a channel number"));
        bind.add_attribute(XorPeerAddress::new(peer));
        let answer = exchange(socket, self.server, &self.sign(bind)?).await?;
        if let Some(error) = answer.get_attribute::<ErrorCode>() {
            bail!("TURN ChannelBind refused: {} {}", error.code(), error.reason_phrase());
        }
        self.peer = Some(peer);
        Ok(())
    }

    /// A Refresh with lifetime 0, which ends the allocation (sent when the peer goes, so that a
    /// later run reusing the port is not refused 437).
    pub fn deallocate(&self) -> Option<Vec<u8>> {
        let mut refresh = request(REFRESH);
        refresh.add_attribute(Lifetime::new(Duration::ZERO).ok()?);
        self.sign(refresh).ok()
    }

    fn sign(&self, mut msg: Msg) -> anyhow::Result<Vec<u8>> {
        let username = Username::new(self.username.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let realm = Realm::new(self.realm.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        msg.add_attribute(username.clone());
        msg.add_attribute(realm.clone());
        msg.add_attribute(Nonce::new(self.nonce.clone()).map_err(|e| anyhow::anyhow!("{e}"))?);
        let integrity = MessageIntegrity::new_long_term_credential(&msg, &username, &realm, &self.password)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        msg.add_attribute(integrity);
        encode(msg)
    }

    /// `contents` for the bound peer, as ChannelData.
    pub fn wrap(&self, contents: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(contents.len() + 4);
        out.extend_from_slice(&CHANNEL.to_be_bytes());
        out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
        out.extend_from_slice(contents);
        out
    }

    /// What the bound peer sent, if `bytes` is ChannelData on our channel.
    pub fn unwrap<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        if bytes.len() < 4 || u16::from_be_bytes([bytes[0], bytes[1]]) != CHANNEL {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        bytes.get(4..4 + len)
    }
}

/// The server's UDP media address: the first UDP candidate of an SDP answer.
pub fn udp_candidate(answer: &str) -> Option<SocketAddr> {
    answer.lines().find_map(|line| {
        let fields: Vec<&str> = line.strip_prefix("a=candidate:")?.split_whitespace().collect();
        if !fields.get(2)?.eq_ignore_ascii_case("udp") {
            return None;
        }
        Some(SocketAddr::new(fields.get(4)?.parse().ok()?, fields.get(5)?.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_round_trips_and_the_udp_candidate_is_found() {
        let relay = Relay {
            server: "127.0.0.1:3478".parse().unwrap(),
            relayed: "127.0.0.1:50000".parse().unwrap(),
            peer: None,
            username: "u".into(),
            password: "p".into(),
            realm: "r".into(),
            nonce: "n".into(),
        };
        let wrapped = relay.wrap(b"rtp");
        assert_eq!(wrapped, [0x40, 0, 0, 3, b'r', b't', b'p']);
        assert_eq!(relay.unwrap(&wrapped), Some(&b"rtp"[..]));
        assert_eq!(relay.unwrap(&[0x40, 1, 0, 0]), None, "another channel");
        let answer = "v=0\r\na=candidate:2 1 tcp 1509949439 10.0.0.1 7882 typ host tcptype passive\r\n\
                      a=candidate:1 1 udp 2130706431 10.0.0.1 7882 typ host\r\n";
        assert_eq!(udp_candidate(answer), Some("10.0.0.1:7882".parse().unwrap()));
    }
}

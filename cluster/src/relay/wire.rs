//! The relay's wire format, sans I/O. One QUIC connection per pair of nodes, opened by the node
//! that wants media. Its first bidirectional stream carries [`Control`] messages (JSON, each
//! behind a u32 big-endian length, at most [`MAX_CONTROL_BYTES`]): the dialer's `Hello` (its
//! node id and an HMAC of it under the cluster secret), then `Want`/`Drop` of tracks and the
//! feedback for them. The origin sends each wanted track on a unidirectional stream of its own:
//! a length-prefixed JSON [`StreamHead`] naming the track, then frames, each a fixed
//! [`FRAME_HEADER_BYTES`]-byte header (keyframe flag, simulcast layer, media time, send time,
//! age at sending, payload length) and the payload. A small protocol of our own rather than
//! moq-transport objects: both ends are Junction, and the engine's frames (codec fixed per
//! track, media time with its rate, keyframe flag, layer) map onto it without a container.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use junction_core::{RoomId, TrackId};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const ALPN: &[u8] = b"junction-relay/1";
pub const MAX_CONTROL_BYTES: usize = 64 * 1024;
/// Largest frame payload relayed (a 4K keyframe fits); a larger one ends the stream.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;
pub const FRAME_HEADER_BYTES: usize = 30;
/// How far a Hello's clock may be from ours.
pub const HELLO_SKEW_MS: u64 = 30_000;

/// QUIC application error codes the relay closes with.
pub mod code {
    pub const DONE: u32 = 0;
    pub const UNAUTHORIZED: u32 = 1;
    pub const PROTOCOL: u32 = 2;
    pub const EXCESSIVE_LOAD: u32 = 3;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    Hello {
        node: String,
        unix_ms: u64,
        mac: String,
    },
    Welcome {
        node: String,
    },
    /// Send this track, up to this simulcast layer.
    Want {
        room: RoomId,
        track: TrackId,
        layer: u8,
    },
    Drop {
        room: RoomId,
        track: TrackId,
    },
    Keyframe {
        room: RoomId,
        track: TrackId,
        layer: u8,
    },
    Bitrate {
        room: RoomId,
        track: TrackId,
        bps: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamHead {
    pub room: RoomId,
    pub track: TrackId,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// The MAC a node proves the cluster secret with.
pub fn hello_mac(secret: &[u8], node: &str, unix_ms: u64) -> String {
    hex::encode(mac(secret, node, unix_ms).finalize().into_bytes())
}

fn mac(secret: &[u8], node: &str, unix_ms: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"junction-relay/1|");
    mac.update(node.as_bytes());
    mac.update(b"|");
    mac.update(unix_ms.to_string().as_bytes());
    mac
}

/// Checks a Hello (constant-time MAC comparison, clock skew).
pub fn verify_hello(secret: &[u8], node: &str, unix_ms: u64, presented: &str, now_ms: u64) -> bool {
    let Ok(presented) = hex::decode(presented) else { return false };
    now_ms.abs_diff(unix_ms) <= HELLO_SKEW_MS && mac(secret, node, unix_ms).verify_slice(&presented).is_ok()
}

/// A length-prefixed JSON message.
pub fn encode_json<T: Serialize>(message: &T) -> Bytes {
    let body = serde_json::to_vec(message).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + body.len());
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    out.freeze()
}

/// The length a length prefix announces, checked against `limit`.
pub fn checked_len(prefix: [u8; 4], limit: usize) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > limit { Err(WireError::TooLarge(len)) } else { Ok(len) }
}

pub fn decode_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(body).map_err(|err| WireError::Malformed(err.to_string()))
}

/// A frame's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub keyframe: bool,
    pub layer: u8,
    pub ticks: u64,
    pub rate: u32,
    /// When the origin sent it (unix µs): the receiver measures the relay's latency with it.
    pub sent_unix_us: u64,
    /// How long the frame had been in the origin server when sent (µs).
    pub age_us: u32,
    pub len: u32,
}

impl FrameHeader {
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(u8::from(self.keyframe));
        out.put_u8(self.layer);
        out.put_u64(self.ticks);
        out.put_u32(self.rate);
        out.put_u64(self.sent_unix_us);
        out.put_u32(self.age_us);
        out.put_u32(self.len);
    }

    pub fn decode(mut bytes: &[u8]) -> Result<FrameHeader, WireError> {
        if bytes.len() < FRAME_HEADER_BYTES {
            return Err(WireError::Malformed("short frame header".into()));
        }
        let flags = bytes.get_u8();
        if flags > 1 {
            return Err(WireError::Malformed(format!("frame flags {flags:#x}")));
        }
        let header = FrameHeader {
            keyframe: flags == 1,
            layer: bytes.get_u8(),
            ticks: bytes.get_u64(),
            rate: bytes.get_u32(),
            sent_unix_us: bytes.get_u64(),
            age_us: bytes.get_u32(),
            len: bytes.get_u32(),
        };
        if header.rate == 0 {
            return Err(WireError::Malformed("media rate 0".into()));
        }
        if header.len as usize > MAX_FRAME_BYTES {
            return Err(WireError::TooLarge(header.len as usize));
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_round_trip() {
        let header = FrameHeader {
            keyframe: true,
            layer: 2,
            ticks: 1 << 40,
            rate: 90_000,
            sent_unix_us: 7,
            age_us: 9,
            len: 1200,
        };
        let mut out = BytesMut::new();
        header.encode(&mut out);
        assert_eq!(out.len(), FRAME_HEADER_BYTES);
        assert_eq!(FrameHeader::decode(&out).unwrap(), header);
    }

    #[test]
    fn bad_frame_headers_are_refused() {
        let mut out = BytesMut::new();
        let header = FrameHeader {
            keyframe: false,
            layer: 0,
            ticks: 0,
            rate: 48_000,
            sent_unix_us: 0,
            age_us: 0,
            len: u32::MAX,
        };
        header.encode(&mut out);
        assert_eq!(FrameHeader::decode(&out), Err(WireError::TooLarge(u32::MAX as usize)));
        assert!(FrameHeader::decode(&out[..10]).is_err());
        let mut zero_rate = BytesMut::new();
        FrameHeader { rate: 0, len: 1, ..header }.encode(&mut zero_rate);
        assert!(FrameHeader::decode(&zero_rate).is_err());
        out[0] = 7;
        assert!(FrameHeader::decode(&out).is_err());
    }

    #[test]
    fn control_lengths_are_capped() {
        assert_eq!(checked_len(10u32.to_be_bytes(), MAX_CONTROL_BYTES), Ok(10));
        assert!(checked_len((MAX_CONTROL_BYTES as u32 + 1).to_be_bytes(), MAX_CONTROL_BYTES).is_err());
        let encoded = encode_json(&Control::Welcome { node: "a".into() });
        let len = checked_len(encoded[..4].try_into().unwrap(), MAX_CONTROL_BYTES).unwrap();
        assert_eq!(decode_json::<Control>(&encoded[4..4 + len]).unwrap(), Control::Welcome { node: "a".into() });
        assert!(decode_json::<Control>(b"{\"type\":\"nope\"}").is_err());
    }

    #[test]
    fn hellos_need_the_secret_and_a_fresh_clock() {
        let mac = hello_mac(b"secret", "node-a", 1_000_000);
        assert!(verify_hello(b"secret", "node-a", 1_000_000, &mac, 1_010_000));
        assert!(!verify_hello(b"other", "node-a", 1_000_000, &mac, 1_000_000));
        assert!(!verify_hello(b"secret", "node-b", 1_000_000, &mac, 1_000_000));
        assert!(!verify_hello(b"secret", "node-a", 1_000_000, &mac, 1_000_000 + HELLO_SKEW_MS + 1));
        assert!(!verify_hello(b"secret", "node-a", 1_000_000, "zz", 1_000_000));
    }
}

//! The `[webrtc]` configuration section: the UDP socket every session shares, the TCP port for
//! ICE-TCP, the address advertised to clients, ICE servers handed to clients, how long a silent or never-connecting
//! peer is kept, and the limits that keep one peer from growing the server's state (SDP size,
//! m-lines, candidates, demux entries, queued datagrams; see `docs/security.md`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::session::SendPacing;

/// Longest ICE timeout accepted: a vanished client must be reaped within this.
pub const MAX_ICE_TIMEOUT_S: u64 = 30;
/// Longest connect deadline accepted.
pub const MAX_CONNECT_TIMEOUT_S: u64 = 120;
/// The largest `udp_recv_buffer_bytes` accepted (256 MiB).
pub const MAX_UDP_RECV_BUFFER_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    /// Whether the WebRTC media plane (and WHIP/WHEP on top of it) runs at all.
    pub enabled: bool,
    /// The one UDP socket all WebRTC sessions share.
    pub udp_listen: SocketAddr,
    /// Whether sessions also offer a passive TCP candidate (ICE-TCP, RFC 6544), for clients that
    /// cannot send UDP to the server: lower priority than UDP, so used only where UDP fails.
    pub ice_tcp: bool,
    /// The TCP port ICE-TCP clients connect to. By default `udp_listen`'s address and port
    /// (port 0: a free TCP port of its own; the UDP socket's number may be taken over TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_listen: Option<SocketAddr>,
    /// ICE-TCP connections open at once; more are closed as they arrive.
    pub max_tcp_connections: usize,
    /// The address clients should send media to (`203.0.113.7` or `203.0.113.7:7882`), when it
    /// differs from `udp_listen` (NAT, or a wildcard listen address), or a list of them (dual
    /// stack, or a private and a public address): a candidate each. Without a port, the bound
    /// port is used.
    #[serde(skip_serializing_if = "PublicAddr::is_empty")]
    pub public_addr: PublicAddr,
    /// Seconds without a single datagram from a peer before its session is reaped (1..=30).
    pub ice_timeout_s: u64,
    /// STUN/TURN servers handed to clients (WHIP `Link` headers, the browser SDK).
    pub ice_servers: Vec<IceServer>,
    /// Seconds a session has, from its answer, to complete ICE and DTLS; then it is ended (a
    /// WHIP/WHEP resource is deleted, a browser is told `media_ended`).
    pub connect_timeout_s: u64,
    /// Largest SDP offer or answer accepted, in bytes.
    pub max_sdp_bytes: usize,
    /// Most m-lines an offer or answer may have.
    pub max_media_lines: usize,
    /// Most remote ICE candidates per ICE session (in the SDP and trickled together).
    pub max_remote_candidates: usize,
    /// Remote addresses one session may be reached from (verified by STUN); the least recently
    /// verified is forgotten first.
    pub addresses_per_session: usize,
    /// Remote addresses all sessions together; verified checks from new addresses are dropped
    /// past it.
    pub max_addresses: usize,
    /// Datagrams queued for one session before more are dropped.
    pub session_inbox_datagrams: usize,
    /// RTP packets of each video stream a session keeps to resend when its peer reports them
    /// lost (str0m's send buffer, which also drops packets older than 3 s). Enough for a NACK
    /// to come back a few round trips late, not for seconds: 128 packets are about 0.4 s of a
    /// 2.5 Mb/s stream in about 150 KiB; str0m's default, 1000, costs a 720p subscriber ~1.2 MB.
    pub video_resend_packets: usize,
    /// Packets a session remembers having sent, to match its peer's transport-wide congestion
    /// feedback against (the bandwidth estimate that picks simulcast layers and paces video).
    /// Feedback comes every 50-100 ms, so about 1.8 s of a 720p subscriber's packets is
    /// plenty; each record is about 90 bytes, and str0m's default, 1000, costs every
    /// subscriber 90 KiB (vendor/README.md).
    pub twcc_send_records: usize,
    /// Whether video sent to peers goes through str0m's pacer (at 1.1 x the peer's bandwidth
    /// estimate) rather than out as it arrives, already paced by its publisher.
    pub pace_video: bool,
    /// Milliseconds a session's video may wait in str0m's pacer. Past it, video frames are
    /// dropped until the next keyframe (asked for) and the backlog drains, rather than handing
    /// the peer seconds of stale video.
    pub max_send_delay_ms: u64,
    /// Bytes of kernel receive buffer asked for on the shared UDP socket (`SO_RCVBUF`). Every
    /// publisher's media and every subscriber's RTCP arrive on that one socket, and Linux's
    /// default (208 KiB) overflows while the core writes a keyframe to a few hundred
    /// subscribers: a publisher packet dropped there is lost to all of them. The kernel caps the
    /// request at `net.core.rmem_max` (a warning at start says so). 0 keeps the kernel's default.
    pub udp_recv_buffer_bytes: usize,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            udp_listen: ([127, 0, 0, 1], 7882).into(),
            ice_tcp: true,
            tcp_listen: None,
            max_tcp_connections: 4096,
            public_addr: PublicAddr::default(),
            ice_timeout_s: 15,
            ice_servers: Vec::new(),
            connect_timeout_s: 15,
            max_sdp_bytes: 256 * 1024,
            max_media_lines: 128,
            max_remote_candidates: 64,
            addresses_per_session: 8,
            max_addresses: 65_536,
            session_inbox_datagrams: 512,
            video_resend_packets: 128,
            twcc_send_records: 512,
            pace_video: false,
            max_send_delay_ms: 250,
            udp_recv_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

/// `webrtc.public_addr`: one address or a list of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PublicAddr {
    #[default]
    #[serde(skip)]
    Unset,
    One(String),
    Many(Vec<String>),
}

impl PublicAddr {
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    fn entries(&self) -> &[String] {
        match self {
            PublicAddr::Unset => &[],
            PublicAddr::One(one) => std::slice::from_ref(one),
            PublicAddr::Many(many) => many,
        }
    }
}

impl From<&str> for PublicAddr {
    fn from(one: &str) -> Self {
        PublicAddr::One(one.to_owned())
    }
}

/// A STUN or TURN server clients may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:...`.
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A configuration value that cannot work, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `webrtc.{key}`: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

impl WebrtcConfig {
    pub fn ice_timeout(&self) -> Duration {
        Duration::from_secs(self.ice_timeout_s)
    }

    pub(crate) fn send_pacing(&self) -> SendPacing {
        SendPacing { max_send_delay: Duration::from_millis(self.max_send_delay_ms), pace_video: self.pace_video }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_s)
    }

    /// Checks the values that serde alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_ICE_TIMEOUT_S).contains(&self.ice_timeout_s) {
            return Err(ConfigError {
                key: "ice_timeout_s",
                message: format!("must be between 1 and {MAX_ICE_TIMEOUT_S} seconds, not {}", self.ice_timeout_s),
            });
        }
        if !(1..=MAX_CONNECT_TIMEOUT_S).contains(&self.connect_timeout_s) {
            return Err(ConfigError {
                key: "connect_timeout_s",
                message: format!(
                    "must be between 1 and {MAX_CONNECT_TIMEOUT_S} seconds, not {}",
                    self.connect_timeout_s
                ),
            });
        }
        let at_least_one = [
            ("max_sdp_bytes", self.max_sdp_bytes),
            ("max_media_lines", self.max_media_lines),
            ("max_remote_candidates", self.max_remote_candidates),
            ("addresses_per_session", self.addresses_per_session),
            ("max_addresses", self.max_addresses),
            ("session_inbox_datagrams", self.session_inbox_datagrams),
            ("video_resend_packets", self.video_resend_packets),
            ("twcc_send_records", self.twcc_send_records),
            ("max_tcp_connections", self.max_tcp_connections),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError { key, message: "must be at least 1".into() });
        }
        if self.udp_recv_buffer_bytes > MAX_UDP_RECV_BUFFER_BYTES {
            return Err(ConfigError {
                key: "udp_recv_buffer_bytes",
                message: format!("must be at most {MAX_UDP_RECV_BUFFER_BYTES} bytes (0: the kernel's default)"),
            });
        }
        if !(20..=10_000).contains(&self.max_send_delay_ms) {
            return Err(ConfigError { key: "max_send_delay_ms", message: "must be 20 to 10000 milliseconds".into() });
        }
        if !self.public_addr.is_empty() {
            for raw in self.public_addr.entries() {
                parse_public_addr(raw, self.udp_listen.port())?;
            }
        } else if self.udp_listen.ip().is_unspecified() || self.tcp_listen.is_some_and(|a| a.ip().is_unspecified()) {
            return Err(ConfigError {
                key: "public_addr",
                message: format!(
                    "udp_listen or tcp_listen is a wildcard address ({}): set public_addr to the IP clients reach this host at",
                    self.udp_listen
                ),
            });
        }
        for (i, server) in self.ice_servers.iter().enumerate() {
            if server.urls.is_empty() {
                return Err(ConfigError { key: "ice_servers", message: format!("entry {i} has no urls") });
            }
            if let Some(bad) =
                server.urls.iter().find(|u| !["stun:", "stuns:", "turn:", "turns:"].iter().any(|s| u.starts_with(s)))
            {
                return Err(ConfigError {
                    key: "ice_servers",
                    message: format!("{bad:?} is not a stun:, stuns:, turn: or turns: URL"),
                });
            }
        }
        Ok(())
    }

    /// Where the ICE-TCP listener binds (`None` when ICE-TCP is off).
    pub fn tcp_bind_addr(&self) -> Option<SocketAddr> {
        self.ice_tcp.then(|| self.tcp_listen.unwrap_or(self.udp_listen))
    }

    /// The addresses put in TCP candidates, given the address the TCP listener bound: the
    /// public IPs when set, always with the bound port (forward the same port).
    pub fn advertised_tcp_addrs(&self, bound: SocketAddr) -> Result<Vec<SocketAddr>, ConfigError> {
        Ok(self.advertised_addrs(bound)?.into_iter().map(|a| SocketAddr::new(a.ip(), bound.port())).collect())
    }

    /// The addresses put in UDP candidates (at least one), given the port the socket bound.
    pub fn advertised_addrs(&self, bound: SocketAddr) -> Result<Vec<SocketAddr>, ConfigError> {
        if !self.public_addr.is_empty() {
            return self.public_addr.entries().iter().map(|raw| parse_public_addr(raw, bound.port())).collect();
        }
        if bound.ip().is_unspecified() {
            return Err(ConfigError {
                key: "public_addr",
                message: "required when udp_listen is a wildcard address".into(),
            });
        }
        Ok(vec![bound])
    }
}

fn parse_public_addr(raw: &str, default_port: u16) -> Result<SocketAddr, ConfigError> {
    let raw = raw.trim();
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = raw.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(ConfigError { key: "public_addr", message: format!("{raw:?} is not an IP address or IP:port") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_address_takes_an_ip_or_ip_and_port() {
        let mut config = WebrtcConfig { public_addr: "203.0.113.7".into(), ..WebrtcConfig::default() };
        let bound: SocketAddr = "0.0.0.0:40000".parse().unwrap();
        assert_eq!(config.advertised_addrs(bound).unwrap()[0], "203.0.113.7:40000".parse().unwrap());
        config.public_addr = "[2001:db8::1]:9".into();
        assert_eq!(config.advertised_addrs(bound).unwrap()[0], "[2001:db8::1]:9".parse().unwrap());
        config.public_addr = "example.com".into();
        assert_eq!(config.validate().unwrap_err().key, "public_addr");
    }

    #[test]
    fn wildcard_listen_needs_a_public_address_and_timeouts_are_bounded() {
        let config = WebrtcConfig { udp_listen: "0.0.0.0:7882".parse().unwrap(), ..WebrtcConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "public_addr");
        let config = WebrtcConfig { ice_timeout_s: 31, ..WebrtcConfig::default() };
        assert!(config.validate().unwrap_err().to_string().contains("between 1 and 30"));
        assert!(WebrtcConfig::default().validate().is_ok());
        let config = WebrtcConfig {
            ice_servers: vec![IceServer { urls: vec!["http://x".into()], username: None, credential: None }],
            ..WebrtcConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "ice_servers");
        let config = WebrtcConfig { connect_timeout_s: 0, ..WebrtcConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "connect_timeout_s");
        let config = WebrtcConfig { max_addresses: 0, ..WebrtcConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "max_addresses");
        let config = WebrtcConfig { video_resend_packets: 0, ..WebrtcConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "video_resend_packets");
        let config = WebrtcConfig { twcc_send_records: 0, ..WebrtcConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "twcc_send_records");
        let config = WebrtcConfig { udp_recv_buffer_bytes: MAX_UDP_RECV_BUFFER_BYTES + 1, ..WebrtcConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "udp_recv_buffer_bytes");
        let config = WebrtcConfig { udp_recv_buffer_bytes: 0, ..WebrtcConfig::default() };
        assert!(config.validate().is_ok(), "0 keeps the kernel's default");
        let config = WebrtcConfig { tcp_listen: Some("[::]:7882".parse().unwrap()), ..WebrtcConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "public_addr");
    }

    #[test]
    fn ice_tcp_follows_the_udp_socket_unless_told_otherwise() {
        let udp: SocketAddr = "10.0.0.5:40000".parse().unwrap();
        let config = WebrtcConfig { udp_listen: udp, ..WebrtcConfig::default() };
        assert_eq!(config.tcp_bind_addr(), Some(udp), "same address and port as UDP");
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = WebrtcConfig { udp_listen: any, ..WebrtcConfig::default() };
        assert_eq!(config.tcp_bind_addr(), Some(any), "port 0: a free TCP port, not the UDP socket's number");
        let config = WebrtcConfig {
            udp_listen: udp,
            tcp_listen: Some("10.0.0.5:443".parse().unwrap()),
            ..WebrtcConfig::default()
        };
        assert_eq!(config.tcp_bind_addr(), Some("10.0.0.5:443".parse().unwrap()));
        let config = WebrtcConfig { ice_tcp: false, ..WebrtcConfig::default() };
        assert_eq!(config.tcp_bind_addr(), None);
        let config = WebrtcConfig { public_addr: "203.0.113.7:7882".into(), ..WebrtcConfig::default() };
        let bound: SocketAddr = "10.0.0.5:443".parse().unwrap();
        let expected: Vec<SocketAddr> = vec!["203.0.113.7:443".parse().unwrap()];
        assert_eq!(config.advertised_tcp_addrs(bound).unwrap(), expected, "public IP, TCP port");
    }

    #[test]
    fn public_addr_takes_one_address_or_a_list() {
        let one = from_json(r#"{"public_addr": "203.0.113.7"}"#);
        assert_eq!(one.public_addr, PublicAddr::One("203.0.113.7".into()));
        let many = from_json(r#"{"public_addr": ["203.0.113.7", "[2001:db8::7]:7000"]}"#);
        let bound: SocketAddr = "0.0.0.0:40000".parse().unwrap();
        let expected: Vec<SocketAddr> =
            vec!["203.0.113.7:40000".parse().unwrap(), "[2001:db8::7]:7000".parse().unwrap()];
        assert_eq!(many.advertised_addrs(bound).unwrap(), expected);
        assert!(WebrtcConfig { udp_listen: bound, ..many.clone() }.validate().is_ok(), "a list answers the wildcard");
        let bad = from_json(r#"{"public_addr": ["203.0.113.7", "nope"]}"#);
        assert_eq!(bad.validate().unwrap_err().key, "public_addr");
        assert!(from_json("{}").public_addr.is_empty());
    }

    fn from_json(json: &str) -> WebrtcConfig {
        serde_json::from_str(json).expect("a config")
    }
}

//! The `[sip]` section of the server configuration.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::admission::{RuleSpec, TrunkSpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub enabled: bool,
    /// Where SIP listens, on UDP and TCP (the same port for both).
    pub listen: SocketAddr,
    /// Where SIP over TLS listens (off when unset); needs `tls_cert` and `tls_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<SocketAddr>,
    /// The TLS listener's certificate chain (leaf first) and private key, PEM files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Certificates (PEM) trusted for calls placed over TLS, beside the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// The address written into Via, Contact and SDP when `listen` is a wildcard address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_address: Option<IpAddr>,
    /// RTP/RTCP ports: each call takes an even port and the next one.
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// A call whose far end sends no RTP (and, on hold, answers no OPTIONS) for this long is
    /// hung up.
    pub rtp_timeout_s: u64,
    /// Calls at once; more are refused with 503.
    pub max_calls: usize,
    /// Calls at once from one IP address (dial-in); more are refused with 503.
    pub max_calls_per_source: usize,
    /// Server transactions at once, in all and from one IP address; past either, requests get
    /// a stateless 503 with Retry-After.
    pub max_transactions: usize,
    pub max_transactions_per_source: usize,
    /// Largest SIP message, on UDP and TCP; larger datagrams are dropped, a TCP stream that
    /// announces one is closed.
    pub max_message_bytes: usize,
    /// TCP connections at once, in all and from one IP address; past either, a new connection
    /// is closed as soon as it is accepted.
    pub max_tcp_connections: usize,
    pub max_tcp_connections_per_source: usize,
    /// A TCP connection that carries no call and has been silent this long is closed.
    pub tcp_idle_timeout_s: u64,
    /// An answered INVITE whose ACK does not come within this is hung up (BYE), its slot freed.
    pub ack_timeout_s: u64,
    /// RFC 4028 session timers: the interval we ask for (dial-out) and grant to callers that
    /// support timers but name none; the refresher refreshes half-way, and a session nobody
    /// refreshed is ended with BYE.
    pub session_expires_s: u32,
    /// The smallest interval we accept (our `Min-SE`): shorter requests get 422. RFC 4028 says
    /// 90 s; lower values are for tests.
    pub min_session_expires_s: u32,
    /// Digest nonces outstanding at once (each is good for one request); past this the oldest
    /// is forgotten and its caller challenged again.
    pub max_nonces: usize,
    /// Whether dial-out may go straight to a SIP URI instead of through an outbound trunk.
    pub allow_direct_dial: bool,
    /// The hosts direct dial may reach: `host`, `host:port`, an IP address or an IP network.
    pub direct_dial_hosts: Vec<String>,
    /// The digest realm of our 401 challenges.
    pub realm: String,
    /// Wrong PINs before the call is hung up.
    pub pin_attempts: u32,
    /// Time to enter the PIN before the call is hung up.
    pub pin_timeout_s: u64,
    /// Deprecated alias of `[mixer] speakers` (how many of the loudest speakers a phone hears
    /// at once), still read so that older configurations keep working; the server warns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mix_speakers: Option<usize>,
    /// Trunks loaded at start (more can be added through the API).
    pub trunks: Vec<TrunkSpec>,
    /// Dispatch rules loaded at start.
    pub dispatch_rules: Vec<RuleSpec>,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: ([127, 0, 0, 1], 5060).into(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            public_address: None,
            rtp_port_min: 20_000,
            rtp_port_max: 20_999,
            rtp_timeout_s: 20,
            max_calls: 200,
            max_calls_per_source: 50,
            max_transactions: 10_000,
            max_transactions_per_source: 500,
            max_message_bytes: 16 * 1024,
            max_tcp_connections: 1024,
            max_tcp_connections_per_source: 32,
            tcp_idle_timeout_s: 60,
            ack_timeout_s: 32,
            session_expires_s: 1800,
            min_session_expires_s: 90,
            max_nonces: 8192,
            allow_direct_dial: false,
            direct_dial_hosts: Vec::new(),
            realm: "junction".into(),
            pin_attempts: 3,
            pin_timeout_s: 60,
            mix_speakers: None,
            trunks: Vec::new(),
            dispatch_rules: Vec::new(),
        }
    }
}

impl SipConfig {
    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: &str| Err((format!("sip.{key}"), message.to_owned()));
        if self.rtp_port_min < 1024 || self.rtp_port_max <= self.rtp_port_min {
            return bad("rtp_port_min", "the RTP range must be above 1023 and rtp_port_max above rtp_port_min");
        }
        if self.rtp_timeout_s == 0 || self.rtp_timeout_s > 30 {
            return bad("rtp_timeout_s", "must be 1 to 30 seconds (a dead call is reaped within 30 s)");
        }
        let at_least_one = [
            ("max_calls", self.max_calls),
            ("max_calls_per_source", self.max_calls_per_source),
            ("max_transactions", self.max_transactions),
            ("max_transactions_per_source", self.max_transactions_per_source),
            ("max_tcp_connections", self.max_tcp_connections),
            ("max_tcp_connections_per_source", self.max_tcp_connections_per_source),
            ("max_nonces", self.max_nonces),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return bad(key, "must be at least 1");
        }
        if !(1024..=crate::message::wire::MAX_MESSAGE).contains(&self.max_message_bytes) {
            return bad("max_message_bytes", "must be 1024 to 65536");
        }
        if self.tcp_idle_timeout_s == 0 {
            return bad("tcp_idle_timeout_s", "must be at least 1 second");
        }
        if !(1..=64).contains(&self.ack_timeout_s) {
            return bad("ack_timeout_s", "must be 1 to 64 seconds");
        }
        if self.min_session_expires_s == 0 {
            return bad("min_session_expires_s", "must be at least 1 second (RFC 4028: 90)");
        }
        if self.session_expires_s < self.min_session_expires_s {
            return bad("session_expires_s", "must be at least sip.min_session_expires_s");
        }
        if self.tls_listen.is_some() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return bad("tls_listen", "SIP over TLS needs sip.tls_cert and sip.tls_key (PEM files)");
        }
        if let Err(message) = self.direct_dial() {
            return bad("direct_dial_hosts", &message);
        }
        if self.pin_attempts == 0 {
            return bad("pin_attempts", "must be at least 1");
        }
        if self.mix_speakers == Some(0) {
            return bad("mix_speakers", "must be at least 1");
        }
        if let Err(err) = crate::admission::Directory::from_config(&self.trunks, &self.dispatch_rules) {
            return Err(("sip.trunks / sip.dispatch_rules".into(), err.to_string()));
        }
        Ok(())
    }

    /// The direct-dial policy these settings make.
    pub fn direct_dial(&self) -> Result<crate::admission::DirectDial, String> {
        crate::admission::DirectDial::from_config(self.allow_direct_dial, &self.direct_dial_hosts)
    }

    /// The caps the user agent applies.
    pub fn ua_limits(&self) -> crate::ua::UaLimits {
        crate::ua::UaLimits {
            transactions: crate::transaction::TxnLimits {
                total: self.max_transactions,
                per_source: self.max_transactions_per_source,
            },
            ack_timeout: std::time::Duration::from_secs(self.ack_timeout_s),
            session_timers: crate::ua::TimerPolicy { expires: self.session_expires_s, min: self.min_session_expires_s },
        }
    }

    /// The address other parties reach us at.
    pub fn advertised_ip(&self) -> IpAddr {
        match self.public_address {
            Some(ip) => ip,
            None if self.listen.ip().is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            None => self.listen.ip(),
        }
    }
}

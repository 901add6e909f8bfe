//! The `[sip]` section of the server configuration.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::admission::{RuleSpec, TrunkSpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub enabled: bool,
    /// Where SIP listens, on UDP and TCP (the same port for both).
    pub listen: SocketAddr,
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
    /// The digest realm of our 401 challenges.
    pub realm: String,
    /// Wrong PINs before the call is hung up.
    pub pin_attempts: u32,
    /// Time to enter the PIN before the call is hung up.
    pub pin_timeout_s: u64,
    /// How many of the loudest speakers a phone hears at once.
    pub mix_speakers: usize,
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
            public_address: None,
            rtp_port_min: 20_000,
            rtp_port_max: 20_999,
            rtp_timeout_s: 20,
            max_calls: 200,
            realm: "junction".into(),
            pin_attempts: 3,
            pin_timeout_s: 60,
            mix_speakers: 3,
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
        if self.max_calls == 0 {
            return bad("max_calls", "must be at least 1");
        }
        if self.pin_attempts == 0 {
            return bad("pin_attempts", "must be at least 1");
        }
        if self.mix_speakers == 0 {
            return bad("mix_speakers", "must be at least 1");
        }
        if let Err(err) = crate::admission::Directory::from_config(&self.trunks, &self.dispatch_rules) {
            return Err(("sip.trunks / sip.dispatch_rules".into(), err.to_string()));
        }
        Ok(())
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

//! The `[rtmp]` section of the server configuration.

use std::net::SocketAddr;
use std::time::Duration;

use junction_engine::DuplicatePolicy;
use serde::{Deserialize, Serialize};

use crate::guard::AmfLimits;
use crate::session::SessionConfig;

/// What happens when a stream key that is already live publishes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDuplicate {
    /// The new connection takes over (an encoder reconnecting); the old one is closed.
    #[default]
    Replace,
    /// The new connection is refused with `NetStream.Publish.BadName`.
    Reject,
}

impl From<OnDuplicate> for DuplicatePolicy {
    fn from(value: OnDuplicate) -> Self {
        match value {
            OnDuplicate::Replace => DuplicatePolicy::Replace,
            OnDuplicate::Reject => DuplicatePolicy::Reject,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Whether the RTMP listener runs.
    pub enabled: bool,
    /// TCP address of the RTMP listener.
    pub listen: SocketAddr,
    /// A publisher using a key that is already live: `replace` or `reject`.
    pub on_duplicate: OnDuplicate,
    /// Seconds of silence after which a publisher (or a connection that never started
    /// publishing or playing) is closed.
    pub idle_timeout_s: u64,
    /// Seconds a connection has, from TCP accept, to complete the RTMP handshake, `connect` and
    /// an accepted `publish` or `play`; past it the connection is closed.
    pub handshake_timeout_s: u64,
    /// RTMP connections held at once; more are closed at accept (0: no limit).
    pub max_connections: usize,
    /// RTMP connections from one source address (IPv6: one /64) at once (0: no limit).
    pub max_connections_per_ip: usize,
    /// Deepest nesting of AMF0 objects and arrays in a command or data message.
    pub amf_max_depth: usize,
    /// AMF0 values (properties and elements included) in one command or data message.
    pub amf_max_values: usize,
    /// Bytes of one AMF command, data or shared-object message.
    pub amf_max_message_bytes: usize,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        let amf = AmfLimits::default();
        Self {
            enabled: true,
            listen: ([127, 0, 0, 1], 1935).into(),
            on_duplicate: OnDuplicate::Replace,
            idle_timeout_s: 10,
            handshake_timeout_s: 10,
            max_connections: 1000,
            max_connections_per_ip: 20,
            amf_max_depth: amf.max_depth,
            amf_max_values: amf.max_values,
            amf_max_message_bytes: amf.max_bytes,
        }
    }
}

impl RtmpConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_s)
    }

    /// What each connection's session is built with.
    pub fn session(&self) -> SessionConfig {
        SessionConfig {
            idle_timeout: self.idle_timeout(),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_s),
            amf_limits: AmfLimits {
                max_depth: self.amf_max_depth,
                max_values: self.amf_max_values,
                max_bytes: self.amf_max_message_bytes,
            },
        }
    }

    /// Checks values serde cannot: returns the offending key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let at_least_one = [
            ("rtmp.idle_timeout_s", self.idle_timeout_s as usize),
            ("rtmp.handshake_timeout_s", self.handshake_timeout_s as usize),
            ("rtmp.amf_max_depth", self.amf_max_depth),
            ("rtmp.amf_max_values", self.amf_max_values),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err((key, "must be at least 1".into()));
        }
        // Deeper nesting is what overflows a stack in the recursive decoder behind the guard.
        if self.amf_max_depth > 256 {
            return Err(("rtmp.amf_max_depth", "must be at most 256".into()));
        }
        // connect, publish and play need a few hundred bytes; RTMP messages stop at 16 MiB.
        if !(1024..=16 << 20).contains(&self.amf_max_message_bytes) {
            return Err(("rtmp.amf_max_message_bytes", "must be between 1024 and 16777216".into()));
        }
        Ok(())
    }
}

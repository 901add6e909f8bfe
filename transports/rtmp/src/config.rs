//! The `[rtmp]` section of the server configuration.

use std::net::SocketAddr;
use std::time::Duration;

use junction_endpoint::DuplicatePolicy;
use serde::{Deserialize, Serialize};

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
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: ([127, 0, 0, 1], 1935).into(),
            on_duplicate: OnDuplicate::Replace,
            idle_timeout_s: 10,
        }
    }
}

impl RtmpConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_s)
    }

    /// Checks values serde cannot: returns the offending key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.idle_timeout_s == 0 {
            return Err(("rtmp.idle_timeout_s", "must be at least 1 second".into()));
        }
        Ok(())
    }
}

//! The `[srt]` section of the server configuration.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SrtConfig {
    /// Whether the SRT listener runs.
    pub enabled: bool,
    /// UDP address of the SRT listener.
    pub listen: SocketAddr,
    /// Receive latency in milliseconds: how long SRT may hold packets to recover losses. The
    /// larger of this and the encoder's own setting applies (SRT negotiates the maximum).
    pub latency_ms: u64,
    /// When set, encoders must encrypt with this passphrase (AES, 10 to 79 characters); streams
    /// without it, or with another, are refused at the handshake.
    pub passphrase: Option<String>,
    /// AES key length in bytes when a passphrase is set and the encoder does not choose one
    /// (`pbkeylen`): 16, 24 or 32.
    pub key_length: u16,
    /// Seconds without a packet after which a stream is closed.
    pub idle_timeout_s: u64,
    /// SRT streams held at once; more are refused at the handshake (0: no limit).
    pub max_connections: usize,
    /// SRT streams from one source address (IPv6: one /64) at once (0: no limit).
    pub max_connections_per_ip: usize,
}

impl Default for SrtConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: ([127, 0, 0, 1], 8890).into(),
            latency_ms: 120,
            passphrase: None,
            key_length: 16,
            idle_timeout_s: 10,
            max_connections: 1000,
            max_connections_per_ip: 20,
        }
    }
}

impl SrtConfig {
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_s)
    }

    /// Checks values serde cannot: returns the offending key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.latency_ms > 10_000 {
            return Err(("srt.latency_ms", "must be at most 10000".into()));
        }
        if self.idle_timeout_s == 0 {
            return Err(("srt.idle_timeout_s", "must be at least 1".into()));
        }
        if ![16, 24, 32].contains(&self.key_length) {
            return Err(("srt.key_length", "must be 16, 24 or 32".into()));
        }
        if let Some(passphrase) = &self.passphrase
            && !(10..=79).contains(&passphrase.len())
        {
            return Err(("srt.passphrase", "must be 10 to 79 characters long (the SRT limits)".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_offending_key() {
        assert_eq!(SrtConfig::default().validate(), Ok(()));
        let short = SrtConfig { passphrase: Some("short".into()), ..SrtConfig::default() };
        assert_eq!(short.validate().unwrap_err().0, "srt.passphrase");
        let key = SrtConfig { key_length: 20, ..SrtConfig::default() };
        assert_eq!(key.validate().unwrap_err().0, "srt.key_length");
        let latency = SrtConfig { latency_ms: 60_000, ..SrtConfig::default() };
        assert_eq!(latency.validate().unwrap_err().0, "srt.latency_ms");
    }
}

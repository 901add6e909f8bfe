//! The `[moq]` configuration section: where the QUIC listener binds, which certificate it
//! presents, and the limits every session is held to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MoqConfig {
    /// Whether the MoQ listener runs.
    pub enabled: bool,
    /// UDP address of the QUIC listener (raw QUIC `moqt-18` and WebTransport over HTTP/3).
    pub listen: SocketAddr,
    /// PEM certificate chain. With `key`; when both are absent a development CA and leaf are
    /// generated at start-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Where the generated development CA certificate is written (PEM), for clients to trust
    /// (`moq-sub --tls-root <file>`). Defaults to a file in the system temp directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_ca_file: Option<PathBuf>,
    /// Seconds a connection has, from its first QUIC packet, for the QUIC handshake, the
    /// WebTransport CONNECT and the MoQT SETUP together; past it the connection is closed.
    pub handshake_timeout_s: u64,
    /// QUIC connections held at once; more are refused at accept (0: no limit).
    pub max_connections: usize,
    /// QUIC connections from one source address (IPv6: one /64) at once (0: no limit).
    pub max_connections_per_ip: usize,
    /// Namespaces one session announces at once (PUBLISH_NAMESPACE beyond: EXCESSIVE_LOAD).
    pub max_namespaces_per_session: usize,
    /// Subscriptions one session holds at once (SUBSCRIBE beyond: EXCESSIVE_LOAD).
    pub max_subscriptions_per_session: usize,
    /// Tracks read from one announced namespace: catalog entries ingested and upstream
    /// subscriptions made for relayed tracks.
    pub max_tracks_per_namespace: usize,
    /// Bytes of a catalog or an init segment object.
    pub max_init_bytes: usize,
    /// Bytes of one CMAF fragment object (one or more samples).
    pub max_fragment_bytes: usize,
    /// Samples in one CMAF fragment.
    pub max_samples_per_fragment: usize,
}

impl Default for MoqConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: ([127, 0, 0, 1], 4443).into(),
            cert: None,
            key: None,
            dev_ca_file: None,
            handshake_timeout_s: 10,
            max_connections: 1000,
            max_connections_per_ip: 20,
            max_namespaces_per_session: 16,
            max_subscriptions_per_session: 256,
            max_tracks_per_namespace: 32,
            max_init_bytes: 1 << 20,
            max_fragment_bytes: 16 << 20,
            max_samples_per_fragment: 1024,
        }
    }
}

impl MoqConfig {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_s)
    }

    /// Checks the values that cannot be checked by their types; returns (key, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match (&self.cert, &self.key) {
            (Some(_), None) => return Err(("moq.key", "must be set when moq.cert is".into())),
            (None, Some(_)) => return Err(("moq.cert", "must be set when moq.key is".into())),
            _ => {}
        }
        let limits = self;
        let at_least_one = [
            ("moq.handshake_timeout_s", self.handshake_timeout_s as usize),
            ("moq.max_namespaces_per_session", limits.max_namespaces_per_session),
            ("moq.max_subscriptions_per_session", limits.max_subscriptions_per_session),
            ("moq.max_tracks_per_namespace", limits.max_tracks_per_namespace),
            ("moq.max_samples_per_fragment", limits.max_samples_per_fragment),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err((key, "must be at least 1".into()));
        }
        if limits.max_init_bytes < 1024 {
            return Err(("moq.max_init_bytes", "must be at least 1024".into()));
        }
        if limits.max_fragment_bytes < 1024 {
            return Err(("moq.max_fragment_bytes", "must be at least 1024".into()));
        }
        Ok(())
    }

    /// Whether the certificate is generated at start-up (no files configured).
    pub fn dev_tls(&self) -> bool {
        self.cert.is_none()
    }
}

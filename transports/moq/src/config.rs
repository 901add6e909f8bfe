//! The `[moq]` configuration section: where the QUIC listener binds and which certificate it
//! presents.

use std::net::SocketAddr;
use std::path::PathBuf;

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
}

impl Default for MoqConfig {
    fn default() -> Self {
        Self { enabled: true, listen: ([127, 0, 0, 1], 4443).into(), cert: None, key: None, dev_ca_file: None }
    }
}

impl MoqConfig {
    /// Checks the values that cannot be checked by their types; returns (key, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match (&self.cert, &self.key) {
            (Some(_), None) => Err(("moq.key", "must be set when moq.cert is".into())),
            (None, Some(_)) => Err(("moq.cert", "must be set when moq.key is".into())),
            _ => Ok(()),
        }
    }

    /// Whether the certificate is generated at start-up (no files configured).
    pub fn dev_tls(&self) -> bool {
        self.cert.is_none()
    }
}

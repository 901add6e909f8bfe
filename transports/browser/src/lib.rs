//! junction-browser: what a browser in a room needs. The WebSocket signalling endpoint
//! (`GET /ws?token=`) is the RPC stream of browser peers: join, room events, subscriptions,
//! layers, mute, data messages, leave — plus the signalling relays of mesh rooms (offer/answer/
//! candidates between peers, no media through the server) and of direct calls between two
//! sessions, and reconnection within a grace period. It also serves the JavaScript SDK
//! (`/sdk/junction.js`), the demo room page (`/room/{room}`) and, in development mode only, a
//! token endpoint for that page. Media of SFU rooms goes through the `webrtc` crate's session
//! driver. See `docs/protocol-websocket.md`.

mod error;
mod pages;
mod principal;
pub mod protocol;
mod registry;
mod session;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use junction_auth::Authority;
use junction_endpoint::Engine;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use error::WireError;
pub use registry::Registry;

/// The `[browser]` configuration section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrowserConfig {
    /// Serve `/ws`, the SDK and the demo page.
    pub enabled: bool,
    /// Accept sockets without a token (they name their room in `join`). Insecure: anyone may
    /// join any room.
    pub allow_anonymous: bool,
    /// Let a session call another session by its id, without a room.
    pub allow_direct_call: bool,
    /// How long a session whose socket dropped without `leave` is kept for a reconnect.
    pub reconnect_grace_s: u64,
    /// Largest WebSocket message (and frame) a client may send; a larger one closes the socket
    /// with 1009 after an `error`.
    pub max_message_bytes: usize,
    /// Largest relayed payload (`signal`, `call`, `call_signal`), as JSON text.
    pub max_signal_bytes: usize,
    /// Most bytes of messages kept for a client (a detached one, or one that reads too slowly);
    /// past it the session ends (`overloaded`).
    pub max_outbox_bytes: usize,
    /// Seconds a socket has to join a room (or take part in a direct call) before it is closed
    /// with 4015 (0: no deadline).
    pub join_timeout_s: u64,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_anonymous: false,
            allow_direct_call: true,
            reconnect_grace_s: 20,
            max_message_bytes: 256 * 1024,
            max_signal_bytes: 64 * 1024,
            max_outbox_bytes: 1024 * 1024,
            join_timeout_s: 10,
        }
    }
}

/// The longest reconnect grace period accepted.
pub const MAX_RECONNECT_GRACE_S: u64 = 600;

impl BrowserConfig {
    /// Checks the values; an error names the key (within the section) and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MAX_RECONNECT_GRACE_S).contains(&self.reconnect_grace_s) {
            let message = format!("must be between 1 and {MAX_RECONNECT_GRACE_S} seconds");
            return Err(("browser.reconnect_grace_s", message));
        }
        if self.max_message_bytes < 1024 {
            return Err(("browser.max_message_bytes", "must be at least 1024 bytes".into()));
        }
        if self.max_signal_bytes == 0 || self.max_signal_bytes > self.max_message_bytes {
            return Err(("browser.max_signal_bytes", "must be between 1 and browser.max_message_bytes".into()));
        }
        if self.max_outbox_bytes < self.max_message_bytes {
            return Err(("browser.max_outbox_bytes", "must be at least browser.max_message_bytes".into()));
        }
        if self.join_timeout_s > MAX_RECONNECT_GRACE_S {
            let message = format!("must be between 0 (no deadline) and {MAX_RECONNECT_GRACE_S} seconds");
            return Err(("browser.join_timeout_s", message));
        }
        Ok(())
    }
}

/// What the browser transport adds to the server.
pub struct Browser {
    /// Public routes: `/ws`, `/sdk/junction.js`, `/room/{room}`, and `/dev/token` in
    /// development mode.
    pub router: Router,
    /// The live signalling sessions (for counts).
    pub registry: Registry,
}

/// Where the demo room page lives, for the home page's link.
pub const DEMO_PAGE: &str = "/room/demo";

/// Builds the browser transport. `webrtc` carries the media of SFU rooms (without it, browsers
/// can use mesh rooms and direct calls only). `dev_mode` (the server generated its own API key)
/// enables the token endpoint the demo page uses when it is opened without `?token=`.
pub fn start(
    engine: Engine,
    authority: Authority,
    config: BrowserConfig,
    webrtc: Option<junction_webrtc::WebrtcTransport>,
    dev_mode: bool,
    shutdown: CancellationToken,
) -> Browser {
    if config.allow_anonymous {
        tracing::warn!(
            "browser.allow_anonymous = true: sockets without a token may join any room under a generated \
             identity. This is insecure; use it only for development."
        );
    }
    let registry = Registry::default();
    let ctx = Arc::new(session::Context {
        engine: engine.clone(),
        authority: authority.clone(),
        registry: registry.clone(),
        config,
        webrtc,
    });
    let ws_state = ws::WsState { ctx, shutdown };
    let mut router = Router::new().route("/ws", get(ws::handler)).with_state(ws_state).merge(pages::routes(dev_mode));
    if dev_mode {
        router = router.merge(pages::dev_routes(engine, authority));
    }
    Browser { router, registry }
}

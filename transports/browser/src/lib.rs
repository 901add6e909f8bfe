//! junction-browser: what a browser in a room needs. The WebSocket signalling endpoint
//! (`GET /ws?token=`) is the RPC stream of browser peers: join, room events, subscriptions,
//! layers, mute, data messages, leave — plus the signalling relays of mesh rooms (offer/answer/
//! candidates between peers, no media through the server) and of direct calls between two
//! sessions, and reconnection within a grace period. It also serves the JavaScript SDK
//! (`/sdk/junction.js`), the demo room page (`/room/{room}`) and, in development mode only, a
//! token endpoint for that page. Media of SFU rooms goes through the `webrtc` crate's session
//! driver. See `docs/protocol-websocket.md`.

mod error;
pub mod fuzz;
mod pages;
mod principal;
pub mod protocol;
mod registry;
mod session;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use junction_transport_api::{Link, Service, Started, TransportContext};
use junction_webrtc::WebrtcTransport;
use serde::{Deserialize, Serialize};

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

/// Where the demo room page lives, for the home page's link.
pub const DEMO_PAGE: &str = "/room/demo";

/// Why the browser transport could not start: nothing can go wrong (it only adds routes to the
/// server's HTTP listener), but the start shape is the same for every transport.
#[derive(Debug, thiserror::Error)]
pub enum StartError {}

/// Starts the browser transport (unless `browser.enabled` is off): `/ws`, the SDK, the demo
/// page and, in development mode (the server generated its own API key), the token endpoint the
/// demo page uses when it is opened without `?token=`. The WebRTC media plane, when an earlier
/// transport offers it, carries the media of SFU rooms (without it, browsers can use mesh rooms
/// and direct calls only).
pub async fn start(ctx: &TransportContext, config: &BrowserConfig) -> Result<Started, StartError> {
    if !config.enabled {
        return Ok(Started::default());
    }
    let (engine, authority, dev_mode) = (ctx.engine.clone(), ctx.authority.clone(), ctx.dev_mode);
    let config = config.clone();
    let webrtc = ctx.provided::<WebrtcTransport>();
    if config.allow_anonymous {
        tracing::warn!(
            "browser.allow_anonymous = true: sockets without a token may join any room under a generated \
             identity. This is insecure; use it only for development."
        );
    }
    let registry = Registry::default();
    let sessions = Arc::new(session::Context {
        engine: engine.clone(),
        authority: authority.clone(),
        registry: registry.clone(),
        config,
        webrtc,
    });
    let ws_state = ws::WsState { ctx: sessions, shutdown: ctx.shutdown.clone() };
    let mut router = Router::new().route("/ws", get(ws::handler)).with_state(ws_state).merge(pages::routes(dev_mode));
    if dev_mode {
        router = router.merge(pages::dev_routes(engine, authority));
    }
    let ws_url = format!("{}/ws", ctx.public_url.replacen("http", "ws", 1));
    Ok(Started {
        services: vec![Service { name: "ws", url: ws_url, about: "browser signalling (WebSocket)" }],
        public: router,
        pages: vec![Link {
            title: "Room demo",
            href: DEMO_PAGE.to_owned(),
            about: "join a room from this browser: camera, microphone, screen, chat (/room/{room}?token=...)",
        }],
        ..Started::default()
    })
}

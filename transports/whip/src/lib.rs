//! junction-whip: WHIP ingest (RFC 9725) and WHEP egress (the IETF WHEP draft) over HTTP, on
//! the WebRTC crate's session driver.
//!
//! `POST /whip/{room}` turns an encoder's SDP offer into a publishing peer of the room;
//! `POST /whep/{room}` turns a player's offer into a viewer of the room's active publisher(s)
//! (or of one identity, `?identity=`). Each creates a resource `/{whip|whep}/{room}/{id}` that
//! takes `PATCH` (trickle ICE, ICE restart) and `DELETE`. Credentials are client JWTs or, for
//! WHIP, ingress stream keys. The surface is documented in `docs/protocol-whip-whep.md`; its
//! limits (body size, sessions per source address, the connect deadline of `[webrtc]`) in
//! `docs/security.md`.

mod error;
mod limits;
mod options;
mod pages;
mod resources;
mod routes;
pub mod sdpfrag;

use axum::Router;
use junction_auth::Authority;
use junction_endpoint::Engine;
use junction_webrtc::WebrtcTransport;
use serde::{Deserialize, Serialize};

pub use options::{ice_server_links, with_options_headers};
pub use resources::Kind;

/// The `[whip]` configuration section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhipConfig {
    /// Whether `/whip` and `/whep` are served (they also need `[webrtc]` enabled).
    pub enabled: bool,
    /// A WHIP publisher whose identity is already in the room replaces the older session
    /// (`true`, handy for encoders that reconnect before the old session timed out) or is
    /// refused with `409 Conflict` (`false`).
    pub replace_existing: bool,
    /// Live WHIP and WHEP sessions one source address may hold; more are refused with `429`
    /// (0: no limit). Behind a reverse proxy every client has the proxy's address.
    pub max_resources_per_ip: usize,
}

impl Default for WhipConfig {
    fn default() -> Self {
        Self { enabled: true, replace_existing: false, max_resources_per_ip: 64 }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct WhipState {
    pub(crate) engine: Engine,
    pub(crate) authority: Authority,
    pub(crate) transport: WebrtcTransport,
    pub(crate) config: WhipConfig,
    pub(crate) resources: resources::Resources,
    pub(crate) per_source: limits::PerSource,
}

impl WhipState {
    pub fn new(engine: Engine, authority: Authority, transport: WebrtcTransport, config: WhipConfig) -> Self {
        let (resources, per_source) = (resources::Resources::default(), limits::PerSource::default());
        Self { engine, authority, transport, config, resources, per_source }
    }

    /// Live WHIP or WHEP sessions.
    pub fn live(&self, kind: Kind) -> usize {
        self.resources.count(kind)
    }
}

/// The public routes: `/whip/...`, `/whep/...`, `/whip.html`, `/whep.html`.
pub fn router(state: WhipState) -> Router {
    routes::routes().merge(pages::routes()).with_state(state)
}

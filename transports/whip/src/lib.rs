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
use junction_engine::Engine;
use junction_transport_api::{IngressUrls, Link, Service, Started, TransportContext};
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

/// Why WHIP/WHEP could not start: nothing can go wrong (they only add routes to the server's
/// HTTP listener), but the start shape is the same for every transport.
#[derive(Debug, thiserror::Error)]
pub enum StartError {}

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

/// Starts WHIP and WHEP (unless `whip.enabled` is off, or there is no WebRTC media plane: they
/// need `[webrtc]`): the public routes, the banner lines, the demo pages, the WHIP ingress URL,
/// and the layer that adds the ICE servers to `OPTIONS` answers.
pub async fn start(ctx: &TransportContext, config: &WhipConfig) -> Result<Started, StartError> {
    let Some(transport) = ctx.provided::<WebrtcTransport>().filter(|_| config.enabled) else {
        return Ok(Started::default());
    };
    let ice_servers = transport.ice_servers().to_vec();
    let state = WhipState::new(ctx.engine.clone(), ctx.authority.clone(), transport, config.clone());
    let public_url = &ctx.public_url;
    Ok(Started {
        services: vec![
            Service { name: "whip", url: format!("{public_url}/whip"), about: "WHIP ingest: POST /whip/{room}" },
            Service { name: "whep", url: format!("{public_url}/whep"), about: "WHEP egress: POST /whep/{room}" },
        ],
        public: router(state),
        pages: vec![
            Link {
                title: "WHIP publisher",
                href: "/whip.html".into(),
                about: "publish this browser's camera into a room",
            },
            Link { title: "WHEP player", href: "/whep.html?room=demo".into(), about: "watch a room's publisher" },
        ],
        ingress_urls: IngressUrls { whip: Some(format!("{public_url}/whip")), ..IngressUrls::default() },
        app_layers: vec![Box::new(move |app| with_options_headers(app, &ice_servers))],
        ..Started::default()
    })
}

/// The public routes: `/whip/...`, `/whep/...`, `/whip.html`, `/whep.html`.
pub fn router(state: WhipState) -> Router {
    routes::routes().merge(pages::routes()).with_state(state)
}

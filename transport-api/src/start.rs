//! The start contract between the server and its transports. Every transport crate has one
//!
//! ```text
//! pub async fn start(ctx: &TransportContext, config: &XConfig) -> Result<Started, StartError>
//! ```
//!
//! It is given what every transport shares ([`TransportContext`]: the engine, the credential
//! authority, the room mixer, the shutdown token, where the HTTP server is reached), binds its
//! sockets, spawns its tasks, and hands back what it adds to the server ([`Started`]): banner
//! lines, HTTP routes, home-page links, ingress URLs. A disabled transport returns
//! `Started::default()`. So the server's start-up is a list, one line per transport.
//!
//! One transport may offer something to those started after it ([`Started::provides`]): the
//! WebRTC media plane, which WHIP/WHEP and the browser socket use. The server passes it on in
//! the context ([`TransportContext::provided`]); a transport that needs it and finds none stays
//! off, as WHIP does without `[webrtc]`.

use axum::Router;
use http::Extensions;
use junction_audio::mixer::Mixer;
use junction_auth::Authority;
use junction_engine::Engine;
use junction_store::Store;
use tokio_util::sync::CancellationToken;

/// What every transport is started with.
#[derive(Clone)]
pub struct TransportContext {
    pub engine: Engine,
    pub authority: Authority,
    /// The room audio mixer (phones hear rooms through it).
    pub mixer: Mixer,
    /// Cancelled when the server shuts down: stop accepting, end sessions.
    pub shutdown: CancellationToken,
    /// The URL clients reach the HTTP server at, without a trailing slash.
    pub public_url: String,
    /// The server generated its own API key (development mode): demo conveniences may be on.
    pub dev_mode: bool,
    /// Where what an operator creates through a transport's API (SIP trunks and dispatch rules)
    /// is kept across restarts and shared between a cluster's nodes.
    pub store: Store,
    provided: Extensions,
}

impl TransportContext {
    pub fn new(
        engine: Engine,
        authority: Authority,
        mixer: Mixer,
        shutdown: CancellationToken,
        public_url: String,
        dev_mode: bool,
        store: Store,
    ) -> Self {
        Self { engine, authority, mixer, shutdown, public_url, dev_mode, store, provided: Extensions::new() }
    }

    /// What an earlier transport offered, by type (the WebRTC media plane).
    pub fn provided<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.provided.get::<T>().cloned()
    }

    /// Takes what a transport offers those started after it.
    pub fn provide(&mut self, provided: Extensions) {
        self.provided.extend(provided);
    }
}

/// A listening service, as shown in the start-up banner and on the home page.
#[derive(Debug, Clone)]
pub struct Service {
    /// Short name (`http`, `rtmp`, ...); the banner's first column.
    pub name: &'static str,
    /// Where clients reach it (`rtmp://127.0.0.1:1935/live`).
    pub url: String,
    pub about: &'static str,
}

/// A page linked from the home page.
#[derive(Debug, Clone)]
pub struct Link {
    pub title: &'static str,
    pub href: String,
    pub about: &'static str,
}

/// Where encoders send streams, as the ingress API reports them.
#[derive(Debug, Clone, Default)]
pub struct IngressUrls {
    pub rtmp: Option<String>,
    pub whip: Option<String>,
    pub srt: Option<String>,
}

impl IngressUrls {
    /// Takes every URL `other` has.
    pub fn merge(&mut self, other: IngressUrls) {
        self.rtmp = other.rtmp.or(self.rtmp.take());
        self.whip = other.whip.or(self.whip.take());
        self.srt = other.srt.or(self.srt.take());
    }
}

/// Wraps the whole HTTP application (WHIP's `OPTIONS` headers).
pub type AppLayer = Box<dyn FnOnce(Router) -> Router + Send>;

/// What a started transport adds to the server. `Started::default()` adds nothing.
#[derive(Default)]
pub struct Started {
    /// Banner and home-page lines, in order (tests read bound addresses from the banner).
    pub services: Vec<Service>,
    /// Public routes (WHIP/WHEP, WebSocket, pages, SDK).
    pub public: Router,
    /// Routes under `/v1`, which the server puts behind the API key.
    pub api: Router,
    /// Home-page links to the transport's own pages.
    pub pages: Vec<Link>,
    pub ingress_urls: IngressUrls,
    /// Layers around the whole HTTP application, applied in order.
    pub app_layers: Vec<AppLayer>,
    /// What this transport offers transports started after it, by type.
    pub provides: Extensions,
}

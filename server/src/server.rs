//! `junction serve`: builds the engine, starts every transport, serves HTTP, prints where
//! everything listens, and shuts down gracefully on SIGINT/SIGTERM, in this order: rooms are
//! closed (peers are told), HTTP drains, the webhooks of everything that happened are delivered
//! (within `webhook.shutdown_grace_s`), the process exits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use junction_audio::mixer::Mixer;
use junction_auth::{ApiKey, Authority, DEFAULT_KEY_ID};
use junction_core::RoomOptions;
use junction_core::ids::random_id;
use junction_engine::{Engine, EngineConfig, SystemClock};
use junction_transport_api::{AppLayer, IngressUrls, Link, Service, Started, TransportContext};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::config::{Config, Sources};
use crate::listener::HttpLimits;
use crate::{metrics, redirect, state, webhook};

/// How long HTTP connections get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the transports add to the server, gathered from their [`Started`]s in start order.
#[derive(Default)]
struct Wiring {
    /// Routes under `/v1`, behind the API key.
    api: Router,
    /// Public routes (WHIP/WHEP, WebSocket, pages, SDK).
    public: Router,
    services: Vec<Service>,
    pages: Vec<Link>,
    ingress_urls: IngressUrls,
    app_layers: Vec<AppLayer>,
}

impl Wiring {
    /// Takes in what a transport added; what it offers later transports goes into `ctx`.
    fn add(&mut self, started: Started, ctx: &mut TransportContext) {
        self.api = std::mem::take(&mut self.api).merge(started.api);
        self.public = std::mem::take(&mut self.public).merge(started.public);
        self.services.extend(started.services);
        self.pages.extend(started.pages);
        self.ingress_urls.merge(started.ingress_urls);
        self.app_layers.extend(started.app_layers);
        ctx.provide(started.provides);
    }
}

pub fn engine_config(config: &Config) -> EngineConfig {
    EngineConfig {
        subscriber_queue_delay: Duration::from_millis(config.rooms.subscriber_queue_ms),
        auto_create_rooms: config.rooms.auto_create,
        room_defaults: RoomOptions {
            max_peers: config.rooms.max_peers,
            empty_timeout: Duration::from_secs(config.rooms.empty_timeout_s),
            video_codec: config.rooms.video_codec,
            ..RoomOptions::default()
        },
        max_sessions_per_token: config.auth.max_sessions_per_token,
        end_sessions_at_expiry: config.auth.end_sessions_at_expiry,
        ..EngineConfig::default()
    }
}

pub async fn serve(config: Config, sources: Sources) -> anyhow::Result<()> {
    let started = Instant::now();
    let dev_mode = config.dev_mode();
    // Development mode: one generated key, printed in the banner; likewise the webhook secret.
    let dev_key = dev_mode.then(|| random_id("dev_", 32));
    let keys = match &dev_key {
        Some(key) => vec![ApiKey::new(DEFAULT_KEY_ID, key)],
        None => config.api_keys(),
    };
    let authority = Authority::with_keys(keys, &config.signing_key()).context("API keys ([auth] keys, api_key)")?;
    let dev_webhook_secret =
        (config.webhook.secret.is_none() && !config.webhook.urls.is_empty()).then(|| random_id("whsec_", 32));
    let webhook_secret = config.webhook.secret.clone().or_else(|| dev_webhook_secret.clone()).unwrap_or_default();
    info!(file = ?sources.file, env = ?sources.env, flags = ?sources.flags, "configuration loaded");
    info!(keys = ?authority, "API keys");
    let metrics = metrics::install().context("installing the metrics recorder")?;
    // The engine transcodes audio (AAC, Opus, G.711) and video (VP8/VP9/AV1 <-> H.264, -> VP8)
    // for subscribers that cannot take a track's codec.
    let mut adapters = junction_audio::codec::adapters(config.audio);
    let video_routes = junction_video::register_adapters(&mut adapters, config.video);
    info!(routes = ?video_routes, max = config.video.max_transcodes, "video transcoding");
    let engine = Engine::with_parts(engine_config(&config), Arc::new(SystemClock), adapters);
    // Kept for `/v1/events` from the first event on (restored rooms starting included).
    let events = crate::events::EventLog::start(&engine);
    let shutdown = CancellationToken::new();

    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {} (http.listen)", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let public_url = config.public_url(http_addr);

    let mut wiring = Wiring {
        services: vec![Service { name: "http", url: public_url.clone(), about: "REST API, web pages, metrics" }],
        ..Wiring::default()
    };
    for (old, new) in config.deprecated_keys() {
        warn!("{old} is deprecated and will go: set {new} instead");
    }
    // The room audio mixer: one mix per room, a minus-one per listener (phones hear rooms through it).
    let mixer = Mixer::new(engine.clone(), config.mix_config());
    // What operators created before a restart (or on other nodes) is back before anyone connects.
    let store = state::open(&config).await?;
    state::restore(&store, &engine, &authority).await?;
    let mut ctx = TransportContext::new(
        engine.clone(),
        authority.clone(),
        mixer,
        shutdown.clone(),
        public_url.clone(),
        dev_mode,
        store.clone(),
    );

    // Every transport, in banner order; each is off when its section says `enabled = false`.
    // WHIP/WHEP and the browser socket use the WebRTC media plane, so they come after it.
    wiring.add(junction_sip::start(&ctx, &config.sip).await.context("starting SIP (sip.listen)")?, &mut ctx);
    wiring.add(junction_rtmp::start(&ctx, &config.rtmp).await?, &mut ctx);
    wiring.add(junction_srt::start(&ctx, &config.srt).await?, &mut ctx);
    wiring.add(junction_moq::start(&ctx, &config.moq).await.context("starting Media over QUIC ([moq])")?, &mut ctx);
    wiring.add(junction_webrtc::start(&ctx, &config.webrtc).await?, &mut ctx);
    wiring.add(junction_turn::start(&ctx, &config.turn).await.context("starting the TURN server ([turn])")?, &mut ctx);
    wiring.add(junction_whip::start(&ctx, &config.whip).await?, &mut ctx);
    wiring.add(junction_browser::start(&ctx, &config.browser).await?, &mut ctx);
    // Room components (files played into rooms, recordings), restarted from the state store.
    let recordings = config.recordings().map_err(anyhow::Error::msg)?;
    wiring.add(junction_components::start(&ctx, recordings, config.video.max_grids).await, &mut ctx);

    // Cluster mode: registry, control bus and media relay over the shared Redis.
    let cluster = match &config.cluster.redis_url {
        Some(_) => {
            let context = junction_cluster::NodeContext {
                public_url: public_url.clone(),
                secret: config.cluster.secret.clone().or_else(|| config.api_key.clone()),
                cpu_seconds: metrics::cpu_seconds,
            };
            let cluster =
                junction_cluster::Cluster::start(engine.clone(), config.cluster.clone(), context, shutdown.clone())
                    .await
                    .context("joining the cluster ([cluster])")?;
            wiring.services.push(Service {
                name: "relay",
                url: format!("quic://{}", cluster.relay_addr()),
                about: "cluster media relay (node-to-node QUIC)",
            });
            wiring.services.push(Service { name: "node", url: cluster.node_id().to_owned(), about: "cluster node id" });
            Some(cluster)
        }
        None => None,
    };

    tokio::spawn(engine.clone().run_timers(Duration::from_secs(1), shutdown.clone()));
    state::follow(store.clone(), engine.clone(), authority.clone(), shutdown.clone());
    let webhooks = webhook::start(&engine, &config.webhook, &webhook_secret, &store, cluster.as_ref()).await?;

    let state = AppState {
        engine: engine.clone(),
        authority,
        public_url: Arc::from(public_url.as_str()),
        ingress_urls: Arc::new(wiring.ingress_urls),
        metrics,
        started,
        pages: Arc::new(wiring.pages),
        services: Arc::new(wiring.services.clone()),
        cluster: cluster.clone(),
        store,
        events,
        webrtc: ctx.provided::<junction_webrtc::WebrtcTransport>(),
    };
    let request_timeout = Duration::from_secs(config.http.request_timeout_s);
    let app = api::app(state, wiring.api, wiring.public, &config.http.cors_origins, request_timeout);
    let app = wiring.app_layers.into_iter().fold(app, |app, layer| layer(app));
    let app = app.layer(axum::middleware::from_fn_with_state(cluster.clone(), redirect::when_full));

    print_banner(&wiring.services, &public_url, dev_key.as_deref(), dev_webhook_secret.as_deref());
    tokio::spawn(wait_for_signal(shutdown.clone()));

    let limits = HttpLimits {
        max_connections: config.http.max_connections,
        max_header_bytes: config.http.max_header_bytes,
        header_read_timeout: Duration::from_secs(config.http.header_read_timeout_s),
    };
    let rooms_closed = {
        let shutdown = shutdown.clone();
        let engine = engine.clone();
        async move {
            shutdown.cancelled().await;
            info!("shutting down: closing rooms, draining HTTP");
            if let Some(cluster) = &cluster {
                cluster.drain().await;
            }
            engine.shutdown();
        }
    };
    crate::listener::serve(listener, app, limits, rooms_closed, DRAIN_TIMEOUT).await;
    // Every room is closed by now, so their last events are in the stream.
    if let Some(webhooks) = webhooks {
        webhooks.drain().await;
    }
    info!("stopped");
    Ok(())
}

fn print_banner(services: &[Service], public_url: &str, dev_key: Option<&str>, dev_webhook_secret: Option<&str>) {
    println!("Junction {}", env!("CARGO_PKG_VERSION"));
    for service in services {
        println!("  {:<8} {}", service.name, service.url);
    }
    println!("  home     {public_url}/");
    if let Some(key) = dev_key {
        println!("  api_key  {key}");
        println!(
            "Development mode: the API key above was generated for this run; set api_key (or JUNCTION_API_KEY) to keep one."
        );
    }
    if let Some(secret) = dev_webhook_secret {
        println!("  webhook_secret  {secret}");
        println!("Webhooks are signed with the secret above, generated for this run; set webhook.secret to keep one.");
    }
    println!("Junction is ready.");
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            warn!("cannot listen for SIGTERM: {err}");
            let _ = ctrl_c.await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => info!("SIGINT received"),
        _ = term.recv() => info!("SIGTERM received"),
    }
    shutdown.cancel();
}

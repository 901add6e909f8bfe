//! `junction serve`: builds the engine, starts every transport, serves HTTP, prints where
//! everything listens, and shuts down gracefully on SIGINT/SIGTERM (peers are told, HTTP drains).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use junction_auth::Authority;
use junction_core::RoomOptions;
use junction_core::ids::random_id;
use junction_endpoint::mixer::{MixConfig, Mixer};
use junction_endpoint::{Engine, EngineConfig, SystemClock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, AppState, IngressUrls};
use crate::config::{Config, Sources};
use crate::pages::{Link, Service};
use crate::{metrics, webhook};

/// How long HTTP connections get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the transports add to the server: routes, banner lines, home-page links, ingest URLs.
#[derive(Default)]
pub struct Wiring {
    /// Routes under `/v1`, behind the API key.
    pub api: Router,
    /// Public routes (WHIP/WHEP, WebSocket, pages, SDK).
    pub public: Router,
    pub services: Vec<Service>,
    pub pages: Vec<Link>,
    pub ingress_urls: IngressUrls,
}

pub fn engine_config(config: &Config) -> EngineConfig {
    EngineConfig {
        subscriber_queue: config.rooms.subscriber_queue,
        auto_create_rooms: config.rooms.auto_create,
        room_defaults: RoomOptions {
            max_peers: config.rooms.max_peers,
            empty_timeout: Duration::from_secs(config.rooms.empty_timeout_s),
            ..RoomOptions::default()
        },
        ..EngineConfig::default()
    }
}

pub async fn serve(config: Config, sources: Sources) -> anyhow::Result<()> {
    let started = Instant::now();
    let (api_key, dev_mode) = match &config.api_key {
        Some(key) => (key.clone(), false),
        None => (random_id("dev_", 32), true),
    };
    info!(file = ?sources.file, env = ?sources.env, flags = ?sources.flags, "configuration loaded");
    let metrics = metrics::install().context("installing the metrics recorder")?;
    let authority = Authority::new(&api_key);
    // The engine transcodes audio (AAC, Opus, G.711) for subscribers that cannot take a track's codec.
    let engine =
        Engine::with_parts(engine_config(&config), Arc::new(SystemClock), junction_endpoint::codec::default_adapters());
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
    // The room audio mixer: one mix per room, a minus-one per listener (phones hear rooms through it).
    let mixer = Mixer::new(engine.clone(), MixConfig { speakers: config.sip.mix_speakers, ..MixConfig::default() });

    // SIP: phones dial into rooms (trunks, dispatch rules, PINs) and rooms dial out to phones.
    if config.sip.enabled {
        let sip = junction_sip::start(engine.clone(), mixer.clone(), config.sip.clone(), shutdown.clone())
            .await
            .context("starting SIP (sip.listen)")?;
        wiring.api = wiring.api.merge(sip.api);
        wiring.services.push(Service {
            name: "sip",
            url: sip.uri,
            about: "SIP over UDP and TCP: dial-in and dial-out",
        });
    }

    if config.rtmp.enabled {
        let rtmp =
            junction_rtmp::start(engine.clone(), authority.clone(), config.rtmp.clone(), shutdown.clone()).await?;
        wiring.services.push(Service {
            name: "rtmp",
            url: rtmp.url(),
            about: "RTMP ingest (OBS, ffmpeg) and playback",
        });
        wiring.ingress_urls.rtmp = Some(rtmp.url());
    }

    if config.moq.enabled {
        let moq = junction_moq::start(&config.moq, engine.clone(), authority.clone(), shutdown.clone())
            .context("starting Media over QUIC ([moq])")?;
        wiring.services.push(Service {
            name: "moq",
            url: moq.url.clone(),
            about: "Media over QUIC draft-18: WebTransport, or raw QUIC (moqt://, ALPN moqt-18)",
        });
        if let Some(ca) = &moq.dev_ca_file {
            wiring.services.push(Service {
                name: "moq-ca",
                url: ca.display().to_string(),
                about: "generated development CA (PEM) for MoQ clients to trust",
            });
            wiring.services.push(Service {
                name: "moq-hash",
                url: format!("sha256:{}", moq.fingerprint),
                about: "MoQ certificate hash for WebTransport serverCertificateHashes",
            });
        }
    }

    // WebRTC media plane, and WHIP/WHEP on top of it.
    let mut webrtc = None;
    let mut whip_options = None;
    if config.webrtc.enabled {
        let transport = junction_webrtc::start(&config.webrtc, shutdown.clone()).await?;
        webrtc = Some(transport.clone());
        wiring.services.push(Service {
            name: "webrtc",
            url: format!("udp://{}", transport.advertised_addr()),
            about: "WebRTC media (ICE-lite, one UDP port for every session)",
        });
        if config.whip.enabled {
            let whip = junction_whip::WhipState::new(engine.clone(), authority.clone(), transport, config.whip.clone());
            wiring.public = wiring.public.merge(junction_whip::router(whip));
            wiring.services.push(Service {
                name: "whip",
                url: format!("{public_url}/whip"),
                about: "WHIP ingest: POST /whip/{room}",
            });
            wiring.services.push(Service {
                name: "whep",
                url: format!("{public_url}/whep"),
                about: "WHEP egress: POST /whep/{room}",
            });
            wiring.pages.push(Link {
                title: "WHIP publisher",
                href: "/whip.html".into(),
                about: "publish this browser's camera into a room",
            });
            wiring.pages.push(Link {
                title: "WHEP player",
                href: "/whep.html?room=demo".into(),
                about: "watch a room's publisher",
            });
            wiring.ingress_urls.whip = Some(format!("{public_url}/whip"));
            whip_options = Some(config.webrtc.ice_servers.clone());
        }
    }

    if config.browser.enabled {
        let browser = junction_browser::start(
            engine.clone(),
            authority.clone(),
            config.browser.clone(),
            webrtc,
            dev_mode,
            shutdown.clone(),
        );
        wiring.public = wiring.public.merge(browser.router);
        let ws_url = format!("{}/ws", public_url.replacen("http", "ws", 1));
        wiring.services.push(Service { name: "ws", url: ws_url, about: "browser signalling (WebSocket)" });
        wiring.pages.push(Link {
            title: "Room demo",
            href: junction_browser::DEMO_PAGE.to_owned(),
            about: "join a room from this browser: camera, microphone, screen, chat (/room/{room}?token=...)",
        });
    }

    tokio::spawn(engine.clone().run_timers(Duration::from_secs(1), shutdown.clone()));
    webhook::start(&engine, &config.webhook, &api_key, shutdown.clone())?;

    let state = AppState {
        engine: engine.clone(),
        authority,
        public_url: Arc::from(public_url.as_str()),
        ingress_urls: Arc::new(wiring.ingress_urls),
        metrics,
        started,
        pages: Arc::new(wiring.pages),
        services: Arc::new(wiring.services.clone()),
    };
    let app = api::app(state, wiring.api, wiring.public, &config.http.cors_origins);
    let app = match &whip_options {
        Some(ice_servers) => junction_whip::with_options_headers(app, ice_servers),
        None => app,
    };

    print_banner(&wiring.services, &public_url, &api_key, dev_mode);
    tokio::spawn(wait_for_signal(shutdown.clone()));

    let drained = {
        let shutdown = shutdown.clone();
        let engine = engine.clone();
        async move {
            shutdown.cancelled().await;
            info!("shutting down: closing rooms, draining HTTP");
            engine.shutdown();
        }
    };
    // The peer address reaches handlers that limit per source (WHIP/WHEP sessions per address).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(drained);
    tokio::select! {
        result = server => result.context("HTTP server failed")?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
            warn!("HTTP connections still open after {DRAIN_TIMEOUT:?}; exiting anyway");
        }
    }
    info!("stopped");
    Ok(())
}

fn print_banner(services: &[Service], public_url: &str, api_key: &str, dev_mode: bool) {
    println!("Junction {}", env!("CARGO_PKG_VERSION"));
    for service in services {
        println!("  {:<8} {}", service.name, service.url);
    }
    println!("  home     {public_url}/");
    if dev_mode {
        println!("  api_key  {api_key}");
        println!(
            "Development mode: the API key above was generated for this run; set api_key (or JUNCTION_API_KEY) to keep one."
        );
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

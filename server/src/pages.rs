//! The web pages the server itself serves: the home page, which says what is running where and
//! links the demo pages that transports bring.

use junction_engine::EngineStats;
use junction_transport_api::{Link, Service};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The home page: what runs where (`services`), the transports' demo `pages`, live counts.
pub fn home(stats: &EngineStats, services: &[Service], pages: &[Link]) -> String {
    let services: String = services
        .iter()
        .map(|s| format!("<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>", s.name, escape(&s.url), s.about))
        .collect();
    let links: String = if pages.is_empty() {
        "<li>No demo pages: no browser-facing transport is enabled.</li>".to_owned()
    } else {
        pages
            .iter()
            .map(|l| format!("<li><a href=\"{}\">{}</a> — {}</li>", escape(&l.href), l.title, l.about))
            .collect()
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="/favicon.svg" type="image/svg+xml"><title>Junction</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse}}td{{padding:.2rem .8rem .2rem 0;vertical-align:top}}code{{background:#f3f3f3;padding:0 .3rem}}</style>
</head><body>
<h1>Junction</h1>
<p>A media gateway where browsers (WebRTC), encoders (RTMP, WHIP), viewers (WHEP), phones (SIP) and
Media-over-QUIC clients meet in the same rooms. Version {version}.</p>
<p><strong>{rooms}</strong> rooms, <strong>{peers}</strong> peers, <strong>{tracks}</strong> tracks live.</p>
<h2>Try it</h2><ul>{links}</ul>
<h2>Listening</h2><table>{services}</table>
<h2>Operate</h2>
<p>The <a href="/dashboard">dashboard</a> shows live rooms, peers and media stats and acts on them (it asks for the API key).</p>
<h2>API</h2>
<p>The REST API lives under <code>/v1</code> (bearer: the API key); its description is
<code>GET /v1/openapi.json</code>. Prometheus metrics: <a href="/metrics">/metrics</a>. Health: <a href="/healthz">/healthz</a>.</p>
</body></html>
"#,
        version = env!("CARGO_PKG_VERSION"),
        rooms = stats.rooms,
        peers = stats.peers,
        tracks = stats.tracks,
    )
}

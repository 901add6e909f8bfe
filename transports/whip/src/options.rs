//! `OPTIONS` on WHIP and WHEP URLs. The server's CORS layer answers every `OPTIONS` request as
//! a preflight before any route sees it; this layer, wrapped around the whole application,
//! adds what RFC 9725 §4.6 wants from those answers: the ICE servers as `Link` headers, and
//! which methods and body types the URL takes.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use junction_webrtc::IceServer;

/// `Link: <stun:...>; rel="ice-server"` values for the configured STUN/TURN URLs.
pub fn ice_server_links(servers: &[IceServer]) -> Vec<HeaderValue> {
    let mut links = Vec::new();
    for server in servers {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(username), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    username.replace('"', ""),
                    credential.replace('"', "")
                ));
            }
            if let Ok(value) = HeaderValue::from_str(&link) {
                links.push(value);
            }
        }
    }
    links
}

/// Wraps `app` so that `OPTIONS /whip/...` and `OPTIONS /whep/...` answers carry the ICE
/// servers and the accepted methods and types.
pub fn with_options_headers(app: Router, ice_servers: &[IceServer]) -> Router {
    let links = Arc::new(ice_server_links(ice_servers));
    app.layer(middleware::from_fn_with_state(links, add_headers))
}

async fn add_headers(State(links): State<Arc<Vec<HeaderValue>>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let endpoint = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["", "whip" | "whep", _room] => Some(true),
        ["", "whip" | "whep", _room, _id] => Some(false),
        _ => None,
    };
    let Some(endpoint) = endpoint.filter(|_| request.method() == Method::OPTIONS) else {
        return next.run(request).await;
    };
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if endpoint {
        headers.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST"));
        headers.insert("accept-post", HeaderValue::from_static("application/sdp"));
    } else {
        headers.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, PATCH, DELETE"));
        headers.insert("accept-patch", HeaderValue::from_static("application/trickle-ice-sdpfrag"));
    }
    for link in links.iter() {
        headers.append(header::LINK, link.clone());
    }
    response
}

//! WHIP and WHEP offers to a full node are redirected: a `POST /whip/{room}` or `/whep/{room}`
//! reaching a node that is draining or at `cluster.max_peers` answers `307 Temporary Redirect`
//! to the same path on the node placement picks (RFC 9725 §4.5 allows redirects; a 307 keeps the
//! method and the SDP body), the bearer token carried over in the query. With no open node
//! elsewhere the offer is taken here.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use junction_core::RoomId;
use tracing::info;

/// The middleware; `cluster` is `None` on a single node, which never redirects.
pub async fn when_full(
    State(cluster): State<Option<junction_cluster::Cluster>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(cluster) = cluster else { return next.run(request).await };
    let Some(room) = offered_room(request.method(), request.uri().path()) else { return next.run(request).await };
    let Some(node) = cluster.redirect_for(&room) else { return next.run(request).await };
    let location = location(&node.url, &request);
    let Ok(location) = HeaderValue::from_str(&location) else { return next.run(request).await };
    info!(%room, node = node.id, "this node is full: offer redirected");
    metrics::counter!("junction_cluster_redirects_total").increment(1);
    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response()
}

/// The same endpoint on `node_url`. HTTP clients drop `Authorization` when a redirect leaves the
/// origin (Fetch, reqwest, curl), so a bearer token moves into the `token` query parameter,
/// which the WHIP/WHEP endpoints also read.
fn location(node_url: &str, request: &Request) -> String {
    let uri = request.uri();
    let mut location = format!("{}{}", node_url.trim_end_matches('/'), uri.path());
    let mut query: Vec<String> = uri.query().map(|q| q.split('&').map(str::to_owned).collect()).unwrap_or_default();
    let has_token = query.iter().any(|pair| pair.starts_with("token="));
    if !has_token && let Some(token) = junction_transport_api::bearer(request.headers()) {
        query.push(format!("token={}", url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()));
    }
    if !query.is_empty() {
        location.push('?');
        location.push_str(&query.join("&"));
    }
    location
}

/// The room of a WHIP/WHEP offer (`POST /whip/{room}`, `POST /whep/{room}`).
fn offered_room(method: &Method, path: &str) -> Option<RoomId> {
    if method != Method::POST {
        return None;
    }
    let rest = path.strip_prefix("/whip/").or_else(|| path.strip_prefix("/whep/"))?;
    if rest.contains('/') {
        return None;
    }
    RoomId::new(rest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_moves_into_the_query_unless_one_is_there() {
        let request = |uri: &str, bearer: Option<&str>| {
            let mut builder = axum::http::Request::builder().method(Method::POST).uri(uri);
            if let Some(token) = bearer {
                builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            builder.body(axum::body::Body::empty()).unwrap()
        };
        assert_eq!(
            location("http://n2:7880/", &request("/whep/stage", Some("a.b+c"))),
            "http://n2:7880/whep/stage?token=a.b%2Bc"
        );
        assert_eq!(
            location("http://n2:7880", &request("/whep/stage?token=q", Some("h"))),
            "http://n2:7880/whep/stage?token=q"
        );
        assert_eq!(location("http://n2:7880", &request("/whip/stage", None)), "http://n2:7880/whip/stage");
    }

    #[test]
    fn only_offers_to_an_endpoint_are_redirected() {
        assert_eq!(offered_room(&Method::POST, "/whep/stage").map(|r| r.to_string()), Some("stage".into()));
        assert_eq!(offered_room(&Method::POST, "/whip/stage").map(|r| r.to_string()), Some("stage".into()));
        assert_eq!(offered_room(&Method::PATCH, "/whep/stage"), None, "a trickle PATCH stays with its resource");
        assert_eq!(offered_room(&Method::POST, "/whep/stage/res1"), None, "resources are not endpoints");
        assert_eq!(offered_room(&Method::POST, "/v1/rooms"), None);
    }
}

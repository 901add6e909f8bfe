//! The HTTP server's routes: health and metrics, the operator REST API under `/v1` (rooms,
//! tokens, peers, stats, ingress, OpenAPI, the room event stream), the home page and the operator
//! dashboard, and whatever routes the transports bring.
//! `/v1` takes any of the server's API keys, or a client token with the admin grant for routes
//! under its own room; every route is answered within `http.request_timeout_s` (408 past it).

mod ingress;
mod rooms;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use junction_auth::Authority;
use junction_engine::Engine;
use junction_transport_api::{ApiError, IngressUrls, Link, MAX_JSON_BODY, Principal, Service, bearer};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::pages;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub authority: Authority,
    /// Base URL handed to clients, without a trailing slash.
    pub public_url: Arc<str>,
    pub ingress_urls: Arc<IngressUrls>,
    pub metrics: PrometheusHandle,
    pub started: Instant,
    /// Links for the home page: (title, href, what it is).
    pub pages: Arc<Vec<Link>>,
    pub services: Arc<Vec<Service>>,
    /// Cluster membership, when `cluster.redis_url` is set.
    pub cluster: Option<junction_cluster::Cluster>,
    /// Where API-created rooms and ingress keys are kept across restarts.
    pub store: junction_store::Store,
    /// Room events kept for `/v1/events`.
    pub events: crate::events::EventLog,
    /// The WebRTC media plane, for the ICE servers handed out with tokens.
    pub webrtc: Option<junction_webrtc::WebrtcTransport>,
}

/// Builds the whole HTTP application: core routes, `/v1` (with `transport_api` merged in), the
/// transports' public routes, CORS, and request metrics.
pub fn app(
    state: AppState,
    transport_api: Router,
    transport_public: Router,
    cors_origins: &[String],
    request_timeout: Duration,
) -> Router {
    let v1 = Router::new()
        .merge(rooms::routes())
        .merge(ingress::routes())
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/nodes", get(nodes))
        .route("/v1/events", get(crate::events::stream_events))
        .with_state(state.clone())
        .merge(transport_api)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_credentials));

    Router::new()
        .route("/", get(home))
        .route("/dashboard", get(dashboard))
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(v1)
        .merge(transport_public)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(cors(cors_origins))
        .layer(middleware::from_fn_with_state(request_timeout, deadline))
        .layer(middleware::from_fn(count_requests))
}

/// Answers 408 when a request (its body read included) takes longer than the timeout. An
/// upgraded WebSocket is past this once its 101 is sent.
async fn deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::info!(%method, path, "request timed out after {timeout:?} (http.request_timeout_s)");
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request took longer than {} s", timeout.as_secs()),
            )
            .into_response()
        }
    }
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH])
        .expose_headers([header::LOCATION, header::ETAG, header::LINK])
}

async fn count_requests(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    metrics::counter!("junction_transport_api_requests_total", "status" => response.status().as_str().to_owned())
        .increment(1);
    response
}

/// `/v1` access: the API key opens everything; a client token with the admin grant opens the
/// routes under `/v1/rooms/{its room}/`.
async fn require_credentials(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = bearer(request.headers())
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <api key>"))?
        .to_owned();
    let presented = presented.as_str();
    if let Some(key_id) = state.authority.api_key_id(presented) {
        request.extensions_mut().insert(Principal::Operator { key_id: key_id.to_owned() });
        return Ok(next.run(request).await);
    }
    let claims = state
        .authority
        .verify(presented)
        .map_err(|_| ApiError::unauthorized("the bearer credential is not this server's API key or a valid token"))?;
    let room_prefix = format!("/v1/rooms/{}/", claims.room);
    let path = request.uri().path();
    // `sip_call` is a grant of its own: it opens the room's dial-out route (whose handler checks
    // it again) without the rest of the room's API.
    let dial_out = request.method() == axum::http::Method::POST && path == format!("{room_prefix}sip/calls");
    let allowed = claims.grants.admin || (dial_out && claims.grants.sip_call);
    if !allowed {
        return Err(ApiError::forbidden(
            "client tokens need the admin grant (or sip_call, for dial-out) to use the server API",
        ));
    }
    if !path.starts_with(&room_prefix) && path != room_prefix.trim_end_matches('/') {
        return Err(ApiError::forbidden(format!(
            "an admin token for room {} only opens /v1/rooms/{}/",
            claims.room, claims.room
        )));
    }
    request.extensions_mut().insert(Principal::Client(claims));
    Ok(next.run(request).await)
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let stats = state.engine.stats();
    axum::Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "rooms": stats.rooms,
        "peers": stats.peers,
        "tracks": stats.tracks,
    }))
}

/// `GET /v1/nodes`: the cluster's live nodes with their load; this node alone without a cluster.
async fn nodes(State(state): State<AppState>) -> impl IntoResponse {
    let nodes = match &state.cluster {
        Some(cluster) => serde_json::to_value(cluster.nodes()).unwrap_or_default(),
        None => {
            let stats = state.engine.stats();
            serde_json::json!([{
                "id": "local",
                "url": &*state.public_url,
                "load": {"peers": stats.peers, "tracks": stats.tracks},
            }])
        }
    };
    axum::Json(serde_json::json!({ "nodes": nodes }))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::metrics::refresh_process_metrics();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// The icon the home and demo pages link to; browsers ask for `/favicon.ico` on their own.
async fn favicon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "max-age=86400")], include_str!("favicon.svg"))
        .into_response()
}

/// The operator dashboard: a static page (no secret in it) that asks for the API key and then
/// works through `/v1` like any other API client.
async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        include_str!("../dashboard.html"),
    )
        .into_response()
}

async fn home(State(state): State<AppState>) -> Html<String> {
    Html(pages::home(&state.engine.stats(), &state.services, &state.pages))
}

async fn openapi(State(state): State<AppState>) -> Response {
    let mut doc: serde_json::Value = match serde_json::from_str(include_str!("openapi.json")) {
        Ok(doc) => doc,
        Err(err) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", err.to_string()).into_response();
        }
    };
    doc["servers"] = serde_json::json!([{"url": &*state.public_url}]);
    axum::Json(doc).into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found("not_found", format!("no route for {} {}", request.method(), request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

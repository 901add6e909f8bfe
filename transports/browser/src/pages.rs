//! The browser-facing files: the JavaScript SDK (`/sdk/junction.js`), the demo room page
//! (`/room/{room}`), and the development-mode token endpoint (`POST /dev/token`) the page uses
//! when it is opened without `?token=`. The token endpoint exists only when the server generated
//! its own API key: anyone who can reach it can join any room.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use junction_auth::{Authority, TokenRequest};
use junction_core::ids::random_id;
use junction_core::{Grants, PeerId, RoomId};
use junction_engine::Engine;
use junction_transport_api::{ApiError, ApiJson, path_id};
use serde::Deserialize;
use serde_json::json;

const SDK: &str = include_str!("../assets/junction.js");
const ROOM_PAGE: &str = include_str!("../assets/room.html");
/// How long a development token lasts.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub fn routes(dev_mode: bool) -> Router {
    Router::new().route("/sdk/junction.js", get(sdk)).route("/room/{room}", get(move |room| room_page(room, dev_mode)))
}

pub fn dev_routes(engine: Engine, authority: Authority) -> Router {
    Router::new().route("/dev/token", post(dev_token)).with_state(DevState { engine, authority })
}

async fn sdk() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], SDK)
        .into_response()
}

async fn room_page(Path(room): Path<String>, dev_mode: bool) -> Result<Html<String>, ApiError> {
    let room: RoomId = path_id("room", &room)?;
    // Ids are URL-safe (no quotes or angle brackets), and are JSON-encoded besides.
    let config = json!({ "room": room, "dev": dev_mode }).to_string();
    Ok(Html(ROOM_PAGE.replace("{{CONFIG}}", &config).replace("{{ROOM}}", room.as_str())))
}

#[derive(Clone)]
struct DevState {
    engine: Engine,
    authority: Authority,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevTokenRequest {
    room: RoomId,
    identity: Option<PeerId>,
    name: Option<String>,
}

async fn dev_token(
    State(state): State<DevState>,
    ApiJson(body): ApiJson<DevTokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if !state.engine.room_exists(&body.room) && !state.engine.config().auto_create_rooms {
        return Err(ApiError::not_found("room_not_found", format!("room {} does not exist", body.room)));
    }
    if body.name.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(ApiError::invalid_field("name", "longer than 256 bytes"));
    }
    let identity = match body.identity {
        Some(identity) => identity,
        None => path_id("identity", &random_id("guest-", 8))?,
    };
    let request = TokenRequest {
        room: body.room.clone(),
        identity: identity.clone(),
        name: body.name,
        metadata: serde_json::Value::Null,
        grants: Grants::default(),
        ttl: DEV_TOKEN_TTL,
    };
    let token = state.authority.mint(&request)?;
    let body =
        json!({ "token": token, "room": body.room, "identity": identity, "expires_in_s": DEV_TOKEN_TTL.as_secs() });
    Ok((StatusCode::CREATED, axum::Json(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn call(router: Router, request: Request<Body>) -> (StatusCode, String) {
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn sdk_and_room_page_are_served_and_bad_rooms_refused() {
        let (status, body) = call(routes(false), Request::get("/sdk/junction.js").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("export async function connect"));
        let (status, body) = call(routes(true), Request::get("/room/standup").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#"{"dev":true,"room":"standup"}"#), "{body}");
        let (status, body) = call(routes(false), Request::get("/room/a%20b").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid_field"), "{body}");
    }

    #[tokio::test]
    async fn dev_tokens_verify_and_name_the_room() {
        let authority = Authority::new("unit-test-key-0123456789");
        let router = dev_routes(Engine::new(Default::default()), authority.clone());
        let request = Request::post("/dev/token")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"room":"standup","name":"Ann"}"#))
            .unwrap();
        let (status, body) = call(router.clone(), request).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let claims = authority.verify(body["token"].as_str().unwrap()).unwrap();
        assert_eq!((claims.room.as_str(), claims.name.as_deref()), ("standup", Some("Ann")));
        assert!(claims.sub.as_str().starts_with("guest-"));
        let request = Request::post("/dev/token")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"room":"a/b"}"#))
            .unwrap();
        assert_eq!(call(router, request).await.0, StatusCode::BAD_REQUEST);
    }
}

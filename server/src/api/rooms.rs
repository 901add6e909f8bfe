//! `/v1/rooms`: create, list, inspect and delete rooms; mint client tokens; list and kick peers;
//! the room's live media stats; mute a track.
//! Rooms created here are kept in the state store until they end (not at a server shutdown), so
//! a restart brings them back with their settings.

use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use junction_auth::TokenRequest;
use junction_core::{Grants, PeerId, RoomId, RoomMode, RoomOptions, TrackId, VideoCodecChoice};
use junction_engine::RoomAdminError;
use junction_store::Kind;
use junction_transport_api::{ApiError, ApiJson, Principal, path_id};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;

/// Longest a room may be configured to live or wait empty (a week).
const MAX_ROOM_SECONDS: u64 = 7 * 24 * 3600;
const MAX_METADATA_BYTES: usize = 8 * 1024;
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/rooms", post(create_room).get(list_rooms))
        .route("/v1/rooms/{room}", get(get_room).delete(delete_room))
        .route("/v1/rooms/{room}/tokens", post(create_token))
        .route("/v1/rooms/{room}/peers", get(list_peers))
        .route("/v1/rooms/{room}/peers/{identity}", delete(kick_peer))
        .route("/v1/rooms/{room}/stats", get(room_stats))
        .route("/v1/rooms/{room}/tracks/{track}/mute", post(mute_track))
}

fn admin_error(err: RoomAdminError) -> ApiError {
    let message = err.to_string();
    match err {
        RoomAdminError::RoomExists { .. } => ApiError::conflict("room_exists", message),
        RoomAdminError::RoomNotFound { .. } => ApiError::not_found("room_not_found", message),
        RoomAdminError::PeerNotFound { .. } => ApiError::not_found("peer_not_found", message),
        RoomAdminError::TrackNotFound { .. } => ApiError::not_found("track_not_found", message),
    }
}

fn check_metadata(field: &str, metadata: &Value) -> Result<(), ApiError> {
    let size = metadata.to_string().len();
    if size > MAX_METADATA_BYTES {
        return Err(ApiError::unprocessable(
            "metadata_too_large",
            format!("{field} is {size} bytes, the limit is {MAX_METADATA_BYTES}"),
        ));
    }
    Ok(())
}

fn seconds(field: &str, value: Option<u64>, min: u64, max: u64) -> Result<Option<Duration>, ApiError> {
    match value {
        None => Ok(None),
        Some(s) if (min..=max).contains(&s) => Ok(Some(Duration::from_secs(s))),
        Some(s) => Err(ApiError::unprocessable("out_of_range", format!("{field} is {s}, allowed: {min}..={max}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    name: Option<RoomId>,
    max_peers: Option<u32>,
    empty_timeout_s: Option<u64>,
    max_duration_s: Option<u64>,
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    mode: RoomMode,
    video_codec: Option<VideoCodecChoice>,
}

async fn create_room(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateRoom>,
) -> Result<impl IntoResponse, ApiError> {
    check_metadata("metadata", &body.metadata)?;
    let defaults = state.engine.config().room_defaults.clone();
    let options = RoomOptions {
        max_peers: body.max_peers.unwrap_or(defaults.max_peers),
        empty_timeout: seconds("empty_timeout_s", body.empty_timeout_s, 1, MAX_ROOM_SECONDS)?
            .unwrap_or(defaults.empty_timeout),
        max_duration: seconds("max_duration_s", body.max_duration_s, 1, MAX_ROOM_SECONDS)?.or(defaults.max_duration),
        metadata: body.metadata,
        mode: body.mode,
        video_codec: body.video_codec.unwrap_or(defaults.video_codec),
    };
    let room = state.engine.create_room(body.name, options).map_err(admin_error)?;
    if let Err(err) = state.store.put(Kind::Room, room.name.as_str(), "", &room).await {
        let _ = state.engine.delete_room(&room.name);
        return Err(err.into());
    }
    Ok((StatusCode::CREATED, axum::Json(json!({ "room": room }))))
}

async fn list_rooms(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(json!({ "rooms": state.engine.rooms() }))
}

fn room_param(raw: &str) -> Result<RoomId, ApiError> {
    path_id("room", raw)
}

fn room_missing(room: &RoomId) -> ApiError {
    ApiError::not_found("room_not_found", format!("room {room} does not exist"))
}

async fn get_room(State(state): State<AppState>, Path(room): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let room = room_param(&room)?;
    let snapshot = state.engine.room(&room).ok_or_else(|| room_missing(&room))?;
    Ok(axum::Json(json!({ "room": snapshot })))
}

async fn delete_room(State(state): State<AppState>, Path(room): Path<String>) -> Result<StatusCode, ApiError> {
    let room = room_param(&room)?;
    state.engine.delete_room(&room).map_err(admin_error)?;
    state.store.remove(Kind::Room, room.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    identity: PeerId,
    name: Option<String>,
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    grants: Grants,
    ttl_s: Option<u64>,
}

/// Mints a client token. The operator mints anything within the maximum lifetime; a client
/// token (a room admin) only tokens within its own rights and lifetime.
async fn create_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<impl IntoResponse, ApiError> {
    let room = room_param(&room)?;
    check_metadata("metadata", &body.metadata)?;
    if !state.engine.room_exists(&room) && !state.engine.config().auto_create_rooms {
        return Err(room_missing(&room));
    }
    let max_ttl = junction_auth::token_max_ttl().as_secs();
    let now = junction_auth::unix_now();
    let default_ttl = match &principal {
        // A client's token by default lives no longer than the one minting it.
        Principal::Client(claims) => DEFAULT_TOKEN_TTL.min(Duration::from_secs(claims.exp.saturating_sub(now).max(1))),
        Principal::Operator { .. } => DEFAULT_TOKEN_TTL,
    };
    let ttl = seconds("ttl_s", body.ttl_s, 1, max_ttl)?.unwrap_or(default_ttl);
    if body.name.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(ApiError::invalid_field("name", "longer than 256 bytes"));
    }
    let request = TokenRequest {
        room: room.clone(),
        identity: body.identity.clone(),
        name: body.name,
        metadata: body.metadata,
        grants: body.grants,
        ttl,
    };
    if let Principal::Client(claims) = &principal {
        junction_auth::check_delegation(claims, &request, now).map_err(|err| {
            tracing::info!(room = %room, minter = %claims.sub, "token minting refused: {err}");
            ApiError::new(StatusCode::FORBIDDEN, "token_escalation", err.to_string())
        })?;
    }
    let token = state.authority.mint(&request)?;
    // In a cluster, the node the room's new peers should use (least loaded, preferring nodes
    // already serving the room); the token is valid on every node.
    let placed = state.cluster.as_ref().and_then(|cluster| cluster.placement(&room));
    let base = placed.as_ref().map_or(&*state.public_url, |node| node.url.as_str());
    let ws_base = base.replacen("http", "ws", 1);
    let mut response = json!({
            "token": token,
            "room": room,
            "identity": body.identity,
            "grants": body.grants,
            "expires_in_s": ttl.as_secs(),
            "ws_url": format!("{ws_base}/ws"),
            "whip_url": format!("{base}/whip/{room}"),
            "whep_url": format!("{base}/whep/{room}"),
    });
    if let Some(node) = placed {
        response["node"] = json!(node.id);
    }
    // With the built-in TURN server, its URLs and a credential for this identity.
    if let Some(webrtc) = &state.webrtc {
        response["ice_servers"] = json!(webrtc.ice_servers_for(body.identity.as_str()));
    }
    Ok((StatusCode::CREATED, axum::Json(response)))
}

async fn list_peers(State(state): State<AppState>, Path(room): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let room = room_param(&room)?;
    let snapshot = state.engine.room(&room).ok_or_else(|| room_missing(&room))?;
    Ok(axum::Json(json!({ "peers": snapshot.peers })))
}

async fn kick_peer(
    State(state): State<AppState>,
    Path((room, identity)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let room = room_param(&room)?;
    let identity: PeerId = path_id("identity", &identity)?;
    // A peer of another node is removed by its own node (the others follow).
    if state.cluster.as_ref().is_some_and(|cluster| cluster.kick_remote(&room, &identity)) {
        return Ok(StatusCode::NO_CONTENT);
    }
    state.engine.kick(&room, &identity).map_err(admin_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Per peer, per track and per layer: bitrate, frame rate, picture size, and the loss, round
/// trip and jitter its transport measures; per subscription what the peer receives.
async fn room_stats(State(state): State<AppState>, Path(room): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let room = room_param(&room)?;
    let stats = state.engine.room_stats(&room, junction_cmaf::picture_size).ok_or_else(|| room_missing(&room))?;
    Ok(axum::Json(stats))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteRequest {
    muted: bool,
}

/// An operator mutes or unmutes a track: while muted the server forwards none of its media, and
/// every peer (its publisher too) is told the track is muted.
async fn mute_track(
    State(state): State<AppState>,
    Path((room, track)): Path<(String, String)>,
    ApiJson(request): ApiJson<MuteRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let room = room_param(&room)?;
    let track: TrackId = path_id("track", &track)?;
    let info = state.engine.mute_track(&room, &track, request.muted).map_err(admin_error)?;
    Ok(axum::Json(info))
}

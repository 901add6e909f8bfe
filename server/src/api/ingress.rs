//! `/v1/ingress`: stream keys for encoders (OBS, ffmpeg) that publish over RTMP, WHIP or SRT into a
//! room under a fixed identity. Each is kept in the state store, so keys survive restarts.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use junction_auth::{Ingress, IngressKind};
use junction_core::{PeerId, RoomId};
use junction_store::Kind;
use junction_transport_api::{ApiError, ApiJson};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/ingress", post(create).get(list)).route("/v1/ingress/{id}", get(show).delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateIngress {
    kind: IngressKind,
    room: RoomId,
    identity: PeerId,
    name: Option<String>,
}

/// The encoder URL of an ingress: the RTMP application URL, the room's WHIP endpoint, or the
/// complete SRT URL (the stream key is the stream id; SRT has nowhere else to put it).
fn url_of(state: &AppState, ingress: &Ingress) -> Option<String> {
    match ingress.kind {
        IngressKind::Rtmp => state.ingress_urls.rtmp.clone(),
        IngressKind::Whip => state.ingress_urls.whip.as_ref().map(|base| format!("{base}/{}", ingress.room)),
        IngressKind::Srt => {
            state.ingress_urls.srt.as_ref().map(|base| format!("{base}?streamid={}", ingress.stream_key))
        }
    }
}

fn describe(state: &AppState, ingress: &Ingress) -> Value {
    let mut value = json!(ingress);
    value["url"] = json!(url_of(state, ingress));
    value
}

async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateIngress>,
) -> Result<impl IntoResponse, ApiError> {
    let enabled = match body.kind {
        IngressKind::Rtmp => state.ingress_urls.rtmp.is_some(),
        IngressKind::Whip => state.ingress_urls.whip.is_some(),
        IngressKind::Srt => state.ingress_urls.srt.is_some(),
    };
    if !enabled {
        return Err(ApiError::unprocessable(
            "ingress_disabled",
            format!("{} ingest is not enabled on this server", body.kind.as_str()),
        ));
    }
    let ingress = state.authority.ingress().create(body.kind, body.room, body.identity, body.name);
    if let Err(err) = state.store.put(Kind::Ingress, &ingress.id, "", &ingress).await {
        state.authority.ingress().delete(&ingress.id);
        return Err(err.into());
    }
    Ok((StatusCode::CREATED, axum::Json(describe(&state, &ingress))))
}

async fn list(State(state): State<AppState>) -> impl IntoResponse {
    let all: Vec<Value> = state.authority.ingress().list().iter().map(|i| describe(&state, i)).collect();
    axum::Json(json!({ "ingress": all }))
}

fn missing(id: &str) -> ApiError {
    ApiError::not_found("ingress_not_found", format!("ingress {id} does not exist"))
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let ingress = state.authority.ingress().get(&id).ok_or_else(|| missing(&id))?;
    Ok(axum::Json(describe(&state, &ingress)))
}

/// Deletes the ingress; a publisher streaming with its key is disconnected.
async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let ingress = state.authority.ingress().get(&id).ok_or_else(|| missing(&id))?;
    state.store.remove(Kind::Ingress, &id).await?;
    state.authority.ingress().delete(&id);
    let transport = match ingress.kind {
        IngressKind::Rtmp => junction_core::TransportKind::Rtmp,
        IngressKind::Whip => junction_core::TransportKind::Whip,
        IngressKind::Srt => junction_core::TransportKind::Srt,
    };
    let streaming = state.engine.room(&ingress.room).is_some_and(|room| {
        room.peers.iter().any(|p| p.info.identity == ingress.identity && p.info.transport == transport)
    });
    if streaming {
        let _ = state.engine.kick(&ingress.room, &ingress.identity);
    }
    Ok(StatusCode::NO_CONTENT)
}

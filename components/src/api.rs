//! `/v1/rooms/{room}/components`: create (`POST`, 201), list and show (`GET`), delete
//! (`DELETE`, 204). Malformed JSON is 400; a missing or unknown `type`, an unknown or invalid
//! option is 422 naming the field. Operator only (the `/v1` layer admits the API key).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use junction_core::RoomId;
use junction_transport_api::{ApiError, ApiJson, path_id};
use serde_json::{Value, json};

use crate::registry::{ComponentError, Components, Spec};

pub(crate) fn routes(components: Components) -> Router {
    Router::new()
        .route("/v1/rooms/{room}/components", get(list).post(create))
        .route("/v1/rooms/{room}/components/{id}", get(show).delete(delete))
        .with_state(components)
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::unprocessable("invalid_field", format!("{field}: {problem}"))
}

/// Reads a component from the request body: its `type`, then that type's options (read as
/// that type's own struct, so an error names the option's path, as `layout`).
fn spec(mut body: Value) -> Result<Spec, ApiError> {
    let kind = match body.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err(invalid("type", "a string")),
        None => return Err(invalid("type", format!("missing (one of: {})", Spec::TYPES.join(", ")))),
    };
    if let Some(fields) = body.as_object_mut() {
        fields.remove("type");
    }
    let spec = match kind.as_str() {
        "file" => Spec::File(options(body)?),
        "rtsp" => Spec::Rtsp(options(body)?),
        "recording" => Spec::Recording(options(body)?),
        "hls" => Spec::Hls(options(body)?),
        _ => {
            return Err(invalid(
                "type",
                format!("unknown component type {kind:?} (one of: {})", Spec::TYPES.join(", ")),
            ));
        }
    };
    spec.validate().map_err(|(field, problem)| invalid(field, problem))?;
    Ok(spec)
}

fn options<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|err| {
        let path = err.path().to_string();
        invalid(if path == "." { "body" } else { path.as_str() }, err.into_inner())
    })
}

fn error(err: ComponentError) -> ApiError {
    let message = err.to_string();
    match err {
        ComponentError::RoomNotFound(_) => ApiError::not_found("room_not_found", message),
        ComponentError::NotFound(_) => ApiError::not_found("component_not_found", message),
        ComponentError::TooMany(_) => ApiError::conflict("too_many_components", message),
    }
}

async fn create(
    State(components): State<Components>,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let room: RoomId = path_id("room", &room)?;
    if !body.is_object() {
        return Err(ApiError::bad_request("invalid_json", "the body must be a JSON object"));
    }
    let spec = spec(body)?;
    let view = components.create(room, spec).await.map_err(error)?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list(State(components): State<Components>, Path(room): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let room: RoomId = path_id("room", &room)?;
    Ok(Json(json!({ "components": components.list(&room) })))
}

async fn show(
    State(components): State<Components>,
    Path((room, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let room: RoomId = path_id("room", &room)?;
    components.get(&room, &id).map(Json).ok_or_else(|| error(ComponentError::NotFound(id)))
}

async fn delete(
    State(components): State<Components>,
    Path((room, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let room: RoomId = path_id("room", &room)?;
    components.delete(&room, &id).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

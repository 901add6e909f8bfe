//! The SIP routes of the server API (mounted under `/v1`, behind the credential check):
//! trunks (`/v1/sip/trunks`) and dispatch rules (`/v1/sip/dispatch-rules`), both kept in the
//! state store, and a room's phone calls (`/v1/rooms/{room}/sip/calls`: place one, list,
//! inspect, hang up). Placing a call
//! takes more than the check: the operator's API key, or a client token of the room with the
//! `sip_call` grant — and then goes where [`crate::admission::outbound::route`] allows.

use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Router};
use junction_core::{PeerId, RoomId};
use junction_engine::Engine;
use junction_store::{Kind, Store};
use junction_transport_api::{ApiError, ApiJson, Principal, path_id};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::admission::Trunk;
use crate::admission::outbound::{self, DialAsk, DialRefusal, DirectDial, Route};
use crate::admission::{Directory, DirectoryError, RuleSpec, TrunkSpec};
use crate::calls::CallBook;
use crate::message::{Peer, Transport};
use crate::stack::{Command, DialError, DialRequest, RegistrationBook, TransferError, TransferTarget};
use crate::ua::uri_addr;

#[derive(Clone)]
pub(crate) struct ApiState {
    pub directory: Directory,
    pub direct_dial: DirectDial,
    pub book: CallBook,
    /// Trunk registrations' states, shown with their trunks.
    pub registrations: RegistrationBook,
    pub commands: mpsc::Sender<Command>,
    pub engine: Engine,
    /// API-created trunks and rules are written through to it (see `stored.rs`).
    pub store: Store,
}

pub(crate) fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v1/sip/trunks", post(create_trunk).get(list_trunks))
        .route("/v1/sip/trunks/{id}", get(show_trunk).delete(delete_trunk))
        .route("/v1/sip/dispatch-rules", post(create_rule).get(list_rules))
        .route("/v1/sip/dispatch-rules/{id}", get(show_rule).delete(delete_rule))
        .route("/v1/rooms/{room}/sip/calls", post(dial).get(list_calls))
        .route("/v1/rooms/{room}/sip/calls/{id}", get(show_call).delete(hang_up))
        .route("/v1/rooms/{room}/sip/calls/{id}/transfer", post(transfer))
        .route("/v1/rooms/{room}/sip/calls/{id}/dtmf", post(send_dtmf))
        .with_state(state)
}

fn directory_error(err: DirectoryError) -> ApiError {
    match err {
        DirectoryError::DuplicateId { .. } => ApiError::conflict("duplicate_id", err.to_string()),
        other => ApiError::bad_request("invalid_field", other.to_string()),
    }
}

async fn create_trunk(
    State(state): State<ApiState>,
    ApiJson(spec): ApiJson<TrunkSpec>,
) -> Result<impl IntoResponse, ApiError> {
    if spec.id.is_some() {
        return Err(ApiError::invalid_field("id", "trunk ids are assigned by the server"));
    }
    let trunk = state.directory.add_trunk(spec.clone()).map_err(directory_error)?;
    let stored = TrunkSpec { id: Some(trunk.id.clone()), ..spec };
    if let Err(err) = state.store.put(Kind::SipTrunk, &trunk.id, "", &stored).await {
        state.directory.remove_trunk(&trunk.id);
        return Err(err.into());
    }
    Ok((StatusCode::CREATED, axum::Json(trunk.describe())))
}

async fn list_trunks(State(state): State<ApiState>) -> impl IntoResponse {
    let trunks: Vec<serde_json::Value> = state.directory.trunks().iter().map(|t| describe(&state, t)).collect();
    axum::Json(json!({ "trunks": trunks }))
}

fn no_trunk(id: &str) -> ApiError {
    ApiError::not_found("trunk_not_found", format!("trunk {id} does not exist"))
}

async fn show_trunk(State(state): State<ApiState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let trunk = state.directory.trunk(&id).ok_or_else(|| no_trunk(&id))?;
    Ok(axum::Json(describe(&state, &trunk)))
}

async fn delete_trunk(State(state): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.directory.trunk(&id).ok_or_else(|| no_trunk(&id))?;
    state.store.remove(Kind::SipTrunk, &id).await?;
    state.directory.remove_trunk(&id);
    Ok(StatusCode::NO_CONTENT)
}

async fn create_rule(
    State(state): State<ApiState>,
    ApiJson(spec): ApiJson<RuleSpec>,
) -> Result<impl IntoResponse, ApiError> {
    if spec.id.is_some() {
        return Err(ApiError::invalid_field("id", "dispatch rule ids are assigned by the server"));
    }
    let rule = state.directory.add_rule(spec.clone()).map_err(directory_error)?;
    let stored = RuleSpec { id: Some(rule.id.clone()), ..spec };
    if let Err(err) = state.store.put(Kind::SipDispatchRule, &rule.id, "", &stored).await {
        state.directory.remove_rule(&rule.id);
        return Err(err.into());
    }
    Ok((StatusCode::CREATED, axum::Json(rule)))
}

async fn list_rules(State(state): State<ApiState>) -> impl IntoResponse {
    axum::Json(json!({ "dispatch_rules": state.directory.rules() }))
}

fn no_rule(id: &str) -> ApiError {
    ApiError::not_found("dispatch_rule_not_found", format!("dispatch rule {id} does not exist"))
}

async fn show_rule(State(state): State<ApiState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let rule = state.directory.rule(&id).ok_or_else(|| no_rule(&id))?;
    Ok(axum::Json(rule))
}

async fn delete_rule(State(state): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.directory.rule(&id).ok_or_else(|| no_rule(&id))?;
    state.store.remove(Kind::SipDispatchRule, &id).await?;
    state.directory.remove_rule(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DialBody {
    /// A number (`+15551234`, `tel:+15551234`) to call through an outbound trunk, or — when
    /// `sip.allow_direct_dial` is on — a `sip:` URI at a listed host (`;transport=tcp` for TCP).
    to: String,
    /// The caller id: one of the trunk's `caller_ids` (the first by default); for a direct
    /// call a user name or SIP URI (the room's name by default).
    from: Option<String>,
    /// The outbound trunk to call through; may be left out when there is only one.
    trunk: Option<String>,
    /// The phone's identity in the room; defaults to `sip:<user of to>`.
    identity: Option<PeerId>,
}

/// Where a dial-out target is: its transport and address (DNS names are resolved here).
async fn resolve(target: &rsip::Uri) -> Result<Peer, ApiError> {
    let transport = Transport::of_uri(target);
    let addr = match uri_addr(target) {
        Some(addr) => addr,
        None => {
            let host = target.host().to_string();
            let port = target.port().map_or(transport.default_port(), |p| *p.value());
            let mut found = tokio::net::lookup_host((host.as_str(), port)).await.map_err(|err| {
                ApiError::unprocessable("sip_target_unresolvable", format!("cannot resolve {host}: {err}"))
            })?;
            found
                .next()
                .ok_or_else(|| ApiError::unprocessable("sip_target_unresolvable", format!("{host} has no address")))?
        }
    };
    Ok(Peer { transport, addr })
}

/// Who may place calls from `room`: the operator, or a client token of that room with the
/// `sip_call` grant (`admin` alone is not enough). No principal at all is refused.
fn may_dial(principal: Option<&Principal>, room: &RoomId) -> Result<(), ApiError> {
    match principal {
        Some(Principal::Operator { .. }) => Ok(()),
        Some(Principal::Client(claims)) if claims.grants.sip_call && claims.room == *room => Ok(()),
        Some(Principal::Client(claims)) => {
            info!(room = %room, peer = %claims.sub, "dial-out refused: the token lacks the sip_call grant");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "sip_call_not_granted",
                "placing phone calls needs the API key or a token of this room with the sip_call grant",
            ))
        }
        None => Err(ApiError::forbidden("placing phone calls needs the API key or a token with the sip_call grant")),
    }
}

fn refusal(room: &RoomId, err: DialRefusal) -> ApiError {
    let (status, code) = err.status();
    info!(room = %room, code, "dial-out refused: {err}");
    ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), code, err.to_string())
}

async fn dial(
    State(state): State<ApiState>,
    principal: Option<Extension<Principal>>,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<DialBody>,
) -> Result<impl IntoResponse, ApiError> {
    let room: RoomId = path_id("room", &room)?;
    may_dial(principal.as_deref(), &room)?;
    if !state.engine.room_exists(&room) {
        return Err(ApiError::not_found("room_not_found", format!("room {room} does not exist")));
    }
    let ask = DialAsk { to: &body.to, from: body.from.as_deref(), trunk: body.trunk.as_deref() };
    let route = outbound::route(&state.directory.trunks(), &state.direct_dial, ask).map_err(|e| refusal(&room, e))?;
    let (target, trunk, from_user) = match route {
        Route::Trunk { trunk, target, caller_id } => (target, Some(*trunk), caller_id),
        Route::Direct { target, caller_id } => (target, None, caller_id.unwrap_or_else(|| room.to_string())),
    };
    let to = resolve(&target).await?;
    let identity = body.identity.unwrap_or_else(|| crate::stack::identity_for(target.user().unwrap_or("phone")));
    let request = DialRequest { room, target, to, from_user, identity, trunk };
    let (reply, answer) = oneshot::channel();
    state.commands.send(Command::Dial { request: Box::new(request), reply }).await.map_err(|_| stopped())?;
    let record = answer.await.map_err(|_| stopped())?.map_err(|err| {
        let message = err.to_string();
        match err {
            DialError::RoomNotFound { .. } => ApiError::not_found("room_not_found", message),
            DialError::IdentityTaken { .. } => ApiError::conflict("identity_taken", message),
            DialError::TooManyCalls { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_calls", message),
            DialError::Ports(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_rtp_ports", message),
            DialError::Stopped => stopped(),
        }
    })?;
    Ok((StatusCode::CREATED, axum::Json(record)))
}

async fn list_calls(State(state): State<ApiState>, Path(room): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let room: RoomId = path_id("room", &room)?;
    Ok(axum::Json(json!({ "calls": state.book.in_room(&room) })))
}

/// A trunk as the API shows it, with its registration's state when it registers.
fn describe(state: &ApiState, trunk: &Trunk) -> serde_json::Value {
    let mut value = trunk.describe();
    if trunk.outbound.as_ref().is_some_and(|o| o.register) {
        let registration = state.registrations.get(&trunk.id);
        value["registration"] = registration.map_or_else(|| json!({"state": "registering"}), |r| json!(r));
    }
    value
}

fn no_call(id: &str) -> ApiError {
    ApiError::not_found("call_not_found", format!("call {id} does not exist"))
}

async fn show_call(
    State(state): State<ApiState>,
    Path((room, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let room: RoomId = path_id("room", &room)?;
    let call = state.book.get(&id).filter(|c| c.room == room).ok_or_else(|| no_call(&id))?;
    Ok(axum::Json(call))
}

async fn hang_up(
    State(state): State<ApiState>,
    Path((room, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let room: RoomId = path_id("room", &room)?;
    let call = state.book.get(&id).filter(|c| c.room == room).ok_or_else(|| no_call(&id))?;
    if call.state.is_final() {
        return Err(ApiError::conflict("call_over", format!("call {id} is already {:?}", call.state).to_lowercase()));
    }
    let (reply, answer) = oneshot::channel();
    let _ = state.commands.send(Command::HangUp { id: id.clone(), reply }).await;
    match answer.await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        _ => Err(no_call(&id)),
    }
}

/// `POST …/transfer`: exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    /// Move the call into this room of this server.
    room: Option<String>,
    /// Ask the phone to call this SIP or tel URI instead (REFER); the call ends once it has.
    to: Option<String>,
}

fn stopped() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "sip_stopped", "the SIP stack is not running")
}

async fn transfer(
    State(state): State<ApiState>,
    principal: Option<Extension<Principal>>,
    Path((room, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<TransferBody>,
) -> Result<impl IntoResponse, ApiError> {
    let room: RoomId = path_id("room", &room)?;
    may_dial(principal.as_deref(), &room)?;
    state.book.get(&id).filter(|c| c.room == room && !c.state.is_final()).ok_or_else(|| no_call(&id))?;
    let (to, accepted) = match (body.room, body.to) {
        (Some(target), None) => (TransferTarget::Room(path_id("room", &target)?), StatusCode::OK),
        (None, Some(uri)) => {
            let uri = uri.trim();
            let lower = uri.to_ascii_lowercase();
            let parses = if lower.starts_with("tel:") {
                uri.len() > 4 && uri[4..].chars().all(|c| c.is_ascii_digit() || "+-.()*#".contains(c))
            } else {
                (lower.starts_with("sip:") || lower.starts_with("sips:")) && rsip::Uri::try_from(uri).is_ok()
            };
            let valid = parses && uri.len() <= 256 && !uri.contains(['<', '>', '"', '\r', '\n']);
            if !valid {
                return Err(ApiError::unprocessable(
                    "invalid_field",
                    "to: a sip:, sips: or tel: URI (at most 256 characters)",
                ));
            }
            (TransferTarget::Uri(uri.to_owned()), StatusCode::ACCEPTED)
        }
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_field",
                "give exactly one of room (a room to move the call to) and to (a URI for the phone to call)",
            ));
        }
    };
    let (reply, answer) = oneshot::channel();
    state.commands.send(Command::Transfer { id: id.clone(), to, reply }).await.map_err(|_| stopped())?;
    let record = answer.await.map_err(|_| stopped())?.map_err(|err| match err {
        TransferError::NoCall { .. } => no_call(&id),
        TransferError::Refused { status, why } => match status {
            404 => ApiError::not_found("room_not_found", why),
            403 => ApiError::forbidden(why),
            _ => ApiError::conflict("transfer_refused", why),
        },
    })?;
    Ok((accepted, axum::Json(record)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DtmfBody {
    /// Digits (0-9, *, #, A-D), at most 64.
    digits: String,
}

async fn send_dtmf(
    State(state): State<ApiState>,
    principal: Option<Extension<Principal>>,
    Path((room, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<DtmfBody>,
) -> Result<StatusCode, ApiError> {
    let room: RoomId = path_id("room", &room)?;
    may_dial(principal.as_deref(), &room)?;
    let valid = !body.digits.is_empty()
        && body.digits.len() <= 64
        && body.digits.chars().all(|c| crate::media::dtmf::digit_event(c).is_some());
    if !valid {
        return Err(ApiError::unprocessable("invalid_field", "digits: 1 to 64 of 0-9, *, #, A-D"));
    }
    state.book.get(&id).filter(|c| c.room == room && !c.state.is_final()).ok_or_else(|| no_call(&id))?;
    let (reply, answer) = oneshot::channel();
    state.commands.send(Command::Digits { id: id.clone(), digits: body.digits, reply }).await.map_err(|_| stopped())?;
    match answer.await {
        Ok(true) => Ok(StatusCode::ACCEPTED),
        Ok(false) => Err(ApiError::conflict("call_not_up", format!("call {id} has no media yet"))),
        Err(_) => Err(stopped()),
    }
}

/// For the banner and logs.
pub(crate) fn sip_uri(addr: SocketAddr) -> String {
    format!("sip:{addr}")
}

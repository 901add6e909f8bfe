//! The WHIP and WHEP endpoints: `POST` an offer to the room's endpoint to start a session,
//! `PATCH` its resource with ICE fragments, `DELETE` it to leave.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use junction_auth::{Credential, IngressKind};
use junction_core::ids::random_id;
use junction_core::{ContractError, Grants, PeerId, RoomId, TransportKind};
use junction_engine::{DuplicatePolicy, JoinRequest};
use junction_transport_api::{ApiError, bearer, path_id};
use junction_webrtc::{EgressPolicy, SessionSpec};
use tracing::info;

use crate::WhipState;
use crate::error::{from_session, precondition_failed, unknown_session, unsupported_media_type};
use crate::limits::{SourceIp, read_body};
use crate::options::ice_server_links;
use crate::resources::{Kind, Resource, new_etag};
use crate::sdpfrag::{SdpFrag, ice_ufrag, restart_answer};

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
/// How long DELETE waits for the peer to have left before answering.
const LEAVE_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn routes() -> Router<WhipState> {
    Router::new()
        .route("/whip/{room}", post(post_whip))
        .route("/whep/{room}", post(post_whep))
        .route("/whip/{room}/{id}", axum::routing::patch(patch_whip).delete(delete_whip))
        .route("/whep/{room}/{id}", axum::routing::patch(patch_whep).delete(delete_whep))
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(expected))
        .unwrap_or(false)
}

fn require_bearer(headers: &HeaderMap, what: &str) -> Result<String, ApiError> {
    bearer(headers)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::unauthorized(format!("missing Authorization: Bearer <{what}>")))
}

/// The credential of an offer: `Authorization: Bearer`, else a `token` query parameter — which
/// is how a cluster node's 307 to another node carries it, since HTTP clients drop
/// `Authorization` when a redirect leaves the origin.
fn offer_bearer(headers: &HeaderMap, query: &HashMap<String, String>, what: &str) -> Result<String, ApiError> {
    match query.get("token").filter(|t| !t.is_empty()) {
        Some(token) if bearer(headers).is_none() => Ok(token.clone()),
        _ => require_bearer(headers, what),
    }
}

fn sdp_text(body: &Bytes) -> Result<&str, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("bad_sdp", "the offer is not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("bad_sdp", "the request has no SDP offer in its body"));
    }
    Ok(text)
}

/// `POST /whip/{room}`: an encoder publishes into the room.
async fn post_whip(
    State(state): State<WhipState>,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    source: SourceIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !content_type_is(&headers, SDP) {
        return Err(unsupported_media_type(SDP));
    }
    let room: RoomId = path_id("room", &room)?;
    let bearer = offer_bearer(&headers, &query, "token or stream key")?;
    let credential = state.authority.resolve(&bearer, IngressKind::Whip)?.for_room(&room)?.require_publish()?;
    let slot = state.per_source.acquire(source.0, state.config.max_resources_per_ip)?;
    let body = read_body(body, state.transport.config().max_sdp_bytes).await?;
    let offer = sdp_text(&body)?;
    let prefer_video = state.engine.publisher_video_codec(&room);
    let negotiated = state.transport.negotiate(offer, prefer_video).map_err(from_session)?;
    if !negotiated.peer_sends() {
        return Err(ApiError::bad_request(
            "bad_sdp",
            "a WHIP offer must send media: no sendonly or sendrecv m-line with a supported codec",
        ));
    }
    let mut join = join_request(&room, &credential, credential.identity.clone(), TransportKind::Whip);
    join.client = junction_transport_api::user_agent(&headers);
    join.grants = credential.grants;
    join.on_duplicate = if state.config.replace_existing { DuplicatePolicy::Replace } else { DuplicatePolicy::Reject };
    let joined = state.engine.join(join).map_err(|err| match err {
        ContractError::IdentityTaken { .. } => ApiError::conflict(
            "identity_publishing",
            format!("{err}; DELETE the older session or set whip.replace_existing"),
        ),
        other => ApiError::from(other),
    })?;
    let answer = negotiated.answer_sdp().to_owned();
    let handle = negotiated.start(joined.endpoint, SessionSpec::new("whip", true, EgressPolicy::Nothing));
    let resource = state.resources.insert(Kind::Whip, room, handle, answer, ice_ufrag(offer), slot);
    info!(room = %resource.room, peer = %resource.handle.peer(), resource = %resource.id, "WHIP session created");
    Ok(created(&state, &resource))
}

/// `POST /whep/{room}`: a player watches the room.
async fn post_whep(
    State(state): State<WhipState>,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    source: SourceIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !content_type_is(&headers, SDP) {
        return Err(unsupported_media_type(SDP));
    }
    let room: RoomId = path_id("room", &room)?;
    let watch = match query.get("identity").filter(|v| !v.is_empty()) {
        Some(raw) => Some(path_id::<PeerId>("identity", raw)?),
        None => None,
    };
    let bearer = offer_bearer(&headers, &query, "token")?;
    let credential = state.authority.resolve_token(&bearer)?.for_room(&room)?.require_subscribe()?;
    let slot = state.per_source.acquire(source.0, state.config.max_resources_per_ip)?;
    let body = read_body(body, state.transport.config().max_sdp_bytes).await?;
    let offer = sdp_text(&body)?;
    let negotiated = state.transport.negotiate(offer, None).map_err(from_session)?;
    if !negotiated.peer_receives() {
        return Err(ApiError::bad_request(
            "bad_sdp",
            "a WHEP offer must receive media: no recvonly or sendrecv m-line with a supported codec",
        ));
    }
    // Many players share one viewer token: a viewer whose identity is in the room already gets
    // a suffixed identity rather than a conflict.
    let mut identity = credential.identity.clone();
    let joined = loop {
        let mut join = join_request(&room, &credential, identity.clone(), TransportKind::Whep);
        join.client = junction_transport_api::user_agent(&headers);
        join.grants = Grants { admin: credential.grants.admin, ..Grants::SUBSCRIBE_ONLY };
        join.accept_codecs = negotiated.accept_codecs();
        join.on_duplicate = DuplicatePolicy::Reject;
        match state.engine.join(join) {
            Err(ContractError::IdentityTaken { .. }) if identity == credential.identity => {
                identity = viewer_alias(&credential.identity);
            }
            other => break other?,
        }
    };
    let answer = negotiated.answer_sdp().to_owned();
    let handle = negotiated.start(joined.endpoint, SessionSpec::new("whep", false, EgressPolicy::viewer(watch)));
    let resource = state.resources.insert(Kind::Whep, room, handle, answer, ice_ufrag(offer), slot);
    info!(room = %resource.room, peer = %resource.handle.peer(), resource = %resource.id, "WHEP session created");
    Ok(created(&state, &resource))
}

fn join_request(room: &RoomId, credential: &Credential, identity: PeerId, transport: TransportKind) -> JoinRequest {
    let mut join = JoinRequest::new(room.clone(), identity, transport).with_credential(credential.session.clone());
    join.name = credential.name.clone();
    join.metadata = credential.metadata.clone();
    join.auto_subscribe = false;
    // WebRTC decoders take no B-frames.
    join.presentation_order_only = true;
    join
}

/// `alice` -> `alice~x7Kq2p`, within the identity length limit.
fn viewer_alias(identity: &PeerId) -> PeerId {
    let base: String = identity.as_str().chars().take(junction_core::ids::MAX_ID_LEN - 7).collect();
    PeerId::new(format!("{base}~{}", random_id("", 6))).unwrap_or_else(|_| identity.clone())
}

fn created(state: &WhipState, resource: &Resource) -> Response {
    let etag = resource.ice.lock().etag.clone();
    let mut response = (StatusCode::CREATED, resource.answer.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(location) = HeaderValue::from_str(&resource.location()) {
        headers.insert(header::LOCATION, location);
    }
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    for link in ice_server_links(&state.transport.ice_servers_for(resource.handle.peer().as_str())) {
        headers.append(header::LINK, link);
    }
    response
}

/// Finds the resource and checks the caller holds a credential for its room.
fn authorized(
    state: &WhipState,
    kind: Kind,
    room: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<Resource>, ApiError> {
    let resource = state.resources.get(kind, room, id).ok_or_else(|| unknown_session(kind.path(), room, id))?;
    let bearer = require_bearer(headers, "the token used to create the session")?;
    let credential = match kind {
        Kind::Whip => state.authority.resolve(&bearer, IngressKind::Whip)?,
        Kind::Whep => state.authority.resolve_token(&bearer)?,
    };
    credential.for_room(&resource.room)?;
    Ok(resource)
}

async fn patch_whip(
    State(state): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    patch(state, Kind::Whip, &room, &id, headers, body).await
}

async fn patch_whep(
    State(state): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    patch(state, Kind::Whep, &room, &id, headers, body).await
}

/// Trickle ICE (204) or an ICE restart (200 with the server's new fragment).
async fn patch(
    state: WhipState,
    kind: Kind,
    room: &str,
    id: &str,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !content_type_is(&headers, SDPFRAG) {
        return Err(unsupported_media_type(SDPFRAG));
    }
    let resource = authorized(&state, kind, room, id, &headers)?;
    let body = read_body(body, state.transport.config().max_sdp_bytes).await?;
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::trim);
    let (etag, remote_ufrag) = {
        let ice = resource.ice.lock();
        (ice.etag.clone(), ice.remote_ufrag.clone())
    };
    if let Some(if_match) = if_match
        && if_match != "*"
        && if_match != etag
    {
        return Err(precondition_failed(&etag));
    }
    let frag = SdpFrag::parse(&body).map_err(|err| ApiError::bad_request("bad_sdpfrag", err.to_string()))?;
    let restart = frag.ufrag.as_ref().is_some_and(|u| Some(u) != remote_ufrag.as_ref());
    if !restart {
        for candidate in &frag.candidates {
            resource.handle.add_remote_candidate(candidate).await.map_err(from_session)?;
        }
        return Ok(StatusCode::NO_CONTENT.into_response());
    }

    let (Some(ufrag), Some(pwd)) = (frag.ufrag.as_deref(), frag.pwd.as_deref()) else {
        return Err(ApiError::bad_request("bad_sdpfrag", "an ICE restart needs a=ice-ufrag and a=ice-pwd"));
    };
    let candidates: Vec<&str> = frag.candidates.iter().map(String::as_str).collect();
    let local = resource.handle.restart_ice(ufrag, pwd, &candidates).await.map_err(from_session)?;
    let etag = new_etag();
    {
        let mut ice = resource.ice.lock();
        ice.etag = etag.clone();
        ice.remote_ufrag = Some(ufrag.to_owned());
    }
    info!(%room, resource = %id, "ICE restart");
    let body = restart_answer(&local.ufrag, &local.pwd, &resource.answer);
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

async fn delete_whip(
    State(state): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete(state, Kind::Whip, &room, &id, headers).await
}

async fn delete_whep(
    State(state): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete(state, Kind::Whep, &room, &id, headers).await
}

/// Ends the session; answers once the peer has left its room.
async fn delete(state: WhipState, kind: Kind, room: &str, id: &str, headers: HeaderMap) -> Result<Response, ApiError> {
    let resource = authorized(&state, kind, room, id, &headers)?;
    resource.handle.close();
    let _ = tokio::time::timeout(LEAVE_WAIT, resource.handle.closed()).await;
    info!(%room, resource = %id, "{} session deleted", kind.path());
    Ok(StatusCode::OK.into_response())
}

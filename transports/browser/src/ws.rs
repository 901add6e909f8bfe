//! `GET /ws?token=<jwt>[&resume=<session>&key=<resume key>]`: upgrades to a WebSocket and
//! starts a signalling session, or attaches the socket to the session it resumes. Credential
//! problems (no token, an expired or forged one) are reported on the socket itself — a browser
//! cannot read the body of a refused upgrade — and the socket is then closed with code 4001.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use junction_core::SessionId;
use junction_http::ApiError;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use crate::error::WireError;
use crate::principal::Principal;
use crate::protocol::ServerMessage;
use crate::registry::Inbound;
use crate::session::{Context, Session, driver};

/// Largest text frame a client may send (SDP offers with simulcast are ~10 KiB).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Close code after a credential problem.
const CLOSE_UNAUTHORIZED: u16 = 4001;

#[derive(Clone)]
pub struct WsState {
    pub ctx: Arc<Context>,
    pub shutdown: CancellationToken,
}

#[derive(Debug, Default, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    resume: Option<String>,
    key: Option<String>,
}

pub async fn handler(
    State(state): State<WsState>,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let message = format!("GET /ws is a WebSocket endpoint: {}", rejection.body_text());
            return ApiError::new(StatusCode::UPGRADE_REQUIRED, "websocket_required", message).into_response();
        }
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return ApiError::bad_request("invalid_query", rejection.body_text()).into_response(),
    };
    upgrade.max_message_size(MAX_MESSAGE_BYTES).on_upgrade(move |socket| connected(state, query, socket))
}

async fn connected(state: WsState, query: WsQuery, mut socket: WebSocket) {
    let ctx = state.ctx.clone();
    let principal = match Principal::authenticate(&ctx.authority, query.token.as_deref(), ctx.config.allow_anonymous) {
        Ok(principal) => principal,
        Err(error) => {
            info!(code = error.code, "socket refused: {}", error.message);
            send(&mut socket, &ServerMessage::error(None, None, error)).await;
            let frame = CloseFrame { code: CLOSE_UNAUTHORIZED, reason: Utf8Bytes::from_static("unauthorized") };
            let _ = socket.send(Message::Close(Some(frame))).await;
            return;
        }
    };

    let mut resume_failure = None;
    if let Some(raw) = query.resume.as_deref() {
        match resume(&ctx, raw, query.key.as_deref().unwrap_or(""), &principal) {
            Ok(inbox) => match inbox.send(Inbound::Attach(socket)).await {
                Ok(()) => return,
                // The session ended between the lookup and now; the socket comes back.
                Err(tokio::sync::mpsc::error::SendError(Inbound::Attach(returned))) => {
                    socket = returned;
                    resume_failure = Some(WireError::new("resume_failed", format!("session {raw} has just ended")));
                }
                Err(_) => return,
            },
            Err(error) => resume_failure = Some(error),
        }
    }

    let identity = principal.identity.clone();
    let (mut session, inbox) = Session::new(ctx.clone(), principal);
    let span = info_span!("browser", session = %session.id, peer = %identity, room = tracing::field::Empty);
    span.in_scope(|| info!(anonymous = session.principal().anonymous, "session started"));
    session.welcome(false);
    if let Some(error) = resume_failure {
        // After the welcome, so the client learns the new session it is in.
        session.push(ServerMessage::error(None, None, error));
    }
    let grace = std::time::Duration::from_secs(ctx.config.reconnect_grace_s);
    driver::run(session, inbox, socket, grace, state.shutdown.clone()).instrument(span).await;
}

fn resume(
    ctx: &Context,
    raw: &str,
    key: &str,
    principal: &Principal,
) -> Result<tokio::sync::mpsc::Sender<Inbound>, WireError> {
    let id: SessionId = raw.parse().map_err(|err| WireError::new("resume_failed", format!("resume: {err}")))?;
    ctx.registry.resume(id, key, principal).map_err(|err| WireError::new("resume_failed", err.to_string()))
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) {
    let _ = socket.send(Message::Text(Utf8Bytes::from(message.to_json()))).await;
}

//! `GET /ws?token=<jwt>[&resume=<session>&key=<resume key>]`: upgrades to a WebSocket and
//! starts a signalling session, or attaches the socket to the session it resumes. Credential
//! problems (no token, an expired or forged one) are reported on the socket itself — a browser
//! cannot read the body of a refused upgrade — and the socket is then closed with code 4001.
//!
//! The session's task runs under [`supervise::contain`]: a panic in it ends that session only —
//! its peer leaves its room and the registry forgets it (the session's `Drop`), and the socket,
//! kept outside the task, gets an `error` and is closed with 1011.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use junction_core::SessionId;
use junction_engine::supervise;
use junction_transport_api::ApiError;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use crate::error::WireError;
use crate::principal::Principal;
use crate::protocol::ServerMessage;
use crate::registry::Inbound;
use crate::session::{Context, Session, driver};

/// Close code after a credential problem.
const CLOSE_UNAUTHORIZED: u16 = 4001;
/// RFC 6455's close code for an unexpected condition: the session's task failed.
const CLOSE_INTERNAL_ERROR: u16 = 1011;

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
    /// Messages the resuming client received from the session before its socket dropped.
    received: Option<u64>,
}

pub async fn handler(
    State(state): State<WsState>,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: axum::http::HeaderMap,
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
    let limit = state.ctx.config.max_message_bytes;
    let client = junction_transport_api::user_agent(&headers);
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| connected(state, query, client, socket))
}

async fn connected(state: WsState, query: WsQuery, client: Option<String>, mut socket: WebSocket) {
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
            Ok(inbox) => match inbox.send(Inbound::Attach { socket, received: query.received }).await {
                Ok(()) => return,
                // The session ended between the lookup and now; the socket comes back.
                Err(tokio::sync::mpsc::error::SendError(Inbound::Attach { socket: returned, .. })) => {
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
    session.set_client(client);
    let span = info_span!("browser", session = %session.id, peer = %identity, room = tracing::field::Empty);
    span.in_scope(|| info!(anonymous = session.principal().anonymous, "session started"));
    session.welcome(false);
    if let Some(error) = resume_failure {
        // After the welcome, so the client learns the new session it is in.
        session.push(ServerMessage::error(None, None, error));
    }
    let mut slot = Some(socket);
    let contained = async {
        let run = driver::run(session, inbox, &mut slot, &ctx.config, state.shutdown.clone());
        if supervise::contain("browser", run).await.is_err()
            && let Some(mut socket) = slot.take()
        {
            let message = "the session failed (internal error) and has ended";
            let goodbye = [
                ServerMessage::error(None, None, WireError::new("internal", message)),
                ServerMessage::Closed { reason: "error", message: Some(message.into()) },
            ];
            for message in &goodbye {
                let _ = tokio::time::timeout(driver::SEND_TIMEOUT, send(&mut socket, message)).await;
            }
            driver::close(socket, CLOSE_INTERNAL_ERROR, "internal error").await;
        }
    };
    contained.instrument(span).await;
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

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use futures::{SinkExt, StreamExt};
    use junction_auth::Authority;
    use junction_engine::{Engine, EngineConfig};
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    use super::*;
    use crate::BrowserConfig;
    use crate::registry::Registry;

    /// A text frame that makes the session's task panic, in tests only.
    const PANIC_TEXT: &str = "{\"type\":\"ping\",\"data\":\"panic the session task\"}";

    pub(crate) fn maybe_panic(text: &str) {
        if text == PANIC_TEXT {
            panic!("injected browser session panic");
        }
    }

    type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

    /// Serves `/ws` on a free port with `config` (anonymous sessions allowed).
    async fn serve(config: BrowserConfig) -> (String, Registry) {
        let registry = Registry::default();
        let ctx = Arc::new(Context {
            engine: Engine::new(EngineConfig::default()),
            authority: Authority::new("unit-test-key-0123456789"),
            registry: registry.clone(),
            config: BrowserConfig { allow_anonymous: true, ..config },
            webrtc: None,
        });
        let state = WsState { ctx, shutdown: CancellationToken::new() };
        let app = axum::Router::new().route("/ws", axum::routing::get(handler)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, registry)
    }

    async fn connect(url: &str) -> Socket {
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        assert_eq!(next(&mut socket).await.expect("welcome")["type"], "welcome");
        socket
    }

    /// The next JSON message; `Err(close code)` once the server closed the socket.
    async fn next(socket: &mut Socket) -> Result<Value, Option<u16>> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("a frame in time");
            match frame {
                Some(Ok(WsMessage::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
                Some(Ok(WsMessage::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return Err(None),
            }
        }
    }

    /// Reads until the close; returns the messages before it and the close code.
    async fn until_closed(socket: &mut Socket) -> (Vec<Value>, Option<u16>) {
        let mut messages = Vec::new();
        loop {
            match next(socket).await {
                Ok(message) => messages.push(message),
                Err(code) => return (messages, code),
            }
        }
    }

    /// Waits (up to 5 s) until `check` holds.
    async fn settles(check: impl Fn() -> bool) {
        for _ in 0..100 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the registry did not settle");
    }

    async fn ping(socket: &mut Socket) {
        socket.send(WsMessage::text(json!({"type": "ping", "id": 1}).to_string())).await.unwrap();
        assert_eq!(next(socket).await.expect("pong")["type"], "pong");
    }

    #[tokio::test]
    async fn an_oversized_frame_gets_an_error_and_close_1009_and_others_carry_on() {
        let (url, registry) = serve(BrowserConfig { max_message_bytes: 4096, ..BrowserConfig::default() }).await;
        let mut bystander = connect(&url).await;
        bystander.send(WsMessage::text(json!({"type": "join", "room": "hall"}).to_string())).await.unwrap();
        assert_eq!(next(&mut bystander).await.unwrap()["type"], "joined");
        let mut attacker = connect(&url).await;
        let huge = json!({"type": "ping", "data": "x".repeat(300_000)}).to_string();
        attacker.send(WsMessage::text(huge)).await.unwrap();
        let (messages, code) = until_closed(&mut attacker).await;
        assert_eq!(code, Some(1009), "{messages:?}");
        assert!(messages.iter().any(|m| m["type"] == "error" && m["code"] == "message_too_large"), "{messages:?}");
        assert!(messages.iter().any(|m| m["type"] == "closed" && m["reason"] == "message_too_large"), "{messages:?}");
        ping(&mut bystander).await;
        settles(|| registry.len() == 1).await;
    }

    #[tokio::test]
    async fn a_socket_that_never_joins_is_closed_at_the_deadline() {
        let (url, registry) = serve(BrowserConfig { join_timeout_s: 1, ..BrowserConfig::default() }).await;
        let mut joined = connect(&url).await;
        joined.send(WsMessage::text(json!({"type": "join", "room": "hall"}).to_string())).await.unwrap();
        assert_eq!(next(&mut joined).await.unwrap()["type"], "joined");
        let mut idle = connect(&url).await;
        let (messages, code) = until_closed(&mut idle).await;
        assert_eq!(code, Some(4015), "{messages:?}");
        assert_eq!(messages.last().map(|m| m["reason"].clone()), Some(json!("join_timeout")), "{messages:?}");
        ping(&mut joined).await;
        settles(|| registry.len() == 1).await;
    }

    #[tokio::test]
    async fn a_panic_in_a_session_ends_that_session_with_1011_and_releases_it() {
        let (url, registry) = serve(BrowserConfig::default()).await;
        let mut bystander = connect(&url).await;
        bystander.send(WsMessage::text(json!({"type": "join", "room": "hall"}).to_string())).await.unwrap();
        assert_eq!(next(&mut bystander).await.unwrap()["type"], "joined");
        let mut victim = connect(&url).await;
        victim.send(WsMessage::text(json!({"type": "join", "room": "hall"}).to_string())).await.unwrap();
        assert_eq!(next(&mut victim).await.unwrap()["type"], "joined");
        assert_eq!(next(&mut bystander).await.unwrap()["type"], "peer_joined");

        victim.send(WsMessage::text(PANIC_TEXT)).await.unwrap();
        let (messages, code) = until_closed(&mut victim).await;
        assert_eq!(code, Some(1011), "{messages:?}");
        assert!(messages.iter().any(|m| m["type"] == "error" && m["code"] == "internal"), "{messages:?}");
        assert_eq!(messages.last().map(|m| m["reason"].clone()), Some(json!("error")), "{messages:?}");
        // The others see the victim leave; the server serves them as before.
        let left = next(&mut bystander).await.unwrap();
        assert_eq!((left["type"].as_str(), left["reason"].as_str()), (Some("peer_left"), Some("error")), "{left}");
        ping(&mut bystander).await;
        settles(|| registry.len() == 1).await;
    }

    #[tokio::test]
    async fn what_a_dropped_socket_swallowed_reaches_the_socket_that_resumes_once_and_in_order() {
        let (url, _registry) = serve(BrowserConfig::default()).await;
        let mut talker = connect(&url).await;
        talker.send(WsMessage::text(json!({"type": "join", "room": "hall"}).to_string())).await.unwrap();
        assert_eq!(next(&mut talker).await.unwrap()["type"], "joined");
        let (mut listener, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        let welcome = next(&mut listener).await.unwrap();
        listener.send(WsMessage::text(json!({"type": "join", "room": "hall"}).to_string())).await.unwrap();
        assert_eq!(next(&mut listener).await.unwrap()["type"], "joined");
        assert_eq!(next(&mut talker).await.unwrap()["type"], "peer_joined");
        // Written to the listener's socket while it is up, never read by its client: lost with
        // the connection, as a message in flight is when a network drops.
        talker.send(WsMessage::text(json!({"type": "data", "payload": "one", "id": 1}).to_string())).await.unwrap();
        assert_eq!(next(&mut talker).await.unwrap()["delivered"], 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(listener);
        talker.send(WsMessage::text(json!({"type": "data", "payload": "two", "id": 2}).to_string())).await.unwrap();
        assert_eq!(next(&mut talker).await.unwrap()["delivered"], 1);

        // The client received one message (`joined`) after its welcome.
        let resume = format!(
            "{url}?resume={}&key={}&received=1",
            welcome["session"].as_str().unwrap(),
            welcome["resume_key"].as_str().unwrap()
        );
        let (mut listener, _) = tokio_tungstenite::connect_async(resume.as_str()).await.unwrap();
        assert_eq!(next(&mut listener).await.unwrap()["resumed"], true);
        for payload in ["one", "two"] {
            let data = next(&mut listener).await.unwrap();
            assert_eq!((data["type"].as_str(), data["payload"].as_str()), (Some("data"), Some(payload)), "{data}");
        }
        // Nothing twice: the next message is the answer to a ping.
        ping(&mut listener).await;

        // A count that is not a number is refused before the upgrade, with the API's JSON error.
        let bad = format!("{url}?resume={}&key=x&received=lots", welcome["session"].as_str().unwrap());
        let Err(tokio_tungstenite::tungstenite::Error::Http(response)) =
            tokio_tungstenite::connect_async(bad.as_str()).await
        else {
            panic!("a resume with received=lots was upgraded");
        };
        assert_eq!(response.status(), 400);
        let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    }

    #[tokio::test]
    async fn a_detached_client_falling_too_far_behind_in_bytes_is_ended() {
        let config = BrowserConfig { max_message_bytes: 8192, max_outbox_bytes: 16 * 1024, ..BrowserConfig::default() };
        let (url, registry) = serve(config).await;
        let mut talker = connect(&url).await;
        talker.send(WsMessage::text(json!({"type": "join", "room": "hall"}).to_string())).await.unwrap();
        assert_eq!(next(&mut talker).await.unwrap()["type"], "joined");
        let mut listener = connect(&url).await;
        listener.send(WsMessage::text(json!({"type": "join", "room": "hall"}).to_string())).await.unwrap();
        assert_eq!(next(&mut listener).await.unwrap()["type"], "joined");
        assert_eq!(next(&mut talker).await.unwrap()["type"], "peer_joined");
        // The listener's connection drops: its session waits for a resume, collecting messages.
        drop(listener);
        let chunk = "y".repeat(4000);
        for _ in 0..5 {
            talker.send(WsMessage::text(json!({"type": "data", "payload": chunk}).to_string())).await.unwrap();
        }
        let left = loop {
            let message = next(&mut talker).await.unwrap();
            if message["type"] == "peer_left" {
                break message;
            }
        };
        assert_eq!(left["reason"], "overloaded", "{left}");
        settles(|| registry.len() == 1).await;
    }
}

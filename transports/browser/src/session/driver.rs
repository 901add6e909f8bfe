//! The task that drives one [`Session`]: the only place with I/O. It reads the socket, the
//! room's events and the session's inbox, feeds them to the session, and writes the session's
//! outbox to the socket. When the socket drops without `leave` it keeps the session for the
//! reconnect grace period, until a resuming socket is attached through the inbox or the period
//! ends; a socket that stays silent for three ping intervals counts as dropped.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use junction_core::CloseReason;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{RoomInput, Session};
use crate::registry::Inbound;

/// How often the server pings an attached socket.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Silence after which a socket is considered gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// Longest a single write to a socket may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages kept for a detached client; beyond this the session cannot be resumed faithfully.
const MAX_OUTBOX: usize = 4096;
/// Close code for a socket whose session was resumed on another socket.
const CLOSE_MOVED: u16 = 4000;

/// Runs `session` with `socket` attached until the session ends.
pub async fn run(
    mut session: Session,
    mut inbox: mpsc::Receiver<Inbound>,
    socket: WebSocket,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let mut socket = Some(socket);
    let mut last_heard = Instant::now();
    let mut detached_at: Option<Instant> = None;
    let mut ping = interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        if let Some(ws) = socket.as_mut()
            && !flush(ws, &mut session).await
        {
            info!("socket lost; keeping the session for {}s", grace.as_secs());
            socket = None;
            detached_at = Some(Instant::now());
        }
        if let Some(ending) = session.ending().cloned() {
            if let Some(ws) = socket.take() {
                close(ws, ending.close_code, ending.reason).await;
            }
            session.finish(ending.leave);
            return;
        }
        if session.outbox_len() > MAX_OUTBOX {
            info!("the detached client missed more than {MAX_OUTBOX} messages");
            session.finish(CloseReason::Overloaded);
            return;
        }
        let grace_over = detached_at.map(|at| at + grace);

        tokio::select! {
            frame = next_frame(&mut socket) => match frame {
                Some(Message::Text(text)) => {
                    last_heard = Instant::now();
                    session.on_text(text.as_str()).await;
                }
                Some(Message::Binary(_)) => {
                    last_heard = Instant::now();
                    session.on_binary();
                }
                Some(Message::Ping(_) | Message::Pong(_)) => last_heard = Instant::now(),
                Some(Message::Close(_)) | None => {
                    info!("socket closed without leave; keeping the session for {}s", grace.as_secs());
                    socket = None;
                    detached_at = Some(Instant::now());
                }
            },
            input = session.next_room_input() => match input {
                RoomInput::Event(Some(event)) => session.on_room_event(event).await,
                RoomInput::Event(None) => session.room_events_ended(),
                RoomInput::Media(media) => {
                    // Until the browser's first offer starts its media session, frames of its
                    // subscriptions have nowhere to go; that session asks for keyframes.
                    drop(media);
                }
                RoomInput::Signal(signal) => session.on_media_signal(signal).await,
            },
            inbound = inbox.recv() => match inbound {
                Some(Inbound::Attach(new_socket)) => {
                    if let Some(old) = socket.replace(new_socket) {
                        close(old, CLOSE_MOVED, "session resumed on another socket").await;
                    }
                    info!("socket resumed the session ({} messages queued)", session.outbox_len());
                    detached_at = None;
                    last_heard = Instant::now();
                    session.welcome(true);
                }
                Some(Inbound::Deliver(message)) => session.push(message),
                // The registry holds the sender for as long as the session is registered.
                None => {
                    session.finish(CloseReason::Error { message: "session unregistered".into() });
                    return;
                }
            },
            _ = sleep_until(grace_over.unwrap_or_else(Instant::now)), if grace_over.is_some() => {
                info!("reconnect grace period over");
                session.finish(CloseReason::TransportTimeout);
                return;
            }
            _ = ping.tick(), if socket.is_some() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    info!("socket silent for {}s; keeping the session for {}s", SILENCE_LIMIT.as_secs(), grace.as_secs());
                    socket = None;
                    detached_at = Some(Instant::now());
                } else if let Some(ws) = socket.as_mut()
                    && timeout(SEND_TIMEOUT, ws.send(Message::Ping(Default::default()))).await.map_or(true, |r| r.is_err())
                {
                    socket = None;
                    detached_at = Some(Instant::now());
                }
            }
            _ = shutdown.cancelled() => session.end_for_shutdown(),
        }
    }
}

/// The next data or control frame; `None` when the socket is gone. Pending while detached.
async fn next_frame(socket: &mut Option<WebSocket>) -> Option<Message> {
    match socket.as_mut() {
        Some(ws) => match ws.recv().await {
            Some(Ok(message)) => Some(message),
            Some(Err(err)) => {
                debug!("socket error: {err}");
                None
            }
            None => None,
        },
        None => std::future::pending().await,
    }
}

/// Writes the outbox; on failure the unsent message goes back and `false` is returned.
async fn flush(ws: &mut WebSocket, session: &mut Session) -> bool {
    while let Some(message) = session.next_outgoing() {
        let text = Utf8Bytes::from(message.to_json());
        match timeout(SEND_TIMEOUT, ws.send(Message::Text(text))).await {
            Ok(Ok(())) => {}
            _ => {
                session.unsend(message);
                return false;
            }
        }
    }
    true
}

async fn close(mut ws: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let _ = timeout(SEND_TIMEOUT, ws.send(Message::Close(Some(frame)))).await;
}

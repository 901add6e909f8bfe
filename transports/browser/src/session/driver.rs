//! The task that drives one [`Session`]: the only place with I/O. It reads the socket, the
//! room's events and the session's inbox, feeds them to the session, and writes the session's
//! outbox to the socket. When the socket drops without `leave` it keeps the session for the
//! reconnect grace period, until a resuming socket is attached through the inbox or the period
//! ends; a socket that stays silent for three ping intervals counts as dropped.
//!
//! Limits (`[browser]`): a socket must join a room (or take part in a direct call) by the join
//! deadline; a frame over the message size ends the session (the socket cannot be read past it);
//! what waits for the client is capped in bytes. The socket lives in the caller's slot, so that a
//! caller who contains a panic of this task can still close it with an error.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use junction_core::CloseReason;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{RoomInput, Session};
use crate::BrowserConfig;
use crate::registry::Inbound;

/// How often the server pings an attached socket.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Silence after which a socket is considered gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// Longest a single write to a socket may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing socket waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Close code for a socket whose session was resumed on another socket.
const CLOSE_MOVED: u16 = 4000;

/// What a socket read gave.
enum Frame {
    Message(Message),
    /// The client sent a frame over the size limit; the socket cannot be read past it.
    TooLarge,
    /// The socket is gone.
    Gone,
}

/// Runs `session` with the socket in `socket` attached until the session ends.
pub async fn run(
    mut session: Session,
    mut inbox: mpsc::Receiver<Inbound>,
    socket: &mut Option<WebSocket>,
    config: &BrowserConfig,
    shutdown: CancellationToken,
) {
    let grace = Duration::from_secs(config.reconnect_grace_s);
    let join_by = (config.join_timeout_s > 0).then(|| Instant::now() + Duration::from_secs(config.join_timeout_s));
    let mut last_heard = Instant::now();
    let mut detached_at: Option<Instant> = None;
    // The client sent a frame too large to read: the socket cannot be read any more.
    let mut unreadable = false;
    let mut ping = interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        if let Some(ws) = socket.as_mut()
            && !flush(ws, &mut session).await
        {
            info!("socket lost; keeping the session for {}s", grace.as_secs());
            *socket = None;
            detached_at = Some(Instant::now());
        }
        if let Some(ending) = session.ending().cloned() {
            if let Some(ws) = socket.take() {
                close_socket(ws, ending.close_code, ending.reason, unreadable).await;
            }
            session.finish(ending.leave);
            return;
        }
        if session.outbox_bytes() > config.max_outbox_bytes {
            info!(bytes = session.outbox_bytes(), "the client fell more than browser.max_outbox_bytes behind");
            session.finish(CloseReason::Overloaded);
            return;
        }
        let grace_over = detached_at.map(|at| at + grace);
        let join_due = join_by.filter(|_| !session.engaged());

        tokio::select! {
            frame = next_frame(socket) => match frame {
                Frame::Message(Message::Text(text)) => {
                    last_heard = Instant::now();
                    #[cfg(test)]
                    crate::ws::tests::maybe_panic(text.as_str());
                    session.on_text(text.as_str()).await;
                }
                Frame::Message(Message::Binary(_)) => {
                    last_heard = Instant::now();
                    session.on_binary();
                }
                Frame::Message(Message::Ping(_) | Message::Pong(_)) => last_heard = Instant::now(),
                Frame::TooLarge => {
                    unreadable = true;
                    session.end_for_oversized_frame(config.max_message_bytes);
                }
                Frame::Message(Message::Close(_)) | Frame::Gone => {
                    info!("socket closed without leave; keeping the session for {}s", grace.as_secs());
                    *socket = None;
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
                Some(Inbound::Attach { socket: new_socket, received }) => {
                    if let Some(old) = socket.replace(new_socket) {
                        // Not awaited: the old client may never answer the close.
                        tokio::spawn(close(old, CLOSE_MOVED, "session resumed on another socket"));
                    }
                    let replayed = session.resume(received);
                    info!(?replayed, "socket resumed the session ({} messages queued)", session.outbox_len());
                    detached_at = None;
                    last_heard = Instant::now();
                }
                Some(Inbound::Deliver(message)) => session.deliver(message),
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
            _ = sleep_until(join_due.unwrap_or_else(Instant::now)), if join_due.is_some() => {
                session.end_for_join_timeout(config.join_timeout_s);
            }
            _ = ping.tick(), if socket.is_some() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    info!("socket silent for {}s; keeping the session for {}s", SILENCE_LIMIT.as_secs(), grace.as_secs());
                    *socket = None;
                    detached_at = Some(Instant::now());
                } else if let Some(ws) = socket.as_mut()
                    && timeout(SEND_TIMEOUT, ws.send(Message::Ping(Default::default()))).await.map_or(true, |r| r.is_err())
                {
                    *socket = None;
                    detached_at = Some(Instant::now());
                }
            }
            _ = shutdown.cancelled() => session.end_for_shutdown(),
        }
    }
}

/// The next data or control frame. Pending while detached.
async fn next_frame(socket: &mut Option<WebSocket>) -> Frame {
    match socket.as_mut() {
        Some(ws) => match ws.recv().await {
            Some(Ok(message)) => Frame::Message(message),
            Some(Err(err)) => {
                let too_large = err
                    .into_inner()
                    .downcast_ref::<tungstenite::Error>()
                    .is_some_and(|err| matches!(err, tungstenite::Error::Capacity(_)));
                if too_large {
                    return Frame::TooLarge;
                }
                debug!("socket error");
                Frame::Gone
            }
            None => Frame::Gone,
        },
        None => std::future::pending().await,
    }
}

/// Writes the outbox; on failure the message stays queued and `false` is returned.
async fn flush(ws: &mut WebSocket, session: &mut Session) -> bool {
    while let Some(text) = session.peek_outgoing() {
        match timeout(SEND_TIMEOUT, ws.send(Message::Text(Utf8Bytes::from(text.to_owned())))).await {
            Ok(Ok(())) => session.written(),
            _ => return false,
        }
    }
    true
}

/// Closes the socket with `code`, then waits (briefly) for the client's close frame: dropping
/// the connection while the client's reply is in flight would reset it, and the client could
/// lose the close frame (and the messages before it) to the reset.
pub async fn close(ws: WebSocket, code: u16, reason: &'static str) {
    close_socket(ws, code, reason, false).await;
}

/// [`close`]; with `unreadable` (the rest of an oversized frame is still arriving and the socket
/// cannot be read past it) the socket is just held open for the wait.
async fn close_socket(mut ws: WebSocket, code: u16, reason: &'static str, unreadable: bool) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    if !matches!(timeout(SEND_TIMEOUT, ws.send(Message::Close(Some(frame)))).await, Ok(Ok(()))) {
        return;
    }
    if unreadable {
        tokio::time::sleep(CLOSE_WAIT).await;
        return;
    }
    let reply = async {
        while let Some(Ok(message)) = ws.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = timeout(CLOSE_WAIT, reply).await;
}

//! The room event stream for operators' tools (`GET /v1/events`, Server-Sent Events): the
//! webhooks' JSON (`event` names as there: `peer_joined`, …), each sent with its event id as
//! the SSE `id`, so that a client that reconnects with `Last-Event-ID` gets everything it
//! missed, in order. This node keeps its last [`HISTORY`] events for that; a `Last-Event-ID`
//! older than those (or unknown) gets a `gap` event first, then every event kept. A client
//! that cannot keep up with the live stream has it closed, to reconnect and catch up from the
//! history, rather than making the server hold events for it.
//!
//! The events are this node's (in a cluster, each node streams the rooms it hosts).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, StreamExt};
use junction_core::RoomId;
use junction_engine::{Engine, EngineEvent};
use junction_transport_api::ApiError;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

use crate::api::AppState;

/// Events kept for clients that reconnect.
pub const HISTORY: usize = 1024;

/// Live events buffered per connected client before it counts as unable to keep up.
const CLIENT_BUFFER: usize = 256;

/// How often an idle stream carries a comment, so that proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event as the stream sends it.
struct Logged {
    id: String,
    name: &'static str,
    room: RoomId,
    json: String,
}

/// The kept events and the live feed, under one lock so that a client's history and live
/// events meet without a gap or a repeat.
struct Log {
    kept: VecDeque<Arc<Logged>>,
    live: broadcast::Sender<Arc<Logged>>,
}

/// This node's room events, kept for `/v1/events`.
#[derive(Clone)]
pub struct EventLog {
    log: Arc<Mutex<Log>>,
}

/// What a client gets when it connects: the kept events it missed (after a `gap` notice when
/// it missed more than is kept), then the live ones.
struct Subscription {
    gap: bool,
    missed: Vec<Arc<Logged>>,
    live: broadcast::Receiver<Arc<Logged>>,
}

impl EventLog {
    fn new() -> EventLog {
        let (live, _) = broadcast::channel(CLIENT_BUFFER);
        EventLog { log: Arc::new(Mutex::new(Log { kept: VecDeque::with_capacity(HISTORY), live })) }
    }

    /// Starts keeping `engine`'s events (from now on).
    pub fn start(engine: &Engine) -> EventLog {
        let log = EventLog::new();
        let mut events = engine.subscribe_events();
        let writer = log.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => writer.append(&event),
                    Err(RecvError::Lagged(lost)) => warn!(lost, "event stream: the log fell behind the engine"),
                    Err(RecvError::Closed) => return,
                }
            }
        });
        log
    }

    fn append(&self, event: &EngineEvent) {
        let json = match serde_json::to_string(event) {
            Ok(json) => json,
            Err(err) => {
                warn!(event = event.event.name(), "event stream: not serialisable: {err}");
                return;
            }
        };
        let logged =
            Arc::new(Logged { id: event.id.clone(), name: event.event.name(), room: event.event.room().clone(), json });
        let mut log = self.log.lock();
        if log.kept.len() == HISTORY {
            log.kept.pop_front();
        }
        log.kept.push_back(logged.clone());
        // Nobody listening is fine.
        let _ = log.live.send(logged);
    }

    /// The events after `last` (none without it) and the live feed from there on.
    fn subscribe(&self, last: Option<&str>) -> Subscription {
        let log = self.log.lock();
        let live = log.live.subscribe();
        let Some(last) = last else { return Subscription { gap: false, missed: Vec::new(), live } };
        match log.kept.iter().position(|e| e.id == last) {
            Some(at) => Subscription { gap: false, missed: log.kept.iter().skip(at + 1).cloned().collect(), live },
            None => Subscription { gap: true, missed: log.kept.iter().cloned().collect(), live },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this room's events.
    room: Option<String>,
}

fn sse_event(logged: &Logged) -> Event {
    Event::default().id(logged.id.clone()).event(logged.name).data(logged.json.clone())
}

/// `GET /v1/events[?room=R]`: this node's room events as Server-Sent Events, resumable with
/// `Last-Event-ID` (see the module header).
pub async fn stream_events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))?;
    let room = match query.room {
        Some(room) => Some(RoomId::new(room).map_err(|err| ApiError::invalid_field("room", err))?),
        None => None,
    };
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let Subscription { gap, missed, live } = state.events.subscribe(last);
    let wanted = move |logged: &Logged| room.as_ref().is_none_or(|room| *room == logged.room);

    let gap = gap.then(|| {
        let message =
            format!("Last-Event-ID {} is older than the {HISTORY} events kept: some were missed", last.unwrap_or(""));
        Event::default().event("gap").data(serde_json::json!({"event": "gap", "message": message}).to_string())
    });
    let wanted_missed = wanted.clone();
    let missed = missed.into_iter().filter(move |e| wanted_missed(e)).map(|e| sse_event(&e));
    // Live events until the client falls behind the buffer (it reconnects and catches up).
    let live = stream::unfold(live, |mut live| async move {
        match live.recv().await {
            Ok(logged) => Some((Some(logged), live)),
            Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => None,
        }
    })
    .filter_map(move |logged| {
        let event = logged.filter(|e| wanted(e)).map(|e| sse_event(&e));
        async move { event }
    });
    let events = stream::iter(gap.into_iter().chain(missed)).chain(live).map(Ok::<Event, Infallible>);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

#[cfg(test)]
mod tests {
    use junction_engine::{RoomEndReason, RoomEvent};

    use super::*;

    fn event(n: usize) -> EngineEvent {
        let room = RoomId::new(if n.is_multiple_of(2) { "even" } else { "odd" }).unwrap();
        EngineEvent {
            id: format!("EV_{n}"),
            created_at_ms: n as u64,
            event: RoomEvent::RoomFinished { room, reason: RoomEndReason::Deleted },
        }
    }

    fn ids(events: &[Arc<Logged>]) -> Vec<String> {
        events.iter().map(|e| e.id.clone()).collect()
    }

    #[test]
    fn a_reconnecting_client_gets_what_followed_its_last_event_or_a_gap_and_the_history() {
        let log = EventLog::new();
        let fresh = log.subscribe(None);
        assert!(!fresh.gap && fresh.missed.is_empty(), "a new client gets live events only");
        for n in 0..HISTORY + 10 {
            log.append(&event(n));
        }
        let last = format!("EV_{}", HISTORY + 6);
        let resumed = log.subscribe(Some(&last));
        assert!(!resumed.gap);
        assert_eq!(ids(&resumed.missed), (HISTORY + 7..HISTORY + 10).map(|n| format!("EV_{n}")).collect::<Vec<_>>());
        // EV_3 was pushed out of the history by newer events.
        let evicted = log.subscribe(Some("EV_3"));
        assert!(evicted.gap);
        assert_eq!(evicted.missed.len(), HISTORY);
        assert_eq!(evicted.missed[0].id, "EV_10");

        // Live events reach a subscriber after what it missed, in order.
        let mut live = resumed.live;
        log.append(&event(5000));
        assert_eq!(live.try_recv().unwrap().id, "EV_5000");
        assert_eq!(log.log.lock().kept.len(), HISTORY);
        assert_eq!(log.log.lock().kept.back().unwrap().room.as_str(), "even");
    }
}

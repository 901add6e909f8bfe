//! `GET /v1/events`: the room events of a scripted session (a room made over REST, a `webrtc`-crate
//! peer joining, publishing and leaving, the room deleted) arrive as Server-Sent Events in order,
//! as the webhooks' JSON; a client reconnecting with `Last-Event-ID` gets exactly what came after
//! that event, one whose id is no longer kept gets a `gap` event and the history; `?room=` keeps
//! one room's events; bad requests get JSON errors.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::webrtc_client::{ClientCodec, ClientOptions, RoomClient, synthetic};
use crate::support::{TestServer, eventually};

/// One Server-Sent Event: (id, event name, data as JSON).
type Sse = (Option<String>, String, Value);

/// An open `/v1/events` response, read event by event.
struct EventReader {
    response: reqwest::Response,
    buffer: String,
}

impl EventReader {
    async fn open(server: &TestServer, query: &str, last_event_id: Option<&str>) -> EventReader {
        let mut request = server.api(Method::GET, &format!("/v1/events{query}"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("GET /v1/events");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        EventReader { response, buffer: String::new() }
    }

    /// The next event (keep-alive comments passed over), or `None` after `timeout`.
    async fn next(&mut self, timeout: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut name, mut data) = (None, String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((id, name, serde_json::from_str(&data).expect("event data is JSON")));
            }
            let left = deadline.checked_duration_since(tokio::time::Instant::now())?;
            let chunk = tokio::time::timeout(left, self.response.chunk()).await.ok()?.expect("stream read")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until one named `last` (included), at most 20 s.
    async fn until(&mut self, last: &str) -> Vec<Sse> {
        let mut seen = Vec::new();
        while let Some(event) = self.next(Duration::from_secs(20)).await {
            let done = event.1 == last;
            seen.push(event);
            if done {
                return seen;
            }
        }
        panic!("no {last} event; got {:?}", names(&seen));
    }
}

fn names(events: &[Sse]) -> Vec<&str> {
    events.iter().map(|(_, name, _)| name.as_str()).collect()
}

#[tokio::test]
async fn the_event_stream_delivers_a_session_in_order_and_resumes_from_last_event_id() {
    let server = TestServer::start().await;
    let mut all = EventReader::open(&server, "", None).await;
    let mut one_room = EventReader::open(&server, "?room=ev", None).await;

    // The scripted session, and another room meanwhile.
    let (status, _) = server.call(Method::POST, "/v1/rooms", Some(json!({"name": "ev"}))).await;
    assert_eq!(status, 201);
    let (status, _) = server.call(Method::POST, "/v1/rooms", Some(json!({"name": "elsewhere"}))).await;
    assert_eq!(status, 201);
    let token = server.token("ev", "ann", json!({"publish": true, "subscribe": true})).await;
    let ann = RoomClient::publisher(&server.base, &token, ClientOptions::new(&[ClientCodec::Vp8, ClientCodec::Opus]))
        .await
        .expect("ann joins and publishes");
    ann.send_video(synthetic::vp8_frame(0, true), Duration::from_millis(40)).await.unwrap();
    ann.send_audio(synthetic::opus_packet(0), Duration::from_millis(20)).await.unwrap();
    eventually("ann's two tracks", Duration::from_secs(10), || async {
        let (_, body) = server.call(Method::GET, "/v1/rooms/ev/peers", None).await;
        (body["peers"][0]["tracks"].as_array()?.len() == 2).then_some(())
    })
    .await;
    ann.leave().await.expect("ann leaves");
    let (status, _) = server.call(Method::DELETE, "/v1/rooms/ev", None).await;
    assert_eq!(status, 204);

    let session = one_room.until("room_finished").await;
    assert_eq!(
        names(&session),
        [
            "room_started",
            "peer_joined",
            "track_published",
            "track_published",
            "track_unpublished",
            "track_unpublished",
            "peer_left",
            "room_finished"
        ],
        "{session:?}"
    );
    for (id, name, data) in &session {
        // The webhooks' JSON, its id the SSE id.
        assert_eq!(data["event"], *name);
        assert_eq!(data["id"].as_str(), id.as_deref());
        assert!(data["created_at_ms"].as_u64().is_some(), "{data}");
        let room = data["room"].as_str().or(data["room"]["name"].as_str());
        assert_eq!(room, Some("ev"), "{data}");
    }
    assert_eq!(session[1].2["peer"]["identity"], "ann");
    let kinds: Vec<&str> = session[2..4].iter().map(|(_, _, d)| d["track"]["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"video") && kinds.contains(&"audio"), "{kinds:?}");

    // The unfiltered stream has the same events in the same order, with the other room's start.
    let everything = all.until("room_finished").await;
    let ours: Vec<&Sse> =
        everything.iter().filter(|(_, _, d)| d["room"] == "ev" || d["room"]["name"] == "ev").collect();
    assert_eq!(ours.iter().map(|e| &e.0).collect::<Vec<_>>(), session.iter().map(|e| &e.0).collect::<Vec<_>>());
    assert!(everything.iter().any(|(_, _, d)| d["room"]["name"] == "elsewhere"), "{:?}", names(&everything));

    // A client that read up to the peer joining reconnects: it gets the rest, none missed.
    let mut resumed = EventReader::open(&server, "?room=ev", session[1].0.as_deref()).await;
    let rest = resumed.until("room_finished").await;
    assert_eq!(rest.iter().map(|e| &e.0).collect::<Vec<_>>(), session[2..].iter().map(|e| &e.0).collect::<Vec<_>>());

    // An id the server no longer keeps: told so, then everything kept.
    let mut lost = EventReader::open(&server, "?room=ev", Some("EV_never_seen")).await;
    let (_, name, data) = lost.next(Duration::from_secs(5)).await.expect("a gap event");
    assert_eq!(name, "gap", "{data}");
    assert!(data["message"].as_str().unwrap().contains("EV_never_seen"), "{data}");
    let replayed = lost.until("room_finished").await;
    assert_eq!(names(&replayed), names(&session));

    // Errors are JSON.
    let response = reqwest::Client::new().get(server.url("/v1/events")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    let (status, body) = server.call(Method::GET, "/v1/events?rooms=ev", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
    let (status, body) = server.call(Method::GET, "/v1/events?room=no%20spaces", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_field")), "{body}");
    let ann_admin = server.token("ev", "ops", json!({"admin": true})).await;
    let response = reqwest::Client::new().get(server.url("/v1/events")).bearer_auth(ann_admin).send().await.unwrap();
    assert_eq!(response.status(), 403, "a room's admin token does not open every room's events");
}

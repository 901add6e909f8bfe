//! Webhooks against a real HTTP receiver: events arrive signed with the webhook secret (not an
//! API key) over a timestamp and the body, a failed delivery is retried, and on SIGTERM the
//! deliveries still queued for a slow receiver are made before the process exits.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Mutex;

use crate::support::{TestServer, eventually, server::API_KEY};

const WEBHOOK_SECRET: &str = "whsec-e2e-0123456789abcdef";

/// Signatures older than this are refused, as docs/security.md tells receivers to do.
const TOLERANCE_S: u64 = 300;

#[derive(Clone, Default)]
pub(crate) struct Receiver {
    /// Every delivery received, refused or not.
    pub deliveries: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    /// Deliveries to refuse with 500 before accepting.
    refuse: Arc<Mutex<u32>>,
    /// The events of this room are refused with 500 while it is set.
    pub refuse_room: Arc<Mutex<Option<String>>>,
    /// How long each delivery takes to answer.
    delay: Duration,
}

/// The room an event is about.
pub(crate) fn room_of(event: &Value) -> &str {
    event["room"]["name"].as_str().or(event["room"].as_str()).unwrap_or_default()
}

/// The receiver's check, as docs/security.md describes it: parse `t=<unix>,v1=<hex>`, refuse a
/// stale timestamp, compute HMAC-SHA256(secret, "<t>.<body>") and compare.
fn verify(secret: &str, header: &str, body: &[u8], now: u64) -> Result<u64, String> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => signatures.push(hex::decode(value).map_err(|e| e.to_string())?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("no timestamp")?;
    if now.abs_diff(timestamp) > TOLERANCE_S {
        return Err(format!("stale timestamp {timestamp} (now {now})"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    // `verify_slice` compares in constant time.
    if signatures.iter().any(|sig| mac.clone().verify_slice(sig).is_ok()) {
        Ok(timestamp)
    } else {
        Err("no v1 signature matches".into())
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    tokio::time::sleep(receiver.delay).await;
    let mut refuse = receiver.refuse.lock().await;
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let header = headers["x-junction-signature"].to_str().unwrap().to_owned();
    if let Err(err) = verify(WEBHOOK_SECRET, &header, &body, now()) {
        panic!("the signature does not verify with the webhook secret: {err}");
    }
    assert!(verify(API_KEY, &header, &body, now()).is_err(), "the API key must not sign webhooks");
    let refused_room = receiver.refuse_room.lock().await.as_deref() == Some(room_of(&value));
    receiver.deliveries.lock().await.push((headers, value));
    if refused_room {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if *refuse > 0 {
        *refuse -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::NO_CONTENT
}

/// Serves `receiver` on a free port; returns the hook URL.
pub(crate) async fn serve(receiver: &Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    hook
}

pub(crate) fn config(hook: &str) -> String {
    format!("[webhook]\nurls = [\"{hook}\"]\nsecret = \"{WEBHOOK_SECRET}\"\n")
}

#[test]
fn the_receivers_check_refuses_stale_and_forged_signatures() {
    let body = br#"{"event":"room_started"}"#;
    let sign = |secret: &str, t: u64| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    };
    assert_eq!(verify(WEBHOOK_SECRET, &sign(WEBHOOK_SECRET, 1_000), body, 1_100), Ok(1_000));
    assert!(verify(WEBHOOK_SECRET, &sign(WEBHOOK_SECRET, 1_000), body, 1_000 + TOLERANCE_S + 1).is_err());
    assert!(verify(WEBHOOK_SECRET, &sign(API_KEY, 1_000), body, 1_000).is_err());
    // A replayed body under a fresh timestamp needs a fresh signature.
    let replay = sign(WEBHOOK_SECRET, 1_000).replace("t=1000", "t=1200");
    assert!(verify(WEBHOOK_SECRET, &replay, body, 1_200).is_err());
}

#[tokio::test]
async fn room_events_are_posted_signed_and_retried() {
    let receiver = Receiver::default();
    *receiver.refuse.lock().await = 1;
    let hook = serve(&receiver).await;

    let server = TestServer::start_with(&config(&hook), &[]).await;
    server.call(Method::POST, "/v1/rooms", Some(json!({"name": "hooked"}))).await;
    server.call(Method::DELETE, "/v1/rooms/hooked", None).await;

    let deliveries = eventually("both events delivered", Duration::from_secs(15), || async {
        let all = receiver.deliveries.lock().await.clone();
        let accepted: Vec<&Value> = all.iter().map(|(_, v)| v).collect();
        (all.len() >= 3 && accepted.iter().any(|v| v["event"] == "room_finished")).then_some(all)
    })
    .await;
    // The first delivery was refused; the same event came again as attempt 2.
    let (first_headers, first) = &deliveries[0];
    let (second_headers, second) = &deliveries[1];
    assert_eq!(first["event"], "room_started");
    assert_eq!(first["room"]["name"], "hooked");
    assert_eq!(first, second);
    assert_eq!(first_headers["x-junction-attempt"], "1");
    assert_eq!(second_headers["x-junction-attempt"], "2");
    assert_eq!(first_headers["x-junction-delivery"], second_headers["x-junction-delivery"]);
    assert!(first["id"].as_str().unwrap().starts_with("EV_"));
    let (headers, last) = deliveries.last().unwrap();
    assert_eq!(last["event"], "room_finished");
    assert_eq!(last["reason"], "deleted");
    assert_eq!(headers["x-junction-event"], "room_finished");
}

#[tokio::test]
async fn sigterm_delivers_the_queued_webhooks_to_a_slow_receiver_before_exiting() {
    let receiver = Receiver { delay: Duration::from_millis(300), ..Receiver::default() };
    let hook = serve(&receiver).await;
    let server = TestServer::start_with(&format!("{}shutdown_grace_s = 20\n", config(&hook)), &[]).await;
    let rooms: Vec<String> = (0..5).map(|i| format!("drain-{i}")).collect();
    for room in &rooms {
        let (status, _) = server.call(Method::POST, "/v1/rooms", Some(json!({"name": room}))).await;
        assert_eq!(status, 201);
    }
    // Ten deliveries at 300 ms each: almost all of them are still queued when SIGTERM comes.
    let stopping = Instant::now();
    assert_eq!(server.stop().await, Some(0), "a clean exit after the drain");
    let took = stopping.elapsed();

    let deliveries = receiver.deliveries.lock().await.clone();
    let events: Vec<(String, String)> = deliveries
        .iter()
        .map(|(_, v)| (v["event"].as_str().unwrap_or_default().to_owned(), room_of(v).to_owned()))
        .collect();
    for room in &rooms {
        assert!(events.contains(&("room_started".into(), room.clone())), "{room} started: {events:?}");
        assert!(events.contains(&("room_finished".into(), room.clone())), "{room} finished: {events:?}");
    }
    let reasons: Vec<&Value> =
        deliveries.iter().filter(|(_, v)| v["event"] == "room_finished").map(|(_, v)| &v["reason"]).collect();
    assert!(reasons.iter().all(|r| *r == "server_shutdown"), "{reasons:?}");
    assert!(took >= Duration::from_millis(2_500), "the exit waited for the deliveries ({took:?})");
    println!("SIGTERM to exit with {} webhooks delivered: {took:?}", deliveries.len());
}

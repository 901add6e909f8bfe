//! Webhooks against a real HTTP receiver: events arrive signed, and a failed delivery is retried.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Mutex;

use crate::support::{TestServer, eventually, server::API_KEY};

#[derive(Clone, Default)]
struct Receiver {
    deliveries: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    /// Deliveries to refuse with 500 before accepting.
    refuse: Arc<Mutex<u32>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let mut refuse = receiver.refuse.lock().await;
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut mac = Hmac::<Sha256>::new_from_slice(API_KEY.as_bytes()).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(headers["x-junction-signature"], expected.as_str(), "signature over the exact body");
    receiver.deliveries.lock().await.push((headers, value));
    if *refuse > 0 {
        *refuse -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn room_events_are_posted_signed_and_retried() {
    let receiver = Receiver::default();
    *receiver.refuse.lock().await = 1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let server = TestServer::start_with(&format!("[webhook]\nurls = [\"{hook}\"]\n"), &[]).await;
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

//! Webhooks: every room event is POSTed as JSON to each configured URL, signed with
//! `X-Junction-Signature: sha256=<hex HMAC-SHA256 of the body, keyed with the API key>`, and
//! retried with exponential back-off. Each URL has its own worker and bounded queue, so a slow
//! or dead receiver delays only itself and never the engine; a queue that overflows drops the
//! event with a warning.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use junction_endpoint::{Engine, EngineEvent};
use sha2::Sha256;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::WebhookConfig;

const QUEUE_PER_URL: usize = 1024;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// One serialised event, ready to send.
#[derive(Clone)]
struct Delivery {
    id: String,
    name: &'static str,
    body: Bytes,
}

/// The signature header's value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Starts delivering the engine's events to the configured URLs until `shutdown`.
pub fn start(engine: &Engine, config: &WebhookConfig, secret: &str, shutdown: CancellationToken) -> anyhow::Result<()> {
    if config.urls.is_empty() {
        return Ok(());
    }
    let client = reqwest::Client::builder().timeout(Duration::from_millis(config.timeout_ms)).build()?;
    let mut workers = Vec::new();
    for url in &config.urls {
        let (tx, rx) = mpsc::channel(QUEUE_PER_URL);
        workers.push((url.clone(), tx));
        let worker = Worker {
            client: client.clone(),
            url: url.clone(),
            secret: secret.as_bytes().to_vec(),
            max_attempts: config.max_attempts,
        };
        tokio::spawn(worker.run(rx, shutdown.clone()));
    }
    tokio::spawn(fan_out(engine.subscribe_events(), workers, shutdown));
    Ok(())
}

async fn fan_out(
    mut events: broadcast::Receiver<EngineEvent>,
    workers: Vec<(String, mpsc::Sender<Delivery>)>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(lost)) => {
                warn!(lost, "webhooks fell behind the event stream; events lost");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let body = match serde_json::to_vec(&event) {
            Ok(body) => Bytes::from(body),
            Err(err) => {
                warn!("cannot serialise room event: {err}");
                continue;
            }
        };
        let delivery = Delivery { id: event.id.clone(), name: event.event.name(), body };
        for (url, tx) in &workers {
            if tx.try_send(delivery.clone()).is_err() {
                warn!(url, event = delivery.name, "webhook queue full; event dropped");
            }
        }
    }
}

struct Worker {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
    max_attempts: u32,
}

impl Worker {
    async fn run(self, mut queue: mpsc::Receiver<Delivery>, shutdown: CancellationToken) {
        loop {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = queue.recv() => match next { Some(d) => d, None => return },
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.deliver(&delivery) => {}
            }
        }
    }

    async fn deliver(&self, delivery: &Delivery) {
        let signature = signature(&self.secret, &delivery.body);
        let mut backoff = FIRST_RETRY;
        for attempt in 1..=self.max_attempts {
            let result = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .header("x-junction-signature", &signature)
                .header("x-junction-event", delivery.name)
                .header("x-junction-delivery", &delivery.id)
                .header("x-junction-attempt", attempt.to_string())
                .body(delivery.body.clone())
                .send()
                .await;
            let failure = match result {
                Ok(response) if response.status().is_success() => {
                    debug!(url = %self.url, event = delivery.name, attempt, "webhook delivered");
                    metrics::counter!("junction_webhooks_delivered_total").increment(1);
                    return;
                }
                Ok(response) => format!("HTTP {}", response.status()),
                Err(err) => err.to_string(),
            };
            if attempt == self.max_attempts {
                warn!(url = %self.url, event = delivery.name, attempts = attempt, "webhook given up: {failure}");
                metrics::counter!("junction_webhooks_failed_total").increment(1);
                return;
            }
            debug!(url = %self.url, event = delivery.name, attempt, "webhook failed, retrying: {failure}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}

//! Webhooks: every room event is POSTed as JSON to each configured URL, signed with
//! `X-Junction-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` keyed with
//! `webhook.secret` (never an API key), and retried with exponential back-off. Each URL has its
//! own worker and bounded queue, so a slow or dead receiver delays only itself and never the
//! engine; a queue that overflows drops the event with a warning.
//!
//! On shutdown the server closes its rooms first and then calls [`Webhooks::drain`]: the events
//! emitted so far are queued and every delivery in flight or queued gets `webhook.shutdown_grace_s`
//! to finish before the process exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use junction_engine::{Engine, EngineEvent};
use sha2::Sha256;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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

/// The signature header's value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The running webhook workers; [`Webhooks::drain`] finishes them.
pub struct Webhooks {
    /// Cancelled when no more events will be taken from the engine.
    finish: CancellationToken,
    dispatcher: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    /// Deliveries queued or in flight, all URLs together.
    pending: Arc<AtomicUsize>,
    grace: Duration,
}

/// Starts delivering the engine's events to the configured URLs; `None` when there are none.
pub fn start(engine: &Engine, config: &WebhookConfig, secret: &str) -> anyhow::Result<Option<Webhooks>> {
    if config.urls.is_empty() {
        return Ok(None);
    }
    let client = reqwest::Client::builder().timeout(Duration::from_millis(config.timeout_ms)).build()?;
    let pending = Arc::new(AtomicUsize::new(0));
    let mut queues = Vec::new();
    let mut workers = Vec::new();
    for url in &config.urls {
        let (tx, rx) = mpsc::channel(QUEUE_PER_URL);
        queues.push((url.clone(), tx));
        let worker = Worker {
            client: client.clone(),
            url: url.clone(),
            secret: secret.as_bytes().to_vec(),
            max_attempts: config.max_attempts,
            pending: pending.clone(),
        };
        workers.push(tokio::spawn(worker.run(rx)));
    }
    let finish = CancellationToken::new();
    let dispatcher = tokio::spawn(fan_out(engine.subscribe_events(), queues, pending.clone(), finish.clone()));
    let grace = Duration::from_secs(config.shutdown_grace_s);
    Ok(Some(Webhooks { finish, dispatcher, workers, pending, grace }))
}

impl Webhooks {
    /// Takes the events emitted so far, then waits up to the grace period for every queued and
    /// in-flight delivery to finish. Deliveries still pending after it are dropped, with a warning.
    pub async fn drain(mut self) {
        self.finish.cancel();
        let queued = self.pending.load(Ordering::Relaxed);
        info!(queued, grace_s = self.grace.as_secs(), "delivering the remaining webhooks");
        let all = async {
            let _ = (&mut self.dispatcher).await;
            for worker in self.workers.iter_mut() {
                let _ = worker.await;
            }
        };
        if tokio::time::timeout(self.grace, all).await.is_ok() {
            info!("webhooks delivered");
            return;
        }
        let lost = self.pending.load(Ordering::Relaxed);
        warn!(lost, grace_s = self.grace.as_secs(), "webhook deliveries not finished within the grace period; dropped");
        metrics::counter!("junction_webhooks_failed_total").increment(lost as u64);
        self.dispatcher.abort();
        for worker in &self.workers {
            worker.abort();
        }
    }
}

/// Serialises each engine event and queues it for every URL. Until `finish`, a full queue drops
/// the event (the engine is never held up); after it, the events already emitted are queued
/// waiting for room, and then the queues close so the workers end once they are empty.
async fn fan_out(
    mut events: broadcast::Receiver<EngineEvent>,
    queues: Vec<(String, mpsc::Sender<Delivery>)>,
    pending: Arc<AtomicUsize>,
    finish: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            biased;
            _ = finish.cancelled() => break,
            event = events.recv() => event,
        };
        match event {
            Ok(event) => {
                let Some(delivery) = serialise(&event) else { continue };
                for (url, tx) in &queues {
                    pending.fetch_add(1, Ordering::Relaxed);
                    if tx.try_send(delivery.clone()).is_err() {
                        pending.fetch_sub(1, Ordering::Relaxed);
                        warn!(url, event = delivery.name, "webhook queue full; event dropped");
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(lost)) => {
                warn!(lost, "webhooks fell behind the event stream; events lost");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
    // Shutting down: what the engine emitted up to now (rooms closed, peers gone) still goes out.
    loop {
        let event = match events.try_recv() {
            Ok(event) => event,
            Err(broadcast::error::TryRecvError::Lagged(lost)) => {
                warn!(lost, "webhooks fell behind the event stream; events lost");
                continue;
            }
            Err(_) => return,
        };
        let Some(delivery) = serialise(&event) else { continue };
        for (_, tx) in &queues {
            pending.fetch_add(1, Ordering::Relaxed);
            if tx.send(delivery.clone()).await.is_err() {
                pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

fn serialise(event: &EngineEvent) -> Option<Delivery> {
    match serde_json::to_vec(event) {
        Ok(body) => Some(Delivery { id: event.id.clone(), name: event.event.name(), body: Bytes::from(body) }),
        Err(err) => {
            warn!("cannot serialise room event: {err}");
            None
        }
    }
}

struct Worker {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
    max_attempts: u32,
    pending: Arc<AtomicUsize>,
}

impl Worker {
    /// Delivers queued events one by one until the queue is closed and empty.
    async fn run(self, mut queue: mpsc::Receiver<Delivery>) {
        while let Some(delivery) = queue.recv().await {
            self.deliver(&delivery).await;
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn deliver(&self, delivery: &Delivery) {
        let mut backoff = FIRST_RETRY;
        for attempt in 1..=self.max_attempts {
            // Signed at each attempt, so a retry carries a fresh timestamp.
            let signature = signature(&self.secret, unix_now(), &delivery.body);
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

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Known answer computed independently (Python's hmac module).
        let sig = signature(b"whsec_test_0123456789", 1_700_000_000, br#"{"event":"room_started"}"#);
        assert_eq!(sig, "t=1700000000,v1=c194c46d13b1a776e4916c80980bfd8b02eef69c3bb858947634fea746493100");
        let later = signature(b"whsec_test_0123456789", 1_700_000_001, br#"{"event":"room_started"}"#);
        assert_ne!(later[14..], sig[14..], "the timestamp is signed");
    }
}

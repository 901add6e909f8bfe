//! Webhooks: every room event is POSTed as JSON to each configured URL, signed with
//! `X-Junction-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` keyed with
//! `webhook.secret` (never an API key), and retried with exponential back-off. Each URL has its
//! own worker and bounded queue, so a slow or dead receiver delays only itself and never the
//! engine; a queue that overflows drops the event with a warning.
//!
//! On shutdown the server closes its rooms first and then calls [`Webhooks::drain`]: the events
//! emitted so far are queued and every delivery in flight or queued gets `webhook.shutdown_grace_s`
//! to finish before the process exits.
//!
//! Every queued delivery is also kept in the state store (scoped by the node that queued it)
//! until it is delivered or given up, so deliveries a crash, a kill or the end of the grace
//! period cut short are made after the next start, before new events. In a cluster, the node
//! that claims a dead node's loss takes over its pending deliveries, and a room's start and end
//! are delivered by one node even when two opened it at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use junction_engine::{Engine, EngineEvent};
use junction_store::{Kind, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use junction_cluster::Cluster;

use crate::config::WebhookConfig;

const QUEUE_PER_URL: usize = 1024;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// One serialised event, ready to send.
#[derive(Clone)]
struct Delivery {
    id: String,
    name: Arc<str>,
    body: Bytes,
}

/// A delivery to one URL as kept in the state store until it is made.
#[derive(Serialize, Deserialize)]
struct StoredDelivery {
    url: String,
    id: String,
    event: String,
    body: String,
}

impl StoredDelivery {
    /// (URL, the delivery to make there).
    fn into_delivery(self) -> (String, Delivery) {
        let delivery = Delivery { id: self.id, name: Arc::from(self.event.as_str()), body: Bytes::from(self.body) };
        (self.url, delivery)
    }
}

/// The store's id of `delivery` to `url`: unique per event and receiver.
fn stored_id(url: &str, delivery: &Delivery) -> String {
    let digest = Sha256::digest(url.as_bytes());
    format!("{}:{}", delivery.id, hex::encode(&digest[..6]))
}

/// Keeps a queued delivery in the store until it is made or given up.
#[derive(Clone)]
struct Ledger {
    store: Store,
    /// The node that queued it (empty on a single node).
    node: Arc<str>,
}

impl Ledger {
    async fn keep(&self, url: &str, delivery: &Delivery) {
        let stored = StoredDelivery {
            url: url.to_owned(),
            id: delivery.id.clone(),
            event: delivery.name.to_string(),
            body: String::from_utf8_lossy(&delivery.body).into_owned(),
        };
        if let Err(err) = self.store.put(Kind::WebhookDelivery, &stored_id(url, delivery), &self.node, &stored).await {
            warn!(url, event = %delivery.name, "webhook delivery not kept in the state store: {err}");
        }
    }

    async fn done(&self, url: &str, delivery: &Delivery) {
        if let Err(err) = self.store.remove(Kind::WebhookDelivery, &stored_id(url, delivery)).await {
            warn!(url, event = %delivery.name, "finished webhook delivery not removed from the state store: {err}");
        }
    }

    /// The deliveries a dead node left pending to URLs this node delivers to, taken over: kept
    /// again under this node's scope, returned for queueing. (One it had sent but not yet
    /// marked done goes out twice: webhooks are delivered at least once.)
    async fn adopt(&self, node: &str, urls: &[String]) -> Vec<(String, Delivery)> {
        let stored: Vec<StoredDelivery> = match self.store.list(Kind::WebhookDelivery, Some(node)).await {
            Ok(stored) => stored,
            Err(err) => {
                warn!(node, "a lost node's webhook deliveries not loaded from the state store: {err}");
                return Vec::new();
            }
        };
        let mut adopted = Vec::new();
        for (url, delivery) in stored.into_iter().filter(|s| urls.contains(&s.url)).map(StoredDelivery::into_delivery) {
            self.keep(&url, &delivery).await;
            adopted.push((url, delivery));
        }
        adopted
    }

    /// Deliveries this node queued before it last stopped, per URL still configured; those to
    /// URLs no longer configured are dropped.
    async fn pending(&self, urls: &[String]) -> Vec<(String, Delivery)> {
        let stored: Vec<StoredDelivery> = match self.store.list(Kind::WebhookDelivery, Some(&self.node)).await {
            Ok(stored) => stored,
            Err(err) => {
                warn!("pending webhook deliveries not loaded from the state store: {err}");
                return Vec::new();
            }
        };
        let mut pending = Vec::new();
        for (url, delivery) in stored.into_iter().map(StoredDelivery::into_delivery) {
            if urls.contains(&url) {
                pending.push((url, delivery));
            } else {
                info!(url, event = %delivery.name, "pending webhook to a URL no longer configured; dropped");
                self.done(&url, &delivery).await;
            }
        }
        pending
    }
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

/// Starts delivering the engine's events to the configured URLs, after the deliveries left
/// pending by the previous run; `None` when no URL is configured.
pub async fn start(
    engine: &Engine,
    config: &WebhookConfig,
    secret: &str,
    store: &Store,
    cluster: Option<&Cluster>,
) -> anyhow::Result<Option<Webhooks>> {
    let node = cluster.map(|c| c.node_id()).unwrap_or_default();
    if config.urls.is_empty() {
        return Ok(None);
    }
    let ledger = Ledger { store: store.clone(), node: Arc::from(node) };
    // Subscribed before the pending ones are queued, so no event falls between the two.
    let events = engine.subscribe_events();
    let pending_before = ledger.pending(&config.urls).await;
    let client = reqwest::Client::builder().timeout(Duration::from_millis(config.timeout_ms)).build()?;
    let pending = Arc::new(AtomicUsize::new(0));
    let mut queues = Queues { senders: Vec::new(), pending: pending.clone() };
    let mut workers = Vec::new();
    for url in &config.urls {
        let (tx, rx) = mpsc::channel(QUEUE_PER_URL);
        queues.senders.push((url.clone(), tx));
        let worker = Worker {
            client: client.clone(),
            url: url.clone(),
            secret: secret.as_bytes().to_vec(),
            max_attempts: config.max_attempts,
            pending: pending.clone(),
            ledger: ledger.clone(),
        };
        workers.push(tokio::spawn(worker.run(rx)));
    }
    if !pending_before.is_empty() {
        info!(deliveries = pending_before.len(), "delivering webhooks left pending by the last run");
    }
    queues.offer_stored(pending_before);
    let finish = CancellationToken::new();
    let source = Source { events, cluster: cluster.cloned(), lost: cluster.map(Cluster::lost_nodes) };
    let dispatcher = tokio::spawn(fan_out(source, queues, finish.clone(), ledger));
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

/// The per-URL queues of the workers, and the count of deliveries queued or in flight (a
/// worker takes one off when it is done).
struct Queues {
    senders: Vec<(String, mpsc::Sender<Delivery>)>,
    pending: Arc<AtomicUsize>,
}

impl Queues {
    fn urls(&self) -> Vec<String> {
        self.senders.iter().map(|(url, _)| url.clone()).collect()
    }

    /// Queues `delivery` on one URL's queue without waiting; false when it is full.
    fn offer(&self, tx: &mpsc::Sender<Delivery>, delivery: Delivery) -> bool {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let queued = tx.try_send(delivery).is_ok();
        if !queued {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        queued
    }

    /// Queues `delivery` on one URL's queue, waiting for room (at shutdown, when nothing else
    /// comes).
    async fn queue(&self, tx: &mpsc::Sender<Delivery>, delivery: Delivery) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        if tx.send(delivery).await.is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Queues deliveries taken from the store (left pending by the last run, or by a lost
    /// node); one that finds its queue full stays stored for the next start.
    fn offer_stored(&self, stored: Vec<(String, Delivery)>) {
        for (url, delivery) in stored {
            let Some((_, tx)) = self.senders.iter().find(|(u, _)| *u == url) else { continue };
            if !self.offer(tx, delivery) {
                warn!(url, "webhook queue full; stored deliveries wait for the next start");
            }
        }
    }
}

/// Where the dispatcher's work comes from: the engine's events and, in a cluster, the nodes
/// whose pending deliveries this node takes over; the cluster also says which node reports a
/// room's start and end.
struct Source {
    events: broadcast::Receiver<EngineEvent>,
    cluster: Option<Cluster>,
    lost: Option<broadcast::Receiver<String>>,
}

/// The next node whose deliveries to take over (never, outside a cluster).
async fn lost_node(lost: &mut Option<broadcast::Receiver<String>>) -> Option<String> {
    match lost.as_mut() {
        Some(lost) => lost.recv().await.ok(),
        None => std::future::pending().await,
    }
}

impl Source {
    /// `event` ready to send, unless another node reports it (see [`Cluster::should_report`]).
    async fn delivery(&self, event: &EngineEvent) -> Option<Delivery> {
        if let Some(cluster) = &self.cluster
            && !cluster.should_report(&event.event).await
        {
            return None;
        }
        serialise(event)
    }
}

/// Serialises each engine event and queues it for every URL. Until `finish`, a full queue drops
/// the event (the engine is never held up); after it, the events already emitted are queued
/// waiting for room, and then the queues close so the workers end once they are empty.
async fn fan_out(mut source: Source, queues: Queues, finish: CancellationToken, ledger: Ledger) {
    let urls = queues.urls();
    loop {
        let event = tokio::select! {
            biased;
            _ = finish.cancelled() => break,
            Some(node) = lost_node(&mut source.lost) => {
                let adopted = ledger.adopt(&node, &urls).await;
                info!(node, deliveries = adopted.len(), "taking over the webhook deliveries of a lost node");
                queues.offer_stored(adopted);
                continue;
            }
            event = source.events.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(lost)) => {
                warn!(lost, "webhooks fell behind the event stream; events lost");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(delivery) = source.delivery(&event).await else { continue };
        for (url, tx) in &queues.senders {
            // Kept before it is queued, so the worker's removal always comes after.
            ledger.keep(url, &delivery).await;
            if !queues.offer(tx, delivery.clone()) {
                warn!(url, event = %delivery.name, "webhook queue full; event dropped");
                ledger.done(url, &delivery).await;
            }
        }
    }
    // Shutting down: what the engine emitted up to now (rooms closed, peers gone) still goes out.
    loop {
        let event = match source.events.try_recv() {
            Ok(event) => event,
            Err(broadcast::error::TryRecvError::Lagged(lost)) => {
                warn!(lost, "webhooks fell behind the event stream; events lost");
                continue;
            }
            Err(_) => return,
        };
        let Some(delivery) = source.delivery(&event).await else { continue };
        for (url, tx) in &queues.senders {
            ledger.keep(url, &delivery).await;
            queues.queue(tx, delivery.clone()).await;
        }
    }
}

fn serialise(event: &EngineEvent) -> Option<Delivery> {
    match serde_json::to_vec(event) {
        Ok(body) => {
            Some(Delivery { id: event.id.clone(), name: Arc::from(event.event.name()), body: Bytes::from(body) })
        }
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
    ledger: Ledger,
}

impl Worker {
    /// Delivers queued events one by one until the queue is closed and empty.
    async fn run(self, mut queue: mpsc::Receiver<Delivery>) {
        while let Some(delivery) = queue.recv().await {
            self.deliver(&delivery).await;
            self.ledger.done(&self.url, &delivery).await;
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
                .header("x-junction-event", &*delivery.name)
                .header("x-junction-delivery", &delivery.id)
                .header("x-junction-attempt", attempt.to_string())
                .body(delivery.body.clone())
                .send()
                .await;
            let failure = match result {
                Ok(response) if response.status().is_success() => {
                    debug!(url = %self.url, event = %delivery.name, attempt, "webhook delivered");
                    metrics::counter!("junction_webhooks_delivered_total").increment(1);
                    return;
                }
                Ok(response) => format!("HTTP {}", response.status()),
                Err(err) => err.to_string(),
            };
            if attempt == self.max_attempts {
                warn!(url = %self.url, event = %delivery.name, attempts = attempt, "webhook given up: {failure}");
                metrics::counter!("junction_webhooks_failed_total").increment(1);
                return;
            }
            debug!(url = %self.url, event = %delivery.name, attempt, "webhook failed, retrying: {failure}");
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

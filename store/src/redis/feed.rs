//! The change feed: a subscription to `junction:changes` that turns the other nodes' writes
//! into [`Change`]s. When the subscription is lost (Redis restarted, network cut) it
//! resubscribes with back-off and then, once this node's own queued writes are in, asks for a
//! [`Change::Resync`]: whatever was published meanwhile is gone. A Redis that came back empty
//! (restarted without persistence, flushed) first gets every record this node knows written
//! back from its [`Mirror`], so one Redis losing its data does not wipe the cluster's state.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::PubSubStream;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::mirror::Mirror;
use super::outbox::Outbox;
use super::{CHANNEL, Link, Published};
use crate::{Change, Record, StoreError};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Subscribes (so nothing written after the caller's first load is missed) and keeps the
/// subscription up for the life of the process.
pub(crate) async fn start(
    client: redis::Client,
    link: Link,
    outbox: Arc<Outbox>,
    mirror: Arc<Mirror>,
    changes: broadcast::Sender<Change>,
) -> Result<(), StoreError> {
    let stream = subscribe(&client, &link).await?;
    tokio::spawn(run(client, link, outbox, mirror, changes, stream));
    Ok(())
}

async fn subscribe(client: &redis::Client, link: &Link) -> Result<PubSubStream, StoreError> {
    let mut pubsub = link.timed(client.get_async_pubsub()).await?;
    link.timed(pubsub.subscribe(CHANNEL)).await?;
    Ok(pubsub.into_on_message())
}

async fn run(
    client: redis::Client,
    link: Link,
    outbox: Arc<Outbox>,
    mirror: Arc<Mirror>,
    changes: broadcast::Sender<Change>,
    mut stream: PubSubStream,
) {
    loop {
        while let Some(message) = stream.next().await {
            if let Some(change) = decode(&link, message.get_payload_bytes()) {
                mirror.learn(&change);
                // Nobody listening is fine.
                let _ = changes.send(change);
            }
        }
        warn!("lost the Redis change feed; resubscribing");
        let mut backoff = FIRST_RETRY;
        stream = loop {
            match subscribe(&client, &link).await {
                Ok(stream) => break stream,
                Err(err) => {
                    debug!(retry_in_ms = backoff.as_millis() as u64, "Redis change feed: {err}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RETRY);
                }
            }
        };
        outbox.wait_empty().await;
        match schema_after_outage(&client, &link).await {
            Ok(super::schema::Found::Empty) => {
                let known = mirror.ops();
                warn!(
                    records = known.len(),
                    "Redis came back without Junction's state (restarted without persistence, or flushed): writing back what this node knows"
                );
                for op in known {
                    outbox.push(op);
                }
                outbox.wait_empty().await;
            }
            Ok(super::schema::Found::Layout) => {}
            Err(err) => warn!("Redis schema check after reconnecting: {err}"),
        }
        info!("Redis change feed back; resynchronising state");
        let _ = changes.send(Change::Resync);
    }
}

/// What Redis holds after an outage, asked on a fresh connection (the pooled one may still be
/// reconnecting), a few times if Redis is not answering yet.
async fn schema_after_outage(client: &redis::Client, link: &Link) -> Result<super::schema::Found, StoreError> {
    let mut backoff = FIRST_RETRY;
    let mut attempts = 0;
    loop {
        let checked = match link.timed(client.get_multiplexed_async_connection()).await {
            Ok(mut conn) => super::schema::migrate_on(link, &mut conn).await,
            Err(err) => Err(err),
        };
        match checked {
            Err(err) if attempts < 5 => {
                tracing::debug!("Redis schema check after reconnecting, retrying: {err}");
                attempts += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RETRY);
            }
            found => return found,
        }
    }
}

/// A published write of another node as a [`Change`]; this node's own are skipped.
fn decode(link: &Link, payload: &[u8]) -> Option<Change> {
    let published: Published = match serde_json::from_slice(payload) {
        Ok(published) => published,
        Err(err) => {
            warn!("unreadable message on {CHANNEL}: {err}");
            return None;
        }
    };
    if *published.origin == *link.origin {
        return None;
    }
    Some(match published.record {
        Some(envelope) => Change::Put {
            kind: published.kind,
            record: Record { id: published.id, scope: envelope.scope, body: envelope.body },
        },
        None => Change::Removed { kind: published.kind, id: published.id },
    })
}

//! What an operator creates survives a restart: opens the state store (SQLite in `data_dir`, or
//! the cluster's Redis), puts API-created rooms and ingress keys back at start, writes them
//! through on every API change, forgets a room once it ends for good (empty, expired, deleted —
//! not a server shutdown), and applies other nodes' writes in a cluster. SIP trunks and rules are
//! the SIP transport's business (it gets the store in its context); webhook deliveries are
//! `webhook.rs`'s.

use std::path::PathBuf;

use anyhow::Context;
use junction_auth::{Authority, Ingress};
use junction_core::RoomInfo;
use junction_engine::{Engine, RoomAdminError, RoomEndReason, RoomEvent};
use junction_store::{Change, Kind, Location, Store};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;

/// Where the state lives: the cluster's Redis when there is one, else SQLite in `data_dir`
/// (`data_dir = ""`: in memory, nothing kept).
pub fn location(config: &Config) -> Location {
    match (&config.cluster.redis_url, config.data_dir()) {
        (Some(url), _) => Location::Redis { url: url.clone() },
        (None, Some(dir)) => Location::Sqlite { data_dir: dir },
        (None, None) => Location::Memory,
    }
}

pub async fn open(config: &Config) -> anyhow::Result<Store> {
    let location = location(config);
    let store = Store::open(location.clone()).await.with_context(|| match location {
        Location::Sqlite { data_dir } => format!("opening the state store in {} (data_dir)", data_dir.display()),
        Location::Redis { .. } => "opening the state store in Redis (cluster.redis_url)".to_owned(),
        Location::Memory => "opening the in-memory state store".to_owned(),
    })?;
    info!(store = store.description(), "state store open");
    Ok(store)
}

/// Puts the stored rooms and ingress keys back. A room that already exists (another node of
/// the cluster made it) is left as it is.
pub async fn restore(store: &Store, engine: &Engine, authority: &Authority) -> anyhow::Result<()> {
    // Kept as the API answered when it was created (its settings; the live figures are stale).
    let rooms: Vec<RoomInfo> = store.list(Kind::Room, None).await.context("loading rooms from the state store")?;
    let mut restored = 0usize;
    for room in &rooms {
        match engine.create_room(Some(room.name.clone()), room.options()) {
            Ok(_) => restored += 1,
            Err(RoomAdminError::RoomExists { .. }) => {}
            Err(err) => warn!(room = %room.name, "stored room not restored: {err}"),
        }
    }
    let ingress: Vec<Ingress> =
        store.list(Kind::Ingress, None).await.context("loading ingress keys from the state store")?;
    let keys = ingress.len();
    for ingress in ingress {
        authority.ingress().restore(ingress);
    }
    info!(rooms = restored, ingress = keys, "state restored");
    Ok(())
}

/// Keeps the store in step with the engine and with other nodes until shutdown: rooms that end
/// for good are forgotten; other nodes' ingress writes are applied here.
pub fn follow(store: Store, engine: Engine, authority: Authority, shutdown: CancellationToken) {
    let events = engine.subscribe_events();
    let changes = store.changes();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = forget_ended_rooms(&store, events) => {}
            _ = apply_changes(&store, &authority, changes) => {}
        }
    });
}

async fn forget_ended_rooms(store: &Store, mut events: broadcast::Receiver<junction_engine::EngineEvent>) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let RoomEvent::RoomFinished { room, reason } = &event.event
            && !matches!(reason, RoomEndReason::ServerShutdown)
            && let Err(err) = store.remove(Kind::Room, room.as_str()).await
        {
            warn!(%room, "ended room not removed from the state store: {err}");
        }
    }
}

async fn apply_changes(store: &Store, authority: &Authority, mut changes: broadcast::Receiver<Change>) {
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            Err(broadcast::error::RecvError::Lagged(_)) => Change::Resync,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        match change {
            Change::Put { kind: Kind::Ingress, record } => {
                if let Some(ingress) = junction_store::decode::<Ingress>(Kind::Ingress, &record) {
                    authority.ingress().restore(ingress);
                }
            }
            Change::Removed { kind: Kind::Ingress, id } => {
                authority.ingress().delete(&id);
            }
            Change::Resync => match store.list::<Ingress>(Kind::Ingress, None).await {
                Ok(stored) => authority.ingress().replace_all(stored),
                Err(err) => warn!("ingress keys not resynchronised: {err}"),
            },
            Change::Put { .. } | Change::Removed { .. } => {}
        }
    }
}

/// The default `data_dir`.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("./junction-data")
}

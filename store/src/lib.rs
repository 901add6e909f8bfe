//! junction-store: durable state for everything an operator creates — API-created rooms and
//! their settings, ingress stream keys, SIP trunks and dispatch rules, the webhook delivery
//! queue — behind one small interface. A record is a JSON document of a
//! [`Kind`] under an id, with a scope (the node of a webhook delivery; empty for the rest). Two backends: embedded SQLite in `data_dir` ([`sqlite`], the default)
//! and Redis when the server runs in a cluster ([`redis`]).
//!
//! The store knows no trunk, stream key or room: the server serialises its own types into it,
//! keeps the in-memory structures the transports read, writes through on every API change and
//! loads everything back at start. In a cluster, [`Store::changes`] carries the writes other
//! nodes made, so each node can apply them to its own memory.

mod kind;
pub mod redis;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tracing::warn;

pub use kind::Kind;

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `<data_dir>/junction.db`, created with its directory when missing.
    Sqlite { data_dir: PathBuf },
    /// An SQLite database in memory: nothing survives the process (`data_dir = ""`).
    Memory,
    /// A Redis server shared by the nodes of a cluster (`cluster.redis_url`).
    Redis { url: String },
}

/// One stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    /// The node of a webhook delivery; empty for records every node shares.
    pub scope: String,
    /// The JSON document.
    pub body: String,
}

/// How far a write got before the call returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// In the backend: committed to SQLite's write-ahead log, or acknowledged by Redis.
    Durable,
    /// Redis was unreachable: the write is queued in this process and retried with back-off
    /// until Redis answers again; a later write of the same record is applied after it.
    Deferred,
}

/// A write another node made (Redis only; SQLite has no other writers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put {
        kind: Kind,
        record: Record,
    },
    Removed {
        kind: Kind,
        id: String,
    },
    /// Changes may have been missed (Redis was away): reload every kind.
    Resync,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the data directory {path}: {source} (set data_dir to a writable directory, or to \"\" to keep state in memory only)"
    )]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("the data directory {path} is in use by another junction process (its lock file is held)")]
    Locked { path: PathBuf },
    #[error("SQLite database {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("Redis at {url}: {source}")]
    Redis { url: String, source: ::redis::RedisError },
    #[error("Redis at {url} did not answer within {seconds} s")]
    RedisTimeout { url: String, seconds: u64 },
    #[error(
        "the {backend} store has schema version {found}, newer than this build knows ({known}): refusing to use it (run the newer junction, or restore an older backup)"
    )]
    NewerSchema { backend: &'static str, found: u32, known: u32 },
    #[error("{kind} record {id:?} cannot be encoded: {source}")]
    Encode { kind: Kind, id: String, source: serde_json::Error },
    #[error("the store's worker stopped: {0}")]
    Worker(String),
}

/// The backends' common shape.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync {
    async fn put(&self, kind: Kind, record: Record) -> Result<Written, StoreError>;
    async fn remove(&self, kind: Kind, id: String) -> Result<Written, StoreError>;
    /// Every record of `kind`, or only those of `scope`.
    async fn list(&self, kind: Kind, scope: Option<String>) -> Result<Vec<Record>, StoreError>;
}

/// The state store. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    changes: broadcast::Sender<Change>,
    description: Arc<str>,
}

/// Changes queued for a slow reader of [`Store::changes`] before it must resync.
const CHANGE_BACKLOG: usize = 1024;

impl Store {
    /// Opens the store, creating and migrating its schema as needed. For Redis this connects
    /// (the server refuses to start without its store) and starts the change feed.
    pub async fn open(location: Location) -> Result<Store, StoreError> {
        let (changes, _) = broadcast::channel(CHANGE_BACKLOG);
        let (backend, description): (Arc<dyn Backend>, String) = match &location {
            Location::Sqlite { data_dir } => {
                let db = sqlite::SqliteBackend::open_dir(data_dir).await?;
                (Arc::new(db), format!("sqlite {}", data_dir.join(sqlite::DB_FILE).display()))
            }
            Location::Memory => (Arc::new(sqlite::SqliteBackend::open_memory().await?), "memory (not kept)".into()),
            Location::Redis { url } => {
                let backend = redis::RedisBackend::connect(url, changes.clone()).await?;
                (Arc::new(backend), format!("redis {}", redis::redact(url)))
            }
        };
        Ok(Store { backend, changes, description: description.into() })
    }

    /// What the store is, for the start-up log: `sqlite ./junction-data/junction.db`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Creates or replaces the record `kind`/`id`.
    pub async fn put<T: Serialize>(&self, kind: Kind, id: &str, scope: &str, value: &T) -> Result<Written, StoreError> {
        let body = serde_json::to_string(value).map_err(|source| StoreError::Encode { kind, id: id.into(), source })?;
        self.backend.put(kind, Record { id: id.into(), scope: scope.into(), body }).await
    }

    /// Removes the record `kind`/`id`; removing one that does not exist is not an error.
    pub async fn remove(&self, kind: Kind, id: &str) -> Result<Written, StoreError> {
        self.backend.remove(kind, id.into()).await
    }

    /// Every record of `kind` (of `scope` only, if given), decoded as `T`. A record that does
    /// not decode is left out with a warning: one bad document must not keep the server down.
    pub async fn list<T: DeserializeOwned>(&self, kind: Kind, scope: Option<&str>) -> Result<Vec<T>, StoreError> {
        let records = self.list_records(kind, scope).await?;
        Ok(records.iter().filter_map(|record| decode(kind, record)).collect())
    }

    /// Every record of `kind` as stored.
    pub async fn list_records(&self, kind: Kind, scope: Option<&str>) -> Result<Vec<Record>, StoreError> {
        self.backend.list(kind, scope.map(str::to_owned)).await
    }

    /// Writes made by other nodes sharing this store (Redis), and resync requests after Redis
    /// was away. Nothing arrives for SQLite.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

/// `record`'s document as `T`, or `None` with a warning.
pub fn decode<T: DeserializeOwned>(kind: Kind, record: &Record) -> Option<T> {
    match serde_json::from_str(&record.body) {
        Ok(value) => Some(value),
        Err(err) => {
            warn!(kind = %kind, id = %record.id, "stored record does not decode; left out: {err}");
            None
        }
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

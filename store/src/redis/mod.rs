//! The cluster backend: the nodes of a cluster share one Redis. Every key starts with
//! `junction:` — `junction:schema_version`, and one hash per kind, `junction:records:<kind>`,
//! mapping a record's id to its [`Envelope`] — and every write is published on
//! `junction:changes` in the same MULTI/EXEC, so the other nodes apply it ([`feed`]).
//!
//! Redis away: a write that cannot reach it is queued in this process ([`outbox`]), retried
//! with back-off, and applied in order once Redis answers; the API call that made it is not
//! failed, and the server's in-memory state already has it. Reads are only made at start and on
//! resync; between them the server answers from memory.

mod feed;
mod mirror;
mod outbox;
mod schema;

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::warn;

use crate::{Backend, Change, Kind, Record, StoreError, Written};

pub use schema::LATEST as SCHEMA_VERSION;

/// The prefix of every key and channel.
pub const PREFIX: &str = "junction:";
const CHANNEL: &str = "junction:changes";
/// How long one command may take before Redis counts as away.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

fn records_key(kind: Kind) -> String {
    format!("{PREFIX}records:{}", kind.as_str())
}

/// A record as stored in its kind's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    #[serde(default)]
    scope: String,
    body: String,
}

/// A write as published on [`CHANNEL`]. `record` is `None` for a removal.
#[derive(Debug, Serialize, Deserialize)]
struct Published {
    origin: String,
    kind: Kind,
    id: String,
    record: Option<Envelope>,
}

/// A write, as it is tried and, when Redis is away, queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Put { kind: Kind, record: Record },
    Remove { kind: Kind, id: String },
}

/// The connection and what every write needs.
#[derive(Clone)]
pub(crate) struct Link {
    conn: ConnectionManager,
    /// This process, so it can skip its own writes on the change channel.
    origin: Arc<str>,
    /// The URL without its password, for logs and errors.
    url: Arc<str>,
}

impl Link {
    /// Applies one write and publishes it.
    async fn apply(&self, op: &Op) -> Result<(), StoreError> {
        let (kind, id, envelope) = match op {
            Op::Put { kind, record } => {
                (*kind, &record.id, Some(Envelope { scope: record.scope.clone(), body: record.body.clone() }))
            }
            Op::Remove { kind, id } => (*kind, id, None),
        };
        let encode = |source| StoreError::Encode { kind, id: id.clone(), source };
        let stored = envelope.as_ref().map(serde_json::to_string).transpose().map_err(encode)?;
        let message = Published { origin: self.origin.to_string(), kind, id: id.clone(), record: envelope };
        let message = serde_json::to_string(&message).map_err(encode)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        match stored {
            Some(stored) => pipe.hset(records_key(kind), id, stored).ignore(),
            None => pipe.hdel(records_key(kind), id).ignore(),
        };
        pipe.publish(CHANNEL, message).ignore();
        let mut conn = self.conn.clone();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// Runs a command within [`COMMAND_TIMEOUT`].
    async fn timed<T>(&self, command: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
            Ok(result) => result.map_err(|source| StoreError::Redis { url: self.url.to_string(), source }),
            Err(_) => Err(StoreError::RedisTimeout { url: self.url.to_string(), seconds: COMMAND_TIMEOUT.as_secs() }),
        }
    }
}

/// Whether `err` means Redis could not be reached (the write is worth retrying), rather than
/// that it refused the command.
pub(crate) fn unreachable(err: &StoreError) -> bool {
    match err {
        StoreError::RedisTimeout { .. } => true,
        StoreError::Redis { source, .. } => {
            source.is_io_error()
                || source.is_connection_refusal()
                || source.is_connection_dropped()
                || source.is_timeout()
                || source.is_unrecoverable_error()
        }
        _ => false,
    }
}

pub(crate) struct RedisBackend {
    link: Link,
    outbox: Arc<outbox::Outbox>,
    mirror: Arc<mirror::Mirror>,
}

impl RedisBackend {
    /// Connects, migrates the schema and starts the change feed and the retry worker.
    pub(crate) async fn connect(url: &str, changes: broadcast::Sender<Change>) -> Result<RedisBackend, StoreError> {
        let shown: Arc<str> = redact(url).into();
        let fail = |source| StoreError::Redis { url: shown.to_string(), source };
        let client = redis::Client::open(url).map_err(fail)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn =
            match tokio::time::timeout(COMMAND_TIMEOUT * 2, client.get_connection_manager_with_config(config)).await {
                Ok(conn) => conn.map_err(fail)?,
                Err(_) => {
                    return Err(StoreError::RedisTimeout {
                        url: shown.to_string(),
                        seconds: COMMAND_TIMEOUT.as_secs() * 2,
                    });
                }
            };
        // A random id for this process's writes.
        let origin: Arc<str> = junction_core::ids::random_id("", 16).into();
        let link = Link { conn, origin, url: shown };
        schema::migrate(&link).await?;
        let outbox = outbox::Outbox::start(link.clone());
        let mirror = Arc::new(mirror::Mirror::default());
        feed::start(client, link.clone(), outbox.clone(), mirror.clone(), changes).await?;
        Ok(RedisBackend { link, outbox, mirror })
    }

    /// Applies `op` now, or queues it when Redis is away (or writes are already queued, so
    /// they stay in order).
    async fn write(&self, op: Op) -> Result<Written, StoreError> {
        if !self.outbox.is_empty() {
            self.mirror.wrote(&op);
            self.outbox.push(op);
            return Ok(Written::Deferred);
        }
        match self.link.apply(&op).await {
            Ok(()) => {
                self.mirror.wrote(&op);
                Ok(Written::Durable)
            }
            Err(err) if unreachable(&err) => {
                warn!("state write deferred, Redis is unreachable: {err}");
                self.mirror.wrote(&op);
                self.outbox.push(op);
                Ok(Written::Deferred)
            }
            Err(err) => Err(err),
        }
    }
}

#[async_trait::async_trait]
impl Backend for RedisBackend {
    async fn put(&self, kind: Kind, record: Record) -> Result<Written, StoreError> {
        self.write(Op::Put { kind, record }).await
    }

    async fn remove(&self, kind: Kind, id: String) -> Result<Written, StoreError> {
        self.write(Op::Remove { kind, id }).await
    }

    async fn list(&self, kind: Kind, scope: Option<String>) -> Result<Vec<Record>, StoreError> {
        let mut conn = self.link.conn.clone();
        let all: Vec<(String, String)> = self.link.timed(conn.hgetall(records_key(kind))).await?;
        let mut records: Vec<Record> = all
            .into_iter()
            .filter_map(|(id, stored)| match serde_json::from_str::<Envelope>(&stored) {
                Ok(envelope) => Some(Record { id, scope: envelope.scope, body: envelope.body }),
                Err(err) => {
                    warn!(kind = %kind, id, "stored record is not an envelope; left out: {err}");
                    None
                }
            })
            .filter(|record| scope.as_ref().is_none_or(|s| *s == record.scope))
            .collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        self.mirror.loaded(kind, scope.as_deref(), &records, self.outbox.is_empty());
        Ok(records)
    }
}

/// `redis://user:secret@host:6379/0` -> `redis://user:***@host:6379/0`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_kept_out_of_logs() {
        assert_eq!(redact("redis://:hunter2@10.0.0.1:6379/0"), "redis://:***@10.0.0.1:6379/0");
        assert_eq!(redact("redis://app:hunter2@cache:6379"), "redis://app:***@cache:6379");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}

/// Against a real `redis-server` (Debian's), started on a free port and restarted empty.
#[cfg(test)]
mod redis_server_tests {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use crate::{Change, Kind, Location, Store, Written};

    struct Server {
        child: Child,
    }

    impl Server {
        fn start(port: u16) -> Server {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server (Debian package redis-server)");
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Server { child }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    async fn next_change(changes: &mut tokio::sync::broadcast::Receiver<Change>) -> Change {
        tokio::time::timeout(Duration::from_secs(15), changes.recv()).await.expect("a change in time").expect("open")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_see_each_others_writes_and_refill_a_redis_that_came_back_empty() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = Server::start(port);
        let url = format!("redis://127.0.0.1:{port}/");
        let a = Store::open(Location::Redis { url: url.clone() }).await.unwrap();
        let b = Store::open(Location::Redis { url: url.clone() }).await.unwrap();
        let mut seen_by_b = b.changes();

        assert_eq!(a.put(Kind::Ingress, "IN_1", "", &"key one").await.unwrap(), Written::Durable);
        match next_change(&mut seen_by_b).await {
            Change::Put { kind: Kind::Ingress, record } => {
                assert_eq!((record.id.as_str(), record.body.as_str()), ("IN_1", "\"key one\""))
            }
            other => panic!("expected the put, got {other:?}"),
        }
        assert_eq!(b.list::<String>(Kind::Ingress, None).await.unwrap(), ["key one"]);
        a.remove(Kind::Ingress, "IN_1").await.unwrap();
        assert!(matches!(next_change(&mut seen_by_b).await, Change::Removed { kind: Kind::Ingress, .. }));
        a.put(Kind::SipTrunk, "ST_1", "", &"trunk").await.unwrap();
        assert!(matches!(next_change(&mut seen_by_b).await, Change::Put { kind: Kind::SipTrunk, .. }));

        // Redis goes away: a write is deferred, not failed; Redis comes back empty: what the
        // nodes knew is written back, the deferred write lands, and both resynchronise.
        drop(server);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(a.put(Kind::Ingress, "IN_2", "", &"key two").await.unwrap(), Written::Deferred);
        let _server = Server::start(port);
        loop {
            if matches!(next_change(&mut seen_by_b).await, Change::Resync) {
                break;
            }
        }
        let check = Store::open(Location::Redis { url }).await.unwrap();
        let mut trunks = check.list::<String>(Kind::SipTrunk, None).await.unwrap();
        for _ in 0..50 {
            if !trunks.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            trunks = check.list::<String>(Kind::SipTrunk, None).await.unwrap();
        }
        assert_eq!(trunks, ["trunk"], "written back to the emptied Redis");
        assert_eq!(check.list::<String>(Kind::Ingress, None).await.unwrap(), ["key two"], "the deferred write");
    }
}

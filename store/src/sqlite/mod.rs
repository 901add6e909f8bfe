//! The embedded backend: one SQLite database, `<data_dir>/junction.db`, opened by one process at
//! a time (`<data_dir>/junction.lock` is held while it runs).
//!
//! Durability: the database is in WAL mode with `synchronous = NORMAL`. A write returns once its
//! transaction is appended to the write-ahead log through the OS, so it survives the process
//! being killed (SIGKILL, a crash, OOM) at any point after the API answered; only an OS crash or
//! power cut can lose the last transactions before the next checkpoint, and never corrupts the
//! database. That is the trade of every embedded store that does not fsync per write; the
//! records here are operator actions, a few per second at most.
//!
//! SQLite calls block, so they run on tokio's blocking pool, one at a time on the connection.

mod schema;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, params};

use crate::{Backend, Kind, Record, StoreError, Written, unix_ms};

pub use schema::LATEST as SCHEMA_VERSION;

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "junction.db";
const LOCK_FILE: &str = "junction.lock";

pub(crate) struct SqliteBackend {
    conn: Arc<Mutex<Connection>>,
    /// Shown in errors.
    path: Arc<str>,
    /// Held for as long as the store is open.
    _lock: Option<File>,
}

impl SqliteBackend {
    pub(crate) async fn open_dir(data_dir: &Path) -> Result<SqliteBackend, StoreError> {
        let data_dir = data_dir.to_path_buf();
        blocking(move || {
            let created = !data_dir.exists();
            std::fs::create_dir_all(&data_dir)
                .map_err(|source| StoreError::DataDir { path: data_dir.clone(), source })?;
            // The database holds stream keys and trunk passwords: the server's user only.
            if created {
                owner_only(&data_dir, 0o700)?;
            }
            let lock = lock(&data_dir)?;
            let path = data_dir.join(DB_FILE);
            let conn = Connection::open(&path).map_err(|source| sqlite_error(&path.display().to_string(), source))?;
            owner_only(&path, 0o600)?;
            Self::prepare(conn, &path.display().to_string(), Some(lock))
        })
        .await
    }

    pub(crate) async fn open_memory() -> Result<SqliteBackend, StoreError> {
        blocking(|| {
            let conn = Connection::open_in_memory().map_err(|source| sqlite_error(":memory:", source))?;
            Self::prepare(conn, ":memory:", None)
        })
        .await
    }

    fn prepare(mut conn: Connection, path: &str, lock: Option<File>) -> Result<SqliteBackend, StoreError> {
        let fail = |source| sqlite_error(path, source);
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(fail)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(fail)?;
        schema::migrate(&mut conn, schema::LATEST).map_err(|err| match err {
            schema::MigrationError::Sqlite(source) => sqlite_error(path, source),
            schema::MigrationError::Newer { found, known } => {
                StoreError::NewerSchema { backend: "SQLite", found, known }
            }
        })?;
        Ok(SqliteBackend { conn: Arc::new(Mutex::new(conn)), path: path.into(), _lock: lock })
    }

    /// Runs `f` on the connection, off the async workers.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (conn, path) = (self.conn.clone(), self.path.clone());
        blocking(move || f(&conn.lock()).map_err(|source| sqlite_error(&path, source))).await
    }
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    async fn put(&self, kind: Kind, record: Record) -> Result<Written, StoreError> {
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO records (kind, id, scope, body, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, id) DO UPDATE SET scope = ?3, body = ?4, updated_at_ms = ?5",
                params![kind.as_str(), record.id, record.scope, record.body, unix_ms()],
            )
        })
        .await?;
        Ok(Written::Durable)
    }

    async fn remove(&self, kind: Kind, id: String) -> Result<Written, StoreError> {
        self.with_conn(move |conn| {
            conn.execute("DELETE FROM records WHERE kind = ?1 AND id = ?2", params![kind.as_str(), id])
        })
        .await?;
        Ok(Written::Durable)
    }

    async fn list(&self, kind: Kind, scope: Option<String>) -> Result<Vec<Record>, StoreError> {
        self.with_conn(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, scope, body FROM records WHERE kind = ?1 AND (?2 IS NULL OR scope = ?2)
                 ORDER BY updated_at_ms, id",
            )?;
            let rows = statement.query_map(params![kind.as_str(), scope], |row| {
                Ok(Record { id: row.get(0)?, scope: row.get(1)?, body: row.get(2)? })
            })?;
            rows.collect()
        })
        .await
    }
}

fn owner_only(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| StoreError::DataDir { path: path.to_path_buf(), source })
}

/// Takes `<data_dir>/junction.lock` for this process, or says who has it.
fn lock(data_dir: &Path) -> Result<File, StoreError> {
    let path: PathBuf = data_dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::DataDir { path: path.clone(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path: data_dir.to_path_buf() }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::DataDir { path, source }),
    }
}

fn sqlite_error(path: &str, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: path.to_owned(), source }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|err| StoreError::Worker(err.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_old_schema_is_migrated_and_keeps_its_records() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A database as version 1 left it: no scopes.
            let mut conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            schema::migrate(&mut conn, 1).unwrap();
            conn.execute(
                "INSERT INTO records (kind, id, body, updated_at_ms) VALUES ('sip_trunk', 'ST_1', '{\"name\":\"carrier\"}', 1)",
                [],
            )
            .unwrap();
            assert_eq!(schema::version(&conn).unwrap(), 1);
        }
        let db = SqliteBackend::open_dir(dir.path()).await.unwrap();
        let version = db.with_conn(schema::version).await.unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let trunks = db.list(Kind::SipTrunk, None).await.unwrap();
        assert_eq!(trunks, [Record { id: "ST_1".into(), scope: String::new(), body: "{\"name\":\"carrier\"}".into() }]);
        assert_eq!(db.list(Kind::SipTrunk, Some(String::new())).await.unwrap().len(), 1, "listed by its new scope");
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_and_a_second_process_is_kept_out() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteBackend::open_dir(dir.path()).await.unwrap();
        assert!(matches!(SqliteBackend::open_dir(dir.path()).await, Err(StoreError::Locked { .. })));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(DB_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the database is the server user's only");
        db.with_conn(|conn| conn.execute("UPDATE schema_version SET version = 99", [])).await.unwrap();
        drop(db);
        match SqliteBackend::open_dir(dir.path()).await {
            Err(StoreError::NewerSchema { found: 99, .. }) => {}
            Err(other) => panic!("expected NewerSchema, got {other}"),
            Ok(_) => panic!("expected NewerSchema, the store opened"),
        }
    }
}

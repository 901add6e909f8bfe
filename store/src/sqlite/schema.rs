//! The SQLite schema and its migrations: `schema_version` holds one row, the version the
//! database is at; [`MIGRATIONS`] are applied in order from there, each in the transaction that
//! also records its version, so a crash mid-way leaves the database at the last whole version.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// The schema's history. Append only: a database at version N has had the first N applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: one table of JSON documents, keyed by kind and id.
    "CREATE TABLE records (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        body TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;",
    // 2: scopes — the room of a component, the node of a webhook delivery — and listing by them.
    "ALTER TABLE records ADD COLUMN scope TEXT NOT NULL DEFAULT '';
     CREATE INDEX records_by_scope ON records (kind, scope);",
];

pub const LATEST: u32 = MIGRATIONS.len() as u32;

#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrationError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("schema version {found} is newer than this build knows ({known})")]
    Newer { found: u32, known: u32 },
}

/// The version `conn`'s database is at; 0 for a new one.
pub(crate) fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")?;
    let found: Option<u32> = conn.query_row("SELECT version FROM schema_version", [], |row| row.get(0)).optional()?;
    Ok(found.unwrap_or(0))
}

/// Brings the database to version `target`, returning the version it was at.
pub(crate) fn migrate(conn: &mut Connection, target: u32) -> Result<u32, MigrationError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let from = version(&tx)?;
    if from > LATEST {
        return Err(MigrationError::Newer { found: from, known: LATEST });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().take(target as usize).skip(from as usize) {
        tx.execute_batch(sql)?;
        tracing::info!(version = index + 1, "SQLite store migrated");
    }
    if target > from {
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [target])?;
    }
    tx.commit()?;
    Ok(from)
}

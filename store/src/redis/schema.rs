//! The Redis layout's version (`junction:schema_version`) and its migrations, applied in order
//! at start. Each is idempotent, so nodes starting together may both run one.

use redis::AsyncCommands;
use tracing::info;

use super::{Envelope, Link, PREFIX, records_key};
use crate::{Kind, StoreError};

/// The layout's history: 1, each hash field held a record's bare JSON document; 2, an
/// [`Envelope`] with the record's scope beside its document.
pub const LATEST: u32 = 2;

fn version_key() -> String {
    format!("{PREFIX}schema_version")
}

/// What [`migrate`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// No version key: a Redis that never held Junction's state, or lost it (restarted without
    /// persistence, flushed). It is stamped with [`LATEST`].
    Empty,
    Layout,
}

/// Brings the layout to [`LATEST`]; a new Redis is stamped with it.
pub(crate) async fn migrate(link: &Link) -> Result<Found, StoreError> {
    migrate_on(link, &mut link.conn.clone()).await
}

/// [`migrate`] on a connection of the caller's (after an outage: a fresh one).
pub(crate) async fn migrate_on<C>(link: &Link, conn: &mut C) -> Result<Found, StoreError>
where
    C: redis::aio::ConnectionLike + Send + Sync,
{
    let found: Option<u32> = link.timed(conn.get(version_key())).await?;
    let Some(mut version) = found else {
        link.timed(conn.set::<_, _, ()>(version_key(), LATEST)).await?;
        return Ok(Found::Empty);
    };
    if version > LATEST {
        return Err(StoreError::NewerSchema { backend: "Redis", found: version, known: LATEST });
    }
    while version < LATEST {
        if version == 1 {
            envelope_every_record(link, conn).await?;
        }
        version += 1;
        link.timed(conn.set::<_, _, ()>(version_key(), version)).await?;
        info!(version, "Redis store migrated");
    }
    Ok(Found::Layout)
}

/// 1 -> 2: wraps every bare document in an envelope with an empty scope. A value that already
/// is an envelope (another node got there first) is left as it is.
async fn envelope_every_record<C>(link: &Link, conn: &mut C) -> Result<(), StoreError>
where
    C: redis::aio::ConnectionLike + Send + Sync,
{
    for kind in Kind::ALL {
        let all: Vec<(String, String)> = link.timed(conn.hgetall(records_key(kind))).await?;
        for (id, stored) in all {
            if serde_json::from_str::<Envelope>(&stored).is_ok() {
                continue;
            }
            let wrapped = serde_json::to_string(&Envelope { scope: String::new(), body: stored })
                .map_err(|source| StoreError::Encode { kind, id: id.clone(), source })?;
            link.timed(conn.hset::<_, _, _, ()>(records_key(kind), &id, wrapped)).await?;
        }
    }
    Ok(())
}

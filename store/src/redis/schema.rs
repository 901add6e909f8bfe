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

/// Brings the layout to [`LATEST`]; a new Redis is stamped with it.
pub(crate) async fn migrate(link: &Link) -> Result<(), StoreError> {
    let mut conn = link.conn.clone();
    let found: Option<u32> = link.timed(conn.get(version_key())).await?;
    let Some(mut version) = found else {
        return link.timed(conn.set(version_key(), LATEST)).await;
    };
    if version > LATEST {
        return Err(StoreError::NewerSchema { backend: "Redis", found: version, known: LATEST });
    }
    while version < LATEST {
        if version == 1 {
            envelope_every_record(link).await?;
        }
        version += 1;
        link.timed(conn.set::<_, _, ()>(version_key(), version)).await?;
        info!(version, "Redis store migrated");
    }
    Ok(())
}

/// 1 -> 2: wraps every bare document in an envelope with an empty scope. A value that already
/// is an envelope (another node got there first) is left as it is.
async fn envelope_every_record(link: &Link) -> Result<(), StoreError> {
    let mut conn = link.conn.clone();
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

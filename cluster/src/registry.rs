//! The node registry in Redis: each node's record under `junction:node:{id}` with a TTL it
//! refreshes every heartbeat, and the set `junction:nodes` of ids ever registered. A node whose
//! record expired while it is still in the set is dead; the first survivor to claim
//! `junction:down:{id}:{started_at_ms}` reports its peers' departures, and takes it out of the set.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::node::NodeInfo;

pub(crate) const NODES_SET: &str = "junction:nodes";
/// How long a Redis call may take before it counts as failed (Redis unreachable).
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

pub(crate) fn node_key(id: &str) -> String {
    format!("junction:node:{id}")
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {CALL_TIMEOUT:?}")]
    Timeout,
    #[error("a registry record is not valid JSON: {0}")]
    Record(#[from] serde_json::Error),
}

async fn within<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, RedisError> {
    Ok(tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| RedisError::Timeout)??)
}

/// Commands to the shared Redis (the pub/sub side is [`crate::bus`]).
#[derive(Clone)]
pub(crate) struct Registry {
    conn: ConnectionManager,
}

impl Registry {
    pub async fn connect(client: &redis::Client) -> Result<Registry, RedisError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = within(ConnectionManager::new_with_config(client.clone(), config)).await?;
        Ok(Registry { conn })
    }

    /// Writes this node's record with its TTL.
    pub async fn heartbeat(&self, me: &NodeInfo, ttl: Duration) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let record = serde_json::to_string(me)?;
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(node_key(&me.id)).arg(record).arg("PX").arg(ttl.as_millis() as u64).ignore();
        pipe.sadd(NODES_SET, &me.id).ignore();
        within(pipe.query_async::<()>(&mut conn)).await
    }

    /// Takes this node's record out (a clean shutdown).
    pub async fn deregister(&self, id: &str) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.del(node_key(id)).ignore().srem(NODES_SET, id).ignore();
        within(pipe.query_async::<()>(&mut conn)).await
    }

    /// The live nodes' records, and the ids in the set whose record is gone.
    pub async fn list(&self) -> Result<(HashMap<String, NodeInfo>, Vec<String>), RedisError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = within(conn.smembers(NODES_SET)).await?;
        if ids.is_empty() {
            return Ok((HashMap::new(), Vec::new()));
        }
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let records: Vec<Option<String>> = within(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
        let mut live = HashMap::new();
        let mut gone = Vec::new();
        for (id, record) in ids.into_iter().zip(records) {
            match record.map(|r| serde_json::from_str::<NodeInfo>(&r)) {
                Some(Ok(info)) => {
                    live.insert(id, info);
                }
                Some(Err(err)) => tracing::warn!(node = %id, "unreadable registry record: {err}"),
                None => gone.push(id),
            }
        }
        Ok((live, gone))
    }

    /// Claims a one-time job (`SET key NX PX`): true for the one node that gets it.
    pub async fn claim(&self, key: &str, hold: Duration) -> Result<bool, RedisError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = within(
            redis::cmd("SET").arg(key).arg("1").arg("NX").arg("PX").arg(hold.as_millis() as u64).query_async(&mut conn),
        )
        .await?;
        Ok(set.is_some())
    }

    /// Deletes keys (claims given back).
    pub async fn release(&self, keys: &[String]) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        within(conn.del::<_, ()>(keys)).await
    }

    pub async fn forget(&self, id: &str) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        within(conn.srem::<_, _, ()>(NODES_SET, id)).await
    }

    pub async fn publish(&self, channel: &str, message: String) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        within(conn.publish::<_, _, ()>(channel, message)).await
    }
}

//! `RedisStore`: one multiplexed, self-reconnecting connection per shard, with every call bounded
//! by the persistence timeout so a Redis outage turns into prompt 503s, not hung requests.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::METRICS;

/// Pause before resending a pipeline whose connection dropped (lets the manager reconnect).
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// Why a store call failed. Callers only need to know it did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis call timed out")]
    Timeout,
    #[error("stored record {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
}

impl RedisStore {
    /// Prepares a connection to `url`; it connects on first use (and reconnects by itself), so a
    /// server can start while Redis is down and become ready when it returns. Must be called on
    /// the runtime (arbiter) that will use it.
    pub fn connect_lazy(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(RedisStore { conn, timeout })
    }

    /// Runs `pipe` (atomic if built with `.atomic()`), returning one value per command.
    ///
    /// A pipeline that failed because the connection had dropped (Redis restarted) is sent again
    /// on the fresh connection until the timeout. That is safe for what the shards write: full-record SETs,
    /// SADD/SREM/HSET/HDEL are idempotent, and an XADD with an explicit id that already landed
    /// is refused by Redis, which fails the batch and makes the shard reload.
    pub async fn run(&self, pipe: redis::Pipeline, commands: usize) -> Result<Vec<redis::Value>, StoreError> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.timeout;
        let result = loop {
            let mut conn = self.conn.clone();
            METRICS.persist_round_trips.inc();
            METRICS.persist_commands.inc_by(commands as u64);
            match tokio::time::timeout_at(deadline, pipe.query_async::<Vec<redis::Value>>(&mut conn)).await {
                Ok(Ok(values)) => break Ok(values),
                Ok(Err(e))
                    if (e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal())
                        && tokio::time::Instant::now() + RECONNECT_PAUSE < deadline =>
                {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
                Ok(Err(e)) => break Err(StoreError::Unavailable(e.to_string())),
                Err(_) => break Err(StoreError::Timeout),
            }
        };
        METRICS.persist_seconds.observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            METRICS.persist_errors.inc();
        }
        result
    }

    /// Round trip to Redis (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        self.run(pipe, 1).await.map(|_| ())
    }
}

/// Reads a bulk string value as UTF-8 text (`None` for nil).
pub fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

//! `RedisStore`: one multiplexed, self-reconnecting connection per shard, with every call bounded
//! by the persistence timeout so a Redis outage turns into prompt 503s, not hung requests.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::METRICS;

/// Who may write: the lease key and this node's token in it.
#[derive(Debug, Clone)]
pub struct LeaseToken {
    pub key: String,
    pub token: String,
}

/// What a fenced batch checks: these keys must all hold `token`.
#[derive(Debug, Clone)]
pub struct FenceToken {
    pub keys: Vec<String>,
    pub token: std::sync::Arc<str>,
}

/// A batch as one script: checks that every fence key (`KEYS`: the lease, or the written slots'
/// fence keys in cluster mode) holds this node's token and that no guard key holds another value,
/// then sets the guards and runs each command (`ARGV`: token, guard count, guard key/value pairs,
/// command count, then per command its argument count and arguments). Atomic like MULTI/EXEC,
/// fenced, and all-or-nothing: every check runs before the first write.
static FENCED_BATCH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
for k = 1, #KEYS do
  if redis.call('GET', KEYS[k]) ~= ARGV[1] then
    return redis.error_reply('FENCED this node is not the owner of ' .. KEYS[k])
  end
end
local guards = tonumber(ARGV[2])
for g = 0, guards - 1 do
  local cur = redis.call('GET', ARGV[3 + 2 * g])
  if cur and cur ~= ARGV[4 + 2 * g] then
    return redis.error_reply('DUPLICATE ' .. ARGV[3 + 2 * g] .. ' already holds ' .. cur)
  end
end
for g = 0, guards - 1 do
  redis.call('SET', ARGV[3 + 2 * g], ARGV[4 + 2 * g])
end
local base = 3 + 2 * guards
local out = {}
local i = base + 1
for c = 1, tonumber(ARGV[base]) do
  local argc = tonumber(ARGV[i])
  out[c] = redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
return out
",
    )
});

/// Pause before resending a pipeline whose connection dropped (lets the manager reconnect).
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// Why a store call failed. Callers only need to know it did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis call timed out")]
    Timeout,
    #[error("this node no longer holds the ownership lease; it may not write")]
    Fenced,
    /// A guard key (one active match per pair) already holds another value: the batch would
    /// break an invariant and was refused whole.
    #[error("refused by a uniqueness guard: {0}")]
    Duplicate(String),
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

    /// Runs `call` on the connection, bounded by the timeout.
    ///
    /// A call that failed because the connection had dropped (Redis restarted) is sent again on
    /// the fresh connection until the timeout. That is safe for what the shards write: full-record
    /// SETs, SADD/SREM/HSET/HDEL are idempotent, and an XADD with an explicit id that already landed
    /// is refused by Redis, which fails the batch and makes the shard reload.
    async fn call<T, F, Fut>(&self, commands: usize, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = tokio::time::Instant::now();
        let deadline = started + self.timeout;
        let result = loop {
            METRICS.persist_round_trips.inc();
            METRICS.persist_commands.inc_by(commands as u64);
            match tokio::time::timeout_at(deadline, call(self.conn.clone())).await {
                Ok(Ok(values)) => break Ok(values),
                Ok(Err(e)) if e.code() == Some("FENCED") => break Err(StoreError::Fenced),
                Ok(Err(e)) if e.code() == Some("DUPLICATE") => break Err(StoreError::Duplicate(e.to_string())),
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

    /// Runs `pipe` as sent, returning one value per command.
    pub async fn run(&self, pipe: redis::Pipeline, commands: usize) -> Result<Vec<redis::Value>, StoreError> {
        let pipe = &pipe;
        self.call(commands, |mut conn| async move { pipe.query_async::<Vec<redis::Value>>(&mut conn).await }).await
    }

    /// Runs the commands of `pipe` atomically, and only if every key of `fence` still holds its
    /// token (fencing: a node that lost its lease or slots, say after a pause, cannot write).
    pub async fn run_fenced(
        &self,
        fence: &FenceToken,
        guards: &[(String, String)],
        pipe: redis::Pipeline,
        commands: usize,
    ) -> Result<Vec<redis::Value>, StoreError> {
        let mut argv: Vec<Vec<u8>> = vec![fence.token.as_bytes().to_vec(), guards.len().to_string().into_bytes()];
        for (key, value) in guards {
            argv.push(key.as_bytes().to_vec());
            argv.push(value.as_bytes().to_vec());
        }
        argv.push(commands.to_string().into_bytes());
        for cmd in pipe.cmd_iter() {
            let args: Vec<&[u8]> = cmd
                .args_iter()
                .filter_map(|a| match a {
                    redis::Arg::Simple(bytes) => Some(bytes),
                    _ => None,
                })
                .collect();
            argv.push(args.len().to_string().into_bytes());
            argv.extend(args.into_iter().map(<[u8]>::to_vec));
        }
        let (argv, keys) = (&argv, &fence.keys);
        self.call(commands, |mut conn| async move {
            let mut invocation = FENCED_BATCH.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            for a in argv {
                invocation.arg(a.as_slice());
            }
            invocation.invoke_async::<Vec<redis::Value>>(&mut conn).await
        })
        .await
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

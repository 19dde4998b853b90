//! `RedisStore`: one multiplexed, self-reconnecting connection per shard, with every call bounded
//! by the persistence timeout so a Redis outage turns into prompt 503s, not hung requests.
//!
//! With several seed URLs the store talks to a Redis Cluster. Every key carries its slot as a hash
//! tag, so the commands of one matchd slot live in one Redis Cluster slot; a pipeline or fenced
//! batch touching several slots is split into one pipeline (or one fenced script) per hash tag,
//! sent concurrently, and the answers are put back in the order of the commands.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;

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
local claimed = {}
for g = 0, guards - 1 do
  local key, value = ARGV[3 + 2 * g], ARGV[4 + 2 * g]
  local cur = claimed[key] or redis.call('GET', key)
  if cur and cur ~= value then
    return redis.error_reply('DUPLICATE ' .. key .. ' already holds ' .. cur)
  end
  claimed[key] = value
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
    /// This node is a standby: another node (`active`) holds the ownership lease.
    #[error("this node ({node}) is a standby; {active} holds the ownership lease")]
    Standby { node: String, active: String },
    /// A guard key (one active match per pair) already holds another value: the batch would
    /// break an invariant and was refused whole.
    #[error("refused by a uniqueness guard: {0}")]
    Duplicate(String),
    #[error("stored record {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

#[derive(Clone)]
pub struct RedisStore {
    target: Target,
    timeout: Duration,
}

/// One Redis, or a Redis Cluster (connected on first use).
#[derive(Clone)]
enum Target {
    Single(ConnectionManager),
    Cluster(Arc<ClusterTarget>),
}

/// A Redis Cluster client and its connection, made on first use.
struct ClusterTarget {
    client: redis::cluster::ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

/// One hash tag's share of a fenced batch: its commands' positions, its commands, its guards.
struct Part {
    indices: Vec<usize>,
    pipe: redis::Pipeline,
    guards: Vec<(String, String)>,
}

/// A connection of either kind, for the calls below.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A command's arguments (name first), as sent.
fn args_of(cmd: &redis::Cmd) -> Vec<&[u8]> {
    cmd.args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect()
}

/// The hash tag (`{...}`) of a command's key, or the whole key if it has none; `None` for a
/// command without a key.
fn routing_tag(cmd: &redis::Cmd) -> Option<Vec<u8>> {
    let args = args_of(cmd);
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" if args.get(2).is_some_and(|n| *n != b"0") => args.get(3)?,
        b"EVAL" | b"EVALSHA" | b"PING" | b"SCRIPT" | b"INFO" => return None,
        _ => args.get(1)?,
    };
    Some(tag_of(key).to_vec())
}

/// The part of `key` Redis Cluster hashes: the first non-empty `{...}`, else the whole key.
fn tag_of(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|b| *b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|b| *b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// Splits `pipe` into one pipeline per hash tag: (indices of its commands in `pipe`, pipeline).
fn split_by_tag(pipe: &redis::Pipeline) -> Vec<(Vec<usize>, redis::Pipeline)> {
    let mut groups: HashMap<Option<Vec<u8>>, (Vec<usize>, redis::Pipeline)> = HashMap::new();
    for (i, cmd) in pipe.cmd_iter().enumerate() {
        let group = groups.entry(routing_tag(cmd)).or_insert_with(|| (Vec::new(), redis::pipe()));
        group.0.push(i);
        group.1.add_command(cmd.clone());
    }
    groups.into_values().collect()
}

impl RedisStore {
    /// Prepares a connection to `url`; it connects on first use (and reconnects by itself), so a
    /// server can start while Redis is down and become ready when it returns. Several URLs,
    /// comma-separated, are the seed nodes of a Redis Cluster. Must be called on the runtime
    /// (arbiter) that will use it.
    pub fn connect_lazy(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let unavailable = |e: redis::RedisError| StoreError::Unavailable(e.to_string());
        let seeds: Vec<&str> = url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if seeds.len() > 1 {
            let client = redis::cluster::ClusterClient::builder(seeds)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2)
                .build()
                .map_err(unavailable)?;
            let target = Target::Cluster(Arc::new(ClusterTarget { client, conn: tokio::sync::OnceCell::new() }));
            return Ok(RedisStore { target, timeout });
        }
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(RedisStore { target: Target::Single(conn), timeout })
    }

    /// Whether this store is a Redis Cluster (batches are split per slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// The connection, made on first use for a cluster.
    async fn conn(&self) -> redis::RedisResult<Conn> {
        match &self.target {
            Target::Single(c) => Ok(Conn::Single(c.clone())),
            Target::Cluster(t) => {
                let c = t.conn.get_or_try_init(|| t.client.get_async_connection()).await?;
                Ok(Conn::Cluster(c.clone()))
            }
        }
    }

    /// Runs `call` on the connection, bounded by the timeout.
    ///
    /// A call that failed because the connection had dropped (Redis restarted) is sent again on
    /// the fresh connection until the timeout. That is safe for what the shards write: full-record
    /// SETs, SADD/SREM/HSET/HDEL are idempotent, and an XADD with an explicit id that already landed
    /// is refused by Redis, which fails the batch and makes the shard reload.
    async fn call<T, F, Fut>(&self, commands: usize, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = tokio::time::Instant::now();
        let deadline = started + self.timeout;
        let result = loop {
            METRICS.persist_round_trips.inc();
            METRICS.persist_commands.inc_by(commands as u64);
            let attempt = async {
                let conn = self.conn().await?;
                call(conn).await
            };
            match tokio::time::timeout_at(deadline, attempt).await {
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

    /// Runs `pipe` as sent, returning one value per command (on a Redis Cluster, one pipeline per
    /// hash tag, concurrently).
    pub async fn run(&self, pipe: redis::Pipeline, commands: usize) -> Result<Vec<redis::Value>, StoreError> {
        if !self.is_cluster() {
            return self.run_one(&pipe, commands).await;
        }
        let groups = split_by_tag(&pipe);
        let answers = futures_util::future::join_all(groups.iter().map(|(idx, p)| self.run_one(p, idx.len()))).await;
        merge(groups.into_iter().map(|(idx, _)| idx).zip(answers), commands)
    }

    async fn run_one(&self, pipe: &redis::Pipeline, commands: usize) -> Result<Vec<redis::Value>, StoreError> {
        self.call(commands, |mut conn| async move { pipe.query_async::<Vec<redis::Value>>(&mut conn).await }).await
    }

    /// Runs the commands of `pipe` atomically, and only if every key of `fence` still holds its
    /// token (fencing: a node that lost its lease or slots, say after a pause, cannot write).
    ///
    /// On a Redis Cluster the batch runs as one fenced script per hash tag (each with its slot's
    /// fence keys and guards), concurrently: each slot's part is atomic and fenced, and if any part
    /// fails the whole batch is reported failed (its waiters get 503, the shard reloads the truth).
    pub async fn run_fenced(
        &self,
        fence: &FenceToken,
        guards: &[(String, String)],
        pipe: redis::Pipeline,
        commands: usize,
    ) -> Result<Vec<redis::Value>, StoreError> {
        if !self.is_cluster() {
            return self.run_fenced_one(fence, guards, &pipe, commands).await;
        }
        let mut parts: HashMap<Vec<u8>, Part> = HashMap::new();
        for (indices, group) in split_by_tag(&pipe) {
            let tag = indices.first().and_then(|i| pipe.cmd_iter().nth(*i)).and_then(routing_tag).unwrap_or_default();
            parts.insert(tag, Part { indices, pipe: group, guards: Vec::new() });
        }
        for guard in guards {
            let tag = tag_of(guard.0.as_bytes()).to_vec();
            let part = parts.entry(tag).or_insert_with(|| Part {
                indices: Vec::new(),
                pipe: redis::pipe(),
                guards: Vec::new(),
            });
            part.guards.push(guard.clone());
        }
        let mut calls = Vec::new();
        for (tag, Part { indices, pipe: group, guards }) in parts {
            let keys: Vec<String> =
                fence.keys.iter().filter(|k| tag_of(k.as_bytes()) == tag.as_slice()).cloned().collect();
            if keys.is_empty() {
                // A write to a slot the batch did not claim: never sent unfenced.
                return Err(StoreError::Fenced);
            }
            let part_fence = FenceToken { keys, token: fence.token.clone() };
            calls.push(async move {
                let n = indices.len();
                (indices, self.run_fenced_one(&part_fence, &guards, &group, n).await)
            });
        }
        let answers = futures_util::future::join_all(calls).await;
        merge(answers.into_iter(), commands)
    }

    async fn run_fenced_one(
        &self,
        fence: &FenceToken,
        guards: &[(String, String)],
        pipe: &redis::Pipeline,
        commands: usize,
    ) -> Result<Vec<redis::Value>, StoreError> {
        let mut argv: Vec<Vec<u8>> = vec![fence.token.as_bytes().to_vec(), guards.len().to_string().into_bytes()];
        for (key, value) in guards {
            argv.push(key.as_bytes().to_vec());
            argv.push(value.as_bytes().to_vec());
        }
        argv.push(commands.to_string().into_bytes());
        for cmd in pipe.cmd_iter() {
            let args = args_of(cmd);
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

/// Puts per-group answers back in command order; the first failure fails the whole.
fn merge(
    parts: impl Iterator<Item = (Vec<usize>, Result<Vec<redis::Value>, StoreError>)>,
    commands: usize,
) -> Result<Vec<redis::Value>, StoreError> {
    let mut out = vec![redis::Value::Nil; commands];
    let mut failure = None;
    for (indices, answer) in parts {
        match answer {
            Ok(values) => {
                for (i, v) in indices.into_iter().zip(values) {
                    if let Some(slot) = out.get_mut(i) {
                        *slot = v;
                    }
                }
            }
            Err(e) => {
                // A fencing refusal says more than a timeout of another part.
                if failure.is_none() || matches!(e, StoreError::Fenced | StoreError::Duplicate(_)) {
                    failure = Some(e);
                }
            }
        }
    }
    failure.map_or(Ok(out), Err)
}

/// Reads a bulk string value as UTF-8 text (`None` for nil).
pub fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

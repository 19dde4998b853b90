//! Reads a snapshot from Redis: SCAN for matchd's keys (on a Redis Cluster, on every master), then
//! the values, in the order the state flows (pair records, then the users' logs and indexes, then
//! the pool lines), so an action in flight shows as its earlier half, which the outboxes explain.
//! Read-only: SCAN, GET, SMEMBERS, XRANGE, HGETALL, ZRANGEBYSCORE, TIME.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Value;

use super::snapshot::{classify, parse_log_entry, KeyKind, Snapshot, Unreadable};
use super::{audit, confirmed, Inconsistency};
use crate::cluster::membership::members_key;
use crate::cluster::ownership::Member;
use crate::coord::slot::PairKey;
use crate::persist::keys::{self, PREFIX};
use crate::persist::records::PairRecord;
use crate::persist::store::text;
use crate::persist::{RedisStore, StoreError};
use crate::protocol::{Match, PoolName, UserId};
use crate::queue::line_store::{line_key, StoredWaiter};

/// Commands per read request.
const CHUNK: usize = 256;
/// Keys per SCAN step.
const SCAN_COUNT: usize = 1000;

/// Who is running on this Redis, by what they keep in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Running {
    /// Nobody: no lease holder, no live cluster member.
    Nothing,
    /// One active node holds the lease (`token`); `url` is where it takes internal calls (its
    /// token names it since this version).
    Active { token: String, url: Option<String> },
    /// Live cluster members.
    Members(Vec<Member>),
}

/// A read-only view of one Redis or Redis Cluster.
pub struct Reader {
    store: RedisStore,
    seeds: Vec<String>,
    timeout: Duration,
}

/// The entries of an array, set or map reply (maps flattened key, value, ...).
fn items(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(v) | Value::Set(v) => v.iter().collect(),
        Value::Map(kv) => kv.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// `redis://user@host:port` from a seed URL and another node's address (same scheme and credentials).
fn node_url(seed: &str, host: &str, port: i64) -> String {
    let (scheme, rest) = seed.split_once("://").unwrap_or(("redis", seed));
    let authority = rest.split('/').next().unwrap_or("");
    let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    format!("{scheme}://{userinfo}{host}:{port}")
}

/// The host of a seed URL (for `CLUSTER SLOTS` entries that leave it empty).
fn seed_host(seed: &str) -> String {
    let rest = seed.split_once("://").map_or(seed, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match hostport.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => hostport.to_string(),
    }
}

/// The masters' URLs from a `CLUSTER SLOTS` reply.
fn masters_of(reply: &Value, seed: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for range in items(reply) {
        let parts = items(range);
        let Some(master) = parts.get(2) else { continue };
        let node = items(master);
        let host = node.first().and_then(|v| text(v)).unwrap_or_default();
        let host = if host.is_empty() || host == "?" { seed_host(seed) } else { host };
        let Some(Value::Int(port)) = node.get(1) else { continue };
        let url = node_url(seed, &host, *port);
        if !out.contains(&url) {
            out.push(url);
        }
    }
    out
}

impl Reader {
    /// A reader of `redis` (one URL, or several seed URLs of a Redis Cluster, comma-separated);
    /// every request is bounded by `timeout`. Must be called on the runtime that uses it.
    pub fn new(redis: &str, timeout: Duration) -> Result<Reader, StoreError> {
        let store = RedisStore::connect_lazy(redis, timeout)?;
        let seeds = redis.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
        Ok(Reader { store, seeds, timeout })
    }

    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    pub fn is_cluster(&self) -> bool {
        self.store.is_cluster()
    }

    async fn direct(&self, url: &str) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        let unavailable = |e: redis::RedisError| StoreError::Unavailable(format!("{url}: {e}"));
        let client = redis::Client::open(url).map_err(unavailable)?;
        match tokio::time::timeout(self.timeout, client.get_multiplexed_async_connection()).await {
            Ok(conn) => conn.map_err(unavailable),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(conn)).await {
            Ok(v) => v.map_err(|e| StoreError::Unavailable(e.to_string())),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// The servers to SCAN: the one Redis, or every master of the Redis Cluster.
    async fn scan_targets(&self) -> Result<Vec<String>, StoreError> {
        if !self.is_cluster() {
            return Ok(self.seeds.first().cloned().into_iter().collect());
        }
        let mut last = StoreError::Unavailable("no seed URL".into());
        for seed in &self.seeds {
            let answer = async {
                let mut conn = self.direct(seed).await?;
                let mut cmd = redis::cmd("CLUSTER");
                cmd.arg("SLOTS");
                self.query::<Value>(&mut conn, &cmd).await
            };
            match answer.await {
                Ok(reply) => {
                    let masters = masters_of(&reply, seed);
                    if !masters.is_empty() {
                        return Ok(masters);
                    }
                    last = StoreError::Unavailable(format!("{seed}: CLUSTER SLOTS named no master"));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Every key of matchd's (`matchd:*`), each once.
    pub async fn scan(&self) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        for target in self.scan_targets().await? {
            let mut conn = self.direct(&target).await?;
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor).arg("MATCH").arg(format!("{PREFIX}:*")).arg("COUNT").arg(SCAN_COUNT);
                let (next, batch): (u64, Vec<String>) = self.query(&mut conn, &cmd).await?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Runs `commands` in chunks; one reply per command, in order.
    async fn read(&self, commands: Vec<redis::Cmd>) -> Result<Vec<Value>, StoreError> {
        let mut out = Vec::with_capacity(commands.len());
        for chunk in commands.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for cmd in chunk {
                pipe.add_command(cmd.clone());
            }
            out.extend(self.store.run(pipe, chunk.len()).await?);
        }
        Ok(out)
    }

    /// Reads everything the checks look at.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let keys = self.scan().await?;
        let mut s = Snapshot { keys_scanned: keys.len(), ..Snapshot::default() };
        let mut pair_keys = Vec::new();
        let mut users: Vec<UserId> = Vec::new();
        let mut lines = Vec::new();
        for key in &keys {
            match classify(key) {
                KeyKind::Events(u) | KeyKind::Matches(u) => users.push(u),
                KeyKind::Line(pool) => lines.push(pool),
                KeyKind::Other => {}
                kind => pair_keys.push((key.clone(), kind)),
            }
        }
        users.sort();
        users.dedup();

        // 1. Pair records, guards and the recovery sets.
        let cmds = pair_keys
            .iter()
            .map(|(key, kind)| {
                let mut cmd = redis::cmd(if matches!(kind, KeyKind::OpenRooms(_) | KeyKind::Outbox(_)) {
                    "SMEMBERS"
                } else {
                    "GET"
                });
                cmd.arg(key);
                cmd
            })
            .collect();
        for ((key, kind), value) in pair_keys.iter().zip(self.read(cmds).await?) {
            match kind {
                KeyKind::Pair(pair) => match text(&value).map(|j| serde_json::from_str::<PairRecord>(&j)) {
                    Some(Ok(record)) => drop(s.pairs.insert(pair.clone(), record)),
                    Some(Err(e)) => s.unreadable.push(Unreadable { key: key.clone(), part: None, why: e.to_string() }),
                    None => {}
                },
                KeyKind::Guard(pair) => {
                    if let Some(id) = text(&value) {
                        s.guards.insert(pair.clone(), id);
                    }
                }
                KeyKind::OpenRooms(slot) | KeyKind::Outbox(slot) => {
                    let sets = if matches!(kind, KeyKind::OpenRooms(_)) {
                        &mut s.open_rooms_listed
                    } else {
                        &mut s.outbox_listed
                    };
                    for member in items(&value) {
                        let raw = text(member).unwrap_or_default();
                        match keys::parse_pair_member(&raw).filter(|p| p.slot() == *slot) {
                            Some(pair) => drop(sets.entry(*slot).or_default().insert(pair)),
                            None => s.unreadable.push(Unreadable {
                                key: key.clone(),
                                part: Some(raw.replace('\n', "\\n")),
                                why: "not a pair of this slot".into(),
                            }),
                        }
                    }
                }
                _ => {}
            }
        }

        // 2. The id keys of the active matches.
        let active: Vec<(PairKey, String)> = s
            .pairs
            .iter()
            .filter_map(|(pair, r)| Some((pair.clone(), r.state.active_match()?.match_id.to_string())))
            .collect();
        let cmds = active
            .iter()
            .filter_map(|(pair, id)| {
                let id = crate::protocol::MatchId::parse(id).ok()?;
                let mut cmd = redis::cmd("GET");
                cmd.arg(keys::match_owner(pair.slot(), &id));
                Some(cmd)
            })
            .collect();
        for ((_, id), value) in active.iter().zip(self.read(cmds).await?) {
            if let Some(owner) = text(&value) {
                s.match_owners.insert(id.clone(), owner);
            }
        }

        // 3. Each user's log, then their index.
        let cmds = users
            .iter()
            .flat_map(|user| {
                let mut xrange = redis::cmd("XRANGE");
                xrange.arg(keys::events(user)).arg("-").arg("+");
                let mut hgetall = redis::cmd("HGETALL");
                hgetall.arg(keys::matches(user));
                [xrange, hgetall]
            })
            .collect();
        let values = self.read(cmds).await?;
        for (user, pair) in users.iter().zip(values.chunks(2)) {
            let events_key = keys::events(user);
            if let Some(stream) = pair.first() {
                let mut log = Vec::new();
                for entry in items(stream) {
                    let parts = items(entry);
                    let id = parts.first().and_then(|v| text(v)).unwrap_or_default();
                    let fields = parts.get(1).map(|f| items(f)).unwrap_or_default();
                    let mut json = None;
                    let mut fx = None;
                    for kv in fields.chunks(2) {
                        match (kv.first().and_then(|v| text(v)).as_deref(), kv.get(1)) {
                            (Some("json"), Some(v)) => json = text(v),
                            (Some("fx"), Some(v)) => fx = text(v),
                            _ => {}
                        }
                    }
                    match parse_log_entry(&id, json.as_deref(), fx.as_deref()) {
                        Ok(e) => log.push(e),
                        Err(why) => {
                            s.unreadable.push(Unreadable { key: events_key.clone(), part: Some(id), why });
                        }
                    }
                }
                if !log.is_empty() {
                    s.logs.insert(user.clone(), log);
                }
            }
            if let Some(index) = pair.get(1) {
                let fields = items(index);
                let mut parsed: BTreeMap<String, Match> = BTreeMap::new();
                for kv in fields.chunks(2) {
                    let id = kv.first().and_then(|v| text(v)).unwrap_or_default();
                    match kv.get(1).and_then(|v| text(v)).map(|j| serde_json::from_str::<Match>(&j)) {
                        Some(Ok(m)) => drop(parsed.insert(id, m)),
                        Some(Err(e)) => s.unreadable.push(Unreadable {
                            key: keys::matches(user),
                            part: Some(id),
                            why: e.to_string(),
                        }),
                        None => {}
                    }
                }
                if !parsed.is_empty() {
                    s.indexes.insert(user.clone(), parsed);
                }
            }
        }

        // 4. The pool lines.
        let cmds = lines
            .iter()
            .map(|pool: &PoolName| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(line_key(pool));
                cmd
            })
            .collect();
        for (pool, value) in lines.iter().zip(self.read(cmds).await?) {
            let fields = items(&value);
            let mut line = BTreeMap::new();
            for kv in fields.chunks(2) {
                let raw = kv.first().and_then(|v| text(v)).unwrap_or_default();
                let parsed = UserId::parse(&raw).map_err(|e| e.to_string()).and_then(|user| {
                    let json = kv.get(1).and_then(|v| text(v)).unwrap_or_default();
                    serde_json::from_str::<StoredWaiter>(&json).map(|w| (user, w)).map_err(|e| e.to_string())
                });
                match parsed {
                    Ok((user, waiter)) => drop(line.insert(user, waiter)),
                    Err(why) => s.unreadable.push(Unreadable { key: line_key(pool), part: Some(raw), why }),
                }
            }
            if !line.is_empty() {
                s.lines.insert(pool.clone(), line);
            }
        }
        Ok(s)
    }

    /// Whether Redis answers (a refused connection says so at once, where the store would retry
    /// until its timeout).
    pub async fn reachable(&self) -> Result<(), StoreError> {
        let mut last = StoreError::Unavailable("no Redis URL".into());
        for seed in &self.seeds {
            match self.direct(seed).await {
                Ok(mut conn) => {
                    let ping = redis::cmd("PING");
                    return self.query::<Value>(&mut conn, &ping).await.map(|_| ());
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Redis's clock, in unix ms.
    pub async fn now_ms(&self) -> Result<u64, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        let values = self.store.run(pipe, 1).await?;
        let parts: Vec<u64> =
            values.first().map(|v| items(v).iter().filter_map(|p| text(p)?.parse().ok()).collect()).unwrap_or_default();
        match parts.as_slice() {
            [secs, micros] => Ok(secs * 1000 + micros / 1000),
            _ => Err(StoreError::Unavailable("TIME answered something unexpected".into())),
        }
    }

    /// Whether a node is running: the lease's holder, or the live cluster members (entries whose
    /// expiry, on Redis's clock, is still ahead).
    pub async fn running(&self) -> Result<Running, StoreError> {
        let now = self.now_ms().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(crate::persist::lease::LEASE_KEY);
        pipe.cmd("ZRANGEBYSCORE").arg(members_key()).arg(format!("({now}")).arg("+inf");
        let values = self.store.run(pipe, 2).await?;
        let members: Vec<Member> = values
            .get(1)
            .map(|v| items(v).iter().filter_map(|m| Member::decode(&text(m)?)).collect())
            .unwrap_or_default();
        if !members.is_empty() {
            return Ok(Running::Members(members));
        }
        match values.first().and_then(text) {
            Some(token) => {
                let url = crate::persist::lease::url_of_token(&token).map(str::to_string);
                Ok(Running::Active { token, url })
            }
            None => Ok(Running::Nothing),
        }
    }
}

/// Reads and audits; with `confirm`, a finding counts only if a second read `confirm` later shows
/// it too (nodes are running: a change in flight between two reads looks like an inconsistency
/// once, rarely twice). Returns the last snapshot read and the findings.
pub async fn audited(
    reader: &Reader,
    confirm: Option<Duration>,
    outbox_max_age_ms: u64,
) -> Result<(Snapshot, Vec<Inconsistency>), StoreError> {
    let snapshot = reader.snapshot().await?;
    let first = audit(&snapshot, reader.now_ms().await?, outbox_max_age_ms);
    let Some(confirm) = confirm.filter(|_| !first.is_empty()) else { return Ok((snapshot, first)) };
    tokio::time::sleep(confirm).await;
    let snapshot = reader.snapshot().await?;
    let second = audit(&snapshot, reader.now_ms().await?, outbox_max_age_ms);
    let ids = |f: &[Inconsistency]| f.iter().map(Inconsistency::identity).collect::<Vec<_>>();
    tracing::debug!(first = ?ids(&first), second = ?ids(&second), "audited twice, {confirm:?} apart");
    Ok((snapshot, confirmed(&first, second)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_masters_are_read_from_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![Value::BulkString(host.into()), Value::Int(port), Value::BulkString(b"id".to_vec())])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("127.0.0.1", 7000), node("127.0.0.1", 7003)]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node("", 7001)]),
            Value::Array(vec![Value::Int(10923), Value::Int(16383), node("127.0.0.1", 7000)]),
        ]);
        assert_eq!(
            masters_of(&reply, "redis://:pw@10.0.0.9:7002"),
            vec!["redis://:pw@127.0.0.1:7000".to_string(), "redis://:pw@10.0.0.9:7001".to_string()]
        );
    }
}

//! Configuration: command-line flags, `MATCHD_*` environment variables and an optional TOML file.
//! Precedence is file < environment < flag. `Config::validate` runs before anything binds, so a bad
//! value stops the process with one clear line instead of a half-started server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::queue::rules::PoolRules;

pub const ENV_LISTEN: &str = "MATCHD_LISTEN";
pub const ENV_REDIS: &str = "MATCHD_REDIS";
pub const ENV_JWT_SECRET: &str = "MATCHD_JWT_SECRET";
pub const ENV_NODE_ID: &str = "MATCHD_NODE_ID";
pub const ENV_CONFIG: &str = "MATCHD_CONFIG";
pub const ENV_SHARDS: &str = "MATCHD_SHARDS";
pub const ENV_WORKERS: &str = "MATCHD_WORKERS";
pub const ENV_LOG_FORMAT: &str = "MATCHD_LOG_FORMAT";
pub const ENV_CORS_ORIGINS: &str = "MATCHD_CORS_ORIGINS";
pub const ENV_CLUSTER: &str = "MATCHD_CLUSTER";
pub const ENV_ADVERTISE: &str = "MATCHD_ADVERTISE";
pub const ENV_WEBHOOK_URL: &str = "MATCHD_WEBHOOK_URL";
pub const ENV_WEBHOOK_SECRET: &str = "MATCHD_WEBHOOK_SECRET";
pub const ENV_API_KEY: &str = "MATCHD_API_KEY";

/// The secret dev mode signs tokens with; printed in the start-up warning.
pub const DEV_SECRET: &str = "dev-secret";
/// The server-API key in dev mode when none is set; printed in the start-up warning.
pub const DEV_API_KEY: &str = "dev-api-key";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Command line (and environment) of `matchd`.
#[derive(Debug, Parser, Default)]
#[command(
    name = "matchd",
    version,
    about = "Real-time matching server: mutual swipes, spin queues and rooms over WebSocket and SSE.",
    after_help = "`matchd audit --help`: check (and repair) the state stored in Redis."
)]
pub struct Cli {
    /// HTTP/WebSocket/SSE listen address [default: 127.0.0.1:8080]
    #[arg(long, env = ENV_LISTEN)]
    pub listen: Option<String>,
    /// Redis URL for persistence and clustering; none = embedded in-memory single node (not durable)
    #[arg(long, env = ENV_REDIS)]
    pub redis: Option<String>,
    /// HS256 secret for tokens; none = dev mode (secret "dev-secret", /v1/dev/token enabled)
    #[arg(long, env = ENV_JWT_SECRET, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// This node's name in a cluster [default: random]
    #[arg(long, env = ENV_NODE_ID)]
    pub node_id: Option<String>,
    /// TOML file with the same keys plus every tunable (see README "Configuration")
    #[arg(long, env = ENV_CONFIG)]
    pub config: Option<PathBuf>,
    /// Number of shard actors (each on its own thread) [default: number of cores]
    #[arg(long, env = ENV_SHARDS)]
    pub shards: Option<usize>,
    /// Number of HTTP worker threads [default: number of cores]
    #[arg(long, env = ENV_WORKERS)]
    pub workers: Option<usize>,
    /// Log format: "pretty" or "json" [default: pretty]
    #[arg(long, env = ENV_LOG_FORMAT)]
    pub log_format: Option<String>,
    /// Browser origin allowed to call the API cross-origin, like https://app.example.com or "*" (repeat the
    /// flag for several; the env var takes a comma-separated list) [default: none, no CORS headers]
    #[arg(long = "cors-origin", env = ENV_CORS_ORIGINS, value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// URL that receives webhooks (match created/ended, room created/closed) [default: none]
    /// Several active nodes on one Redis (needs --redis): slots spread over the live members.
    #[arg(long, env = ENV_CLUSTER)]
    pub cluster: bool,
    /// The base URL other nodes reach this one at (cluster mode); default `http://<listen>`.
    #[arg(long, env = ENV_ADVERTISE)]
    pub advertise: Option<String>,
    #[arg(long, env = ENV_WEBHOOK_URL)]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 secret signing webhook bodies (X-Matchd-Signature); required with --webhook-url
    #[arg(long, env = ENV_WEBHOOK_SECRET, hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Key of the server API (/v1/server/*, header X-Api-Key), at least 16 bytes [default: "dev-api-key" in
    /// dev mode; otherwise none, and the server API answers 404]
    #[arg(long, env = ENV_API_KEY, hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Webhooks to the app's backend. In the `[webhooks]` table of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Webhooks {
    /// Where to POST events; none = webhooks off.
    pub url: Option<String>,
    /// Signs each body: `X-Matchd-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
    pub secret: Option<String>,
    /// Attempts per event before it is dropped (and counted).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Bound on one delivery attempt.
    pub timeout_ms: u64,
    /// Events waiting or retrying at once; past it new events are dropped (and counted), so a dead
    /// receiver cannot grow memory.
    pub max_pending: usize,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            url: None,
            secret: None,
            max_attempts: 8,
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
            timeout_ms: 5_000,
            max_pending: 10_000,
        }
    }
}

/// The background state audit (`[audit]` in the config file; see `audit::sweep`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// How often the server runs the checks of `matchd audit` against Redis (reporting only:
    /// `matchd_audit_inconsistencies_total{kind}` and a log line per finding); 0 = off.
    pub interval_ms: u64,
    /// An event waiting in a pair's outbox longer than this counts as stuck (`stale_outbox`).
    pub outbox_max_age_ms: u64,
    /// With nodes running a snapshot is not atomic: a finding counts only if a second snapshot
    /// this much later shows it too.
    pub confirm_ms: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            interval_ms: 0,
            outbox_max_age_ms: crate::audit::DEFAULT_OUTBOX_MAX_AGE_MS,
            confirm_ms: crate::audit::DEFAULT_CONFIRM_MS,
        }
    }
}

/// Every limit the server enforces. All are in the `[limits]` table of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest HTTP request body, in bytes (413 `payload_too_large` above it).
    pub max_body_bytes: usize,
    /// Largest WebSocket frame a client may send, in bytes (the connection closes with 1009 above it).
    pub max_frame_bytes: usize,
    /// Open event streams (WebSocket + SSE) per user on one node (409 `conflict` above it).
    pub max_connections_per_user: usize,
    /// Sustained actions per second per user (429 `rate_limited` above it).
    pub actions_per_second: f64,
    /// Actions a user may burst above the sustained rate.
    pub action_burst: u32,
    /// Events kept per user for resume; older ones are dropped (a resume past them says `gap`).
    pub event_log_capacity: usize,
    /// Events queued for one connection before it counts as a slow consumer and is closed.
    pub outbox_capacity: usize,
    /// Idempotency keys remembered per user per target.
    pub swipe_ids_per_pair: usize,
    /// Queue joins per user per minute (429 above it; server-initiated requeues do not count).
    pub joins_per_minute: u32,
    /// Skips per user per minute (429 above it).
    pub skips_per_minute: u32,
    /// Most pools (configured plus created on first use).
    pub max_pools: usize,
    /// Most operations in one group commit (a batch is also sent whenever the previous one returns).
    pub persist_batch_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024,
            max_frame_bytes: 64 * 1024,
            max_connections_per_user: 16,
            actions_per_second: 50.0,
            action_burst: 200,
            event_log_capacity: 1000,
            outbox_capacity: 256,
            swipe_ids_per_pair: 16,
            joins_per_minute: 10,
            skips_per_minute: 30,
            max_pools: 1000,
            persist_batch_max: 1024,
        }
    }
}

/// Timers, in milliseconds. In the `[timeouts]` table of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// How often the server pings an idle WebSocket.
    pub heartbeat_interval_ms: u64,
    /// A WebSocket silent for this long (no pong, no frame) is closed.
    pub client_timeout_ms: u64,
    /// How often an SSE stream gets a keep-alive comment.
    pub sse_keepalive_ms: u64,
    /// How long an action may wait for its shard before answering 503.
    pub action_timeout_ms: u64,
    /// How long shutdown waits for in-flight work and connections to drain.
    pub shutdown_grace_ms: u64,
    /// How long a user may stay disconnected before losing their queue place or room.
    pub presence_grace_ms: u64,
    /// How often pools re-check waiting users whose compatibility changes with time.
    pub pool_rescan_ms: u64,
    /// Bound on one Redis round trip; past it the action answers 503 `unavailable`.
    pub persist_timeout_ms: u64,
    /// TTL of the ownership lease (Redis mode): how long a standby waits for a dead active node.
    pub lease_ms: u64,
    /// Redis mode: pairs and users unused this long are dropped from memory (reloaded on next use).
    pub cache_idle_ms: u64,
    /// An idle keep-alive HTTP connection is closed after this long.
    pub http_keep_alive_ms: u64,
    /// A new connection must send its whole request head within this long (else 408).
    pub http_request_head_ms: u64,
    /// After an answer sent before its request body was read (413, 401 on a large body...), how long
    /// the server keeps reading and discarding the rest so the client can read the answer, before it
    /// closes. Stream sessions never wait for it: a WebSocket closes its TCP connection right after
    /// the closing handshake, an SSE stream when its client goes away. 0 = close at once.
    pub http_linger_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            heartbeat_interval_ms: 10_000,
            client_timeout_ms: 30_000,
            sse_keepalive_ms: 15_000,
            action_timeout_ms: 5_000,
            shutdown_grace_ms: 10_000,
            presence_grace_ms: 5_000,
            pool_rescan_ms: 250,
            persist_timeout_ms: 1_000,
            lease_ms: 3_000,
            cache_idle_ms: 600_000,
            http_keep_alive_ms: 5_000,
            http_request_head_ms: 5_000,
            http_linger_ms: 1_000,
        }
    }
}

/// The config file's shape: the flags' keys (snake_case) plus the tunable tables.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    redis: Option<String>,
    jwt_secret: Option<String>,
    node_id: Option<String>,
    shards: Option<usize>,
    workers: Option<usize>,
    log_format: Option<String>,
    cors_origins: Option<Vec<String>>,
    webhooks: Webhooks,
    limits: Limits,
    timeouts: Timeouts,
    audit: AuditSettings,
    allow_dynamic_pools: Option<bool>,
    pools: HashMap<String, PoolRules>,
    cluster: Option<bool>,
    advertise: Option<String>,
    api_key: Option<String>,
}

/// Log output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub redis: Option<String>,
    /// `None` means dev mode.
    pub jwt_secret: Option<String>,
    pub node_id: String,
    pub shards: usize,
    pub workers: usize,
    pub log_format: LogFormat,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Pools with their own rules (`[pools.<name>]`); "default" always exists.
    pub pools: HashMap<String, PoolRules>,
    /// Whether a join may name a pool that is not configured (it gets default rules).
    pub allow_dynamic_pools: bool,
    /// Origins (`scheme://host[:port]`, or `"*"` for any) whose pages may call the API from a browser:
    /// preflights get `Access-Control-Allow-*` for GET/POST/DELETE with Authorization and Content-Type,
    /// and answers carry `Access-Control-Allow-Origin`. Flag `--cors-origin` (repeatable), env
    /// `MATCHD_CORS_ORIGINS` (comma-separated), file key `cors_origins = [..]`. Empty (the default):
    /// no CORS headers at all, so only same-origin pages (such as the dev demo at `/`) can call it.
    pub cors_origins: Vec<String>,
    pub webhooks: Webhooks,
    /// The background state audit.
    pub audit: AuditSettings,
    /// Cluster mode: several active nodes share Redis (see `cluster`); `None` = one active node.
    pub cluster: Option<ClusterConfig>,
    /// The key the app's backend sends in `X-Api-Key` to the server API; see `server_api_key`.
    pub api_key: Option<String>,
}

/// How this node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Base URL (`http://host:port`) the other nodes use to forward actions and streams here.
    pub advertise: String,
}

/// A configuration problem, reported as one line before exit.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// `*`, or `http(s)://host[:port]` with nothing after it: the form browsers send in `Origin`.
fn valid_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some(rest) = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) else {
        return false;
    };
    !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', ','])
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

impl Default for Config {
    /// The embedded default: in-memory, dev auth, an ephemeral-free fixed address.
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            redis: None,
            jwt_secret: None,
            node_id: format!("node-{}", &crate::protocol::ids::random_suffix()[..8]),
            shards: cores(),
            workers: cores(),
            log_format: LogFormat::Pretty,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            pools: HashMap::new(),
            allow_dynamic_pools: true,
            cors_origins: Vec::new(),
            webhooks: Webhooks::default(),
            audit: AuditSettings::default(),
            cluster: None,
            api_key: None,
        }
    }
}

impl Config {
    /// Parses the process's flags and environment, reads the config file if one is named, and validates.
    pub fn load() -> Result<Config, ConfigError> {
        Self::from_cli(Cli::parse())
    }

    /// Builds a config from already-parsed flags (tests use `Cli::try_parse_from`).
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError::Parse { path: path.clone(), message: e.message().to_string() })?
            }
            None => FileConfig::default(),
        };
        Self::merge(cli, file)
    }

    /// Parses a config file's text (without flags), for tests and tools.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file = toml::from_str::<FileConfig>(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::from("<inline>"), message: e.message().to_string() })?;
        Self::merge(Cli::default(), file)
    }

    fn merge(cli: Cli, file: FileConfig) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let listen_text = cli.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = listen_text.parse().map_err(|_| ConfigError::Invalid {
            key: "listen",
            message: format!("{listen_text:?} is not an address like 127.0.0.1:8080"),
        })?;
        let log_format = match cli.log_format.or(file.log_format).as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log_format",
                    message: format!("{other:?} is not \"pretty\" or \"json\""),
                })
            }
        };
        let cluster = (cli.cluster || file.cluster.unwrap_or(false)).then(|| ClusterConfig {
            advertise: cli
                .advertise
                .or(file.advertise)
                .unwrap_or_else(|| format!("http://{listen}"))
                .trim_end_matches('/')
                .to_string(),
        });
        let config = Config {
            cluster,
            api_key: cli.api_key.or(file.api_key).filter(|s| !s.is_empty()),
            listen,
            redis: cli.redis.or(file.redis).filter(|s| !s.is_empty()),
            jwt_secret: cli.jwt_secret.or(file.jwt_secret).filter(|s| !s.is_empty()),
            node_id: cli.node_id.or(file.node_id).unwrap_or(defaults.node_id),
            shards: cli.shards.or(file.shards).unwrap_or(defaults.shards),
            workers: cli.workers.or(file.workers).unwrap_or(defaults.workers),
            log_format,
            limits: file.limits,
            timeouts: file.timeouts,
            audit: file.audit,
            pools: file.pools,
            allow_dynamic_pools: file.allow_dynamic_pools.unwrap_or(true),
            cors_origins: if cli.cors_origins.is_empty() {
                file.cors_origins.unwrap_or_default()
            } else {
                cli.cors_origins
            }
            .into_iter()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect(),
            webhooks: Webhooks {
                url: cli.webhook_url.or(file.webhooks.url.clone()).filter(|s| !s.is_empty()),
                secret: cli.webhook_secret.or(file.webhooks.secret.clone()).filter(|s| !s.is_empty()),
                ..file.webhooks
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value for sense; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, message: &str) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid { key, message: message.to_string() })
        }
        if crate::protocol::ids::UserId::parse(&self.node_id).is_err() {
            return bad("node_id", "must be 1..64 characters of [A-Za-z0-9_.-]");
        }
        if self.shards == 0 || self.shards > 1024 {
            return bad("shards", "must be between 1 and 1024");
        }
        if self.workers == 0 || self.workers > 1024 {
            return bad("workers", "must be between 1 and 1024");
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.len() < 16 {
                return bad("jwt_secret", "must be at least 16 bytes");
            }
        }
        if self.api_key.as_ref().is_some_and(|k| k.len() < 16) {
            return bad("api_key", "must be at least 16 bytes");
        }
        if let Some(cluster) = &self.cluster {
            if self.redis.is_none() {
                return bad("cluster", "needs --redis: the members share state and membership through it");
            }
            let rest = cluster.advertise.strip_prefix("http://").unwrap_or("");
            if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) || rest.starts_with("0.0.0.0") {
                return bad("advertise", "must be http://host:port, reachable by the other nodes (not 0.0.0.0)");
            }
        }
        if let Some(urls) = &self.redis {
            let seeds: Vec<&str> = urls.split(',').map(str::trim).collect();
            for url in &seeds {
                if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
                    return bad(
                        "redis",
                        "must be a redis://, rediss:// or unix:// URL (several, comma-separated, for a Redis Cluster)",
                    );
                }
            }
            if seeds.len() > 1 && self.cluster.is_none() {
                return bad("redis", "a Redis Cluster (several seed URLs) needs --cluster: the single-active lease cannot fence across Redis slots");
            }
        }
        let l = &self.limits;
        if l.max_body_bytes < 256 {
            return bad("limits.max_body_bytes", "must be at least 256");
        }
        if l.max_frame_bytes < 256 {
            return bad("limits.max_frame_bytes", "must be at least 256");
        }
        if l.max_connections_per_user == 0 {
            return bad("limits.max_connections_per_user", "must be at least 1");
        }
        if !(l.actions_per_second > 0.0 && l.actions_per_second.is_finite()) {
            return bad("limits.actions_per_second", "must be a positive number");
        }
        if l.action_burst == 0 {
            return bad("limits.action_burst", "must be at least 1");
        }
        if l.event_log_capacity == 0 || l.outbox_capacity < 2 || l.swipe_ids_per_pair == 0 {
            return bad("limits", "event_log_capacity, swipe_ids_per_pair >= 1 and outbox_capacity >= 2");
        }
        if l.joins_per_minute == 0 || l.skips_per_minute == 0 || l.max_pools == 0 {
            return bad("limits", "joins_per_minute, skips_per_minute and max_pools must be >= 1");
        }
        for (name, rules) in &self.pools {
            if crate::protocol::PoolName::parse(name).is_err() {
                return bad("pools", "pool names must be 1..64 characters of [A-Za-z0-9_.-]");
            }
            if let Err(message) = rules.validate() {
                return Err(ConfigError::Invalid { key: "pools", message: format!("pool {name}: {message}") });
            }
        }
        if let Some(origin) = self.cors_origins.iter().find(|o| !valid_origin(o)) {
            return Err(ConfigError::Invalid {
                key: "cors_origins",
                message: format!("{origin:?} is not \"*\" or an origin like https://app.example.com (no path)"),
            });
        }
        let w = &self.webhooks;
        if let Some(url) = &w.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return bad("webhooks.url", "must be an http:// or https:// URL");
            }
            if w.secret.as_deref().is_none_or(|s| s.len() < 16) {
                return bad("webhooks.secret", "is required with webhooks.url and must be at least 16 bytes");
            }
        }
        if w.max_attempts == 0 || w.initial_backoff_ms == 0 || w.timeout_ms == 0 || w.max_pending == 0 {
            return bad("webhooks", "max_attempts, initial_backoff_ms, timeout_ms and max_pending must be > 0");
        }
        let t = &self.timeouts;
        if t.heartbeat_interval_ms == 0 || t.client_timeout_ms <= t.heartbeat_interval_ms {
            return bad("timeouts.client_timeout_ms", "must be greater than heartbeat_interval_ms (> 0)");
        }
        if l.persist_batch_max == 0 {
            return bad("limits.persist_batch_max", "must be at least 1");
        }
        if t.lease_ms < 300 {
            return bad("timeouts.lease_ms", "must be at least 300");
        }
        if t.persist_timeout_ms == 0 || t.persist_timeout_ms >= t.action_timeout_ms {
            return bad("timeouts.persist_timeout_ms", "must be > 0 and less than action_timeout_ms");
        }
        if t.http_request_head_ms == 0 {
            return bad("timeouts.http_request_head_ms", "must be > 0");
        }
        if t.sse_keepalive_ms == 0 || t.action_timeout_ms == 0 || t.pool_rescan_ms == 0 {
            return bad("timeouts", "sse_keepalive_ms, action_timeout_ms and pool_rescan_ms must be > 0");
        }
        let a = &self.audit;
        if a.interval_ms > 0 && self.redis.is_none() {
            return bad("audit.interval_ms", "needs --redis: the audit checks what Redis holds");
        }
        if a.outbox_max_age_ms == 0 {
            return bad("audit.outbox_max_age_ms", "must be > 0");
        }
        Ok(())
    }

    /// Dev mode: no secret configured, so tokens are signed with `DEV_SECRET` and can be minted freely.
    pub fn dev_mode(&self) -> bool {
        self.jwt_secret.is_none()
    }

    pub fn secret(&self) -> &str {
        self.jwt_secret.as_deref().unwrap_or(DEV_SECRET)
    }

    /// The server API's key: the configured one, else `DEV_API_KEY` in dev mode. `None` (a real
    /// secret and no key) turns the server API off: every `/v1/server/*` answers 404.
    pub fn server_api_key(&self) -> Option<&str> {
        match (&self.api_key, self.dev_mode()) {
            (Some(key), _) => Some(key),
            (None, true) => Some(DEV_API_KEY),
            (None, false) => None,
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.timeouts.heartbeat_interval_ms)
    }

    pub fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.client_timeout_ms)
    }

    pub fn presence_grace(&self) -> Duration {
        Duration::from_millis(self.timeouts.presence_grace_ms)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.timeouts.lease_ms)
    }

    pub fn persist_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.persist_timeout_ms)
    }

    pub fn action_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.action_timeout_ms)
    }

    /// Where other processes reach this node's internal endpoints: `--advertise` in a cluster, else
    /// the listen address (an unspecified one as loopback).
    pub fn internal_url(&self) -> String {
        if let Some(c) = &self.cluster {
            return c.advertise.clone();
        }
        let mut addr = self.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nshards = 3\n[limits]\nmax_body_bytes = 1000\n").unwrap();
        let cli = Cli::try_parse_from(["matchd", "--config", path.to_str().unwrap(), "--shards", "5"]).unwrap();
        let c = Config::from_cli(cli).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.shards, 5);
        assert_eq!(c.limits.max_body_bytes, 1000);
        assert!(c.dev_mode());
    }

    #[test]
    fn pools_parse_with_their_rules() {
        let c = Config::from_toml(
            "[pools.interview]\nrating_tolerance = 100\nregion = \"require\"\nprompts = [\"q1\"]\n[pools.interview.payload]\nminutes = 30\n",
        )
        .unwrap();
        let p = &c.pools["interview"];
        assert_eq!(p.rating_tolerance, Some(100));
        assert_eq!(p.payload["minutes"], serde_json::json!(30));
        assert!(Config::from_toml("[pools.x]\nregion = \"maybe\"").is_err());
    }

    #[test]
    fn cors_origins_come_from_flags_or_the_file() {
        assert!(Config::from_toml("").unwrap().cors_origins.is_empty());
        let c = Config::from_toml("cors_origins = [\"http://localhost:3000\", \"https://a.example\"]").unwrap();
        assert_eq!(c.cors_origins, ["http://localhost:3000", "https://a.example"]);
        let cli = Cli::try_parse_from(["matchd", "--cors-origin", "https://x.example,http://y:8080"]).unwrap();
        assert_eq!(Config::from_cli(cli).unwrap().cors_origins, ["https://x.example", "http://y:8080"]);
        let e = Config::from_toml("cors_origins = [\"https://a.example/path\"]").unwrap_err().to_string();
        assert!(e.contains("cors_origins"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Config::from_toml("listen = \"nope\"").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = Config::from_toml("[limits]\nmax_connections_per_user = 0").unwrap_err().to_string();
        assert!(e.contains("max_connections_per_user"), "{e}");
        let e = Config::from_toml("bogus = 1").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = Config::from_toml("jwt_secret = \"short\"").unwrap_err().to_string();
        assert!(e.contains("jwt_secret"), "{e}");
        let e = Config::from_toml("api_key = \"short\"").unwrap_err().to_string();
        assert!(e.contains("api_key"), "{e}");
    }

    #[test]
    fn the_server_api_key_defaults_only_in_dev_mode() {
        assert_eq!(Config::from_toml("").unwrap().server_api_key(), Some(DEV_API_KEY));
        let real = Config::from_toml("jwt_secret = \"0123456789abcdef0123\"").unwrap();
        assert_eq!(real.server_api_key(), None);
        let cli =
            Cli::try_parse_from(["matchd", "--jwt-secret", "0123456789abcdef0123", "--api-key", "k-0123456789abcdef"])
                .unwrap();
        assert_eq!(Config::from_cli(cli).unwrap().server_api_key(), Some("k-0123456789abcdef"));
        let file = Config::from_toml("api_key = \"file-key-0123456789\"").unwrap();
        assert_eq!(file.server_api_key(), Some("file-key-0123456789"));
    }
}

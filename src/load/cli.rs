//! Flags and subcommands of `matchd-load` (clap derive). Every count and every wait has a bound,
//! so a run always ends.

use clap::{Args, Parser, Subcommand};

/// Environment variable for `--url`.
pub const ENV_URL: &str = "MATCHD_LOAD_URL";

/// Load and invariant checks against a matchd server, over its public contract only.
#[derive(Debug, Parser)]
#[command(
    name = "matchd-load",
    version,
    about = "Load generator and invariant checker for matchd (loopback targets only)",
    after_help = "Exit status: 0 = no violations, 1 = invariant violations, 2 = the run could not be carried out."
)]
pub struct LoadCli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Options every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Base URL of the server; must be a loopback address (127.0.0.0/8, ::1, localhost). Repeat it
    /// (or separate URLs by commas) to spread users over the nodes of a cluster: user i's requests
    /// and streams go to URL i mod n, and the two users of a pair always to different URLs
    #[arg(long, global = true, env = ENV_URL, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub url: Vec<String>,
    /// HS256 secret to mint tokens locally; without it tokens come from POST /v1/dev/token (dev mode)
    #[arg(long, global = true, env = "MATCHD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Client threads, each with its own actix system and connection pool
    #[arg(long, global = true, default_value_t = 2)]
    pub threads: usize,
    /// HTTP requests in flight per client thread (also the pool size and the stream-connect concurrency)
    #[arg(long, global = true, default_value_t = 64)]
    pub concurrency: usize,
    /// Timeout of one HTTP request or connection attempt, in milliseconds
    #[arg(long, global = true, default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// How long to wait for expected events after the actions, in milliseconds
    #[arg(long, global = true, default_value_t = 10_000)]
    pub settle_ms: u64,
    /// Hard limit on the whole run, in seconds
    #[arg(long, global = true, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Prefix of generated user ids [default: random], so runs never share users
    #[arg(long, global = true)]
    pub run_id: Option<String>,
    /// The server's process id (same machine): report its CPU time per request and, for `idle`, its
    /// memory. Repeat it (or separate ids by commas) for several nodes: their CPU and memory are summed
    #[arg(long, global = true, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Print the report as JSON
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Mutual pairs whose two swipes fire at once, retries with the same swipe_id, one-sided noise
    Swipes(SwipesArgs),
    /// Users connected by WebSocket/SSE, then mutual pairs: swipe -> both users' `match` event latency
    Delivery(DeliveryArgs),
    /// Open idle WebSocket connections, hold them, and measure the server's memory per connection
    Idle(IdleArgs),
    /// Queue matchmaking: join, room_assigned, skip, room_closed, requeue
    Spin(SpinArgs),
    /// Hammer GET /healthz: the server's bare request rate on this machine
    Healthz(HealthzArgs),
    /// WebSocket connects and closes as fast as possible while swipes run; server descriptors
    Churn(ChurnArgs),
    /// Server API fan-out: POST /v1/server/publish -> every connection of the listed users, beside a match event
    Publish(PublishArgs),
    /// A mixed load for a long time (swipes, spins with skips, connects and drops, held streams),
    /// sampling the server's memory, descriptors and threads: does anything grow?
    Soak(SoakArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SwipesArgs {
    /// Mutual pairs (two right swipes fired at the same instant)
    #[arg(long, default_value_t = 1000)]
    pub pairs: usize,
    /// Fraction of swipes sent a second time with the same swipe_id
    #[arg(long, default_value_t = 0.1)]
    pub retry_fraction: f64,
    /// One-sided right swipes on users who never swipe back (must stay pending)
    #[arg(long, default_value_t = 100)]
    pub noise: usize,
    /// Fraction of pairs (and noise targets) whose users hold a WebSocket during the run
    #[arg(long, default_value_t = 0.0)]
    pub ws_fraction: f64,
    /// Also measure GET /healthz with the same client settings, before and after, for the ratio
    #[arg(long)]
    pub compare_healthz: bool,
}

/// The connected users of `delivery` and `publish`.
#[derive(Debug, Clone, Args)]
pub struct Audience {
    /// Connected users
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Connections (tabs) per user
    #[arg(long, default_value_t = 1)]
    pub tabs: usize,
    /// Fraction of users whose tabs use SSE instead of WebSocket
    #[arg(long, default_value_t = 0.0)]
    pub sse_fraction: f64,
}

#[derive(Debug, Clone, Args)]
pub struct DeliveryArgs {
    #[command(flatten)]
    pub audience: Audience,
    /// Mutual pairs to swipe [default: users / 2]
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Pairs swiped at a time per client thread (each pair: first swipe, then the deciding one)
    #[arg(long, default_value_t = 8)]
    pub pairs_in_flight: usize,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Idle WebSocket connections to open (one user each)
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// How long to hold them, in seconds
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct SpinArgs {
    /// Users spinning (rounded down to an even number)
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Skip-and-requeue rounds after the first pairing
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Pool to join [default: a new pool named after the run]
    #[arg(long)]
    pub pool: Option<String>,
    /// Fraction of rooms where both members skip at the same moment
    #[arg(long, default_value_t = 0.25)]
    pub both_skip_fraction: f64,
}

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Connect-hello-close cycles in total
    #[arg(long, default_value_t = 5000)]
    pub connects: usize,
    /// Users the cycles are spread over (round robin)
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Cycles in flight per client thread
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Mutual pairs swiped while the churn runs (two at a time per thread, until the churn ends)
    #[arg(long, default_value_t = 5000)]
    pub pairs: usize,
    /// Close the socket right after sending the close frame instead of waiting for the server's
    /// close frame and TCP close
    #[arg(long)]
    pub no_wait_close: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The publishes go to these users, evenly.
    #[command(flatten)]
    pub audience: Audience,
    /// Users per publish call: one timed phase per value (repeat, or separate by commas)
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    pub users_per_call: Vec<usize>,
    /// Publish calls per phase
    #[arg(long, default_value_t = 2000)]
    pub calls: usize,
    /// Publish calls in flight per client thread
    #[arg(long, default_value_t = 8)]
    pub calls_in_flight: usize,
    /// Mutual pairs swiped before the publishes, for a match event latency from the same run [default: users / 10]
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Pairs swiped at a time per client thread
    #[arg(long, default_value_t = 8)]
    pub pairs_in_flight: usize,
    /// The server API's key (X-Api-Key)
    #[arg(long, env = "MATCHD_API_KEY", hide_env_values = true, default_value = "dev-api-key")]
    pub api_key: String,
}

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long the load runs, in seconds (the run's --timeout-secs is raised to fit)
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Seconds between two samples of the server (with --server-pid)
    #[arg(long, default_value_t = 5)]
    pub sample_secs: u64,
    /// The sample at this age is the warm-up reading the end is compared with [default: a fifth
    /// of the duration, at most 120]
    #[arg(long)]
    pub warmup_secs: Option<u64>,
    /// Mutual (and some one-sided) swipe pairs started per second, over all threads
    #[arg(long, default_value_t = 40.0)]
    pub pairs_per_sec: f64,
    /// Users holding a stream the whole run (even: WebSocket, odd: SSE); a fifth of the pairs
    /// match one of them, so their streams must see every one of those matches once
    #[arg(long, default_value_t = 8)]
    pub held_streams: usize,
    /// Users spinning (each holds a WebSocket): join, get a room, skip or leave, again
    #[arg(long, default_value_t = 8)]
    pub spinners: usize,
    /// Pause between two joins of one spinner, in milliseconds (the server's default limit is
    /// 10 joins per minute)
    #[arg(long, default_value_t = 6_500)]
    pub join_every_ms: u64,
    /// Connect/drop cycles in flight per thread (WebSocket closed politely, WebSocket reset, SSE
    /// dropped, in turn)
    #[arg(long, default_value_t = 1)]
    pub churn_in_flight: usize,
    /// Pause after each connect/drop cycle, in milliseconds
    #[arg(long, default_value_t = 50)]
    pub churn_pause_ms: u64,
    /// Pool the spinners join [default: a new pool named after the run]
    #[arg(long)]
    pub pool: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct HealthzArgs {
    /// Requests in total
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::LoadCli;

    #[test]
    fn urls_and_pids_repeat_or_take_commas() {
        let argv = [
            "matchd-load",
            "--url",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--url",
            "http://127.0.0.1:3",
            "--server-pid",
            "7,8",
            "--server-pid",
            "9",
            "healthz",
        ];
        let cli = LoadCli::try_parse_from(argv).unwrap();
        assert_eq!(cli.common.url, ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]);
        assert_eq!(cli.common.server_pid, [7, 8, 9]);
        let one = LoadCli::try_parse_from(["matchd-load", "--url", "http://127.0.0.1:1", "healthz"]).unwrap();
        assert_eq!(one.common.url, ["http://127.0.0.1:1"]);
        assert!(one.common.server_pid.is_empty());
    }
}

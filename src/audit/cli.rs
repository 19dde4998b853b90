//! `matchd audit --redis URL [--repair] [--json] [--outbox-max-age-ms N]`: checks what Redis holds
//! against the invariants, prints a summary (stdout; stderr with `--json`, which puts the JSON
//! report on stdout) and exits 0 when clean, 1 when it found something (with `--repair`: when
//! something is left after repairing), 2 when it could not run (Redis unreachable), 64 on bad flags.
//!
//! With a node running (the lease is held, or cluster members are live) the audit only reads,
//! confirms each finding with a second snapshot, and `--repair` sends the repairs to a node
//! (`POST /internal/v1/repairs`, with the key derived from `--jwt-secret`), which has each owner
//! re-check and mend it. With none running, `--repair` writes the repairs itself under the nodes'
//! fencing (see `offline`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use super::offline::{self, Fence, OfflineError};
use super::reader::{audited, Reader, Running};
use super::repair::{Repair, RepairOutcome, RepairStatus};
use super::{audit, Inconsistency, Snapshot, DEFAULT_CONFIRM_MS, DEFAULT_OUTBOX_MAX_AGE_MS};
use crate::cluster::forward::CLUSTER_KEY_HEADER;
use crate::config::{ENV_CONFIG, ENV_JWT_SECRET, ENV_REDIS};

/// Clean.
const EXIT_CLEAN: u8 = 0;
/// Inconsistencies found (or left after `--repair`).
const EXIT_FOUND: u8 = 1;
/// Could not run (Redis unreachable, a node refused the repairs' key...).
const EXIT_CANNOT_RUN: u8 = 2;
/// `EX_USAGE`, as the server's configuration errors.
const EXIT_USAGE: u8 = 64;
/// Repairs per request to a node.
const REPAIRS_PER_REQUEST: usize = 256;
/// After online repairs, how long their events get to reach the users' logs before the re-audit.
const SETTLE: Duration = Duration::from_millis(500);

/// Flags of `matchd audit`.
#[derive(Debug, Parser)]
#[command(
    name = "matchd audit",
    about = "Checks the state stored in Redis against matchd's invariants; --repair mends what is safe to mend.",
    after_help = "Exit status: 0 clean, 1 inconsistencies found (with --repair: left after repairing), \
                  2 could not run, 64 bad flags."
)]
pub struct AuditCli {
    /// Redis URL; several, comma-separated, are the seed nodes of a Redis Cluster
    #[arg(long, env = ENV_REDIS)]
    pub redis: Option<String>,
    /// Mend what is safe to mend: through a running node (its owners re-check and mend), or, with
    /// none running, directly under the nodes' fencing; then audit again
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON on stdout (the human summary goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// An event waiting in a pair's outbox longer than this is reported stuck [default: 60000, or
    /// audit.outbox_max_age_ms of --config]
    #[arg(long)]
    pub outbox_max_age_ms: Option<u64>,
    /// With a node running, the pause between the two snapshots that confirm a finding [default:
    /// 1500, or audit.confirm_ms of --config]
    #[arg(long)]
    pub confirm_ms: Option<u64>,
    /// The nodes' shared secret: repairs sent to a running node carry the key derived from it
    /// [default: the dev secret]
    #[arg(long, env = ENV_JWT_SECRET, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Send repairs to this node (http://host:port) instead of the one Redis names
    #[arg(long)]
    pub node: Option<String>,
    /// The server's TOML file: its redis, jwt_secret and [audit] settings are the defaults
    #[arg(long, env = ENV_CONFIG)]
    pub config: Option<PathBuf>,
    /// Bound on each Redis request and each repair request, in ms
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// What a run uses, flags and file resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub redis: String,
    pub repair: bool,
    pub json: bool,
    pub outbox_max_age_ms: u64,
    pub confirm: Duration,
    pub secret: String,
    pub node: Option<String>,
    pub timeout: Duration,
}

impl Settings {
    /// Resolves flags over the config file; `Err` is a usage error (one line).
    pub fn resolve(cli: AuditCli) -> Result<Settings, String> {
        let file = match &cli.config {
            Some(path) => {
                let flags = crate::config::Cli { config: Some(path.clone()), ..Default::default() };
                Some(crate::config::Config::from_cli(flags).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let redis = cli
            .redis
            .or_else(|| file.as_ref().and_then(|c| c.redis.clone()))
            .filter(|r| !r.trim().is_empty())
            .ok_or("--redis is required (or MATCHD_REDIS, or `redis` in --config)")?;
        for url in redis.split(',').map(str::trim) {
            if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
                return Err(format!("invalid value for redis: {url:?} is not a redis://, rediss:// or unix:// URL"));
            }
        }
        let outbox_max_age_ms = cli
            .outbox_max_age_ms
            .or_else(|| file.as_ref().map(|c| c.audit.outbox_max_age_ms))
            .unwrap_or(DEFAULT_OUTBOX_MAX_AGE_MS);
        if outbox_max_age_ms == 0 {
            return Err("invalid value for --outbox-max-age-ms: must be > 0".into());
        }
        if cli.timeout_ms == 0 {
            return Err("invalid value for --timeout-ms: must be > 0".into());
        }
        if let Some(node) = &cli.node {
            if !(node.starts_with("http://") || node.starts_with("https://")) {
                return Err(format!("invalid value for --node: {node:?} is not an http:// URL"));
            }
        }
        let confirm_ms =
            cli.confirm_ms.or_else(|| file.as_ref().map(|c| c.audit.confirm_ms)).unwrap_or(DEFAULT_CONFIRM_MS);
        let secret = cli
            .jwt_secret
            .filter(|s| !s.is_empty())
            .or_else(|| file.as_ref().and_then(|c| c.jwt_secret.clone()))
            .unwrap_or_else(|| crate::config::DEV_SECRET.to_string());
        Ok(Settings {
            redis,
            repair: cli.repair,
            json: cli.json,
            outbox_max_age_ms,
            confirm: Duration::from_millis(confirm_ms),
            secret,
            node: cli.node.map(|n| n.trim_end_matches('/').to_string()),
            timeout: Duration::from_millis(cli.timeout_ms),
        })
    }
}

/// One repair as carried out.
#[derive(Debug, Clone, Serialize)]
pub struct RepairRecord {
    pub kind: String,
    pub detail: String,
    pub status: RepairStatus,
    pub message: String,
}

/// Everything a run found and did (the `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub redis: String,
    /// "offline" (no node running) or "online".
    pub mode: &'static str,
    /// Who was running, in words.
    pub running: String,
    pub keys_scanned: usize,
    pub pairs: usize,
    pub users: usize,
    pub pools: usize,
    /// Findings by kind.
    pub counts: BTreeMap<String, usize>,
    pub inconsistencies: Vec<Inconsistency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repairs: Option<Vec<RepairRecord>>,
    /// What a new audit found after the repairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<Vec<Inconsistency>>,
    /// Whether nothing is (left) wrong: the exit status is 0 exactly then.
    pub clean: bool,
}

/// Why a run could not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Store(#[from] crate::persist::StoreError),
    #[error("{0}")]
    Node(String),
}

/// `matchd audit ...`: `args` are the flags after the program name's place (the first is ignored).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match AuditCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let info = matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion);
            return ExitCode::from(if info { EXIT_CLEAN } else { EXIT_USAGE });
        }
    };
    let settings = match Settings::resolve(cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("matchd audit: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let system = actix_rt::System::new();
    let json = settings.json;
    match system.block_on(run(settings)) {
        Ok(report) => {
            let summary = summary(&report);
            if json {
                eprint!("{summary}");
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{summary}");
            }
            ExitCode::from(if report.clean { EXIT_CLEAN } else { EXIT_FOUND })
        }
        Err(e) => {
            eprintln!("matchd audit: could not run: {e}");
            if json {
                println!("{}", serde_json::json!({ "error": e.to_string() }));
            }
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}

/// A snapshot and its findings (confirmed by a second read while a node runs).
async fn look(reader: &Reader, online: bool, s: &Settings) -> Result<(Snapshot, Vec<Inconsistency>), RunError> {
    Ok(audited(reader, online.then_some(s.confirm), s.outbox_max_age_ms).await?)
}

/// One audit run: look, repair if asked, look again.
pub async fn run(s: Settings) -> Result<Report, RunError> {
    let reader = Reader::new(&s.redis, s.timeout)?;
    reader.reachable().await?;
    let running = reader.running().await?;
    let online = running != Running::Nothing;
    let (snapshot, findings) = look(&reader, online, &s).await?;
    let mut counts = BTreeMap::new();
    for f in &findings {
        *counts.entry(f.kind.as_str().to_string()).or_insert(0) += 1;
    }
    let mut report = Report {
        redis: s.redis.clone(),
        mode: if online { "online" } else { "offline" },
        running: describe(&running),
        keys_scanned: snapshot.keys_scanned,
        pairs: snapshot.pairs.len(),
        users: snapshot.users().len(),
        pools: snapshot.lines.len(),
        counts,
        clean: findings.is_empty(),
        inconsistencies: findings,
        repairs: None,
        remaining: None,
    };
    if !s.repair || report.inconsistencies.is_empty() {
        return Ok(report);
    }
    if report.inconsistencies.iter().all(|f| f.repair.is_none()) {
        // Nothing to mend: what was found is what is left.
        report.repairs = Some(Vec::new());
        report.remaining = Some(report.inconsistencies.clone());
        return Ok(report);
    }
    let records = if online {
        repair_online(&s, &running, &report.inconsistencies).await?
    } else {
        repair_offline(&reader, &snapshot, &report.inconsistencies, s.outbox_max_age_ms).await?
    };
    if online {
        tokio::time::sleep(SETTLE).await;
    }
    let (_, remaining) = look(&reader, reader.running().await? != Running::Nothing, &s).await?;
    report.clean = remaining.is_empty();
    report.repairs = Some(records);
    report.remaining = Some(remaining);
    Ok(report)
}

fn describe(running: &Running) -> String {
    match running {
        Running::Nothing => "no node holds the lease or is a live cluster member".into(),
        Running::Active { token, url } => match url {
            Some(url) => format!("an active node holds the lease ({token}) at {url}"),
            None => format!("an active node holds the lease ({token})"),
        },
        Running::Members(members) => {
            let ids: Vec<&str> = members.iter().map(|m| &*m.id).collect();
            format!("{} live cluster member(s): {}", members.len(), ids.join(", "))
        }
    }
}

fn record(f: &Inconsistency, outcome: RepairOutcome) -> RepairRecord {
    RepairRecord {
        kind: f.kind.as_str().to_string(),
        detail: f.detail.clone(),
        status: outcome.status,
        message: outcome.message,
    }
}

/// Sends the repairs to a running node, which has each owner re-check and mend it.
async fn repair_online(
    s: &Settings,
    running: &Running,
    findings: &[Inconsistency],
) -> Result<Vec<RepairRecord>, RunError> {
    let urls: Vec<String> = match (&s.node, running) {
        (Some(node), _) => vec![node.clone()],
        (None, Running::Active { url: Some(url), .. }) => vec![url.clone()],
        (None, Running::Active { token, url: None }) => {
            return Err(RunError::Node(format!(
            "the active node ({token}) does not say where it listens (an older matchd); pass --node http://host:port"
        )))
        }
        (None, Running::Members(members)) => members.iter().map(|m| m.url.to_string()).collect(),
        (None, Running::Nothing) => Vec::new(),
    };
    // Several findings can ask for the same repair (a pair's keys); each is sent once.
    let mut unique: Vec<Repair> = Vec::new();
    for repair in findings.iter().filter_map(|f| f.repair.as_ref()) {
        if !unique.contains(repair) {
            unique.push(repair.clone());
        }
    }
    let key = crate::node::cluster_key(s.secret.as_bytes());
    let client = awc::Client::builder().timeout(s.timeout).finish();
    let mut outcomes: Vec<RepairOutcome> = Vec::new();
    for chunk in unique.chunks(REPAIRS_PER_REQUEST) {
        let mut last = String::from("no node to send the repairs to");
        let mut answered = None;
        for url in &urls {
            let request = client
                .post(format!("{url}/internal/v1/repairs"))
                .insert_header((CLUSTER_KEY_HEADER, key.as_str()))
                .insert_header(("content-type", "application/json"));
            let body = serde_json::to_vec(chunk).unwrap_or_default();
            let mut res = match request.send_body(body).await {
                Ok(res) => res,
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            let bytes = res.body().limit(64 << 20).await.map_err(|e| RunError::Node(format!("{url}: {e}")))?;
            if res.status().as_u16() == 403 {
                return Err(RunError::Node(format!(
                    "{url} refused the repairs' key: pass the nodes' secret (--jwt-secret or MATCHD_JWT_SECRET)"
                )));
            }
            if !res.status().is_success() {
                last = format!("{url} answered {}: {}", res.status(), String::from_utf8_lossy(&bytes));
                continue;
            }
            match serde_json::from_slice::<Vec<RepairOutcome>>(&bytes) {
                Ok(list) if list.len() == chunk.len() => {
                    answered = Some(list);
                    break;
                }
                _ => last = format!("{url} answered something unexpected: {}", String::from_utf8_lossy(&bytes)),
            }
        }
        match answered {
            Some(list) => outcomes.extend(list),
            None => outcomes.extend(chunk.iter().map(|_| RepairOutcome::failed(last.clone()))),
        }
    }
    Ok(findings
        .iter()
        .filter_map(|f| {
            let repair = f.repair.as_ref()?;
            let i = unique.iter().position(|r| r == repair)?;
            Some(record(f, outcomes.get(i).cloned().unwrap_or_else(|| RepairOutcome::failed("no answer"))))
        })
        .collect())
}

/// Writes the repairs directly, under the nodes' fencing, from a snapshot read under it.
async fn repair_offline(
    reader: &Reader,
    first: &Snapshot,
    findings: &[Inconsistency],
    outbox_max_age_ms: u64,
) -> Result<Vec<RepairRecord>, RunError> {
    let store = reader.store();
    let now = reader.now_ms().await?;
    let slots = offline::plan(first, findings, now).slots;
    let failed = |e: &OfflineError| {
        findings
            .iter()
            .filter(|f| f.repair.is_some())
            .map(|f| record(f, RepairOutcome::failed(e.to_string())))
            .collect()
    };
    let mut fence = match Fence::acquire(store, &slots).await {
        Ok(fence) => fence,
        Err(OfflineError::Store(e)) => return Err(e.into()),
        Err(e) => return Ok(failed(&e)),
    };
    // What is stored now, under the fence: nobody else writes these slots until it is released.
    let result = async {
        let snapshot = reader.snapshot().await?;
        let now = reader.now_ms().await?;
        let fresh = audit(&snapshot, now, outbox_max_age_ms);
        let plan = offline::plan(&snapshot, &fresh, now);
        fence.write(store, &plan).await?;
        Ok::<_, OfflineError>((fresh, plan))
    }
    .await;
    fence.release(store).await;
    match result {
        Ok((fresh, plan)) => {
            Ok(fresh.iter().zip(plan.outcomes).filter_map(|(f, outcome)| Some(record(f, outcome?))).collect())
        }
        Err(OfflineError::Store(e)) => Err(e.into()),
        Err(e) => Ok(failed(&e)),
    }
}

/// The human summary.
pub fn summary(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "matchd audit of {} ({}: {})", r.redis, r.mode, r.running);
    let _ =
        writeln!(out, "  {} keys: {} pair records, {} users, {} pool lines", r.keys_scanned, r.pairs, r.users, r.pools);
    if r.inconsistencies.is_empty() {
        let _ = writeln!(out, "  no inconsistency");
    } else {
        let _ = writeln!(out, "  {} inconsistencies:", r.inconsistencies.len());
        for f in &r.inconsistencies {
            let _ = writeln!(out, "    {} [{}] {}", f.kind, f.invariant, f.detail);
            if let Some(why) = &f.not_repaired {
                let _ = writeln!(out, "      not repaired: {why}");
            }
        }
    }
    if let Some(repairs) = &r.repairs {
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        for rec in repairs {
            *by_status.entry(rec.status.as_str()).or_insert(0) += 1;
        }
        let counts: Vec<String> = by_status.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let _ = writeln!(out, "  repairs: {}", if counts.is_empty() { "none".to_string() } else { counts.join(", ") });
        for rec in repairs.iter().filter(|r| r.status != RepairStatus::Repaired) {
            let _ = writeln!(out, "    {} {}: {}", rec.kind, rec.status.as_str(), rec.message);
        }
    }
    if let Some(remaining) = &r.remaining {
        if remaining.is_empty() {
            let _ = writeln!(out, "  after repair: no inconsistency");
        } else {
            let _ = writeln!(out, "  after repair, {} left:", remaining.len());
            for f in remaining {
                let _ = writeln!(out, "    {} [{}] {}", f.kind, f.invariant, f.detail);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let cli = AuditCli::try_parse_from(std::iter::once("matchd audit").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Settings::resolve(cli)
    }

    #[test]
    fn flags_resolve_with_defaults_and_bad_values_are_usage_errors() {
        let s = parse(&["--redis", "redis://127.0.0.1:1", "--repair", "--json"]).unwrap();
        assert!(s.repair && s.json);
        assert_eq!(s.outbox_max_age_ms, DEFAULT_OUTBOX_MAX_AGE_MS);
        assert_eq!(s.secret, crate::config::DEV_SECRET);
        assert!(parse(&["--redis", "http://nope"]).unwrap_err().contains("redis"));
        assert!(parse(&["--redis", "redis://x", "--outbox-max-age-ms", "0"]).is_err());
        assert!(parse(&["--redis", "redis://x", "--bogus"]).is_err());
        assert!(parse(&["--redis", "redis://x", "--node", "10.0.0.1:80"]).is_err());
    }

    #[test]
    fn the_config_file_gives_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "redis = \"redis://10.0.0.1:6379\"\njwt_secret = \"0123456789abcdef0123\"\n[audit]\noutbox_max_age_ms = 5000\n")
            .unwrap();
        let s = parse(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(s.redis, "redis://10.0.0.1:6379");
        assert_eq!(s.outbox_max_age_ms, 5000);
        assert_eq!(s.secret, "0123456789abcdef0123");
        let s = parse(&["--config", path.to_str().unwrap(), "--outbox-max-age-ms", "7"]).unwrap();
        assert_eq!(s.outbox_max_age_ms, 7);
    }
}

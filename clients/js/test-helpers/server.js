// The real matchd binary (and redis-server) as child processes for the tests, plus small tools:
// dev tokens, JWTs, raw HTTP calls, a raw reader of a user's event log, bounded waits, and a TCP
// proxy that can refuse new connections (to keep a client away while events happen).
//
// Every process started here is killed when the test file's process exits, whatever happened.

import { spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
/** clients/js */
export const CLIENT_DIR = path.resolve(here, "..");
export const LIBRARY_PATH = path.join(CLIENT_DIR, "matchd.js");

/** `MATCHD_BIN`, else target/debug/matchd of the repository. */
export function matchdBin() {
  const bin = process.env.MATCHD_BIN
    ? path.resolve(CLIENT_DIR, process.env.MATCHD_BIN)
    : path.resolve(CLIENT_DIR, "../../target/debug/matchd");
  if (!fs.existsSync(bin)) {
    throw new Error(`matchd binary not found at ${bin}: build it (cargo build --bin matchd) or set MATCHD_BIN`);
  }
  return bin;
}

const children = new Set();
function killChildren() {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone already
    }
  }
}
process.on("exit", killChildren);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.once(signal, () => {
    killChildren();
    process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[signal]));
  });
}

function tmpDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** A port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Polls `check` (sync or async) until it returns a truthy value; throws after `timeout` ms naming
 * `what` (and `detail()` when given).
 */
export async function waitFor(what, check, { timeout = 10000, interval = 20, detail } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) {
      const extra = detail ? `\n${typeof detail === "function" ? detail() : detail}` : "";
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${extra}`);
    }
    await sleep(interval);
  }
}

/** Waits for `child` to exit; true if it did within `ms`. */
function exited(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once("exit", () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** Keeps the last `max` characters a process printed. */
function capture(child, max = 400_000) {
  const out = { text: "" };
  const add = (chunk) => {
    out.text += chunk.toString();
    if (out.text.length > max) out.text = out.text.slice(-max);
  };
  child.stdout?.on("data", add);
  child.stderr?.on("data", add);
  return out;
}

// === redis ===

export class Redis {
  constructor() {
    this.port = null;
    this.dir = tmpDir("matchd-js-redis-");
    this.child = null;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start() {
    const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
    if (probe.error) {
      throw new Error(`redis-server is missing (${probe.error.code}); install it: apt-get install -y redis-server`);
    }
    this.port = await freePort();
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"];
    args.push("--appendfsync", "always", "--dir", this.dir);
    this.child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
    children.add(this.child);
    this.out = capture(this.child);
    await waitFor("redis-server to answer PING", () => this.ping(), {
      timeout: 10000,
      interval: 50,
      detail: () => this.out.text.slice(-2000),
    });
    return this;
  }

  ping() {
    return new Promise((resolve) => {
      const s = net.connect(this.port, "127.0.0.1");
      let buf = "";
      s.setTimeout(1000, () => {
        s.destroy();
        resolve(false);
      });
      s.on("connect", () => s.write("PING\r\n"));
      s.on("data", (d) => {
        buf += d;
        if (buf.includes("\r\n")) {
          s.destroy();
          resolve(buf.startsWith("+PONG"));
        }
      });
      s.on("error", () => resolve(false));
    });
  }

  async stop() {
    if (!this.child) return;
    this.child.kill("SIGKILL");
    await exited(this.child, 5000);
    children.delete(this.child);
    this.child = null;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// === matchd ===

/** Test defaults: one worker, two shards, limits high enough for the tests, a short lease. */
const BASE_CONFIG = {
  workers: 1,
  shards: 2,
  limits: { actions_per_second: 1000.0, action_burst: 1000, joins_per_minute: 1000, skips_per_minute: 1000 },
  timeouts: { lease_ms: 1000, shutdown_grace_ms: 3000 },
};

function toml(config) {
  const value = (v) => (typeof v === "string" ? JSON.stringify(v) : Number.isInteger(v) && typeof v === "number" ? String(v) : String(v));
  const lines = [];
  const tables = [];
  for (const [k, v] of Object.entries(config)) {
    if (v && typeof v === "object" && !Array.isArray(v)) tables.push([k, v]);
    else lines.push(`${k} = ${Array.isArray(v) ? JSON.stringify(v) : value(v)}`);
  }
  for (const [name, t] of tables) {
    lines.push(`[${name}]`);
    for (const [k, v] of Object.entries(t)) lines.push(`${k} = ${Array.isArray(v) ? JSON.stringify(v) : value(v)}`);
  }
  return lines.join("\n") + "\n";
}

function merge(a, b) {
  const out = { ...a };
  for (const [k, v] of Object.entries(b || {})) {
    out[k] = v && typeof v === "object" && !Array.isArray(v) ? { ...(a[k] || {}), ...v } : v;
  }
  return out;
}

/** One matchd process in dev mode on 127.0.0.1; `restart()` keeps its port (and Redis). */
export class Matchd {
  /** @param {{redis?: Redis, config?: object}} [options] */
  constructor({ redis = null, config = {} } = {}) {
    this.redis = redis;
    this.dir = tmpDir("matchd-js-");
    this.configPath = path.join(this.dir, "matchd.toml");
    fs.writeFileSync(this.configPath, toml(merge(BASE_CONFIG, config)));
    this.port = null;
    this.child = null;
    /** Everything every run printed. */
    this.log = "";
    this.runs = 0;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    const bin = matchdBin();
    if (this.port === null) this.port = await freePort();
    const args = ["--listen", `127.0.0.1:${this.port}`, "--config", this.configPath];
    if (this.redis) args.push("--redis", this.redis.url);
    const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || "info" };
    delete env.MATCHD_JWT_SECRET;
    delete env.MATCHD_REDIS;
    delete env.MATCHD_CONFIG;
    const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env });
    children.add(child);
    this.child = child;
    this.runs += 1;
    const run = this.runs;
    const out = capture(child);
    this._out = out;
    child.once("exit", () => {
      this.log += `\n--- run ${run} ---\n${out.text}`;
      children.delete(child);
    });
    const path = this.redis ? "/readyz" : "/healthz";
    await waitFor(`matchd on port ${this.port} to answer ${path}`, async () => {
      if (child.exitCode !== null) throw new Error(`matchd exited (${child.exitCode}) before it was up:\n${out.text.slice(-3000)}`);
      return (await status(`${this.base}${path}`)) === 200;
    }, { timeout: 20000, interval: 50, detail: () => out.text.slice(-3000) });
    return this;
  }

  /** What the current run printed so far. */
  output() {
    return this._out ? this._out.text : "";
  }

  /** Stops the process (SIGTERM: a graceful drain, streams closed with 1012), then SIGKILL. */
  async stop(signal = "SIGTERM") {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      if (!(await exited(child, 15000))) {
        child.kill("SIGKILL");
        await exited(child, 5000);
      }
    }
  }

  async restart(signal = "SIGTERM") {
    await this.stop(signal);
    await this.start();
  }

  async dispose() {
    await this.stop("SIGKILL");
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

async function status(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

// === HTTP ===

/** One JSON call: `{status, body, headers}`. */
export async function call(base, method, p, { token, body, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  if (body !== undefined) h["Content-Type"] = "application/json";
  const res = await fetch(base + p, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10000),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: res.status, body: json, headers: res.headers };
}

/** `POST /v1/dev/token`. */
export async function devToken(base, user) {
  const res = await call(base, "POST", "/v1/dev/token", { body: { user_id: user } });
  if (res.status !== 200) throw new Error(`dev token for ${user}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.token;
}

/** An HS256 JWT (dev mode's secret by default); `exp` in unix seconds, omitted when null. */
export function mintJwt(sub, { exp = null, secret = "dev-secret" } = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const claims = exp === null ? { sub } : { sub, exp };
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const sig = crypto.createHmac("sha256", secret).update(unsigned).digest("base64url");
  return `${unsigned}.${sig}`;
}

/** A unique user id for one test. */
let seq = 0;
export function uid(name) {
  seq += 1;
  return `${name}${seq}-${crypto.randomBytes(3).toString("hex")}`;
}

/** Both users swipe right on each other (HTTP); the match. */
export async function mutualMatch(base, a, b) {
  const ta = await devToken(base, a);
  const tb = await devToken(base, b);
  const first = await call(base, "POST", "/v1/swipes", { token: ta, body: { target: b, direction: "right" } });
  if (first.status !== 200 || first.body.status !== "pending") throw new Error(`swipe ${a}->${b}: ${JSON.stringify(first)}`);
  const second = await call(base, "POST", "/v1/swipes", { token: tb, body: { target: a, direction: "right" } });
  if (second.status !== 200 || second.body.status !== "matched") throw new Error(`swipe ${b}->${a}: ${JSON.stringify(second)}`);
  return second.body.match;
}

/**
 * The user's event log as the server holds it: a raw SSE stream with `since` (0 = everything it
 * keeps), read until the newest id the `hello` names. Returns `{hello, events}`.
 */
export async function readLog(base, token, since = 0, { timeout = 10000 } = {}) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeout);
  const events = [];
  let hello = null;
  try {
    const res = await fetch(`${base}/v1/events?since=${since}`, {
      headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
      signal: ctl.signal,
    });
    if (res.status !== 200) throw new Error(`log stream: ${res.status} ${await res.text()}`);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      if (hello && (hello.data.last_id <= since || events.some((e) => e.id === hello.data.last_id))) break;
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue;
        const frame = JSON.parse(data);
        if (frame.type === "hello") hello = frame;
        else events.push(frame);
      }
    }
  } finally {
    clearTimeout(timer);
    ctl.abort();
  }
  return { hello, events };
}

// === proxy ===

/** A TCP proxy on 127.0.0.1 to `targetPort` that can refuse new connections and cut open ones. */
export class TcpProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.accepting = true;
    this.sockets = new Set();
    this.refused = 0;
    this.server = net.createServer((client) => this._conn(client));
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  start() {
    return new Promise((resolve) => {
      this.server.listen(0, "127.0.0.1", () => {
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  _conn(client) {
    if (!this.accepting) {
      this.refused += 1;
      client.destroy();
      return;
    }
    const upstream = net.connect(this.targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  }

  /** New connections are closed at once (open ones go on). */
  block() {
    this.accepting = false;
  }

  unblock() {
    this.accepting = true;
  }

  stop() {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// === recording a client ===

/** Collects what a client emits: `events` (server events, in order) and `log` (everything). */
export function record(client) {
  const events = [];
  const log = [];
  client.on("*", (e) => events.push(e));
  for (const t of ["connected", "disconnected", "gap", "connecting"]) client.on(t, (info) => log.push({ type: t, ...info }));
  return {
    events,
    log,
    of: (type) => events.filter((e) => e.type === type),
    client: (type) => log.filter((e) => e.type === type),
  };
}

/** Asserts ids strictly increase; returns them. */
export function ids(events) {
  const out = events.filter((e) => typeof e.id === "number" && e.type !== "hello").map((e) => e.id);
  for (let i = 1; i < out.length; i++) {
    if (!(out[i] > out[i - 1])) throw new Error(`event ids are not strictly increasing: ${out.join(",")}`);
  }
  return out;
}

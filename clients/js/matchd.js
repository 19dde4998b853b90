// matchd-client: the JavaScript client of matchd, one ES module with no dependencies.
//
// Works in browsers and in Node >= 20. Where the runtime has no WebSocket (Node 20) pass one in
// (`WebSocket` option, any implementation with the browser's interface); Server-Sent Events use the
// runtime's EventSource when there is one (or the `EventSource` option), else a small reader over
// `fetch` built into this module.
//
//   import { MatchdClient } from "./matchd.js";
//   const client = new MatchdClient({ url: "http://127.0.0.1:8080", token });
//   client.on("match", (e) => console.log("matched", e.data.match));
//   await client.connect();
//   await client.swipe("bob", "right");
//
// The stream: one connection at a time (WebSocket, or SSE), reconnected by itself with exponential
// backoff and full jitter, resumed from `lastEventId` (`?since=` on WebSocket, `Last-Event-ID` or
// `?since=` on SSE); an event whose id is not above `lastEventId` is never delivered again. Close
// code 4009 (too many connections) and a refused token (without `getToken`, or refused again after
// it) stop the retries. Actions go over the WebSocket (frames with a `ref`) while it is connected,
// over HTTP otherwise.

/**
 * @typedef {"ws" | "sse" | "auto"} Transport
 */

/**
 * @typedef {object} MatchdClientOptions
 * @property {string} [url] Base URL of the server (`http://host:port`, optionally with a path
 *   prefix). Defaults to the page's origin in a browser.
 * @property {string} [token] A JWT (HS256, `sub` = the user id).
 * @property {() => (string | Promise<string>)} [getToken] Called for a token when there is none yet
 *   and again whenever the server refuses the current one (HTTP 401, or a stream refused with 401).
 * @property {Transport} [transport] `"ws"` (default), `"sse"`, or `"auto"`: WebSocket, falling
 *   back to SSE for the rest of the client's life when a WebSocket cannot be opened while the
 *   server answers HTTP.
 * @property {any} [WebSocket] A WebSocket constructor (browser interface); default the global one.
 * @property {any} [EventSource] An EventSource constructor; default the global one, else a reader
 *   over `fetch`.
 * @property {typeof fetch} [fetch] Default the global `fetch`.
 * @property {number} [minBackoffMs] First reconnect delay bound (default 250).
 * @property {number} [maxBackoffMs] Largest reconnect delay bound (default 15000).
 * @property {number} [actionTimeoutMs] How long an action waits for its answer (default 10000);
 *   past it the promise rejects with code `timeout`.
 * @property {number} [pingIntervalMs] A WebSocket silent this long gets a `ping` frame; silent for
 *   twice as long, it counts as dead (a network that dropped it without a close) and the client
 *   reconnects. Default 20000; 0 turns it off.
 * @property {number | null} [lastEventId] Resume point to start from (e.g. kept across page loads).
 */

/**
 * @typedef {object} Match
 * @property {string} match_id
 * @property {[string, string]} users Sorted.
 * @property {number} created_at Unix ms.
 */

/**
 * @typedef {object} Room
 * @property {string} room_id
 * @property {string} pool
 * @property {string[]} users
 * @property {number} created_at Unix ms.
 * @property {Record<string, any>} payload
 */

/**
 * A user event as the server sends it. `id` is per user and strictly increasing; replies
 * (`ack`, `pong`, `error` answering a frame) have none.
 * @template {string} T
 * @template D
 * @typedef {{id: number, type: T, data: D}} MatchdEvent
 */

/**
 * @typedef {MatchdEvent<"hello", {user: string, node: string, last_id: number,
 *   resumed_from: number | null, gap: boolean}>} HelloEvent
 * @typedef {MatchdEvent<"match", {match: Match}>} MatchEvent
 * @typedef {MatchdEvent<"unmatched", {match_id: string, by: string, reason?: "server_repair"}>} UnmatchedEvent
 * @typedef {MatchdEvent<"room_assigned", {room: Room}>} RoomAssignedEvent
 * @typedef {MatchdEvent<"room_closed", {room_id: string, reason: string}>} RoomClosedEvent
 * @typedef {MatchdEvent<"queue_update", {pool: string, position: number,
 *   estimated_wait_ms: number}>} QueueUpdateEvent
 * @typedef {{id?: number, type: "error", ref?: any, data: {code: string, message: string,
 *   ref?: any}}} ErrorEvent
 */

/**
 * `connected`: a stream is open and its `hello` arrived.
 * @typedef {object} ConnectedInfo
 * @property {"ws" | "sse"} transport
 * @property {HelloEvent} hello
 */

/**
 * `disconnected`: a stream ended, or an attempt to open one failed.
 * @typedef {object} DisconnectedInfo
 * @property {number} code WebSocket close code; 1006 when the stream failed without one (SSE,
 *   a refused upgrade, a network error); 1000 after `close()`.
 * @property {string} reason
 * @property {boolean} willRetry
 * @property {number} [retryInMs] The delay before the next attempt, when `willRetry`.
 * @property {number} [status] The HTTP status that refused the stream, when known (401, 409...).
 * @property {"ws" | "sse"} [transport]
 */

/**
 * `gap`: the server could not replay every event after the resume point (refetch state, e.g.
 * `matches()`).
 * @typedef {object} GapInfo
 * @property {number | null} resumedFrom
 * @property {number} lastId
 * @property {HelloEvent} hello
 */

/**
 * `connecting`: an attempt to open a stream starts.
 * @typedef {object} ConnectingInfo
 * @property {"ws" | "sse"} transport
 * @property {number | null} since The resume point sent.
 * @property {number} attempt 0 for the first attempt after a connection (or `connect()`).
 */

/**
 * @typedef {object} SwipeAnswer
 * @property {"pending" | "matched" | "passed"} status
 * @property {Match | null} match
 * @typedef {{status: "queued", pool: string, position: number, estimated_wait_ms: number} |
 *   {status: "matched", room: Room}} JoinAnswer
 * @typedef {{status: "left", pool: string} | {status: "not_queued"} |
 *   {status: "in_room", room_id: string}} LeaveAnswer
 * @typedef {{status: "skipped", requeued: boolean}} SkipAnswer
 * @typedef {{status: "unmatched"}} UnmatchAnswer
 * @typedef {{matches: Match[]}} MatchesAnswer
 */

const DEFAULTS = { minBackoffMs: 250, maxBackoffMs: 15000, actionTimeoutMs: 10000, pingIntervalMs: 20000 };

/** Close codes after which the client does not reconnect. */
const TERMINAL_CLOSE_CODES = new Set([4009]);

/** The HTTP status of each contract error code (WebSocket errors carry only the code). */
const STATUS_OF_CODE = {
  bad_request: 400,
  invalid_user: 400,
  self_swipe: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  rate_limited: 429,
  unavailable: 503,
};

/** Event types the server defines; an EventSource listens to these plus every type given to `on`. */
const BUILTIN_TYPES = ["hello", "match", "unmatched", "room_assigned", "room_closed", "queue_update", "error"];

/** Types the client itself emits (never sent by the server). */
const CLIENT_TYPES = new Set(["connected", "disconnected", "gap", "connecting", "*"]);

const WS_OPEN = 1;

/**
 * An action's failure. `status` is the HTTP status (for a WebSocket error, the status of its code);
 * 0 for failures with no answer (`timeout`, `network_error`, `disconnected`).
 */
export class MatchdError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {number} status
   * @param {{retryAfter?: number, cause?: unknown}} [extra]
   */
  constructor(code, message, status, extra = {}) {
    super(message);
    this.name = "MatchdError";
    /** @type {string} */
    this.code = code;
    /** @type {number} */
    this.status = status;
    /** Seconds from `Retry-After` (429, 503), when given. @type {number | undefined} */
    this.retryAfter = extra.retryAfter;
    if (extra.cause !== undefined) this.cause = extra.cause;
  }
}

function report(err) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(err);
  else if (typeof console !== "undefined") console.error(err);
}

function defaultBase() {
  const loc = globalThis.location;
  return loc && /^https?:$/.test(loc.protocol) ? loc.origin : "";
}

/** Keeps only the fields that are set. */
function compact(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj)) if (v !== undefined) out[k] = v;
  return out;
}

/**
 * Parses a text/event-stream body into `{id, event, data}` blocks (the subset matchd sends:
 * `id:`, `event:`, `data:` lines and `:` comments).
 */
class SseParser {
  constructor(onBlock) {
    this.onBlock = onBlock;
    this.buf = "";
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }

  push(text) {
    this.buf += text;
    let nl;
    while ((nl = this.buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buf.slice(0, nl);
      const len = this.buf[nl] === "\r" && this.buf[nl + 1] === "\n" ? 2 : 1;
      if (this.buf[nl] === "\r" && nl + 1 === this.buf.length) break; // wait: "\r\n" may be split
      this.buf = this.buf.slice(nl + len);
      this.line(line);
    }
  }

  line(line) {
    if (line === "") {
      if (this.data.length > 0) this.onBlock({ id: this.id, event: this.event || "message", data: this.data.join("\n") });
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id") this.id = value;
  }
}

export class MatchdClient {
  /** @param {MatchdClientOptions} options */
  constructor(options = {}) {
    const o = { ...DEFAULTS, ...compact(options) };
    if (!o.token && typeof o.getToken !== "function") {
      throw new TypeError("MatchdClient needs a token or a getToken function");
    }
    const transport = o.transport || "ws";
    if (!["ws", "sse", "auto"].includes(transport)) {
      throw new TypeError(`transport must be "ws", "sse" or "auto", not ${JSON.stringify(transport)}`);
    }
    this._base = String(o.url ?? defaultBase()).replace(/\/+$/, "");
    this._token = o.token || null;
    this._getToken = typeof o.getToken === "function" ? o.getToken : null;
    this._transport = transport;
    this._WebSocket = o.WebSocket || null;
    this._EventSource = o.EventSource || null;
    const f = o.fetch || globalThis.fetch;
    // Called as a plain function: a browser's fetch refuses any other `this` than the window.
    this._fetch = typeof f === "function" ? (...args) => f(...args) : null;
    const num = (v, dflt) => (Number.isFinite(Number(v)) ? Number(v) : dflt);
    this._minBackoff = Math.max(0, num(o.minBackoffMs, DEFAULTS.minBackoffMs));
    this._maxBackoff = Math.max(this._minBackoff, num(o.maxBackoffMs, DEFAULTS.maxBackoffMs));
    this._actionTimeout = Math.max(1, num(o.actionTimeoutMs, DEFAULTS.actionTimeoutMs));
    this._pingInterval = Math.max(0, num(o.pingIntervalMs, DEFAULTS.pingIntervalMs));
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    this._lastEventId = typeof o.lastEventId === "number" ? o.lastEventId : null;
    this._wanted = false;
    this._state = "idle";
    this._gen = 0;
    this._conn = null;
    /** @type {"ws" | "sse" | null} */
    this._lastKind = null;
    this._timer = null;
    this._attempt = 0;
    this._authRefusals = 0;
    this._sseFallback = transport === "sse";
    this._wsEverOpened = false;
    this._refSeq = 0;
    /** @type {Map<string, {resolve: Function, reject: Function, timer: any}>} */
    this._pending = new Map();
    this._ready = null;
  }

  /** The id of the newest event delivered (or the resume point the server gave); null before any. */
  get lastEventId() {
    return this._lastEventId;
  }

  /** `"idle"`, `"connecting"`, `"connected"`, `"reconnecting"` or `"closed"`. */
  get state() {
    return this._state;
  }

  /** The transport of the current (or last) stream: `"ws"`, `"sse"`, or null before any. */
  get transport() {
    return this._conn ? this._conn.kind : this._lastKind || null;
  }

  /**
   * Listens to an event type: a server event (`hello`, `match`, `unmatched`, `room_assigned`,
   * `room_closed`, `queue_update`, `error`, or any type the app's backend publishes), `"*"` for
   * every server event, or a client event (`connected`, `disconnected`, `gap`, `connecting`).
   * Server events are passed as `{id, type, data}`.
   * @param {string} type
   * @param {(payload: any) => void} fn
   * @returns {() => void} Removes the listener.
   */
  on(type, fn) {
    if (typeof fn !== "function") throw new TypeError("on(type, fn) needs a function");
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    const es = this._conn && this._conn.es;
    if (es && !CLIENT_TYPES.has(type)) this._listenSse(this._conn, type);
    return () => {
      set.delete(fn);
    };
  }

  _emit(type, payload) {
    const run = (set) => {
      if (!set) return;
      for (const fn of [...set]) {
        try {
          fn(payload);
        } catch (err) {
          report(err);
        }
      }
    };
    run(this._listeners.get(type));
    if (!CLIENT_TYPES.has(type)) run(this._listeners.get("*"));
  }

  /**
   * Opens the stream (and keeps it open until `close()`). Resolves with the first `hello`; rejects
   * when the client stops before one (4009, a refused token, `close()`).
   * @returns {Promise<HelloEvent>}
   */
  connect() {
    if (this._wanted && this._ready) return this._ready.promise;
    this._wanted = true;
    this._attempt = 0;
    this._authRefusals = 0;
    const ready = {};
    ready.promise = new Promise((resolve, reject) => Object.assign(ready, { resolve, reject }));
    // Callers that ignore the promise must not see an unhandled rejection.
    ready.promise.catch(() => {});
    this._ready = ready;
    this._setState("connecting");
    this._open();
    return ready.promise;
  }

  /**
   * Drops the current stream and opens a new one at once, resuming from `lastEventId` (what a
   * network drop followed by a quick reconnect does). Same as `connect()` when not connected.
   * @returns {Promise<HelloEvent>} The next `hello`.
   */
  reconnect() {
    if (!this._wanted) return this.connect();
    const conn = this._conn;
    this._conn = null;
    this._gen++;
    clearTimeout(this._timer);
    this._timer = null;
    if (conn) this._shut(conn, 4000, "reconnect requested by the client");
    this._failPending(
      new MatchdError("disconnected", "the connection closed before the server answered; the outcome is unknown", 0),
    );
    const ready = {};
    ready.promise = new Promise((resolve, reject) => Object.assign(ready, { resolve, reject }));
    ready.promise.catch(() => {});
    if (this._ready && !this._ready.done) {
      const old = this._ready;
      ready.promise.then(old.resolve, old.reject);
    }
    this._ready = ready;
    this._attempt = 0;
    this._setState("reconnecting");
    const kind = conn ? conn.kind : this._lastKind;
    this._emit("disconnected", compact({ code: 4000, reason: "reconnect requested by the client", willRetry: true, retryInMs: 0, transport: kind }));
    this._open();
    return ready.promise;
  }

  /** Closes the stream and stops reconnecting. Actions still work (over HTTP). */
  close() {
    const wasWanted = this._wanted;
    this._wanted = false;
    clearTimeout(this._timer);
    this._timer = null;
    this._gen++;
    const conn = this._conn;
    this._conn = null;
    if (conn) this._shut(conn, 1000, "closed by the client");
    this._failPending(new MatchdError("disconnected", "the client was closed before the server answered", 0));
    this._settleReady(new MatchdError("closed", "the client was closed", 0));
    this._setState("closed");
    if (wasWanted) this._emit("disconnected", { code: 1000, reason: "closed by the client", willRetry: false });
  }

  _setState(s) {
    this._state = s;
  }

  _settleReady(err, hello) {
    const ready = this._ready;
    if (!ready || ready.done) return;
    ready.done = true;
    if (err) ready.reject(err);
    else ready.resolve(hello);
  }

  // === tokens ===

  async _tokenNow() {
    if (this._token) return this._token;
    if (!this._getToken) throw new MatchdError("unauthorized", "no token", 401);
    if (!this._tokenPromise) {
      this._tokenPromise = Promise.resolve()
        .then(() => this._getToken())
        .then((t) => {
          if (typeof t !== "string" || !t) throw new MatchdError("unauthorized", "getToken gave no token", 401);
          this._token = t;
          return t;
        })
        .finally(() => {
          this._tokenPromise = null;
        });
    }
    return this._tokenPromise;
  }

  /** Forgets `token` if it is still the current one, so the next use asks `getToken`. */
  _refuseToken(token) {
    if (this._getToken && this._token === token) this._token = null;
  }

  // === the stream ===

  _wsUrl(token) {
    const q = new URLSearchParams({ token });
    if (this._lastEventId !== null) q.set("since", String(this._lastEventId));
    return `${this._base.replace(/^http/, "ws")}/v1/ws?${q}`;
  }

  _sseUrl(token) {
    const q = new URLSearchParams();
    if (token) q.set("token", token);
    if (this._lastEventId !== null) q.set("since", String(this._lastEventId));
    const qs = q.toString();
    return `${this._base}/v1/events${qs ? "?" + qs : ""}`;
  }

  _wsCtor() {
    return this._WebSocket || globalThis.WebSocket || null;
  }

  async _open() {
    clearTimeout(this._timer);
    this._timer = null;
    if (!this._wanted) return;
    const gen = ++this._gen;
    let token;
    try {
      token = await this._tokenNow();
    } catch (err) {
      if (gen !== this._gen || !this._wanted) return;
      if (err instanceof MatchdError && err.code === "unauthorized" && !this._getToken) {
        return this._stop(1006, err.message, 401);
      }
      return this._retry({ code: 1006, reason: `getToken failed: ${err && err.message}` });
    }
    if (gen !== this._gen || !this._wanted) return;
    const useSse = this._sseFallback || (this._transport === "auto" && !this._wsCtor());
    if (useSse) return this._openSse(gen, token);
    return this._openWs(gen, token);
  }

  _openWs(gen, token) {
    const Ctor = this._wsCtor();
    if (!Ctor) {
      return this._stop(1006, "no WebSocket implementation: pass the WebSocket option (or use transport \"sse\")");
    }
    const conn = { kind: "ws", gen, token, opened: false, connected: false, ws: null };
    this._conn = conn;
    this._lastKind = "ws";
    this._emit("connecting", { transport: "ws", since: this._lastEventId, attempt: this._attempt });
    let ws;
    try {
      ws = new Ctor(this._wsUrl(token));
    } catch (err) {
      this._conn = null;
      if (this._transport === "auto") {
        // The runtime refuses WebSockets (blocked, or not allowed here): use SSE from now on.
        this._sseFallback = true;
        return this._openSse(gen, token);
      }
      return this._stop(1006, `cannot open a WebSocket: ${err && err.message}`);
    }
    conn.ws = ws;
    ws.onopen = () => {
      if (this._conn !== conn) return;
      conn.opened = true;
      this._wsEverOpened = true;
    };
    ws.onmessage = (m) => {
      if (this._conn !== conn) return;
      conn.lastFrame = Date.now();
      let frame;
      try {
        frame = JSON.parse(typeof m.data === "string" ? m.data : String(m.data));
      } catch {
        return;
      }
      this._frame(conn, frame);
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      clearInterval(conn.pingTimer);
      if (this._conn !== conn) return;
      this._conn = null;
      this._failPending(
        new MatchdError("disconnected", "the connection closed before the server answered; the outcome is unknown", 0),
      );
      const code = ev && typeof ev.code === "number" ? ev.code : 1006;
      const reason = (ev && ev.reason) || "";
      if (!conn.opened) return this._failedBeforeOpen(conn, code, reason);
      this._ended(conn, code, reason);
    };
  }

  /** What to do after a stream that never opened: find out why with one plain HTTP request. */
  async _failedBeforeOpen(conn, code, reason) {
    const status = await this._probe(conn);
    if (conn.gen !== this._gen || !this._wanted) return;
    if (status === 401) return this._authRefused(conn, code);
    if (conn.kind === "sse" && status === 409) {
      return this._stop(4009, "too many connections for this user (409 conflict)", 409);
    }
    if (conn.kind === "ws" && this._transport === "auto" && !this._wsEverOpened && status >= 200 && status < 500) {
      // HTTP works but the WebSocket does not: blocked on the way. SSE from now on.
      this._sseFallback = true;
      this._emit("disconnected", {
        code,
        reason: "the WebSocket could not be opened; switching to SSE",
        willRetry: true,
        retryInMs: 0,
        transport: "ws",
      });
      return this._open();
    }
    this._retry({ code, reason: reason || (status ? `stream refused (${status})` : "server unreachable"), status: status || undefined, transport: conn.kind });
  }

  /**
   * The status the server gives this client's token: for a WebSocket `GET /v1/matches`, for SSE
   * the stream itself (its answer head only). 0 when the server cannot be reached.
   */
  async _probe(conn) {
    if (!this._fetch) return 0;
    const ctl = typeof AbortController === "function" ? new AbortController() : null;
    const timer = setTimeout(() => ctl && ctl.abort(), 5000);
    try {
      const path = conn.kind === "sse" ? this._sseUrl(null) : `${this._base}/v1/matches`;
      const headers = { Authorization: `Bearer ${conn.token}` };
      if (conn.kind === "sse") headers.Accept = "text/event-stream";
      const res = await this._fetch(path, { method: "GET", headers, signal: ctl ? ctl.signal : undefined });
      const status = res.status;
      try {
        if (res.body && typeof res.body.cancel === "function") await res.body.cancel();
      } catch {
        // ignore
      }
      return status;
    } catch {
      return 0;
    } finally {
      clearTimeout(timer);
      if (ctl) ctl.abort();
    }
  }

  _authRefused(conn, code) {
    this._refuseToken(conn.token);
    this._authRefusals += 1;
    if (this._getToken && this._authRefusals <= 2) {
      return this._retry({ code, reason: "the token was refused; asking getToken for another", status: 401, transport: conn.kind });
    }
    this._stop(code, "the token was refused (401 unauthorized)", 401);
  }

  _ended(conn, code, reason) {
    if (TERMINAL_CLOSE_CODES.has(code)) {
      return this._stop(code, reason || "too many connections for this user", undefined, conn.kind);
    }
    this._retry({ code, reason, transport: conn.kind });
  }

  _retry(info) {
    if (!this._wanted) return;
    const cap = Math.min(this._maxBackoff, this._minBackoff * 2 ** Math.min(this._attempt, 30));
    const delay = Math.round(Math.random() * cap);
    this._attempt += 1;
    this._setState("reconnecting");
    this._emit("disconnected", compact({ ...info, willRetry: true, retryInMs: delay }));
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }

  _stop(code, reason, status, transport) {
    this._wanted = false;
    clearTimeout(this._timer);
    this._timer = null;
    this._gen++;
    this._setState("closed");
    const errCode = status === 401 ? "unauthorized" : code === 4009 ? "conflict" : "disconnected";
    const err = new MatchdError(errCode, reason, status || STATUS_OF_CODE[errCode] || 0);
    this._settleReady(err);
    this._emit("disconnected", compact({ code, reason, willRetry: false, status, transport }));
  }

  _shut(conn, code, reason) {
    clearInterval(conn.pingTimer);
    try {
      if (conn.ws) conn.ws.close(code, reason);
      if (conn.es) conn.es.close();
      if (conn.abort) conn.abort.abort();
    } catch {
      // already closed
    }
  }

  /** One frame of the stream (WebSocket message or SSE block). */
  _frame(conn, frame) {
    if (!frame || typeof frame !== "object") return;
    const type = frame.type;
    if (type === "ack" || type === "pong" || (type === "error" && frame.ref != null && this._pending.has(String(frame.ref)))) {
      const ref = frame.ref == null ? null : String(frame.ref);
      const p = ref !== null ? this._pending.get(ref) : undefined;
      if (p) {
        this._pending.delete(ref);
        clearTimeout(p.timer);
        if (type === "error") {
          const d = frame.data || {};
          p.reject(new MatchdError(d.code || "error", d.message || "the server refused the action", STATUS_OF_CODE[d.code] || 0));
        } else {
          p.resolve(frame.data);
        }
        return;
      }
      if (type !== "error") return;
    }
    if (type === "hello") return this._hello(conn, frame);
    if (typeof frame.id === "number") {
      if (this._lastEventId !== null && frame.id <= this._lastEventId) return; // seen already
      this._lastEventId = frame.id;
    }
    if (typeof type === "string") this._emit(type, frame);
  }

  _hello(conn, frame) {
    if (conn.connected) return; // one per connection
    const d = frame.data || {};
    const resumedFrom = this._lastEventId;
    if (typeof frame.id === "number") {
      // The hello's id is the connection's resume point. It only goes back when the server says the
      // old point is gone (a server that lost its memory numbers from scratch again).
      if (this._lastEventId === null || frame.id >= this._lastEventId || d.gap) this._lastEventId = frame.id;
    }
    conn.connected = true;
    if (conn.kind === "ws" && this._pingInterval > 0) {
      conn.lastFrame = Date.now();
      conn.pingTimer = setInterval(() => this._pingTick(conn), Math.max(10, this._pingInterval / 2));
    }
    this._attempt = 0;
    this._authRefusals = 0;
    this._setState("connected");
    this._emit("hello", frame);
    this._emit("connected", { transport: conn.kind, hello: frame });
    if (d.gap) this._emit("gap", { resumedFrom: d.resumed_from ?? resumedFrom, lastId: d.last_id, hello: frame });
    this._settleReady(null, frame);
  }

  /** Keeps a quiet WebSocket checked: a ping when idle, a reconnect when nothing came back. */
  _pingTick(conn) {
    if (this._conn !== conn) return clearInterval(conn.pingTimer);
    const idle = Date.now() - conn.lastFrame;
    if (idle >= 2 * this._pingInterval) {
      this._conn = null;
      this._shut(conn, 4000, "no answer to pings");
      this._failPending(
        new MatchdError("disconnected", "the connection went silent before the server answered; the outcome is unknown", 0),
      );
      return this._ended(conn, 1006, `the connection went silent (nothing for ${idle} ms, pings unanswered)`);
    }
    if (idle >= this._pingInterval) {
      try {
        conn.ws.send(JSON.stringify({ type: "ping", ref: `p${++this._refSeq}` }));
      } catch {
        // closing: onclose follows
      }
    }
  }

  // === SSE ===

  _esCtor() {
    return this._EventSource || globalThis.EventSource || null;
  }

  _openSse(gen, token) {
    const conn = { kind: "sse", gen, token, opened: false, connected: false, es: null, abort: null, types: new Set() };
    this._conn = conn;
    this._lastKind = "sse";
    this._emit("connecting", { transport: "sse", since: this._lastEventId, attempt: this._attempt });
    const ES = this._esCtor();
    if (ES) return this._openEventSource(conn, ES);
    if (!this._fetch) return this._stop(1006, "no EventSource and no fetch: pass the EventSource option");
    this._openFetchSse(conn);
  }

  _openEventSource(conn, ES) {
    let es;
    try {
      es = new ES(this._sseUrl(conn.token));
    } catch (err) {
      this._conn = null;
      return this._stop(1006, `cannot open an EventSource: ${err && err.message}`);
    }
    conn.es = es;
    es.onopen = () => {
      if (this._conn === conn) conn.opened = true;
    };
    es.onmessage = (m) => this._sseMessage(conn, m);
    for (const t of BUILTIN_TYPES) this._listenSse(conn, t);
    for (const t of this._listeners.keys()) if (!CLIENT_TYPES.has(t)) this._listenSse(conn, t);
    es.onerror = () => {
      if (this._conn !== conn) return;
      // The client reconnects by itself (with its own backoff and `since`), not the EventSource.
      es.close();
      this._conn = null;
      if (!conn.opened) return this._failedBeforeOpen(conn, 1006, "");
      this._ended(conn, 1006, "the event stream ended");
    };
  }

  _listenSse(conn, type) {
    if (!conn.es || conn.types.has(type)) return;
    conn.types.add(type);
    conn.es.addEventListener(type, (m) => this._sseMessage(conn, m));
  }

  _sseMessage(conn, m) {
    if (this._conn !== conn) return;
    let frame;
    try {
      frame = JSON.parse(m.data);
    } catch {
      return;
    }
    this._frame(conn, frame);
  }

  async _openFetchSse(conn) {
    const ctl = new AbortController();
    conn.abort = ctl;
    const headers = { Accept: "text/event-stream", Authorization: `Bearer ${conn.token}` };
    if (this._lastEventId !== null) headers["Last-Event-ID"] = String(this._lastEventId);
    let res;
    try {
      res = await this._fetch(this._sseUrl(null), { headers, signal: ctl.signal });
    } catch (err) {
      if (this._conn !== conn) return;
      this._conn = null;
      return this._retry({ code: 1006, reason: `server unreachable (${err && err.message})`, transport: "sse" });
    }
    if (this._conn !== conn) {
      ctl.abort();
      return;
    }
    if (res.status !== 200 || !res.body) {
      this._conn = null;
      ctl.abort();
      if (res.status === 401) return this._authRefused(conn, 1006);
      if (res.status === 409) return this._stop(4009, "too many connections for this user (409 conflict)", 409, "sse");
      return this._retry({ code: 1006, reason: `stream refused (${res.status})`, status: res.status, transport: "sse" });
    }
    conn.opened = true;
    const parser = new SseParser((block) => {
      if (this._conn !== conn) return;
      let frame;
      try {
        frame = JSON.parse(block.data);
      } catch {
        return;
      }
      this._frame(conn, frame);
    });
    const decoder = new TextDecoder();
    let why = "the event stream ended";
    try {
      const reader = res.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this._conn !== conn) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch (err) {
      why = `the event stream failed (${err && err.message})`;
    }
    if (this._conn !== conn) return;
    this._conn = null;
    ctl.abort();
    this._ended(conn, 1006, why);
  }

  // === actions ===

  _failPending(err) {
    for (const [ref, p] of this._pending) {
      this._pending.delete(ref);
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  _wsReady() {
    const c = this._conn;
    return c && c.kind === "ws" && c.connected && c.ws && c.ws.readyState === WS_OPEN ? c : null;
  }

  /** Sends an action as a WebSocket frame when connected, else as its HTTP request. */
  _action(frame, method, path, body) {
    const conn = this._wsReady();
    if (!conn) return this._http(method, path, body);
    const ref = `r${++this._refSeq}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this._pending.delete(ref)) {
          reject(new MatchdError("timeout", `no answer to ${frame.type} within ${this._actionTimeout} ms`, 0));
        }
      }, this._actionTimeout);
      this._pending.set(ref, { resolve, reject, timer });
      try {
        conn.ws.send(JSON.stringify({ ...frame, ref }));
      } catch (err) {
        this._pending.delete(ref);
        clearTimeout(timer);
        reject(new MatchdError("disconnected", `the frame could not be sent: ${err && err.message}`, 0, { cause: err }));
      }
    });
  }

  async _http(method, path, body, retried = false) {
    if (!this._fetch) throw new MatchdError("network_error", "no fetch implementation: pass the fetch option", 0);
    const token = await this._tokenNow();
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const ctl = typeof AbortController === "function" ? new AbortController() : null;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (ctl) ctl.abort();
    }, this._actionTimeout);
    let res;
    let text;
    try {
      res = await this._fetch(this._base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctl ? ctl.signal : undefined,
      });
      text = await res.text();
    } catch (err) {
      if (timedOut) throw new MatchdError("timeout", `no answer to ${method} ${path} within ${this._actionTimeout} ms`, 0);
      throw new MatchdError("network_error", `${method} ${path} failed: ${err && err.message}`, 0, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (res.ok) return data;
    if (res.status === 401 && this._getToken && !retried) {
      // Refused before anything ran: safe to send again with a fresh token.
      this._refuseToken(token);
      return this._http(method, path, body, true);
    }
    const e = (data && data.error) || {};
    const ra = Number(res.headers && res.headers.get && res.headers.get("retry-after"));
    throw new MatchdError(e.code || `http_${res.status}`, e.message || `HTTP ${res.status}`, res.status, {
      retryAfter: Number.isFinite(ra) && ra >= 0 && res.headers.get("retry-after") !== null ? ra : undefined,
    });
  }

  /**
   * `POST /v1/swipes` (or a `swipe` frame).
   * @param {string} target
   * @param {"right" | "left"} direction
   * @param {{swipeId?: string}} [options] An idempotency key: the same key again answers the same.
   * @returns {Promise<SwipeAnswer>}
   */
  swipe(target, direction, { swipeId } = {}) {
    const body = compact({ target, direction, swipe_id: swipeId });
    return this._action({ type: "swipe", ...body }, "POST", "/v1/swipes", body);
  }

  /**
   * `DELETE /v1/matches/{id}`; the partner gets `unmatched`.
   * @param {string} matchId
   * @returns {Promise<UnmatchAnswer>}
   */
  unmatch(matchId) {
    return this._http("DELETE", `/v1/matches/${encodeURIComponent(matchId)}`);
  }

  /**
   * `POST /v1/queue` (or a `join_queue` frame): 202 queued, or 200 matched with the room.
   * @param {{pool?: string, rating?: number, region?: string, tags?: string[]}} [ticket]
   * @returns {Promise<JoinAnswer>}
   */
  joinQueue({ pool, rating, region, tags } = {}) {
    const body = compact({ pool, rating, region, tags });
    return this._action({ type: "join_queue", ...body }, "POST", "/v1/queue", body);
  }

  /**
   * `DELETE /v1/queue` (or a `leave_queue` frame).
   * @returns {Promise<LeaveAnswer>}
   */
  leaveQueue() {
    return this._action({ type: "leave_queue" }, "DELETE", "/v1/queue");
  }

  /**
   * `POST /v1/rooms/{id}/skip` (or a `skip` frame); the partner gets `room_closed`.
   * @param {string} roomId
   * @param {{requeue?: boolean}} [options] Back to the queue (default true).
   * @returns {Promise<SkipAnswer>}
   */
  skip(roomId, { requeue } = {}) {
    const body = compact({ requeue });
    return this._action({ type: "skip", room_id: roomId, ...body }, "POST", `/v1/rooms/${encodeURIComponent(roomId)}/skip`, body);
  }

  /**
   * `GET /v1/matches`: the caller's active matches.
   * @returns {Promise<MatchesAnswer>}
   */
  matches() {
    return this._http("GET", "/v1/matches");
  }
}

export default MatchdClient;

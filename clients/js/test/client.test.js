// MatchdClient in Node against the real matchd process (in memory, dev mode): connect and hello,
// matches told once, actions over WebSocket and HTTP, error shapes, queue and rooms, resume after
// a dropped connection, duplicates dropped, gap, 4009, refused tokens and getToken, SSE, auto.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { MatchdClient, MatchdError } from "../matchd.js";
import { TestEventSource } from "../test-helpers/eventsource.js";
import {
  Matchd,
  TcpProxy,
  call,
  devToken,
  ids,
  mintJwt,
  mutualMatch,
  readLog,
  record,
  sleep,
  uid,
  waitFor,
} from "../test-helpers/server.js";
import { TestWebSocket } from "../test-helpers/websocket.js";

/** How long to wait after the last expected event before counting (a duplicate would come by then). */
const SETTLE_MS = 300;
/** Bound on each test: a client that never settles fails its test instead of hanging the run. */
const TEST_TIMEOUT = 30000;

let server;
const clients = [];

/** A client on `server` (or `url`), closed after the file. */
function client(options) {
  const c = new MatchdClient({ url: server.base, WebSocket: TestWebSocket, minBackoffMs: 50, maxBackoffMs: 400, ...options });
  clients.push(c);
  return c;
}

async function metric(base, name, labels) {
  const res = await fetch(`${base}/metrics`);
  const text = await res.text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    if (!line.startsWith(name + "{")) continue;
    const labelText = line.slice(name.length + 1, line.indexOf("}"));
    if (want.every((w) => labelText.split(",").includes(w))) return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return 0;
}

/** Counts what goes through a fetch. */
function spyFetch() {
  const calls = [];
  const f = (url, init = {}) => {
    calls.push({ url: String(url), method: init.method || "GET", headers: { ...(init.headers || {}) } });
    return fetch(url, init);
  };
  return { fetch: f, calls };
}

/** A WebSocket class whose instances record what they send. */
function spyWebSocket() {
  const sent = [];
  class SpyWebSocket extends TestWebSocket {
    send(text) {
      sent.push(JSON.parse(text));
      super.send(text);
    }
  }
  return { WebSocket: SpyWebSocket, sent };
}

before(async () => {
  server = await new Matchd().start();
});

after(async () => {
  for (const c of clients) c.close();
  await server?.dispose();
});

describe("stream", () => {
  test("connect() resolves with hello; lastEventId, state and transport follow it", { timeout: TEST_TIMEOUT }, async () => {
    const user = uid("hello");
    const token = await devToken(server.base, user);
    const c = client({ token });
    const rec = record(c);
    assert.equal(c.state, "idle");
    assert.equal(c.lastEventId, null);
    const hello = await c.connect();
    assert.equal(hello.type, "hello");
    assert.equal(hello.data.user, user);
    assert.equal(typeof hello.data.node, "string");
    assert.equal(hello.data.gap, false);
    assert.equal(hello.data.resumed_from, null);
    assert.equal(c.lastEventId, hello.id);
    assert.equal(c.state, "connected");
    assert.equal(c.transport, "ws");
    assert.equal(rec.client("connected").length, 1);
    assert.equal(rec.client("connected")[0].transport, "ws");
    assert.equal(rec.of("hello").length, 1);
    // connect() again while connected: the same hello, no second connection.
    const again = await c.connect();
    assert.equal(again, hello);
    assert.equal(rec.client("connecting").length, 1);
    c.close();
    assert.equal(c.state, "closed");
    const last = rec.client("disconnected").at(-1);
    assert.deepEqual({ code: last.code, willRetry: last.willRetry }, { code: 1000, willRetry: false });
  });

  test("a mutual swipe gives `match` to both clients exactly once", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = [uid("alice"), uid("bob")];
    const ca = client({ token: await devToken(server.base, a) });
    const cb = client({ token: await devToken(server.base, b) });
    const ra = record(ca);
    const rb = record(cb);
    await Promise.all([ca.connect(), cb.connect()]);
    const first = await ca.swipe(b, "right");
    assert.deepEqual(first, { status: "pending", match: null });
    const second = await cb.swipe(a, "right");
    assert.equal(second.status, "matched");
    assert.deepEqual(second.match.users, [a, b].sort());
    for (const rec of [ra, rb]) {
      await waitFor("a match event", () => rec.of("match").length >= 1);
    }
    await sleep(SETTLE_MS);
    for (const rec of [ra, rb]) {
      const matches = rec.of("match");
      assert.equal(matches.length, 1, `one match event, got ${JSON.stringify(matches)}`);
      assert.equal(matches[0].data.match.match_id, second.match.match_id);
      assert.equal(typeof matches[0].id, "number");
    }
    assert.equal(ca.lastEventId, ra.of("match")[0].id);
    const listed = await ca.matches();
    assert.deepEqual(listed.matches.map((m) => m.match_id), [second.match.match_id]);
  });

  test("on() returns an unsubscribe function; a listener that throws does not stop the others", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = [uid("sub"), uid("sub")];
    const c = client({ token: await devToken(server.base, a) });
    const seen = [];
    const off = c.on("match", (e) => seen.push(["first", e.id]));
    const origError = console.error;
    const reported = [];
    console.error = (e) => reported.push(e);
    c.on("match", () => {
      throw new Error("listener failure");
    });
    c.on("match", (e) => seen.push(["third", e.id]));
    try {
      await c.connect();
      off();
      await mutualMatch(server.base, a, b);
      await waitFor("the third listener", () => seen.length >= 1);
      await sleep(SETTLE_MS);
    } finally {
      console.error = origError;
    }
    assert.deepEqual(seen.map((s) => s[0]), ["third"]);
    assert.equal(reported.length, 1);
    assert.match(String(reported[0]), /listener failure/);
  });

  test("a dropped connection resumes from lastEventId: events made meanwhile arrive once, in order", { timeout: TEST_TIMEOUT }, async () => {
    for (const transport of ["ws", "sse"]) {
      const proxy = await new TcpProxy(server.port).start();
      try {
        const user = uid(`resume-${transport}`);
        const token = await devToken(server.base, user);
        const c = client({ url: proxy.base, token, transport });
        const rec = record(c);
        const hello = await c.connect();
        await mutualMatch(server.base, user, uid("p"));
        await waitFor("the first match", () => rec.of("match").length === 1);
        const before = c.lastEventId;
        proxy.block();
        for (const s of proxy.sockets) s.destroy();
        await waitFor("the drop to be seen", () => rec.client("disconnected").length >= 1);
        assert.equal(rec.client("disconnected")[0].willRetry, true);
        const made = [];
        for (let i = 0; i < 3; i++) made.push(await mutualMatch(server.base, user, uid("q")));
        await sleep(200);
        assert.equal(rec.of("match").length, 1, "nothing arrives while the client is away");
        proxy.unblock();
        await waitFor("the missed matches", () => rec.of("match").length >= 4, { timeout: 10000 });
        await sleep(SETTLE_MS);
        const got = rec.of("match").map((e) => e.data.match.match_id);
        assert.deepEqual(got.slice(1), made.map((m) => m.match_id), `${transport}: the missed matches, in order, once`);
        const hellos = rec.of("hello");
        assert.equal(hellos.length, 2);
        assert.equal(hellos[1].data.resumed_from, before);
        assert.equal(hellos[1].data.gap, false);
        const seen = ids(rec.events);
        const log = await readLog(server.base, token, hello.id);
        assert.deepEqual(seen, log.events.map((e) => e.id), `${transport}: what the client got is the server's log`);
        assert.equal(c.lastEventId, log.hello.data.last_id);
        c.close();
      } finally {
        await proxy.stop();
      }
    }
  });

  test("a socket gone silent (pings unanswered) is dropped and resumed; what it swallowed arrives", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = [uid("deaf"), uid("deaf")];
    // The first socket stops passing frames on after the hello, as a half-open connection would.
    const sockets = [];
    class Deaf extends TestWebSocket {
      constructor(url) {
        super(url);
        sockets.push(this);
        const first = sockets.length === 1;
        let seen = 0;
        queueMicrotask(() => {
          const inner = this.onmessage;
          this.onmessage = (m) => {
            seen += 1;
            if (!first || seen === 1) inner(m);
          };
        });
      }
    }
    const c = client({ token: await devToken(server.base, a), WebSocket: Deaf, pingIntervalMs: 200 });
    const rec = record(c);
    const hello = await c.connect();
    const m = await mutualMatch(server.base, a, b);
    await waitFor("the silent socket to be dropped", () => rec.client("disconnected").length >= 1, { timeout: 5000 });
    const d = rec.client("disconnected")[0];
    assert.equal(d.willRetry, true);
    assert.match(d.reason, /silent/);
    await waitFor("the resumed match", () => rec.of("match").length === 1, { timeout: 5000 });
    assert.equal(rec.of("match")[0].data.match.match_id, m.match_id);
    assert.equal(rec.of("hello")[1].data.resumed_from, hello.id);
    assert.equal(sockets.length, 2);
  });

  test("an event id already seen is never delivered twice", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = [uid("dup"), uid("dup")];
    // A socket that hands every frame to the client twice, and the newest one again after that.
    class Doubling extends TestWebSocket {
      constructor(url) {
        super(url);
        let prev = null;
        queueMicrotask(() => {
          const inner = this.onmessage;
          this.onmessage = (m) => {
            inner(m);
            inner(m);
            if (prev) inner(prev);
            prev = m;
          };
        });
      }
    }
    const c = client({ token: await devToken(server.base, a), WebSocket: Doubling });
    const rec = record(c);
    await c.connect();
    await mutualMatch(server.base, a, b);
    await mutualMatch(server.base, a, uid("dup"));
    // An action answered over the doubling socket resolves once.
    assert.deepEqual(await c.leaveQueue(), { status: "not_queued" });
    await waitFor("two matches", () => rec.of("match").length >= 2);
    await sleep(SETTLE_MS);
    assert.equal(rec.of("match").length, 2);
    assert.equal(rec.of("hello").length, 1);
    assert.equal(rec.client("connected").length, 1);
    ids(rec.events);
  });

  test("a resume point the server does not know gives `gap`, and the new events still arrive", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = [uid("gap"), uid("gap")];
    const c = client({ token: await devToken(server.base, a), lastEventId: 1000 });
    const rec = record(c);
    const hello = await c.connect();
    assert.equal(hello.data.gap, true);
    assert.equal(hello.data.resumed_from, 1000);
    const gaps = rec.client("gap");
    assert.equal(gaps.length, 1);
    assert.equal(gaps[0].resumedFrom, 1000);
    assert.equal(c.lastEventId, hello.id, "the server's numbering wins");
    assert.ok(c.lastEventId < 1000);
    await mutualMatch(server.base, a, b);
    await waitFor("the match", () => rec.of("match").length === 1);
    assert.equal(c.lastEventId, rec.of("match")[0].id);
  });
});

describe("actions", () => {
  test("over the WebSocket while connected (frames with a ref), over HTTP otherwise", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = [uid("wsact"), uid("wsact")];
    const ws = spyWebSocket();
    const fa = spyFetch();
    const ta = await devToken(server.base, a);
    const ca = client({ token: ta, WebSocket: ws.WebSocket, fetch: fa.fetch });
    const fb = spyFetch();
    const cb = client({ token: await devToken(server.base, b), fetch: fb.fetch }); // never connected
    const rb = record(cb);
    await ca.connect();
    const before = await metric(server.base, "matchd_action_seconds_count", { action: "swipe", transport: "ws" });
    const pending = await ca.swipe(b, "right", { swipeId: "k-1" });
    assert.deepEqual(pending, { status: "pending", match: null });
    assert.equal(fa.calls.length, 0, "no HTTP while the socket is connected");
    assert.equal(ws.sent.length, 1);
    assert.deepEqual(Object.keys(ws.sent[0]).sort(), ["direction", "ref", "swipe_id", "target", "type"]);
    assert.equal(ws.sent[0].type, "swipe");
    assert.equal(ws.sent[0].swipe_id, "k-1");
    const afterWs = await metric(server.base, "matchd_action_seconds_count", { action: "swipe", transport: "ws" });
    assert.equal(afterWs, before + 1, "the server counted one swipe over WebSocket");
    // The same swipe_id again answers the same, over the socket too.
    assert.deepEqual(await ca.swipe(b, "right", { swipeId: "k-1" }), pending);

    const httpBefore = await metric(server.base, "matchd_action_seconds_count", { action: "swipe", transport: "http" });
    const matched = await cb.swipe(a, "right");
    assert.equal(matched.status, "matched");
    assert.equal(fb.calls.length, 1);
    assert.equal(fb.calls[0].method, "POST");
    assert.equal(fb.calls[0].url, `${server.base}/v1/swipes`);
    const auth = fb.calls[0].headers.Authorization;
    assert.match(auth, /^Bearer ey/);
    assert.equal(await metric(server.base, "matchd_action_seconds_count", { action: "swipe", transport: "http" }), httpBefore + 1);

    // matches() and unmatch() are HTTP calls even while connected.
    const list = await ca.matches();
    assert.deepEqual(list.matches.map((m) => m.match_id), [matched.match.match_id]);
    assert.deepEqual(fa.calls.map((x) => `${x.method} ${new URL(x.url).pathname}`), ["GET /v1/matches"]);
    await cb.connect();
    const unmatched = await ca.unmatch(matched.match.match_id);
    assert.deepEqual(unmatched, { status: "unmatched" });
    assert.equal(fa.calls.at(-1).method, "DELETE");
    assert.equal(new URL(fa.calls.at(-1).url).pathname, `/v1/matches/${matched.match.match_id}`);
    await waitFor("unmatched for the partner", () => rb.of("unmatched").length === 1);
    assert.deepEqual(rb.of("unmatched")[0].data, { match_id: matched.match.match_id, by: a });
    assert.deepEqual(await ca.matches(), { matches: [] });
    // Every frame got its own ref.
    const refs = ws.sent.map((f) => f.ref);
    assert.equal(new Set(refs).size, refs.length);
  });

  test("errors reject with {code, message, status} over both transports", { timeout: TEST_TIMEOUT }, async () => {
    const me = uid("err");
    const token = await devToken(server.base, me);
    const ws = spyWebSocket();
    const connected = client({ token, WebSocket: ws.WebSocket });
    await connected.connect();
    const plain = client({ token });
    for (const [via, c] of [["ws", connected], ["http", plain]]) {
      const selfSwipe = await c.swipe(me, "right").then(
        () => assert.fail("a self swipe must be refused"),
        (e) => e,
      );
      assert.ok(selfSwipe instanceof MatchdError, via);
      assert.ok(selfSwipe instanceof Error, via);
      assert.equal(selfSwipe.code, "self_swipe", via);
      assert.equal(selfSwipe.status, 400, via);
      assert.match(selfSwipe.message, /yourself/, via);
      await assert.rejects(c.swipe("not a valid id!", "right"), { code: "invalid_user", status: 400 }, via);
      await assert.rejects(c.swipe("bob", "up"), { code: "bad_request", status: 400 }, via);
      await assert.rejects(c.skip("0.00000000000000000000000000000000"), (e) => e.status >= 400 && e.status < 500 && typeof e.code === "string", via);
      assert.deepEqual(await c.leaveQueue(), { status: "not_queued" }, via);
    }
    assert.deepEqual(ws.sent.map((f) => f.type), ["swipe", "swipe", "swipe", "skip", "leave_queue"]);
    await assert.rejects(plain.unmatch("0.00000000000000000000000000000000"), { code: "not_found", status: 404 });
    await assert.rejects(connected.unmatch("0.00000000000000000000000000000000"), { code: "not_found", status: 404 });
  });

  test("an action without an answer rejects with code `timeout`", { timeout: TEST_TIMEOUT }, async () => {
    const token = await devToken(server.base, uid("slow"));
    const c = client({ token, actionTimeoutMs: 300 });
    await c.connect();
    const plain = client({ token, actionTimeoutMs: 300 });
    // A stopped process accepts bytes but answers nothing.
    server.child.kill("SIGSTOP");
    try {
      const t0 = Date.now();
      await assert.rejects(c.swipe("somebody", "right"), { code: "timeout", status: 0 });
      await assert.rejects(plain.matches(), { code: "timeout", status: 0 });
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      server.child.kill("SIGCONT");
    }
    // The late answer is ignored, and the socket still works.
    assert.deepEqual(await c.leaveQueue(), { status: "not_queued" });
  });

  test("joinQueue pairs two users (room_assigned); skip closes the room for the partner", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = [uid("spin"), uid("spin")];
    const pool = "default";
    const ca = client({ token: await devToken(server.base, a) });
    const cb = client({ token: await devToken(server.base, b) });
    const ra = record(ca);
    const rb = record(cb);
    await Promise.all([ca.connect(), cb.connect()]);
    const queued = await ca.joinQueue({ pool, tags: ["js"] });
    assert.equal(queued.status, "queued");
    assert.equal(queued.pool, pool);
    assert.equal(typeof queued.position, "number");
    assert.equal(typeof queued.estimated_wait_ms, "number");
    const paired = await cb.joinQueue({ pool });
    assert.equal(paired.status, "matched");
    assert.deepEqual([...paired.room.users].sort(), [a, b].sort());
    const roomId = paired.room.room_id;
    await waitFor("room_assigned for both", () => ra.of("room_assigned").length === 1 && rb.of("room_assigned").length === 1);
    assert.equal(ra.of("room_assigned")[0].data.room.room_id, roomId);
    await assert.rejects(ca.joinQueue({ pool }), { code: "conflict", status: 409 });

    const skipped = await cb.skip(roomId, { requeue: false });
    assert.deepEqual(skipped, { status: "skipped", requeued: false });
    await waitFor("room_closed for both", () => ra.of("room_closed").length === 1 && rb.of("room_closed").length === 1);
    assert.deepEqual(ra.of("room_closed")[0].data, { room_id: roomId, reason: "partner_skipped" });
    assert.deepEqual(rb.of("room_closed")[0].data, { room_id: roomId, reason: "skipped" });
    // The partner went back to the queue (by default); the skipper did not.
    await waitFor("queue_update for the partner", () => ra.of("queue_update").length >= 1);
    assert.equal(ra.of("queue_update").at(-1).data.pool, pool);
    assert.deepEqual(await ca.leaveQueue(), { status: "left", pool });
    assert.deepEqual(await cb.leaveQueue(), { status: "not_queued" });
    await sleep(SETTLE_MS);
    assert.equal(ra.of("room_closed").length, 1);
    assert.equal(rb.of("room_assigned").length, 1);
    ids(ra.events);
    ids(rb.events);
  });
});

describe("tokens", () => {
  test("a refused stream token makes the client ask getToken again, then connect", { timeout: TEST_TIMEOUT }, async () => {
    for (const transport of ["ws", "sse"]) {
      const user = uid(`tok-${transport}`);
      const expired = mintJwt(user, { exp: Math.floor(Date.now() / 1000) - 3600 });
      const given = [];
      const getToken = async () => {
        const t = given.length === 0 ? expired : await devToken(server.base, user);
        given.push(t);
        return t;
      };
      const c = client({ getToken, transport });
      const rec = record(c);
      const hello = await c.connect();
      assert.equal(hello.data.user, user);
      assert.equal(given.length, 2, `${transport}: getToken asked twice`);
      const refused = rec.client("disconnected");
      assert.equal(refused.length, 1, transport);
      assert.equal(refused[0].status, 401, transport);
      assert.equal(refused[0].willRetry, true, transport);
      // HTTP actions use the new token.
      assert.deepEqual(await c.matches(), { matches: [] });
      assert.equal(given.length, 2);
      c.close();
    }
  });

  test("an HTTP action refused with 401 is sent again with a token from getToken", { timeout: TEST_TIMEOUT }, async () => {
    const user = uid("tokhttp");
    const bad = mintJwt(user, { secret: "not-the-secret" });
    const given = [];
    const c = client({
      getToken: async () => {
        const t = given.length === 0 ? bad : await devToken(server.base, user);
        given.push(t);
        return t;
      },
    });
    assert.deepEqual(await c.leaveQueue(), { status: "not_queued" });
    assert.equal(given.length, 2);
  });

  test("a refused token without getToken stops the client: no retry, errors say unauthorized", { timeout: TEST_TIMEOUT }, async () => {
    for (const transport of ["ws", "sse"]) {
      const token = mintJwt(uid("bad"), { exp: Math.floor(Date.now() / 1000) - 3600 });
      const opened = TestWebSocket.opened.length;
      const c = client({ token, transport });
      const rec = record(c);
      await assert.rejects(c.connect(), { code: "unauthorized", status: 401 });
      const d = rec.client("disconnected");
      assert.equal(d.length, 1, transport);
      assert.equal(d[0].willRetry, false);
      assert.equal(d[0].status, 401);
      assert.equal(c.state, "closed");
      await sleep(300);
      assert.equal(TestWebSocket.opened.length - opened, transport === "ws" ? 1 : 0, "no second attempt");
      await assert.rejects(c.swipe("bob", "right"), { code: "unauthorized", status: 401 });
    }
  });
});

describe("transports", () => {
  test("SSE (the built-in reader over fetch): hello, events once, actions over HTTP, resume", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = [uid("sse"), uid("sse")];
    const token = await devToken(server.base, a);
    const f = spyFetch();
    const opened = TestWebSocket.opened.length;
    const c = client({ token, transport: "sse", fetch: f.fetch });
    const rec = record(c);
    const hello = await c.connect();
    assert.equal(hello.data.user, a);
    assert.equal(c.transport, "sse");
    const stream = f.calls.find((x) => new URL(x.url).pathname === "/v1/events");
    assert.ok(stream, "the stream is a GET /v1/events");
    assert.equal(stream.headers.Authorization, `Bearer ${token}`);
    assert.equal(new URL(stream.url).searchParams.get("token"), null, "no token in the URL when headers can be set");
    const pending = await c.swipe(b, "right");
    assert.deepEqual(pending, { status: "pending", match: null });
    assert.equal(f.calls.at(-1).url, `${server.base}/v1/swipes`);
    const tb = await devToken(server.base, b);
    await call(server.base, "POST", "/v1/swipes", { token: tb, body: { target: a, direction: "right" } });
    await waitFor("the match over SSE", () => rec.of("match").length === 1);
    await sleep(SETTLE_MS);
    assert.equal(rec.of("match").length, 1);
    assert.equal(TestWebSocket.opened.length, opened, "SSE never opens a WebSocket");
    c.close();
    // A later connect() resumes with Last-Event-ID.
    const before = c.lastEventId;
    await c.connect();
    const again = f.calls.filter((x) => new URL(x.url).pathname === "/v1/events").at(-1);
    assert.equal(again.headers["Last-Event-ID"], String(before));
    assert.equal(rec.of("hello").at(-1).data.resumed_from, before);
  });

  test("SSE through a passed-in EventSource (browser interface): ?since= resume, listeners added while open", { timeout: TEST_TIMEOUT }, async () => {
    const [a, b] = [uid("es"), uid("es")];
    const token = await devToken(server.base, a);
    const proxy = await new TcpProxy(server.port).start();
    try {
      const c = client({ url: proxy.base, token, transport: "sse", EventSource: TestEventSource });
      const rec = record(c);
      const hello = await c.connect();
      assert.equal(hello.data.user, a);
      const es = TestEventSource.opened.at(-1);
      assert.equal(new URL(es.url).searchParams.get("token"), token);
      const got = [];
      c.on("match", (e) => got.push(e.data.match.match_id));
      const m1 = await mutualMatch(server.base, a, b);
      await waitFor("match", () => got.length === 1);
      proxy.block();
      for (const s of proxy.sockets) s.destroy();
      await waitFor("the drop", () => rec.client("disconnected").length >= 1);
      const m2 = await mutualMatch(server.base, a, uid("es"));
      proxy.unblock();
      await waitFor("the missed match", () => got.length === 2);
      await sleep(SETTLE_MS);
      assert.deepEqual(got, [m1.match_id, m2.match_id]);
      const reopened = TestEventSource.opened.at(-1);
      assert.notEqual(reopened, es, "the client opened a new EventSource itself");
      assert.equal(es.readyState, TestEventSource.CLOSED);
      assert.equal(new URL(reopened.url).searchParams.get("since"), String(rec.of("match")[0].id));
      c.close();
    } finally {
      await proxy.stop();
    }
  });

  test("auto: WebSocket first; SSE when it cannot be opened (constructor throws, or the socket fails)", { timeout: TEST_TIMEOUT }, async () => {
    const user = uid("auto");
    const token = await devToken(server.base, user);
    const works = client({ token, transport: "auto" });
    await works.connect();
    assert.equal(works.transport, "ws");
    works.close();

    class Throws {
      constructor() {
        throw new Error("WebSocket blocked by policy");
      }
    }
    let failed = 0;
    class Fails {
      constructor() {
        failed += 1;
        this.readyState = 0;
        setTimeout(() => {
          this.readyState = 3;
          this.onerror?.({ type: "error" });
          this.onclose?.({ code: 1006, reason: "", wasClean: false });
        }, 10);
      }
      close() {}
      send() {
        throw new Error("not open");
      }
    }
    for (const [name, WebSocket] of [["throws", Throws], ["fails", Fails]]) {
      const c = client({ token, transport: "auto", WebSocket });
      const rec = record(c);
      const hello = await c.connect();
      assert.equal(hello.data.user, user, name);
      assert.equal(c.transport, "sse", name);
      assert.equal(rec.client("connected")[0].transport, "sse", name);
      const partner = uid("auto");
      await mutualMatch(server.base, user, partner);
      await waitFor(`${name}: the match over SSE`, () => rec.of("match").length === 1);
      c.close();
    }
    assert.equal(failed, 1, "after falling back, the client does not try the WebSocket again");
  });

  test("transport \"ws\" with no WebSocket available stops with a clear reason", { timeout: TEST_TIMEOUT }, async () => {
    const c = new MatchdClient({ url: server.base, token: "x", transport: "ws" });
    const rec = record(c);
    await assert.rejects(c.connect(), /WebSocket/);
    assert.equal(rec.client("disconnected")[0].willRetry, false);
    assert.throws(() => new MatchdClient({ url: server.base }), TypeError);
    assert.throws(() => new MatchdClient({ url: server.base, token: "x", transport: "carrier-pigeon" }), TypeError);
  });
});

describe("limits", () => {
  let limited;
  before(async () => {
    limited = await new Matchd({ config: { limits: { max_connections_per_user: 1, joins_per_minute: 1 } } }).start();
  });
  after(async () => {
    await limited?.dispose();
  });

  test("close code 4009 (too many connections) stops retrying; so does SSE's 409", { timeout: TEST_TIMEOUT }, async () => {
    const user = uid("many");
    const token = await devToken(limited.base, user);
    const first = client({ url: limited.base, token });
    await first.connect();
    const opened = TestWebSocket.opened.length;
    const second = client({ url: limited.base, token });
    const rec = record(second);
    await assert.rejects(second.connect(), { code: "conflict" });
    const d = rec.client("disconnected");
    assert.equal(d.length, 1);
    assert.equal(d[0].code, 4009);
    assert.equal(d[0].willRetry, false);
    assert.equal(rec.of("error").length, 1, "the server's error frame is an `error` event");
    assert.equal(rec.of("error")[0].data.code, "conflict");
    await sleep(600);
    assert.equal(TestWebSocket.opened.length - opened, 1, "one attempt only");
    assert.equal(second.state, "closed");

    for (const EventSource of [undefined, TestEventSource]) {
      const sse = client({ url: limited.base, token, transport: "sse", EventSource });
      const rs = record(sse);
      await assert.rejects(sse.connect(), { code: "conflict", status: 409 });
      assert.deepEqual(
        rs.client("disconnected").map((x) => [x.code, x.willRetry, x.status]),
        [[4009, false, 409]],
      );
    }
    // The first client is untouched.
    assert.equal(first.state, "connected");
  });

  test("429 rate_limited carries retryAfter over HTTP and status 429 over WebSocket", { timeout: TEST_TIMEOUT }, async () => {
    const token = await devToken(limited.base, uid("rate"));
    const plain = client({ url: limited.base, token });
    const pool = "default";
    assert.equal((await plain.joinQueue({ pool })).status, "queued");
    await plain.leaveQueue();
    const e = await plain.joinQueue({ pool }).catch((x) => x);
    assert.equal(e.code, "rate_limited");
    assert.equal(e.status, 429);
    assert.ok(Number.isInteger(e.retryAfter) && e.retryAfter >= 1, `retryAfter ${e.retryAfter}`);
    const ws = client({ url: limited.base, token });
    await ws.connect();
    await assert.rejects(ws.joinQueue({ pool }), { code: "rate_limited", status: 429 });
  });
});

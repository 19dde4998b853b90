// MatchdClient in headless Chromium (chromedriver, W3C WebDriver), loaded from the server itself
// (`GET /matchd.js`), against a Redis-backed matchd behind a TCP proxy that can keep the browser away:
// two tabs of one user on the demo page each get the match once; a server restart mid-stream is
// resumed with nothing missed or doubled; with WebSocket blocked, "auto" streams over the browser's
// own EventSource. Missing Chromium or chromedriver fails the file (with an install hint).

import assert from "node:assert/strict";
import fs from "node:fs";
import { after, before, test } from "node:test";

import { LIBRARY_PATH, Matchd, Redis, TcpProxy, devToken, ids, mutualMatch, readLog, sleep, uid } from "../test-helpers/server.js";
import { ChromeDriver } from "../test-helpers/webdriver.js";

const SETTLE_MS = 500;
/** Bound on each test (every wait inside is bounded too). */
const TEST_TIMEOUT = 60000;

let redis;
let server;
let proxy;
let driver;
let browser;

before(async () => {
  redis = await new Redis().start();
  server = await new Matchd({ redis }).start();
  proxy = await new TcpProxy(server.port).start();
  driver = await ChromeDriver.start();
  browser = await driver.session("chromium");
});

after(async () => {
  await driver?.stop();
  await proxy?.stop();
  await server?.dispose();
  await redis?.stop();
});

/** Creates `window.__c` (a MatchdClient from /matchd.js) in the current page, recording into `window.__t`. */
const CREATE_CLIENT = `
const [token, transport] = arguments;
return (async () => {
  const { MatchdClient } = await import("/matchd.js");
  const t = (window.__t = { events: [], log: [] });
  const c = (window.__c = new MatchdClient({ url: location.origin, token, transport, minBackoffMs: 100, maxBackoffMs: 500 }));
  c.on("*", (e) => t.events.push(e));
  for (const k of ["connected", "disconnected", "gap"]) {
    c.on(k, (i) => t.log.push({ type: k, code: i.code, willRetry: i.willRetry, transport: i.transport, status: i.status }));
  }
  const hello = await c.connect();
  return { hello, transport: c.transport };
})();`;

/** A page expression: how many events of `type` the page's client delivered. */
const count = (type) => `window.__t.events.filter((e) => e.type === ${JSON.stringify(type)}).length`;

test("the server serves the library (dev mode only) and the demo page imports it", { timeout: TEST_TIMEOUT }, async () => {
  const res = await fetch(`${server.base}/matchd.js`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/javascript/);
  const served = await res.text();
  assert.equal(served, fs.readFileSync(LIBRARY_PATH, "utf8"), "the binary embeds an older matchd.js: rebuild matchd");
  const page = await (await fetch(`${server.base}/`)).text();
  assert.match(page, /<script type="module">/);
  assert.match(page, /import \{ MatchdClient \} from "\/matchd\.js"/);
  assert.doesNotMatch(page, /new WebSocket\(/, "the demo page streams through the library only");

  // With a real secret (not dev mode) neither the page nor the library is served.
  const real = await new Matchd({ config: { jwt_secret: "a-real-secret-of-enough-bytes" } }).start();
  try {
    for (const p of ["/matchd.js", "/"]) {
      const res = await fetch(`${real.base}${p}`);
      assert.equal(res.status, 404, p);
      assert.equal((await res.json()).error.code, "not_found", p);
    }
  } finally {
    await real.dispose();
  }
});

test("two tabs of the same user on the demo page each get one `match` event", { timeout: TEST_TIMEOUT }, async () => {
  const [carol, dave] = [uid("carol"), uid("dave")];
  const url = `${proxy.base}/?user=${carol}`;
  const first = await browser.handle();
  const connected = "return document.querySelector('[data-testid=status]').dataset.state === 'connected';";
  await browser.goto(url);
  await browser.wait("the first tab to connect", connected);
  const second = await browser.newTab();
  await browser.switchTo(second);
  await browser.goto(url);
  await browser.wait("the second tab to connect", connected);
  const match = await mutualMatch(server.base, carol, dave);
  const logged = "return document.querySelectorAll('[data-testid=log] li[data-type=match]').length;";
  for (const tab of [first, second]) {
    await browser.switchTo(tab);
    await browser.wait("the match in the log", logged);
  }
  await sleep(SETTLE_MS);
  for (const tab of [first, second]) {
    await browser.switchTo(tab);
    assert.equal(await browser.js(logged), 1, "one match event per tab");
    const shown = await browser.js(`return [...document.querySelectorAll('[data-testid=match]')].map((m) => [m.dataset.partner, m.dataset.matchId]);`);
    assert.deepEqual(shown, [[dave, match.match_id]]);
    const loaded = await browser.js(
      "return performance.getEntriesByType('resource').some((e) => new URL(e.name).pathname === '/matchd.js') && typeof matchdDemo.client.swipe === 'function';",
    );
    assert.equal(loaded, true, "the page uses the library from /matchd.js");
    assert.equal(await browser.js("return matchdDemo.client.transport;"), "ws");
  }
  await browser.switchTo(second);
  await browser.cmd("DELETE", "/window");
  await browser.switchTo(first);
});

test("a server restart (Redis) mid-stream: the page's client resumes, nothing missed or doubled", { timeout: TEST_TIMEOUT }, async () => {
  const user = uid("erin");
  const token = await devToken(server.base, user);
  await browser.goto(`${proxy.base}/healthz`);
  const { hello, transport } = await browser.js(CREATE_CLIENT, token, "ws");
  assert.equal(transport, "ws");
  assert.equal(hello.data.user, user);
  const made = [];
  const more = async (n) => {
    for (let i = 0; i < n; i++) made.push((await mutualMatch(server.base, user, uid("f"))).match_id);
  };
  await more(2);
  await browser.wait("2 matches", `return ${count("match")} === 2;`);
  const before = await browser.js("return window.__c.lastEventId;");

  proxy.block();
  await server.restart("SIGTERM");
  await browser.wait("the drop (1012)", "return window.__t.log.some((l) => l.type === 'disconnected' && l.code === 1012 && l.willRetry);");
  await more(3);
  await sleep(300);
  assert.equal(await browser.js(`return ${count("match")};`), 2, "nothing while away");
  proxy.unblock();
  await browser.wait("the 3 missed matches", `return ${count("match")} === 5;`, { timeout: 20000 });
  await more(1);
  await browser.wait("the live match", `return ${count("match")} === 6;`);
  await sleep(SETTLE_MS);

  const events = await browser.js("return window.__t.events;");
  const matches = events.filter((e) => e.type === "match");
  assert.deepEqual(matches.map((e) => e.data.match.match_id), made, "every match once, in order");
  const seen = ids(events);
  const log = await readLog(server.base, token, hello.id);
  assert.deepEqual(seen, log.events.map((e) => e.id), "the page's ids are the server's log");
  const resumed = events.filter((e) => e.type === "hello" && e.data.resumed_from !== null);
  assert.ok(resumed.length >= 1);
  assert.equal(resumed[0].data.resumed_from, before);
  assert.equal(resumed[0].data.gap, false);
  assert.equal(await browser.js("return window.__c.lastEventId;"), log.hello.data.last_id);
  await browser.js("window.__c.close();");
});

test("WebSocket blocked: transport \"auto\" falls back to the browser's EventSource and resumes", { timeout: TEST_TIMEOUT }, async () => {
  const blockers = {
    // The page's WebSocket constructor refuses outright.
    throws: "window.WebSocket = class { constructor() { throw new DOMException('WebSockets are blocked here', 'SecurityError'); } };",
    // Sockets are created but never open (as behind a proxy that drops upgrades).
    fails: "const Real = window.WebSocket; window.WebSocket = class extends Real { constructor() { super('ws://127.0.0.1:9/blocked'); } };",
  };
  for (const [name, block] of Object.entries(blockers)) {
    const user = uid(`sse-${name}`);
    const token = await devToken(server.base, user);
    await browser.goto(`${proxy.base}/healthz`);
    await browser.js(block);
    const { hello, transport } = await browser.js(CREATE_CLIENT, token, "auto");
    assert.equal(transport, "sse", name);
    assert.equal(hello.data.user, user);
    assert.equal(await browser.js("return typeof EventSource;"), "function");
    const m1 = await mutualMatch(server.base, user, uid("g"));
    await browser.wait("the match over SSE", `return ${count("match")} === 1;`);

    // A dropped stream: the client (not the EventSource) reconnects with ?since= and resumes.
    proxy.block();
    for (const s of proxy.sockets) s.destroy();
    await browser.wait("the drop", "return window.__t.log.some((l) => l.type === 'disconnected' && l.willRetry);");
    const m2 = await mutualMatch(server.base, user, uid("g"));
    proxy.unblock();
    await browser.wait("the missed match", `return ${count("match")} === 2;`, { timeout: 15000 });
    await sleep(SETTLE_MS);
    const events = await browser.js("return window.__t.events;");
    assert.deepEqual(events.filter((e) => e.type === "match").map((e) => e.data.match.match_id), [m1.match_id, m2.match_id], name);
    const log = await readLog(server.base, token, hello.id);
    assert.deepEqual(ids(events), log.events.map((e) => e.id), name);
    const kinds = await browser.js("return window.__t.log.filter((l) => l.type === 'connected').map((l) => l.transport);");
    assert.deepEqual(kinds, ["sse", "sse"], name);
    // Actions go over HTTP on SSE.
    assert.deepEqual(await browser.js("return window.__c.leaveQueue();"), { status: "not_queued" });
    await browser.js("window.__c.close();");
  }
});

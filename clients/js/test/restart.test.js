// A server restart with Redis while clients stream: the clients see 1012, reconnect by themselves
// and resume from their last id. Events made while they are away (the proxy in front of the server
// refuses them until then) arrive after the reconnect; nothing is missed or doubled, and what each
// client got is exactly the user's log on the server.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { MatchdClient } from "../matchd.js";
import { Matchd, Redis, TcpProxy, devToken, ids, mutualMatch, readLog, record, sleep, uid, waitFor } from "../test-helpers/server.js";
import { TestWebSocket } from "../test-helpers/websocket.js";

/** Bound on the test: a client that never comes back fails it instead of hanging the run. */
const TEST_TIMEOUT = 60000;

let redis;
let server;
let proxy;
const clients = [];

before(async () => {
  redis = await new Redis().start();
  server = await new Matchd({ redis }).start();
  proxy = await new TcpProxy(server.port).start();
});

after(async () => {
  for (const c of clients) c.close();
  await proxy?.stop();
  await server?.dispose();
  await redis?.stop();
});

test("a restart (SIGTERM, Redis) mid-stream: each client resumes, nothing missed or doubled", { timeout: TEST_TIMEOUT }, async () => {
  const users = { ws: uid("rws"), sse: uid("rsse") };
  const tokens = {};
  const recs = {};
  const hellos = {};
  for (const transport of ["ws", "sse"]) {
    tokens[transport] = await devToken(server.base, users[transport]);
    const c = new MatchdClient({
      url: proxy.base,
      token: tokens[transport],
      transport,
      WebSocket: TestWebSocket,
      minBackoffMs: 50,
      maxBackoffMs: 300,
    });
    clients.push(c);
    recs[transport] = record(c);
    hellos[transport] = await c.connect();
  }
  const made = { ws: [], sse: [] };
  const matchWith = async (transport) => made[transport].push((await mutualMatch(server.base, users[transport], uid("p"))).match_id);

  // Live events before the restart.
  for (const t of ["ws", "sse"]) for (let i = 0; i < 2; i++) await matchWith(t);
  for (const t of ["ws", "sse"]) await waitFor(`${t}: 2 matches`, () => recs[t].of("match").length === 2);
  const before = { ws: clients[0].lastEventId, sse: clients[1].lastEventId };

  // Keep the clients away, restart, and make events while they are away.
  proxy.block();
  await server.restart("SIGTERM");
  await waitFor("both clients to see the drop", () => recs.ws.client("disconnected").length >= 1 && recs.sse.client("disconnected").length >= 1);
  assert.equal(recs.ws.client("disconnected")[0].code, 1012, "the WebSocket is closed with 1012 (restart)");
  for (const t of ["ws", "sse"]) assert.equal(recs[t].client("disconnected")[0].willRetry, true);
  for (const t of ["ws", "sse"]) for (let i = 0; i < 3; i++) await matchWith(t);
  await sleep(300);
  for (const t of ["ws", "sse"]) assert.equal(recs[t].of("match").length, 2, `${t}: nothing while away`);
  assert.ok(proxy.refused > 0, "the clients tried to come back while refused");

  proxy.unblock();
  for (const t of ["ws", "sse"]) await waitFor(`${t}: the missed matches`, () => recs[t].of("match").length === 5, { timeout: 15000 });
  // And live ones after the resume.
  for (const t of ["ws", "sse"]) await matchWith(t);
  for (const t of ["ws", "sse"]) await waitFor(`${t}: the live match`, () => recs[t].of("match").length === 6);
  await sleep(300);

  for (const t of ["ws", "sse"]) {
    const rec = recs[t];
    const got = rec.of("match").map((e) => e.data.match.match_id);
    assert.deepEqual(got, made[t], `${t}: every match once, in order`);
    const seen = ids(rec.events);
    const log = await readLog(server.base, tokens[t], hellos[t].id);
    assert.deepEqual(seen, log.events.map((e) => e.id), `${t}: the client's ids are the server's log`);
    assert.deepEqual(rec.events.filter((e) => e.type !== "hello").map((e) => e.type), log.events.map((e) => e.type));
    const resumed = rec.of("hello").filter((h) => h.data.resumed_from !== null);
    assert.ok(resumed.length >= 1, `${t}: a resumed hello`);
    assert.equal(resumed[0].data.resumed_from, before[t], `${t}: resumed from the last id before the restart`);
    assert.equal(resumed[0].data.gap, false);
    assert.equal(rec.client("gap").length, 0);
  }
});

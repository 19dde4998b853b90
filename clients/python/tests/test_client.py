"""The Python client against the real server: stream, actions over both transports, errors,
rooms, restarts (with Redis and in memory), connection limits and token refresh."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any, List

import pytest

from matchd_client import Client, Event, MatchdError, dev_token
from support import Collector, action_counts, free_port, mint_jwt, uid


async def connected(url: str, user: str, **kwargs: Any) -> "tuple[Client, Collector]":
    client = Client(url, token=await dev_token(url, user), **kwargs)
    await client.connect()
    return client, Collector(client)


async def test_connect_says_hello(server: Any) -> None:
    user = uid("alice")
    async with Client(server.url, token=await dev_token(server.url, user)) as client:
        assert client.connected
        events = Collector(client)
        hello = await events.wait_type("hello")
        assert hello.data["user"] == user
        assert isinstance(hello.data["node"], str) and hello.data["node"]
        assert hello.data["last_id"] == 0 and hello.data["resumed_from"] is None and hello.data["gap"] is False
        assert hello.id == 0 and client.last_event_id == 0
        await client.ping()
        await events.stop()
    assert not client.connected
    with pytest.raises(MatchdError) as err:
        await client.connect()
    assert err.value.code == "closed"


async def test_mutual_swipe_tells_both_exactly_once(server: Any) -> None:
    alice, bob = uid("alice"), uid("bob")
    a, a_events = await connected(server.url, alice)
    b, b_events = await connected(server.url, bob)
    try:
        first = await a.swipe(bob, "right")
        assert first == {"status": "pending", "match": None}
        second = await b.swipe(alice, "right", swipe_id="k1")
        assert second["status"] == "matched" and second["match"] is not None
        match = second["match"]
        assert match["users"] == sorted([alice, bob]) and isinstance(match["created_at"], int)
        for events in (a_events, b_events):
            got = await events.wait_type("match")
            assert got.data["match"] == match
        # The same swipe_id again answers the same and tells nobody anything new.
        assert await b.swipe(alice, "right", swipe_id="k1") == second
        await asyncio.sleep(0.5)
        for events in (a_events, b_events):
            assert len(events.of("match")) == 1, events.events
            ids = [e.id for e in events.events if e.type != "hello"]
            assert ids == sorted(set(ids)), ids
        assert (await a.matches())["matches"] == [match]
        assert (await b.matches())["matches"] == [match]
    finally:
        await a.close()
        await b.close()


async def test_actions_use_the_websocket_when_connected_else_http(server: Any) -> None:
    alice, carol = uid("alice"), uid("carol")
    a, a_events = await connected(server.url, alice)
    c = Client(server.url, token=await dev_token(server.url, carol))  # never connected: HTTP only
    try:
        before = action_counts(server.metrics())
        assert (await a.swipe(carol, "right"))["status"] == "pending"  # WebSocket
        answer = await c.swipe(alice, "right")  # HTTP
        assert answer["status"] == "matched"
        match_id = answer["match"]["match_id"]
        await a_events.wait_type("match")
        assert await c.unmatch(match_id) == {"status": "unmatched"}  # HTTP
        gone = await a_events.wait_type("unmatched")
        assert gone.data == {"match_id": match_id, "by": carol}
        assert await a.unmatch(match_id) == {"status": "unmatched"}  # WebSocket; a repeat is still 200
        pool = uid("pool")
        queued = await a.join_queue(pool=pool, rating=1500, region="eu", tags=["python"])  # WebSocket
        assert queued["status"] == "queued" and queued["pool"] == pool and queued["position"] == 1
        status = await a.pool_status(pool)
        assert (status["pool"], status["waiting"]) == (pool, 1) and status["estimated_wait_ms"] >= 0
        assert await a.leave_queue() == {"status": "left", "pool": pool}  # WebSocket
        assert await c.leave_queue() == {"status": "not_queued"}  # HTTP
        after = action_counts(server.metrics())

        def grew(action: str, transport: str) -> float:
            return after.get((action, transport), 0) - before.get((action, transport), 0)

        assert grew("swipe", "ws") == 1 and grew("swipe", "http") == 1
        assert grew("unmatch", "ws") == 1 and grew("unmatch", "http") == 1
        assert grew("join_queue", "ws") == 1 and grew("leave_queue", "ws") == 1 and grew("leave_queue", "http") == 1
    finally:
        await a.close()
        await c.close()


async def test_errors_carry_code_message_and_status(server: Any) -> None:
    alice = uid("alice")
    a, _ = await connected(server.url, alice)
    h = Client(server.url, token=await dev_token(server.url, alice))
    try:
        for client, via in ((a, "ws"), (h, "http")):
            with pytest.raises(MatchdError) as err:
                await client.swipe(alice, "right")
            assert (err.value.code, err.value.status) == ("self_swipe", 400), via
            assert err.value.message, via
            with pytest.raises(MatchdError) as err:
                await client.swipe("not a user!", "right")
            assert (err.value.code, err.value.status) == ("invalid_user", 400), via
            with pytest.raises(MatchdError) as err:
                await client.unmatch("7." + "0" * 32)
            assert (err.value.code, err.value.status) == ("not_found", 404), via
            with pytest.raises(MatchdError) as err:
                await client.swipe(uid("bob"), "up")  # type: ignore[arg-type]
            assert (err.value.code, err.value.status) == ("bad_request", 400), via
        bad = Client(server.url, token="not-a-jwt")
        with pytest.raises(MatchdError) as err:
            await bad.matches()
        assert (err.value.code, err.value.status) == ("unauthorized", 401)
        assert a.connected, "a refused action leaves the stream open"
    finally:
        await a.close()
        await h.close()


async def test_queue_pairs_into_a_room_and_skip_closes_it_for_the_partner(server: Any) -> None:
    alice, bob, pool = uid("alice"), uid("bob"), uid("pool")
    a, a_events = await connected(server.url, alice)
    b, b_events = await connected(server.url, bob)
    try:
        queued = await a.join_queue(pool=pool)
        assert queued["status"] == "queued"
        paired = await b.join_queue(pool=pool)
        assert paired["status"] == "matched"
        room = paired["room"]
        assert room["pool"] == pool and room["users"] == sorted([alice, bob])
        assert (await a_events.wait_type("room_assigned")).data["room"] == room
        with pytest.raises(MatchdError) as err:
            await a.join_queue(pool=pool)
        assert (err.value.code, err.value.status) == ("conflict", 409)
        assert await b.skip(room["room_id"]) == {"status": "skipped", "requeued": True}
        closed = await a_events.wait_type("room_closed")
        assert closed.data == {"room_id": room["room_id"], "reason": "partner_skipped"}
        mine = await b_events.wait_type("room_closed")
        assert mine.data == {"room_id": room["room_id"], "reason": "skipped"}
        await a_events.wait_type("queue_update", pool=pool)
        for client in (a, b):
            left = await client.leave_queue()
            assert left["status"] in ("left", "in_room"), left
            if left["status"] == "in_room":
                await client.skip(left["room_id"], requeue=False)
    finally:
        await a.close()
        await b.close()


async def test_sse_transport_streams_events_and_acts_over_http(server: Any) -> None:
    alice, bob = uid("alice"), uid("bob")
    before = action_counts(server.metrics())
    a, a_events = await connected(server.url, alice, transport="sse")
    b = Client(server.url, token=await dev_token(server.url, bob))
    try:
        hello = await a_events.wait_type("hello")
        assert hello.data["user"] == alice
        await a.swipe(bob, "right")
        matched = await b.swipe(alice, "right")
        got = await a_events.wait_type("match")
        assert got.data["match"] == matched["match"] and got.id == 1
        after = action_counts(server.metrics())
        assert after[("swipe", "http")] - before.get(("swipe", "http"), 0) == 2
    finally:
        await a.close()
        await b.close()


async def test_restart_with_redis_resumes_without_loss_or_doubles(make_server: Any, redis: Any, gate: Any) -> None:
    config = "[timeouts]\nlease_ms = 1000\nshutdown_grace_ms = 2000\n"
    node = make_server(config=config, args=["--redis", redis.url], name="redis-a").start()
    door = gate(node.port)
    alice = uid("alice")
    partners = [uid(f"p{i}") for i in range(6)]
    tokens = {u: mint_jwt(u) for u in [alice, *partners]}
    hellos: List[Event] = []
    a = Client(door.url, token=tokens[alice], min_backoff=0.05, max_backoff=0.5, on_connected=hellos.append)
    await a.connect()
    events = Collector(a)

    def as_user(user: str) -> Client:
        return Client(node.url, token=tokens[user])  # HTTP only, straight to the current process

    try:
        for p in partners:
            await a.swipe(p, "right")
        for p in partners[:3]:  # matched while alice is connected
            await as_user(p).swipe(alice, "right")
        for p in partners[:3]:
            await events.wait_for(lambda e, p=p: e.type == "match" and p in e.data["match"]["users"])
        seen_before = a.last_event_id
        assert seen_before == 3

        # A graceful restart: the stream closes with 1012 and the process stops accepting at once.
        # The gate keeps alice away until events were made without her.
        node.stop()
        door.shut()
        dropped = await events.wait_type("disconnected")
        assert dropped.data["code"] == 1012
        node.start()  # the same Redis, a new process (on a new port)
        for p in partners[3:]:
            await as_user(p).swipe(alice, "right")
        ended = (await as_user(partners[0]).matches())["matches"][0]["match_id"]
        await as_user(partners[0]).unmatch(ended)
        door.reopen(node.port)

        await events.wait_type("unmatched", timeout=15, match_id=ended)
        for p in partners[3:]:
            await events.wait_for(lambda e, p=p: e.type == "match" and p in e.data["match"]["users"])
        await asyncio.sleep(0.5)
        stream = [e for e in events.events if e.id is not None and e.type != "hello"]
        ids = [e.id for e in stream]
        assert ids == list(range(1, 8)), ids  # strictly increasing, none missed, none doubled
        matched_with = sorted(u for e in stream if e.type == "match" for u in e.data["match"]["users"] if u != alice)
        assert matched_with == sorted(partners)
        assert len(hellos) == 2
        assert hellos[1].data["resumed_from"] == seen_before and hellos[1].data["gap"] is False
        assert not events.of("gap")
        assert a.last_event_id == 7
    finally:
        await events.stop()
        await a.close()


async def test_gap_when_the_server_lost_its_memory(make_server: Any, gate: Any) -> None:
    first = make_server(name="mem-a").start()
    door = gate(first.port)
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    gaps: List[Event] = []
    a = Client(door.url, token=mint_jwt(alice), min_backoff=0.05, max_backoff=0.5, on_gap=gaps.append)
    await a.connect()
    events = Collector(a)
    try:
        await a.swipe(bob, "right")
        await Client(first.url, token=mint_jwt(bob)).swipe(alice, "right")
        await events.wait_type("match")
        assert a.last_event_id == 1
        door.shut()
        first.kill()
        second = make_server(name="mem-b").start()
        door.reopen(second.port)
        gap = await events.wait_type("gap", timeout=15)
        assert gap.id is None and gap.data["resumed_from"] == 1 and gap.data["gap"] is True
        assert gaps == [gap]
        # The new server numbers alice's events from 1 again: they are not taken for duplicates.
        await a.swipe(carol, "right")
        await Client(second.url, token=mint_jwt(carol)).swipe(alice, "right")
        fresh = await events.wait_for(lambda e: e.type == "match" and carol in e.data["match"]["users"])
        assert fresh.id == 1 and a.last_event_id == 1
    finally:
        await events.stop()
        await a.close()


async def test_too_many_connections_stops_retrying(make_server: Any, gate: Any) -> None:
    node = make_server(config="[limits]\nmax_connections_per_user = 1\n", name="limit").start()
    user = uid("alice")
    first = Client(node.url, token=mint_jwt(user))
    await first.connect()
    door = gate(node.port)
    second = Client(door.url, token=mint_jwt(user), min_backoff=0.01, max_backoff=0.05)
    try:
        with pytest.raises(MatchdError) as err:
            await second.connect()
        assert err.value.close_code == 4009 and err.value.code == "conflict" and err.value.status == 409
        assert second.error is err.value
        await asyncio.sleep(1.0)
        assert door.accepted == 1, "no retry after close code 4009"
        with pytest.raises(MatchdError):
            async for _ in second.events():
                pass
        # The same limit on Server-Sent Events is a 409 answer: just as final.
        third = Client(door.url, token=mint_jwt(user), transport="sse", min_backoff=0.01, max_backoff=0.05)
        with pytest.raises(MatchdError) as err:
            await third.connect()
        assert (err.value.code, err.value.status, err.value.close_code) == ("conflict", 409, None)
        await asyncio.sleep(0.5)
        assert door.accepted == 2
        assert first.connected
        await first.ping()
    finally:
        await first.close()
        await second.close()


async def test_get_token_is_asked_again_when_the_token_is_refused(server: Any, gate: Any) -> None:
    user = uid("alice")
    expired = mint_jwt(user, exp=int(time.time()) - 3600)
    asked: List[str] = []

    async def get_token() -> str:
        token = expired if not asked else mint_jwt(user, exp=int(time.time()) + 3600)
        asked.append(token)
        return token

    async with Client(server.url, get_token=get_token, min_backoff=0.01) as client:
        assert len(asked) == 2 and asked[0] == expired
        await client.ping()

    asked.clear()
    http_only = Client(server.url, get_token=get_token)
    assert (await http_only.matches()) == {"matches": []}
    assert len(asked) == 2, "the refused token was replaced and the request sent again"

    # A static token that is refused is final: no retry.
    door = gate(server.port)
    static = Client(door.url, token=expired, min_backoff=0.01, max_backoff=0.05)
    with pytest.raises(MatchdError) as err:
        await static.connect()
    assert (err.value.code, err.value.status) == ("unauthorized", 401)
    await asyncio.sleep(0.5)
    assert door.accepted == 1

    # A get_token that keeps giving refused tokens ends after max_auth_retries.
    async def always_expired() -> str:
        asked.append(expired)
        return expired

    asked.clear()
    stubborn = Client(server.url, get_token=always_expired, min_backoff=0.01, max_backoff=0.05, max_auth_retries=2)
    with pytest.raises(MatchdError) as err:
        await stubborn.connect()
    assert err.value.code == "unauthorized" and len(asked) == 3


async def test_an_unanswered_action_times_out_and_a_dropped_one_fails(make_server: Any, gate: Any) -> None:
    node = make_server(name="paused").start()
    door = gate(node.port)
    user = uid("alice")
    client = Client(door.url, token=mint_jwt(user), action_timeout=0.5, min_backoff=0.05, max_backoff=0.2)
    await client.connect()
    assert node.proc is not None
    node.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(MatchdError) as err:
            await client.swipe(uid("bob"), "right", swipe_id="retry-me")
        assert (err.value.code, err.value.status) == ("timeout", None)
        pending = asyncio.ensure_future(client.swipe(uid("carol"), "right"))
        await asyncio.sleep(0.1)
        door.shut()
        with pytest.raises(MatchdError) as err:
            await pending
        assert err.value.code == "disconnected"
    finally:
        node.proc.send_signal(signal.SIGCONT)
    door.reopen()
    # A server nobody listens on: actions and connect() say so.
    lost = Client(f"http://127.0.0.1:{free_port()}", token=mint_jwt(user), connect_timeout=0.5)
    with pytest.raises(MatchdError) as err:
        await lost.matches()
    assert (err.value.code, err.value.status) == ("unavailable", None)
    with pytest.raises(MatchdError) as err:
        await lost.connect()
    assert err.value.code == "unavailable"
    await client.close()


async def test_duplicate_ids_are_dropped_and_the_backoff_is_bounded() -> None:
    client = Client("http://127.0.0.1:9", token="t", min_backoff=0.1, max_backoff=2.0)
    client._init_loop_state()
    frames = [
        {"id": 4, "type": "hello", "data": {"user": "u", "node": "n", "last_id": 6, "resumed_from": 4, "gap": False}},
        {"id": 5, "type": "match", "data": {}},
        {"id": 6, "type": "match_result", "data": {"score": 1}},
        {"id": 5, "type": "match", "data": {}},
        {"id": 6, "type": "match_result", "data": {"score": 1}},
        {"id": 7, "type": "unmatched", "data": {}},
    ]
    client._last_event_id = 4
    for f in frames:
        client._handle(f)
    await client.close()
    got = [(e.id, e.type) async for e in client.events()]
    assert got == [(4, "hello"), (5, "match"), (6, "match_result"), (7, "unmatched")]
    assert client.last_event_id == 7
    for failures in range(12):
        cap = min(2.0, 0.1 * 2**failures)
        assert all(0 <= client._backoff(failures) <= cap for _ in range(50))

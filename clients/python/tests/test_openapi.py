"""docs/openapi.yaml: a valid OpenAPI 3.1 document that says what the real server answers.

Each live case calls a running matchd (success and error cases) and checks every answer against
the document: the status must be listed for that path and method, the content type must be one
it lists, the body must validate against its schema, and required headers (`Retry-After`) must be
there. Stream frames (WebSocket and SSE) are checked against the event and frame schemas. So a
change to the server's answers that the document does not follow fails here.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from websockets.sync.client import connect as ws_connect

from support import REPO, MatchdServer, mint_jwt

DOC_PATH = REPO / "docs" / "openapi.yaml"
DOC_URI = "urn:matchd:openapi"
ERROR_CODES = [
    "bad_request",
    "invalid_user",
    "self_swipe",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "payload_too_large",
    "rate_limited",
    "unavailable",
]
SERVER_API_PATHS = {
    ("/v1/server/publish", "post"),
    ("/v1/server/users/{user}", "get"),
    ("/v1/server/rooms/{room_id}/close", "post"),
}
V1_PATHS = {
    ("/v1/dev/token", "post"),
    ("/v1/swipes", "post"),
    ("/v1/matches", "get"),
    ("/v1/matches/{match_id}", "delete"),
    ("/v1/queue", "post"),
    ("/v1/queue", "delete"),
    ("/v1/queue/{pool}", "get"),
    ("/v1/rooms/{room_id}/skip", "post"),
    ("/v1/ws", "get"),
    ("/v1/events", "get"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/dashboard", "get"),
    ("/dashboard/data", "get"),
}


def pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


class Document:
    """The document, with its schemas ready to validate instances (JSON Schema 2020-12, which an
    OpenAPI 3.1 schema object is)."""

    def __init__(self, doc: Dict[str, Any]) -> None:
        self.doc = doc
        self.registry: Registry = Registry().with_resource(DOC_URI, Resource(contents=doc, specification=DRAFT202012))

    def at(self, ptr: str) -> Any:
        node: Any = self.doc
        for raw in ptr.split("/")[1:]:
            key = raw.replace("~1", "/").replace("~0", "~")
            node = node[int(key)] if isinstance(node, list) else node[key]
        return node

    def resolve(self, ptr: str) -> Tuple[str, Dict[str, Any]]:
        """The object at `ptr`, following a `$ref` (document-local) if it is one."""
        obj = self.at(ptr)
        while isinstance(obj, dict) and "$ref" in obj:
            ref = obj["$ref"]
            assert ref.startswith("#/"), ref
            ptr = ref[1:]
            obj = self.at(ptr)
        return ptr, obj

    def errors(self, schema_ptr: str, instance: Any) -> List[str]:
        fragment = quote(schema_ptr, safe="/~")
        validator = Draft202012Validator({"$ref": f"{DOC_URI}#{fragment}"}, registry=self.registry)
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(instance)
        ]

    def check_schema(self, name: str, instance: Any) -> None:
        problems = self.errors(pointer("components", "schemas", name), instance)
        assert not problems, f"{name} does not match {json.dumps(instance)[:400]}:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def doc() -> Document:
    with open(DOC_PATH) as f:
        return Document(yaml.safe_load(f))


# --------------------------------------------------------------------------- the document itself


def test_document_is_valid_openapi_3_1(doc: Document) -> None:
    assert str(doc.doc["openapi"]).startswith("3.1")
    validate_spec(doc.doc)


def test_document_lists_every_public_route_and_no_other(doc: Document) -> None:
    documented = {
        (path, method) for path, item in doc.doc["paths"].items() for method in item if method != "parameters"
    }
    assert documented == V1_PATHS | SERVER_API_PATHS


def test_error_schema_has_every_code(doc: Document) -> None:
    assert doc.at(pointer("components", "schemas", "ErrorCode"))["enum"] == ERROR_CODES
    for status, code in (("RateLimited", "rate_limited"), ("Unavailable", "unavailable")):
        _, response = doc.resolve(pointer("components", "responses", status))
        assert response["headers"]["Retry-After"], status
        doc.check_schema("Error", {"error": {"code": code, "message": "m"}})
    with pytest.raises(AssertionError):
        doc.check_schema("Error", {"error": {"code": "teapot", "message": "m"}})


def test_user_endpoints_need_a_bearer_token_and_operations_none(doc: Document) -> None:
    schemes = doc.at("/components/securitySchemes")
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert doc.doc["security"] == [{"bearerAuth": []}]
    for path in ("/healthz", "/readyz", "/metrics", "/v1/dev/token"):
        for method, op in doc.doc["paths"][path].items():
            assert op["security"] == [], (path, method)
    for path in ("/v1/ws", "/v1/events"):
        assert {"tokenQuery": []} in doc.doc["paths"][path]["get"]["security"]


def test_server_api_is_documented_as_the_contract_writes_it(doc: Document) -> None:
    schemes = doc.at("/components/securitySchemes")
    assert schemes["serverApiKey"] == {**schemes["serverApiKey"], "type": "apiKey", "in": "header", "name": "X-Api-Key"}
    for path, method in SERVER_API_PATHS:
        op = doc.doc["paths"][path][method]
        assert op["security"] == [{"serverApiKey": []}], path
        assert {"200", "401", "404"} <= set(op["responses"]), path
    publish = doc.doc["paths"]["/v1/server/publish"]["post"]
    assert {"400", "413"} <= set(publish["responses"])

    def answer_schema(path: str, method: str) -> str:
        ptr, _ = doc.resolve(pointer("paths", path, method, "responses", "200"))
        return ptr + pointer("content", "application/json", "schema")

    def ok(path: str, method: str, body: Any) -> bool:
        return not doc.errors(answer_schema(path, method), body)

    # The contract's own examples.
    assert ok("/v1/server/publish", "post", {"status": "published", "users": 2})
    assert ok(
        "/v1/server/users/{user}",
        "get",
        {
            "user": "alice",
            "place": {"state": "queued", "pool": "default"},
            "matches": 2,
            "connections": 1,
            "last_event_id": 17,
        },
    )
    assert ok(
        "/v1/server/users/{user}",
        "get",
        {
            "user": "alice",
            "place": {"state": "idle"},
            "matches": 0,
            "connections": 0,
            "last_event_id": 0,
        },
    )
    assert not ok(
        "/v1/server/users/{user}",
        "get",
        {"user": "alice", "place": {"state": "away"}, "matches": 0, "connections": 0, "last_event_id": 0},
    )
    assert ok("/v1/server/rooms/{room_id}/close", "post", {"status": "closed"})
    request = pointer("paths", "/v1/server/publish", "post", "requestBody", "content", "application/json", "schema")
    good = {"users": ["alice", "bob"], "type": "match_result", "data": {"score": 1}, "key": "k"}
    assert not doc.errors(request, good)
    for bad in (
        {**good, "type": "match"},
        {**good, "type": "Bad-Type"},
        {**good, "users": []},
        {**good, "users": ["not ok!"]},
        {**good, "extra": 1},
    ):
        assert doc.errors(request, bad), bad
    doc.check_schema("Event", {"id": 5, "type": "match_result", "data": {"score": 1}})


# --------------------------------------------------------------------------- live answers


@dataclass
class Answer:
    method: str
    template: str
    status: int
    headers: Dict[str, str]
    body: bytes
    frames: List[Any] = field(default_factory=list)


class Api:
    """Raw HTTP to the server under test; every answer is kept for checking."""

    def __init__(self, server: MatchdServer) -> None:
        self.port = server.port
        self.answers: List[Answer] = []

    def user(self, name: str) -> Tuple[str, str]:
        user = f"{name}-{uuid.uuid4().hex[:8]}"
        return user, mint_jwt(user)

    def call(
        self,
        method: str,
        template: str,
        path: Optional[str] = None,
        *,
        token: Optional[str] = None,
        body: Any = None,
        raw: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> Answer:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path or template, body=data, headers=hdrs)
            resp = conn.getresponse()
            answer = Answer(method, template, resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()
        self.answers.append(answer)
        return answer

    def json(self, *args: Any, **kwargs: Any) -> Any:
        return json.loads(self.call(*args, **kwargs).body)

    def sse(self, token: str, headers: Optional[Dict[str, str]] = None, frames: int = 1) -> Answer:
        """Opens `/v1/events`, reads `frames` events (or the error answer), and closes."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {token}", **(headers or {})})
        resp = conn.getresponse()
        answer = Answer("GET", "/v1/events", resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"")
        try:
            if resp.status != 200:
                answer.body = resp.read()
            else:
                buf = b""
                deadline = time.monotonic() + 10
                while len(answer.frames) < frames and time.monotonic() < deadline:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n\n" in buf:
                        block, buf = buf.split(b"\n\n", 1)
                        fields = dict(
                            line.split(": ", 1)
                            for line in block.decode().split("\n")
                            if ": " in line and not line.startswith(":")
                        )
                        if "data" in fields:
                            event = json.loads(fields["data"])
                            assert fields["id"] == str(event["id"]) and fields["event"] == event["type"], block
                            answer.frames.append(event)
        finally:
            conn.close()
        self.answers.append(answer)
        return answer


def check_answer(doc: Document, answer: Answer) -> None:
    where = f"{answer.method} {answer.template} -> {answer.status}"
    op_ptr = pointer("paths", answer.template, answer.method.lower())
    responses = doc.at(op_ptr)["responses"]
    assert (
        str(answer.status) in responses
    ), f"{where}: status not in the document ({sorted(responses)}); body {answer.body[:300]!r}"
    resp_ptr, response = doc.resolve(op_ptr + pointer("responses", str(answer.status)))
    for name, header in response.get("headers", {}).items():
        _, header = doc.resolve(resp_ptr + pointer("headers", name))
        value = answer.headers.get(name.lower())
        if header.get("required"):
            assert value is not None, f"{where}: header {name} missing"
        if value is not None and header["schema"].get("type") == "integer":
            assert value.isdigit(), f"{where}: header {name}={value!r} is not an integer"
    content = response.get("content")
    if not content:
        assert not answer.body, f"{where}: the document lists no body, the server sent {answer.body[:200]!r}"
        return
    media = answer.headers.get("content-type", "").split(";")[0].strip()
    assert media in content, f"{where}: content type {media!r}, the document lists {sorted(content)}"
    if media == "application/json":
        body = json.loads(answer.body)
        problems = doc.errors(resp_ptr + pointer("content", media, "schema"), body)
        assert not problems, f"{where}: body {answer.body[:400]!r} does not match:\n" + "\n".join(problems)
    elif media == "text/event-stream":
        assert answer.frames, f"{where}: no event read"
        for frame in answer.frames:
            doc.check_schema("Event", frame)


# Each case drives the server and returns nothing; the answers it got are checked afterwards.
# `covers` names the (method, path template, status) answers it must have produced.
@dataclass
class Case:
    name: str
    covers: List[Tuple[str, str, int]]
    run: Callable[[Api, Document], None]


V1_CASES: List[Case] = []
SERVER_API_CASES: List[Case] = []


def case(
    *covers: Tuple[str, str, int], into: Optional[List[Case]] = None
) -> Callable[[Callable[[Api, Document], None]], Callable[[Api, Document], None]]:
    def register(fn: Callable[[Api, Document], None]) -> Callable[[Api, Document], None]:
        (V1_CASES if into is None else into).append(Case(fn.__name__, list(covers), fn))
        return fn

    return register


@case(("POST", "/v1/dev/token", 200), ("POST", "/v1/dev/token", 400))
def dev_token(api: Api, doc: Document) -> None:
    token = api.json("POST", "/v1/dev/token", body={"user_id": "alice"})["token"]
    assert api.call("GET", "/v1/matches", token=token).status == 200
    assert api.call("POST", "/v1/dev/token", body={"user_id": "not ok!"}).status == 400
    assert api.call("POST", "/v1/dev/token", body={"user_id": "alice", "admin": True}).status == 400
    assert api.call("POST", "/v1/dev/token", raw=b"{not json").status == 400


@case(("POST", "/v1/swipes", 200), ("GET", "/v1/matches", 200))
def swipes_pending_matched_passed(api: Api, doc: Document) -> None:
    (a, ta), (b, tb) = api.user("alice"), api.user("bob")
    assert api.json("POST", "/v1/swipes", token=ta, body={"target": b, "direction": "right"})["status"] == "pending"
    matched = api.json("POST", "/v1/swipes", token=tb, body={"target": a, "direction": "right", "swipe_id": "s1"})
    assert matched["status"] == "matched"
    again = api.json("POST", "/v1/swipes", token=tb, body={"target": a, "direction": "right", "swipe_id": "s1"})
    assert again == matched
    passed = api.json("POST", "/v1/swipes", token=ta, body={"target": b, "direction": "left"})
    assert passed == {"status": "passed", "match": matched["match"]}
    assert api.json("GET", "/v1/matches", token=ta) == {"matches": [matched["match"]]}


@case(
    ("POST", "/v1/swipes", 400), ("POST", "/v1/swipes", 401), ("POST", "/v1/swipes", 413), ("GET", "/v1/matches", 401)
)
def swipe_errors(api: Api, doc: Document) -> None:
    a, ta = api.user("alice")
    codes = [
        api.json("POST", "/v1/swipes", token=ta, body={"target": a, "direction": "right"})["error"]["code"],
        api.json("POST", "/v1/swipes", token=ta, body={"target": "no way!", "direction": "right"})["error"]["code"],
        api.json("POST", "/v1/swipes", token=ta, body=["bob", "right"])["error"]["code"],
        api.json("POST", "/v1/swipes", token=ta, body={"target": "bob", "direction": "up"})["error"]["code"],
    ]
    assert codes == ["self_swipe", "invalid_user", "bad_request", "bad_request"]
    assert api.call("POST", "/v1/swipes", body={"target": "bob", "direction": "right"}).status == 401
    assert api.call("POST", "/v1/swipes", token="x.y.z", body={"target": "bob", "direction": "right"}).status == 401
    big = {"target": "bob", "direction": "right", "swipe_id": "x" * 20000}
    assert api.call("POST", "/v1/swipes", token=ta, body=big).status == 413
    assert api.call("GET", "/v1/matches").status == 401


@case(("POST", "/v1/swipes", 429))
def swipe_rate_limited(api: Api, doc: Document) -> None:
    _, ta = api.user("eager")
    for i in range(40):
        answer = api.call("POST", "/v1/swipes", token=ta, body={"target": f"t{i}", "direction": "right"})
        if answer.status == 429:
            assert int(answer.headers["retry-after"]) >= 1
            return
        assert answer.status == 200
    raise AssertionError("no 429 after 40 swipes (action_burst is 5 on this server)")


@case(
    ("DELETE", "/v1/matches/{match_id}", 200),
    ("DELETE", "/v1/matches/{match_id}", 403),
    ("DELETE", "/v1/matches/{match_id}", 404),
)
def unmatch(api: Api, doc: Document) -> None:
    (a, ta), (b, tb), (_, tc) = api.user("alice"), api.user("bob"), api.user("carol")
    api.call("POST", "/v1/swipes", token=ta, body={"target": b, "direction": "right"})
    match_id = api.json("POST", "/v1/swipes", token=tb, body={"target": a, "direction": "right"})["match"]["match_id"]
    path = f"/v1/matches/{match_id}"
    assert api.call("DELETE", "/v1/matches/{match_id}", path, token=tc).status == 403
    assert api.json("DELETE", "/v1/matches/{match_id}", path, token=ta) == {"status": "unmatched"}
    assert api.json("DELETE", "/v1/matches/{match_id}", path, token=ta) == {"status": "unmatched"}
    assert api.call("DELETE", "/v1/matches/{match_id}", f"/v1/matches/9.{'0' * 32}", token=ta).status == 404
    assert api.call("DELETE", "/v1/matches/{match_id}", "/v1/matches/nope", token=ta).status == 404


@case(
    ("POST", "/v1/queue", 202),
    ("POST", "/v1/queue", 200),
    ("POST", "/v1/queue", 409),
    ("POST", "/v1/queue", 400),
    ("DELETE", "/v1/queue", 200),
    ("GET", "/v1/queue/{pool}", 200),
    ("GET", "/v1/queue/{pool}", 404),
    ("POST", "/v1/rooms/{room_id}/skip", 200),
    ("POST", "/v1/rooms/{room_id}/skip", 404),
    ("POST", "/v1/rooms/{room_id}/skip", 400),
    ("POST", "/v1/rooms/{room_id}/skip", 403),
)
def queue_and_rooms(api: Api, doc: Document) -> None:
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    (_, ta), (_, tb), (_, tc) = api.user("alice"), api.user("bob"), api.user("carol")
    assert api.json("DELETE", "/v1/queue", token=ta) == {"status": "not_queued"}
    queued = api.json("POST", "/v1/queue", token=ta, body={"pool": pool, "rating": 1500, "region": "eu", "tags": ["x"]})
    assert queued["status"] == "queued"
    assert (
        api.json("POST", "/v1/queue", token=ta, body={"pool": pool, "rating": 1500, "region": "eu", "tags": ["x"]})
        == queued
    )
    assert api.json("GET", "/v1/queue/{pool}", f"/v1/queue/{pool}", token=ta)["waiting"] == 1
    assert api.json("DELETE", "/v1/queue", token=ta) == {"status": "left", "pool": pool}
    assert api.call("POST", "/v1/queue", token=ta).status == 202  # no body: the default pool
    assert api.json("DELETE", "/v1/queue", token=ta)["status"] == "left"
    assert api.call("POST", "/v1/queue", token=ta, body={"pool": pool, "region": "x" * 40}).status == 400
    assert api.call("POST", "/v1/queue", token=ta, body={"pool": pool}).status == 202
    paired = api.json("POST", "/v1/queue", token=tb, body={"pool": pool})
    assert paired["status"] == "matched"
    room_id = paired["room"]["room_id"]
    assert api.call("POST", "/v1/queue", token=tb, body={"pool": pool}).status == 409
    assert api.json("DELETE", "/v1/queue", token=ta) == {"status": "in_room", "room_id": room_id}
    skip = "/v1/rooms/{room_id}/skip"
    assert api.call("POST", skip, f"/v1/rooms/{room_id}/skip", token=tc).status == 403
    assert api.call("POST", skip, f"/v1/rooms/{room_id}/skip", token=ta, body={"requeue": "yes"}).status == 400
    assert api.json("POST", skip, f"/v1/rooms/{room_id}/skip", token=ta, body={"requeue": False}) == {
        "status": "skipped",
        "requeued": False,
    }
    assert api.call("POST", skip, f"/v1/rooms/5.{'0' * 32}/skip", token=ta).status == 404
    assert api.call("GET", "/v1/queue/{pool}", "/v1/queue/a%20b", token=ta).status == 404
    api.call("DELETE", "/v1/queue", token=tb)


@case(("GET", "/v1/events", 200), ("GET", "/v1/events", 400), ("GET", "/v1/events", 401), ("GET", "/v1/events", 409))
def sse_stream(api: Api, doc: Document) -> None:
    (a, ta), (b, tb) = api.user("alice"), api.user("bob")
    api.call("POST", "/v1/swipes", token=tb, body={"target": a, "direction": "right"})
    api.call("POST", "/v1/swipes", token=ta, body={"target": b, "direction": "right"})
    stream = api.sse(ta, {"Last-Event-ID": "0"}, frames=2)
    assert [f["type"] for f in stream.frames] == ["hello", "match"]
    assert api.sse(ta, {"Last-Event-ID": "soon"}).status == 400
    assert api.call("GET", "/v1/events", "/v1/events?since=soon", token=ta).status == 400
    assert api.sse("bad").status == 401
    # This server allows two streams per user: a third is refused.
    _, tc = api.user("carol")
    holders = [socket.create_connection(("127.0.0.1", api.port), 5) for _ in range(2)]
    try:
        for s in holders:
            s.sendall(f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tc}\r\n\r\n".encode())
            assert s.recv(12).startswith(b"HTTP/1.1 200")
        refused = api.sse(tc)
        assert refused.status == 409
    finally:
        for s in holders:
            s.close()


@case(("GET", "/v1/ws", 101), ("GET", "/v1/ws", 400), ("GET", "/v1/ws", 401))
def websocket_frames(api: Api, doc: Document) -> None:
    (a, ta), (b, tb) = api.user("alice"), api.user("bob")
    url = f"ws://127.0.0.1:{api.port}/v1/ws?token={ta}&since=0"
    with ws_connect(url, open_timeout=5) as ws:
        api.answers.append(Answer("GET", "/v1/ws", 101, {}, b""))

        def recv() -> Any:
            return json.loads(ws.recv(timeout=5))

        hello = recv()
        doc.check_schema("HelloEvent", hello)
        doc.check_schema("Event", hello)
        frames = [
            {"type": "swipe", "target": b, "direction": "right", "swipe_id": "w1", "ref": 1},
            {"type": "swipe", "target": a, "direction": "right", "ref": "self"},
            {"type": "join_queue", "pool": f"p-{uuid.uuid4().hex[:6]}", "ref": 3},
            {"type": "leave_queue", "ref": 4},
            {"type": "unmatch", "match_id": f"3.{'0' * 32}", "ref": 5},
            {"type": "ping", "ref": 6},
        ]
        replies = []
        for frame in frames:
            doc.check_schema("ClientFrame", frame)
            ws.send(json.dumps(frame))
            replies.append(recv())
        doc.check_schema("AckFrame", replies[0])
        assert replies[0]["data"] == {"status": "pending", "match": None}
        doc.check_schema("ErrorFrame", replies[1])
        assert replies[1]["ref"] == "self" and replies[1]["data"]["code"] == "self_swipe"
        doc.check_schema("AckFrame", replies[2])
        doc.check_schema("AckFrame", replies[3])
        doc.check_schema("ErrorFrame", replies[4])
        assert replies[4]["data"]["code"] == "not_found"
        doc.check_schema("PongFrame", replies[5])
        api.call("POST", "/v1/swipes", token=tb, body={"target": a, "direction": "right"})
        event = recv()
        assert event["type"] == "match"
        doc.check_schema("MatchEvent", event)
        doc.check_schema("Event", event)
    assert api.call("GET", "/v1/ws", token=ta).status == 400  # not an upgrade: no body
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    assert api.json("GET", "/v1/ws", "/v1/ws?since=soon", token=ta, headers=upgrade)["error"]["code"] == "bad_request"
    assert api.call("GET", "/v1/ws", headers=upgrade).status == 401


@case(("GET", "/v1/events", 200))
def room_events_on_the_stream(api: Api, doc: Document) -> None:
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    (_, ta), (_, tb) = api.user("alice"), api.user("bob")
    api.call("POST", "/v1/queue", token=ta, body={"pool": pool})
    room_id = api.json("POST", "/v1/queue", token=tb, body={"pool": pool})["room"]["room_id"]
    api.call("POST", "/v1/rooms/{room_id}/skip", f"/v1/rooms/{room_id}/skip", token=tb)
    stream = api.sse(ta, {"Last-Event-ID": "0"}, frames=4)
    types = [f["type"] for f in stream.frames]
    assert types[:3] == ["hello", "room_assigned", "room_closed"], types
    assert "queue_update" in types or len(types) == 3
    for frame in stream.frames:
        doc.check_schema(frame["type"].title().replace("_", "") + "Event", frame)
    api.call("DELETE", "/v1/queue", token=ta)
    api.call("DELETE", "/v1/queue", token=tb)


@case(
    ("GET", "/healthz", 200),
    ("GET", "/readyz", 200),
    ("GET", "/metrics", 200),
    ("GET", "/dashboard", 200),
    ("GET", "/dashboard/data", 200),
)
def operations(api: Api, doc: Document) -> None:
    assert api.json("GET", "/healthz") == {"status": "ok"}
    assert api.json("GET", "/readyz")["status"] == "ready"
    metrics = api.call("GET", "/metrics")
    assert b"matchd_action_seconds" in metrics.body
    # Dev mode serves the dashboard without a key.
    page = api.call("GET", "/dashboard")
    assert b"<html" in page.body.lower()
    assert api.json("GET", "/dashboard/data")["slots_total"] == 16384


# The server API (`/v1/server/*`), checked against the document like the rest. Dev mode's key is
# `dev-api-key`.
API_KEY = {"X-Api-Key": "dev-api-key"}


@case(
    ("POST", "/v1/server/publish", 200),
    ("POST", "/v1/server/publish", 400),
    ("POST", "/v1/server/publish", 401),
    ("GET", "/v1/server/users/{user}", 200),
    ("GET", "/v1/server/users/{user}", 401),
    ("POST", "/v1/server/rooms/{room_id}/close", 200),
    ("POST", "/v1/server/rooms/{room_id}/close", 404),
    into=SERVER_API_CASES,
)
def server_api(api: Api, doc: Document) -> None:
    (a, ta), (b, tb) = api.user("alice"), api.user("bob")
    body = {"users": [a, b], "type": "match_result", "data": {"score": 0.9}, "key": "job-1"}
    assert api.json("POST", "/v1/server/publish", body=body, headers=API_KEY) == {"status": "published", "users": 2}
    assert api.call("POST", "/v1/server/publish", body={**body, "type": "match"}, headers=API_KEY).status == 400
    assert api.call("POST", "/v1/server/publish", body=body, headers={"X-Api-Key": "wrong-key-wrong-key"}).status == 401
    assert api.call("POST", "/v1/server/publish", body=body, token=ta).status == 401
    stream = api.sse(ta, {"Last-Event-ID": "0"}, frames=2)
    assert stream.frames[1]["type"] == "match_result"
    view = api.json("GET", "/v1/server/users/{user}", f"/v1/server/users/{a}", headers=API_KEY)
    assert view["user"] == a and view["last_event_id"] == 1
    assert api.call("GET", "/v1/server/users/{user}", f"/v1/server/users/{a}").status == 401
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    api.call("POST", "/v1/queue", token=ta, body={"pool": pool})
    room_id = api.json("POST", "/v1/queue", token=tb, body={"pool": pool})["room"]["room_id"]
    close = "/v1/server/rooms/{room_id}/close"
    assert api.json("POST", close, f"/v1/server/rooms/{room_id}/close", headers=API_KEY) == {"status": "closed"}
    assert api.json("POST", close, f"/v1/server/rooms/{room_id}/close", headers=API_KEY) == {"status": "closed"}
    assert api.call("POST", close, f"/v1/server/rooms/7.{'0' * 32}/close", headers=API_KEY).status == 404


LIVE_CASES: List[Case] = V1_CASES + SERVER_API_CASES


@pytest.fixture(scope="module")
def api_server(session_tmp: Any) -> Any:
    config = "[limits]\naction_burst = 5\nactions_per_second = 0.2\nmax_connections_per_user = 2\n"
    server = MatchdServer(session_tmp, config=config, name="openapi").start()
    yield server
    server.kill()


def test_every_v1_operation_has_a_live_case(doc: Document) -> None:
    covered = {(m.lower(), path) for c in V1_CASES for m, path, _ in c.covers}
    assert {(m, p) for p, m in V1_PATHS} <= covered
    server_covered = {(m.lower(), path) for c in SERVER_API_CASES for m, path, _ in c.covers}
    assert {(m, p) for p, m in SERVER_API_PATHS} <= server_covered


@pytest.mark.parametrize("live", LIVE_CASES, ids=lambda c: c.name)
def test_live_answers_match_the_document(live: Case, api_server: MatchdServer, doc: Document) -> None:
    api = Api(api_server)
    live.run(api, doc)
    got = {(a.method, a.template, a.status) for a in api.answers}
    missing = set(live.covers) - got
    assert not missing, f"the case did not produce {missing}"
    for answer in api.answers:
        check_answer(doc, answer)

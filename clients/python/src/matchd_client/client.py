"""`Client`: one user's connection to matchd, with its event stream and actions.

The stream (WebSocket `/v1/ws`, or Server-Sent Events `/v1/events`) reconnects by itself with
exponential backoff and full jitter, resumes after the last event it delivered (`?since=` /
`Last-Event-ID`) and drops any event id it has already delivered, so `events()` yields each event
once, in id order. It stops for good only on a terminal refusal: too many connections for this user
(close 4009, SSE 409), a token refused with no `get_token` to ask for another (or refused again after
asking), or a URL the server does not serve.

Actions go over the WebSocket as frames with a `ref` while it is connected, else over HTTP; either
way they answer the contract's JSON body or raise `MatchdError`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import ssl
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Literal, Optional, Union, cast
from urllib.parse import quote, urlencode

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from . import _http
from .errors import MatchdError
from .types import (
    Direction,
    Event,
    JoinAnswer,
    LeaveAnswer,
    MatchesAnswer,
    PoolStatus,
    SkipAnswer,
    SwipeAnswer,
    UnmatchAnswer,
)

try:  # websockets >= 13
    from websockets.asyncio.client import connect as _ws_connect  # type: ignore[import-not-found,unused-ignore]

    _HEADERS_KW = "additional_headers"
except ImportError:  # pragma: no cover - websockets 12
    from websockets.client import connect as _ws_connect  # type: ignore[no-redef,attr-defined,unused-ignore]

    _HEADERS_KW = "extra_headers"

try:
    _WS_CONNECT_PARAMS = set(inspect.signature(_ws_connect).parameters)
except (TypeError, ValueError):  # pragma: no cover
    _WS_CONNECT_PARAMS = set()

__all__ = ["Client", "dev_token", "TokenSource", "Transport"]

log = logging.getLogger("matchd_client")

Transport = Literal["ws", "sse"]
TokenSource = Callable[[], Awaitable[str]]
Callback = Callable[[Event], Any]

#: WebSocket close code: this user already has `limits.max_connections_per_user` streams.
CLOSE_TOO_MANY_CONNECTIONS = 4009

_MAX_FRAME = 4 * 1024 * 1024


class _End:
    """Marks the end of the event stream in the queue."""


_END = _End()


class _AuthRefused(Exception):
    def __init__(self, token: str, message: str) -> None:
        super().__init__(message)
        self.token = token
        self.message = message


class _Terminal(Exception):
    def __init__(self, error: MatchdError) -> None:
        super().__init__(str(error))
        self.error = error


class _NotSent(Exception):
    """The frame could not be written: the action may go over HTTP instead."""


def _retry_after(headers: Dict[str, str]) -> Optional[float]:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8")) if body else None
    except (ValueError, UnicodeDecodeError):
        return None


def _handshake_status(exc: BaseException) -> Optional[tuple[int, bytes]]:
    """Status and body of a refused WebSocket upgrade, across websockets versions."""
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "status_code"):
        return int(response.status_code), bytes(getattr(response, "body", b"") or b"")
    status = getattr(exc, "status_code", None)  # legacy InvalidStatusCode
    if isinstance(status, int):
        return status, b""
    return None


async def _quiet_close(ws: Any) -> None:
    try:
        await asyncio.wait_for(ws.close(), 2.0)
    except Exception:
        pass


class _SseParser:
    """Server-Sent Events framing: bytes in, the `data` of each complete message out."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> List[str]:
        self._buf += chunk.replace(b"\r\n", b"\n")
        out: List[str] = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                return out
            block, self._buf = self._buf[:end], self._buf[end + 2 :]
            data: List[str] = []
            for line in block.decode("utf-8", "replace").split("\n"):
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                if name == "data":
                    data.append(value[1:] if value.startswith(" ") else value)
            if data:
                out.append("\n".join(data))


async def dev_token(url: str, user_id: str, *, timeout: float = 10.0) -> str:
    """A token for `user_id` from a dev-mode server (`POST /v1/dev/token`)."""
    scheme, host, port, prefix = _http.split_base_url(url)
    resp = await _http.request(
        "POST", f"{scheme}://{host}:{port}{prefix}/v1/dev/token", json_body={"user_id": user_id}, timeout=timeout
    )
    body = resp.json() if resp.body else None
    if resp.status != 200 or not isinstance(body, dict):
        raise MatchdError.from_body(resp.status, body, _retry_after(resp.headers))
    return cast(str, body["token"])


class Client:
    """One user's connection to matchd.

    `url` is the server's base URL (`http://host:port`, `https://...`, or the `ws(s)://` form).
    Give `token` (a JWT), or `get_token`, an async callable returning one: it is asked for the
    first token and again whenever the server refuses the current one. Both may be given.

    `transport` is `"ws"` (WebSocket; actions travel on it) or `"sse"` (Server-Sent Events; actions
    use HTTP). Reconnect delays are drawn uniformly from `[0, min(max_backoff, min_backoff * 2**n)]`
    after the n-th failure in a row (full jitter), in seconds. `action_timeout` bounds each action.
    `last_event_id` resumes a stream an earlier client left at that id.

    Callbacks (plain or async functions of one `Event`): `on_connected` (each `hello`), `on_gap`
    (events after the resume point were lost: refetch state, e.g. `matches()`) and `on_disconnected`.
    The same three also appear in `events()`: `hello`, and the client's own `gap` and
    `disconnected` events (id None).
    """

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        get_token: Optional[TokenSource] = None,
        transport: Transport = "ws",
        min_backoff: float = 0.2,
        max_backoff: float = 30.0,
        action_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        last_event_id: Optional[int] = None,
        on_connected: Optional[Callback] = None,
        on_gap: Optional[Callback] = None,
        on_disconnected: Optional[Callback] = None,
        max_auth_retries: int = 3,
        sse_idle_timeout: float = 60.0,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        if token is None and get_token is None:
            raise ValueError("give token=... or get_token=...")
        if transport not in ("ws", "sse"):
            raise ValueError(f"transport must be 'ws' or 'sse', not {transport!r}")
        if min_backoff < 0 or max_backoff < min_backoff:
            raise ValueError("need 0 <= min_backoff <= max_backoff")
        scheme, host, port, prefix = _http.split_base_url(url)
        host_part = f"[{host}]" if ":" in host else host
        self._base = f"{scheme}://{host_part}:{port}{prefix}"
        self._ws_base = f"{'wss' if scheme == 'https' else 'ws'}://{host_part}:{port}{prefix}"
        self._token = token
        self._get_token = get_token
        self._transport: Transport = transport
        self._min_backoff = float(min_backoff)
        self._max_backoff = float(max_backoff)
        self._action_timeout = float(action_timeout)
        self._connect_timeout = float(connect_timeout)
        self._last_event_id = last_event_id
        self._on_connected = on_connected
        self._on_gap = on_gap
        self._on_disconnected = on_disconnected
        self._max_auth_retries = max_auth_retries
        self._sse_idle_timeout = sse_idle_timeout
        self._ssl = ssl_context

        self._queue: Optional[asyncio.Queue[Union[Event, _End]]] = None
        self._token_lock: Optional[asyncio.Lock] = None
        self._stop: Optional[asyncio.Event] = None
        self._ready: Optional[asyncio.Future[None]] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._ws: Any = None
        self._sse: Optional[_http.StreamResponse] = None
        self._connected = False
        self._closing = False
        self._ended = False
        self._error: Optional[MatchdError] = None
        self._pending: Dict[str, asyncio.Future[Any]] = {}
        self._ref_seq = 0
        self._last_error_frame: Optional[Dict[str, Any]] = None
        self._callback_tasks: set[asyncio.Task[Any]] = set()

    # ----------------------------------------------------------------- state

    @property
    def last_event_id(self) -> Optional[int]:
        """The id of the last event delivered (or the resume point of the first `hello`)."""
        return self._last_event_id

    @property
    def connected(self) -> bool:
        """True while a stream is open and has said `hello`."""
        return self._connected

    @property
    def error(self) -> Optional[MatchdError]:
        """The terminal error that stopped the client, if any."""
        return self._error

    # ----------------------------------------------------------- lifecycle

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _init_loop_state(self) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._token_lock = asyncio.Lock()
            self._stop = asyncio.Event()

    async def connect(self) -> None:
        """Opens the stream and waits for its first `hello` (at most `connect_timeout`).

        Raises `MatchdError` when the server refuses for good (bad token, too many connections)
        or cannot be reached in time; the client is then closed. Once connected, it reconnects by
        itself until `close()`.
        """
        if self._closing:
            raise MatchdError("closed", "the client is closed")
        self._init_loop_state()
        if self._task is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._run())
        assert self._ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self._connect_timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise MatchdError("unavailable", f"no stream opened within {self._connect_timeout} s", None) from None
        except MatchdError:
            await self.close()
            raise

    async def close(self) -> None:
        """Closes the stream for good; `events()` then ends. Safe to call more than once."""
        self._closing = True
        self._init_loop_state()
        assert self._stop is not None
        self._stop.set()
        ws, sse = self._ws, self._sse
        if sse is not None:
            sse.close()
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except Exception:
                pass
        task = self._task
        if task is not None and not task.done():
            try:
                # An open stream ends by itself now; a loop that is connecting or waiting is stopped.
                if ws is None and sse is None:
                    task.cancel()
                await asyncio.wait_for(asyncio.shield(task), 3.0)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        self._fail_pending(
            MatchdError("disconnected", "the client was closed before the answer; the outcome is unknown")
        )
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(MatchdError("closed", "the client was closed"))
            self._ready.exception()  # retrieved: no "never retrieved" warning
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            assert self._queue is not None
            self._queue.put_nowait(_END)

    async def events(self) -> AsyncIterator[Event]:
        """The user's events, each once, in id order, across reconnects.

        Ends after `close()`; raises the terminal `MatchdError` if the server refused for good.
        One consumer at a time: several loops over `events()` share (split) one stream.
        """
        self._init_loop_state()
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._queue.put_nowait(item)  # every other consumer ends too
                if self._error is not None:
                    raise self._error
                return
            yield item

    # ------------------------------------------------------------ the loop

    def _backoff(self, failures: int) -> float:
        cap = min(self._max_backoff, self._min_backoff * (2 ** min(failures, 32)))
        return random.uniform(0, cap)

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _fail(self, error: MatchdError) -> None:
        self._error = error
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()
        self._end()

    async def _run(self) -> None:
        failures = 0
        auth_refusals = 0
        try:
            while not self._closing:
                reached = False
                try:
                    token = await self._token_value()
                    if self._transport == "ws":
                        reached = await self._ws_session(token)
                    else:
                        reached = await self._sse_session(token)
                    if reached:
                        auth_refusals = 0
                except _AuthRefused as e:
                    auth_refusals += 1
                    self._invalidate_token(e.token)
                    if self._get_token is None or auth_refusals > self._max_auth_retries:
                        self._fail(MatchdError("unauthorized", e.message, 401))
                        return
                    log.info("matchd refused the token (%s); asking get_token for a new one", e.message)
                    if auth_refusals == 1:
                        continue  # a fresh token, at once
                except _Terminal as e:
                    self._fail(e.error)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # unreachable, 5xx, 429, get_token failed, ...
                    log.debug("matchd stream failed: %r", e)
                if self._closing:
                    return
                if reached:
                    failures = 0
                delay = self._backoff(failures)
                failures += 1
                await self._sleep(delay)
        finally:
            self._connected = False
            if self._closing or self._error is not None:
                self._end()

    async def _ws_session(self, token: str) -> bool:
        url = f"{self._ws_base}/v1/ws"
        if self._last_event_id is not None:
            url += "?" + urlencode({"since": self._last_event_id})
        kwargs: Dict[str, Any] = {
            _HEADERS_KW: {"Authorization": f"Bearer {token}"},
            "open_timeout": self._connect_timeout,
            "max_size": _MAX_FRAME,
            "ping_interval": 20,
            "ping_timeout": 20,
            "close_timeout": 2,
        }
        if "proxy" in _WS_CONNECT_PARAMS:
            kwargs["proxy"] = None  # a loopback or LAN server must not go through an environment proxy
        if self._ssl is not None and url.startswith("wss:"):
            kwargs["ssl"] = self._ssl
        try:
            ws = await asyncio.wait_for(_ws_connect(url, **kwargs), self._connect_timeout + 1)
        except InvalidHandshake as e:
            refused = _handshake_status(e)
            if refused is None:
                raise ConnectionError(f"WebSocket handshake failed: {e}") from e
            status, body = refused
            err = MatchdError.from_body(status, _json_or_none(body))
            if status == 401:
                raise _AuthRefused(token, err.message or "the token was refused") from None
            if status in (400, 403, 404, 409):
                raise _Terminal(err) from None
            raise err from None
        self._ws = ws
        self._last_error_frame = None
        reached = False
        try:
            if self._closing:
                return False
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue
                try:
                    msg = json.loads(raw)
                except ValueError:
                    log.warning("matchd sent a frame that is not JSON: %.80r", raw)
                    continue
                if isinstance(msg, dict) and self._handle(msg):
                    reached = True
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            self._connected = False
            if self._closing:
                asyncio.ensure_future(_quiet_close(ws))
            self._fail_pending(
                MatchdError("disconnected", "the connection closed before the answer; the outcome is unknown")
            )
        code = getattr(ws, "close_code", None)
        reason = getattr(ws, "close_reason", None) or ""
        if reached and not self._closing:
            self._emit_client_event(
                "disconnected", {"code": None if code is None else int(code), "reason": reason}, self._on_disconnected
            )
        if code == CLOSE_TOO_MANY_CONNECTIONS:
            frame: Dict[str, Any] = self._last_error_frame or {}
            message = frame.get("message") or reason or "too many connections for this user"
            raise _Terminal(MatchdError("conflict", str(message), 409, close_code=code))
        return reached

    async def _sse_session(self, token: str) -> bool:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self._last_event_id is not None:
            headers["Last-Event-ID"] = str(self._last_event_id)
        try:
            resp = await _http.open_stream(
                f"{self._base}/v1/events", headers=headers, timeout=self._connect_timeout, ssl_context=self._ssl
            )
        except asyncio.TimeoutError:
            raise ConnectionError("the SSE stream did not answer in time") from None
        if resp.status != 200:
            try:
                body = await asyncio.wait_for(resp.read(), 5.0)
            except Exception:
                body = b""
            finally:
                resp.close()
            err = MatchdError.from_body(resp.status, _json_or_none(body), _retry_after(resp.headers))
            if resp.status == 401:
                raise _AuthRefused(token, err.message or "the token was refused")
            if resp.status in (400, 403, 404, 409):
                raise _Terminal(err)
            raise err
        self._sse = resp
        parser = _SseParser()
        reached = False
        chunks = resp.chunks().__aiter__()
        try:
            while not self._closing:
                try:
                    chunk = await asyncio.wait_for(chunks.__anext__(), self._sse_idle_timeout)
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    log.info("matchd SSE stream silent for %s s; reconnecting", self._sse_idle_timeout)
                    break
                for data in parser.feed(chunk):
                    try:
                        msg = json.loads(data)
                    except ValueError:
                        continue
                    if isinstance(msg, dict) and self._handle(msg):
                        reached = True
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            resp.close()
            self._sse = None
            self._connected = False
        if reached and not self._closing:
            self._emit_client_event("disconnected", {"code": None, "reason": "stream ended"}, self._on_disconnected)
        return reached

    # -------------------------------------------------------------- frames

    def _put(self, event: Event) -> None:
        assert self._queue is not None
        if not self._ended:
            self._queue.put_nowait(event)

    def _callback(self, fn: Optional[Callback], event: Event) -> None:
        if fn is None:
            return
        try:
            result = fn(event)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._callback_tasks.add(task)
                task.add_done_callback(self._callback_tasks.discard)
        except Exception:
            log.exception("matchd client callback failed")

    def _emit_client_event(self, type_: str, data: Dict[str, Any], fn: Optional[Callback]) -> None:
        event = Event(None, type_, data)
        self._put(event)
        self._callback(fn, event)

    def _handle(self, msg: Dict[str, Any]) -> bool:
        """Handles one frame; True when it is the connection's `hello`."""
        type_ = msg.get("type")
        data = msg.get("data")
        if not isinstance(data, dict):
            data = {}
        if type_ in ("ack", "pong") or (type_ == "error" and "id" not in msg):
            ref = msg.get("ref", data.get("ref"))
            fut = self._pending.get(str(ref)) if ref is not None else None
            if fut is not None and not fut.done():
                if type_ == "error":
                    fut.set_exception(MatchdError.from_frame(data))
                else:
                    fut.set_result(msg.get("data"))
            elif type_ == "error":
                self._last_error_frame = data
                self._put(Event(None, "error", data))
            return False
        raw_id = msg.get("id")
        event_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
        if type_ == "hello":
            if event_id is not None and (self._last_event_id is None or data.get("gap")):
                # The server's numbering is the truth after a gap (a server that lost its memory
                # numbers from scratch); before that the first hello gives the starting point.
                self._last_event_id = event_id
            self._connected = True
            hello = Event(event_id, "hello", data)
            self._put(hello)
            self._callback(self._on_connected, hello)
            if data.get("gap"):
                self._emit_client_event("gap", dict(data), self._on_gap)
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            return True
        if not isinstance(type_, str):
            return False
        if event_id is not None:
            if self._last_event_id is not None and event_id <= self._last_event_id:
                return False  # already delivered (a replay overlapping a live event)
            self._last_event_id = event_id
        self._put(Event(event_id, type_, data))
        return False

    def _fail_pending(self, error: MatchdError) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)
                fut.exception()

    # -------------------------------------------------------------- tokens

    async def _token_value(self) -> str:
        if self._token is not None:
            return self._token
        if self._get_token is None:
            raise MatchdError("unauthorized", "no token", 401)
        self._init_loop_state()
        assert self._token_lock is not None
        async with self._token_lock:
            if self._token is None:
                token = await self._get_token()
                if not isinstance(token, str) or not token:
                    raise MatchdError("unauthorized", "get_token returned no token", 401)
                self._token = token
            return self._token

    def _invalidate_token(self, token: str) -> None:
        if self._get_token is not None and self._token == token:
            self._token = None

    # ------------------------------------------------------------- actions

    async def _action(self, frame: Dict[str, Any], method: str, path: str, body: Optional[Dict[str, Any]]) -> Any:
        ws = self._ws
        if ws is not None and self._connected:
            try:
                return await self._ws_action(ws, frame)
            except _NotSent:
                pass
        return await self._http_action(method, path, body)

    async def _ws_action(self, ws: Any, frame: Dict[str, Any]) -> Any:
        self._ref_seq += 1
        ref = f"py-{self._ref_seq}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ref] = fut
        try:
            try:
                await ws.send(json.dumps({**frame, "ref": ref}, separators=(",", ":")))
            except ConnectionClosed:
                raise _NotSent() from None
            try:
                return await asyncio.wait_for(fut, self._action_timeout)
            except asyncio.TimeoutError:
                raise MatchdError(
                    "timeout",
                    f"no answer within {self._action_timeout} s; the outcome is unknown "
                    "(retry with the same swipe_id)",
                    None,
                ) from None
        finally:
            self._pending.pop(ref, None)

    async def _http_action(self, method: str, path: str, body: Optional[Dict[str, Any]]) -> Any:
        for attempt in range(2):
            token = await self._token_value()
            try:
                resp = await _http.request(
                    method,
                    self._base + path,
                    headers={"Authorization": f"Bearer {token}"},
                    json_body=body,
                    timeout=self._action_timeout,
                    ssl_context=self._ssl,
                )
            except asyncio.TimeoutError:
                raise MatchdError(
                    "timeout", f"no answer within {self._action_timeout} s; the outcome is unknown", None
                ) from None
            except OSError as e:
                raise MatchdError("unavailable", f"cannot reach the server: {e}", None) from None
            data = _json_or_none(resp.body)
            if resp.status == 401 and self._get_token is not None and attempt == 0:
                self._invalidate_token(token)
                continue
            if resp.status >= 400:
                raise MatchdError.from_body(resp.status, data, _retry_after(resp.headers))
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    async def swipe(self, target: str, direction: Direction, swipe_id: Optional[str] = None) -> SwipeAnswer:
        """Likes (`right`) or passes (`left`) `target`. `swipe_id` makes a retry safe."""
        body: Dict[str, Any] = {"target": target, "direction": direction}
        if swipe_id is not None:
            body["swipe_id"] = swipe_id
        return cast(SwipeAnswer, await self._action({"type": "swipe", **body}, "POST", "/v1/swipes", body))

    async def unmatch(self, match_id: str) -> UnmatchAnswer:
        """Ends a match; the partner gets `unmatched`."""
        return cast(
            UnmatchAnswer,
            await self._action(
                {"type": "unmatch", "match_id": match_id}, "DELETE", f"/v1/matches/{quote(match_id, safe='')}", None
            ),
        )

    async def join_queue(
        self,
        pool: Optional[str] = None,
        rating: Optional[int] = None,
        region: Optional[str] = None,
        tags: Optional[List[str]] = None,
    ) -> JoinAnswer:
        """Joins a spin pool (`default` when None): `queued` with a place, or `matched` with a room."""
        body: Dict[str, Any] = {}
        if pool is not None:
            body["pool"] = pool
        if rating is not None:
            body["rating"] = rating
        if region is not None:
            body["region"] = region
        if tags is not None:
            body["tags"] = list(tags)
        return cast(JoinAnswer, await self._action({"type": "join_queue", **body}, "POST", "/v1/queue", body))

    async def leave_queue(self) -> LeaveAnswer:
        """Leaves the queue: `left`, `not_queued`, or `in_room` (skip that room to leave it)."""
        return cast(LeaveAnswer, await self._action({"type": "leave_queue"}, "DELETE", "/v1/queue", None))

    async def skip(self, room_id: str, requeue: Optional[bool] = None) -> SkipAnswer:
        """Closes a room (the partner gets `room_closed` at once); both are requeued unless `requeue=False`."""
        body: Dict[str, Any] = {}
        if requeue is not None:
            body["requeue"] = requeue
        return cast(
            SkipAnswer,
            await self._action(
                {"type": "skip", "room_id": room_id, **body},
                "POST",
                f"/v1/rooms/{quote(room_id, safe='')}/skip",
                body,
            ),
        )

    async def matches(self) -> MatchesAnswer:
        """The caller's active matches (over HTTP)."""
        return cast(MatchesAnswer, await self._http_action("GET", "/v1/matches", None))

    async def pool_status(self, pool: str = "default") -> PoolStatus:
        """How many wait in `pool` and the estimated wait (over HTTP)."""
        return cast(PoolStatus, await self._http_action("GET", f"/v1/queue/{quote(pool, safe='')}", None))

    async def ping(self) -> None:
        """A round trip on the WebSocket (`ping` -> `pong`); raises when not connected over WebSocket."""
        ws = self._ws
        if ws is None or not self._connected:
            raise MatchdError("disconnected", "no WebSocket is connected")
        try:
            await self._ws_action(ws, {"type": "ping"})
        except _NotSent:
            raise MatchdError("disconnected", "the WebSocket closed") from None

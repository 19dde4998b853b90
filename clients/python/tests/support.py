"""Test support: the real `matchd` binary (env `MATCHD_BIN`, default `<repo>/target/debug/matchd`) and a
real `redis-server` as child processes on free loopback ports, a TCP gate to cut and count a
client's connections, and helpers for tokens, metrics and event collection."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from matchd_client import Client, Event

REPO = Path(__file__).resolve().parents[3]
DEV_SECRET = "dev-secret"


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def matchd_bin() -> str:
    path = os.environ.get("MATCHD_BIN") or str(REPO / "target" / "debug" / "matchd")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"matchd binary not found at {path}: build it (`cargo build --bin matchd`) or set MATCHD_BIN",
            pytrace=False,
        )
    return path


def http_get(port: int, path: str, timeout: float = 2.0) -> Tuple[int, Dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class MatchdServer:
    """One `matchd` process. `config` is TOML text for `--config`; `args` more flags."""

    def __init__(self, tmp: Path, config: str = "", args: Optional[List[str]] = None, name: str = "matchd") -> None:
        self.tmp = tmp
        self.config = config
        self.args = list(args or [])
        self.name = name
        self.port = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = tmp / f"{name}.log"
        self._starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: Optional[int] = None, ready: bool = True) -> "MatchdServer":
        self.port = port or free_port()
        self._starts += 1
        cmd = [matchd_bin(), "--listen", f"127.0.0.1:{self.port}", "--workers", "1", "--shards", "2", *self.args]
        if self.config:
            cfg = self.tmp / f"{self.name}.toml"
            cfg.write_text(self.config)
            cmd += ["--config", str(cfg)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MATCHD_")}
        env["RUST_LOG"] = "warn"
        log = open(self.log_path, "ab")
        log.write(f"--- start {self._starts}: {' '.join(cmd)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        deadline = time.monotonic() + 20
        path = "/readyz" if ready else "/healthz"
        while True:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"matchd exited ({self.proc.returncode}) before it was up:\n{self.log_tail()}", pytrace=False
                )
            try:
                if http_get(self.port, path, 0.5)[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"matchd on port {self.port} did not answer {path} 200 in 20 s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a graceful restart: streams close with 1012), then SIGKILL past `timeout`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def metrics(self) -> str:
        status, _, body = http_get(self.port, "/metrics")
        assert status == 200
        return body.decode()


class RedisServer:
    """A durable (AOF, fsync always) redis-server in its own directory."""

    def __init__(self, tmp: Path) -> None:
        binary = os.environ.get("MATCHD_REDIS_SERVER_BIN") or shutil.which("redis-server")
        if not binary:
            pytest.fail(
                "redis-server is not installed: `apt-get install redis-server` (or set MATCHD_REDIS_SERVER_BIN); "
                "the Redis tests never skip",
                pytrace=False,
            )
        self.port = free_port()
        self.dir = tmp / "redis"
        self.dir.mkdir(exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"redis-server on port {self.port} did not answer PING", pytrace=False)
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Gate:
    """A loopback TCP forwarder in front of a server: counts the connections it accepts; `shut()`
    refuses new ones and cuts open ones (as a network outage would); `target` may be moved to
    another server port."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.open = True
        self.accepted = 0
        self._lock = threading.Lock()
        self._conns: List[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                is_open = self.open
            if not is_open:
                down.close()
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.target), 2)
            except OSError:
                down.close()
                continue
            up.settimeout(None)  # the connect timeout must not become an idle timeout
            with self._lock:
                self._conns += [down, up]
            threading.Thread(target=self._pump, args=(down, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def shut(self) -> None:
        with self._lock:
            self.open = False
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def reopen(self, target: Optional[int] = None) -> None:
        with self._lock:
            if target is not None:
                self.target = target
            self.open = True

    def close(self) -> None:
        self._closed = True
        self.shut()
        self._listener.close()


# --------------------------------------------------------------------------- helpers


def uid(name: str) -> str:
    """A user (or pool) name unique to this run, so tests on the shared server never meet."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


def mint_jwt(sub: str, exp: Optional[int] = None, secret: str = DEV_SECRET) -> str:
    """An HS256 JWT, as a dev-mode server accepts (`dev-secret`)."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims: Dict[str, Any] = {"sub": sub}
    if exp is not None:
        claims["exp"] = exp
    payload = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"


def action_counts(metrics: str) -> Dict[Tuple[str, str], float]:
    """`matchd_action_seconds_count` by (action, transport)."""
    out: Dict[Tuple[str, str], float] = {}
    for line in metrics.splitlines():
        if not line.startswith("matchd_action_seconds_count{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        out[(labels.get("action", ""), labels.get("transport", ""))] = float(line.rsplit(" ", 1)[1])
    return out


class Collector:
    """Reads a client's `events()` in the background into `events`."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: List[Event] = []
        self.error: Optional[BaseException] = None
        self.ended = False
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for event in self.client.events():
                self.events.append(event)
                self._changed.set()
        except Exception as e:  # the terminal error of the client
            self.error = e
        finally:
            self.ended = True
            self._changed.set()

    def of(self, type_: str) -> List[Event]:
        return [e for e in self.events if e.type == type_]

    async def wait_for(self, pred: Callable[[Event], bool], timeout: float = 10.0, what: str = "event") -> Event:
        deadline = asyncio.get_running_loop().time() + timeout
        seen = 0
        while True:
            for e in self.events[seen:]:
                if pred(e):
                    return e
            seen = len(self.events)
            if self.ended:
                raise AssertionError(f"stream ended ({self.error!r}) before {what}; got {self.events}")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout} s; got {self.events}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_type(self, type_: str, timeout: float = 10.0, **fields: Any) -> Event:
        def pred(e: Event) -> bool:
            return e.type == type_ and all(e.data.get(k) == v for k, v in fields.items())

        return await self.wait_for(pred, timeout, what=f"{type_} {fields or ''}")

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass

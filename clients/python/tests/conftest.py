"""Fixtures: matchd and redis-server processes (see `support`), each killed when its test or the
session ends. Coroutine tests run with `asyncio.run` under a per-test deadline (no plugin needed)."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import tempfile
from pathlib import Path
from typing import Any, List, Optional

import pytest

from support import Gate, MatchdServer, RedisServer

TEST_DEADLINE_S = 60.0


# --------------------------------------------------------------------------- async tests


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Optional[bool]:
    """Runs `async def` tests in a fresh event loop, bounded by `TEST_DEADLINE_S`."""
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    names = pyfuncitem._fixtureinfo.argnames  # type: ignore[attr-defined]
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}

    async def bounded() -> None:
        await asyncio.wait_for(func(**kwargs), TEST_DEADLINE_S)

    asyncio.run(bounded())
    return True


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def session_tmp() -> Any:
    d = Path(tempfile.mkdtemp(prefix="matchd-py-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def server(session_tmp: Path) -> Any:
    """A dev-mode, in-memory matchd shared by the tests that need no special setup."""
    s = MatchdServer(session_tmp, name="shared").start()
    yield s
    s.kill()


@pytest.fixture
def make_server(tmp_path: Path) -> Any:
    """Starts extra matchd processes for one test; all are killed when it ends."""
    started: List[MatchdServer] = []

    def make(config: str = "", args: Optional[List[str]] = None, name: str = "matchd") -> MatchdServer:
        s = MatchdServer(tmp_path, config=config, args=args, name=f"{name}{len(started)}")
        started.append(s)
        return s

    yield make
    for s in started:
        s.kill()


@pytest.fixture
def redis(tmp_path: Path) -> Any:
    r = RedisServer(tmp_path)
    yield r
    r.kill()


@pytest.fixture
def gate() -> Any:
    gates: List[Gate] = []

    def make(target: int) -> Gate:
        g = Gate(target)
        gates.append(g)
        return g

    yield make
    for g in gates:
        g.close()

"""A small HTTP/1.1 client on asyncio streams: one connection per request (`Connection: close`),
`Content-Length` and chunked bodies, and streamed responses for Server-Sent Events. It keeps the
package free of an HTTP dependency; matchd's API needs nothing more."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["Response", "StreamResponse", "request", "open_stream", "split_base_url"]

_MAX_HEAD = 64 * 1024


@dataclass
class Response:
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))


def split_base_url(url: str) -> Tuple[str, str, int, str]:
    """`(scheme, host, port, path prefix)` of an http(s) or ws(s) base URL."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}: use http(s):// or ws(s)://")
    if not parts.hostname:
        raise ValueError(f"no host in URL {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, parts.hostname, port, parts.path.rstrip("/")


class StreamResponse:
    """A response whose body is read as it arrives (`chunks()`); `close()` drops the connection."""

    def __init__(
        self, status: int, headers: Dict[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.status = status
        self.headers = headers
        self._reader = reader
        self._writer = writer

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in _body_chunks(self._reader, self.headers):
            yield chunk

    async def read(self) -> bytes:
        parts = [c async for c in self.chunks()]
        return b"".join(parts)

    def close(self) -> None:
        try:
            self._writer.close()
        except Exception:  # the transport may already be gone
            pass


async def _send(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: Optional[bytes],
    ssl_context: Optional[ssl.SSLContext],
) -> Tuple[int, Dict[str, str], asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    scheme, host, port, _ = split_base_url(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    use_ssl: Optional[ssl.SSLContext] = None
    if scheme == "https":
        use_ssl = ssl_context or ssl.create_default_context()
    reader, writer = await asyncio.open_connection(host, port, ssl=use_ssl, limit=_MAX_HEAD)
    try:
        host_header = host if ":" not in host else f"[{host}]"
        if parts.port:
            host_header += f":{parts.port}"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer.write(head + (body or b""))
        await writer.drain()
        status, resp_headers = await _read_head(reader)
        return status, resp_headers, reader, writer
    except BaseException:
        writer.close()
        raise


async def _read_head(reader: asyncio.StreamReader) -> Tuple[int, Dict[str, str]]:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection before answering")
        parts = line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ConnectionError(f"not an HTTP response: {line[:80]!r}")
        status = int(parts[1])
        headers: Dict[str, str] = {}
        while True:
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            continue
        return status, headers


async def _body_chunks(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> AsyncIterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionError("the connection closed inside a chunked body")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise ConnectionError("the connection closed before the whole body arrived")
            remaining -= len(data)
            yield data
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


async def request(
    method: str,
    url: str,
    *,
    headers: Optional[Mapping[str, str]] = None,
    json_body: Any = None,
    timeout: float = 10.0,
    ssl_context: Optional[ssl.SSLContext] = None,
) -> Response:
    """One request; the whole answer. Raises `asyncio.TimeoutError` past `timeout` seconds and
    `OSError`/`ConnectionError` when the server cannot be reached."""
    hdrs = {"Accept": "application/json", "User-Agent": "matchd-client-python"}
    hdrs.update(headers or {})
    body: Optional[bytes] = None
    if json_body is not None:
        body = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
        hdrs["Content-Type"] = "application/json"
    elif method in ("POST", "PUT", "PATCH"):
        body = b""

    async def run() -> Response:
        status, resp_headers, reader, writer = await _send(method, url, hdrs, body, ssl_context)
        try:
            if method == "HEAD" or status in (204, 304):
                data = b""
            else:
                data = b"".join([c async for c in _body_chunks(reader, resp_headers)])
            return Response(status, resp_headers, data)
        finally:
            writer.close()

    return await asyncio.wait_for(run(), timeout)


async def open_stream(
    url: str,
    *,
    headers: Optional[Mapping[str, str]] = None,
    timeout: float = 10.0,
    ssl_context: Optional[ssl.SSLContext] = None,
) -> StreamResponse:
    """A GET whose answer's head arrives within `timeout`; its body is read with `chunks()`."""
    hdrs = {"User-Agent": "matchd-client-python"}
    hdrs.update(headers or {})
    status, resp_headers, reader, writer = await asyncio.wait_for(_send("GET", url, hdrs, None, ssl_context), timeout)
    return StreamResponse(status, resp_headers, reader, writer)

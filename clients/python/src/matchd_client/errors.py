"""The one exception type of the client."""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ["MatchdError", "STATUS_OF_CODE"]

#: HTTP status of each error code of the contract (WebSocket `error` frames carry only the code).
STATUS_OF_CODE: Dict[str, int] = {
    "bad_request": 400,
    "invalid_user": 400,
    "self_swipe": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
}


class MatchdError(Exception):
    """An action or a connection the server refused, or that could not complete.

    `code` is the contract's snake_case code (`self_swipe`, `rate_limited`, ...), `message` the
    server's sentence, `status` the HTTP status (for answers over WebSocket, the status the same
    answer has over HTTP). Errors made by the client itself:

    - `timeout` (status None): no answer within `action_timeout`; the outcome is unknown, retry
      with the same `swipe_id`.
    - `disconnected` (status None): the connection closed before the answer; the outcome is
      unknown.
    - `unavailable` (status 503 or None): the server could not be reached.

    `retry_after` is the `Retry-After` of a 429 or 503, in seconds; `close_code` the WebSocket close
    code that ended the stream (4009: too many connections for this user).
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: Optional[int] = None,
        *,
        retry_after: Optional[float] = None,
        close_code: Optional[int] = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" (HTTP {status})" if status is not None else ""))
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.close_code = close_code

    @classmethod
    def from_body(cls, status: int, body: Any, retry_after: Optional[float] = None) -> "MatchdError":
        """The error of an HTTP answer: `{"error": {"code", "message"}}` (or a fallback)."""
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            message = err.get("message")
            return cls(err["code"], message if isinstance(message, str) else "", status, retry_after=retry_after)
        return cls(_code_of_status(status), f"HTTP {status} without an error body", status, retry_after=retry_after)

    @classmethod
    def from_frame(cls, data: Any) -> "MatchdError":
        """The error of a WebSocket `error` frame's data."""
        code = data.get("code") if isinstance(data, dict) else None
        message = data.get("message") if isinstance(data, dict) else None
        code = code if isinstance(code, str) else "bad_request"
        return cls(code, message if isinstance(message, str) else "", STATUS_OF_CODE.get(code))

    def __repr__(self) -> str:
        return f"MatchdError(code={self.code!r}, message={self.message!r}, status={self.status!r})"


def _code_of_status(status: int) -> str:
    for code, s in STATUS_OF_CODE.items():
        if s == status:
            return code
    return "unavailable" if status >= 500 else "bad_request"

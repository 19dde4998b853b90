"""Wire shapes of the matchd contract (docs/PROTOCOL.md), as typed dictionaries.

The answers of the actions are the server's JSON bodies, unchanged: these types only describe them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, TypedDict, Union

__all__ = [
    "Direction",
    "Event",
    "ErrorData",
    "HelloData",
    "JoinAnswer",
    "LeaveAnswer",
    "Match",
    "MatchEventData",
    "MatchesAnswer",
    "PoolStatus",
    "QueueUpdateData",
    "QueuedAnswer",
    "Room",
    "RoomAssignedData",
    "RoomClosedData",
    "RoomMatchedAnswer",
    "SkipAnswer",
    "SwipeAnswer",
    "SwipeStatus",
    "UnmatchAnswer",
    "UnmatchedData",
    "BUILTIN_EVENT_TYPES",
    "CLIENT_EVENT_TYPES",
]

Direction = Literal["right", "left"]
SwipeStatus = Literal["pending", "matched", "passed"]


class Match(TypedDict):
    """A mutual match. `users` is sorted; `created_at` is in Unix milliseconds."""

    match_id: str
    users: List[str]
    created_at: int


class Room(TypedDict):
    """A room two users were paired into by a spin pool."""

    room_id: str
    pool: str
    users: List[str]
    created_at: int
    payload: Dict[str, Any]


class SwipeAnswer(TypedDict):
    """Answer to `swipe`: `match` is set when the pair is matched (also for `passed` on a matched pair)."""

    status: SwipeStatus
    match: Optional[Match]


class MatchesAnswer(TypedDict):
    """Answer to `matches`: the caller's active matches."""

    matches: List[Match]


class UnmatchAnswer(TypedDict):
    status: Literal["unmatched"]


class QueuedAnswer(TypedDict):
    """`join_queue` answer while waiting (HTTP 202)."""

    status: Literal["queued"]
    pool: str
    position: int
    estimated_wait_ms: int


class RoomMatchedAnswer(TypedDict):
    """`join_queue` answer when paired at once (HTTP 200)."""

    status: Literal["matched"]
    room: Room


JoinAnswer = Union[QueuedAnswer, RoomMatchedAnswer]


class _LeaveBase(TypedDict):
    status: Literal["left", "not_queued", "in_room"]


class LeaveAnswer(_LeaveBase, total=False):
    """`left` carries `pool`; `in_room` carries `room_id` (the pool had already paired the user)."""

    pool: str
    room_id: str


class SkipAnswer(TypedDict):
    status: Literal["skipped"]
    requeued: bool


class PoolStatus(TypedDict):
    pool: str
    waiting: int
    estimated_wait_ms: int


class HelloData(TypedDict):
    """Data of the `hello` every connection starts with."""

    user: str
    node: str
    last_id: int
    resumed_from: Optional[int]
    gap: bool


class MatchEventData(TypedDict):
    match: Match


class UnmatchedData(TypedDict):
    """May also carry `reason: "server_repair"`: an operator's audit ended the match for the user
    (`by` is then the other member)."""

    match_id: str
    by: str


class RoomAssignedData(TypedDict):
    room: Room


class RoomClosedData(TypedDict):
    """`reason`: `skipped`, `partner_skipped`, `left`, `partner_left`, `closed_by_server`, `server_repair`
    (`server_restart` from servers before v1.1)."""

    room_id: str
    reason: str


class QueueUpdateData(TypedDict):
    pool: str
    position: int
    estimated_wait_ms: int


class _ErrorBase(TypedDict):
    code: str
    message: str


class ErrorData(_ErrorBase, total=False):
    ref: Any


#: Event types the server itself sends on a user's stream.
BUILTIN_EVENT_TYPES = frozenset(
    {"hello", "match", "unmatched", "room_assigned", "room_closed", "queue_update", "error"}
)

#: Events the client adds to the stream itself (they have no id): `gap` (events were lost; refetch
#: state, e.g. with `matches()`), `disconnected` (the connection dropped; the client reconnects).
CLIENT_EVENT_TYPES = frozenset({"gap", "disconnected"})


@dataclass(frozen=True)
class Event:
    """One event of the user's stream: `{"id", "type", "data"}`.

    `id` is the per-user, strictly increasing event id. `hello` carries the connection's resume
    point as its id. Events the client makes itself (`gap`, `disconnected`) and `error` frames
    that answer no action have `id` None. App-defined types (pushed by the app's backend through
    the server API, e.g. `match_result`) come through like built-in ones.
    """

    id: Optional[int]
    type: str
    data: Dict[str, Any] = field(default_factory=dict)

"""asyncio client for matchd, the real-time matching server.

async with Client("http://127.0.0.1:8080", token=token) as client:
    await client.swipe("bob", "right")
    async for event in client.events():
        print(event.id, event.type, event.data)
"""

from .client import Client, TokenSource, Transport, dev_token
from .errors import STATUS_OF_CODE, MatchdError
from .types import (
    BUILTIN_EVENT_TYPES,
    CLIENT_EVENT_TYPES,
    Direction,
    ErrorData,
    Event,
    HelloData,
    JoinAnswer,
    LeaveAnswer,
    Match,
    MatchEventData,
    MatchesAnswer,
    PoolStatus,
    QueuedAnswer,
    QueueUpdateData,
    Room,
    RoomAssignedData,
    RoomClosedData,
    RoomMatchedAnswer,
    SkipAnswer,
    SwipeAnswer,
    SwipeStatus,
    UnmatchAnswer,
    UnmatchedData,
)

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_EVENT_TYPES",
    "CLIENT_EVENT_TYPES",
    "Client",
    "Direction",
    "ErrorData",
    "Event",
    "HelloData",
    "JoinAnswer",
    "LeaveAnswer",
    "Match",
    "MatchEventData",
    "MatchdError",
    "MatchesAnswer",
    "PoolStatus",
    "QueuedAnswer",
    "QueueUpdateData",
    "Room",
    "RoomAssignedData",
    "RoomClosedData",
    "RoomMatchedAnswer",
    "STATUS_OF_CODE",
    "SkipAnswer",
    "SwipeAnswer",
    "SwipeStatus",
    "TokenSource",
    "Transport",
    "UnmatchAnswer",
    "UnmatchedData",
    "dev_token",
]

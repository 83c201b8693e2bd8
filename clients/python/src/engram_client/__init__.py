"""Python client for engram, the memory service for AI agents.

    from engram_client import Engram
    engram = Engram(namespace="agent-1")      # ENGRAM_URL, ENGRAM_API_KEY
    engram.add("The user prefers tea", wait=True)
    hits = engram.search("what does the user drink?")

`AsyncEngram` has the same calls for asyncio. Errors raise `EngramError`
(or a subclass) carrying engram's stable error `code`."""

from ._client import AskEvent, AsyncEngram, Engram
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ConnectionFailed,
    EngramError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnavailableError,
)
from ._models import (
    Answer,
    AskDone,
    AskSources,
    AskToken,
    AuditEvent,
    Citation,
    Created,
    Hit,
    Memory,
    Page,
    Scores,
    SessionRef,
)

__version__ = "0.1.0"

__all__ = [
    "Engram",
    "AsyncEngram",
    "AskEvent",
    "EngramError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ConnectionFailed",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "UnavailableError",
    "Answer",
    "AskDone",
    "AskSources",
    "AskToken",
    "AuditEvent",
    "Citation",
    "Created",
    "Hit",
    "Memory",
    "Page",
    "Scores",
    "SessionRef",
]

"""Typed views of engram's answers, named as in the OpenAPI document
(`/openapi.json`, also `docs/openapi.json` in the repository).

Each model is a frozen dataclass built by `from_dict`; fields a newer
server adds are kept in `raw` (the whole JSON object) rather than failing,
so an older client keeps working against a newer server."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Optional


def _time(value: Optional[str]) -> Optional[datetime]:
    if value is None:
        return None
    # RFC 3339 as engram writes it; Python before 3.11 does not take "Z".
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class SessionRef:
    """Where a conversation message sits: its session and position."""

    id: str
    position: int
    speaker: Optional[str] = None

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> Optional["SessionRef"]:
        if d is None:
            return None
        return cls(id=d["id"], position=d["position"], speaker=d.get("speaker"))


@dataclass(frozen=True)
class Memory:
    """A stored memory (`MemoryView`)."""

    id: str
    namespace: str
    text: str
    kind: str
    metadata: Dict[str, Any]
    tags: List[str]
    state: str
    occurred_at: datetime
    created_at: datetime
    updated_at: datetime
    expires_at: Optional[datetime]
    legal_hold: bool
    client_id: Optional[str]
    session: Optional[SessionRef]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Memory":
        return cls(
            id=d["id"],
            namespace=d["namespace"],
            text=d["text"],
            kind=d["kind"],
            metadata=d.get("metadata") or {},
            tags=list(d.get("tags") or []),
            state=d["state"],
            occurred_at=_time(d["occurred_at"]),  # type: ignore[arg-type]
            created_at=_time(d["created_at"]),  # type: ignore[arg-type]
            updated_at=_time(d["updated_at"]),  # type: ignore[arg-type]
            expires_at=_time(d.get("expires_at")),
            legal_hold=bool(d.get("legal_hold", False)),
            client_id=d.get("client_id"),
            session=SessionRef.from_dict(d.get("session")),
            raw=d,
        )


@dataclass(frozen=True)
class Created:
    """The outcome of writing one memory or message: `status` is `created`,
    or `duplicate` when an existing live memory (same text or `client_id`)
    was returned; `state` is `pending` until the embedding is stored (or
    `ready` with `wait=True`)."""

    id: str
    status: str
    state: str
    position: Optional[int] = None

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Created":
        return cls(id=d["id"], status=d["status"], state=d["state"], position=d.get("position"))


@dataclass(frozen=True)
class Scores:
    """Why a hit ranks where it does: each signal's score and rank, and the
    fused score the order follows."""

    fused: float
    vector: Optional[float] = None
    keyword: Optional[float] = None
    vector_rank: Optional[int] = None
    keyword_rank: Optional[int] = None
    recency: Optional[float] = None

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Scores":
        return cls(
            fused=d["fused"],
            vector=d.get("vector"),
            keyword=d.get("keyword"),
            vector_rank=d.get("vector_rank"),
            keyword_rank=d.get("keyword_rank"),
            recency=d.get("recency"),
        )


@dataclass(frozen=True)
class Hit:
    """One search result (`SearchHit`); `index` is set for the sources of an
    answer (the `[n]` the answer cites)."""

    id: str
    namespace: str
    text: str
    kind: str
    metadata: Dict[str, Any]
    tags: List[str]
    occurred_at: datetime
    created_at: datetime
    scores: Scores
    session: Optional[SessionRef]
    neighbors: Optional[List[Dict[str, Any]]]
    index: Optional[int]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Hit":
        return cls(
            id=d["id"],
            namespace=d["namespace"],
            text=d["text"],
            kind=d["kind"],
            metadata=d.get("metadata") or {},
            tags=list(d.get("tags") or []),
            occurred_at=_time(d["occurred_at"]),  # type: ignore[arg-type]
            created_at=_time(d["created_at"]),  # type: ignore[arg-type]
            scores=Scores.from_dict(d["scores"]),
            session=SessionRef.from_dict(d.get("session")),
            neighbors=d.get("neighbors"),
            index=d.get("index"),
            raw=d,
        )


@dataclass(frozen=True)
class Citation:
    """A `[index]` marker in an answer, resolved to the memory it names."""

    index: int
    id: str
    namespace: str

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Citation":
        return cls(index=d["index"], id=d["id"], namespace=d["namespace"])


@dataclass(frozen=True)
class Answer:
    """A grounded answer from `/v1/ask`: the text, the memories it cites and
    every memory that was in the prompt."""

    answer: str
    model: str
    citations: List[Citation]
    sources: List[Hit]
    timings: Dict[str, Any]

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Answer":
        return cls(
            answer=d["answer"],
            model=d["model"],
            citations=[Citation.from_dict(c) for c in d.get("citations", [])],
            sources=[Hit.from_dict(s) for s in d.get("sources", [])],
            timings=d.get("timings", {}),
        )


@dataclass(frozen=True)
class AskSources:
    """First event of a streamed answer: the model and the memories in the prompt."""

    model: str
    sources: List[Hit]


@dataclass(frozen=True)
class AskToken:
    """The next piece of a streamed answer."""

    text: str


@dataclass(frozen=True)
class AskDone:
    """Last event of a streamed answer: the whole text and its citations."""

    answer: str
    model: str
    citations: List[Citation]
    timings: Dict[str, Any]


@dataclass(frozen=True)
class AuditEvent:
    """One event of the tenant's hash-chained audit log."""

    n: int
    at: datetime
    actor: str
    action: str
    target: str
    details: Any
    request_id: Optional[str]
    hash: str
    prev_hash: str

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "AuditEvent":
        return cls(
            n=d["n"],
            at=_time(d["at"]),  # type: ignore[arg-type]
            actor=d["actor"],
            action=d["action"],
            target=d["target"],
            details=d.get("details"),
            request_id=d.get("request_id"),
            hash=d["hash"],
            prev_hash=d["prev_hash"],
        )


@dataclass(frozen=True)
class Page:
    """One page of memories; pass `next_cursor` back for the next one."""

    memories: List[Memory]
    next_cursor: Optional[str]

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Page":
        return cls(
            memories=[Memory.from_dict(m) for m in d["memories"]],
            next_cursor=d.get("next_cursor"),
        )

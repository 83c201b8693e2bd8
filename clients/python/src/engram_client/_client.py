"""The sync (`Engram`) and async (`AsyncEngram`) clients.

Every API call is written once, in `_Api`: a method builds a `_Call` (method,
path, query, body and how to read the answer) and hands it to `_send`. The
sync client's `_send` performs it and returns the result; the async client's
`_send` is a coroutine, so the same method returns an awaitable there. The
rules shared by both (headers, error mapping, retries on 503/429 honouring
`Retry-After`, server-sent events) live in this module once; only the loops
that must block or await (pagination, streaming) are written per client."""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Sequence, Union
from urllib.parse import quote

import httpx

from ._errors import ConnectionFailed, EngramError, error_from
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
)

__all__ = ["Engram", "AsyncEngram", "AskEvent"]

AskEvent = Union[AskSources, AskToken, AskDone]

DEFAULT_URL = "http://127.0.0.1:8080"
_RETRY_STATUSES = (429, 503)
_MAX_WAIT = 60.0


@dataclass
class _Call:
    method: str
    path: str
    query: Optional[Dict[str, Any]] = None
    body: Any = None
    parse: Callable[[Any], Any] = lambda body: body


def _seg(value: str) -> str:
    return quote(str(value), safe="")


def _query(**params: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        out[key] = value
    return out


def _body(**fields: Any) -> Dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _retry_after(headers: httpx.Headers) -> Optional[float]:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def _error(response: httpx.Response) -> EngramError:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return error_from(
        response.status_code,
        body,
        request_id=response.headers.get("x-request-id"),
        retry_after=_retry_after(response.headers),
    )


def _wait(attempt: int, retry_after: Optional[float]) -> float:
    """Seconds to wait before retry number `attempt` (from 1): the server's
    `Retry-After` when it sent one, else exponential backoff with jitter."""
    if retry_after is not None:
        return min(retry_after, _MAX_WAIT)
    return min(0.25 * (2 ** (attempt - 1)) * (1 + random.random()), _MAX_WAIT)


def _read(response: httpx.Response, call: _Call) -> Any:
    if response.status_code >= 400:
        raise _error(response)
    if response.status_code == 204 or not response.content:
        return call.parse(None)
    return call.parse(response.json())


def _created(body: Dict[str, Any]) -> Union[Created, List[Created]]:
    if "memories" in body:
        return [Created.from_dict(m) for m in body["memories"]]
    return Created.from_dict(body)


class _Sse:
    """Decodes server-sent events line by line into the ask stream's
    events; an `error` event raises `EngramError` with its code."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: List[str] = []

    def feed(self, line: str) -> Optional[AskEvent]:
        if line == "":
            if not self.data:
                return None
            event, data = self.event, json.loads("\n".join(self.data))
            self.event, self.data = "message", []
            return _ask_event(event, data)
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


def _ask_event(event: str, data: Dict[str, Any]) -> Optional[AskEvent]:
    if event == "sources":
        return AskSources(model=data["model"], sources=[Hit.from_dict(s) for s in data["sources"]])
    if event == "token":
        return AskToken(text=data["text"])
    if event == "done":
        return AskDone(
            answer=data["answer"],
            model=data["model"],
            citations=[Citation.from_dict(c) for c in data.get("citations", [])],
            timings=data.get("timings", {}),
        )
    if event == "error":
        raise error_from(502, data)
    return None


class _Api:
    """The API calls, written once for both clients (see the module doc)."""

    def __init__(
        self,
        url: Optional[str],
        api_key: Optional[str],
        namespace: Optional[str],
        max_retries: int,
    ) -> None:
        self.url = (url or os.environ.get("ENGRAM_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("ENGRAM_API_KEY")
        if not key:
            raise ValueError("no API key: pass api_key= or set ENGRAM_API_KEY")
        self.namespace = namespace
        self.max_retries = max_retries
        self._headers = {"authorization": f"Bearer {key}", "user-agent": "engram-client-python/0.1"}

    def _send(self, call: _Call) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _ns(self, namespace: Optional[str]) -> str:
        ns = namespace or self.namespace
        if not ns:
            raise ValueError("no namespace: pass namespace= or set one on the client")
        return ns

    def _namespaces(self, namespaces: Optional[Sequence[str]]) -> Optional[List[str]]:
        if namespaces:
            return list(namespaces)
        return [self.namespace] if self.namespace else None

    # -- memories ---------------------------------------------------------

    def add(
        self,
        text: str,
        *,
        namespace: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
        tags: Optional[Sequence[str]] = None,
        kind: Optional[str] = None,
        client_id: Optional[str] = None,
        occurred_at: Optional[str] = None,
        expires_at: Optional[str] = None,
        ttl_seconds: Optional[int] = None,
        wait: bool = False,
    ) -> Created:
        """Store one memory. With `wait=True` the call returns once it is
        embedded and searchable (`state == "ready"`); otherwise it returns at
        once with `state == "pending"` and the embedding follows."""
        body = _body(
            namespace=self._ns(namespace),
            text=text,
            metadata=metadata,
            tags=list(tags) if tags is not None else None,
            kind=kind,
            client_id=client_id,
            occurred_at=occurred_at,
            expires_at=expires_at,
            ttl_seconds=ttl_seconds,
        )
        return self._send(_Call("POST", "/v1/memories", _query(wait=wait or None), body, Created.from_dict))

    def add_many(
        self,
        memories: Sequence[Union[str, Dict[str, Any]]],
        *,
        namespace: Optional[str] = None,
        wait: bool = False,
    ) -> List[Created]:
        """Store several memories in one namespace in one transaction; each
        item is a text or a dict of the fields of `add`."""
        items = [{"text": m} if isinstance(m, str) else dict(m) for m in memories]
        body = {"namespace": self._ns(namespace), "memories": items}
        return self._send(_Call("POST", "/v1/memories", _query(wait=wait or None), body, _created))

    def get(self, id: str) -> Memory:
        """One memory by id."""
        return self._send(_Call("GET", f"/v1/memories/{_seg(id)}", parse=Memory.from_dict))

    def update(
        self,
        id: str,
        *,
        text: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
        tags: Optional[Sequence[str]] = None,
        kind: Optional[str] = None,
        expires_at: Optional[str] = None,
        legal_hold: Optional[bool] = None,
        wait: bool = False,
    ) -> Memory:
        """Change a memory; only the fields given change. A new text is
        embedded again (`wait=True` returns once that is done)."""
        body = _body(
            text=text,
            metadata=metadata,
            tags=list(tags) if tags is not None else None,
            kind=kind,
            expires_at=expires_at,
            legal_hold=legal_hold,
        )
        return self._send(
            _Call("PATCH", f"/v1/memories/{_seg(id)}", _query(wait=wait or None), body, Memory.from_dict)
        )

    def delete(self, id: str, *, hard: bool = False) -> None:
        """Delete a memory: soft (restorable with `restore`) unless `hard`."""
        return self._send(_Call("DELETE", f"/v1/memories/{_seg(id)}", _query(hard=hard or None)))

    def restore(self, id: str) -> Memory:
        """Bring back a soft-deleted memory."""
        return self._send(_Call("POST", f"/v1/memories/{_seg(id)}/restore", parse=Memory.from_dict))

    def list(
        self,
        *,
        namespace: Optional[str] = None,
        filter: Optional[Dict[str, Any]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
        sort: Optional[str] = None,
    ) -> Page:
        """One page of memories (in insertion order unless `sort` says otherwise);
        `iter_memories` walks every page."""
        body = _body(namespace=namespace or self.namespace, filter=filter, limit=limit, cursor=cursor, sort=sort)
        return self._send(_Call("POST", "/v1/memories/list", body=body, parse=Page.from_dict))

    # -- retrieval --------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        namespaces: Optional[Sequence[str]] = None,
        filter: Optional[Dict[str, Any]] = None,
        k: Optional[int] = None,
        mode: Optional[str] = None,
        **options: Any,
    ) -> List[Hit]:
        """The `k` memories that best match `query` (hybrid vector + keyword
        by default; `mode="vector"` or `"keyword"` for one signal). Further
        options of `POST /v1/search` (`weights`, `recency`, `expand`, ...)
        pass through as keyword arguments."""
        body = _body(
            query=query, namespaces=self._namespaces(namespaces), filter=filter, k=k, mode=mode, **options
        )
        return self._send(
            _Call("POST", "/v1/search", body=body, parse=lambda b: [Hit.from_dict(h) for h in b["hits"]])
        )

    def ask(
        self,
        question: str,
        *,
        namespaces: Optional[Sequence[str]] = None,
        filter: Optional[Dict[str, Any]] = None,
        k: Optional[int] = None,
        **options: Any,
    ) -> Answer:
        """Answer `question` from the memories through the configured LLM
        server, with citations (`ask_stream` for the answer as it comes)."""
        body = self._ask_body(question, namespaces, filter, k, options)
        return self._send(_Call("POST", "/v1/ask", body=body, parse=Answer.from_dict))

    def _ask_body(
        self,
        question: str,
        namespaces: Optional[Sequence[str]],
        filter: Optional[Dict[str, Any]],
        k: Optional[int],
        options: Dict[str, Any],
    ) -> Dict[str, Any]:
        return _body(question=question, namespaces=self._namespaces(namespaces), filter=filter, k=k, **options)

    # -- conversations ----------------------------------------------------

    def append_messages(
        self,
        session: str,
        messages: Sequence[Union[str, Dict[str, Any]]],
        *,
        namespace: Optional[str] = None,
        wait: bool = False,
    ) -> List[Created]:
        """Append messages to a conversation session, in order. Each is a
        text or a dict (`speaker`, `text`, `occurred_at`, `position`, ...)."""
        items = [{"text": m} if isinstance(m, str) else dict(m) for m in messages]
        body = {"namespace": self._ns(namespace), "messages": items}
        return self._send(
            _Call(
                "POST",
                f"/v1/sessions/{_seg(session)}/messages",
                _query(wait=wait or None),
                body,
                lambda b: [Created.from_dict(m) for m in b["messages"]],
            )
        )

    def session_messages(
        self,
        session: str,
        *,
        namespace: Optional[str] = None,
        after: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> Dict[str, Any]:
        """One page of a session's messages in order: `{"messages": [Memory],
        "next_after": int | None}`."""
        return self._send(
            _Call(
                "GET",
                f"/v1/sessions/{_seg(session)}/messages",
                _query(namespace=self._ns(namespace), after=after, limit=limit),
                parse=lambda b: {
                    "messages": [Memory.from_dict(m) for m in b["messages"]],
                    "next_after": b.get("next_after"),
                },
            )
        )

    def delete_session(self, session: str, *, namespace: Optional[str] = None) -> Dict[str, Any]:
        """Soft-delete every message of a session: `{"deleted", "held"}`."""
        return self._send(
            _Call("DELETE", f"/v1/sessions/{_seg(session)}", _query(namespace=self._ns(namespace)))
        )

    # -- administration ---------------------------------------------------

    def audit(self, *, after: Optional[int] = None, limit: Optional[int] = None, **filters: Any) -> Dict[str, Any]:
        """One page of the audit log: `{"events": [AuditEvent], "next_after"}`
        (filters: `action`, `actor`, `target`, `since`, `until`)."""
        return self._send(
            _Call(
                "GET",
                "/v1/audit",
                _query(after=after, limit=limit, **filters),
                parse=lambda b: {
                    "events": [AuditEvent.from_dict(e) for e in b["events"]],
                    "next_after": b.get("next_after"),
                },
            )
        )

    def namespaces(self) -> List[Dict[str, Any]]:
        """The namespaces the caller may see, with their memory counts."""
        return self._send(_Call("GET", "/v1/namespaces", parse=lambda b: b["namespaces"]))

    def stats(self) -> Dict[str, Any]:
        """Counts of memories, jobs and dead letters."""
        return self._send(_Call("GET", "/v1/stats"))

    def request(
        self, method: str, path: str, *, query: Optional[Dict[str, Any]] = None, body: Any = None
    ) -> Any:
        """Any other route, with the client's credentials, retries and
        errors; answers the decoded JSON."""
        return self._send(_Call(method, path, _query(**(query or {})), body))


class Engram(_Api):
    """The blocking client.

    >>> engram = Engram(namespace="agent-1")   # ENGRAM_URL, ENGRAM_API_KEY
    >>> engram.add("The user prefers tea", wait=True)
    >>> engram.search("what does the user drink?")[0].text
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        api_key: Optional[str] = None,
        namespace: Optional[str] = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        http: Optional[httpx.Client] = None,
    ) -> None:
        super().__init__(url, api_key, namespace, max_retries)
        self._http = http or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Engram":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self, call: _Call) -> Any:
        for attempt in range(1, self.max_retries + 2):
            try:
                response = self._http.request(
                    call.method,
                    self.url + call.path,
                    params=call.query,
                    json=call.body,
                    headers=self._headers,
                )
            except httpx.ConnectError as e:
                if attempt > self.max_retries:
                    raise ConnectionFailed(0, "connection_failed", str(e)) from e
                time.sleep(_wait(attempt, None))
                continue
            if response.status_code in _RETRY_STATUSES and attempt <= self.max_retries:
                time.sleep(_wait(attempt, _retry_after(response.headers)))
                continue
            return _read(response, call)
        raise AssertionError("unreachable")

    def iter_memories(
        self,
        *,
        namespace: Optional[str] = None,
        filter: Optional[Dict[str, Any]] = None,
        sort: Optional[str] = None,
        page_size: int = 100,
    ) -> Iterator[Memory]:
        """Every memory matching, page by page."""
        cursor: Optional[str] = None
        while True:
            page = self.list(namespace=namespace, filter=filter, sort=sort, limit=page_size, cursor=cursor)
            yield from page.memories
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def iter_audit(self, *, after: Optional[int] = None, page_size: int = 100, **filters: Any) -> Iterator[AuditEvent]:
        """Every audit event after `after`, oldest first, page by page."""
        while True:
            page = self.audit(after=after, limit=page_size, **filters)
            yield from page["events"]
            if page["next_after"] is None:
                return
            after = page["next_after"]

    def ask_stream(
        self,
        question: str,
        *,
        namespaces: Optional[Sequence[str]] = None,
        filter: Optional[Dict[str, Any]] = None,
        k: Optional[int] = None,
        **options: Any,
    ) -> Iterator[AskEvent]:
        """The answer as it is generated: `AskSources` first, then
        `AskToken`s, then `AskDone`."""
        body = self._ask_body(question, namespaces, filter, k, {**options, "stream": True})
        for attempt in range(1, self.max_retries + 2):
            with self._http.stream("POST", self.url + "/v1/ask", json=body, headers=self._headers) as response:
                if response.status_code in _RETRY_STATUSES and attempt <= self.max_retries:
                    time.sleep(_wait(attempt, _retry_after(response.headers)))
                    continue
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                sse = _Sse()
                for line in response.iter_lines():
                    event = sse.feed(line)
                    if event is not None:
                        yield event
                return


class AsyncEngram(_Api):
    """The asyncio client: the same calls as `Engram`, awaited.

    >>> async with AsyncEngram(namespace="agent-1") as engram:
    ...     await engram.add("The user prefers tea", wait=True)
    ...     hits = await engram.search("what does the user drink?")
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        api_key: Optional[str] = None,
        namespace: Optional[str] = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        super().__init__(url, api_key, namespace, max_retries)
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncEngram":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _send(self, call: _Call) -> Any:  # type: ignore[override]
        for attempt in range(1, self.max_retries + 2):
            try:
                response = await self._http.request(
                    call.method,
                    self.url + call.path,
                    params=call.query,
                    json=call.body,
                    headers=self._headers,
                )
            except httpx.ConnectError as e:
                if attempt > self.max_retries:
                    raise ConnectionFailed(0, "connection_failed", str(e)) from e
                await asyncio.sleep(_wait(attempt, None))
                continue
            if response.status_code in _RETRY_STATUSES and attempt <= self.max_retries:
                await asyncio.sleep(_wait(attempt, _retry_after(response.headers)))
                continue
            return _read(response, call)
        raise AssertionError("unreachable")

    async def iter_memories(
        self,
        *,
        namespace: Optional[str] = None,
        filter: Optional[Dict[str, Any]] = None,
        sort: Optional[str] = None,
        page_size: int = 100,
    ) -> AsyncIterator[Memory]:
        """Every memory matching, page by page."""
        cursor: Optional[str] = None
        while True:
            page = await self.list(namespace=namespace, filter=filter, sort=sort, limit=page_size, cursor=cursor)
            for memory in page.memories:
                yield memory
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def iter_audit(
        self, *, after: Optional[int] = None, page_size: int = 100, **filters: Any
    ) -> AsyncIterator[AuditEvent]:
        """Every audit event after `after`, oldest first, page by page."""
        while True:
            page = await self.audit(after=after, limit=page_size, **filters)
            for event in page["events"]:
                yield event
            if page["next_after"] is None:
                return
            after = page["next_after"]

    async def ask_stream(
        self,
        question: str,
        *,
        namespaces: Optional[Sequence[str]] = None,
        filter: Optional[Dict[str, Any]] = None,
        k: Optional[int] = None,
        **options: Any,
    ) -> AsyncIterator[AskEvent]:
        """The answer as it is generated: `AskSources` first, then
        `AskToken`s, then `AskDone`."""
        body = self._ask_body(question, namespaces, filter, k, {**options, "stream": True})
        for attempt in range(1, self.max_retries + 2):
            async with self._http.stream("POST", self.url + "/v1/ask", json=body, headers=self._headers) as response:
                if response.status_code in _RETRY_STATUSES and attempt <= self.max_retries:
                    await asyncio.sleep(_wait(attempt, _retry_after(response.headers)))
                    continue
                if response.status_code >= 400:
                    await response.aread()
                    raise _error(response)
                sse = _Sse()
                async for line in response.aiter_lines():
                    event = sse.feed(line)
                    if event is not None:
                        yield event
                return

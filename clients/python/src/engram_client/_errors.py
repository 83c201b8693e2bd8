"""Exceptions: every error engram answers carries a stable `code` (the
server's error-code table, e.g. `memory_not_found`, `forbidden`), the HTTP
status and a message for people. Catch `EngramError` for all of them, or a
subclass for one class of failure."""

from __future__ import annotations

from typing import Any, Optional


class EngramError(Exception):
    """An error answered by engram (or the transport failing to reach it)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after


class BadRequestError(EngramError):
    """400, 413, 414, 415, 422, 431: the request is invalid; do not retry it."""


class AuthenticationError(EngramError):
    """401: no, an unknown, a revoked or an expired credential."""


class PermissionDeniedError(EngramError):
    """403: the credential's role or namespaces do not allow the call."""


class NotFoundError(EngramError):
    """404: no such memory, namespace, session, job or key (for this caller)."""


class ConflictError(EngramError):
    """409: a conflict (`conflict`, `position_conflict`, `legal_hold`)."""


class RateLimitError(EngramError):
    """429: too many requests; `retry_after` says when to come back."""


class UnavailableError(EngramError):
    """503 (and 502/504): a back-end is down or overloaded; nothing was
    applied, the call may be retried after `retry_after` seconds."""


class ConnectionFailed(EngramError):
    """engram could not be reached (status 0, code `connection_failed`)."""


_BY_STATUS = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    414: BadRequestError,
    415: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    431: BadRequestError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}


def error_from(
    status: int,
    body: Any,
    *,
    request_id: Optional[str] = None,
    retry_after: Optional[float] = None,
) -> EngramError:
    """The exception for an error answer: engram's `{"error": {"code",
    "message"}}` body, or the bare status when the body is something else
    (a proxy in front of engram, say)."""
    code, message = f"http_{status}", "unexpected answer"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    elif isinstance(body, str) and body:
        message = body[:500]
    cls = _BY_STATUS.get(status, EngramError)
    return cls(status, code, message, request_id=request_id, retry_after=retry_after)

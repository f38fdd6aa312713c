"""The exception hierarchy shared by the sync client, the async client and the CLI.

Every error the daemon reports carries a stable code (contract section 7); the class is chosen from
that code so callers can ``except SessionBusyError`` instead of comparing strings, while ``.code``
keeps codes this version does not know about usable.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any


class OpencodeError(Exception):
    """Base of every error raised by opencode_cli."""


class TransportError(OpencodeError):
    """The conversation with the daemon broke below the API level."""


class ConnectError(TransportError):
    """No daemon answered at the endpoint (socket missing, connection refused, DNS...)."""


class ProtocolError(TransportError):
    """The daemon answered something that is not the API (cut stream, bad JSON, wrong type)."""


class UnsafeSocketError(TransportError):
    """The socket's directory is another user's or writable by others: never talk through it."""


class APIError(OpencodeError):
    """The daemon answered with an error document ``{"error": {code, message, details}}``."""

    def __init__(
        self, code: str, message: str, *, status: int, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(code={self.code!r}, status={self.status}, message={self.message!r})"


class InvalidRequestError(APIError):
    """400 INVALID_REQUEST: the request body or query was rejected; ``details`` names the field."""


class UnauthorizedError(APIError):
    """401 UNAUTHORIZED: TCP without the right bearer token."""


class PermissionDeniedError(APIError):
    """403 PERMISSION_DENIED: Origin/Host refused, or a path outside the project."""


class NotFoundError(APIError):
    """404 NOT_FOUND: a project, message, permission or file that does not exist."""


class SessionNotFoundError(NotFoundError):
    """404 SESSION_NOT_FOUND."""


class SessionBusyError(APIError):
    """409 SESSION_BUSY: a turn is already running in this session."""


class PayloadTooLargeError(APIError):
    """413 PAYLOAD_TOO_LARGE."""


class RateLimitedError(APIError):
    """429 RATE_LIMITED; ``retry_after`` holds the Retry-After header in seconds when given."""

    retry_after: float | None = None


class InternalServerError(APIError):
    """500 INTERNAL_ERROR."""


class ProviderError(APIError):
    """502 PROVIDER_ERROR: the model provider failed."""


_BY_CODE: dict[str, type[APIError]] = {
    "INVALID_REQUEST": InvalidRequestError,
    "UNAUTHORIZED": UnauthorizedError,
    "PERMISSION_DENIED": PermissionDeniedError,
    "NOT_FOUND": NotFoundError,
    "SESSION_NOT_FOUND": SessionNotFoundError,
    "SESSION_BUSY": SessionBusyError,
    "PAYLOAD_TOO_LARGE": PayloadTooLargeError,
    "RATE_LIMITED": RateLimitedError,
    "INTERNAL_ERROR": InternalServerError,
    "PROVIDER_ERROR": ProviderError,
}

# When the body is not an error document (a proxy, an old daemon), the status still picks a class.
_BY_STATUS: dict[int, tuple[str, type[APIError]]] = {
    400: ("INVALID_REQUEST", InvalidRequestError),
    401: ("UNAUTHORIZED", UnauthorizedError),
    403: ("PERMISSION_DENIED", PermissionDeniedError),
    404: ("NOT_FOUND", NotFoundError),
    409: ("SESSION_BUSY", SessionBusyError),
    413: ("PAYLOAD_TOO_LARGE", PayloadTooLargeError),
    429: ("RATE_LIMITED", RateLimitedError),
    502: ("PROVIDER_ERROR", ProviderError),
}


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> APIError:
    """Build the typed exception for a non-2xx answer, whatever its body looks like."""
    code, cls = _BY_STATUS.get(status, ("INTERNAL_ERROR", InternalServerError))
    message = f"HTTP {status}"
    details: Mapping[str, Any] | None = None
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code") or code)
        cls = _BY_CODE.get(code, cls)
        message = str(err.get("message") or message)
        if isinstance(err.get("details"), dict):
            details = err["details"]
    elif body.strip():
        message = body.decode("utf-8", "replace").strip()[:500]
    exc = cls(code, message, status=status, details=details)
    if isinstance(exc, RateLimitedError) and headers is not None:
        retry = _header(headers, "retry-after")
        if retry is not None:
            with contextlib.suppress(ValueError):
                exc.retry_after = float(retry)
    return exc


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None

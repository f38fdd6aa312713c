"""The one exception hierarchy the daemon answers with.

Every failure that reaches a client is an `ApiError`: the HTTP layer turns it into the
contract's envelope `{"error": {"code", "message", "details"}}`. Code below the HTTP
layer raises these directly, so there is one place that maps failures to statuses.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidRequest(ApiError):
    code = "INVALID_REQUEST"
    status = 400


class UnsupportedMediaType(InvalidRequest):
    """A JSON route got a body that is not `application/json` (contract 8: 415, same code)."""

    status = 415


class Unauthorized(ApiError):
    code = "UNAUTHORIZED"
    status = 401


class PermissionDenied(ApiError):
    code = "PERMISSION_DENIED"
    status = 403


class NotFound(ApiError):
    code = "NOT_FOUND"
    status = 404


class SessionNotFound(NotFound):
    code = "SESSION_NOT_FOUND"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Session not found: {session_id}", {"sessionId": session_id})


class MethodNotAllowed(ApiError):
    code = "METHOD_NOT_ALLOWED"
    status = 405


class SessionBusy(ApiError):
    code = "SESSION_BUSY"
    status = 409


class Conflict(ApiError):
    """The files are not as the request expects (a revert over the user's own edits)."""

    code = "CONFLICT"
    status = 409


class PayloadTooLarge(ApiError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413


class RateLimited(ApiError):
    code = "RATE_LIMITED"
    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, {"retryAfter": retry_after})
        self.retry_after = retry_after


class ProviderFailure(ApiError):
    code = "PROVIDER_ERROR"
    status = 502


class ServiceUnavailable(ApiError):
    code = "UNAVAILABLE"
    status = 503


class StorageUnavailable(ApiError):
    """The database failed (disk full, I/O error): nothing was stored for this request."""

    code = "STORAGE_ERROR"
    status = 503


class InternalError(ApiError):
    code = "INTERNAL_ERROR"
    status = 500

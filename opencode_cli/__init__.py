"""Python client and CLI for opencoded.

``Client`` (blocking) and ``AsyncClient`` (Trio or asyncio) have the same shape. Importing this
package is cheap: httpx and the async client load on first use, so the CLI does not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._client import Client
from ._endpoint import Endpoint
from ._exceptions import (
    APIError,
    ConnectError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    OpencodeError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProtocolError,
    ProviderError,
    RateLimitedError,
    SessionBusyError,
    SessionNotFoundError,
    TransportError,
    UnauthorizedError,
)
from ._models import (
    Accepted,
    Event,
    FileEntry,
    Health,
    Message,
    Model,
    Part,
    Permission,
    Project,
    Provider,
    Session,
)

if TYPE_CHECKING:
    from ._async_client import AsyncClient

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "Accepted",
    "AsyncClient",
    "Client",
    "ConnectError",
    "Endpoint",
    "Event",
    "FileEntry",
    "Health",
    "InternalServerError",
    "InvalidRequestError",
    "Message",
    "Model",
    "NotFoundError",
    "OpencodeError",
    "Part",
    "PayloadTooLargeError",
    "Permission",
    "PermissionDeniedError",
    "Project",
    "ProtocolError",
    "Provider",
    "ProviderError",
    "RateLimitedError",
    "Session",
    "SessionBusyError",
    "SessionNotFoundError",
    "TransportError",
    "UnauthorizedError",
]


def __getattr__(name: str) -> Any:
    # AsyncClient imports httpx and anyio at module level; load it only when asked for.
    if name == "AsyncClient":
        from ._async_client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'opencode_cli' has no attribute {name!r}")

"""Python client and CLI for opencoded.

``Client`` (blocking) and ``AsyncClient`` (Trio or asyncio) have the same shape. Importing this
package is cheap: every name loads on first use, so the CLI pays only for what a command needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._async_client import AsyncClient
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


_HOME = {
    "AsyncClient": "_async_client",
    "Client": "_client",
    "Endpoint": "_endpoint",
    **dict.fromkeys(
        [
            "APIError",
            "ConnectError",
            "InternalServerError",
            "InvalidRequestError",
            "NotFoundError",
            "OpencodeError",
            "PayloadTooLargeError",
            "PermissionDeniedError",
            "ProtocolError",
            "ProviderError",
            "RateLimitedError",
            "SessionBusyError",
            "SessionNotFoundError",
            "TransportError",
            "UnauthorizedError",
        ],
        "_exceptions",
    ),
    **dict.fromkeys(
        [
            "Accepted",
            "Event",
            "FileEntry",
            "Health",
            "Message",
            "Model",
            "Part",
            "Permission",
            "Project",
            "Provider",
            "Session",
        ],
        "_models",
    ),
}


def __getattr__(name: str) -> Any:
    """Load names on first use (PEP 562): ``opencode --help`` must not pay for the client, and
    AsyncClient pulls in httpx and anyio."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'opencode_cli' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

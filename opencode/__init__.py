"""The spec's import name for the Python client: ``from opencode import Client``.

One implementation: every name here is ``opencode_cli``'s (``Client``, ``AsyncClient``, the errors
and records), loaded on first use as there, so importing this package stays cheap::

    from opencode import Client

    client = Client("http://localhost:8080")
    session = client.sessions.create(provider="anthropic", model="claude-3-5-sonnet")
    for chunk in client.sessions.message(session.id, text="Add tests"):
        print(chunk)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import opencode_cli as _impl

if TYPE_CHECKING:
    from opencode_cli import *  # noqa: F403

__version__ = _impl.__version__
__all__ = list(_impl.__all__)


def __getattr__(name: str) -> Any:
    if name in _impl.__all__:
        value = getattr(_impl, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'opencode' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

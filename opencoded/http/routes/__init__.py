"""HTTP routes, one module per resource. Each module has `register(app)`."""

from __future__ import annotations

import importlib

from quart_trio import QuartTrio

MODULES = [
    "health",
    "sessions",
    "messages",
    "projects",
    "catalog",
    "maintenance",
    "streams",
    "mcp",
    "history",
    "metrics",
    "openapi",
]


def register_all(app: QuartTrio) -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}").register(app)

"""`GET /metrics`: the daemon's figures in the Prometheus text format (docs/api.md).

The renderer (http/prometheus.py, with prometheus_client) is imported at the first scrape,
in a worker thread: the library's import is not paid at start-up, and not on the event
loop either. Authentication as every route: the token on TCP, none on the Unix socket.
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from ...daemon import Daemon
from ..app import get_daemon
from .openapi import op


async def metrics() -> Response:
    daemon = get_daemon()
    renderer = daemon.metrics.renderer
    if renderer is None:
        renderer = await trio.to_thread.run_sync(_renderer, daemon)
        daemon.metrics.renderer = renderer  # two first scrapes at once: the last one stays
    body, content_type = renderer.render(request.headers.get("accept", ""))
    return Response(body, status=200, content_type=content_type)


def _renderer(daemon: Daemon) -> Any:
    from ..prometheus import Renderer

    return Renderer(daemon)


def register(app: QuartTrio) -> None:
    app.add_url_rule("/metrics", view_func=metrics, methods=["GET"])


_op = op(
    "Metrics in the Prometheus text format (OpenMetrics if the Accept header asks for it)",
    op_id="metrics",
    schema={"type": "string"},
    content="text/plain",
)
_op["responses"]["200"]["content"]["application/openmetrics-text"] = {"schema": {"type": "string"}}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {"/metrics": {"get": _op}}

from __future__ import annotations

from quart import Response, jsonify
from quart_trio import QuartTrio

from ... import __version__
from ...storage import StoreError
from ...tools.sandbox import jail_for
from ..app import get_daemon


async def health() -> tuple[Response, int]:
    daemon = get_daemon()
    database = "ok"
    try:
        await daemon.store.ping()
    except StoreError as exc:
        database = f"error: {exc}"
    body = {
        "status": "ok" if database == "ok" else "error",
        "version": __version__,
        "uptime": round(daemon.uptime, 3),
        "sessions_running": daemon.sessions.running_count,
        "sessions_open": daemon.sessions.open_count,
        "database": database,
        "endpoints": {"tcp": daemon.endpoints.tcp, "unix": daemon.endpoints.unix},
        "sandbox": jail_for(daemon.config).health(),
    }
    return jsonify(body), 200 if database == "ok" else 503


def register(app: QuartTrio) -> None:
    app.add_url_rule("/health", view_func=health, methods=["GET"])

from __future__ import annotations

from quart import Response, jsonify
from quart_trio import QuartTrio

from ..app import get_daemon


async def list_providers() -> Response:
    return jsonify(get_daemon().providers.list_providers())


async def list_models() -> Response:
    return jsonify(get_daemon().providers.list_models())


def register(app: QuartTrio) -> None:
    app.add_url_rule("/providers", view_func=list_providers, methods=["GET"])
    app.add_url_rule("/models", view_func=list_models, methods=["GET"])

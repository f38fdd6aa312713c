"""The quart-trio application: security hooks, the error envelope, and the routes."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

import trio
from quart import Response, current_app, has_request_context, request, websocket
from quart.routing import QuartRule
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from werkzeug.exceptions import HTTPException

from ..config import MAX_BODY_BYTES
from ..daemon import Daemon
from ..errors import (
    ApiError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    StorageUnavailable,
)
from ..storage import StoreError
from .security import Policy, RateLimiter
from .ws_frames import FrameBatchWebsocket, FrameBatchWebsocketConnection, FrameCache

log = logging.getLogger(__name__)

_HTTP_ERRORS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


class KeepAliveSafeHTTPConnection(TrioASGIHTTPConnection):
    """Work around a quart-trio bug: idle keep-alive connections never time out.

    hypercorn delivers `http.disconnect` during the final body send; quart-trio then
    cancels the request nursery, which cancels hypercorn's restart of the idle timer.
    Shielding only that last send keeps the timer (see docs/architecture.md).
    """

    async def handle_request(self, nursery, request, send):  # type: ignore[override]
        async def send_final_shielded(message):
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await super().handle_request(nursery, request, send_final_shielded)


def get_daemon() -> Daemon:
    return current_app.extensions["opencoded"]


def over_unix_socket(scope: dict) -> bool:
    """hypercorn reports no server address for AF_UNIX listeners (bound or passed in)."""
    return scope.get("server") is None


def error_response(error: ApiError) -> Response:
    response = Response(
        _dumps(error.to_json()), status=error.status, content_type="application/json"
    )
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return response


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


class LazyBuilderRule(QuartRule):
    """A route whose URL builders are compiled when first used, not at start-up.

    Werkzeug compiles two per route (AST + compile(), about a third of the time to build
    the app) for `url_for`, which the daemon never calls; matching is unchanged.
    """

    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        compile_now = super()._compile_builder
        compiled: list[Callable[..., tuple[str, str]]] = []

        def build(rule: Any, **values: Any) -> tuple[str, str]:
            if not compiled:
                compiled.append(compile_now(append_unknown))
            return compiled[0](rule, **values)

        return build


def create_app(daemon: Daemon, policy: Policy) -> QuartTrio:
    app = QuartTrio("opencoded")
    app.url_rule_class = LazyBuilderRule
    app.asgi_http_class = KeepAliveSafeHTTPConnection
    app.asgi_websocket_class = FrameBatchWebsocketConnection
    app.websocket_class = FrameBatchWebsocket
    app.config["RESPONSE_TIMEOUT"] = None  # turns stream for as long as they run
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.extensions["opencoded"] = daemon
    app.extensions["opencoded.policy"] = policy
    app.extensions["opencoded.frames"] = FrameCache()
    rate = daemon.config.server.rate_limit
    limiter = RateLimiter(rate.rate, rate.burst) if rate is not None else None

    def guard(scope: dict, path: str, headers, args) -> Response | None:
        if over_unix_socket(scope):
            return None
        # Browsers cannot set headers on WebSocket or EventSource requests; only those
        # take `?token=`, so the token stays out of URLs (history, proxy logs) elsewhere.
        browser_stream = scope["type"] == "websocket" or path.endswith("/events")
        try:
            caller = policy.check_tcp(path, headers, args.get("token") if browser_stream else None)
            if limiter is not None and caller != "anonymous":
                limiter.check(caller)
        except ApiError as error:
            return error_response(error)
        return None

    @app.before_request
    async def check_request() -> Response | None:
        if request.method == "OPTIONS" and not over_unix_socket(request.scope):
            return _preflight(policy)
        if request.content_length and request.content_length > MAX_BODY_BYTES:
            return error_response(PayloadTooLarge(f"body over {MAX_BODY_BYTES} bytes"))
        return guard(request.scope, request.path, request.headers, request.args)

    @app.before_websocket
    async def check_websocket() -> Response | None:
        return guard(websocket.scope, websocket.path, websocket.headers, websocket.args)

    @app.after_request
    async def add_cors(response: Response) -> Response:
        origin = request.headers.get("origin")
        if origin and policy.origin_allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            if policy.cors_credentials:
                response.headers["Access-Control-Allow-Credentials"] = "true"
        return response

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(StoreError)
    async def store_error(error: StoreError) -> Response:
        return error_response(StorageUnavailable(f"the database failed: {error}"))

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        cls = _HTTP_ERRORS.get(error.code or 500, InternalError)
        message = {
            404: f"no route for {request.path}",
            405: f"method {request.method} not allowed on {request.path}",
            413: f"body over {MAX_BODY_BYTES} bytes",
        }.get(error.code or 500, error.description or "error")
        response = error_response(cls(message))
        if error.code == 405 and getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response

    @app.errorhandler(Exception)
    async def internal_error(error: Exception) -> Response:
        where = f"{request.method} {request.path}" if has_request_context() else "websocket"
        log.error("unhandled error on %s", where, exc_info=error)
        return error_response(InternalError("internal error; see the daemon log"))

    from .routes import register_all

    register_all(app)
    return app


def _preflight(policy: Policy) -> Response:
    origin = request.headers.get("origin", "")
    if not policy.origin_allowed(origin):
        return error_response(PermissionDenied("Origin not allowed", {"origin": origin}))
    response = Response("", status=204)
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
    response.headers["Access-Control-Max-Age"] = "600"
    if policy.cors_credentials:
        response.headers["Access-Control-Allow-Credentials"] = "true"
    return response

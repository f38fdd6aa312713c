"""The OpenAPI document is kept true: every route of the app is in it, and nothing else."""

from __future__ import annotations

import re

from .conftest import RunningDaemon


def app_routes(daemon: RunningDaemon) -> set[tuple[str, str]]:
    app = daemon.daemon.app
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        methods = (rule.methods or set()) - {"HEAD", "OPTIONS"}
        if getattr(rule, "websocket", False):
            methods = {"GET"}
        routes.update((path, m.lower()) for m in methods)
    return routes


async def test_every_route_is_documented(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        doc = (await c.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert app_routes(daemon) == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"], (path, method)
            assert op["responses"], (path, method)
            for name in re.findall(r"{([^}]+)}", path):
                assert any(p["name"] == name for p in op.get("parameters", [])), (path, name)

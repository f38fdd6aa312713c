"""``opencode status``, ``providers``, ``models`` and ``token``: facts about the daemon."""

from pathlib import Path
from typing import Annotated

import typer

from ._common import EXIT_ERROR, JsonOpt, NoStartOpt, UrlOpt, client


def status(url: UrlOpt = None, json_: JsonOpt = False, no_start: NoStartOpt = False) -> None:
    """Show the daemon's version, endpoints and running sessions (starting it if needed)."""
    from ._output import duration, out, paint, print_json

    c = client(url, autostart=True, no_start=no_start)
    health = c.health()
    if json_:
        print_json(health.raw)
        return
    import sys

    head = f"opencoded {health.version or '?'}"
    if isinstance(health.uptime, int | float):
        head += f", up {duration(health.uptime)}"
    out(paint(head, "bold", sys.stdout))
    out(f"status: {health.status}")
    out(f"connected via: {c.endpoint.display}")
    for name in ("unix", "tcp"):
        if name in health.endpoints:
            out(f"{name}: {health.endpoints[name] or '-'}")
    if health.sessions_running is not None:
        out(f"sessions running: {health.sessions_running}")
    if health.database is not None:
        out(f"database: {health.database}")


def providers(url: UrlOpt = None, json_: JsonOpt = False) -> None:
    """List the providers, whether each is configured (usable), and their models."""
    from ._output import err, print_json, table

    items = client(url).providers()
    if json_:
        print_json([p.raw for p in items])
        return
    rows = [(p.id, p.name, _usable(p.raw.get("configured")), _models_cell(p.models)) for p in items]
    table(("ID", "NAME", "CONFIGURED", "MODELS"), rows)
    if not any(p.raw.get("configured") for p in items):
        err(
            "no provider is configured: set ANTHROPIC_API_KEY or OPENAI_API_KEY (then "
            "`opencode daemon restart`), or add one to the config file"
        )


def _usable(configured: object) -> str:
    return {True: "yes", False: "no"}.get(configured, "?")  # type: ignore[call-overload]


def _models_cell(models: list[object], limit: int = 4) -> str:
    names = [_model_name(m) for m in models]
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _model_name(model: object) -> str:
    if isinstance(model, dict):
        return str(model.get("id") or model.get("name") or "?")
    return str(model)


def models(url: UrlOpt = None, json_: JsonOpt = False) -> None:
    """List the models the daemon can use, with context size and price."""
    from ._output import print_json, table

    items = client(url).models()
    if json_:
        print_json([m.raw for m in items])
        return
    rows = [(f"{m.provider}/{m.id}", m.name, m.context, _price(m.price)) for m in items]
    table(("MODEL", "NAME", "CONTEXT", "PRICE"), rows)


def _price(price: object) -> str:
    if price is None:
        return "unknown"
    if isinstance(price, dict):
        if price.get("known") is False:
            return "unknown"
        if "input" in price and "output" in price:
            return f"${price['input']}/${price['output']} per Mtok"
    return str(price)


def token(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="The daemon's data dir [default: as the daemon's]."),
    ] = None,
) -> None:
    """Print the bearer token for the daemon's TCP endpoint."""
    import os

    from opencode_cli._endpoint import data_dir as default_data_dir

    from ._output import error, out

    directory = data_dir or default_data_dir(os.environ)
    try:
        value = (directory / "token").read_text().strip()
    except OSError:
        value = ""
    if not value:
        error(f"no token in {directory}: the daemon creates it on first start (opencode status)")
        raise typer.Exit(EXIT_ERROR)
    out(value)


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(providers)
    app.command()(models)
    app.command()(token)

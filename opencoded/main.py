"""`opencoded` (and `python -m opencoded`, `opencode serve`): parse flags, run the daemon."""

from __future__ import annotations

import argparse
import faulthandler
import gc
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    import trio

    from .config import Config

_CORS_DEFAULT = "__default__"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opencoded", description="The opencode daemon.")
    p.add_argument("--host", help="TCP host to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 3000; 0 picks a free port)")
    p.add_argument("--socket", help="Unix socket path")
    p.add_argument("--no-tcp", action="store_true", help="serve on the Unix socket only")
    p.add_argument(
        "--cors",
        action="append",
        nargs="?",
        const=_CORS_DEFAULT,
        metavar="ORIGIN",
        help="allow browser origins: alone, http://localhost:* and 127.0.0.1; repeatable",
    )
    p.add_argument("--no-auth", action="store_true", help="no token on TCP (loopback only)")
    p.add_argument("--certfile", help="TLS certificate for TCP")
    p.add_argument("--keyfile", help="TLS key for TCP")
    p.add_argument("--data-dir", help="where opencode.db and token live")
    p.add_argument("--config", help="config file (JSON)")
    p.add_argument("--database", help="postgresql://… URL (default: SQLite in the data dir)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"opencoded {__version__}")
    return p


def overrides_from(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    server: dict[str, Any] = {}
    for key in ("host", "port", "socket", "certfile", "keyfile"):
        if getattr(args, key) is not None:
            server[key] = getattr(args, key)
    if args.no_tcp:
        server["tcp"] = False
    if args.no_auth:
        server["auth"] = False
    cors_flag = False
    if args.cors:
        extra = [o for o in args.cors if o != _CORS_DEFAULT]
        cors_flag = len(extra) < len(args.cors)
        if extra:
            server["cors"] = {"origin": extra}
    out: dict[str, Any] = {"server": server} if server else {}
    if args.data_dir:
        out["dataDir"] = args.data_dir
    if args.log_level:
        out["logLevel"] = args.log_level
    if args.database:
        out["database"] = args.database
    return out, cors_flag


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(name)s %(levelname)s: %(message)s",
    )
    # The ready line is the contract's exact text; keep it bare.
    ready = logging.getLogger("opencoded")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ready.addHandler(handler)
    ready.propagate = False
    ready.setLevel(logging.INFO)  # the ready line prints whatever --log-level says
    # hypercorn's "Running on ..." lines repeat the ready line; keep its warnings only.
    logging.getLogger("hypercorn.error").setLevel(max(logging.WARNING, ready.level))
    # INFO is for operators (start, stop, turns, errors): the HTTP clients' line per
    # provider request ("HTTP Request: POST …") only shows at --log-level debug.
    if level.lower() != "debug":
        for name in ("httpx", "httpx2", "httpcore", "httpcore2", "anthropic", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)


async def _main(config: Config, cors_flag: bool) -> None:
    import trio

    from .server import run_daemon

    stop = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    stop.set()
                    return

        async def serve(task_status: trio.TaskStatus[Any]) -> None:
            await run_daemon(config, cors_flag=cors_flag, stop=stop, task_status=task_status)
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_signals)
        await nursery.start(serve)
        # Serving: what start-up made lives as long as the daemon; see main().
        gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    # Start-up creates some 200,000 objects that live as long as the daemon (modules,
    # classes, routes), and the cyclic GC would scan them again and again while they are
    # made: a tenth of start-up CPU. So it is off until the daemon serves, and then they
    # are frozen (gc.freeze), so that no later collection scans them either. The price:
    # start-up's little garbage (attrs leaves the first version of each slotted class) is
    # never freed, ~1.5 MB of RSS (docs/performance.md).
    gc.disable()
    try:
        return _run(argv)
    finally:
        gc.enable()


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    import trio

    from .config import ConfigError, config_warnings, load_config
    from .server import StartupError
    from .storage import StoreError

    expected = (ConfigError, StartupError, StoreError)
    try:
        overrides, cors_flag = overrides_from(args)
        path = Path(args.config) if args.config else None
        config = load_config(path, overrides=overrides)
        setup_logging(config.log_level)
        # A fatal signal (SIGBUS when SQLite's mmapped -shm file becomes unwritable, see
        # docs/security.md) would otherwise end the daemon without a word in its log.
        faulthandler.enable(sys.stderr)
        from . import reload

        reload.set_loader(lambda: load_config(path, overrides=overrides))
        for warning in config_warnings(path):
            logging.getLogger("opencoded.config").warning(warning)
        trio.run(_main, config, cors_flag)
    except expected as exc:
        print(f"opencoded: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # Nurseries wrap start-up failures; show the one line, not the tree.
        matched, _ = group.split(expected)
        if matched is None:
            raise
        print(f"opencoded: {_first_leaf(matched)}", file=sys.stderr)
        return 1
    return 0


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    sys.exit(main())

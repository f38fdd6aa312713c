"""Start-up and shutdown: one trio.run, hypercorn on TCP and the Unix socket at once.

Nesting (each owns the next): run_daemon -> daemon nursery -> hypercorn's serve task
and the SessionManager's session nurseries. Shutdown order is ours, not hypercorn's:
stop accepting turns and abort running ones (they record `aborted` and streams end with
their last line), close WebSockets, then let hypercorn drain, then remove the socket.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from . import recovery, reload, retention, systemd
from .agent import latest
from .agent.api import remote_answer
from .config import Config, ConfigError
from .daemon import Daemon, DataDirBusy, Endpoints, ensure_token, lock_data_dir
from .http import hypercorn_fixes
from .http.app import create_app
from .http.routes import streams
from .http.security import Policy, is_loopback
from .paths import AF_UNIX_PATH_MAX, check_socket_dir
from .providers.registry import ProviderRegistry
from .records import new_id
from .sessions import open_session_manager
from .storage import Backend, SQLiteBackend, Store, StoreError, open_store
from .tools import sandbox

log = logging.getLogger("opencoded")
GRACEFUL_TIMEOUT = 2.0
SWITCH_INTERVAL = 0.0005  # seconds; see run_daemon
DISCOVERY_TIMEOUT = 10.0
RECOVERY_INTERVAL = 2.0  # seconds between looks for a dead instance's turns (shared store)


class StartupError(Exception):
    """A reason not to start, worded as the one line the daemon prints."""


def prepare_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise StartupError(f"cannot use data dir {path}: {exc.strerror}") from None


def _socket_is_live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    finally:
        probe.close()


def claim_socket_path(path: Path) -> int:
    """Make `path` ours to bind: refuse a live daemon, replace a stale socket file.

    hypercorn deletes whatever socket is at the path, even a live one, so this check
    must come first; the flock on a lock file next to it closes the race between two
    daemons starting at once. Returns the lock fd (held for the daemon's lifetime), whose
    file holds our pid.
    """
    if len(os.fsencode(path)) > AF_UNIX_PATH_MAX:
        raise StartupError(f"socket path too long for AF_UNIX ({AF_UNIX_PATH_MAX} bytes): {path}")
    if not path.parent.exists():
        try:
            path.parent.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise StartupError(f"cannot create socket dir {path.parent}: {exc.strerror}") from None
    if (unsafe := check_socket_dir(path.parent)) is not None:
        raise StartupError(unsafe)
    lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise StartupError(f"another opencoded is already running on {path}") from None
    if path.exists() or path.is_symlink():
        if not path.is_socket():
            os.close(lock_fd)
            raise StartupError(f"{path} exists and is not a socket; not replacing it")
        if _socket_is_live(path):
            os.close(lock_fd)
            raise StartupError(f"another opencoded is already running on {path}")
        path.unlink()
    # The lock file doubles as the pid file (`opencode daemon stop` without systemd);
    # the flock tells a live pid from a stale one.
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, f"{os.getpid()}\n".encode())
    return lock_fd


def hypercorn_config(
    config: Config, socket_path: Path | None, passed: list[systemd.PassedSocket]
) -> HypercornConfig:
    """Binds: a socket passed by systemd replaces our own listener of its kind."""
    hc = HypercornConfig()
    own_tcp = config.server.tcp and not any(not p.is_unix for p in passed)
    tcp = [f"{_bracket(config.server.host)}:{config.server.port}"] if own_tcp else []
    tcp += [f"fd://{p.fd}" for p in passed if not p.is_unix]
    unix = [f"unix:{socket_path}"] if socket_path is not None else []
    unix += [f"fd://{p.fd}" for p in passed if p.is_unix]
    if config.server.certfile and config.server.keyfile:
        hc.certfile, hc.keyfile = config.server.certfile, config.server.keyfile
        hc.bind, hc.insecure_bind = tcp, unix  # TLS on TCP only
    else:
        hc.bind = tcp + unix
    hc.umask = 0o177  # the socket is created 0600
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = GRACEFUL_TIMEOUT
    hc.keep_alive_timeout = 30
    hc.backlog = 2048  # a thousand clients connecting at once must not overflow it
    # ASGI apps cannot send pings; hypercorn does, so idle WebSockets notice a dead peer.
    hc.websocket_ping_interval = streams.WS_PING_INTERVAL
    return hc


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _endpoints(binds: list[str], certfile: str | None) -> Endpoints:
    endpoints = Endpoints()
    for bind in binds:
        if bind.startswith(("http://unix:", "https://unix:")):
            endpoints.unix = endpoints.unix or bind.split("unix:", 1)[1]
        elif endpoints.tcp is None:
            endpoints.tcp = bind.replace("http://", "https://") if certfile else bind
    return endpoints


def check_config(config: Config) -> None:
    if not config.server.auth and not is_loopback(config.server.host):
        raise ConfigError(f"--no-auth is refused on a non-loopback host ({config.server.host})")
    if bool(config.server.certfile) != bool(config.server.keyfile):
        raise ConfigError("--certfile and --keyfile go together")


async def run_daemon(
    config: Config,
    *,
    cors_flag: bool = False,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when run from main)."""
    check_config(config)
    hypercorn_fixes.apply()
    # The storage writer and reader threads give up the GIL around every SQLite call and
    # must take it back from a Trio thread that, under load, never blocks: with the
    # default 5 ms switch interval each retake can wait 5 ms, and a commit makes
    # several, so a busy daemon took seconds per commit (turns timed out recording
    # their end). A short interval bounds that wait at little cost to the Trio thread.
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
    stop = stop if stop is not None else trio.Event()
    data_dir = config.data_path
    prepare_data_dir(data_dir)
    try:
        data_lock = lock_data_dir(data_dir)
    except DataDirBusy as exc:
        raise StartupError(str(exc)) from None
    try:
        await _run_locked(config, data_dir, cors_flag, stop, task_status)
    finally:
        os.close(data_lock)


async def _run_locked(config, data_dir, cors_flag, stop, task_status) -> None:
    token = ensure_token(data_dir)
    try:
        passed = systemd.listen_fds()
    except ValueError as exc:
        raise StartupError(f"socket activation: {exc}") from None
    socket_path = None if any(p.is_unix for p in passed) else config.socket_path
    lock_fd = claim_socket_path(socket_path) if socket_path else None
    try:
        async with _open_store(data_dir, config.database) as store:
            token = await _cluster_token(store, data_dir, token)
            await recovery.recover(store)
            await _serve(config, store, token, socket_path, passed, cors_flag, stop, task_status)
    finally:
        if socket_path is not None:
            socket_path.unlink(missing_ok=True)
        if lock_fd is not None:
            Path(f"{socket_path}.lock").unlink(missing_ok=True)
            os.close(lock_fd)


@asynccontextmanager
async def _open_store(data_dir: Path, database: str | None) -> AsyncIterator[Store]:
    """The store, or a one-line StartupError if the database cannot be opened.
    `database`: a postgresql:// URL (docs/scaling.md); None: SQLite in the data dir."""
    opened = False
    try:
        async with open_store(_backend(data_dir, database)) as store:
            opened = True
            yield store
    except StoreError as exc:
        if opened:
            raise
        raise StartupError(str(exc)) from None


async def _cluster_token(store: Store, data_dir: Path, token: str) -> str:
    """Instances sharing a database accept one token, the first one's (docs/scaling.md);
    each also keeps it in its data dir's `token` file, where clients look."""
    share = getattr(store.backend, "shared_token", None)
    if share is None:
        return token
    shared = await share(token)
    if shared != token:
        fd = os.open(data_dir / "token", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(shared + "\n")
    return shared


async def _recover_dead_instances(daemon: Daemon) -> None:
    """Several instances: close the turns of one that died, once their leases expire
    (storage.postgres lists only those), and show the end to this instance's followers."""
    while True:
        await trio.sleep(RECOVERY_INTERVAL)
        try:
            if await recovery.recover(daemon.store):
                daemon.sessions.remote_events(None, 0)
        except Exception:
            log.warning("recovery of another instance's turns failed", exc_info=True)


def _backend(data_dir: Path, database: str | None) -> Backend:
    if not database:
        return SQLiteBackend(data_dir / "opencode.db")
    from .storage.postgres import PostgresBackend, is_postgres_url  # psycopg only if used

    if not is_postgres_url(database):
        raise StartupError("database: expected a postgresql://… URL (or none for SQLite)")
    return PostgresBackend(database, instance=_instance_id(data_dir))


def _instance_id(data_dir: Path) -> str:
    """This data dir's name among the instances sharing a database (made once)."""
    path = data_dir / "instance"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        name = new_id("inst")
        path.write_text(name + "\n")
        return name


async def _serve(config, store, token, socket_path, passed, cors_flag, stop, task_status) -> None:
    providers = ProviderRegistry(
        config.provider, os.environ, idle_timeout=config.agent.stream_idle_timeout
    )
    try:
        async with open_session_manager(store) as sessions, trio.open_nursery() as nursery:
            probed = trio.Event()
            nursery.start_soon(_probe_sandbox, probed)  # while the app is built
            daemon = Daemon(config, store, sessions, providers, token, nursery)
            sessions.control_handlers["permission"] = partial(remote_answer, daemon)
            sessions.on_remote_events.append(partial(latest.forget, daemon))
            app = daemon.app = create_app(daemon, Policy.from_config(config, token, cors_flag))
            hc = hypercorn_config(config, socket_path, passed)
            hypercorn_stop = trio.Event()
            await probed.wait()
            try:
                binds = await nursery.start(
                    partial(serve, app, hc, shutdown_trigger=hypercorn_stop.wait)
                )
            except* OSError as group:
                raise StartupError(_bind_error(group, config)) from None
            daemon.endpoints = _endpoints(binds, config.server.certfile)
            sandbox.announce(sandbox.jail_for(config))
            log.info(daemon.endpoints.ready_line())
            background = await nursery.start(_run_background, daemon)
            systemd.notify("READY=1\nSTATUS=serving")
            task_status.started(daemon)
            await stop.wait()
            systemd.notify("STOPPING=1")
            background.cancel()
            daemon.stopping.set()
            await sessions.aclose()  # bounded: see sessions.manager
            hypercorn_stop.set()
    finally:
        with trio.CancelScope(shield=True):
            await providers.aclose()


async def _probe_sandbox(done: trio.Event) -> None:
    """Whether bwrap works here: asked once, in a worker thread (it runs bwrap)."""
    await trio.to_thread.run_sync(sandbox.probe, abandon_on_cancel=True)
    done.set()


async def _run_background(daemon: Daemon, *, task_status: trio.TaskStatus) -> None:
    """Retention, model discovery and the systemd watchdog: tasks until shutdown starts."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(retention.run, daemon)
            nursery.start_soon(_discover_models, daemon)
            nursery.start_soon(daemon.mcp.run)  # MCP servers, stopped with the rest
            nursery.start_soon(reload.watch_sighup, daemon)
            if getattr(daemon.store.backend, "shared", False):
                nursery.start_soon(_recover_dead_instances, daemon)
            interval = systemd.watchdog_interval()
            if interval is not None:
                nursery.start_soon(systemd.watchdog, interval, daemon.store.ping)
            task_status.started(scope)


async def _discover_models(daemon: Daemon) -> None:
    """Ask OpenAI-compatible servers (Ollama & co) once which models they serve.

    In the background: a server that is down must not delay start-up, and `GET /models`
    lists the configured models meanwhile.
    """
    with trio.move_on_after(DISCOVERY_TIMEOUT):
        try:
            await daemon.providers.refresh_models()
        except Exception:
            log.warning("model discovery failed", exc_info=True)


def _bind_error(group: BaseExceptionGroup, config: Config) -> str:
    exc = group.exceptions[0]
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    where = f"{config.server.host}:{config.server.port}"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: address already in use (is another daemon running?)"
    return f"cannot listen on {where}: {exc}"

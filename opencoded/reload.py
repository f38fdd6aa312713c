"""Reloading the config file on SIGHUP (what `opencode daemon reload` sends).

Reloaded: providers (keys and base URLs written in the file), the default model, permissions
and agent limits; turns that are running finish on what they started with. Kept until a
restart: the listeners (server.*), the data dir, the log level and retention, and the process
environment (a newly exported ANTHROPIC_API_KEY reaches only a restarted daemon).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

import attrs
import trio

from .config import Config, ConfigError
from .daemon import Daemon
from .providers.base import ProviderError
from .providers.registry import ProviderRegistry

log = logging.getLogger("opencoded.reload")
_RESTART_ONLY = ("server", "data_dir", "log_level", "retention")
_loader: Callable[[], Config] | None = None


def set_loader(loader: Callable[[], Config]) -> None:
    """How to build the Config again (file, environment, flags); main() sets it."""
    global _loader
    _loader = loader


async def watch_sighup(daemon: Daemon) -> None:
    """Reload on SIGHUP, unless the daemon runs on a terminal (`opencode serve`): there SIGHUP
    still means the terminal went away and the daemon stops as before."""
    if _loader is None:  # an embedded daemon (tests): its config is not from a file
        return
    if os.isatty(0):
        return
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            reload(daemon, _loader)


def reload(daemon: Daemon, load: Callable[[], Config]) -> bool:
    """Apply the reloadable part of a fresh Config; keep everything on any error."""
    try:
        new = load()
        providers = ProviderRegistry(new.provider, os.environ)
    except (ConfigError, ProviderError) as exc:
        log.error("config not reloaded: %s", exc)
        return False
    old = daemon.config
    daemon.config = attrs.evolve(
        old, model=new.model, provider=new.provider, permission=new.permission, agent=new.agent
    )
    daemon.providers = providers
    usable = [p["id"] for p in providers.list_providers() if p["configured"]]
    log.info("config reloaded; usable providers: %s", ", ".join(usable) or "none")
    if changed := [name for name in _RESTART_ONLY if getattr(new, name) != getattr(old, name)]:
        log.warning("changed settings need a restart to apply: %s", ", ".join(changed))
    return True

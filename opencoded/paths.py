"""Where things live on disk, per contract section 1. Pure functions of the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

AF_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


def data_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("OPENCODE_DATA_DIR"):
        return Path(env["OPENCODE_DATA_DIR"])
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "opencode"


def config_file(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("OPENCODE_CONFIG"):
        return Path(env["OPENCODE_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "opencode" / "opencode.json"


def socket_path(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("OPENCODE_SOCKET"):
        return Path(env["OPENCODE_SOCKET"])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "opencode" / "opencoded.sock"
    return Path(f"/tmp/opencode-{os.getuid()}") / "opencoded.sock"

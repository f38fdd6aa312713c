"""Daemon configuration: defaults, then the JSON file, then the environment, then flags.

One frozen `Config` object is built at start-up and handed to whatever needs it (the
hypercorn way: one config object, no globals). JSON keys follow the contract's camelCase
(`allowedHosts`, `rateLimit`); Python names are snake_case, renamed by the converter.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
from cattrs.gen import make_dict_structure_fn, override

from . import paths
from .errors import InvalidRequest
from .wire import converter, structure

PermissionAction = Literal["allow", "ask", "deny"]
DEFAULT_PERMISSIONS: dict[str, str] = {
    "read": "allow",
    "list": "allow",
    "glob": "allow",
    "grep": "allow",
    "write": "ask",
    "edit": "ask",
    "bash": "ask",
    "webfetch": "ask",
    "todowrite": "allow",
    "todoread": "allow",
}
MAX_BODY_BYTES = 10 * 1024 * 1024
MCP_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


class ConfigError(Exception):
    """A configuration problem, worded for the one line the daemon prints before exiting."""


@attrs.frozen
class CorsConfig:
    origin: list[str] = attrs.Factory(list)
    credentials: bool = False


@attrs.frozen
class RateLimitConfig:
    rate: float = 500.0
    burst: int = 1000


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 3000
    socket: str | None = None
    tcp: bool = True
    auth: bool = True
    cors: CorsConfig = attrs.Factory(CorsConfig)
    allowed_hosts: list[str] | None = None
    rate_limit: RateLimitConfig | None = attrs.Factory(RateLimitConfig)
    certfile: str | None = None
    keyfile: str | None = None


@attrs.frozen
class RetentionConfig:
    days: float | None = None
    interval_hours: float = 6.0


@attrs.frozen
class AgentConfig:
    max_steps: int = 50
    bash_timeout: float = 120.0
    max_tokens: int = 8192
    # Seconds a provider may send nothing (before its headers or between bytes) before
    # the step counts as a dropped stream: retried if nothing was shown yet, else an error.
    stream_idle_timeout: float = attrs.field(default=90.0)
    # Compact the context before a step whose input would pass this share of the model's
    # context window (docs/architecture.md, "Context compaction"); autoCompact false: only
    # on demand or after the provider's context-overflow error.
    compact_threshold: float = attrs.field(default=0.85)
    auto_compact: bool = True

    @compact_threshold.validator
    def _share(self, _attribute: Any, value: float) -> None:
        if not 0.1 <= value <= 1.0:
            raise ValueError(f"compactThreshold must be between 0.1 and 1, got {value}")

    @stream_idle_timeout.validator
    def _positive(self, _attribute: Any, value: float) -> None:
        if not value > 0:
            raise ValueError(f"streamIdleTimeout must be above 0 seconds, got {value}")


SandboxMode = Literal["workspace-write", "read-only", "off"]


@attrs.frozen
class SandboxConfig:
    """How the bash tool's commands are confined; see docs/security.md."""

    mode: SandboxMode = "workspace-write"
    network: bool = False
    fallback: Literal["refuse", "unconfined"] = "refuse"
    hide: list[str] = attrs.Factory(list)  # more paths commands may not read
    hide_credentials: bool = True  # hide ~/.ssh, ~/.aws... (tools/sandbox.py CREDENTIALS)
    writable: list[str] = attrs.Factory(list)  # more paths commands may write
    allow_broad_roots: bool = False  # allow "/", $HOME... as session/project directories


# TypeErrors worded "expected ...": the wire converter passes those messages on as they are.
def _check_mcp_server(server: McpServerConfig, _attr: Any, _value: Any) -> None:
    if server.type == "local" and not server.command:
        raise TypeError('expected "command" (a non-empty array) for a "local" server')
    if server.type == "remote" and not (server.url or "").startswith(("http://", "https://")):
        raise TypeError('expected "url" (http:// or https://) for a "remote" server')


@attrs.frozen
class McpServerConfig:
    """One MCP server, in the shape OpenCode users write (see opencoded.mcp)."""

    type: Literal["local", "remote"] = attrs.field(validator=_check_mcp_server)
    command: list[str] = attrs.Factory(list)
    environment: dict[str, str] = attrs.Factory(dict)
    url: str | None = None
    headers: dict[str, str] = attrs.Factory(dict)
    enabled: bool = True
    timeout: int = 30_000  # ms, for connecting and listing tools (OpenCode's unit)
    tool_timeout: int = 600_000  # ms, for one tool call


def _check_mcp_names(_config: Any, _attr: Any, servers: dict[str, McpServerConfig]) -> None:
    for name in servers:
        if not MCP_NAME.fullmatch(name):
            raise TypeError(f"expected a name of letters, digits, - and _ (1-32), got {name!r}")


@attrs.frozen
class WebfetchConfig:
    allow_private: bool = False
    max_bytes: int = 5 * 1024 * 1024
    timeout: float = 30.0  # seconds


@attrs.frozen
class Config:
    server: ServerConfig = attrs.Factory(ServerConfig)
    model: str | None = None
    provider: dict[str, dict[str, Any]] = attrs.Factory(dict)
    permission: dict[str, PermissionAction] = attrs.Factory(dict)
    retention: RetentionConfig = attrs.Factory(RetentionConfig)
    agent: AgentConfig = attrs.Factory(AgentConfig)
    sandbox: SandboxConfig = attrs.Factory(SandboxConfig)
    mcp: dict[str, McpServerConfig] = attrs.field(factory=dict, validator=_check_mcp_names)
    webfetch: WebfetchConfig = attrs.Factory(WebfetchConfig)
    data_dir: str | None = None
    log_level: str = "info"
    # postgresql://… : the shared PostgreSQL (docs/scaling.md); None: SQLite in data_dir
    database: str | None = None
    # Titles of untitled sessions: the first line of the first message (given by the
    # clients), or "model": the session's model writes one after the first turn (one more
    # small request, so only when asked; agent/titles.py)
    titles: Literal["first-line", "model"] = "first-line"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else paths.data_dir()

    @property
    def socket_path(self) -> Path:
        return Path(self.server.socket) if self.server.socket else paths.socket_path()

    def permission_for(self, tool: str) -> str:
        action = permission_lookup(self.permission, tool)
        return action if action is not None else DEFAULT_PERMISSIONS.get(tool, "ask")


@functools.lru_cache(maxsize=512)
def _permission_pattern(key: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in key.split("*")), re.DOTALL)


def permission_lookup(table: Mapping[str, str], tool: str) -> str | None:
    """The action a `permission` map sets for `tool`, or None. Keys are tool names where `*`
    matches any run of characters; the exact name wins, then the longest matching pattern."""
    action = table.get(tool)
    if action not in ("allow", "ask", "deny"):
        patterns = [key for key in table if "*" in key and _permission_pattern(key).fullmatch(tool)]
        action = table[max(patterns, key=len)] if patterns else None
    return action if action in ("allow", "ask", "deny") else None


def _camel(cls: type, **renames: str) -> None:
    hook = make_dict_structure_fn(
        cls,
        converter,
        _cattrs_forbid_extra_keys=True,
        **{name: override(rename=key) for name, key in renames.items()},
    )
    converter.register_structure_hook(cls, hook)


_camel(ServerConfig, allowed_hosts="allowedHosts", rate_limit="rateLimit")
_camel(RetentionConfig, interval_hours="intervalHours")
_camel(
    AgentConfig,
    max_steps="maxSteps",
    bash_timeout="bashTimeout",
    max_tokens="maxTokens",
    stream_idle_timeout="streamIdleTimeout",
    compact_threshold="compactThreshold",
    auto_compact="autoCompact",
)
_camel(SandboxConfig, allow_broad_roots="allowBroadRoots", hide_credentials="hideCredentials")
_camel(McpServerConfig, tool_timeout="toolTimeout")
_camel(WebfetchConfig, allow_private="allowPrivate", max_bytes="maxBytes")
_camel(Config, data_dir="dataDir", log_level="logLevel")


def load_file(path: Path) -> dict[str, Any]:
    """The file's JSON object, or {} when it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a JSON object")
    data.pop("$schema", None)
    return data


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if env.get("OPENCODE_HOST"):
        server["host"] = env["OPENCODE_HOST"]
    if env.get("OPENCODE_PORT"):
        try:
            server["port"] = int(env["OPENCODE_PORT"])
        except ValueError:
            raise ConfigError(f"OPENCODE_PORT is not a number: {env['OPENCODE_PORT']!r}") from None
    if env.get("OPENCODE_SOCKET"):
        server["socket"] = env["OPENCODE_SOCKET"]
    out: dict[str, Any] = {"server": server} if server else {}
    if env.get("OPENCODE_MODEL"):
        out["model"] = env["OPENCODE_MODEL"]
    if env.get("OPENCODE_DATA_DIR"):
        out["dataDir"] = env["OPENCODE_DATA_DIR"]
    if env.get("OPENCODE_DATABASE_URL"):
        out["database"] = env["OPENCODE_DATABASE_URL"]
    return out


def _line_of(text: str, key: str) -> int | None:
    last = key.replace("]", "").split(".")[-1].split("[")[0]
    for number, line in enumerate(text.splitlines(), 1):
        if f'"{last}"' in line:
            return number
    return None


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config: defaults < file < environment < overrides (the command-line flags)."""
    path = path or paths.config_file(env)
    from_file = load_file(path)
    merged = _merge(_merge(from_file, _from_env(env)), overrides or {})
    try:
        config = structure(merged, Config, what="config")
    except InvalidRequest as exc:
        field = exc.details.get("field", "")
        line = _line_of(path.read_text(), field) if path.exists() and field else None
        where = f"{path}, line {line}" if line else str(path)
        raise ConfigError(f"config file {where}: key {field!r}: {exc.message}") from None
    # The file holds provider keys: sandboxed commands may never read it (docs/security.md).
    hide = [*config.sandbox.hide, str(path.absolute())]
    return attrs.evolve(config, sandbox=attrs.evolve(config.sandbox, hide=hide))


# Keys read from the free-form `provider` section (providers/registry.py); anything else is
# ignored there, so a misspelling (`baseUrl`) would pass silently without a warning.
_PROVIDER_KEYS = {"type", "name", "options", "models"}
_OPTION_KEYS = {"apiKey", "baseURL"}
_MODEL_KEYS = {"name", "context", "limit"}
_LIMIT_KEYS = {"context", "output"}


def _unknown_provider_keys(data: Mapping[str, Any]) -> list[tuple[str, set[str]]]:
    """(dotted path, the keys allowed there) for each unknown key under `provider`."""
    found: list[tuple[str, set[str]]] = []

    def check(obj: Any, where: str, allowed: set[str]) -> None:
        if isinstance(obj, dict):
            found.extend((f"{where}.{k}", allowed) for k in obj if k not in allowed)

    providers = data.get("provider")
    for pid, entry in providers.items() if isinstance(providers, dict) else ():
        base = f"provider.{pid}"
        check(entry, base, _PROVIDER_KEYS)
        if not isinstance(entry, dict):
            continue
        check(entry.get("options"), f"{base}.options", _OPTION_KEYS)
        models = entry.get("models")
        for mid, model in models.items() if isinstance(models, dict) else ():
            check(model, f"{base}.models.{mid}", _MODEL_KEYS)
            if isinstance(model, dict):
                check(model.get("limit"), f"{base}.models.{mid}.limit", _LIMIT_KEYS)
    return found


def config_warnings(path: Path | None = None, env: Mapping[str, str] = os.environ) -> list[str]:
    """One line per unknown key in the config file, with its line and a likely spelling."""
    import difflib

    path = path or paths.config_file(env)
    try:
        text = path.read_text()
        data = json.loads(text)
    except (OSError, ValueError):
        return []  # load_config reports these
    if not isinstance(data, dict):
        return []
    out = []
    for dotted, allowed in _unknown_provider_keys(data):
        key = dotted.rsplit(".", 1)[-1]
        line = _line_of(text, dotted)
        where = f"{path}, line {line}" if line else str(path)
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        out.append(f"config file {where}: unknown key {dotted!r} is ignored{hint}")
    return out

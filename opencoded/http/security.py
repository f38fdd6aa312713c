"""Who may talk to the daemon (contract section 2).

The Unix socket is trusted: its file mode is the access control. TCP is reachable by
every local user and by every web page in the user's browser, so it needs the token,
an allowed Origin (a page must not drive an agent that runs shell commands) and a
loopback Host (DNS rebinding). All of it is pure logic over headers, kept apart from
Quart so it can be read and tested on its own.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

from ..config import Config
from ..errors import PermissionDenied, RateLimited, Unauthorized

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
DEFAULT_CORS = ("http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")
PUBLIC_PATHS = {"/health"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_HOST_RE = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::([0-9]{1,5}))?$")
_NAME_RE = re.compile(r"^(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*\.?$")
DEFAULT_PORTS = {"http": 80, "https": 443}
ANY_PORT = -1

Origin = tuple[str, str, int]  # scheme, host (IPv6 in brackets), port


def parse_host(host_header: str) -> tuple[str, int | None] | None:
    """`Host: name[:port]` strictly: no userinfo, path or stray characters. IPv6 in brackets."""
    match = _HOST_RE.match(host_header.strip().lower())
    if match is None or not _valid_name(match.group(1)):
        return None
    port = int(match.group(2)) if match.group(2) else None
    if port is not None and port > 65535:
        return None
    return match.group(1), port


def _valid_name(name: str) -> bool:
    if name.startswith("["):
        try:
            return ipaddress.ip_address(name[1:-1]).version == 6
        except ValueError:
            return False
    return bool(_NAME_RE.match(name)) and not name.startswith("*")


def host_name(host_header: str) -> str:
    """`example.com:3000` -> `example.com`; `[::1]:3000` -> `[::1]`; malformed -> ``."""
    parsed = parse_host(host_header)
    return parsed[0] if parsed else ""


def parse_origin(text: str, *, pattern: bool = False) -> Origin | None:
    """`scheme://host[:port]` and nothing else, as browsers send Origin; None if it is not.

    In a configured pattern the port may be `*` (any port) and the host may start with
    `*.` (any subdomain). Compared as parts, never as text, so `http://[::1]:3000` works
    and `http://localhost:1.evil.com` is no localhost.
    """
    any_port = pattern and text.endswith(":*")
    if any_port:
        text = text[:-2]
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if (
        parts.scheme not in DEFAULT_PORTS
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or not parts.hostname
    ):
        return None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    if not (_valid_name(host) or (pattern and _NAME_RE.match(host))):
        return None
    if any_port:
        return parts.scheme, host, ANY_PORT
    return parts.scheme, host, port if port is not None else DEFAULT_PORTS[parts.scheme]


def origin_matches(origin: Origin, pattern: Origin) -> bool:
    scheme, host, port = pattern
    if origin[0] != scheme or (port != ANY_PORT and origin[2] != port):
        return False
    if host.startswith("*."):
        return origin[1].endswith(host[1:])
    return origin[1] == host


@attrs.frozen
class Policy:
    token: str
    auth: bool
    bind_host: str
    cors_origins: tuple[str, ...]
    cors_credentials: bool
    allowed_hosts: tuple[str, ...] | None

    @classmethod
    def from_config(cls, config: Config, token: str, cors_flag: bool = False) -> Policy:
        origins = tuple(config.server.cors.origin)
        if cors_flag:
            origins = DEFAULT_CORS + origins
        hosts = config.server.allowed_hosts
        return cls(
            token=token,
            auth=config.server.auth,
            bind_host=config.server.host,
            cors_origins=origins,
            cors_credentials=config.server.cors.credentials,
            allowed_hosts=tuple(hosts) if hosts is not None else None,
        )

    def origin_allowed(self, origin: str) -> bool:
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        for pattern in self.cors_origins:
            if pattern == "*":
                return True  # the user's explicit choice: any origin
            wanted = parse_origin(pattern, pattern=True)
            if wanted is not None and origin_matches(parsed, wanted):
                return True
        return False

    def host_allowed(self, host_header: str) -> bool:
        name = host_name(host_header)
        if not name:
            return False
        if self.allowed_hosts is not None:
            return name in self.allowed_hosts or host_header in self.allowed_hosts
        if is_loopback(name) or name.strip("[]") == self.bind_host.strip("[]").lower():
            return True
        # Bound to a non-loopback address: the token is the guard, any Host is accepted.
        return not is_loopback(self.bind_host)

    def check_tcp(self, path: str, headers: Mapping[str, str], query_token: str | None) -> str:
        """Raise the contract's error for a refused TCP request; return the caller key."""
        if not self.host_allowed(headers.get("host", "")):
            raise PermissionDenied("Host header not allowed", {"host": headers.get("host", "")})
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin):
            raise PermissionDenied("Origin not allowed", {"origin": origin})
        if not self.auth or path in PUBLIC_PATHS:
            return "anonymous"
        presented = bearer(headers.get("authorization", "")) or query_token
        if presented is None:
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            raise Unauthorized("invalid token")
        return presented


def bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class RateLimiter:
    """A token bucket per caller. O(1) per request; callers are few (one per token)."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> None:
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            raise RateLimited("too many requests", retry_after=round((1 - tokens) / self.rate, 3))
        self._buckets[key] = (tokens - 1, now)

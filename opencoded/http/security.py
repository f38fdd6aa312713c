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
import time
from collections.abc import Mapping
from fnmatch import fnmatchcase

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


def host_name(host_header: str) -> str:
    """`example.com:3000` -> `example.com`; `[::1]:3000` -> `[::1]`."""
    if host_header.startswith("["):
        return host_header.split("]")[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


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
        return any(fnmatchcase(origin, pattern) for pattern in self.cors_origins)

    def host_allowed(self, host_header: str) -> bool:
        name = host_name(host_header.strip().lower())
        if self.allowed_hosts is not None:
            return name in self.allowed_hosts or host_header in self.allowed_hosts
        if is_loopback(name) or name == self.bind_host:
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

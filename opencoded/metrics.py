"""What `GET /metrics` reports, kept as plain numbers where it happens.

Recording is an attribute increment, or a bisect into a histogram's bucket bounds: no
lock, no allocation beyond the float a clock read returns, no import of a metrics library.
The turn and provider figures live here (one `Metrics` per daemon, `Daemon.metrics`); the
storage ones on the Store (its commit histogram and event count); the gauges (running
turns, watchers, queued writes, open sessions) are read from the live objects at scrape
time. `http/routes/metrics.py` renders all of it in the Prometheus text format with
prometheus_client, imported at the first scrape (docs/performance.md has both costs).

A turn's clocks (`TurnMeter`), all `time.perf_counter`:
- duration: from the turn's start (the message accepted) until its end is decided;
- first token: from the start until its first text delta is appended to the log;
- provider wait: time spent inside the provider's stream (from each request until its
  next event arrives, failed attempts included; `providers.retry` adds it up);
- away: tool calls (with their permission prompts) and compaction summaries;
- overhead = duration - provider wait - away: the daemon's own share of a completed turn.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any

# Bucket upper bounds, seconds (`le`; +Inf is implied).
TURN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Histogram:
    """Counts per bucket (not cumulative: one increment per observation) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # first bound >= value: `le`
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(`le`, observations <= it) per bucket, +Inf last: the exposition's buckets."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class Metrics:
    """One daemon's turn and provider figures (see the module doc)."""

    __slots__ = (
        "first_token_seconds",
        "overhead_seconds",
        "provider_errors",
        "provider_seconds",
        "renderer",
        "turn_seconds",
        "turns",
    )

    def __init__(self) -> None:
        self.turns: dict[str, int] = {}  # final status -> turns
        self.turn_seconds = Histogram(TURN_BUCKETS)
        self.first_token_seconds = Histogram(FIRST_TOKEN_BUCKETS)
        self.overhead_seconds = Histogram(OVERHEAD_BUCKETS)
        self.provider_seconds: dict[str, Histogram] = {}  # provider -> time to first event
        self.provider_errors: dict[tuple[str, str], int] = {}  # (provider, code) -> errors
        self.renderer: Any = None  # the scrape's collector registry, built at the first one

    def turn(self, provider: str) -> TurnMeter:
        """The clocks of a turn starting now."""
        return TurnMeter(self, provider)


class ProviderMeter:
    """What `providers.retry.stream_with_retry` reports to; this base one keeps nothing."""

    __slots__ = ("wait",)

    def __init__(self) -> None:
        self.wait = 0.0  # seconds inside the provider's stream

    def responded(self, seconds: float) -> None:
        """An attempt's first event arrived `seconds` after its request."""

    def failed(self, code: str) -> None:
        """An attempt failed with a ProviderError of this code (retried or not)."""


NO_METER = ProviderMeter()


class TurnMeter(ProviderMeter):
    __slots__ = ("away", "first_token_at", "metrics", "provider", "started")

    def __init__(self, metrics: Metrics, provider: str) -> None:
        super().__init__()
        self.metrics = metrics
        self.provider = provider
        self.started = perf_counter()
        self.away = 0.0
        self.first_token_at: float | None = None

    def responded(self, seconds: float) -> None:
        histograms = self.metrics.provider_seconds
        histogram = histograms.get(self.provider)
        if histogram is None:
            histogram = histograms[self.provider] = Histogram(PROVIDER_BUCKETS)
        histogram.observe(seconds)

    def failed(self, code: str) -> None:
        key = (self.provider, code)
        errors = self.metrics.provider_errors
        errors[key] = errors.get(key, 0) + 1

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = perf_counter() - self.started
            self.metrics.first_token_seconds.observe(self.first_token_at)

    @contextmanager
    def outside(self) -> Iterator[None]:
        """Time in the block is not the daemon's (a tool call, a summary request)."""
        start = perf_counter()
        try:
            yield
        finally:
            self.away += perf_counter() - start

    def ended(self, status: str) -> None:
        metrics = self.metrics
        wall = perf_counter() - self.started
        metrics.turns[status] = metrics.turns.get(status, 0) + 1
        metrics.turn_seconds.observe(wall)
        if status == "completed":  # an abort or an error can cut a wait short, uncounted
            metrics.overhead_seconds.observe(max(0.0, wall - self.wait - self.away))

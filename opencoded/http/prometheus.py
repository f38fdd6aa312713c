"""The daemon's figures as Prometheus metric families (prometheus_client's Collector).

Imported at the first `GET /metrics` only (routes/metrics.py), with prometheus_client:
the library's import time is not paid at start-up. Every value is read when scraped:
the counters and histograms from `Daemon.metrics` and the Store, the gauges from the
live objects (docs/api.md lists each metric).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from ..daemon import Daemon
from ..metrics import Histogram

TURN_STATUSES = ("completed", "error", "aborted")
Encoder = Callable[[CollectorRegistry], bytes]


class DaemonCollector:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        daemon, metrics = self.daemon, self.daemon.metrics
        turns = CounterMetricFamily(
            "opencode_turns", "Turns ended, by final status", labels=["status"]
        )
        for status in sorted({*TURN_STATUSES, *metrics.turns}):
            turns.add_metric([status], metrics.turns.get(status, 0))
        yield turns
        yield histogram(
            "opencode_turn_duration_seconds",
            "Turn wall time, from the message accepted to the end decided",
            metrics.turn_seconds,
        )
        yield histogram(
            "opencode_turn_first_token_seconds",
            "From a turn's start to its first text delta appended to the session's log",
            metrics.first_token_seconds,
        )
        yield histogram(
            "opencode_turn_overhead_seconds",
            "A completed turn's wall time minus its provider wait, tool calls and summaries",
            metrics.overhead_seconds,
        )
        latency = HistogramMetricFamily(
            "opencode_provider_latency_seconds",
            "From a provider request to its first stream event",
            labels=["provider"],
        )
        for provider, observed in sorted(metrics.provider_seconds.items()):
            latency.add_metric([provider], buckets(observed), observed.sum)
        yield latency
        errors = CounterMetricFamily(
            "opencode_provider_errors",
            "Failed provider requests (retried ones included), by provider and error code",
            labels=["provider", "code"],
        )
        for (provider, code), count in sorted(metrics.provider_errors.items()):
            errors.add_metric([provider, code], count)
        yield errors
        yield from self.collect_live(daemon)

    def collect_live(self, daemon: Daemon) -> Iterator[Metric]:
        store, sessions = daemon.store, daemon.sessions
        yield CounterMetricFamily(
            "opencode_events", "Events appended to session logs", value=store.events_queued
        )
        watchers = GaugeMetricFamily(
            "opencode_watchers",
            "Live followers: of session logs (WebSocket, SSE, a message's stream); of GET /events",
            labels=["stream"],
        )
        watchers.add_metric(["session"], sessions.watcher_count)
        watchers.add_metric(["feed"], sessions.feed.listener_count)
        yield watchers
        yield GaugeMetricFamily(
            "opencode_turns_running", "Turns running now", value=sessions.running_count
        )
        yield GaugeMetricFamily(
            "opencode_sessions_open",
            "Sessions held in memory now (running a turn or followed)",
            value=sessions.open_count,
        )
        yield GaugeMetricFamily(
            "opencode_store_queued_writes",
            "Writes waiting for the storage writer (events appended back to back are one)",
            value=store.queued_jobs,
        )
        yield histogram(
            "opencode_store_commit_seconds",
            "Duration of one storage commit (a group of queued writes, one transaction)",
            store.commit_seconds,
        )


def histogram(name: str, documentation: str, observed: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=buckets(observed), sum_value=observed.sum
    )


def buckets(observed: Histogram) -> list[tuple[str, float]]:
    return [(floatToGoString(bound), count) for bound, count in observed.cumulative()]


class Renderer:
    """One daemon's registry; `render(accept)` is (body, content type) for a scrape."""

    def __init__(self, daemon: Daemon) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(daemon))  # type: ignore[arg-type]

    def render(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

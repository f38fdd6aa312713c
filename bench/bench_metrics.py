"""What `GET /metrics` costs the daemon: recording on the hot path, imports, one scrape.

    python -m bench.bench_metrics [--events 200000]

- **observe**: one `Histogram.observe` (a bisect into the bucket bounds, two additions);
- **counter**: one `+= 1` on an attribute (the events counter: once per event);
- **per provider event**: `providers.retry.stream_with_retry` over a provider yielding
  `--events` events from memory, with the turn's meter and with none (NO_METER: the same
  code, the clock reads included), against the same loop without any metering (baseline);
- **import**: `opencoded.metrics` (imported at start-up) and, after the daemon's modules,
  the renderer with prometheus_client (imported at the first scrape, in a worker thread);
- **render**: one scrape's body, for a daemon with nothing running.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import timeit
import types
from collections.abc import AsyncIterator
from contextlib import aclosing
from time import perf_counter
from typing import Any

import trio

from opencoded.metrics import NO_METER, TURN_BUCKETS, Histogram, Metrics
from opencoded.providers.retry import stream_with_retry

REPEAT = 7


class MemoryProvider:
    id = "memory"

    def __init__(self, events: int) -> None:
        self.events = events

    async def stream(self, request: Any) -> AsyncIterator[int]:
        for i in range(self.events):
            yield i


async def unmetered(provider: MemoryProvider, request: Any) -> AsyncIterator[int]:
    """stream_with_retry's loop as it was before metering (one attempt)."""
    yielded = False
    async with aclosing(provider.stream(request)) as events:
        async for event in events:
            yielded = True
            yield event
    assert yielded


async def per_event(events: int) -> dict[str, float]:
    async def run(stream: AsyncIterator[int]) -> float:
        start = perf_counter()
        async for _ in stream:
            pass
        return (perf_counter() - start) / events * 1e9

    metrics = Metrics()
    best: dict[str, float] = {}
    for _ in range(REPEAT):  # interleaved: a load change hits all three alike
        runs = {
            "baseline (no metering)": unmetered(MemoryProvider(events), None),
            "NO_METER": stream_with_retry(MemoryProvider(events), None),  # type: ignore[arg-type]
            "TurnMeter": stream_with_retry(
                MemoryProvider(events),  # type: ignore[arg-type]
                None,  # type: ignore[arg-type]
                meter=metrics.turn("memory"),
            ),
        }
        for name, stream in runs.items():
            best[name] = min(best.get(name, float("inf")), await run(stream))
    return best


def nanoseconds(statement: str, scope: dict[str, Any], number: int = 1_000_000) -> float:
    return min(timeit.repeat(statement, globals=scope, number=number, repeat=REPEAT)) / number * 1e9


def import_ms(code: str) -> float:
    times = []
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        times.append(float(out))
    return min(times)


TIMED_IMPORT = (
    "import time{pre}\nt = time.perf_counter()\nimport {module}\n"
    "print((time.perf_counter() - t) * 1e3)"
)


def render_ms() -> float:
    from opencoded.http.prometheus import Renderer
    from opencoded.sessions import SessionManager
    from opencoded.storage import Store

    store = Store(None)  # type: ignore[arg-type]
    daemon = types.SimpleNamespace(
        metrics=Metrics(),
        store=store,
        sessions=SessionManager(store, None),  # type: ignore[arg-type]
    )
    renderer = Renderer(daemon)  # type: ignore[arg-type]
    return min(timeit.repeat(lambda: renderer.render(""), number=100, repeat=REPEAT)) / 100 * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    histogram = Histogram(TURN_BUCKETS)
    holder = types.SimpleNamespace(count=0)
    print(f"observe: {nanoseconds('histogram.observe(0.7)', {'histogram': histogram}):.0f} ns")
    print(f"counter += 1: {nanoseconds('holder.count += 1', {'holder': holder}):.0f} ns")
    for name, ns in trio.run(per_event, args.events).items():
        print(f"per provider event, {name}: {ns:.0f} ns")
    assert NO_METER.wait >= 0
    early = TIMED_IMPORT.format(pre=", opencoded.records", module="opencoded.metrics")
    late = TIMED_IMPORT.format(
        pre=", opencoded.server, opencoded.http.app", module="opencoded.http.prometheus"
    )
    print(f"import opencoded.metrics (start-up): {import_ms(early):.2f} ms")
    print(f"import the renderer + prometheus_client (first scrape): {import_ms(late):.1f} ms")
    print(f"render one scrape: {render_ms():.2f} ms")


if __name__ == "__main__":
    main()

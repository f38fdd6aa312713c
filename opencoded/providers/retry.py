"""The one retry policy for provider calls.

A step is retried only while nothing of it has been yielded: once text reached the user (and
the event log), replaying the step would show it twice, so a failure after that ends the turn
with the error. Failures before the first event (429, 5xx, 529, refused connection, a stream
cut before any content) are retried with exponential backoff and jitter, honouring the
provider's Retry-After.

Each retry is reported before its wait (`on_retry`, a `Retrying` notice): the turn turns it
into a `retry` event so clients can say what is happening instead of staying silent.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from time import perf_counter

import attrs
import trio

from ..metrics import NO_METER, ProviderMeter
from ._errors import public_url
from .base import ChatRequest, Provider, ProviderError, StreamEvent

__all__ = ["Retrying", "backoff_delay", "public_url", "short_reason", "stream_with_retry"]

log = logging.getLogger(__name__)


def backoff_delay(
    attempt: int,
    *,
    base_delay: float,
    max_delay: float,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number `attempt` (0-based).

    Equal jitter: half the exponential delay is fixed, half random, so concurrent sessions
    hitting the same 429 spread out. A Retry-After from the provider is a floor.
    """
    exp = min(max_delay, base_delay * (2**attempt))
    delay = exp / 2 + rand() * exp / 2
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


@attrs.frozen
class Retrying:
    """A failed try about to be made again: try `attempt` (1-based) of `max_attempts`."""

    attempt: int
    max_attempts: int
    delay: float
    error: ProviderError


_STATUS_WORDS = {
    408: "request timeout",
    429: "rate limited",
    500: "server error",
    502: "bad gateway",
    503: "unavailable",
    504: "gateway timeout",
    529: "overloaded",
}


def short_reason(err: ProviderError) -> str:
    """A few words on a retryable failure: "connection refused", "HTTP 529 overloaded"."""
    if err.reason:
        return err.reason
    if err.status is not None:
        word = _STATUS_WORDS.get(err.status)
        return f"HTTP {err.status} {word}" if word else f"HTTP {err.status}"
    return err.message if len(err.message) <= 80 else err.message[:79] + "…"


async def stream_with_retry(
    provider: Provider,
    request: ChatRequest,
    *,
    attempts: int = 4,
    base_delay: float = 0.5,
    max_delay: float = 8.0,
    max_retry_after: float = 60.0,
    sleep: Callable[[float], Awaitable[None]] = trio.sleep,
    on_retry: Callable[[Retrying], Awaitable[None]] | None = None,
    meter: ProviderMeter = NO_METER,
) -> AsyncIterator[StreamEvent]:
    """Yield the events of one step, retrying retryable failures that happen before any event.

    attempts counts tries, not retries. A Retry-After longer than max_retry_after is not
    waited for: the error is raised at once (waiting minutes inside a turn helps nobody).
    on_retry is awaited before each wait, e.g. to report it (the turn's `retry` event).
    `meter` gets the time spent in the provider's stream, latencies and errors (metrics.py).
    """
    mark = perf_counter()  # waiting on the provider since (failed tries and backoff too)
    for attempt in range(attempts):
        yielded = False
        sent = perf_counter()
        try:
            async with aclosing(provider.stream(request)) as events:
                async for event in events:
                    meter.wait += perf_counter() - mark
                    if not yielded:
                        meter.responded(perf_counter() - sent)
                    yielded = True
                    yield event
                    mark = perf_counter()
            meter.wait += perf_counter() - mark
            return
        except ProviderError as err:
            meter.failed(err.code)
            last_try = attempt == attempts - 1
            too_long = err.retry_after is not None and err.retry_after > max_retry_after
            if yielded or not err.retryable or last_try or too_long:
                raise
            delay = backoff_delay(
                attempt, base_delay=base_delay, max_delay=max_delay, retry_after=err.retry_after
            )
            log.warning(
                "%s: %s; retry %d/%d in %.2fs",
                provider.id,
                err.message,
                attempt + 1,
                attempts - 1,
                delay,
            )
            if on_retry is not None:
                await on_retry(Retrying(attempt + 2, attempts, delay, err))
        await sleep(delay)

"""Built-in model catalog: context windows and list prices, for `GET /models` and turn cost.

Prices are US dollars per million tokens, from the providers' public price pages as of
2026-11-24 (Anthropic: 5-minute cache writes at 1.25x input, cache reads at 0.1x unless the
page says otherwise; OpenAI: cached input, no cache-write charge, so cache_write equals input;
OpenAI's standard short-context rates). A model listed with price None is known but has no
single list price (tiered), so it costs 0 like an unknown one. New models appear every month:
an id not listed here is still passed to the provider as it is; its cost is 0 and its price is
reported as unknown (null). Dated snapshots (`claude-sonnet-4-5-20250929`) and `-latest`
names resolve to their entry.
"""

from __future__ import annotations

import re

import attrs

from .base import Usage


@attrs.frozen
class Price:
    input: float
    output: float
    cache_read: float
    cache_write: float


@attrs.frozen
class ModelInfo:
    id: str
    provider: str
    name: str
    context: int
    price: Price | None
    aliases: tuple[str, ...] = ()
    output: int = 64_000  # the most tokens one reply may have (max_tokens is capped to it)

    def to_json(self) -> dict[str, object]:
        """The `GET /models` item shape."""
        price = attrs.asdict(self.price) if self.price else None
        return {
            "id": self.id,
            "provider": self.provider,
            "name": self.name,
            "context": self.context,
            "price": price,
        }


def _anthropic(
    id: str,
    name: str,
    price: tuple[float, float] | None,
    *,
    context: int = 200_000,
    aliases: tuple[str, ...] = (),
    cache_read: float | None = None,
    output: int = 64_000,
) -> ModelInfo:
    full = None
    if price is not None:
        p_in, p_out = price
        read = round(p_in * 0.1, 4) if cache_read is None else cache_read
        full = Price(p_in, p_out, read, round(p_in * 1.25, 4))
    return ModelInfo(id, "anthropic", name, context, full, aliases, output)


def _openai(
    id: str, name: str, context: int, p_in: float, p_out: float, cached: float
) -> ModelInfo:
    output = 16_384 if id.startswith("gpt-4o") else 32_768 if id.startswith("gpt-4") else 100_000
    return ModelInfo(id, "openai", name, context, Price(p_in, p_out, cached, p_in), (), output)


_1M = 1_000_000

MODELS: tuple[ModelInfo, ...] = (
    # Anthropic, current first.
    _anthropic("claude-opus-5-5", "Claude Opus 5.5", (4.0, 20.0), context=_1M),
    _anthropic("claude-sonnet-5-5", "Claude Sonnet 5.5", (2.0, 10.0), context=_1M),
    _anthropic("claude-haiku-5-5", "Claude Haiku 5.5", None, context=_1M),  # tiered price
    _anthropic("claude-fable-5-1", "Claude Fable 5.1", (10.0, 50.0), context=_1M, cache_read=0.25),
    _anthropic("claude-fable-5", "Claude Fable 5", (10.0, 50.0), context=_1M, cache_read=1.0),
    _anthropic("claude-opus-5", "Claude Opus 5", (5.0, 25.0), context=_1M),
    _anthropic("claude-sonnet-5", "Claude Sonnet 5", (2.0, 10.0), context=_1M),
    _anthropic("claude-opus-4-8", "Claude Opus 4.8", (5.0, 25.0), context=_1M),
    _anthropic("claude-opus-4-7", "Claude Opus 4.7", (5.0, 25.0), context=_1M),
    _anthropic("claude-opus-4-6", "Claude Opus 4.6", (5.0, 25.0), context=_1M),
    _anthropic("claude-sonnet-4-6", "Claude Sonnet 4.6", (3.0, 15.0), context=_1M),
    _anthropic(
        "claude-haiku-4-5", "Claude Haiku 4.5", (1.0, 5.0), aliases=("claude-haiku-4-5-20251001",)
    ),
    # Deprecated or legacy, still answered by the API (or by compatible gateways).
    _anthropic(
        "claude-opus-4-5", "Claude Opus 4.5", (5.0, 25.0), aliases=("claude-opus-4-5-20251101",)
    ),
    _anthropic(
        "claude-sonnet-4-5",
        "Claude Sonnet 4.5",
        (3.0, 15.0),
        aliases=("claude-sonnet-4-5-20250929",),
    ),
    _anthropic(
        "claude-opus-4-1",
        "Claude Opus 4.1",
        (15.0, 75.0),
        aliases=("claude-opus-4-1-20250805",),
        output=32_000,
    ),
    _anthropic(
        "claude-opus-4-0",
        "Claude Opus 4",
        (15.0, 75.0),
        aliases=("claude-opus-4-20250514",),
        output=32_000,
    ),
    _anthropic(
        "claude-sonnet-4-0", "Claude Sonnet 4", (3.0, 15.0), aliases=("claude-sonnet-4-20250514",)
    ),
    _anthropic(
        "claude-3-7-sonnet-latest",
        "Claude Sonnet 3.7",
        (3.0, 15.0),
        aliases=("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
    ),
    _anthropic(
        "claude-3-5-haiku-latest",
        "Claude Haiku 3.5",
        (0.8, 4.0),
        aliases=("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        output=8_192,
    ),
    _anthropic("claude-3-haiku-20240307", "Claude Haiku 3", (0.25, 1.25), output=4_096),
    # OpenAI, current first.
    _openai("gpt-5.5", "GPT-5.5", _1M, 5.0, 30.0, 0.50),
    _openai("gpt-5.4", "GPT-5.4", _1M, 2.50, 15.0, 0.25),
    _openai("gpt-5.4-mini", "GPT-5.4 mini", _1M, 0.75, 4.50, 0.075),
    _openai("gpt-5.4-nano", "GPT-5.4 nano", _1M, 0.20, 1.25, 0.02),
    _openai("gpt-5.1", "GPT-5.1", 400_000, 1.25, 10.0, 0.125),
    _openai("gpt-5", "GPT-5", 400_000, 1.25, 10.0, 0.125),
    _openai("gpt-5-mini", "GPT-5 mini", 400_000, 0.25, 2.0, 0.025),
    _openai("gpt-5-nano", "GPT-5 nano", 400_000, 0.05, 0.40, 0.005),
    _openai("gpt-4.1", "GPT-4.1", 1_047_576, 2.0, 8.0, 0.50),
    _openai("gpt-4.1-mini", "GPT-4.1 mini", 1_047_576, 0.40, 1.60, 0.10),
    _openai("gpt-4.1-nano", "GPT-4.1 nano", 1_047_576, 0.10, 0.40, 0.025),
    _openai("gpt-4o", "GPT-4o", 128_000, 2.50, 10.0, 1.25),
    _openai("gpt-4o-mini", "GPT-4o mini", 128_000, 0.15, 0.60, 0.075),
    _openai("o3", "o3", 200_000, 2.0, 8.0, 0.50),
    _openai("o4-mini", "o4-mini", 200_000, 1.10, 4.40, 0.275),
    _openai("o3-mini", "o3-mini", 200_000, 1.10, 4.40, 0.55),
)

_INDEX: dict[tuple[str, str], ModelInfo] = {}
for _m in MODELS:
    for _name in (_m.id, *_m.aliases):
        _INDEX[(_m.provider, _name)] = _m

_SNAPSHOT = re.compile(r"-(\d{8}|latest)$")


def models_for(provider: str) -> list[ModelInfo]:
    """The catalog's models of one provider kind ("anthropic" or "openai"), in table order."""
    return [m for m in MODELS if m.provider == provider]


def lookup(provider: str | None, model: str) -> ModelInfo | None:
    """The entry for a model id or alias; provider None searches every provider."""
    providers = [provider] if provider else sorted({m.provider for m in MODELS})
    for p in providers:
        found = _INDEX.get((p, model))
        if found is None and _SNAPSHOT.search(model):
            # An unlisted snapshot of a listed model: claude-haiku-4-5-20260101.
            found = _INDEX.get((p, _SNAPSHOT.sub("", model)))
        if found is not None:
            return found
    return None


def cost(model: str, usage: Usage, provider: str | None = None) -> float:
    """Dollars for one usage record; 0.0 when the model's price is unknown."""
    info = lookup(provider, model)
    if info is None or info.price is None:
        return 0.0
    p = info.price
    total = (
        usage.input_tokens * p.input
        + usage.output_tokens * p.output
        + usage.cache_read_tokens * p.cache_read
        + usage.cache_write_tokens * p.cache_write
    )
    return total / 1_000_000

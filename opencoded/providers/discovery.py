"""Which models an OpenAI-compatible server offers (`GET {baseURL}/models`), without its SDK.

Discovery runs once in the background at start-up. Through the openai SDK it cost the
import of the SDK (~0.7 s of CPU in the event loop, right after the ready line, and ~20 MB)
in a daemon that may never run a turn on that server; one GET in a worker thread with the
standard library costs neither (docs/performance.md). Turns still go through the SDK.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import trio

from . import _errors
from .base import ProviderError

MAX_BYTES = 4 * 1024 * 1024  # a model list is a few KB


def _read_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def fetch_model_ids(
    provider: str, base_url: str, api_key: str | None, timeout: float, key_hint: str
) -> list[str]:
    """The ids the server lists, or ProviderError (blocking: run it in a worker thread)."""
    url = base_url.rstrip("/") + "/models"
    if not url.startswith(("http://", "https://")):  # urllib would also open file:// and ftp://
        raise ProviderError(f"{provider}: baseURL must be an http(s) URL, not {base_url!r}")
    headers = {
        "Accept": "application/json",
        # What the SDK sends: local servers need no key, but some proxies want the header.
        "Authorization": f"Bearer {api_key or 'not-needed'}",
    }
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as response:
            body = _read_json(response.read(MAX_BYTES))
    except urllib.error.HTTPError as exc:
        with exc:
            answer = _read_json(exc.read(MAX_BYTES))
        raise _errors.from_status(
            provider, exc.code, exc.headers, answer, key_hint=key_hint
        ) from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, a malformed URL
        reason = getattr(exc, "reason", None) or exc
        raise ProviderError(f"{provider} unreachable at {url}: {reason}", retryable=True) from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ProviderError(f"{provider}: GET {url} did not answer a model list")
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


async def list_model_ids(
    provider: str, base_url: str, api_key: str | None, *, timeout: float, key_hint: str
) -> list[str]:
    return await trio.to_thread.run_sync(
        fetch_model_ids, provider, base_url, api_key, timeout, key_hint, abandon_on_cancel=True
    )

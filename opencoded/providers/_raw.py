"""One streamed POST through a provider SDK's client, the response left unread.

`client.post(path, cast_to=<the SDK's httpx Response>, content=…, stream=True)` is the SDKs'
documented way to call an endpoint raw: the client's auth headers, base URL, timeouts and
mapping of error statuses to the SDK's exceptions all apply, as they do for `create()`.
What it skips is work in proportion to the conversation on every step: `create()`'s
re-validation of the params (the openai SDK's `async_maybe_transform` walks every message
against its TypedDicts: a third of the daemon's work per turn), and the deep copy the
SDKs make of a `body` before encoding it. The body is encoded here, once, as bytes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


@asynccontextmanager
async def streamed_post(client: Any, path: str, body: dict[str, Any]) -> AsyncIterator[Any]:
    """The SDK's raw HTTP response to POST `body` (with `"stream": true`); closed on exit."""
    import httpx2  # the SDKs' HTTP library, already imported by them

    content = json.dumps({**body, "stream": True}, separators=(",", ":")).encode()
    response = await client.post(
        path,
        cast_to=httpx2.Response,
        content=content,
        options={"headers": {"Content-Type": "application/json"}},
        stream=True,
    )
    try:
        yield response
    finally:
        await response.aclose()

"""A small Server-Sent Events splitter for provider streams.

The SDKs parse every streamed event into pydantic models (and the anthropic SDK's line
decoder walks each chunk line by line in Python): per token that is most of the daemon's
own CPU. The providers use the SDKs for everything else (requests, auth, errors, retries
of nothing) and read the event stream of the raw response with this, getting plain dicts
from `json.loads`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str | None, bytes]]:
    """(event name, data) per SSE event; comments skipped, multi-line data joined by \\n."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:
            # A lone \r at the end may be the first half of \r\n: keep it for later.
            tail = b"\r" if buffer.endswith(b"\r") else b""
            body = buffer[:-1] if tail else buffer
            buffer = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        while (end := buffer.find(b"\n\n")) >= 0:
            block, buffer = buffer[:end], buffer[end + 2 :]
            event = _parse(block)
            if event is not None:
                yield event
    if buffer.strip():
        event = _parse(buffer.rstrip(b"\r\n"))
        if event is not None:
            yield event


def _parse(block: bytes) -> tuple[str | None, bytes] | None:
    name: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
        # id:, retry: and comments (":") mean nothing to a provider stream
    if name is None and not data:
        return None
    return name, b"\n".join(data)

"""Anthropic Messages API provider, through the official `anthropic` SDK.

The SDK is imported when a provider is built, not when this package is imported: it costs
about 0.7 s, and a daemon configured for OpenAI only never needs it.

Prompt caching: the system prompt, the last tool and the last message block carry
`cache_control: ephemeral`, so each agent step re-reads the unchanged prefix from the cache
(three of the four breakpoints Anthropic allows).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from . import _errors
from ._raw import streamed_post
from ._sse import sse_events
from .base import (
    ChatMessage,
    ChatRequest,
    ProviderError,
    Stop,
    StreamEvent,
    TextBlock,
    TextDelta,
    TextEnd,
    ToolCall,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
)

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger(__name__)
NAME = "Anthropic"
KEY_HINT = "ANTHROPIC_API_KEY or provider.anthropic.options.apiKey"
_CACHE = {"type": "ephemeral"}


# ---- request -------------------------------------------------------------------------------


def _block(block: TextBlock | ToolUseBlock | ToolResultBlock) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ToolUseBlock):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    content: str | list[dict[str, Any]] = block.content
    if block.images:
        content = [{"type": "text", "text": block.content}] + [
            {"type": "image", "source": {"type": "base64", "media_type": kind, "data": data}}
            for kind, data in block.images
        ]
    return {
        "type": "tool_result",
        "tool_use_id": block.tool_use_id,
        "content": content,
        "is_error": block.is_error,
    }


def _message(message: ChatMessage) -> dict[str, Any]:
    # The API rejects empty text blocks, which a cancelled step can leave behind.
    blocks = [_block(b) for b in message.content if not (isinstance(b, TextBlock) and not b.text)]
    return {"role": message.role, "content": blocks}


def build_params(request: ChatRequest) -> dict[str, Any]:
    """The JSON body of `POST /v1/messages` for one step (without `stream`)."""
    messages = [_message(m) for m in request.messages]
    if messages and messages[-1]["content"]:
        last = messages[-1]["content"]
        last[-1] = {**last[-1], "cache_control": _CACHE}
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": messages,
    }
    if request.system:
        params["system"] = [{"type": "text", "text": request.system, "cache_control": _CACHE}]
    if request.tools:
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in request.tools
        ]
        tools[-1]["cache_control"] = _CACHE
        params["tools"] = tools
    return params


# ---- response ------------------------------------------------------------------------------


class _StepState:
    """Folds the raw SSE events of one step (plain dicts, as JSON-decoded) into neutral events."""

    def __init__(self) -> None:
        self.blocks: dict[int, dict[str, Any]] = {}
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.stopped = False
        self._handlers = {
            "content_block_delta": self._on_content_block_delta,  # the hot one first
            "message_start": self._on_message_start,
            "content_block_start": self._on_content_block_start,
            "content_block_stop": self._on_content_block_stop,
            "message_delta": self._on_message_delta,
            "message_stop": self._on_message_stop,
        }

    def feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        handler = self._handlers.get(event.get("type"))  # type: ignore[arg-type]
        return handler(event) if handler else []

    def _on_message_start(self, event: dict[str, Any]) -> list[StreamEvent]:
        self._take_usage((event.get("message") or {}).get("usage"))
        return []

    def _on_content_block_start(self, event: dict[str, Any]) -> list[StreamEvent]:
        block = event["content_block"]
        index = event["index"]
        if block["type"] == "text":
            self.blocks[index] = {"type": "text"}
            return [TextDelta(block["text"])] if block.get("text") else []
        if block["type"] == "tool_use":
            self.blocks[index] = {"type": "tool_use", "id": block["id"], "name": block["name"]}
            self.blocks[index]["json"] = []
        return []

    def _on_content_block_delta(self, event: dict[str, Any]) -> list[StreamEvent]:
        delta = event["delta"]
        kind = delta["type"]
        if kind == "text_delta":
            return [TextDelta(delta["text"])] if delta["text"] else []
        if kind == "input_json_delta":
            block = self.blocks.get(event["index"])
            if block is not None and block["type"] == "tool_use":
                block["json"].append(delta["partial_json"])
        return []

    def _on_content_block_stop(self, event: dict[str, Any]) -> list[StreamEvent]:
        block = self.blocks.pop(event["index"], None)
        if block is None:
            return []
        if block["type"] == "text":
            return [TextEnd()]
        tool_input = _errors.parse_tool_input("".join(block["json"]))
        return [ToolCall(block["id"], block["name"], tool_input)]

    def _on_message_delta(self, event: dict[str, Any]) -> list[StreamEvent]:
        stop_reason = (event.get("delta") or {}).get("stop_reason")
        if stop_reason:
            self.stop_reason = stop_reason
        self._take_usage(event.get("usage"))
        return []

    def _on_message_stop(self, event: dict[str, Any]) -> list[StreamEvent]:
        self.stopped = True
        return [self.usage, Stop(self.stop_reason or "end_turn")]

    def _take_usage(self, usage: dict[str, Any] | None) -> None:
        """message_delta carries cumulative counts; a None field keeps what we had."""
        if not usage:
            return

        def pick(name: str, old: int) -> int:
            value = usage.get(name)
            return old if value is None else int(value)

        u = self.usage
        self.usage = Usage(
            input_tokens=pick("input_tokens", u.input_tokens),
            output_tokens=pick("output_tokens", u.output_tokens),
            cache_read_tokens=pick("cache_read_input_tokens", u.cache_read_tokens),
            cache_write_tokens=pick("cache_creation_input_tokens", u.cache_write_tokens),
        )


_warned: set[str] = set()


def _warn_deprecated(model: str) -> None:
    try:
        from anthropic._data import DEPRECATED_MODELS
    except ImportError:  # a private module: absent in another SDK version is fine
        return
    if model in DEPRECATED_MODELS and model not in _warned:
        _warned.add(model)
        log.warning("model %s is deprecated, end of life %s", model, DEPRECATED_MODELS[model])


# ---- provider ------------------------------------------------------------------------------


class AnthropicProvider:
    """A Provider for the Anthropic API (or anything speaking its protocol at base_url)."""

    def __init__(
        self,
        id: str = "anthropic",
        *,
        api_key: str | None,
        base_url: str | None = None,
        timeout: float = 90.0,
        key_hint: str = KEY_HINT,
    ) -> None:
        import anthropic
        import httpx2

        # The SDK warns (DeprecationWarning) on every request to a model nearing end of life;
        # a daemon logs that once per model instead (see _warn_deprecated).
        warnings.filterwarnings(
            "ignore", message=r"The model '.*' is deprecated", category=DeprecationWarning
        )
        self.id = id
        self._sdk = anthropic
        self._transport_error = httpx2.TransportError
        self._key_hint = key_hint
        # max_retries=0: retries are ours (providers.retry), so they are counted once and an
        # abort never waits inside the SDK's backoff.
        self._client: anthropic.AsyncAnthropic = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            # The read timeout bounds each wait for the next bytes, the response
            # headers included: a stalled provider costs at most `timeout` (the
            # config's agent.streamIdleTimeout), then retry.py treats it as a drop.
            timeout=httpx2.Timeout(timeout, connect=min(10.0, timeout)),
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream one step. Leaving early (cancel, aclose) closes the HTTP response."""
        params = build_params(request)
        _warn_deprecated(request.model)
        state = _StepState()
        started = False
        try:
            # The SDK makes the request and maps HTTP errors; the event stream is read
            # raw (see _sse: the SDK's per-event pydantic models cost more than the rest
            # of the daemon's work per token).
            async with streamed_post(self._client, "/v1/messages", params) as http:
                started = True
                async with aclosing(sse_events(http.aiter_bytes())) as events:
                    async for name, data in events:
                        if name is None or name == "ping" or not data:
                            continue
                        if name == "error":
                            raise self._stream_error(http, data)
                        for out in state.feed(json.loads(data)):
                            yield out
        except Exception as exc:
            raise self._map(exc, midstream=started) from exc
        if not state.stopped:
            raise _errors.stream_cut(self.id)

    def _stream_error(self, http: Any, data: bytes) -> ProviderError:
        """An `error` event inside a 200 stream (overloaded, rate limited mid-answer)."""
        text = data.decode(errors="replace")
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        return _errors.from_status(
            self.id,
            http.status_code,
            http.headers,
            body,
            key_hint=self._key_hint,
            fallback=text or f"Error code: {http.status_code}",
        )

    def _map(self, exc: Exception, midstream: bool = False) -> ProviderError:
        return _errors.from_sdk(
            self.id,
            self._sdk,
            exc,
            transport_error=self._transport_error,
            key_hint=self._key_hint,
            midstream=midstream,
        )

    async def aclose(self) -> None:
        await self._client.close()

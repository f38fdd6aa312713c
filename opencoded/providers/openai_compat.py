"""OpenAI Chat Completions provider: OpenAI itself and OpenAI-compatible servers.

Ollama, vLLM, llama.cpp's server and LM Studio speak the same streaming chunk protocol, so
one module serves them all; `official=True` only changes details OpenAI's own API wants.

Conversation mapping: the system prompt is a `system` message; an assistant's ToolUseBlocks
become its `tool_calls`; each ToolResultBlock becomes a `tool` message (placed before any
user text of the same turn, as the API requires tool answers right after the call). The API
has no error flag on tool results, so an error result's content is prefixed with "Error: ".

Tool calls arrive as deltas keyed by index (id and name first, then argument pieces); they
are emitted as whole ToolCalls when the choice finishes. Arguments that are not a JSON object
become `{INVALID_INPUT_KEY: raw}` (see base.py): the model gets an error back instead of the
turn failing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

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

_FINISH = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}

# ---- request -------------------------------------------------------------------------------


def _assistant(message: ChatMessage) -> list[dict[str, Any]]:
    text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": json.dumps(b.input)},
        }
        for b in message.content
        if isinstance(b, ToolUseBlock)
    ]
    out: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        out["tool_calls"] = calls
    return [out]


def _user(message: ChatMessage, *, images: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "role": "tool",
            "tool_call_id": b.tool_use_id,
            "content": f"Error: {b.content}" if b.is_error else b.content,
        }
        for b in message.content
        if isinstance(b, ToolResultBlock)
    ]
    if images:  # a tool message holds text only: the images follow as a user message
        out += _tool_images(message)
    text = "\n".join(b.text for b in message.content if isinstance(b, TextBlock) and b.text)
    if text:
        out.append({"role": "user", "content": text})
    return out


def _tool_images(message: ChatMessage) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for b in message.content:
        if isinstance(b, ToolResultBlock) and b.images:
            parts.append({"type": "text", "text": f"Images returned by tool call {b.tool_use_id}:"})
            parts += [
                {"type": "image_url", "image_url": {"url": f"data:{kind};base64,{data}"}}
                for kind, data in b.images
            ]
    return [{"role": "user", "content": parts}] if parts else []


def build_params(request: ChatRequest, *, official: bool) -> dict[str, Any]:
    """The JSON body of `POST /chat/completions` for one step (without `stream`)."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for m in request.messages:
        # Images only to OpenAI itself: other compatible servers may not take them.
        messages += _assistant(m) if m.role == "assistant" else _user(m, images=official)
    params: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "stream_options": {"include_usage": True},
    }
    # OpenAI's reasoning models refuse max_tokens; many compatible servers only know it.
    params["max_completion_tokens" if official else "max_tokens"] = request.max_tokens
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.input_schema,
                },
            }
            for t in request.tools
        ]
    return params


# ---- response ------------------------------------------------------------------------------


class _StepState:
    """Folds chunks of one step into neutral events."""

    def __init__(self) -> None:
        self.text_open = False
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.called_tools = False

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        """One chunk, as JSON-decoded from the stream (a plain dict)."""
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = _usage(usage)
        out: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if delta is not None:
                out += self._delta(delta)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                out += self._close_text()
                out += self._tool_calls()
        return out

    def _delta(self, delta: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        content = delta.get("content")
        if content:
            self.text_open = True
            out.append(TextDelta(content))
        for tc in delta.get("tool_calls") or ():
            out += self._close_text()
            index = tc.get("index")
            if index is None:
                index = len(self.calls)
            entry = self.calls.setdefault(index, {"id": None, "name": "", "args": []})
            if tc.get("id"):
                entry["id"] = tc["id"]
            function = tc.get("function")
            if function is not None:
                if function.get("name"):
                    entry["name"] = function["name"]
                if function.get("arguments"):
                    entry["args"].append(function["arguments"])
        return out

    def _close_text(self) -> list[StreamEvent]:
        if not self.text_open:
            return []
        self.text_open = False
        return [TextEnd()]

    def _tool_calls(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for index in sorted(self.calls):
            entry = self.calls[index]
            call_id = entry["id"] or f"call_{uuid.uuid4().hex[:24]}"
            tool_input = _errors.parse_tool_input("".join(entry["args"]))
            out.append(ToolCall(call_id, entry["name"], tool_input))
        self.called_tools = self.called_tools or bool(self.calls)
        self.calls.clear()
        return out

    def final(self) -> list[StreamEvent]:
        assert self.finish is not None
        reason = _FINISH.get(self.finish, self.finish)
        if self.called_tools:
            # Some compatible servers say "stop" even when the step called tools.
            reason = "tool_use"
        return [self.usage or Usage(), Stop(reason)]


def _usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("prompt_tokens_details")
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    prompt = int(usage.get("prompt_tokens") or 0)
    return Usage(
        input_tokens=max(0, prompt - cached),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cache_read_tokens=cached,
    )


def _stream_error(provider: str, error: Any) -> ProviderError:
    """An error object inside the stream: the server failed while answering."""
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return ProviderError(f"{provider} error: {message}", retryable=True)


# ---- provider ------------------------------------------------------------------------------


class OpenAICompatProvider:
    """A Provider for OpenAI (`official=True`) or an OpenAI-compatible server at base_url."""

    def __init__(
        self,
        id: str = "openai",
        *,
        api_key: str | None,
        base_url: str | None = None,
        official: bool = True,
        timeout: float = 90.0,
        key_hint: str = "OPENAI_API_KEY or provider.openai.options.apiKey",
    ) -> None:
        import httpx2
        import openai

        self.id = id
        self._sdk = openai
        self._transport_error = httpx2.TransportError
        self._official = official
        self._key_hint = key_hint
        # Local servers need no key, but the SDK insists on one.
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url,
            max_retries=0,
            # The read timeout bounds each wait for the next bytes, the response
            # headers included: a stalled provider costs at most `timeout` (the
            # config's agent.streamIdleTimeout), then retry.py treats it as a drop.
            timeout=httpx2.Timeout(timeout, connect=min(10.0, timeout)),
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream one step. Leaving early (cancel, aclose) closes the HTTP response."""
        params = build_params(request, official=self._official)
        state = _StepState()
        started = False
        try:
            # The SDK makes the request and maps HTTP errors; the chunks are read raw
            # (see _sse: the SDK's per-chunk pydantic models cost more than the rest of
            # the daemon's work per token).
            async with streamed_post(self._client, "/chat/completions", params) as response:
                started = True
                done = False
                async with aclosing(sse_events(response.aiter_bytes())) as events:
                    async for _, data in events:
                        if done or not data:
                            continue  # read to the end, so the connection can be reused
                        if data.startswith(b"[DONE]"):
                            done = True
                            continue
                        chunk = json.loads(data)
                        if isinstance(chunk, dict) and chunk.get("error"):
                            raise _stream_error(self.id, chunk["error"])
                        for out in state.feed(chunk):
                            yield out
        except Exception as exc:
            raise self._map(exc, midstream=started) from exc
        if state.finish is None:
            raise _errors.stream_cut(self.id)
        for out in state.final():
            yield out

    async def list_models(self) -> list[str]:
        """Model ids the server offers (`GET /models`), for servers like Ollama."""
        try:
            page = await self._client.models.list()
        except Exception as exc:
            raise self._map(exc) from exc
        return [m.id for m in page.data]

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

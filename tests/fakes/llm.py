"""A fake LLM service speaking the real Anthropic and OpenAI streaming wire protocols.

Tests drive the real `anthropic` and `openai` SDKs (and so our providers) against it, over a
real socket, so what is tested is the byte stream the public APIs send, not our own idea of it.

In-process API (what other tests rely on)::

    from tests.fakes.llm import FakeToolCall, Reply, open_fake_llm

    async with open_fake_llm() as fake:          # server runs in its own nursery, port 0
        fake.url          # "http://127.0.0.1:PORT"     -> Anthropic base_url
        fake.openai_url   # "http://127.0.0.1:PORT/v1"  -> OpenAI base_url
        fake.push(Reply(text=["Hel", "lo"]))       # queue the next reply (FIFO, either protocol)
        fake.push(Reply(tool_calls=[FakeToolCall("t1", "read", {"path": "a.py"})]))
        ...
        fake.requests     # list[ReceivedRequest]: .path, .body (JSON), .headers (lower-case)
        await fake.wait_requests(2)   # until at least 2 requests were received
        fake.disconnects  # how many streams the client dropped before the reply was complete
        await fake.disconnected.wait()  # set at the first such drop
        fake.release()    # a `lockstep` reply may send its next chunk

With an empty queue every request gets the default reply `Reply(text=["ok"])`.

A small context window (compaction tests)::

    fake.context_window = 3000   # tokens: a larger request gets the provider's real
                                 # overflow error (Anthropic 400 "prompt is too long: N
                                 # tokens > M maximum"; OpenAI 400 context_length_exceeded)
                                 # and takes no reply off the queue
    fake.request_tokens(body)    # the fake's count: the JSON body's length / 4; with a
                                 # window set, usage reports it as the input tokens
    fake.answer_containing("Summarise", Reply(text=["the summary"]))
                                 # a request whose body holds that text gets this reply
                                 # (not taken off the queue; the latest rule wins)
    fake.overflows               # how many requests were refused as too long

`Reply` fields (all optional):

- `text`: list of text pieces, one delta each (default none: no text block).
- `tool_calls`: list of `FakeToolCall(id, name, input)`; the input JSON is streamed in about
  three pieces (`input_json_delta` / `function.arguments` deltas).
- `stop_reason`: `None` means `"tool_use"` if there are tool calls, else `"end_turn"`
  (OpenAI: `"tool_calls"` / `"stop"`; `"max_tokens"` becomes `"length"`).
- `input_tokens`, `output_tokens` (10, 5), `cache_read_tokens`, `cache_write_tokens` (0, 0).
- `delay`: seconds to wait before each chunk after the first (slow streams).
- `status`: 200, or an error status (400, 401, 403, 404, 429, 500, 503, 529...) answered
  with the provider's own error JSON shape and no stream.
- `retry_after`: value of the `retry-after` header (seconds), any status.
- `cut_after`: send N chunks (SSE events / `data:` lines) then drop the connection without
  finishing the chunked body, as a broken network would.
- `hang`: send the opening chunks up to and including the first text (or tool) delta, then
  wait until the client goes away (counted in `disconnects`).
- `one_write`: the whole stream in one write (one HTTP chunk): a burst the client reads at
  once, as a daemon that fell behind would find it.
- `lockstep`: before each content chunk after the first, wait for `fake.release()` (one
  chunk per call): the test paces the stream by what it has seen.
- `stall`: accept the request, then send nothing at all (not even the status line) until the
  client goes away (counted in `disconnects`): a provider stuck before its headers.

One "chunk" is one SSE event (Anthropic) or one `data:` line (OpenAI).

Routes: `POST /v1/messages` (Anthropic Messages, `stream` true or false), `POST
/v1/chat/completions` (OpenAI Chat Completions, `stream` true or false; a usage chunk when
`stream_options.include_usage`), `GET /v1/models` (OpenAI list shape, or the Anthropic shape
when the request carries `anthropic-version`), `POST /_push` (body: a Reply as JSON, with
`tool_calls` as `[{"id", "name", "input"}]`), `GET /_requests` (the received requests),
`POST /_window` (`{"tokens": N}` or null: `context_window`), `POST /_answer_containing`
(`{"text", "reply"}`: `answer_containing`).

Out of process: `python -m tests.fakes.llm [--port N]` prints
`fake-llm ready: http://127.0.0.1:PORT` on stderr and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

# ---- scripting -----------------------------------------------------------------------------


@attrs.frozen
class FakeToolCall:
    id: str
    name: str
    input: dict[str, Any]


@attrs.frozen
class Reply:
    text: list[str] = attrs.field(factory=list, converter=list)
    tool_calls: list[FakeToolCall] = attrs.field(factory=list, converter=list)
    stop_reason: str | None = None
    input_tokens: int = 10
    output_tokens: int = 5
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    delay: float = 0.0
    status: int = 200
    retry_after: float | None = None
    cut_after: int | None = None
    hang: bool = False
    stall: bool = False
    one_write: bool = False
    lockstep: bool = False

    @property
    def anthropic_stop(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if self.tool_calls else "end_turn"

    @property
    def openai_finish(self) -> str:
        mapping = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}
        return mapping.get(self.anthropic_stop, self.anthropic_stop)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reply:
        data = dict(data)
        raw_calls = data.pop("tool_calls", [])
        calls = [FakeToolCall(c["id"], c["name"], c.get("input", {})) for c in raw_calls]
        return cls(tool_calls=calls, **data)


@attrs.frozen
class ReceivedRequest:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


def _json_pieces(value: dict[str, Any], parts: int = 3) -> list[str]:
    """Split a JSON document into pieces, as providers stream tool input in fragments."""
    raw = json.dumps(value)
    size = max(1, -(-len(raw) // parts))
    return [raw[i : i + size] for i in range(0, len(raw), size)]


# ---- wire formats --------------------------------------------------------------------------

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def anthropic_events(reply: Reply, model: str) -> Iterator[tuple[bytes, bool]]:
    """The Messages API event stream. Yields (chunk, is_content) pairs."""
    message = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": reply.cache_write_tokens,
            "cache_read_input_tokens": reply.cache_read_tokens,
            "output_tokens": 1,
        },
    }
    yield _sse("message_start", {"type": "message_start", "message": message}), False
    index = 0
    if reply.text:
        block = {"type": "text", "text": ""}
        start = {"type": "content_block_start", "index": index, "content_block": block}
        yield _sse("content_block_start", start), False
        yield _sse("ping", {"type": "ping"}), False
        for piece in reply.text:
            delta = {"type": "text_delta", "text": piece}
            data = {"type": "content_block_delta", "index": index, "delta": delta}
            yield _sse("content_block_delta", data), True
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index}), False
        index += 1
    for call in reply.tool_calls:
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        start = {"type": "content_block_start", "index": index, "content_block": block}
        yield _sse("content_block_start", start), False
        for piece in _json_pieces(call.input):
            delta = {"type": "input_json_delta", "partial_json": piece}
            data = {"type": "content_block_delta", "index": index, "delta": delta}
            yield _sse("content_block_delta", data), True
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index}), False
        index += 1
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": reply.anthropic_stop, "stop_sequence": None},
        "usage": {"output_tokens": reply.output_tokens},
    }
    yield _sse("message_delta", delta), False
    yield _sse("message_stop", {"type": "message_stop"}), False


def anthropic_message(reply: Reply, model: str) -> dict[str, Any]:
    """A non-streaming Messages API response."""
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": "".join(reply.text)})
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in reply.tool_calls
    ]
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": reply.anthropic_stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_creation_input_tokens": reply.cache_write_tokens,
            "cache_read_input_tokens": reply.cache_read_tokens,
        },
    }


def _openai_usage(reply: Reply) -> dict[str, Any]:
    prompt = reply.input_tokens + reply.cache_read_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": reply.output_tokens,
        "total_tokens": prompt + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cache_read_tokens},
    }


def openai_chunks(reply: Reply, model: str, include_usage: bool) -> Iterator[tuple[bytes, bool]]:
    """The Chat Completions chunk stream, ending with `data: [DONE]`."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = {**base, "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body)}\n\n".encode()

    yield chunk({"role": "assistant", "content": "", "refusal": None}), False
    for piece in reply.text:
        yield chunk({"content": piece}), True
    for i, call in enumerate(reply.tool_calls):
        opening = {
            "index": i,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield chunk({"tool_calls": [opening]}), True
        for piece in _json_pieces(call.input):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}), True
    yield chunk({}, reply.openai_finish), False
    if include_usage:
        body = {**base, "choices": [], "usage": _openai_usage(reply)}
        yield f"data: {json.dumps(body)}\n\n".encode(), False
    yield b"data: [DONE]\n\n", False


def openai_completion(reply: Reply, model: str) -> dict[str, Any]:
    """A non-streaming Chat Completions response."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.text) or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.input)},
            }
            for c in reply.tool_calls
        ]
    finish = reply.openai_finish
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _openai_usage(reply),
    }


# ---- the server ----------------------------------------------------------------------------


class _StreamCut(Exception):
    """Raised inside a streaming body to make hypercorn drop the connection mid-body."""


class FakeLLM:
    """The server's state: the reply queue and what was received. Create with open_fake_llm."""

    def __init__(self, models: list[str] | None = None) -> None:
        self.url = ""
        self.openai_url = ""
        self.models = models or ["fake-model", "qwen2.5-coder:7b"]
        self.requests: list[ReceivedRequest] = []
        self.disconnects = 0
        self.disconnected = trio.Event()
        self._queue: deque[Reply] = deque()
        self._received = trio.Event()
        self.context_window: int | None = None
        self.overflows = 0
        self._rules: list[tuple[str, Reply]] = []
        self._gate = trio.Semaphore(0)  # lockstep replies: one chunk per release()
        self.app = self._make_app()

    def release(self) -> None:
        """Let a `lockstep` reply send its next content chunk."""
        self._gate.release()

    def answer_containing(self, text: str, reply: Reply) -> None:
        """Answer every request whose JSON body contains `text` with `reply`."""
        self._rules.insert(0, (text, reply))

    @staticmethod
    def request_tokens(body: dict[str, Any]) -> int:
        return len(json.dumps(body)) // 4

    def _too_long(self, body: dict[str, Any]) -> int | None:
        """The request's token count when it does not fit the emulated window."""
        if self.context_window is None:
            return None
        tokens = self.request_tokens(body)
        if tokens <= self.context_window:
            return None
        self.overflows += 1
        return tokens

    def _reply_for(self, body: dict[str, Any]) -> Reply:
        raw = json.dumps(body)
        for text, reply in self._rules:
            if text in raw:
                return self._sized(reply, body)
        return self._sized(self._next_reply(), body)

    def _sized(self, reply: Reply, body: dict[str, Any]) -> Reply:
        if self.context_window is None:
            return reply
        return attrs.evolve(reply, input_tokens=self.request_tokens(body), cache_read_tokens=0)

    def push(self, *replies: Reply) -> None:
        """Queue replies; each request (either protocol) takes the oldest one."""
        self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Replies pushed but not yet used."""
        return len(self._queue)

    async def wait_requests(self, count: int) -> None:
        """Wait until at least `count` requests were received."""
        while len(self.requests) < count:
            await self._received.wait()

    def _next_reply(self) -> Reply:
        return self._queue.popleft() if self._queue else Reply(text=["ok"])

    def _record(self, body: dict[str, Any]) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(ReceivedRequest(request.path, body, headers))
        self._received.set()
        self._received = trio.Event()

    def _note_disconnect(self) -> None:
        self.disconnects += 1
        self.disconnected.set()

    async def _stream(
        self, chunks: Iterator[tuple[bytes, bool]], reply: Reply
    ) -> AsyncIterator[bytes]:
        try:
            if reply.one_write:
                yield b"".join(data for data, _ in chunks)
                return
            content_sent = False
            for n, (data, is_content) in enumerate(chunks):
                if reply.lockstep and is_content and content_sent:
                    await self._gate.acquire()
                content_sent = content_sent or is_content
                if reply.cut_after is not None and n >= reply.cut_after:
                    raise _StreamCut()
                if n and reply.delay:
                    await trio.sleep(reply.delay)
                yield data
                if reply.hang and is_content:
                    await trio.sleep_forever()
        except _StreamCut:
            raise
        except BaseException:
            # Cancelled (the client went away) or GeneratorExit: the reply was not finished.
            self._note_disconnect()
            raise

    async def _stall(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self._note_disconnect()

    def _error_headers(self, reply: Reply) -> dict[str, str]:
        headers = {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
        if reply.retry_after is not None:
            headers["retry-after"] = f"{reply.retry_after:g}"
        return headers

    def _make_app(self) -> QuartTrio:
        app = QuartTrio(__name__)
        app.config["RESPONSE_TIMEOUT"] = None

        @app.post("/v1/messages")
        async def messages() -> Any:
            body = await request.get_json(force=True)
            self._record(body)
            tokens = self._too_long(body)
            if tokens is not None:
                message = f"prompt is too long: {tokens} tokens > {self.context_window} maximum"
                error = {"type": "invalid_request_error", "message": message}
                return {"type": "error", "error": error, "request_id": "req_fake"}, 400
            reply = self._reply_for(body)
            if reply.stall:
                await self._stall()
            headers = self._error_headers(reply)
            if reply.status != 200:
                kind = _ANTHROPIC_ERROR_TYPES.get(reply.status, "api_error")
                error = {"type": kind, "message": f"fake {kind} ({reply.status})"}
                err = {"type": "error", "error": error, "request_id": headers["request-id"]}
                return err, reply.status, headers
            model = body.get("model", "fake-model")
            if not body.get("stream"):
                return anthropic_message(reply, model), 200, headers
            headers["cache-control"] = "no-cache"
            response = Response(
                self._stream(anthropic_events(reply, model), reply),
                content_type="text/event-stream; charset=utf-8",
                headers=headers,
            )
            response.timeout = None
            return response

        @app.post("/v1/chat/completions")
        async def chat_completions() -> Any:
            body = await request.get_json(force=True)
            self._record(body)
            tokens = self._too_long(body)
            if tokens is not None:
                message = (
                    f"This model's maximum context length is {self.context_window} tokens. "
                    f"However, your messages resulted in {tokens} tokens. Please reduce the "
                    "length of the messages."
                )
                error = {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
                return {"error": error}, 400
            reply = self._reply_for(body)
            if reply.stall:
                await self._stall()
            headers = self._error_headers(reply)
            headers["x-request-id"] = headers.pop("request-id")
            if reply.status != 200:
                kind, code = _OPENAI_ERRORS.get(reply.status, ("server_error", None))
                error = {"message": f"fake {kind} ({reply.status})", "type": kind}
                return {"error": {**error, "param": None, "code": code}}, reply.status, headers
            model = body.get("model", "fake-model")
            if not body.get("stream"):
                return openai_completion(reply, model), 200, headers
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            headers["cache-control"] = "no-cache"
            response = Response(
                self._stream(openai_chunks(reply, model, include_usage), reply),
                content_type="text/event-stream; charset=utf-8",
                headers=headers,
            )
            response.timeout = None
            return response

        @app.get("/v1/models")
        async def models() -> Any:
            if "anthropic-version" in request.headers:
                created = "2025-01-01T00:00:00Z"
                data = [
                    {"type": "model", "id": m, "display_name": m, "created_at": created}
                    for m in self.models
                ]
                first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
                return {"data": data, "has_more": False, "first_id": first, "last_id": last}
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
            ]
            return {"object": "list", "data": data}

        @app.post("/_push")
        async def push() -> Any:
            body = await request.get_json(force=True)
            try:
                self.push(Reply.from_json(body))
            except (TypeError, KeyError) as exc:
                return {"error": str(exc)}, 400
            return {"queued": len(self._queue)}

        @app.post("/_window")
        async def window() -> Any:
            body = await request.get_json(force=True)
            self.context_window = body.get("tokens")
            return {"context_window": self.context_window}

        @app.post("/_answer_containing")
        async def answer_containing() -> Any:
            body = await request.get_json(force=True)
            self.answer_containing(body["text"], Reply.from_json(body["reply"]))
            return {"rules": len(self._rules)}

        @app.get("/_requests")
        async def received() -> Any:
            return {"requests": [attrs.asdict(r) for r in self.requests]}

        return app


def _config(port: int) -> Config:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    return config


@asynccontextmanager
async def open_fake_llm(models: list[str] | None = None) -> AsyncIterator[FakeLLM]:
    """Start a fake LLM server on 127.0.0.1 (free port) for the duration of the block."""
    fake = FakeLLM(models)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, fake.app, _config(0)))
        fake.url = binds[0]
        fake.openai_url = f"{binds[0]}/v1"
        try:
            yield fake
        finally:
            # A fake needs no graceful drain; open keep-alive connections would delay it.
            nursery.cancel_scope.cancel()


async def _main(port: int) -> None:
    fake = FakeLLM()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, fake.app, _config(port)))
        print(f"fake-llm ready: {binds[0]}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with suppress(KeyboardInterrupt):
        trio.run(_main, args.port)


if __name__ == "__main__":
    main()

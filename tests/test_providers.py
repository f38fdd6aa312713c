"""Providers through the real anthropic and openai SDKs, against the fake LLM server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from opencoded.providers import catalog
from opencoded.providers._errors import parse_retry_after, parse_tool_input
from opencoded.providers.anthropic import AnthropicProvider
from opencoded.providers.base import (
    INVALID_INPUT_KEY,
    ChatMessage,
    ChatRequest,
    Provider,
    ProviderError,
    Stop,
    StreamEvent,
    TextBlock,
    TextDelta,
    TextEnd,
    ToolCall,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
)
from opencoded.providers.openai_compat import OpenAICompatProvider
from opencoded.providers.registry import ProviderConfigError, ProviderRegistry
from opencoded.providers.retry import backoff_delay, stream_with_retry
from tests.fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm

ROOT = Path(__file__).resolve().parent.parent
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

READ_TOOL = ToolSpec(
    "read",
    "Read a file",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)


def simple_request(text: str = "hi", **kw: Any) -> ChatRequest:
    return ChatRequest(
        model=kw.pop("model", "claude-sonnet-5-5"),
        system="You are a test.",
        messages=(ChatMessage("user", (TextBlock(text),)),),
        **kw,
    )


def tool_round_trip_request(model: str) -> ChatRequest:
    """A conversation where the assistant already called a tool and got its result."""
    return ChatRequest(
        model=model,
        system="sys",
        tools=(READ_TOOL, ToolSpec("list", "List", {"type": "object", "properties": {}})),
        messages=(
            ChatMessage("user", (TextBlock("read a.py"),)),
            ChatMessage(
                "assistant",
                (TextBlock("Reading."), ToolUseBlock("call_1", "read", {"path": "a.py"})),
            ),
            ChatMessage(
                "user",
                (ToolResultBlock("call_1", "no such file", is_error=True), TextBlock("go on")),
            ),
        ),
    )


def api_key_sent(headers: dict[str, str]) -> str | None:
    """The key a client sent: Anthropic SDKs use x-api-key or a bearer token."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    auth = headers.get("authorization", "")
    return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None


async def collect(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in stream]


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


@pytest.fixture
async def claude(fake: FakeLLM) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(api_key="sk-ant-test", base_url=fake.url)
    yield provider
    await provider.aclose()


@pytest.fixture
async def gpt(fake: FakeLLM) -> AsyncIterator[OpenAICompatProvider]:
    provider = OpenAICompatProvider(api_key="sk-openai-test", base_url=fake.openai_url)
    yield provider
    await provider.aclose()


# ---- anthropic -----------------------------------------------------------------------------


async def test_anthropic_text_only(fake: FakeLLM, claude: AnthropicProvider) -> None:
    fake.push(Reply(text=["Hel", "lo"], input_tokens=12, output_tokens=3))
    events = await collect(claude.stream(simple_request()))
    assert events == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextEnd(),
        Usage(input_tokens=12, output_tokens=3),
        Stop("end_turn"),
    ]
    sent = fake.requests[0]
    assert sent.path == "/v1/messages"
    assert api_key_sent(sent.headers) == "sk-ant-test"
    assert sent.body["stream"] is True
    assert sent.body["model"] == "claude-sonnet-5-5"
    assert sent.body["system"] == [
        {"type": "text", "text": "You are a test.", "cache_control": {"type": "ephemeral"}}
    ]
    assert sent.body["messages"][0]["content"][0]["text"] == "hi"


async def test_anthropic_tool_use_and_conversation(
    fake: FakeLLM, claude: AnthropicProvider
) -> None:
    big_input = {"path": "src/main.py", "offset": 10, "limit": 40}
    fake.push(
        Reply(
            text=["Let me look."],
            tool_calls=[
                FakeToolCall("toolu_1", "read", big_input),
                FakeToolCall("toolu_2", "list", {}),
            ],
        )
    )
    # A deprecated model: the SDK's DeprecationWarning must not break the step.
    events = await collect(claude.stream(tool_round_trip_request("claude-sonnet-4-5")))
    assert events == [
        TextDelta("Let me look."),
        TextEnd(),
        ToolCall("toolu_1", "read", big_input),
        ToolCall("toolu_2", "list", {}),
        Usage(input_tokens=10, output_tokens=5),
        Stop("tool_use"),
    ]
    body = fake.requests[0].body
    assert [t["name"] for t in body["tools"]] == ["read", "list"]
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Reading."},
            {"type": "tool_use", "id": "call_1", "name": "read", "input": {"path": "a.py"}},
        ],
    }
    last = body["messages"][2]["content"]
    assert last[0] == {
        "type": "tool_result",
        "tool_use_id": "call_1",
        "content": "no such file",
        "is_error": True,
    }
    assert last[-1]["cache_control"] == {"type": "ephemeral"}


async def test_anthropic_usage_counts_cache(fake: FakeLLM, claude: AnthropicProvider) -> None:
    fake.push(Reply(input_tokens=7, output_tokens=40, cache_read_tokens=900, cache_write_tokens=50))
    events = await collect(claude.stream(simple_request()))
    usage = [e for e in events if isinstance(e, Usage)]
    assert events == [
        Usage(input_tokens=7, output_tokens=40, cache_read_tokens=900, cache_write_tokens=50),
        Stop("end_turn"),
    ]
    # claude-sonnet-4-5: $3 in, $15 out, $0.30 cache read, $3.75 cache write per million.
    expected = (7 * 3 + 40 * 15 + 900 * 0.3 + 50 * 3.75) / 1e6
    assert catalog.cost("claude-sonnet-4-5", usage[0]) == pytest.approx(expected)


async def test_anthropic_401_names_the_key(fake: FakeLLM, claude: AnthropicProvider) -> None:
    fake.push(Reply(status=401))
    with pytest.raises(ProviderError) as info:
        await collect(claude.stream(simple_request()))
    err = info.value
    assert err.code == "PROVIDER_ERROR"
    assert err.status == 401
    assert not err.retryable
    assert "ANTHROPIC_API_KEY" in err.message


async def test_anthropic_429_carries_retry_after(fake: FakeLLM, claude: AnthropicProvider) -> None:
    fake.push(Reply(status=429, retry_after=3))
    with pytest.raises(ProviderError) as info:
        await collect(claude.stream(simple_request()))
    assert (info.value.code, info.value.retryable, info.value.retry_after) == (
        "RATE_LIMITED",
        True,
        3.0,
    )


async def test_anthropic_overloaded_is_retryable(fake: FakeLLM, claude: AnthropicProvider) -> None:
    fake.push(Reply(status=529))
    with pytest.raises(ProviderError) as info:
        await collect(claude.stream(simple_request()))
    assert info.value.retryable
    assert info.value.status == 529


async def test_anthropic_stream_cut_is_retryable(fake: FakeLLM, claude: AnthropicProvider) -> None:
    fake.push(Reply(text=["a", "b", "c"], cut_after=4))
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in claude.stream(simple_request()):
            seen.append(event)
    assert info.value.retryable
    assert "before the reply was complete" in info.value.message
    assert seen == [TextDelta("a")]  # message_start, block start, ping, 'a', then the cut


async def test_unreachable_server_is_retryable() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = AnthropicProvider(api_key="k", base_url=f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ProviderError) as info:
            await collect(provider.stream(simple_request()))
    finally:
        await provider.aclose()
    assert info.value.retryable
    assert "unreachable" in info.value.message


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_cancel_mid_stream_closes_connection(fake: FakeLLM, kind: str) -> None:
    provider: Provider
    if kind == "anthropic":
        provider = AnthropicProvider(api_key="k", base_url=fake.url)
    else:
        provider = OpenAICompatProvider(api_key="k", base_url=fake.openai_url)
    fake.push(Reply(text=["first", "never"], hang=True))
    seen: list[StreamEvent] = []
    try:
        with trio.CancelScope() as scope:
            async for event in provider.stream(simple_request(model="m")):
                seen.append(event)
                if isinstance(event, TextDelta):
                    scope.cancel()
        assert scope.cancelled_caught
        with trio.fail_after(5):
            await fake.disconnected.wait()
        assert fake.disconnects == 1
        assert seen == [TextDelta("first")]
        # The client is still usable afterwards (the pool was not corrupted).
        events = await collect(provider.stream(simple_request(model="m")))
        assert events[-1] == Stop("end_turn")
    finally:
        await provider.aclose()


# ---- openai --------------------------------------------------------------------------------


async def test_openai_text(fake: FakeLLM, gpt: OpenAICompatProvider) -> None:
    fake.push(Reply(text=["Hel", "lo"], input_tokens=20, output_tokens=2))
    events = await collect(gpt.stream(simple_request(model="gpt-4.1")))
    assert events == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextEnd(),
        Usage(input_tokens=20, output_tokens=2),
        Stop("end_turn"),
    ]
    sent = fake.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-openai-test"
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["max_completion_tokens"] == 8192
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": "hi"},
    ]


async def test_openai_tool_calls_and_conversation(fake: FakeLLM, gpt: OpenAICompatProvider) -> None:
    fake.push(
        Reply(
            text=["Looking."],
            tool_calls=[
                FakeToolCall("call_a", "read", {"path": "src/main.py", "limit": 40}),
                FakeToolCall("call_b", "list", {"path": "."}),
            ],
            input_tokens=30,
            cache_read_tokens=70,
        )
    )
    events = await collect(gpt.stream(tool_round_trip_request("gpt-4o")))
    assert events == [
        TextDelta("Looking."),
        TextEnd(),
        ToolCall("call_a", "read", {"path": "src/main.py", "limit": 40}),
        ToolCall("call_b", "list", {"path": "."}),
        # prompt_tokens 100 of which 70 cached: input_tokens counts the uncached part only.
        Usage(input_tokens=30, output_tokens=5, cache_read_tokens=70),
        Stop("tool_use"),
    ]
    body = fake.requests[0].body
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "read",
            "description": "Read a file",
            "parameters": READ_TOOL.input_schema,
        },
    }
    assert body["messages"][1:] == [
        {"role": "user", "content": "read a.py"},
        {
            "role": "assistant",
            "content": "Reading.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"path": "a.py"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: no such file"},
        {"role": "user", "content": "go on"},
    ]


async def test_openai_compatible_uses_max_tokens_and_no_key(fake: FakeLLM) -> None:
    provider = OpenAICompatProvider(
        "ollama", api_key=None, base_url=fake.openai_url, official=False
    )
    fake.push(Reply(tool_calls=[FakeToolCall("c9", "list", {})], stop_reason="end_turn"))
    try:
        events = await collect(provider.stream(simple_request(model="qwen2.5-coder:7b")))
        assert await provider.list_models() == ["fake-model", "qwen2.5-coder:7b"]
    finally:
        await provider.aclose()
    # Ollama says "stop" even when it called tools; the step still ends as tool_use.
    assert events == [ToolCall("c9", "list", {}), Usage(10, 5), Stop("tool_use")]
    assert fake.requests[0].headers["authorization"] == "Bearer not-needed"
    body = fake.requests[0].body
    assert body["max_tokens"] == 8192
    assert "max_completion_tokens" not in body


async def test_openai_errors(fake: FakeLLM, gpt: OpenAICompatProvider) -> None:
    fake.push(Reply(status=401), Reply(status=429, retry_after=1.5), Reply(status=503))
    results: list[ProviderError] = []
    for _ in range(3):
        with pytest.raises(ProviderError) as info:
            await collect(gpt.stream(simple_request(model="gpt-4o")))
        results.append(info.value)
    unauthorized, limited, unavailable = results
    assert not unauthorized.retryable and "OPENAI_API_KEY" in unauthorized.message
    assert (limited.code, limited.retry_after, limited.retryable) == ("RATE_LIMITED", 1.5, True)
    assert unavailable.retryable and unavailable.status == 503


async def test_openai_stream_cut_is_retryable(fake: FakeLLM, gpt: OpenAICompatProvider) -> None:
    fake.push(Reply(text=["a", "b"], cut_after=2))
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in gpt.stream(simple_request(model="gpt-4o")):
            seen.append(event)
    assert info.value.retryable
    assert seen == [TextDelta("a")]


def test_tool_input_that_is_not_a_json_object() -> None:
    assert parse_tool_input("") == {}
    assert parse_tool_input('{"a": 1}') == {"a": 1}
    assert parse_tool_input('{"a": ') == {INVALID_INPUT_KEY: '{"a": '}
    assert parse_tool_input("[1, 2]") == {INVALID_INPUT_KEY: "[1, 2]"}


def test_retry_after_header_forms() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


# ---- retry ---------------------------------------------------------------------------------


class RecordingSleep:
    """Records requested delays and returns at once, so backoff tests take no time."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await trio.lowlevel.checkpoint()


async def test_retry_429_with_retry_after_then_success(
    fake: FakeLLM, claude: AnthropicProvider
) -> None:
    fake.push(Reply(status=429, retry_after=2), Reply(text=["fine"]))
    sleep = RecordingSleep()
    events = await collect(stream_with_retry(claude, simple_request(), sleep=sleep))
    assert len(fake.requests) == 2
    assert sleep.delays[0] >= 2.0
    assert len(sleep.delays) == 1
    assert events[0] == TextDelta("fine")
    assert events[-1] == Stop("end_turn")


async def test_retry_401_is_not_retried(fake: FakeLLM, claude: AnthropicProvider) -> None:
    fake.push(Reply(status=401))
    sleep = RecordingSleep()
    with pytest.raises(ProviderError) as info:
        await collect(stream_with_retry(claude, simple_request(), sleep=sleep))
    assert info.value.status == 401
    assert len(fake.requests) == 1
    assert sleep.delays == []


async def test_retry_500_exhausted(fake: FakeLLM, gpt: OpenAICompatProvider) -> None:
    fake.push(*[Reply(status=500)] * 4)
    sleep = RecordingSleep()
    with pytest.raises(ProviderError) as info:
        await collect(
            stream_with_retry(gpt, simple_request(model="gpt-4o"), attempts=3, sleep=sleep)
        )
    assert info.value.status == 500
    assert len(fake.requests) == 3
    assert len(sleep.delays) == 2
    assert fake.pending == 1


async def test_retry_cut_before_output_is_retried(fake: FakeLLM, claude: AnthropicProvider) -> None:
    fake.push(Reply(cut_after=1), Reply(text=["again"]))
    sleep = RecordingSleep()
    events = await collect(stream_with_retry(claude, simple_request(), sleep=sleep))
    assert events[0] == TextDelta("again")
    assert len(fake.requests) == 2


async def test_retry_cut_after_output_is_raised(fake: FakeLLM, claude: AnthropicProvider) -> None:
    fake.push(Reply(text=["partial", "rest"], cut_after=4), Reply(text=["never"]))
    sleep = RecordingSleep()
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in stream_with_retry(claude, simple_request(), sleep=sleep):
            seen.append(event)
    assert info.value.retryable
    assert seen == [TextDelta("partial")]
    assert len(fake.requests) == 1


async def test_retry_after_beyond_limit_is_raised_at_once(
    fake: FakeLLM, claude: AnthropicProvider
) -> None:
    fake.push(Reply(status=429, retry_after=3600))
    sleep = RecordingSleep()
    with pytest.raises(ProviderError) as info:
        await collect(stream_with_retry(claude, simple_request(), sleep=sleep))
    assert info.value.code == "RATE_LIMITED"
    assert sleep.delays == []


def test_backoff_grows_with_jitter_and_cap() -> None:
    def low() -> float:
        return 0.0

    def high() -> float:
        return 1.0

    assert backoff_delay(0, base_delay=0.5, max_delay=8, rand=low) == 0.25
    assert backoff_delay(0, base_delay=0.5, max_delay=8, rand=high) == 0.5
    assert backoff_delay(3, base_delay=0.5, max_delay=8, rand=high) == 4.0
    assert backoff_delay(10, base_delay=0.5, max_delay=8, rand=high) == 8.0
    assert backoff_delay(0, base_delay=0.5, max_delay=8, retry_after=5, rand=high) == 5.0


# ---- registry ------------------------------------------------------------------------------


def test_resolve_rules() -> None:
    reg = ProviderRegistry(
        {
            "ollama": {
                "type": "openai-compatible",
                "options": {"baseURL": "http://127.0.0.1:11434/v1"},
                "models": {"qwen2.5-coder:7b": {"name": "Qwen coder", "context": 32768}},
            }
        },
        {"OPENAI_API_KEY": "sk-o"},
    )
    # The session's own choice wins.
    assert reg.resolve("openai/gpt-4o", None, "ollama/qwen2.5-coder:7b") == ("openai", "gpt-4o")
    assert reg.resolve("gpt-4o", "openai", None) == ("openai", "gpt-4o")
    assert reg.resolve("openai/gpt-4o", "openai", None) == ("openai", "gpt-4o")
    assert reg.resolve(None, "ollama", None) == ("ollama", "qwen2.5-coder:7b")
    assert reg.resolve("qwen2.5-coder:7b", None, None) == ("ollama", "qwen2.5-coder:7b")
    assert reg.resolve("gpt-5-mini", None, None) == ("openai", "gpt-5-mini")
    # Then the config's default model.
    assert reg.resolve(None, None, "ollama/qwen2.5-coder:7b") == ("ollama", "qwen2.5-coder:7b")
    # Then the first usable provider (anthropic has no key here) with its default model.
    assert reg.resolve(None, None, None) == ("openai", "gpt-5.4")
    # A model with a slash in its id, on a provider named explicitly.
    assert reg.resolve("Qwen/Qwen2.5-Coder-7B", "ollama", None) == (
        "ollama",
        "Qwen/Qwen2.5-Coder-7B",
    )


def test_resolve_errors_say_what_to_set() -> None:
    empty = ProviderRegistry({}, {})
    with pytest.raises(ProviderConfigError) as info:
        empty.resolve(None, None, None)
    assert info.value.code == "INVALID_REQUEST"
    assert "ANTHROPIC_API_KEY" in info.value.message
    assert "OPENAI_API_KEY" in info.value.message

    with pytest.raises(ProviderConfigError) as info:
        empty.resolve("anthropic/claude-sonnet-4-5", None, None)
    assert "provider 'anthropic' has no API key" in info.value.message
    assert "ANTHROPIC_API_KEY" in info.value.message

    with pytest.raises(ProviderConfigError) as info:
        empty.resolve("m", "mistery", None)
    assert "unknown provider 'mistery'" in info.value.message

    with pytest.raises(ProviderConfigError) as info:
        ProviderRegistry({}, {"ANTHROPIC_API_KEY": "k"}).resolve("llama-3-70b", None, None)
    assert "provider/model" in info.value.message

    with pytest.raises(ProviderConfigError) as info:
        ProviderRegistry({"openai": {"options": "nope"}}, {})
    assert "provider.openai.options" in info.value.message


def test_environment_beats_config_file() -> None:
    config = {"anthropic": {"options": {"apiKey": "from-file", "baseURL": "http://file"}}}
    both = ProviderRegistry(config, {"ANTHROPIC_API_KEY": "from-env"})
    assert both.specs["anthropic"].api_key == "from-env"
    assert both.specs["anthropic"].base_url == "http://file"
    file_only = ProviderRegistry(config, {})
    assert file_only.specs["anthropic"].api_key == "from-file"
    assert file_only.resolve(None, None, None) == ("anthropic", "claude-sonnet-5-5")


def test_listing_providers_and_models() -> None:
    reg = ProviderRegistry(
        {"ollama": {"options": {"baseURL": "http://x/v1"}, "models": {"qwen2.5-coder:7b": {}}}},
        {"ANTHROPIC_API_KEY": "k"},
    )
    providers = {p["id"]: p for p in reg.list_providers()}
    assert list(providers) == ["anthropic", "openai", "ollama"]
    assert providers["anthropic"]["name"] == "Anthropic"
    assert providers["anthropic"]["configured"] is True
    assert providers["openai"]["configured"] is False
    assert "claude-sonnet-4-5" in providers["anthropic"]["models"]
    assert "gpt-4o" in providers["openai"]["models"]
    assert providers["ollama"]["models"] == ["qwen2.5-coder:7b"]

    models = {(m["provider"], m["id"]): m for m in reg.list_models()}
    sonnet = models[("anthropic", "claude-sonnet-4-5")]
    assert sonnet["price"] == {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}
    assert sonnet["context"] == 200_000
    assert models[("anthropic", "claude-sonnet-5-5")]["context"] == 1_000_000
    assert models[("anthropic", "claude-haiku-5-5")]["price"] is None  # tiered, no list price
    qwen = models[("ollama", "qwen2.5-coder:7b")]
    assert qwen["price"] is None
    assert qwen["context"] is None


async def test_registry_builds_clients_lazily_and_streams(fake: FakeLLM) -> None:
    reg = ProviderRegistry(
        {
            "local": {"type": "openai-compatible", "options": {"baseURL": fake.openai_url}},
            "anthropic": {"options": {"baseURL": fake.url}},
        },
        {"ANTHROPIC_API_KEY": "sk-env"},
    )
    try:
        await reg.refresh_models()
        assert reg.resolve(None, "local", None) == ("local", "fake-model")
        local = reg.get("local")
        assert reg.get("local") is local
        events = await collect(local.stream(simple_request(model="fake-model")))
        assert events[-1] == Stop("end_turn")
        claude = reg.get("anthropic")
        events = await collect(claude.stream(simple_request()))
        assert events[0] == TextDelta("ok")
        assert api_key_sent(fake.requests[-1].headers) == "sk-env"
        with pytest.raises(ProviderConfigError):
            reg.get("openai")
    finally:
        await reg.aclose()


# ---- catalog -------------------------------------------------------------------------------


def test_catalog_cost_and_lookup() -> None:
    million_in = Usage(input_tokens=1_000_000)
    assert catalog.cost("claude-sonnet-4-5", million_in) == pytest.approx(3.0)
    assert catalog.cost("claude-sonnet-4-5-20250929", million_in) == pytest.approx(3.0)
    assert catalog.cost("claude-haiku-4-5-20990101", million_in) == pytest.approx(1.0)
    assert catalog.cost("gpt-4o-mini", Usage(output_tokens=1_000_000)) == pytest.approx(0.6)
    assert catalog.cost("gpt-4.1", Usage(cache_read_tokens=2_000_000)) == pytest.approx(1.0)
    # The spec's claude-3-5-sonnet is an alias the table does not price: cost 0.
    assert catalog.lookup("anthropic", "claude-3-5-sonnet") is None
    assert catalog.cost("claude-3-5-sonnet", million_in) == 0.0
    assert catalog.lookup("openai", "claude-sonnet-4-5") is None
    opus = catalog.lookup(None, "claude-opus-4-5")
    assert opus is not None and opus.provider == "anthropic"


# ---- import cost and the out-of-process fake -----------------------------------------------


def test_importing_providers_does_not_import_sdks() -> None:
    code = (
        "import sys, opencoded.providers, opencoded.providers.registry, "
        "opencoded.providers.retry, opencoded.providers.catalog\n"
        "print(sorted(m for m in ('anthropic', 'openai') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"


def test_fake_llm_as_a_subprocess() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.llm"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("fake-llm ready: http://127.0.0.1:")
        url = line.split()[-1]
        push = urllib.request.Request(
            f"{url}/_push",
            data=json.dumps({"text": ["from", " push"], "output_tokens": 9}).encode(),
            headers={"content-type": "application/json"},
        )
        with NO_PROXY.open(push, timeout=5) as answer:
            assert json.load(answer) == {"queued": 1}
        ask = urllib.request.Request(
            f"{url}/v1/messages",
            data=json.dumps({"model": "m", "max_tokens": 5, "messages": []}).encode(),
            headers={"content-type": "application/json"},
        )
        with NO_PROXY.open(ask, timeout=5) as answer:
            message = json.load(answer)
        assert message["content"] == [{"type": "text", "text": "from push"}]
        assert message["usage"]["output_tokens"] == 9
        with NO_PROXY.open(f"{url}/_requests", timeout=5) as answer:
            assert json.load(answer)["requests"][0]["path"] == "/v1/messages"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()

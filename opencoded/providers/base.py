"""The provider interface: what the agent loop needs from a language model service.

Providers translate one provider-neutral conversation into their wire protocol and
translate their stream back into the small set of events below. The agent loop knows
nothing else about them, so a new backend is one module implementing `Provider`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

import attrs

# ---- the conversation sent to a provider -------------------------------------------


@attrs.frozen
class TextBlock:
    text: str


@attrs.frozen
class ToolUseBlock:
    id: str
    name: str
    input: dict[str, Any]


@attrs.frozen
class ToolResultBlock:
    tool_use_id: str
    content: str
    is_error: bool = False
    # (media type, base64 data): images for models that take them (sent in this turn only;
    # the stored conversation keeps the text, which names them)
    images: tuple[tuple[str, str], ...] = ()


Block = TextBlock | ToolUseBlock | ToolResultBlock


@attrs.frozen
class ChatMessage:
    role: Literal["user", "assistant"]
    content: tuple[Block, ...]


@attrs.frozen
class ToolSpec:
    """A tool as the model sees it: JSON Schema for its input."""

    name: str
    description: str
    input_schema: dict[str, Any]


@attrs.frozen
class ChatRequest:
    model: str
    system: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int = 8192


# ---- what a provider streams back --------------------------------------------------


@attrs.frozen
class TextDelta:
    text: str


@attrs.frozen
class TextEnd:
    """The current text block is complete."""


# A model sometimes streams tool input that is not a JSON object. The turn should not fail for
# that: the provider emits ToolCall(input={INVALID_INPUT_KEY: raw_text}) and the tool runner
# answers with an error result quoting it, so the model can correct itself on the next step.
INVALID_INPUT_KEY = "_invalid_json"


@attrs.frozen
class ToolCall:
    """A whole tool call, emitted once its input JSON is complete.

    input is always a dict; see INVALID_INPUT_KEY for input that did not parse.
    """

    id: str
    name: str
    input: dict[str, Any]


@attrs.frozen
class Usage:
    """Token counts for one model step; providers emit exactly one, just before Stop.

    input_tokens excludes cached tokens (cache reads and writes are counted apart, as
    Anthropic reports them), so cost is a plain sum of count x price per kind.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@attrs.frozen
class Stop:
    """The model finished this step. reason: 'end_turn', 'tool_use', 'max_tokens', ..."""

    reason: str


StreamEvent = TextDelta | TextEnd | ToolCall | Usage | Stop


MAX_MESSAGE = 500


def clean_message(text: str) -> str:
    """Error text fit for an event: valid UTF-8 (no lone surrogates) and short.

    A provider's or SDK's error text can quote the request it failed on (a
    UnicodeEncodeError's repr holds the whole JSON body: prompt and history), and the
    error goes to every watcher and into the log; the text is cut to stay a message.
    """
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


class ProviderError(Exception):
    """A provider failure, already classified for the API.

    code is one of the contract's error codes: PROVIDER_ERROR, RATE_LIMITED, UNAUTHORIZED,
    INVALID_REQUEST. retryable says whether a retry could help (429, 5xx, dropped stream);
    the retry policy lives in one place (`providers.retry`), not in each provider.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "PROVIDER_ERROR",
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        overflow: bool = False,
        reason: str | None = None,
    ) -> None:
        message = clean_message(message)
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        # The request did not fit the model's context window: compacting the context
        # and sending again can help (agent.compaction), a plain retry cannot.
        self.overflow = overflow
        # A few words for a retry notice ("connection refused"); None: derived from status.
        self.reason = reason


class Provider(Protocol):
    """One configured provider (anthropic, openai, or an OpenAI-compatible server)."""

    id: str

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream one model step. Raises ProviderError. Cancellation closes the stream."""
        ...

    async def aclose(self) -> None: ...

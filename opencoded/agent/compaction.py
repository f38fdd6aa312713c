"""Context compaction: keep a long session inside its model's context window.

Stored messages are never rewritten. What the model sees is rebuilt each turn from:

    [the latest summary] + the stored messages after the last one it covers + this turn

The summary lives in the session's latest `compaction` event (`summary`, and `upto`: the
id of the last message it covers), so a restart loses nothing and clients see every
compaction in the log.

Before each step the turn estimates the request's size (characters / 4, scaled by what the
provider reported for the previous step). Past `agent.compactThreshold` of the window:

1. old tool outputs are elided (cheap; only in the request, never in storage) until the
   request is under TARGET of the window; the last step's outputs are kept;
2. if that is not enough, the history before the current turn is summarised by the model
   (one request without tools, over a plain-text transcript) and replaced by the summary.

A provider's context-overflow error does the same once, whatever the estimate said, and the
step is sent again (agent.turn). `POST /sessions/:id/compact` summarises on demand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import attrs

from ..providers.base import (
    ChatMessage,
    ChatRequest,
    Provider,
    ProviderError,
    TextBlock,
    TextDelta,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
)
from ..providers.retry import stream_with_retry
from ..records import Message
from .context import Converted, conversation, merge_roles

CHARS_PER_TOKEN = 4
TARGET = 0.5  # compaction aims at this share of the window (so it is not redone each step)
SHORT_OUTPUT = 400  # characters: tool outputs this short are never elided
TRANSCRIPT_CUT = 1500  # characters of one tool input or output in the summariser's transcript
SUMMARY_MAX_TOKENS = 4096
ELIDED = "[output elided to keep the context small ({n} characters); run the tool again if needed]"
SUMMARY_INTRO = (
    "The earlier part of this session was compacted to save context. A summary of it:\n\n"
)
SUMMARY_SYSTEM = (
    "You write the summary that replaces the earlier part of a coding session, so that the "
    "work can go on without it. Keep what is needed to continue: the user's goals and "
    "requests, decisions taken, files read or changed and how, commands run and their "
    "outcome, errors met, and what is left to do. Be concrete (names, paths, values); "
    "leave out pleasantries. Answer with the summary only."
)
SUMMARY_ASK = "Summarise the session transcript above, as instructed."


@attrs.frozen
class Limits:
    """The model's limits and the compaction settings for one session's turns."""

    context: int | None  # tokens; None: unknown (only an overflow error compacts)
    output: int | None
    threshold: float = 0.85
    auto: bool = True

    @property
    def trigger(self) -> int | None:
        return int(self.context * self.threshold) if self.context and self.auto else None


@attrs.define
class Context:
    """What a step sends: the summary, the stored history after it, the current turn."""

    summary: str | None = None
    upto: str | None = None  # id of the last stored message the summary covers
    earlier: list[ChatMessage] = attrs.Factory(list)
    earlier_last: str | None = None  # id of the last stored message in `earlier`
    current: list[ChatMessage] = attrs.Factory(list)
    elided_through: str | None = None  # every long tool output up to this call is elided

    def messages(self) -> tuple[ChatMessage, ...]:
        head: list[ChatMessage] = []
        if self.summary:
            head = [ChatMessage("user", (TextBlock(SUMMARY_INTRO + self.summary),))]
        return tuple(merge_roles([*head, *self.earlier, *self.current]))


def summary_state(event_data: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(summary, upto) from the latest `compaction` event's data."""
    if not event_data or not event_data.get("summary") or not event_data.get("upto"):
        return None, None
    return str(event_data["summary"]), str(event_data["upto"])


def build_context(
    history: Sequence[Message],
    current: Sequence[Message],
    latest: dict[str, Any] | None,
    converted: Converted | None = None,
) -> Context:
    """The context from stored messages: `history` (before the current turn), `current`
    (the current turn's stored messages) and the latest compaction event's data. A summary
    whose `upto` is not in `history` (reverted, or from a fork) is ignored."""
    summary, upto = summary_state(latest)
    ids = [m.id for m in history]
    start = 0
    if upto is not None and upto in ids:
        start = ids.index(upto) + 1
    else:
        summary = upto = None
    kept = list(history[start:])
    through = str(latest["elided_through"]) if latest and latest.get("elided_through") else None
    return Context(
        summary=summary,
        upto=upto,
        earlier=elide_through(conversation(kept, converted), through),
        earlier_last=history[-1].id if history else None,
        current=conversation(current),
        elided_through=through,
    )


# ---- estimating ------------------------------------------------------------------------


def _block_chars(block: Any) -> int:
    if isinstance(block, TextBlock):
        return len(block.text)
    if isinstance(block, ToolUseBlock):
        return len(block.name) + len(json.dumps(block.input)) + 20
    if isinstance(block, ToolResultBlock):
        return len(block.content) + 20 + 1500 * len(block.images)
    return 0


def raw_estimate(system: str, tools: Sequence[ToolSpec], messages: Sequence[ChatMessage]) -> int:
    """Tokens of a request, by characters (before calibration)."""
    chars = len(system)
    for tool in tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.input_schema))
    for message in messages:
        chars += 10 + sum(_block_chars(b) for b in message.content)
    return chars // CHARS_PER_TOKEN


# ---- eliding ---------------------------------------------------------------------------


def _long_output(block: Any) -> bool:
    return (
        isinstance(block, ToolResultBlock)
        and len(block.content) > SHORT_OUTPUT
        and not block.content.startswith(ELIDED[:20])
    )


def elide(
    messages: list[ChatMessage], excess: int, protect: int
) -> tuple[list[ChatMessage], int, str | None]:
    """Replace the oldest long tool outputs by a short note until about `excess` tokens
    are saved; the last `protect` messages are left alone.

    Returns (messages, how many were elided, the tool call id of the last one). Elision
    goes oldest first, so "every long output up to that call" says what was elided.
    """
    out = list(messages)
    saved = elided = 0
    last: str | None = None
    for i in range(max(0, len(out) - protect)):
        if saved >= excess:
            break
        message = out[i]
        blocks = list(message.content)
        changed = False
        for j, block in enumerate(blocks):
            if saved >= excess:
                break
            if _long_output(block):
                note = ELIDED.format(n=len(block.content))
                saved += (len(block.content) - len(note)) // CHARS_PER_TOKEN
                blocks[j] = ToolResultBlock(block.tool_use_id, note, block.is_error)
                elided += 1
                last = block.tool_use_id
                changed = True
        if changed:
            out[i] = ChatMessage(message.role, tuple(blocks))
    return out, elided, last


def elide_through(messages: list[ChatMessage], call_id: str | None) -> list[ChatMessage]:
    """Elide every long tool output up to and including the one of `call_id` (what an
    earlier compaction elided); nothing if that call is not among them."""
    if call_id is None or not any(
        isinstance(b, ToolResultBlock) and b.tool_use_id == call_id
        for m in messages
        for b in m.content
    ):
        return messages
    out: list[ChatMessage] = []
    done = False
    for message in messages:
        if done:
            out.append(message)
            continue
        blocks = []
        for block in message.content:
            if not done and _long_output(block):
                assert isinstance(block, ToolResultBlock)
                note = ELIDED.format(n=len(block.content))
                block = ToolResultBlock(block.tool_use_id, note, block.is_error)
            if isinstance(block, ToolResultBlock) and block.tool_use_id == call_id:
                done = True
            blocks.append(block)
        out.append(ChatMessage(message.role, tuple(blocks)))
    return out


# ---- summarising -----------------------------------------------------------------------


def _cut(text: str, limit: int = TRANSCRIPT_CUT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f" [... {len(text) - limit} more characters]"


def transcript(messages: Sequence[ChatMessage]) -> list[str]:
    """The conversation as plain-text lines (no tool blocks: any provider takes it)."""
    lines: list[str] = []
    for message in messages:
        who = "User" if message.role == "user" else "Assistant"
        for block in message.content:
            if isinstance(block, TextBlock) and block.text:
                lines.append(f"{who}: {block.text}")
            elif isinstance(block, ToolUseBlock):
                lines.append(f"Assistant called tool {block.name}: {_cut(json.dumps(block.input))}")
            elif isinstance(block, ToolResultBlock):
                kind = "error" if block.is_error else "result"
                lines.append(f"Tool {kind}: {_cut(block.content)}")
    return lines


def summary_request(
    model: str,
    previous: str | None,
    messages: Sequence[ChatMessage],
    budget: int,
    max_tokens: int = SUMMARY_MAX_TOKENS,
) -> ChatRequest:
    """The summariser's request; the transcript keeps its newest lines within `budget`
    tokens (the previous summary always goes in whole)."""
    lines = transcript(messages)
    room = budget * CHARS_PER_TOKEN - (len(previous) if previous else 0)
    kept: list[str] = []
    for line in reversed(lines):
        room -= len(line) + 1
        if room < 0:
            kept.append("[... the oldest part of the transcript is left out ...]")
            break
        kept.append(line)
    parts = []
    if previous:
        parts.append(f"Summary of what came before:\n{previous}\n")
    parts.append("Transcript:\n" + "\n".join(reversed(kept)))
    parts.append("\n" + SUMMARY_ASK)
    text = "\n".join(parts)
    return ChatRequest(
        model=model,
        system=SUMMARY_SYSTEM,
        messages=(ChatMessage("user", (TextBlock(text),)),),
        max_tokens=min(SUMMARY_MAX_TOKENS, max_tokens),
    )


async def summarise(provider: Provider, request: ChatRequest) -> tuple[str, list[Usage]]:
    """Run the summariser; its text and usage. ProviderError if it fails or says nothing."""
    pieces: list[str] = []
    usage: list[Usage] = []
    async for event in stream_with_retry(provider, request):
        if isinstance(event, TextDelta):
            pieces.append(event.text)
        elif isinstance(event, Usage):
            usage.append(event)
    text = "".join(pieces).strip()
    if not text:
        raise ProviderError("compaction failed: the model returned an empty summary")
    return text, usage


_REPORTED = (
    # Anthropic: "prompt is too long: 208310 tokens > 200000 maximum"
    re.compile(r"(\d+) tokens > (\d+)"),
    # OpenAI: "maximum context length is 128000 tokens. However, your messages resulted in
    # 130000 tokens"
    re.compile(r"context length is (\d+) tokens.*?resulted in (\d+) tokens", re.DOTALL),
)


def reported_sizes(message: str) -> tuple[int, int] | None:
    """(request tokens, window) as an overflow error states them, if it does."""
    found = _REPORTED[0].search(message)
    if found:
        return int(found.group(1)), int(found.group(2))
    found = _REPORTED[1].search(message)
    if found:
        return int(found.group(2)), int(found.group(1))
    return None


def summary_budget(limits: Limits) -> int:
    """Tokens of transcript the summariser may get."""
    if not limits.context:
        return 50_000
    output = min(SUMMARY_MAX_TOKENS, limits.output or SUMMARY_MAX_TOKENS)
    return max(1000, int(limits.context * 0.7) - output)

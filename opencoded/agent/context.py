"""The conversation a provider sees, rebuilt from stored messages.

Storage is the only source of truth for context: a turn starts from the stored messages
(or agent.history's copy of them, checked against storage), so a daemon restart (or a
crash) loses nothing that was stored. Stored assistant messages hold
one turn's steps as a flat list of parts; here they become the provider's alternating
assistant / user(tool results) messages again.

Rules that keep the result acceptable to every provider:
- every tool call gets a result (a call whose run never finished gets an error result);
- consecutive messages with the same role are merged (an aborted turn leaves two user
  messages in a row);
- empty messages are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..providers.base import Block, ChatMessage, TextBlock, ToolResultBlock, ToolUseBlock
from ..records import Message

# message id -> (the message it was converted from, its provider messages)
Converted = dict[str, tuple[Message, list[ChatMessage]]]

UNFINISHED_RESULT = "the tool did not finish: the turn was stopped before it returned"


def tool_result_block(part: dict[str, Any]) -> ToolResultBlock:
    output = part.get("output")
    if output is None:
        return ToolResultBlock(part["id"], UNFINISHED_RESULT, is_error=True)
    return ToolResultBlock(part["id"], str(output), is_error=bool(part.get("error")))


def assistant_messages(parts: Iterable[dict[str, Any]]) -> list[ChatMessage]:
    """One stored assistant message -> assistant / user(tool results) pairs, step by step.

    A text part after a tool part starts a new step: within one step providers send text
    before tool calls, and even when they do not, splitting there is still valid.
    """
    out: list[ChatMessage] = []
    content: list[Block] = []
    results: list[Block] = []

    def flush() -> None:
        if content:
            out.append(ChatMessage("assistant", tuple(content)))
        if results:
            out.append(ChatMessage("user", tuple(results)))
        content.clear()
        results.clear()

    for part in parts:
        kind = part.get("type")
        if kind == "text":
            if results:
                flush()
            if part.get("text"):
                content.append(TextBlock(part["text"]))
        elif kind == "tool":
            content.append(ToolUseBlock(part["id"], part["tool"], dict(part.get("args") or {})))
            results.append(tool_result_block(part))
    flush()
    return out


def user_message(parts: Iterable[dict[str, Any]]) -> list[ChatMessage]:
    blocks = tuple(TextBlock(p["text"]) for p in parts if p.get("type") == "text" and p["text"])
    return [ChatMessage("user", blocks)] if blocks else []


def merge_roles(messages: Iterable[ChatMessage]) -> list[ChatMessage]:
    merged: list[ChatMessage] = []
    for message in messages:
        if not message.content:
            continue
        if merged and merged[-1].role == message.role:
            merged[-1] = ChatMessage(message.role, merged[-1].content + message.content)
        else:
            merged.append(message)
    return merged


def conversation(
    messages: Iterable[Message], converted: Converted | None = None
) -> list[ChatMessage]:
    """The provider conversation for stored messages, oldest first. `converted` keeps
    each message's conversion for the next call (see agent.history)."""
    out: list[ChatMessage] = []
    for message in messages:
        hit = converted.get(message.id) if converted is not None else None
        if hit is not None and hit[0] is message:
            out += hit[1]
            continue
        if message.role == "user":
            chat = user_message(message.parts)
        else:
            chat = assistant_messages(message.parts)
        if converted is not None:
            converted[message.id] = (message, chat)
        out += chat
    # A conversation must start with the user; a leading assistant message (never written
    # by us, but a store could hold one) would be rejected.
    while out and out[0].role != "user":
        out.pop(0)
    return merge_roles(out)

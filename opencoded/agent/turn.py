"""One turn of the agent: the loop from a user message to the model's last word.

The turn is a task in its session's nursery, inside its own cancel scope (see
sessions.manager); nothing here knows about HTTP. It talks to the world through three
things only: the provider (a stream of neutral events), the tools (`run_tool`) and the
session's event log plus the store. Every event is appended to the log, which stores it
before any watcher sees it.

Loop: send the conversation -> stream `text-delta`s, a `message` when a text block ends
and a `tool` per requested call -> when the step ends, run the calls in order (asking
permission where needed; `tool-result` each) -> feed the results back -> repeat until the
model stops calling tools or `agent.maxSteps` steps were taken.

Whatever happens (success, provider failure, a bug, abort), the turn ends with exactly one
`complete` event, written in a shielded scope, and the Turn record carries the final status.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from ..daemon import Daemon
from ..providers import catalog
from ..providers.base import (
    INVALID_INPUT_KEY,
    ChatMessage,
    ChatRequest,
    ProviderError,
    Stop,
    TextBlock,
    TextDelta,
    TextEnd,
    ToolCall,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
)
from ..providers.retry import stream_with_retry
from ..records import Message, PermissionRequest, Session, Turn, new_id, now
from ..sessions import RunningTurn, SessionRuntime
from ..tools import TOOLS, ToolContext, ToolOutput, run_tool, tool_specs
from .context import conversation
from .permissions import Waiter, agent_state, decide
from .prompt import system_prompt

log = logging.getLogger(__name__)

FINALISE_TIMEOUT = 5.0
FIRST_OUT_WAIT = 0.05  # at most this long for the first token's commit (see _first_out)

REJECTED = (
    "The user refused permission to run this {tool} call. Do not try it again in another "
    "way; ask the user how they want to proceed."
)
DENIED = (
    "Running {tool} is denied by the permission settings of this session (permission "
    '"deny"); it was not run. Do without it or ask the user to change the setting.'
)
STEP_LIMIT = "Not run: the turn reached its step limit (agent.maxSteps = {limit})."
BAD_INPUT = "Your input for {tool} was not a JSON object, so the tool was not run: {raw}"


@attrs.define
class TurnPlan:
    """What submit_message decided before the turn started."""

    session: Session
    provider_id: str
    model: str
    project_root: Path
    history: list[Message]  # the stored conversation, this turn's user message last
    recorded: Callable[[], Awaitable[None]]  # the user message and Turn record stored


@attrs.define
class Totals:
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    def add(self, usage: Usage, cost: float) -> None:
        self.input_tokens += usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        self.output_tokens += usage.output_tokens
        self.cost += cost


@functools.cache
def _tools() -> tuple[ToolSpec, ...]:
    """The tools offered to the model (fixed for the life of the process)."""
    return tuple(ToolSpec(n, d, s) for n, d, s in tool_specs())


class StepLimitReached(Exception):
    """The model still wanted tools after agent.maxSteps steps."""


class AgentTurn:
    """The state of one running turn; `run()` is the task body."""

    def __init__(
        self, daemon: Daemon, runtime: SessionRuntime, turn: RunningTurn, plan: TurnPlan
    ) -> None:
        self.daemon = daemon
        self.store = daemon.store
        self.log = runtime.log
        self.turn = turn
        self.plan = plan
        self.session_id = runtime.id
        self.permission = dict(plan.session.permission)
        self.parts: list[dict[str, Any]] = []
        self.text_part: dict[str, Any] | None = None
        self.totals = Totals()
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.message_created = now()
        self.recorded = False
        self.first_out = False
        root = Path(plan.session.directory).resolve()
        self.tool_ctx = ToolContext(root=root, bash_timeout=daemon.config.agent.bash_timeout)
        self.tools = _tools()
        spec = daemon.providers.specs.get(plan.provider_id)
        kind = spec.kind if spec is not None else "openai-compatible"
        self.price_provider = kind if kind != "openai-compatible" else None

    # ---- the task body -----------------------------------------------------------------

    async def run(self) -> None:
        status: str | None = None
        try:
            try:
                await self._loop()
                if not self.recorded:  # a step that streamed no event at all
                    await self._await_recorded()
                status = "completed"
            except StepLimitReached:
                limit = self.daemon.config.agent.max_steps
                self._error("MAX_STEPS", f"stopped after {limit} steps (config agent.maxSteps)")
                status = "error"
            except ProviderError as err:
                self._error(err.code, err.message)
                status = "error"
            except Exception as exc:
                log.exception("turn %s failed", self.turn.id)
                self._error("INTERNAL_ERROR", f"the turn failed: {type(exc).__name__}: {exc}")
                status = "error"
        finally:
            # Reached with status None only by cancellation (abort, shutdown) or another
            # BaseException; it propagates after the turn is recorded.
            await self._finalise(status or "aborted")

    async def _loop(self) -> None:
        messages = conversation(m for m in self.plan.history if m.id != self.turn.message_id)
        system = system_prompt(self.tool_ctx.root, self.plan.project_root)
        provider = self.daemon.providers.get(self.plan.provider_id)
        max_steps = max(1, self.daemon.config.agent.max_steps)
        for step in range(max_steps):
            request = ChatRequest(
                model=self.plan.model,
                system=system,
                messages=tuple(messages),
                tools=self.tools,
                max_tokens=self.daemon.config.agent.max_tokens,
            )
            text, calls = await self._step(provider, request)
            if not calls:
                return
            content = [TextBlock(t) for t in text if t]
            content += [ToolUseBlock(c.id, c.name, c.input) for c in calls]
            messages.append(ChatMessage("assistant", tuple(content)))
            if step == max_steps - 1:
                for call in calls:
                    await self._finish_tool(
                        call, ToolOutput(STEP_LIMIT.format(limit=max_steps), True), "skipped"
                    )
                raise StepLimitReached()
            results = [await self._run_call(call) for call in calls]
            messages.append(ChatMessage("user", tuple(results)))

    # ---- one model step ----------------------------------------------------------------

    async def _step(self, provider: Any, request: ChatRequest) -> tuple[list[str], list[ToolCall]]:
        """Stream one step; returns its text blocks and tool calls."""
        texts: list[str] = []
        calls: list[ToolCall] = []
        stream = stream_with_retry(provider, request)
        try:
            async for event in stream:
                if not self.recorded:
                    await self._await_recorded()
                if isinstance(event, TextDelta):
                    seq = self._text_delta(event.text)
                    if not self.first_out:
                        await self._first_out(seq)
                elif isinstance(event, TextEnd):
                    texts += await self._text_end()
                elif isinstance(event, ToolCall):
                    texts += await self._text_end()
                    calls.append(event)
                    await self._tool_requested(event)
                elif isinstance(event, Usage):
                    cost = catalog.cost(self.plan.model, event, self.price_provider)
                    self.totals.add(event, cost)
                elif isinstance(event, Stop):
                    pass
        finally:
            await stream.aclose()
        texts += await self._text_end()
        return texts, calls

    def _text_delta(self, text: str) -> int:
        if self.text_part is None:
            self.text_part = {"type": "text", "text": ""}
            self.parts.append(self.text_part)
        self.text_part["text"] += text
        return self.log.append("text-delta", {"message_id": self.turn.message_id, "text": text}).seq

    async def _first_out(self, seq: int) -> None:
        """Let the turn's first token reach the followers before reading on.

        The provider's stream usually arrives many events per read, and folding them
        never yields to the scheduler: without this pause the first token waits while
        the whole buffered chunk is parsed and appended, and the writer thread waits for
        the GIL meanwhile. Waiting for one commit costs the turn well under a
        millisecond, once.
        """
        self.first_out = True
        with trio.move_on_after(FIRST_OUT_WAIT):
            await self.log.wait_committed(seq)

    async def _text_end(self) -> list[str]:
        """Close the open text block: one `message` event with the whole block."""
        part, self.text_part = self.text_part, None
        if part is None:
            return []
        content = part["text"]
        self.log.append(
            "message", {"id": self.turn.message_id, "role": "assistant", "content": content}
        )
        await self._save()
        return [content]

    # ---- tools -------------------------------------------------------------------------

    async def _tool_requested(self, call: ToolCall) -> None:
        part = {
            "type": "tool",
            "id": call.id,
            "tool": call.name,
            "args": call.input,
            "output": None,
            "error": None,
            "status": "pending",
        }
        self.parts.append(part)
        self.log.append("tool", {"id": call.id, "tool": call.name, "args": call.input})
        await self._save()

    def _part(self, call_id: str) -> dict[str, Any]:
        for part in reversed(self.parts):
            if part.get("type") == "tool" and part["id"] == call_id:
                return part
        raise KeyError(call_id)

    async def _run_call(self, call: ToolCall) -> ToolResultBlock:
        part = self._part(call.id)
        if INVALID_INPUT_KEY in call.input:
            raw = str(call.input[INVALID_INPUT_KEY])[:2000]
            output = ToolOutput(BAD_INPUT.format(tool=call.name, raw=raw), error=True)
            return await self._finish_tool(call, output, "error")
        if call.name in TOOLS:
            action = decide(call.name, self.permission, self.daemon.config)
            if action == "deny":
                output = ToolOutput(DENIED.format(tool=call.name), error=True)
                return await self._finish_tool(call, output, "denied")
            if action == "ask" and await self._ask(call) == "reject":
                output = ToolOutput(REJECTED.format(tool=call.name), error=True)
                return await self._finish_tool(call, output, "rejected")
        part["status"] = "running"
        await self._save()
        output = await run_tool(call.name, call.input, self.tool_ctx)
        return await self._finish_tool(call, output, "error" if output.error else "completed")

    async def _finish_tool(
        self, call: ToolCall, output: ToolOutput, status: str
    ) -> ToolResultBlock:
        part = self._part(call.id)
        part.update(output=output.output, error=output.error, status=status)
        self.log.append(
            "tool-result",
            {"id": call.id, "tool": call.name, "output": output.output, "error": output.error},
        )
        await self._save()
        return ToolResultBlock(call.id, output.output, is_error=output.error)

    async def _ask(self, call: ToolCall) -> str:
        """Ask the user; returns once, always or reject. Cancellable (abort)."""
        state = agent_state(self.daemon)
        request = PermissionRequest(
            id=new_id("perm"),
            session_id=self.session_id,
            turn_id=self.turn.id,
            tool=call.name,
            args=call.input,
            status="pending",
            created=now(),
        )
        waiter = Waiter(request.id, self.session_id, call.name)
        state.waiters[request.id] = waiter
        part = self._part(call.id)
        part["status"] = "waiting"
        try:
            await self.store.save_permission(request)
            self.log.append("permission", {"id": request.id, "tool": call.name, "args": call.input})
            await self._save()
            await waiter.answered.wait()
        finally:
            state.waiters.pop(request.id, None)
        response = waiter.response or "reject"
        if response == "always":
            self.permission[call.name] = "allow"  # answer_permission stored it for the session
        return response

    # ---- storage -----------------------------------------------------------------------

    async def _await_recorded(self) -> None:
        """Wait for the user message and Turn record submit_message queued (long done by
        the first provider event); a failed write fails the turn (StoreError)."""
        try:
            await self.plan.recorded()
        finally:
            self.recorded = True  # once: a failure is reported by the first caller only

    def _message(self) -> Message:
        return Message(
            id=self.turn.message_id,
            session_id=self.session_id,
            turn_id=self.turn.id,
            role="assistant",
            parts=copy.deepcopy(self.parts),  # serialised later, in the writer thread
            created=self.message_created,
        )

    async def _save(self) -> None:
        await self.store.save_message(self._message())

    def _error(self, code: str, message: str) -> None:
        self.log.append("error", {"code": code, "message": message})

    async def _finalise(self, status: str) -> None:
        """Record the end and write `complete`, even while being cancelled.

        A storage failure here is logged, not raised: the `complete` event must still be
        appended, since followers (the NDJSON stream) wait for it.
        """
        with trio.move_on_after(FINALISE_TIMEOUT) as scope:
            scope.shield = True
            try:
                await self._record_end(status)
            except Exception:
                log.exception("turn %s: could not record its end", self.turn.id)
        if scope.cancelled_caught:
            log.error("turn %s: recording its end took over %ss", self.turn.id, FINALISE_TIMEOUT)
        # Outside that scope: a slow store must not cost the followers their `complete`.
        data = self._complete_data(status)
        event = self.log.append("complete", data)
        log.info(  # the operator's line per turn (provider HTTP requests log at DEBUG)
            "turn %s in %s: %s, %d tokens, %.1f s",
            self.turn.id, self.session_id, status, data["tokens"], data["duration_ms"] / 1000,
        )  # fmt: skip
        with trio.move_on_after(FINALISE_TIMEOUT) as scope:
            scope.shield = True
            await self.log.wait_committed(event.seq)

    async def _record_end(self, status: str) -> None:
        for part in self.parts:
            if part.get("type") == "tool" and part.get("output") is None:
                part["status"] = "aborted" if status == "aborted" else "error"
        if self.parts:
            await self._save()
        await self.store.expire_permissions([self.turn.id])
        await self.store.save_turn(
            Turn(
                id=self.turn.id,
                session_id=self.session_id,
                message_id=self.turn.message_id,
                status=status,  # type: ignore[arg-type]
                started=self.started,
                ended=time.time(),
                input_tokens=self.totals.input_tokens,
                output_tokens=self.totals.output_tokens,
                cost=self.totals.cost,
            )
        )

    def _complete_data(self, status: str) -> dict[str, Any]:
        totals = self.totals
        return {
            "message_id": self.turn.message_id,
            "turn_id": self.turn.id,
            "status": status,
            "tokens": totals.input_tokens + totals.output_tokens,
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "cost": round(totals.cost, 8),
            "duration_ms": int((time.monotonic() - self.started_mono) * 1000),
        }

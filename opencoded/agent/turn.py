"""One turn of the agent: the loop from a user message to the model's last word.

The turn is a task in its session's nursery, inside its own cancel scope (see
sessions.manager); nothing here knows about HTTP. It talks to the world through three
things only: the provider (a stream of neutral events), the tools (`toolbox`) and the
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
    ToolUseBlock,
    Usage,
)
from ..providers.retry import stream_with_retry
from ..records import Event, Message, PermissionRequest, Session, Turn, new_id, now
from ..sessions import RunningTurn, SessionRuntime
from ..storage import StoreError
from ..storage.store import PendingWrite
from ..tools import ToolContext, ToolOutput
from ..tools.sandbox import jail_for
from . import toolbox
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
        self.lost_at_start = runtime.log.lost
        self.runtime = runtime
        self.tool_ctx: ToolContext  # set by _prepare, inside run()'s error handling
        spec = daemon.providers.specs.get(plan.provider_id)
        kind = spec.kind if spec is not None else "openai-compatible"
        self.price_provider = kind if kind != "openai-compatible" else None

    # ---- the task body -----------------------------------------------------------------

    async def run(self) -> None:
        status: str | None = None
        error: tuple[str, str] | None = None
        try:
            try:
                await self._loop()
                if not self.recorded:  # a step that streamed no event at all
                    await self._await_recorded()
                status = "completed"
            except StepLimitReached:
                limit = self.daemon.config.agent.max_steps
                error = ("MAX_STEPS", f"stopped after {limit} steps (config agent.maxSteps)")
            except ProviderError as err:
                error = (err.code, err.message)
            except StoreError as exc:
                log.error("turn %s: storage failed: %s", self.turn.id, exc)
                error = ("STORAGE_ERROR", f"the daemon could not store this turn: {exc}")
            except Exception as exc:
                log.exception("turn %s failed", self.turn.id)
                error = ("INTERNAL_ERROR", f"the turn failed: {type(exc).__name__}: {exc}")
        finally:
            # Reached with neither status nor error only by cancellation (abort,
            # shutdown) or another BaseException; it propagates after the turn is recorded.
            final = status or ("error" if error else "aborted")
            await self._finalise(final, error)

    def _prepare(self) -> str:
        """The tool context and the system prompt. Blocking (it resolves the session
        directory and reads AGENTS.md files): run in a worker thread."""
        root = Path(self.plan.session.directory).resolve()
        self.tool_ctx = toolbox.tool_context(
            self.daemon,
            self.log,
            self.session_id,
            root=root,
            bash_timeout=self.daemon.config.agent.bash_timeout,
            jail=jail_for(self.daemon.config, self.daemon.endpoints.unix),
        )
        return system_prompt(root, self.plan.project_root)

    async def _loop(self) -> None:
        messages = conversation(m for m in self.plan.history if m.id != self.turn.message_id)
        system = await trio.to_thread.run_sync(self._prepare, abandon_on_cancel=True)
        provider = self.daemon.providers.get(self.plan.provider_id)
        max_steps = max(1, self.daemon.config.agent.max_steps)
        for step in range(max_steps):
            request = ChatRequest(
                model=self.plan.model,
                system=system,
                messages=tuple(messages),
                tools=await toolbox.offered(self.daemon),
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
                    seq = await self._text_delta(event.text)
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

    async def _text_delta(self, text: str) -> int:
        if self.text_part is None:
            self.text_part = {"type": "text", "text": ""}
            self.parts.append(self.text_part)
        self.text_part["text"] += text
        return (
            await self._append("text-delta", {"message_id": self.turn.message_id, "text": text})
        ).seq

    async def _append(self, type: str, data: dict[str, Any]) -> Event:
        """Append to the log; StoreError once any event of this turn could not be stored
        (a turn whose events are being lost stops rather than talk on unheard)."""
        if self.log.lost > self.lost_at_start:
            raise StoreError("events of this turn could not be stored")
        return await self.log.append(type, data)

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
        await self._append(
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
        await self._append("tool", {"id": call.id, "tool": call.name, "args": call.input})
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
        if toolbox.known(self.daemon, call.name):
            action = decide(call.name, self.permission, self.daemon.config)
            if action == "deny":
                output = ToolOutput(DENIED.format(tool=call.name), error=True)
                return await self._finish_tool(call, output, "denied")
            if action == "ask" and await self._ask(call) == "reject":
                output = ToolOutput(REJECTED.format(tool=call.name), error=True)
                return await self._finish_tool(call, output, "rejected")
        part["status"] = "running"
        await self._save()
        output = await toolbox.run(self.daemon, call.name, call.input, self.tool_ctx)
        return await self._finish_tool(call, output, "error" if output.error else "completed")

    async def _finish_tool(
        self, call: ToolCall, output: ToolOutput, status: str
    ) -> ToolResultBlock:
        part = self._part(call.id)
        part.update(output=output.output, error=output.error, status=status)
        await self._append(
            "tool-result",
            {"id": call.id, "tool": call.name, "output": output.output, "error": output.error},
        )
        await self._save()
        return ToolResultBlock(call.id, output.output, output.error, output.images)

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
            await self._append(
                "permission", {"id": request.id, "tool": call.name, "args": call.input}
            )
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

    async def _finalise(self, status: str, error: tuple[str, str] | None) -> None:
        """Record the end: the Turn record, the message, `error` and `complete`, stored in
        one transaction, even while being cancelled (shielded, bounded; a shutdown out of
        time cancels `final_scope`).

        If it cannot be stored (disk full), the turn's own stream still gets its `error`
        and `complete`, and the session keeps the end to store before its next turn, so
        `complete` stays the last event of this turn in the log.
        """
        for part in self.parts:
            if part.get("type") == "tool" and part.get("output") is None:
                part["status"] = "aborted" if status == "aborted" else "error"
        events = []
        if error is not None:
            events.append(self.log.reserve("error", {"code": error[0], "message": error[1]}))
        data = self._complete_data(status)
        events.append(self.log.reserve("complete", data))
        log.info(  # the operator's line per turn (provider HTTP requests log at DEBUG)
            "turn %s in %s: %s, %d tokens, %.1f s",
            self.turn.id, self.session_id, status, data["tokens"], data["duration_ms"] / 1000,
        )  # fmt: skip
        record = self._turn_record(status)
        message = self._message() if self.parts else None
        callbacks = [self.log.callbacks] * len(events)
        queued: list[PendingWrite] = []  # the one CloseTurn job, once queued

        async def store_end() -> None:
            try:
                await self.plan.recorded()
            except StoreError:
                # The turn was never stored (its client got a 503): nothing to close.
                for event in events:
                    self.log.callbacks[1](event)  # settled, so nobody waits for them
                return
            # Queued once and waited on again by a later caller (the next submit): a job
            # still in flight when the wait timed out will commit, and queueing it twice
            # would store its events twice. Only a failed job is queued anew.
            if not queued or queued[-1].failed:
                queued.append(await self.store.queue_close_turn(record, events, message, callbacks))
            await queued[-1].wait()

        with trio.CancelScope(shield=True) as scope:
            self.turn.final_scope = scope
            scope.deadline = trio.current_time() + FINALISE_TIMEOUT
            if self.turn.out_of_time:
                scope.cancel()  # the shutdown's budget is spent: recovery closes this turn
            try:
                await store_end()
                return
            except StoreError as exc:
                log.error("turn %s: could not record its end: %s", self.turn.id, exc)
        if scope.cancelled_caught:
            log.error("turn %s: its end could not be recorded in time", self.turn.id)
        self.turn.unrecorded = events
        self.runtime.pending_end = store_end

    def _turn_record(self, status: str) -> Turn:
        return Turn(
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

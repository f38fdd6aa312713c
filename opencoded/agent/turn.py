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
from ..providers.retry import Retrying, public_url, short_reason, stream_with_retry
from ..records import Event, Message, PermissionRequest, Session, Turn, new_id, now
from ..sessions import RunningTurn, SessionRuntime
from ..storage import StoreError
from ..storage.store import PendingWrite
from ..tools import ToolContext, ToolOutput
from ..tools.base import ToolError
from ..tools.sandbox import jail_for
from . import changes, compaction, history, titles, toolbox
from .context import Converted
from .latest import empty_log, forget, remember
from .latest import latest as cached_event
from .permissions import Waiter, agent_state, decide
from .prompt import system_prompt

log = logging.getLogger(__name__)

FINALISE_TIMEOUT = 5.0
SLICE = 0.0005  # at most this long between checkpoints while a step streams (see _step)
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
    converted: Converted = attrs.Factory(dict)  # the history's conversion (agent.history)
    start_seq: int = 0  # the session's last event seq before this turn (0: none yet)


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
        self.meter = daemon.metrics.turn(plan.provider_id)
        self.message_created = now()
        self.recorded = False
        self.first_out = False
        self.yield_at = 0.0  # perf_counter time of the next checkpoint while streaming
        self.lost_at_start = runtime.log.lost
        self.runtime = runtime
        self.tool_ctx: ToolContext  # set by _prepare, inside run()'s error handling
        spec = daemon.providers.specs.get(plan.provider_id)
        kind = spec.kind if spec is not None else "openai-compatible"
        self.price_provider = kind if kind != "openai-compatible" else None
        context, output = daemon.providers.limits(plan.provider_id, plan.model)
        agent = daemon.config.agent
        self.limits = compaction.Limits(
            context, output, agent.compact_threshold, agent.auto_compact
        )
        self.ctx = compaction.Context()
        self.scale = 1.0  # provider's tokens / our estimate, learnt from each step's usage
        self.step_usage: Usage | None = None
        self.context_tokens = 0
        self.usage_base: dict[str, Any] | None = None  # the session's totals before this turn

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
        if status == "completed":  # after `complete`, apart from the turn (config titles)
            plan = self.plan
            titles.start_after_first_turn(
                self.daemon, plan.session, plan.provider_id, plan.model, plan.history
            )

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
        system = await self._set_up()
        self._warm_up_snapshot()
        provider = await self.daemon.providers.load(self.plan.provider_id)
        max_steps = max(1, self.daemon.config.agent.max_steps)
        for step in range(max_steps):
            tools = await toolbox.offered(self.daemon)
            text, calls = await self._fitted_step(provider, system, tools)
            if not calls:
                return
            content = [TextBlock(t) for t in text if t]
            content += [ToolUseBlock(c.id, c.name, c.input) for c in calls]
            self.ctx.current.append(ChatMessage("assistant", tuple(content)))
            if step == max_steps - 1:
                for call in calls:
                    await self._finish_tool(
                        call, ToolOutput(STEP_LIMIT.format(limit=max_steps), True), "skipped"
                    )
                raise StepLimitReached()
            with self.meter.outside():
                results = [await self._run_call(call) for call in calls]
            self.ctx.current.append(ChatMessage("user", tuple(results)))

    async def _set_up(self) -> str:
        """The system prompt (in a worker thread) while the context loads. A failure of
        either is raised as itself, not as a group (run() tells errors apart by type)."""
        system = ""
        failed: list[Exception] = []

        async def prepare() -> None:
            nonlocal system
            try:
                system = await trio.to_thread.run_sync(self._prepare, abandon_on_cancel=True)
            except Exception as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(prepare)
            try:
                await self._load_context()
            except Exception as exc:
                failed.insert(0, exc)
        if failed:
            raise failed[0]
        return system

    # ---- context and compaction (agent.compaction) -------------------------------------

    async def _load_context(self) -> None:
        from .undo import revert_state  # (undo imports session_ops, which imports us)

        if self.plan.start_seq == 0:
            empty_log(self.daemon, self.session_id)  # nothing to read back
        reverted, _ = await revert_state(self.daemon, self.session_id)
        messages = [
            m for m in self.plan.history if m.id != self.turn.message_id and m.id not in reverted
        ]
        current = [m for m in messages if m.turn_id == self.turn.id]
        earlier = [m for m in messages if m.turn_id != self.turn.id]
        latest = await cached_event(self.daemon, self.session_id, "compaction")
        self.ctx = compaction.build_context(
            earlier, current, latest.data if latest else None, self.plan.converted
        )
        self.usage_base = await usage_base(self.daemon, self.session_id, latest)

    def _request(self, system: str, tools: tuple[Any, ...]) -> ChatRequest:
        max_tokens = self.daemon.config.agent.max_tokens
        if self.limits.output:
            max_tokens = min(max_tokens, self.limits.output)
        return ChatRequest(
            model=self.plan.model,
            system=system,
            messages=self.ctx.messages(),
            tools=tools,
            max_tokens=max_tokens,
        )

    def _estimate(self, system: str, tools: tuple[Any, ...]) -> int:
        return int(compaction.raw_estimate(system, tools, self.ctx.messages()) * self.scale)

    async def _fitted_step(
        self, provider: Any, system: str, tools: tuple[Any, ...]
    ) -> tuple[list[str], list[ToolCall]]:
        """One step, compacted first if it would pass the threshold; a context-overflow
        error compacts once and sends the step again."""
        trigger = self.limits.trigger
        if trigger is not None and self._estimate(system, tools) > trigger:
            await self._compact(provider, system, tools, "auto")
        request = self._request(system, tools)
        try:
            return await self._measured_step(provider, request)
        except ProviderError as err:
            if not err.overflow:
                raise
            log.info("turn %s: context overflow, compacting: %s", self.turn.id, err.message)
            self._learn_from_overflow(err.message, system, tools)
            if not await self._compact(provider, system, tools, "overflow"):
                raise
        return await self._measured_step(provider, self._request(system, tools))

    async def _measured_step(
        self, provider: Any, request: ChatRequest
    ) -> tuple[list[str], list[ToolCall]]:
        self.step_usage = None
        result = await self._step(provider, request)
        usage = self.step_usage
        if usage is not None:
            actual = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
            raw = compaction.raw_estimate(request.system, request.tools, request.messages)
            if actual > 0:
                self.context_tokens = actual
                if raw > 0:
                    self.scale = min(4.0, max(0.5, actual / raw))
        return result

    def _learn_from_overflow(self, message: str, system: str, tools: tuple[Any, ...]) -> None:
        """Calibrate from the sizes the provider's error states (and the window, when
        the catalog did not know it); else assume our estimate was a third short."""
        raw = compaction.raw_estimate(system, tools, self.ctx.messages())
        sizes = compaction.reported_sizes(message)
        if sizes is not None and raw > 0:
            actual, window = sizes
            self.scale = min(4.0, max(0.5, actual / raw))
            if self.limits.context is None or window < self.limits.context:
                self.limits = attrs.evolve(self.limits, context=window)
        else:
            self.scale *= 1.5
        if self.limits.context is None:
            self.limits = attrs.evolve(self.limits, context=max(1, int(raw * self.scale)))

    async def _compact(
        self, provider: Any, system: str, tools: tuple[Any, ...], reason: str
    ) -> bool:
        """Elide old tool outputs, then summarise the history before this turn if that
        was not enough; append a `compaction` event. False if nothing could be done."""
        ctx, limits = self.ctx, self.limits
        before = self._estimate(system, tools)
        window = limits.context or before
        target = int(window * compaction.TARGET)
        trigger = int(window * limits.threshold)
        original = list(ctx.earlier)

        def excess() -> int:
            return max(0, int((self._estimate(system, tools) - target) / self.scale))

        ctx.earlier, elided, last = compaction.elide(ctx.earlier, excess(), 0)
        if excess():
            ctx.current, more, last_current = compaction.elide(ctx.current, excess(), 2)
            elided, last = elided + more, last_current or last
        if last is not None:
            ctx.elided_through = last
        after = self._estimate(system, tools)
        must = after > trigger or (reason != "auto" and after > target)
        summarised = False
        if must and original:
            with self.meter.outside():
                await self._summarise(provider, original)
            summarised = True
            after = self._estimate(system, tools)
        if not (elided or summarised):
            return False
        if not self.recorded:
            await self._await_recorded()
        event = await self._append(
            "compaction",
            {
                "tokens_before": before,
                "tokens_after": after,
                "reason": reason,
                "elided": elided,
                "summarised": summarised,
                "summary": ctx.summary,
                "upto": ctx.upto,
                "elided_through": ctx.elided_through,
            },
        )
        remember(self.daemon, event)
        return True

    async def _summarise(self, provider: Any, earlier: list[ChatMessage]) -> None:
        request = compaction.summary_request(
            self.plan.model,
            self.ctx.summary,
            earlier,
            # The budget is in tokens as estimated; the provider may count more per char.
            int(compaction.summary_budget(self.limits) / max(1.0, self.scale)),
            self.limits.output or compaction.SUMMARY_MAX_TOKENS,
        )
        text, usage = await compaction.summarise(provider, request)
        for item in usage:
            self.totals.add(item, catalog.cost(self.plan.model, item, self.price_provider))
        self.ctx.summary = text
        self.ctx.upto = self.ctx.earlier_last
        self.ctx.earlier = []

    # ---- one model step ----------------------------------------------------------------

    async def _step(self, provider: Any, request: ChatRequest) -> tuple[list[str], list[ToolCall]]:
        """Stream one step; returns its text blocks and tool calls."""
        texts: list[str] = []
        calls: list[ToolCall] = []
        stream = stream_with_retry(provider, request, on_retry=self._retrying, meter=self.meter)
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
                    self.step_usage = event
                    cost = catalog.cost(self.plan.model, event, self.price_provider)
                    self.totals.add(event, cost)
                elif isinstance(event, Stop):
                    pass
                if time.perf_counter() >= self.yield_at:
                    # A burst already read (one network read can hold hundreds of
                    # deltas) is parsed without a checkpoint: let the followers write
                    # what is committed, and other sessions run, every SLICE.
                    await trio.lowlevel.checkpoint()
                    self.yield_at = time.perf_counter() + SLICE
        finally:
            await stream.aclose()
        texts += await self._text_end()
        return texts, calls

    async def _retrying(self, retry: Retrying) -> None:
        """A `retry` event: the step failed before any output and is sent again after
        `delay_ms`, so clients can say so rather than sit silent through the backoff."""
        if not self.recorded:
            await self._await_recorded()
        spec = self.daemon.providers.specs.get(self.plan.provider_id)
        data = {
            "attempt": retry.attempt,
            "max_attempts": retry.max_attempts,
            "delay_ms": int(retry.delay * 1000),
            "reason": short_reason(retry.error),
            "provider": self.plan.provider_id,
            "url": public_url(spec.base_url if spec is not None else None),
        }
        await self._append("retry", data)

    async def _text_delta(self, text: str) -> int:
        if self.text_part is None:
            self.text_part = {"type": "text", "text": ""}
            self.parts.append(self.text_part)
        self.text_part["text"] += text
        data = {"message_id": self.turn.message_id, "text": text}
        return (await self._append("text-delta", data, merge=True)).seq

    async def _append(self, type: str, data: dict[str, Any], merge: bool = False) -> Event:
        """Append to the log (`merge`: a text delta, see EventLog.append_text); StoreError
        once any event of this turn could not be stored (a turn whose events are being
        lost stops rather than talk on unheard)."""
        if self.log.lost > self.lost_at_start:
            raise StoreError("events of this turn could not be stored")
        if merge:
            return await self.log.append_text(type, data)
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
        self.meter.first_token()
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
        output = await self._run_recorded(call, part)
        return await self._finish_tool(call, output, "error" if output.error else "completed")

    # ---- recording file changes (agent.changes) ----------------------------------------

    async def _run_recorded(self, call: ToolCall, part: dict[str, Any]) -> ToolOutput:
        """Run the call; for write, edit and bash, what it changed in the session
        directory goes into the tool part's `changes` (even when the call is aborted)."""
        if call.name not in changes.TRACKED_TOOLS or self.daemon.mcp.find(call.name):
            return await toolbox.run(self.daemon, call.name, call.input, self.tool_ctx)
        tracker = self._tracker()
        only = changes.targets(call.name, call.input, tracker.root)
        before = await self._snapshot(tracker, only)
        try:
            return await toolbox.run(self.daemon, call.name, call.input, self.tool_ctx)
        finally:
            if before is not None:
                with trio.CancelScope(shield=True):
                    after = await self._snapshot(tracker, only)
                if after is not None:
                    found = changes.compare(before, after)
                    if found:
                        part["changes"] = found

    def _warm_up_snapshot(self) -> None:
        """A directory's first snapshot reads every file: take it in the background while
        the model thinks, so the first bash call only stats (it fills a cache, nothing
        more; a bash call meanwhile snapshots for itself)."""
        if decide("bash", self.permission, self.daemon.config) == "deny":
            return
        tracker = self._tracker()
        if tracker.index or tracker.warming:
            return
        tracker.warming = True

        async def warm() -> None:
            try:
                # Abandoned at shutdown: it only fills a cache.
                await trio.to_thread.run_sync(tracker.snapshot, abandon_on_cancel=True)
            except Exception as exc:  # a system task must not raise: it would end the daemon
                log.warning("snapshot warm-up of %s failed: %s", tracker.root, exc)
            finally:
                tracker.warming = False

        # Not the turn's task: an abort must not wait for it, and it outlives the turn.
        trio.lowlevel.spawn_system_task(warm)

    def _tracker(self) -> changes.Tracker:
        """The session directory's snapshot index, shared by its sessions (a few kept)."""
        trackers = agent_state(self.daemon).trackers
        root = self.tool_ctx.root
        tracker = trackers.pop(root, None)
        if tracker is None:
            blobs = changes.Blobs(self.daemon.config.data_path / "changes")
            tracker = changes.Tracker(root, blobs)
        trackers[root] = tracker  # most recently used last
        while len(trackers) > changes.TRACKERS_KEPT:
            trackers.pop(next(iter(trackers)))
        return tracker

    async def _snapshot(
        self, tracker: changes.Tracker, only: list[list[str]] | None
    ) -> dict[str, str] | None:
        try:
            return await trio.to_thread.run_sync(tracker.snapshot, only)
        except (OSError, ToolError) as exc:
            log.warning("turn %s: could not snapshot %s: %s", self.turn.id, tracker.root, exc)
            return None

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
        self.meter.ended(status)
        events.append(self.log.reserve("complete", data))
        remember(self.daemon, events[-1])  # stored now, or before the next turn starts
        log.info(  # the operator's line per turn (provider HTTP requests log at DEBUG)
            "turn %s in %s: %s, %d tokens, %.1f s",
            self.turn.id, self.session_id, status, data["tokens"], data["duration_ms"] / 1000,
        )  # fmt: skip
        record = self._turn_record(status)
        message = self._message() if self.parts else None
        callbacks = [self.log.callbacks] * len(events)
        queued: list[PendingWrite] = []  # the one CloseTurn job, once queued

        async def store_end() -> bool:
            """Store the end; False if the turn itself was never stored."""
            try:
                await self.plan.recorded()
            except StoreError:
                # The turn was never stored (its client got a 503): nothing to close.
                for event in events:
                    self.log.callbacks[1](event)  # settled, so nobody waits for them
                forget(self.daemon, self.session_id)  # its `complete` was remembered above
                return False
            # Queued once and waited on again by a later caller (the next submit): a job
            # still in flight when the wait timed out will commit, and queueing it twice
            # would store its events twice. Only a failed job is queued anew.
            if not queued or queued[-1].failed:
                queued.append(await self.store.queue_close_turn(record, events, message, callbacks))
            await queued[-1].wait()
            return True

        with trio.CancelScope(shield=True) as scope:
            self.turn.final_scope = scope
            scope.deadline = trio.current_time() + FINALISE_TIMEOUT
            if self.turn.out_of_time:
                scope.cancel()  # the shutdown's budget is spent: recovery closes this turn
            try:
                if await store_end():
                    stored = [*self.plan.history, *([message] if message is not None else [])]
                    history.keep(self.daemon, self.session_id, stored, self.plan.converted)
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

    def _usage_data(self) -> dict[str, Any]:
        """The session's token accounting after this turn (`complete`'s `session`)."""
        base = self.usage_base or {}
        return session_usage(
            base,
            self.context_tokens or int(base.get("context_tokens") or 0),
            self.totals.input_tokens,
            self.totals.output_tokens,
            self.totals.cost,
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
            "context_tokens": self.context_tokens,
            "session": self._usage_data(),
        }


async def usage_base(daemon: Daemon, session_id: str, compaction: Event | None) -> dict[str, Any]:
    """The session's totals so far: the `session` field of its last `complete`, or of its
    last on-demand `compaction` when that came later (it spent tokens too)."""
    complete = await cached_event(daemon, session_id, "complete")
    latest = max(
        (
            e
            for e in (complete, compaction)
            if e is not None and isinstance(e.data.get("session"), dict)
        ),
        key=lambda e: e.seq,
        default=None,
    )
    return dict(latest.data["session"]) if latest is not None else {}


def session_usage(
    base: dict[str, Any], context: int, input_tokens: int, output_tokens: int, cost: float
) -> dict[str, Any]:
    """Cumulative totals: `base` (the session's totals so far) plus one turn's."""
    return {
        "context_tokens": context,
        "input_tokens": int(base.get("input_tokens") or 0) + input_tokens,
        "output_tokens": int(base.get("output_tokens") or 0) + output_tokens,
        "cost": round(float(base.get("cost") or 0.0) + cost, 8),
        "turns": int(base.get("turns") or 0) + 1,
    }

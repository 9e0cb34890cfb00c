"""The agent loop: stream the model, run its tool calls, feed the results back, repeat.

Read top to bottom: `serve` turns ops into turns; `turn` runs iterations
until a terminal reason; each iteration is one model call plus its tools and
ends with a typed `ContinueReason` that is emitted and recorded. The history
is linear (`Context`); every tool call goes through the `Orchestrator`; the
transcript is flushed to disk before every model call (`Rollout`).

Interrupts use trio cancel scopes: an `Interrupt` op cancels the running
turn (the model stream and any tool processes, which the sandbox kills as a
tree) and every tool call that had started gets a synthetic result, so the
history stays valid for the next model call and for `stockade resume`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from agent.context import CONTINUE_PROMPT, Context
from agent.items import Item, ToolCall, ToolResult, UserMessage
from agent.models.base import (
    Completed,
    ContextOverflowError,
    ModelClient,
    ModelError,
    ModelRequest,
    ReasoningDelta,
    Retrying,
    TextDelta,
    ToolSpec,
    Usage,
)
from agent.orchestrator import Orchestrator, TurnAborted
from agent.protocol import (
    AgentMessage,
    ApprovalDecision,
    Compacted,
    ContinueReason,
    Event,
    Interrupt,
    IterationEnded,
    MessageDelta,
    Op,
    Shutdown,
    StreamRetry,
    TerminalReason,
    TokenCount,
    ToolCallEnd,
    TurnCompleted,
    TurnStarted,
    UserInput,
    Warning,
)
from agent.protocol import ReasoningDelta as ReasoningEvent
from agent.rollout import Rollout

MAX_OUTPUT_RECOVERIES = 3
MAX_STOP_BLOCKS = 3  # times a failing stop check may send the model back to work in one turn
# Asked when the model is about to finish: None lets it, a text sends it back to work with that text.
StopCheck = Callable[[], Awaitable[str | None]]
INTERRUPTED_RESULT = "interrupted by the user before this tool call finished; it may have run partially"
TIME_LIMIT_RESULT = ("stopped: the session's wall-time limit (--max-time) was reached before this tool call "
                     "finished; it may have run partially")


@dataclass
class Limits:
    max_turns: int = 50  # model calls per user turn
    wall_time: float | None = None  # seconds for the whole session (stockade exec)
    token_budget: int | None = None  # input + output tokens for the whole session


class Agent:
    def __init__(
        self,
        model: ModelClient,
        orchestrator: Orchestrator,
        context: Context,
        system: str,
        emit: Callable[[Event], None],
        *,
        tools: Sequence[ToolSpec] = (),
        limits: Limits | None = None,
        rollout: Rollout | None = None,
        max_output_tokens: int | None = None,
        session_id: str = "",
        stop_check: StopCheck | None = None,
    ) -> None:
        self.model, self.orchestrator, self.context, self.system = model, orchestrator, context, system
        self.emit = emit
        self.tools = tuple(tools)
        self.limits = limits or Limits()
        self.rollout = rollout
        self.max_output_tokens = max_output_tokens
        self.session_id = session_id
        self.stop_check = stop_check
        self.usage = Usage()
        self.turns = 0
        self.started = time.monotonic()
        self._steering: list[str] = []
        self._inbox_send, self._inbox = trio.open_memory_channel[str | None](100)
        self._turn_scope: trio.CancelScope | None = None
        self._wall_scope: trio.CancelScope | None = None
        self._iteration = 0

    # -- the session: ops in, turns out -----------------------------------------------------------------

    async def serve(self, ops: trio.MemoryReceiveChannel[Op]) -> None:
        """Run turns for `UserInput` ops until `Shutdown` (or the ops channel closes)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_ops, ops)
            async for text in self._inbox:
                if text is None:
                    break
                await self.turn(text)
            nursery.cancel_scope.cancel()

    async def _read_ops(self, ops: trio.MemoryReceiveChannel[Op]) -> None:
        async for op in ops:
            if isinstance(op, UserInput):
                if self._turn_scope is not None:
                    self._steering.append(op.text)  # injected before the next model call
                else:
                    await self._inbox_send.send(op.text)
            elif isinstance(op, Interrupt):
                self.interrupt()
            elif isinstance(op, ApprovalDecision):
                self.orchestrator.decide(op.call_id, op.decision)
            elif isinstance(op, Shutdown):
                if op.graceful:
                    await self._inbox_send.send(None)  # after the queued input; the running turn finishes
                    return
                break
        self.interrupt()
        await self._inbox_send.send(None)

    def interrupt(self) -> None:
        """Cancel the running turn, if any (the session lives on)."""
        if self._turn_scope is not None:
            self._turn_scope.cancel()

    # -- one turn -------------------------------------------------------------------------------------

    async def turn(self, text: str | None) -> TurnCompleted:
        """Run until a terminal reason. `text` None continues the history as it is (resume)."""
        self.turns += 1
        self.emit(TurnStarted(turn=self.turns))
        if self.rollout:
            self.rollout.turn_context(turn=self.turns, cwd=self.orchestrator.workspace,
                                      policy=self.orchestrator.policy.mode.value,
                                      approval=self.orchestrator.approval, provider=self.model.provider,
                                      model=self.model.model)
        if text is not None:
            self._record(UserMessage(text=text))
        result: TurnCompleted | None = None
        # self.started is time.monotonic(); trio's clock has its own origin: convert through what is left.
        left = self.limits.wall_time - (time.monotonic() - self.started) if self.limits.wall_time else math.inf
        deadline = trio.current_time() + left
        with trio.CancelScope() as scope, trio.move_on_at(deadline) as wall:
            self._turn_scope, self._wall_scope = scope, wall
            try:
                result = await self._iterate()
            except TurnAborted:
                scope.cancel()
        self._turn_scope = None
        if result is None:  # cancelled: by the user, by shutdown, or by the wall-time limit
            self.close_open_calls()
            reason = TerminalReason.BUDGET_EXHAUSTED if wall.cancelled_caught else TerminalReason.INTERRUPTED
            result = TurnCompleted(turn=self.turns, reason=reason, iterations=self._iteration,
                                   error="wall-time limit reached" if wall.cancelled_caught else None)
        self._steering_to_history()  # steering that arrived too late for this turn is not lost
        if self.rollout:
            self.rollout.event(result.model_dump(mode="json"))
            self.rollout.flush()
        self.emit(result)
        return result

    async def _iterate(self) -> TurnCompleted:
        self._iteration = 0
        recoveries = blocks = 0
        compacted_for_overflow = False
        while True:
            if self._iteration >= self.limits.max_turns:
                return self._end(TerminalReason.MAX_TURNS, error=f"stopped after {self._iteration} model calls")
            spent = self.usage.input_tokens + self.usage.output_tokens
            if self.limits.token_budget and spent >= self.limits.token_budget:
                return self._end(TerminalReason.BUDGET_EXHAUSTED, error=f"token budget spent ({spent} tokens)")
            self._steering_to_history()
            if self.context.near_full():
                await self._compact()
            if self.rollout:
                self.rollout.flush()  # transcript-first: nothing before this model call can be lost
            try:
                completed = await self._sample()
            except ContextOverflowError as exc:
                if compacted_for_overflow:
                    return self._end(TerminalReason.PROMPT_TOO_LONG, error=str(exc))
                compacted_for_overflow = True
                await self._compact()
                self._next(ContinueReason.REACTIVE_COMPACT_RETRY)
                continue
            except ModelError as exc:
                return self._end(TerminalReason.MODEL_ERROR, error=str(exc))
            self._iteration += 1
            message = completed.message
            self._record(message)
            if self.rollout:
                self.rollout.flush()  # the calls are on disk before they run: resume sees what was started
            self._count(completed.usage)
            if message.text:
                self.emit(AgentMessage(text=message.text))
            if message.tool_calls:
                await self._run_tools(message.tool_calls)
                self._next(ContinueReason.TOOL_USE)
            elif completed.stop_reason == "max_tokens" and recoveries < MAX_OUTPUT_RECOVERIES:
                recoveries += 1
                self._record(UserMessage(text=CONTINUE_PROMPT))
                self._next(ContinueReason.MAX_OUTPUT_RECOVERY)
            elif self._steering:
                self._next(ContinueReason.USER_STEERING)
            elif self.stop_check is not None and blocks < MAX_STOP_BLOCKS and \
                    (objection := await self.stop_check()) is not None:
                blocks += 1
                self._record(UserMessage(text=objection))
                self._next(ContinueReason.STOP_HOOK_BLOCKING)
            else:
                if self.stop_check is not None and blocks >= MAX_STOP_BLOCKS:
                    self.emit(Warning(message=f"the stop check sent the model back {blocks} times; it was not "
                                              "run again, the turn ends as the model wants"))
                return self._end(TerminalReason.COMPLETED, last=message.text)

    def _next(self, reason: ContinueReason) -> None:
        self.emit(IterationEnded(turn=self.turns, iteration=self._iteration, reason=reason))
        if self.rollout:
            self.rollout.event({"type": "iteration_ended", "turn": self.turns, "iteration": self._iteration,
                                "reason": reason.value})

    def _end(self, reason: TerminalReason, last: str = "", error: str | None = None) -> TurnCompleted:
        return TurnCompleted(turn=self.turns, reason=reason, last_message=last, iterations=self._iteration,
                             error=error)

    # -- the model ------------------------------------------------------------------------------------

    async def _sample(self) -> Completed:
        request = ModelRequest(self.system, tuple(self.context.items), self.tools, self.max_output_tokens)
        async for event in self.model.stream(request):
            if isinstance(event, TextDelta):
                self.emit(MessageDelta(text=event.text))
            elif isinstance(event, ReasoningDelta):
                self.emit(ReasoningEvent(text=event.text))
            elif isinstance(event, Retrying):
                self.emit(StreamRetry(attempt=event.attempt, max_attempts=event.max_attempts, delay=event.delay,
                                      reason=event.reason))
            elif isinstance(event, Completed):
                return event
        raise ModelError("stream", "the model stream ended without a final response")

    def _count(self, usage: Usage) -> None:
        self.usage.add(usage)
        self.context.reported_input_tokens = usage.input_tokens
        self.emit(TokenCount(input_tokens=self.usage.input_tokens, output_tokens=self.usage.output_tokens,
                             total_tokens=self.usage.input_tokens + self.usage.output_tokens))

    async def _compact(self) -> None:
        """Replace the history by the model's own handoff summary (dropping the oldest items if even that overflows)."""
        drop = 0
        while True:
            # The tools stay declared (providers reject tool calls in a history without them); the
            # prompt asks for text only, and only the text is kept.
            request = ModelRequest(self.system, tuple(self.context.compaction_source(drop)), self.tools,
                                   self.max_output_tokens)
            try:
                completed = None
                async for event in self.model.stream(request):
                    if isinstance(event, Completed):
                        completed = event
                if completed is None:
                    raise ModelError("stream", "compaction stream ended without a response")
                break
            except ContextOverflowError:
                if drop >= len(self.context.items):
                    raise
                drop = max(1, drop * 2)
        self._count(completed.usage)
        before, after = self.context.apply_compaction(completed.message.text or "(empty summary)")
        if self.rollout:
            self.rollout.compacted(self.context.items)
        self.emit(Compacted(items_before=before, items_after=after))

    # -- tools ----------------------------------------------------------------------------------------

    async def _run_tools(self, calls: list[ToolCall]) -> None:
        """Run the calls (consecutive read-only ones in parallel); record results in call order."""
        results: list[ToolResult | None] = [None] * len(calls)

        async def one(index: int) -> None:
            results[index] = await self.orchestrator.run(calls[index])

        try:
            index = 0
            while index < len(calls):
                if self.orchestrator.is_read_only(calls[index]):
                    end = index
                    while end < len(calls) and self.orchestrator.is_read_only(calls[end]):
                        end += 1
                    async with trio.open_nursery() as nursery:
                        for i in range(index, end):
                            nursery.start_soon(one, i)
                    index = end
                else:
                    await one(index)
                    index += 1
        finally:  # also when cancelled: every call gets a result, in order
            for call, result in zip(calls, results, strict=True):
                if result is None:
                    why = TIME_LIMIT_RESULT if self._wall_scope and self._wall_scope.cancel_called else \
                        INTERRUPTED_RESULT
                    result = ToolResult(call_id=call.id, name=call.name, output=why, is_error=True)
                    self.emit(ToolCallEnd(call_id=call.id, name=call.name, output=result.output, is_error=True))
                self._record(result)

    def close_open_calls(self) -> None:
        """Give every unanswered tool call of the history a synthetic result (interrupted, or killed)."""
        for result in self.context.close_open_calls(INTERRUPTED_RESULT):
            if self.rollout:
                self.rollout.item(result)

    # -- history --------------------------------------------------------------------------------------

    def _record(self, item: Item) -> None:
        self.context.add(item)
        if self.rollout:
            self.rollout.item(item)

    def _steering_to_history(self) -> None:
        while self._steering:
            self._record(UserMessage(text=self._steering.pop(0)))


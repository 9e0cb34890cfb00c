#!/usr/bin/env python3
"""Agent harness overhead per turn, and event throughput from the loop to a consumer.

    python bench/loop.py [--turns 2000] [--events 200000]

1. Overhead per turn: an instant in-process scripted model that calls a
   trivial tool (no process, no sandbox) every iteration. The full loop
   (Agent + Orchestrator: argument validation, events, history, transcript
   written to disk before each model call) against a bare loop in the same
   run that streams the same model and calls the same tool function
   directly. Overhead = (loop - bare) per iteration; target < 1 ms.
2. Event throughput: `MessageDelta` events emitted through the agent's
   EventSink to a consumer task that reads them all, against a raw trio
   memory channel carrying plain tuples. Target > 100k events/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any, ClassVar

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trio

from agent.context import Context
from agent.items import ToolResult, UserMessage
from agent.loop import Agent, Limits
from agent.models.base import Completed, ModelRequest, Usage
from agent.models.scripted import ScriptedModel, ScriptedReply, tool_call
from agent.orchestrator import Orchestrator
from agent.protocol import MessageDelta
from agent.rollout import Rollout, SessionMeta, new_session_id
from agent.runner import EventSink
from agent.tools.base import Tool, ToolArgs, ToolContext, ToolOutput
from policies.model import SandboxPolicy


class NoopArgs(ToolArgs):
    value: int = 0


class Noop(Tool):
    name = "noop"
    description = "does nothing"
    Args: ClassVar[type[ToolArgs]] = NoopArgs

    async def run(self, ctx: ToolContext, args: Any) -> ToolOutput:
        return ToolOutput("ok")


def script(turns: int) -> ScriptedModel:
    usage = Usage(input_tokens=100, output_tokens=10)  # fixed: the model's own cost stays O(1) per call

    def reply(request: ModelRequest) -> ScriptedReply:
        if len(request.items) >= 2 * turns:
            return ScriptedReply(text="done", usage=usage)
        return ScriptedReply(text="step", tool_calls=[tool_call("noop", '{"value": 1}')], usage=usage)
    return ScriptedModel(reply)


async def harness(turns: int, with_rollout: bool) -> tuple[float, int]:
    model = script(turns)
    sink = EventSink()
    policy = SandboxPolicy(workspace=tempfile.gettempdir())
    orch = Orchestrator(None, policy, [Noop()], "never", emit=sink.aemit, emit_nowait=sink)
    rollout = Rollout.create(SessionMeta(new_session_id(), policy.workspace, "scripted", "m", "bench", "never")) \
        if with_rollout else None
    agent = Agent(model, orch, Context(), "system", sink, tools=[Noop().spec()], limits=Limits(max_turns=turns + 10),
                  rollout=rollout)
    consumed = 0

    async def consume() -> None:
        nonlocal consumed
        async for _ in sink.events():
            consumed += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        t0 = time.perf_counter()
        result = await agent.turn("go")
        elapsed = time.perf_counter() - t0
        sink.send.close()
    if rollout:
        rollout.close()
    assert result.reason == "completed", result
    return elapsed, result.iterations


async def bare(turns: int) -> tuple[float, int]:
    """The same model and tool without the harness: the floor the loop is compared to."""
    model = script(turns)
    tool = Noop()
    items: list[Any] = [UserMessage(text="go")]
    iterations = 0
    t0 = time.perf_counter()
    while True:
        completed = None
        async for event in model.stream(ModelRequest("system", tuple(items))):
            if isinstance(event, Completed):
                completed = event
        assert completed is not None
        iterations += 1
        items.append(completed.message)
        if not completed.message.tool_calls:
            break
        for call in completed.message.tool_calls:
            out = await tool.run(None, NoopArgs.model_validate_json(call.arguments))  # type: ignore[arg-type]
            items.append(ToolResult(call_id=call.id, name=call.name, output=out.text))
    return time.perf_counter() - t0, iterations


async def events_through_sink(n: int, batched: bool = True) -> float:
    sink = EventSink()
    got = 0

    async def consume() -> None:
        nonlocal got
        async for _ in sink.events() if batched else sink.receive:
            got += 1

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        for i in range(n):
            sink(MessageDelta(text="tok"))
            if i % 256 == 0:
                await trio.lowlevel.checkpoint()  # the loop yields like this between stream chunks
        sink.send.close()
    assert got == n
    return n / (time.perf_counter() - t0)


async def events_raw(n: int) -> float:
    send, receive = trio.open_memory_channel[Any](float("inf"))
    got = 0

    async def consume() -> None:
        nonlocal got
        async for _ in receive:
            got += 1

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        for i in range(n):
            send.send_nowait(("message_delta", "tok"))
            if i % 256 == 0:
                await trio.lowlevel.checkpoint()
        send.close()
    assert got == n
    return n / (time.perf_counter() - t0)


async def main_async(args: argparse.Namespace) -> None:
    state = tempfile.mkdtemp(prefix="stockade-bench-state-")
    os.environ["XDG_STATE_HOME"] = state
    try:
        await harness(50, True)  # warm up imports and caches
        await bare(50)
        base_s, base_n = min([await bare(args.turns) for _ in range(3)])
        loop_s, loop_n = min([await harness(args.turns, False) for _ in range(3)])
        roll_s, roll_n = min([await harness(args.turns, True) for _ in range(3)])
    finally:
        shutil.rmtree(state, ignore_errors=True)
    per = {name: s / n * 1000 for name, (s, n) in
           {"bare": (base_s, base_n), "loop": (loop_s, loop_n), "loop+rollout": (roll_s, roll_n)}.items()}
    print(f"harness overhead per turn ({args.turns} iterations, instant scripted model, no-op tool; best of 3):")
    print(f"  bare loop (model + tool only): {per['bare']:.3f} ms/turn")
    print(f"  agent loop, no transcript:     {per['loop']:.3f} ms/turn  ({per['loop'] / per['bare']:.1f}x bare; "
          f"overhead {per['loop'] - per['bare']:.3f} ms)")
    print(f"  agent loop + transcript:       {per['loop+rollout']:.3f} ms/turn  "
          f"(overhead {per['loop+rollout'] - per['bare']:.3f} ms; target < 1 ms)")
    raw = max([await events_raw(args.events) for _ in range(3)])
    naive = max([await events_through_sink(args.events, batched=False) for _ in range(3)])
    sink = max([await events_through_sink(args.events) for _ in range(3)])
    print(f"event throughput to a consumer ({args.events} events, best of 3):")
    print(f"  raw trio channel, tuples, one await per event:   {raw:,.0f} events/s")
    print(f"  EventSink, pydantic events, one await per event: {naive:,.0f} events/s  ({naive / raw:.2f}x raw)")
    print(f"  EventSink.events() (drains what is buffered):    {sink:,.0f} events/s  ({sink / raw:.2f}x raw; "
          "target > 100,000)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=2000)
    ap.add_argument("--events", type=int, default=200_000)
    trio.run(main_async, ap.parse_args())


if __name__ == "__main__":
    main()

"""The stop hook (`--stop-check`): the agent may only finish once a check passes in the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from fake_servers import FakeModelServer, Reply, ToolCallSpec

from agent.models.chat import ChatCompletionsClient
from agent.models.retry import RetryPolicy
from agent.protocol import TerminalReason
from agent.runner import AgentSettings, EventSink, open_agent
from policies.model import SandboxPolicy

STOCKADE = [sys.executable, "-c", "from agent.cli import main; main()"]


def shell(cmd: str) -> ToolCallSpec:
    return ToolCallSpec("shell", {"command": ["sh", "-c", cmd]})


async def _turn(ws: Path, script: list[Any], check: str) -> tuple[Any, list[Any], FakeModelServer]:
    settings = AgentSettings(policy=SandboxPolicy(workspace=str(ws)), approval="never",
                             stop_check=["sh", "-c", check])
    events: list[Any] = []
    with FakeModelServer("chat", script) as server:
        sink = EventSink()
        client = ChatCompletionsClient(model="m", base_url=server.base_url, api_key="k",
                                       policy=RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.05))
        async with open_agent(settings, client, sink) as agent:
            result = await agent.turn("make the check pass")
        while True:
            try:
                events.append(sink.receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
    return result, events, server


async def test_a_failing_check_sends_the_model_back_until_it_passes(ws: Path) -> None:
    script = [Reply(text="All done."),  # too early: done.txt does not exist yet
              Reply(tool_calls=[shell("echo ok > done.txt")]),
              Reply(text="Now really done.")]
    result, events, server = await _turn(ws, script, "test -f done.txt || { echo 'done.txt is missing'; exit 1; }")
    assert result.reason is TerminalReason.COMPLETED and result.last_message == "Now really done."
    fed_back = str(server.requests[1]["messages"][-1])
    assert "<stop_check>" in fed_back and "done.txt is missing" in fed_back and "exit 1" in fed_back
    reasons = [e.reason for e in events if e.type == "iteration_ended"]
    assert reasons.count("stop_hook_blocking") == 1
    assert any(e.type == "warning" and "passed" in e.message for e in events)
    assert (ws / "done.txt").read_text() == "ok\n"


async def test_the_check_runs_confined(ws: Path) -> None:
    outside = ws.parent / "victim.txt"
    outside.write_text("safe\n")
    result, _, _ = await _turn(ws, [Reply(text="done"), Reply(text="done"), Reply(text="done"),
                                    Reply(text="done")], f"echo pwned > {outside}")
    assert result.reason is TerminalReason.COMPLETED
    assert outside.read_text() == "safe\n"


async def test_a_check_that_never_passes_blocks_three_times_then_lets_go(ws: Path) -> None:
    script = [Reply(text=f"done {i}") for i in range(5)]
    result, events, server = await _turn(ws, script, "exit 3")
    assert result.reason is TerminalReason.COMPLETED and result.last_message == "done 3"
    assert len(server.requests) == 4
    assert [e.reason for e in events if e.type == "iteration_ended"].count("stop_hook_blocking") == 3
    assert any(e.type == "warning" and "not run again" in e.message for e in events)


def test_exec_stop_check_flag(ws: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    script = [Reply(text="done"), Reply(tool_calls=[shell("touch ok")]), Reply(text="done now")]
    with FakeModelServer("chat", script) as server:
        flags = ["--provider", "openai-chat", "--base-url", server.base_url, "--model", "m"]
        proc = subprocess.run([*STOCKADE, "exec", *flags, "--stop-check", "test -f ok", "go"], cwd=ws,
                              capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done now\n" and "stop check `test -f ok` failed" in proc.stderr
    proc = subprocess.run([*STOCKADE, "exec", *flags, "--stop-check", " ", "go"], cwd=ws, capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "--stop-check" in proc.stderr and "Traceback" not in proc.stderr

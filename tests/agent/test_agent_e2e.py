"""The agent end to end: a scripted model on a real HTTP+SSE server, real confined commands.

Every effect is judged from the host side (files on disk, processes alive)
and from what reached the model (the request bodies the fake server got).
Workspaces live under /srv: the sandbox's /tmp is private.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
from fake_servers import ContextOverflow, FakeModelServer, Reply, ToolCallSpec

from agent.loop import Agent, Limits
from agent.models.anthropic import AnthropicClient
from agent.models.chat import ChatCompletionsClient
from agent.models.responses import ResponsesClient
from agent.models.retry import RetryPolicy
from agent.protocol import (
    ApprovalDecision,
    ApprovalRequest,
    Event,
    Interrupt,
    IterationEnded,
    Shutdown,
    TerminalReason,
    ToolCallBegin,
    ToolCallEnd,
    TurnCompleted,
    UserInput,
)
from agent.rollout import find_session, load
from agent.runner import AgentSettings, EventSink, open_agent
from policies.model import Mode, SandboxPolicy

BASE = Path("/srv/stockade-agent-test")
FAST = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05, idle_timeout=5.0, connect_timeout=5.0)
CLIENTS = {"chat": ChatCompletionsClient, "responses": ResponsesClient, "anthropic": AnthropicClient}


@dataclass
class Box:
    ws: Path
    outside: Path
    secret: Path  # on the policy's deny-read list

    def policy(self, mode: Mode = Mode.WORKSPACE_WRITE) -> SandboxPolicy:
        base = SandboxPolicy()
        return SandboxPolicy(mode=mode, workspace=str(self.ws), deny_read=(*base.deny_read, str(self.secret.parent)))


@pytest.fixture
def box() -> Iterator[Box]:
    BASE.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="agent-", dir=BASE))
    ws, outside = root / "ws", root / "outside"
    (ws / ".git").mkdir(parents=True)
    (ws / ".git" / "config").write_text("[core]\n")
    outside.mkdir()
    (outside / "victim.txt").write_text("victim\n")
    (ws / "app.py").write_text("def add(a, b):\n    return a - b\n")
    secret = root / "secrets" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("TOPSECRET-" + uuid.uuid4().hex)
    try:
        yield Box(ws, outside, secret)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):
            BASE.rmdir()  # only when no other run is using it


def client_for(provider: str, server: FakeModelServer) -> Any:
    return CLIENTS[provider](model="fake-model", base_url=server.base_url, api_key="sk-test", policy=FAST)


@asynccontextmanager
async def running(provider: str, script: list[Any], box: Box, *, approval: str = "never",
                  mode: Mode = Mode.WORKSPACE_WRITE, limits: Limits | None = None,
                  ) -> AsyncIterator[tuple[Agent, EventSink, FakeModelServer, list[Event]]]:
    policy = box.policy(mode)
    settings = AgentSettings(policy=policy, approval=approval, limits=limits or Limits(max_turns=10))
    with FakeModelServer(provider, script) as server:  # type: ignore[arg-type]
        sink = EventSink()
        events: list[Event] = []
        async with open_agent(settings, client_for(provider, server), sink) as agent:
            yield agent, sink, server, events
        while True:
            try:
                events.append(sink.receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break


def drain(sink: EventSink, events: list[Event]) -> list[Event]:
    while True:
        try:
            events.append(sink.receive.receive_nowait())
        except trio.WouldBlock:
            return events


def tool_results(request: dict[str, Any]) -> list[str]:
    """Every tool result text in a request body, whatever the provider's format."""
    out: list[str] = []
    for msg in request.get("messages", []):
        if msg.get("role") == "tool":
            out.append(str(msg.get("content")))
        content = msg.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    c = block.get("content")
                    out.append(c if isinstance(c, str) else json.dumps(c))
    for item in request.get("input", []) if isinstance(request.get("input"), list) else []:
        if item.get("type") == "function_call_output":
            out.append(str(item.get("output")))
    return out


def shell(cmd: str, **extra: Any) -> ToolCallSpec:
    return ToolCallSpec("shell", {"command": ["sh", "-c", cmd], **extra})


@pytest.mark.parametrize("provider", ["chat", "responses", "anthropic"])
async def test_write_inside_workspace_succeeds(provider: str, box: Box) -> None:
    script = [Reply(text="Writing.", tool_calls=[shell("echo made-by-agent > inside.txt && cat inside.txt")]),
              Reply(text="Done: wrote inside.txt")]
    async with running(provider, script, box) as (agent, _sink, server, _events):
        result = await agent.turn("write a file")
    assert result.reason is TerminalReason.COMPLETED
    assert result.last_message == "Done: wrote inside.txt"
    assert (box.ws / "inside.txt").read_text() == "made-by-agent\n"
    results = tool_results(server.requests[1])
    assert len(results) == 1 and "Exit code: 0" in results[0] and "made-by-agent" in results[0]


@pytest.mark.parametrize("provider", ["chat", "anthropic"])
async def test_write_outside_is_denied_and_the_model_is_told(provider: str, box: Box) -> None:
    victim = box.outside / "victim.txt"
    script = [Reply(tool_calls=[shell(f"echo pwned > {victim}")]), Reply(text="Could not write it.")]
    async with running(provider, script, box) as (agent, _sink, server, events):
        result = await agent.turn("overwrite the victim")
    assert result.reason is TerminalReason.COMPLETED
    assert victim.read_text() == "victim\n"  # host side: untouched
    sent = tool_results(server.requests[1])[0]
    assert "<sandbox_denials>" in sent and str(victim) in sent
    ends = [e for e in events if isinstance(e, ToolCallEnd)]
    assert ends and ends[0].denials and ends[0].denials[0].kind in ("write", "read")


async def test_protected_git_write_is_denied(box: Box) -> None:
    script = [Reply(tool_calls=[shell("echo evil >> .git/config")]), Reply(text="ok")]
    async with running("chat", script, box) as (agent, _sink, server, _events):
        await agent.turn("touch git config")
    assert (box.ws / ".git" / "config").read_text() == "[core]\n"
    assert "Exit code: 0" not in tool_results(server.requests[1])[0]


@pytest.mark.parametrize("provider", ["chat", "responses", "anthropic"])
async def test_apply_patch_edits_a_file(provider: str, box: Box) -> None:
    patch = ("*** Begin Patch\n*** Update File: app.py\n def add(a, b):\n-    return a - b\n+    return a + b\n"
             "*** Add File: notes.txt\n+fixed add\n*** End Patch\n")
    script = [Reply(tool_calls=[ToolCallSpec("apply_patch", {"patch": patch})]), Reply(text="Fixed.")]
    async with running(provider, script, box) as (agent, _sink, server, _events):
        result = await agent.turn("fix add")
    assert result.reason is TerminalReason.COMPLETED
    assert (box.ws / "app.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert (box.ws / "notes.txt").read_text() == "fixed add\n"
    assert "app.py" in tool_results(server.requests[1])[0]


async def test_failed_patch_changes_nothing(box: Box) -> None:
    patch = ("*** Begin Patch\n*** Add File: new.txt\n+x\n*** Update File: app.py\n-no such line\n+y\n"
             "*** End Patch\n")
    script = [Reply(tool_calls=[ToolCallSpec("apply_patch", {"patch": patch})]), Reply(text="hm")]
    async with running("chat", script, box) as (agent, _sink, server, _events):
        await agent.turn("patch")
    assert not (box.ws / "new.txt").exists()
    assert (box.ws / "app.py").read_text() == "def add(a, b):\n    return a - b\n"
    assert "nothing was changed" in tool_results(server.requests[1])[0]


async def test_patch_into_git_is_refused_and_atomic(box: Box) -> None:
    patch = ("*** Begin Patch\n*** Add File: ok.txt\n+fine\n*** Add File: .git/hooks/pre-commit\n+evil\n"
             "*** End Patch\n")
    script = [Reply(tool_calls=[ToolCallSpec("apply_patch", {"patch": patch})]), Reply(text="hm")]
    async with running("chat", script, box) as (agent, _sink, server, _events):
        await agent.turn("patch")
    assert not (box.ws / "ok.txt").exists()
    assert not (box.ws / ".git" / "hooks" / "pre-commit").exists()
    assert "nothing was changed" in tool_results(server.requests[1])[0]


async def _answer_approvals(sink: EventSink, events: list[Event], decision: str,
                            ops: Callable[[ApprovalDecision], None]) -> None:
    async for event in sink.receive:
        events.append(event)
        if isinstance(event, ApprovalRequest):
            ops(ApprovalDecision(call_id=event.call_id, decision=decision))  # type: ignore[arg-type]
        if isinstance(event, TurnCompleted):
            return


@pytest.mark.parametrize("decision", ["approved", "denied"])
async def test_escalation_request(decision: str, box: Box) -> None:
    target = box.outside / "escalated.txt"
    script = [Reply(tool_calls=[shell(f"echo escalated > {target}", sandbox_permissions="require_escalated",
                                      justification="the user asked for a file outside the workspace")]),
              Reply(text="done")]
    async with running("chat", script, box, approval="on-request") as (agent, sink, server, events):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_answer_approvals, sink, events, decision,
                               lambda op: agent.orchestrator.decide(op.call_id, op.decision))
            result = await agent.turn("write outside")
    assert result.reason is TerminalReason.COMPLETED
    requests = [e for e in events if isinstance(e, ApprovalRequest)]
    assert len(requests) == 1 and requests[0].kind == "escalation"
    assert requests[0].justification == "the user asked for a file outside the workspace"
    sent = tool_results(server.requests[1])[0]
    if decision == "approved":
        assert target.read_text() == "escalated\n"
        assert "Exit code: 0" in sent
    else:
        assert not target.exists()
        assert "denied" in sent


async def test_escalation_refused_under_never(box: Box) -> None:
    target = box.outside / "x.txt"
    script = [Reply(tool_calls=[shell(f"echo x > {target}", sandbox_permissions="require_escalated",
                                      justification="please")]), Reply(text="ok")]
    async with running("chat", script, box, approval="never") as (agent, _sink, server, events):
        await agent.turn("go")
    assert not target.exists()
    assert "escalation refused" in tool_results(server.requests[1])[0]
    assert not [e for e in drain(_sink, events) if isinstance(e, ApprovalRequest)]


def _sleepers(mark: str) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        if mark in " ".join(proc.info["cmdline"] or []):
            out.append(proc)
    return out


async def test_interrupt_mid_command_kills_it_and_keeps_history_valid(box: Box) -> None:
    mark = "9" + str(uuid.uuid4().int % 10**8)
    script = [Reply(tool_calls=[shell(f"sleep 6{mark}"), shell("echo second")]),
              Reply(text="after interrupt")]
    async with running("chat", script, box) as (agent, sink, server, events):
        async with trio.open_nursery() as nursery:
            async def interrupt_when_running() -> None:
                async for event in sink.receive:
                    events.append(event)
                    if isinstance(event, ToolCallBegin):
                        await trio.sleep(0.3)
                        agent.interrupt()
                        return
            nursery.start_soon(interrupt_when_running)
            with trio.fail_after(20):
                result = await agent.turn("sleep")
        assert result.reason is TerminalReason.INTERRUPTED
        with trio.fail_after(5):
            while _sleepers(mark):
                await trio.sleep(0.05)
        # Both calls got a (synthetic) result, in order; the next turn's request is valid.
        result2 = await agent.turn("go on")
        assert result2.reason is TerminalReason.COMPLETED
    tool_msgs = [m for m in server.requests[1]["messages"] if m.get("role") == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == [c["id"] for c in
                                                     server.requests[1]["messages"][2]["tool_calls"]]
    assert all("interrupted" in m["content"] for m in tool_msgs)


async def test_steering_input_reaches_the_next_model_call(box: Box) -> None:
    script = [Reply(tool_calls=[shell("sleep 0.5")]), Reply(text="steered")]
    async with running("chat", script, box) as (agent, sink, server, events):
        send, receive = trio.open_memory_channel[Any](10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.serve, receive)
            await send.send(UserInput(text="start"))
            async for event in sink.receive:
                events.append(event)
                if isinstance(event, ToolCallBegin):
                    await send.send(UserInput(text="also add tests"))
                if isinstance(event, TurnCompleted):
                    break
            await send.send(Shutdown())
    last = server.requests[1]["messages"][-1]
    assert last["role"] == "user" and last["content"] == "also add tests"


async def test_interrupt_op_through_serve(box: Box) -> None:
    mark = "8" + str(uuid.uuid4().int % 10**8)
    script = [Reply(tool_calls=[shell(f"sleep 5{mark}")])]
    async with running("chat", script, box) as (agent, sink, _server, events):
        send, receive = trio.open_memory_channel[Any](10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.serve, receive)
            await send.send(UserInput(text="start"))
            async for event in sink.receive:
                events.append(event)
                if isinstance(event, ToolCallBegin):
                    await send.send(Interrupt())
                if isinstance(event, TurnCompleted):
                    assert event.reason is TerminalReason.INTERRUPTED
                    break
            await send.send(Shutdown())
    assert not _sleepers(mark)


async def test_max_turns(box: Box) -> None:
    script = [Reply(tool_calls=[shell("true")]) for _ in range(3)]
    async with running("chat", script, box, limits=Limits(max_turns=2)) as (agent, _sink, _server, _events):
        result = await agent.turn("loop")
    assert result.reason is TerminalReason.MAX_TURNS and result.iterations == 2


async def test_context_overflow_compacts_once_then_retries(box: Box) -> None:
    script = [ContextOverflow(), Reply(text="SUMMARY: goal is X"), Reply(text="finished after compaction")]
    async with running("anthropic", script, box) as (agent, sink, server, events):
        result = await agent.turn("big task")
    assert result.reason is TerminalReason.COMPLETED
    assert result.last_message == "finished after compaction"
    assert "SUMMARY: goal is X" in json.dumps(server.requests[2])
    reasons = [e.reason for e in drain(sink, events) if isinstance(e, IterationEnded)]
    assert reasons == ["reactive_compact_retry"]


async def test_context_overflow_twice_is_terminal(box: Box) -> None:
    script = [ContextOverflow(), Reply(text="summary"), ContextOverflow()]
    async with running("chat", script, box) as (agent, _sink, _server, _events):
        result = await agent.turn("big task")
    assert result.reason is TerminalReason.PROMPT_TOO_LONG


async def test_output_limit_injects_continue_at_most_three_times(box: Box) -> None:
    script = [Reply(text=f"part{i}", stop="max_tokens") for i in range(4)] + [Reply(text="never reached")]
    async with running("chat", script, box) as (agent, sink, server, events):
        result = await agent.turn("write a lot")
    assert result.reason is TerminalReason.COMPLETED and result.last_message == "part3"
    assert len(server.requests) == 4
    reasons = [e.reason for e in drain(sink, events) if isinstance(e, IterationEnded)]
    assert reasons == ["max_output_recovery"] * 3


async def test_model_error_is_terminal_and_reported(box: Box) -> None:
    from fake_servers import Fault

    script = [Fault(status=401, body={"error": {"message": "bad key", "type": "invalid_api_key"}})]
    async with running("chat", script, box) as (agent, _sink, server, _events):
        result = await agent.turn("hi")
    assert result.reason is TerminalReason.MODEL_ERROR and "bad key" in (result.error or "")
    assert len(server.requests) == 1


async def test_agents_md_goes_into_the_system_prompt(box: Box) -> None:
    (box.ws / "AGENTS.md").write_text("Always run `make check` before finishing.\n")
    async with running("anthropic", [Reply(text="ok")], box) as (agent, _sink, server, _events):
        await agent.turn("hi")
    assert "Always run `make check`" in json.dumps(server.requests[0]["system"])


async def test_agents_md_symlink_to_a_secret_is_not_read(box: Box) -> None:
    (box.ws / "AGENTS.md").symlink_to(box.secret)
    async with running("chat", [Reply(text="ok")], box) as (agent, _sink, server, _events):
        await agent.turn("hi")
    assert box.secret.read_text() not in json.dumps(server.requests[0])


async def test_transcript_is_written_and_resume_continues(box: Box) -> None:
    script = [Reply(tool_calls=[shell("echo one > one.txt")]), Reply(text="first done")]
    async with running("chat", script, box) as (agent, _sink, _server, _events):
        await agent.turn("first task")
        session_id = agent.session_id
    loaded = load(find_session(session_id))
    kinds = [type(i).__name__ for i in loaded.items]
    assert kinds == ["UserMessage", "AssistantMessage", "ToolResult", "AssistantMessage"]
    policy = box.policy()
    with FakeModelServer("chat", [Reply(text="second done")]) as server:
        settings = AgentSettings(policy=policy, approval="never", resume=loaded)
        async with open_agent(settings, client_for("chat", server), EventSink()) as agent:
            result = await agent.turn("second task")
    assert result.reason is TerminalReason.COMPLETED
    contents = [m.get("content") for m in server.requests[0]["messages"]]
    assert "first task" in contents and "first done" in contents and contents[-1] == "second task"
    assert len(load(find_session(session_id)).items) == 6


async def test_apply_patch_through_the_shell_with_cd(box: Box) -> None:
    (box.ws / "sub").mkdir()
    (box.ws / "sub" / "m.py").write_text("x = 1\n")
    script_text = ("cd sub && apply_patch <<'EOF'\n*** Begin Patch\n*** Update File: m.py\n-x = 1\n+x = 2\n"
                   "*** End Patch\nEOF\n")
    script = [Reply(tool_calls=[ToolCallSpec("shell", {"command": ["bash", "-lc", script_text]})]),
              Reply(text="ok")]
    async with running("chat", script, box) as (agent, _sink, server, _events):
        await agent.turn("patch via shell")
    assert (box.ws / "sub" / "m.py").read_text() == "x = 2\n"
    assert not (box.ws / "m.py").exists()
    assert "sub/m.py" in tool_results(server.requests[1])[0]


async def test_parallel_read_only_tools_keep_call_order(box: Box) -> None:
    (box.ws / "a.txt").write_text("alpha\n")
    calls = [ToolCallSpec("read_file", {"path": "a.txt"}), ToolCallSpec("list_dir", {"path": "."}),
             ToolCallSpec("search", {"pattern": "alpha"}), ToolCallSpec("read_file", {"path": "missing.txt"})]
    async with running("chat", [Reply(tool_calls=calls), Reply(text="ok")], box) as (agent, _sink, server, _ev):
        await agent.turn("look around")
    results = tool_results(server.requests[1])
    assert "alpha" in results[0] and "a.txt" in results[1] and "a.txt:1:alpha" in results[2]
    assert "missing.txt" in results[3]


async def test_bad_tool_arguments_go_back_to_the_model(box: Box) -> None:
    calls = [ToolCallSpec("shell", "{not json"), ToolCallSpec("shell", {"cmd": "ls"}), ToolCallSpec("nope", {})]
    async with running("chat", [Reply(tool_calls=calls), Reply(text="ok")], box) as (agent, _sink, server, _ev):
        result = await agent.turn("go")
    assert result.reason is TerminalReason.COMPLETED
    results = tool_results(server.requests[1])
    assert "not a JSON object" in results[0]
    assert "command" in results[1] and "invalid arguments" in results[1]
    assert "unknown tool" in results[2]


async def test_read_file_of_a_secret_is_refused(box: Box) -> None:
    script = [Reply(tool_calls=[ToolCallSpec("read_file", {"path": str(box.secret)}), shell(f"cat {box.secret}"),
                                ToolCallSpec("search", {"pattern": "TOPSECRET", "path": str(box.secret.parent)})]),
              Reply(text="ok")]
    async with running("chat", script, box) as (agent, _sink, server, _events):
        await agent.turn("read the key")
    assert box.secret.read_text() not in json.dumps(server.requests[1])
    assert len(tool_results(server.requests[1])) == 3


async def _turn_answering(agent: Agent, sink: EventSink, events: list[Event], prompt: str,
                          answers: list[str]) -> TurnCompleted:
    """Run a turn, answering approval requests in order from `answers`."""
    async def answer() -> None:
        async for event in sink.receive:
            events.append(event)
            if isinstance(event, ApprovalRequest):
                agent.orchestrator.decide(event.call_id, answers.pop(0))  # type: ignore[arg-type]
            if isinstance(event, TurnCompleted):
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        result = await agent.turn(prompt)
    return result


async def test_untrusted_asks_for_unknown_commands_but_not_safe_ones(box: Box) -> None:
    script = [Reply(tool_calls=[ToolCallSpec("shell", {"command": ["ls"]}), shell("echo hi > asked.txt")]),
              Reply(text="ok")]
    async with running("chat", script, box, approval="untrusted") as (agent, sink, _server, events):
        await _turn_answering(agent, sink, events, "go", ["approved"])
    requests = [e for e in events if isinstance(e, ApprovalRequest)]
    assert len(requests) == 1 and requests[0].kind == "exec" and requests[0].command == ["sh", "-c",
                                                                                         "echo hi > asked.txt"]
    assert (box.ws / "asked.txt").read_text() == "hi\n"  # approved, and still ran (sandboxed)


async def test_untrusted_denied_command_does_not_run(box: Box) -> None:
    script = [Reply(tool_calls=[shell("echo hi > never.txt")]), Reply(text="ok")]
    async with running("chat", script, box, approval="untrusted") as (agent, sink, server, events):
        await _turn_answering(agent, sink, events, "go", ["denied"])
    assert not (box.ws / "never.txt").exists()
    assert "declined" in tool_results(server.requests[1])[0]


@pytest.mark.parametrize("decision", ["approved", "denied"])
async def test_on_failure_offers_an_unsandboxed_retry_after_a_denial(decision: str, box: Box) -> None:
    target = box.outside / "retry.txt"
    script = [Reply(tool_calls=[shell(f"echo retried > {target}")]), Reply(text="ok")]
    async with running("chat", script, box, approval="on-failure") as (agent, sink, server, events):
        await _turn_answering(agent, sink, events, "go", [decision])
    kinds = [e.kind for e in events if isinstance(e, ApprovalRequest)]
    assert kinds == ["retry_unsandboxed"]
    sent = tool_results(server.requests[1])[0]
    if decision == "approved":
        assert target.read_text() == "retried\n" and "outside the sandbox" in sent
    else:
        assert not target.exists() and "<sandbox_denials>" in sent


async def test_dangerous_command_is_refused_under_never(box: Box) -> None:
    (box.ws / "keep.txt").write_text("keep\n")
    script = [Reply(tool_calls=[ToolCallSpec("shell", {"command": ["rm", "-rf", "keep.txt"]})]), Reply(text="ok")]
    async with running("chat", script, box, approval="never") as (agent, _sink, server, _events):
        await agent.turn("clean")
    assert (box.ws / "keep.txt").exists()
    assert "refused without running" in tool_results(server.requests[1])[0]


async def test_approved_for_session_is_not_asked_again(box: Box) -> None:
    call = ToolCallSpec("shell", {"command": ["touch", "same.txt"]})
    script = [Reply(tool_calls=[call]), Reply(tool_calls=[ToolCallSpec("shell", {"command": ["touch", "same.txt"]})]),
              Reply(text="ok")]
    async with running("chat", script, box, approval="untrusted") as (agent, sink, _server, events):
        await _turn_answering(agent, sink, events, "go", ["approved_for_session"])
    assert len([e for e in events if isinstance(e, ApprovalRequest)]) == 1


async def test_abort_decision_ends_the_turn(box: Box) -> None:
    script = [Reply(tool_calls=[shell("echo x > aborted.txt"), shell("echo y > second.txt")]), Reply(text="no")]
    async with running("chat", script, box, approval="untrusted") as (agent, sink, server, events):
        result = await _turn_answering(agent, sink, events, "go", ["abort"])
        assert result.reason is TerminalReason.INTERRUPTED
        assert not (box.ws / "aborted.txt").exists() and not (box.ws / "second.txt").exists()
        assert len(server.requests) == 1
        results = [i for i in agent.context.items if type(i).__name__ == "ToolResult"]
        assert len(results) == 2  # both calls answered: the transcript stays valid


@pytest.mark.parametrize("exists", [True, False], ids=["dir-exists", "dir-missing"])
async def test_transcripts_inside_the_workspace_cannot_be_edited_by_commands(
        exists: bool, box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(box.ws / ".local" / "state"))
    sessions = box.ws / ".local" / "state" / "stockade" / "sessions"
    if exists:
        sessions.mkdir(parents=True)
    # The marker is built by the shell, so the command's own text (which the transcript records) lacks it.
    tamper = (f"for f in $(find {sessions} -name '*.jsonl'); do printf 'IN%sED' JECT >> $f; done; "
              f"mkdir -p {sessions}/x && echo y > {sessions}/x/new.jsonl; "
              f"mv {box.ws / '.local'} {box.ws / 'moved'}")
    async with running("chat", [Reply(tool_calls=[shell(tamper)]), Reply(text="ok")], box) as (agent, *_):
        await agent.turn("tamper")
        path = agent.rollout.path  # type: ignore[union-attr]
    assert path.is_relative_to(sessions)
    assert "INJECTED" not in path.read_text()
    assert not (sessions / "x").exists() and not (box.ws / "moved").exists()

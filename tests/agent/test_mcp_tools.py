"""MCP servers as agent tools: started inside the agent's sandbox, judged from the host side."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import psutil
import pytest
import trio
from fake_servers import FakeModelServer, Reply, ToolCallSpec

from agent.mcp_client import McpClient, McpError, McpServerSpec, tool_name
from agent.tools.mcp import McpTool, mcp_tools, render
from policies.model import SandboxPolicy
from sandbox.session import Session

SERVER = str(Path(__file__).with_name("fake_mcp_server.py"))


def spec(*flags: str, **kw: object) -> McpServerSpec:
    return McpServerSpec(name="fake", command=(sys.executable, "-I", SERVER, *flags), **kw)  # type: ignore[arg-type]


async def test_tools_listed_across_pages_and_called(ws: Path) -> None:
    async with Session(SandboxPolicy(workspace=str(ws))) as session, trio.open_nursery() as nursery:
        client = await McpClient.start(session, spec(), nursery)
        try:
            assert [t.name for t in client.tools] == ["echo", "write", "read", "slow", "crash"]
            tools = {t.name: t for t in mcp_tools([client])}
            echo = tools["mcp__fake__echo"]
            assert echo.read_only and not tools["mcp__fake__write"].read_only
            assert echo.spec().parameters["required"] == ["text"]
            out = await echo.run(None, echo.Args.model_validate({"text": "hello"}))  # type: ignore[arg-type]
            assert out.text == "hello" and not out.is_error
            out = await echo.run(None, echo.Args.model_validate({}))  # type: ignore[arg-type]
            assert out.is_error and "missing text" in out.text
        finally:
            await client.aclose()


async def test_the_server_is_confined_like_any_command(ws: Path) -> None:
    outside = ws.parent / "victim.txt"
    outside.write_text("safe\n")
    secret = ws.parent / "secret" / "key"
    secret.parent.mkdir()
    secret.write_text("SECRET-KEY\n")
    policy = SandboxPolicy(workspace=str(ws), deny_read=(str(secret.parent),))
    async with Session(policy) as session, trio.open_nursery() as nursery:
        client = await McpClient.start(session, spec(), nursery)
        try:
            write = await client.call("write", {"path": str(outside), "text": "pwned\n"})
            inside = await client.call("write", {"path": str(ws / "made.txt"), "text": "ok\n"})
            read = await client.call("read", {"path": str(secret)})
        finally:
            await client.aclose()
    assert write["isError"] and outside.read_text() == "safe\n"  # judged on the host
    assert not inside["isError"] and (ws / "made.txt").read_text() == "ok\n"
    assert read["isError"] and "SECRET-KEY" not in render(read)


async def test_a_crashing_server_is_reported_with_its_stderr(ws: Path) -> None:
    async with Session(SandboxPolicy(workspace=str(ws))) as session, trio.open_nursery() as nursery:
        client = await McpClient.start(session, spec(), nursery)
        try:
            tool = McpTool(client, next(t for t in client.tools if t.name == "crash"))
            out = await tool.run(None, tool.Args.model_validate({}))  # type: ignore[arg-type]
            assert out.is_error and "exited" in out.text and "crashing on purpose" in out.text
            with pytest.raises(McpError):
                await client.call("echo", {"text": "again"})
        finally:
            await client.aclose()


async def test_a_hung_or_missing_server_fails_the_start_clearly(ws: Path) -> None:
    async with Session(SandboxPolicy(workspace=str(ws))) as session, trio.open_nursery() as nursery:
        with pytest.raises(McpError, match="handshake"):
            await McpClient.start(session, spec("--silent", start_timeout=1.0), nursery)
        with pytest.raises(McpError, match="cannot run"):
            await McpClient.start(session, McpServerSpec(name="x", command=("no-such-mcp-server-xyz",)), nursery)
        client = await McpClient.start(session, spec("--noisy"), nursery)  # junk on stdout is skipped
        assert client.tools
        await client.aclose()


async def test_cancelled_call_and_close_leave_no_process(ws: Path) -> None:
    marker = f"mcp-{uuid.uuid4().hex[:8]}"
    async with Session(SandboxPolicy(workspace=str(ws))) as session, trio.open_nursery() as nursery:
        client = await McpClient.start(session, spec(marker), nursery)
        with trio.move_on_after(0.5):
            await client.call("slow", {"seconds": 30})
        await client.aclose()
        alive = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or ())]
        assert alive == []


def test_tool_names_fit_model_apis() -> None:
    assert tool_name("git hub", "search/code") == "mcp__git_hub__search_code"
    long = tool_name("s" * 40, "t" * 40)
    assert len(long) <= 64 and long == tool_name("s" * 40, "t" * 40)  # stable across processes (resume)
    assert long != tool_name("s" * 40, "t" * 41)


# ---------------------------------------------------------------- through the agent


async def _run_agent(ws: Path, script: list, approval: str = "never", answer: str = "approved",
                     servers: list[McpServerSpec] | None = None) -> tuple[list, FakeModelServer]:
    from agent.models.chat import ChatCompletionsClient
    from agent.models.retry import RetryPolicy
    from agent.protocol import ApprovalRequest, TurnCompleted
    from agent.runner import AgentSettings, EventSink, open_agent

    events: list = []
    settings = AgentSettings(policy=SandboxPolicy(workspace=str(ws)), approval=approval,
                             mcp_servers=[spec()] if servers is None else servers)
    with FakeModelServer("chat", script) as server:
        sink = EventSink()
        client = ChatCompletionsClient(model="fake", base_url=server.base_url, api_key="k",
                                       policy=RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.05))
        async with open_agent(settings, client, sink) as agent:
            async def answer_approvals() -> None:
                async for event in sink.receive:
                    events.append(event)
                    if isinstance(event, ApprovalRequest):
                        agent.orchestrator.decide(event.call_id, answer)  # type: ignore[arg-type]
                    if isinstance(event, TurnCompleted):
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_approvals)
                await agent.turn("use the tools")
    return events, server


async def test_the_agent_offers_and_calls_mcp_tools_confined(ws: Path) -> None:
    outside = ws.parent / "victim.txt"
    outside.write_text("safe\n")
    script = [Reply(tool_calls=[ToolCallSpec("mcp__fake__echo", {"text": "from mcp"}),
                                ToolCallSpec("mcp__fake__write", {"path": str(outside), "text": "pwned"})]),
              Reply(text="done")]
    events, server = await _run_agent(ws, script)
    offered = {t["function"]["name"]: t["function"] for t in server.requests[0]["tools"]}
    assert offered["mcp__fake__echo"]["parameters"]["required"] == ["text"]
    ends = [e for e in events if e.type == "tool_call_end"]
    assert ends[0].output == "from mcp" and not ends[0].is_error
    assert ends[1].is_error and "refused" in ends[1].output
    assert outside.read_text() == "safe\n"  # the server ran inside the sandbox


@pytest.mark.parametrize("answer", ["approved", "denied"])
async def test_untrusted_asks_before_a_tool_that_is_not_read_only(ws: Path, answer: str) -> None:
    script = [Reply(tool_calls=[ToolCallSpec("mcp__fake__echo", {"text": "x"}),
                                ToolCallSpec("mcp__fake__write", {"path": str(ws / "f.txt"), "text": "y"})]),
              Reply(text="done")]
    events, _ = await _run_agent(ws, script, approval="untrusted", answer=answer)
    asked = [e for e in events if e.type == "approval_request"]
    assert [a.command for a in asked] == [["mcp__fake__write"]] and asked[0].kind == "mcp_tool"
    assert (ws / "f.txt").exists() == (answer == "approved")


async def test_a_broken_server_is_a_warning_not_a_failure(ws: Path) -> None:
    broken = McpServerSpec(name="gone", command=("no-such-mcp-server-xyz",))
    events, server = await _run_agent(ws, [Reply(text="fine")], servers=[broken, spec()])
    warnings = [e.message for e in events if e.type == "warning"]
    assert any("gone" in w and "not available" in w for w in warnings)
    names = {t["function"]["name"] for t in server.requests[0]["tools"]}
    assert "mcp__fake__echo" in names and not any(n.startswith("mcp__gone") for n in names)


def test_exec_with_servers_from_the_user_config(ws: Path) -> None:
    import os
    import subprocess

    config = Path(os.environ["XDG_CONFIG_HOME"]) / "stockade" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    stockade = [sys.executable, "-c", "from agent.cli import main; main()"]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    script = [Reply(tool_calls=[ToolCallSpec("mcp__fake__echo", {"text": "configured"})]), Reply(text="ok")]
    try:
        with FakeModelServer("chat", script) as server:
            config.write_text(f'[agent.mcp_servers.fake]\ncommand = ["{sys.executable}", "-I", "{SERVER}"]\n')
            proc = subprocess.run([*stockade, "exec", "--json", "--provider", "openai-chat", "--base-url",
                                   server.base_url, "--model", "m", "go"], cwd=ws, capture_output=True, text=True,
                                  timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr
        assert '"output":"configured"' in proc.stdout
        config.write_text('[agent.mcp_servers.fake]\ncommand = "not a list"\n')
        proc = subprocess.run([*stockade, "exec", "--provider", "openai-chat", "--base-url", "http://127.0.0.1:9",
                               "--model", "m", "go"], cwd=ws, capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 2 and "agent.mcp_servers.fake.command" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        config.unlink(missing_ok=True)

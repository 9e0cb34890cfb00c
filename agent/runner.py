"""Wiring: a model client, a confined session, the orchestrator and the transcript, around one Agent.

Front ends (`stockade exec`, `stockade chat`, tests, benchmarks) call
`open_agent` and then speak only the protocol: they read events from the
channel it returns and send ops (or call `agent.turn`).
"""

from __future__ import annotations

import errno
import math
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from agent.context import Context
from agent.items import Item
from agent.loop import Agent, Limits, StopCheck
from agent.mcp_client import McpClient, McpError, McpServerSpec
from agent.models.base import ModelClient
from agent.orchestrator import Orchestrator
from agent.prompt import AGENTS_MD_MAX_BYTES, system_prompt
from agent.protocol import Event, SessionEnded, SessionStarted, Warning
from agent.rollout import LoadedSession, Rollout, RolloutError, SessionMeta, new_session_id, sessions_dir
from agent.tools import Tool, default_tools
from agent.tools.mcp import mcp_tools
from policies.model import SandboxPolicy


@dataclass
class AgentSettings:
    policy: SandboxPolicy
    approval: str = "on-request"
    policy_name: str = ""
    limits: Limits = field(default_factory=Limits)
    backend: str = "auto"
    persist: bool = True  # write a transcript (False: --ephemeral)
    max_output_tokens: int | None = None
    window_tokens: int | None = None
    resume: LoadedSession | None = None
    fork: bool = False  # with resume: continue under a new session id, the original left as it was
    base_url: str | None = None
    meta_extra: dict[str, object] = field(default_factory=dict)  # recorded in a new transcript's session_meta
    mcp_servers: list[McpServerSpec] = field(default_factory=list)  # started inside the sandbox, tools added
    stop_check: list[str] | None = None  # argv run in the sandbox when the model wants to finish (must pass)
    stop_check_timeout: float = 900.0


class EventSink:
    """The agent's side of the event channel: never blocks the loop; a gone consumer is ignored."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[Event](math.inf)

    def __call__(self, event: Event) -> None:
        try:
            self.send.send_nowait(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def aemit(self, event: Event) -> None:
        self(event)

    async def events(self) -> AsyncIterator[Event]:
        """Every event until the channel closes; one wake-up takes everything buffered (no checkpoint per event)."""
        receive = self.receive
        while True:
            try:
                event = await receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            yield event
            while True:
                try:
                    event = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                yield event


async def read_agents_md(session: object) -> tuple[str | None, str | None]:
    """AGENTS.md at the workspace root, read through the sandbox (a symlink to a secret stays unread)."""
    from sandbox.session import FileOpError

    try:
        content = await session.aread_file("AGENTS.md", AGENTS_MD_MAX_BYTES)  # type: ignore[attr-defined]
    except FileOpError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None, None
        return None, f"AGENTS.md not read: {exc}"
    text = content.data.decode("utf-8", "replace")
    note = f"AGENTS.md is {content.size} bytes; only the first {len(content.data)} are used" if content.truncated \
        else None
    return text, note


@asynccontextmanager
async def open_agent(settings: AgentSettings, client: ModelClient, sink: EventSink,
                     tools: list[Tool] | None = None) -> AsyncIterator[Agent]:
    from sandbox.session import Session

    policy = settings.policy
    tools = tools if tools is not None else default_tools()
    session = Session(policy, backend=settings.backend)
    clients: list[McpClient] = []
    async with session, trio.open_nursery() as servers:
        try:
            for spec in settings.mcp_servers:
                try:
                    clients.append(await McpClient.start(session, spec, servers))
                except McpError as exc:  # one broken server must not stop the agent: said, then left out
                    sink(Warning(message=f"{exc}; its tools are not available in this session"))
            async with _agent(settings, client, sink, session, [*tools, *mcp_tools(clients)]) as agent:
                yield agent
        finally:
            with trio.CancelScope(shield=True):
                for mcp in clients:
                    await mcp.aclose()
            servers.cancel_scope.cancel()  # their output readers: the servers are gone


STOP_CHECK_TAIL = 6000  # characters of a failing stop check's output shown to the model


def _stop_check(settings: AgentSettings, session: Any, sink: EventSink) -> StopCheck:
    """The stop hook: run the check in the session's sandbox when the model wants to finish; its failure
    (exit code and the end of its output) goes back to the model, which must keep working."""
    argv = list(settings.stop_check or ())
    shown = argv[2] if argv[:2] == ["sh", "-c"] and len(argv) == 3 else shlex.join(argv)

    async def check() -> str | None:
        result = await session.aexec(argv, timeout=settings.stop_check_timeout)
        if result.ok:
            sink(Warning(message=f"stop check `{shown}` passed"))
            return None
        how = "timed out" if result.timed_out else f"exit {result.returncode}"
        sink(Warning(message=f"stop check `{shown}` failed ({how}): the agent goes on"))
        output = (result.stdout + result.stderr).decode("utf-8", "replace").strip()
        tail = output[-STOP_CHECK_TAIL:] if output else "(no output)"
        return (f"<stop_check>\nBefore you finish: the check `{shown}` fails ({how}). The end of its output:\n"
                f"{tail}\n</stop_check>\nFix what it reports, then finish. Do not weaken or skip the check.")

    return check


@asynccontextmanager
async def _agent(settings: AgentSettings, client: ModelClient, sink: EventSink, session: Any,
                 tools: list[Tool]) -> AsyncIterator[Agent]:
    """The agent over a started session: system prompt, transcript, history; closed in order."""
    policy = settings.policy
    agents_md, note = await read_agents_md(session)
    if note:
        sink(Warning(message=note))
    orchestrator = Orchestrator(session, policy, tools, settings.approval,  # type: ignore[arg-type]
                                emit=sink.aemit, emit_nowait=sink)
    system = system_prompt(policy, settings.approval, session.backend, agents_md)
    resume = settings.resume
    items: list[Item] = list(resume.items) if resume is not None else []
    rollout: Rollout | None = None
    try:
        if resume is not None and not settings.fork:
            session_id = resume.meta.session_id
            if settings.persist:
                rollout = Rollout(resume.path)
        else:  # a new session, or a fork: the history copied under a new id
            session_id = new_session_id()
            if settings.persist:
                rollout = Rollout.create(SessionMeta(
                    session_id=session_id, cwd=policy.workspace, provider=client.provider, model=client.model,
                    policy=settings.policy_name or policy.mode.value, approval=settings.approval,
                    base_url=settings.base_url, forked_from=resume.meta.session_id if resume else None,
                    extra=dict(settings.meta_extra)))
                if items:
                    rollout.compacted(items)  # the starting history, replayed like a compaction
    except OSError as exc:  # an unwritable state directory: one clear line, not a traceback
        where = exc.filename or (resume.path if resume is not None else sessions_dir())
        raise RolloutError(f"cannot write the session transcript ({where}: {exc.strerror or exc}); "
                           "--ephemeral runs without one") from None
    agent = Agent(client, orchestrator, Context(items, settings.window_tokens), system, sink,
                  tools=[t.spec() for t in tools], limits=settings.limits, rollout=rollout,
                  max_output_tokens=settings.max_output_tokens, session_id=session_id,
                  stop_check=_stop_check(settings, session, sink) if settings.stop_check else None)
    if resume is not None:
        agent.close_open_calls()  # killed mid-tool: those calls get a synthetic result
    sink(SessionStarted(session_id=session_id, provider=client.provider, model=client.model,
                        cwd=policy.workspace, sandbox=f"{policy.mode.value} ({session.backend})",
                        approval=settings.approval, rollout_path=str(rollout.path) if rollout else None,
                        resumed=resume is not None))
    try:
        yield agent
    finally:
        with trio.CancelScope(shield=True):
            await orchestrator.aclose()
            if rollout is not None:
                rollout.close()
            await client.aclose()
            sink(SessionEnded(session_id=session_id))

"""The single route of every tool call: safety → approval → sandbox → execute → denials.

Nothing else in the agent runs a tool. For each call the orchestrator
validates the arguments, classifies a shell command (`policies.safety`),
asks the approval policy whether to run, ask or refuse, runs the tool in the
confined session (or, only after the user approved it, outside the sandbox
with full access), and turns what the sandbox denied into structured tool
output the model can act on.

Approval policies (`--approval`):
  untrusted   ask before anything that is not known to be read-only; after a denial, ask to re-run unsandboxed
  on-failure  run sandboxed; after a denial, ask to re-run unsandboxed
  on-request  run sandboxed; the model may ask to run a command unsandboxed (with a justification): ask
  never       never ask; denials go back to the model (the mode for CI and `stockade exec`)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Literal

import trio
from pydantic import ValidationError

from agent.context import budget
from agent.items import ToolCall, ToolResult
from agent.protocol import (
    ApprovalRequest,
    Decision,
    DenialInfo,
    Event,
    ToolCallBegin,
    ToolCallEnd,
    ToolOutputDelta,
)
from agent.tools.apply_patch import ApplyPatch, ApplyPatchArgs
from agent.tools.base import Tool, ToolContext, ToolOutput
from agent.tools.mcp import McpTool
from agent.tools.shell import ShellArgs
from policies.model import Mode, SandboxPolicy

ApprovalPolicy = Literal["untrusted", "on-request", "on-failure", "never"]
APPROVAL_POLICIES: tuple[str, ...] = ("untrusted", "on-request", "on-failure", "never")


class TurnAborted(Exception):
    """The user answered an approval request with `abort`: stop the turn."""


class Orchestrator:
    def __init__(
        self,
        session: Any,  # sandbox.Session, confined with `policy`
        policy: SandboxPolicy,
        tools: list[Tool],
        approval: ApprovalPolicy,
        emit: Callable[[Event], Awaitable[None]],
        emit_nowait: Callable[[Event], None] | None = None,
    ) -> None:
        self.session = session
        self.policy = policy
        self.tools = {t.name: t for t in tools}
        self.approval = approval
        self.emit = emit
        self.emit_nowait = emit_nowait
        self.state: dict[str, Any] = {}
        self._waiting: dict[str, tuple[trio.Event, list[Decision]]] = {}
        self._session_grants: set[tuple[str, ...]] = set()
        self._escalated: Any = None
        self.workspace = os.path.realpath(policy.workspace)
        self._roots = [self.workspace, *(os.path.realpath(os.path.join(self.workspace, r))
                                         for r in policy.writable_roots)]
        resolved = getattr(session, "resolved", None)
        self._protected_paths = [p.path for p in resolved.protected] if resolved is not None else []
        if emit_nowait is not None:
            def output(call_id: str, stream: str, chunk: bytes) -> None:
                emit_nowait(ToolOutputDelta(call_id=call_id, stream=stream,  # type: ignore[arg-type]
                                            chunk=chunk.decode("utf-8", "replace")))
            self.state["emit_nowait"] = output

    # -- approvals -------------------------------------------------------------------------------------

    def decide(self, call_id: str, decision: Decision) -> bool:
        """Answer a pending approval request (from an ApprovalDecision op). False if none is pending."""
        waiting = self._waiting.get(call_id)
        if waiting is None:
            return False
        waiting[1].append(decision)
        waiting[0].set()
        return True

    async def _ask(self, request: ApprovalRequest) -> Decision:
        key = (request.kind, *(request.command or request.paths))
        if key in self._session_grants:
            return "approved"
        done = trio.Event()
        answer: list[Decision] = []
        self._waiting[request.call_id] = (done, answer)
        try:
            await self.emit(request)
            await done.wait()
        finally:
            self._waiting.pop(request.call_id, None)
        decision = answer[0]
        if decision == "approved_for_session":
            self._session_grants.add(key)
        if decision == "abort":
            raise TurnAborted(request.call_id)
        return decision

    # -- the route -------------------------------------------------------------------------------------

    def is_read_only(self, call: ToolCall) -> bool:
        tool = self.tools.get(call.name)
        return bool(tool and tool.read_only)

    async def run(self, call: ToolCall) -> ToolResult:
        started = time.monotonic()
        tool = self.tools.get(call.name)
        try:
            raw = json.loads(call.arguments or "{}")
            if not isinstance(raw, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            raw = {}
            output = ToolOutput(f"invalid arguments: not a JSON object ({exc}); send the arguments as JSON",
                                is_error=True)
            return await self._finish(call, output, started, begin=True)
        if tool is None:
            names = ", ".join(sorted(self.tools))
            output = ToolOutput(f"unknown tool {call.name!r}; available tools: {names}", is_error=True)
            return await self._finish(call, output, started, begin=True)
        try:
            args = tool.Args.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
            output = ToolOutput(f"invalid arguments for {call.name}: {problems}", is_error=True)
            return await self._finish(call, output, started, begin=True)

        patch_base = ""
        if isinstance(args, ShellArgs):
            from agent.patch import parse_patch_invocation

            invocation = parse_patch_invocation(args.command)
            if invocation is not None:  # `cd d && apply_patch <<EOF ...` through the shell: the tool's route
                patch_base = os.path.normpath(os.path.join(args.workdir or "", invocation.cd or ""))
                tool, args = self.tools.get("apply_patch") or ApplyPatch(), ApplyPatchArgs(patch=invocation.patch)
        await self.emit(ToolCallBegin(call_id=call.id, name=call.name, arguments=raw,
                                      command=args.command if isinstance(args, ShellArgs) else None))
        try:
            if isinstance(args, ShellArgs):
                output = await self._shell(call, tool, args)
            elif isinstance(tool, ApplyPatch):
                output = await self._patch(call, tool, args, "" if patch_base == "." else patch_base)
            elif isinstance(tool, McpTool):
                output = await self._mcp(call, tool, args)
            else:
                output = await tool.run(self._ctx(call), args)
        except TurnAborted:
            await self._finish(call, ToolOutput("aborted by the user", is_error=True), started)
            raise
        return await self._finish(call, output, started)

    def _ctx(self, call: ToolCall, escalated: bool = False) -> ToolContext:
        return ToolContext(session=self.session, workspace=self.workspace, call_id=call.id, emit=self.emit,
                           escalated=escalated, escalated_session=self._escalated_session, state=self.state)

    async def _escalated_session(self) -> Any:
        """A full-access session, made the first time the user approves running outside the sandbox."""
        if self._escalated is None:
            from sandbox.session import Session

            session = Session(replace(self.policy, mode=Mode.FULL_ACCESS), backend="none")
            await session.__aenter__()
            self._escalated = session
        return self._escalated

    async def aclose(self) -> None:
        if self._escalated is not None:
            await self._escalated.__aexit__(None, None, None)
            self._escalated = None

    async def _shell(self, call: ToolCall, tool: Tool, args: ShellArgs) -> ToolOutput:
        from policies.safety import classify, needs_approval

        full = self.policy.mode is Mode.FULL_ACCESS
        safety = classify(args.command)
        if args.sandbox_permissions == "require_escalated" and not full:
            verdict = needs_approval(self.approval, safety, "escalation", full_access=full)
            if verdict != "ask":
                return ToolOutput(
                    f"escalation refused: the approval policy is {self.approval!r}, under which commands only run "
                    "inside the sandbox. Work within it (see the denials you got), or finish and explain what "
                    "the user must run themselves.", is_error=True)
            decision = await self._ask(ApprovalRequest(
                call_id=call.id, kind="escalation", command=args.command, justification=args.justification,
                reason="the model asks to run this command outside the sandbox"))
            if decision == "denied":
                return ToolOutput("the user denied running this command outside the sandbox; do not retry it "
                                  "escalated. Find another way inside the sandbox, or stop and explain.",
                                  is_error=True)
            return await tool.run(self._ctx(call, escalated=True), args)

        verdict = needs_approval(self.approval, safety, "before", full_access=full)
        if verdict == "reject":
            return ToolOutput(f"refused without running: {safety.reason}. Under approval policy "
                              f"{self.approval!r} this command is forbidden.", is_error=True)
        if verdict == "ask":
            decision = await self._ask(ApprovalRequest(call_id=call.id, kind="exec", command=args.command,
                                                       reason=f"{safety.level} command: {safety.reason}"))
            if decision == "denied":
                return ToolOutput("the user declined to run this command", is_error=True)
        output = await tool.run(self._ctx(call), args)
        if not output.denials or full:
            return output
        retry = needs_approval(self.approval, safety, "after_denial", full_access=full)
        if retry == "ask":
            decision = await self._ask(ApprovalRequest(
                call_id=call.id, kind="retry_unsandboxed", command=args.command,
                reason="the sandbox denied: " + "; ".join(d.hint().removeprefix("stockade: ") for d in output.denials)))
            if decision != "denied":
                again = await tool.run(self._ctx(call, escalated=True), args)
                again.text = "(re-run outside the sandbox, approved by the user)\n" + again.text
                return again
        output.text += self._denial_note(output, retried=retry == "ask")
        return output

    async def _patch(self, call: ToolCall, tool: ApplyPatch, args: Any, base: str = "") -> ToolOutput:
        plan = await tool.plan(self._ctx(call), args, base)
        if isinstance(plan, ToolOutput):
            return plan
        paths = [p for c in plan.changes for p in (c.path, c.move_to) if p]
        outside = [p for p in paths if not self._writable(p)]
        escalated = False
        if outside and self.policy.mode is not Mode.FULL_ACCESS and (guarded := [p for p in paths if
                                                                       self._protected(p)]):
            # An approved patch runs unsandboxed as a whole: approving the outside paths must not also
            # write .git (hooks run code on the host) or .stockade. Never escalated, whatever the answer.
            return ToolOutput(f"patch not applied (nothing was changed): it writes outside the writable roots "
                              f"({', '.join(outside)}) and also into protected paths ({', '.join(guarded)}), which "
                              "are never written by an approved patch; send the changes outside the workspace as "
                              "a patch of their own", is_error=True)
        if outside and self.policy.mode is not Mode.FULL_ACCESS:
            if self.approval == "never":
                return ToolOutput(f"patch not applied (nothing was changed): {', '.join(outside)} "
                                 f"{'is' if len(outside) == 1 else 'are'} outside the writable roots "
                                 f"({', '.join(self._roots) if self.policy.writes_workspace else 'read-only sandbox'})",
                                 is_error=True)
            decision = await self._ask(ApprovalRequest(call_id=call.id, kind="patch", paths=outside,
                                                       reason="the patch writes outside the writable roots"))
            if decision == "denied":
                return ToolOutput("the user declined this patch; nothing was changed", is_error=True)
            escalated = True
        output = await tool.apply(self._ctx(call, escalated=escalated), plan)
        if output.denials:
            output.text += self._denial_note(output, retried=False)
        return output

    async def _mcp(self, call: ToolCall, tool: McpTool, args: Any) -> ToolOutput:
        """An MCP server's tool. The server runs inside the sandbox, so its effects are confined like a
        command's; under `untrusted` a call is asked about unless the server marks the tool read-only (a hint:
        harmless to trust, since the sandbox holds either way). "Don't ask again" covers that tool."""
        if self.approval == "untrusted" and not tool.read_only:
            shown = json.dumps(args.model_extra or {}, ensure_ascii=False)
            decision = await self._ask(ApprovalRequest(
                call_id=call.id, kind="mcp_tool", command=[tool.name],
                reason=f"a tool of MCP server {tool.client.spec.name}, with arguments "
                       f"{shown if len(shown) <= 500 else shown[:500] + '...'}"))
            if decision == "denied":
                return ToolOutput("the user declined this tool call", is_error=True)
        return await tool.run(self._ctx(call), args)

    def _protected(self, path: str) -> bool:
        """Under a protected path of the policy, or through a directory named like one (`.git`, `.stockade`)."""
        full = os.path.realpath(os.path.join(self.workspace, path))
        if any(full == p or full.startswith(p.rstrip("/") + "/") for p in self._protected_paths):
            return True
        names = {os.path.basename(n.rstrip("/")) for n in self.policy.protected}
        lexical = os.path.normpath(os.path.join(self.workspace, path)).split("/")
        return any(part in names for part in (*full.split("/"), *lexical))

    def _writable(self, path: str) -> bool:
        if not self.policy.writes_workspace:
            return False
        full = os.path.realpath(os.path.join(self.workspace, path))
        return any(full == r or full.startswith(r.rstrip("/") + "/") for r in self._roots)

    def _denial_note(self, output: ToolOutput, retried: bool) -> str:
        lines = "\n".join(f"- {d.hint().removeprefix('stockade: ')}" for d in output.denials)
        if retried:
            advice = "The user declined to re-run it outside the sandbox."
        elif self.approval == "on-request":
            advice = ('If the task truly needs this, call shell again with sandbox_permissions="require_escalated" '
                      "and a justification; the user will be asked. Otherwise work inside the sandbox.")
        else:
            advice = "Work inside the sandbox: it will not be lifted in this session."
        mode = self.policy.mode.value
        return (f"\n<sandbox_denials>\n{lines}\n</sandbox_denials>\nThe sandbox ({mode}) refused the above; "
                f"this is a policy decision, not a bug to work around. {advice}")

    async def _finish(self, call: ToolCall, output: ToolOutput, started: float, begin: bool = False) -> ToolResult:
        if begin:
            await self.emit(ToolCallBegin(call_id=call.id, name=call.name, arguments={}))
        text = budget(output.text)  # the one place tool output is cut for the model
        denials = [DenialInfo(kind=d.kind, target=d.target, rule=d.rule, detail=d.detail) for d in output.denials]
        await self.emit(ToolCallEnd(call_id=call.id, name=call.name, output=text, is_error=output.is_error,
                                    exit_code=output.exit_code, duration=output.duration or time.monotonic() - started,
                                    denials=denials, sandboxed=output.sandboxed))
        return ToolResult(call_id=call.id, name=call.name, output=text, is_error=output.is_error)


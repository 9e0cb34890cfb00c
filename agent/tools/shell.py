"""shell: run a command in the confined session (or, once approved, outside the sandbox)."""

from __future__ import annotations

import signal
from typing import Literal

from pydantic import Field, field_validator

from agent.tools.base import Tool, ToolArgs, ToolContext, ToolOutput
from sandbox.result import Result

DEFAULT_TIMEOUT_S = 300.0
MAX_TIMEOUT_S = 3600.0


class ShellArgs(ToolArgs):
    command: list[str] = Field(description='The argv to run, e.g. ["pytest", "-q"] or ["bash", "-lc", "ls | wc -l"].')
    workdir: str | None = Field(None, description="Working directory, relative to the workspace (default: it).")
    timeout_ms: int | None = Field(None, ge=1, description="Wall-clock limit; the whole process tree is killed.")
    sandbox_permissions: Literal["use_default", "require_escalated"] = Field(
        "use_default",
        description="require_escalated asks the user to run this one command outside the sandbox; give a "
                    "justification. Only when the sandbox denied something the task truly needs.")
    justification: str | None = Field(None, description="Why the command needs to run outside the sandbox.")

    @field_validator("command", mode="before")
    @classmethod
    def _string_means_shell(cls, value: object) -> object:
        if isinstance(value, str):
            return ["bash", "-lc", value]
        return value

    @field_validator("command")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value or not value[0]:
            raise ValueError("command must be a non-empty argv list")
        return value


class Shell(Tool):
    name = "shell"
    description = ("Run a command and return its exit code and output (stdout then stderr, long output cut in "
                   "the middle). Commands run in a sandbox: writes outside the writable roots, protected paths "
                   "(.git, .stockade) and the network (unless allowed) are refused by the kernel.")
    Args = ShellArgs

    async def run(self, ctx: ToolContext, args: ShellArgs) -> ToolOutput:
        import trio

        from sandbox import SandboxSetupError
        from sandbox.session import SessionError

        timeout = min((args.timeout_ms / 1000) if args.timeout_ms else DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S)
        emit = ctx.state.get("emit_nowait")

        def on_output(stream: str, chunk: bytes) -> None:
            if emit is not None:
                emit(ctx.call_id, stream, chunk)

        session = ctx.session
        if ctx.escalated and ctx.escalated_session is not None:
            session = await ctx.escalated_session()
        try:
            result = await session.aexec(args.command, cwd=args.workdir, timeout=timeout, on_output=on_output)
        except SandboxSetupError as exc:
            return ToolOutput(f"could not start the command: {exc}", is_error=True, sandboxed=not ctx.escalated)
        except SessionError as exc:
            partial = (exc.stdout + exc.stderr).decode("utf-8", "replace")
            text = f"the sandbox worker failed while running the command: {exc}"
            return ToolOutput(text + (f"\nPartial output:\n{partial}" if partial else ""), is_error=True)
        except trio.Cancelled:
            raise
        return ToolOutput(format_result(result), is_error=not result.ok, exit_code=result.returncode,
                          duration=result.duration, denials=list(result.denials), sandboxed=not ctx.escalated)


def format_result(r: Result) -> str:
    """Exit status first (the model must not mistake a timeout for success), then the output."""
    if r.timed_out:
        status = f"Timed out after {r.duration:.1f} s; the command and all its processes were killed"
    elif r.signal is not None:
        try:
            name = signal.Signals(r.signal).name
        except ValueError:
            name = f"signal {r.signal}"
        status = f"Killed by {name} (exit {r.returncode})"
    else:
        status = f"Exit code: {r.exit_code}"
    out = r.stdout.decode("utf-8", "replace")
    err = r.stderr.decode("utf-8", "replace")
    parts = [status, f"Wall time: {r.duration:.2f} s"]
    for label, text, truncated, total in (("stdout", out, r.stdout_truncated, r.stdout_total),
                                          ("stderr", err, r.stderr_truncated, r.stderr_total)):
        if text:
            note = f" ({total} bytes written, middle dropped by the sandbox's output cap)" if truncated else ""
            parts.append(f"{label}{note}:\n{text.rstrip()}")
    if not out and not err:
        parts.append("(no output)")
    return "\n".join(parts)  # budgeted once, with any denial note, when the orchestrator records it

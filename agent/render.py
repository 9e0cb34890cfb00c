"""Events as terminal text: what `stockade exec` prints on stderr and `stockade chat` on the terminal."""

from __future__ import annotations

import shlex
import sys
import time
from typing import TextIO

from agent.protocol import (
    AgentMessage,
    ApprovalRequest,
    Compacted,
    Error,
    Event,
    MessageDelta,
    PlanUpdated,
    SessionStarted,
    StreamRetry,
    ToolCallBegin,
    ToolCallEnd,
    ToolOutputDelta,
    TurnCompleted,
    Warning,
)

MARKS = {"completed": "x", "in_progress": ">", "pending": " "}


class Renderer:
    """Prints progress as it happens; keeps a one-line status on a terminal while the model works."""

    def __init__(self, out: TextIO | None = None, *, show_output: bool = False) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.show_output = show_output  # stream command output live (chat), not only exit codes
        self._streaming = False
        self._status = ""
        self._working_since: float | None = None

    # -- status line ---------------------------------------------------------------------------------

    def working(self, since: float | None) -> None:
        self._working_since = since

    def tick(self) -> None:
        if not self.tty or self._working_since is None or self._streaming:
            return
        self._set_status(f"working {time.monotonic() - self._working_since:.0f}s  (Ctrl-C to interrupt)")

    def _set_status(self, text: str) -> None:
        self.out.write("\r\033[2K\033[2m" + text + "\033[0m")
        self.out.flush()
        self._status = text

    def _clear_status(self) -> None:
        if self._status:
            self.out.write("\r\033[2K")
            self._status = ""

    def _line(self, text: str) -> None:
        self._clear_status()
        if self._streaming:
            self.out.write("\n")
            self._streaming = False
        self.out.write(text + "\n")
        self.out.flush()

    # -- events ----------------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageDelta):
            self._clear_status()
            self.out.write(event.text)
            self.out.flush()
            self._streaming = True
        elif isinstance(event, AgentMessage):
            if self._streaming:
                self.out.write("\n")
                self._streaming = False
        elif isinstance(event, SessionStarted):
            verb = "resumed" if event.resumed else "session"
            self._line(f"stockade {verb} {event.session_id} · {event.provider}/{event.model} · sandbox "
                       f"{event.sandbox} · approval {event.approval}")
        elif isinstance(event, ToolCallBegin):
            if event.name != "update_plan":  # its PlanUpdated event says it all
                self._line(self._describe(event))
        elif isinstance(event, ToolOutputDelta):
            if self.show_output:
                self._clear_status()
                self.out.write(event.chunk)
                self.out.flush()
        elif isinstance(event, ToolCallEnd):
            if event.name != "update_plan" or event.is_error:
                self._line(self._result(event))
        elif isinstance(event, StreamRetry):
            self._line(f"  model: {event.reason}; retrying {event.attempt}/{event.max_attempts} in "
                       f"{event.delay:.1f}s")
        elif isinstance(event, PlanUpdated):
            steps = "\n".join(f"  [{MARKS.get(s.get('status', ''), ' ')}] {s.get('step', '')}" for s in event.plan)
            self._line("plan:\n" + steps)
        elif isinstance(event, Compacted):
            self._line(f"  (history compacted: {event.items_before} items -> {event.items_after})")
        elif isinstance(event, ApprovalRequest):
            pass  # the front end asks
        elif isinstance(event, TurnCompleted):
            if event.reason != "completed":
                self._line(f"turn ended: {event.reason}" + (f": {event.error}" if event.error else ""))
        elif isinstance(event, Warning):
            self._line(f"warning: {event.message}")
        elif isinstance(event, Error):
            self._line(f"error: {event.message}")

    @staticmethod
    def _describe(event: ToolCallBegin) -> str:
        if event.command is not None:
            return "$ " + shlex.join(event.command)
        args = event.arguments
        if event.name == "apply_patch":
            files = [line.split(":", 1)[1].strip() for line in str(args.get("patch", "")).splitlines()
                     if line.startswith(("*** Update File:", "*** Add File:", "*** Delete File:"))]
            return "apply_patch " + " ".join(files)
        detail = args.get("path") or args.get("pattern") or ""
        return f"{event.name} {detail}".rstrip()

    @staticmethod
    def _result(event: ToolCallEnd) -> str:
        lines = []
        if event.exit_code is not None:
            lines.append(f"  exit {event.exit_code} ({event.duration:.2f}s)" + ("" if event.sandboxed
                                                                                  else " [outside the sandbox]"))
        elif event.is_error:
            first = event.output.strip().splitlines()[0] if event.output.strip() else "error"
            lines.append(f"  error: {first[:200]}")
        for d in event.denials:
            lines.append(f"  denied {d.kind} {d.target} ({d.rule})")
        return "\n".join(lines) if lines else "  ok"


def approval_question(event: ApprovalRequest) -> str:
    what = shlex.join(event.command) if event.command else ", ".join(event.paths)
    head = {"exec": "Run this command?", "patch": "Apply a patch outside the writable roots?",
            "escalation": "Run this command OUTSIDE the sandbox?",
            "retry_unsandboxed": "The sandbox denied this command. Re-run it OUTSIDE the sandbox?",
            "mcp_tool": "Call this MCP tool (its server runs inside the sandbox)?"}[event.kind]
    lines = [head, f"  {what}", f"  why: {event.reason}"]
    if event.justification:
        lines.append(f"  the model says: {event.justification}")
    lines.append("  [y] yes  [a] yes, and don't ask again this session  [n] no  [x] no, and stop the turn")
    return "\n".join(lines)


ANSWERS = {"y": "approved", "yes": "approved", "a": "approved_for_session", "always": "approved_for_session",
           "n": "denied", "no": "denied", "": "denied", "x": "abort", "abort": "abort"}

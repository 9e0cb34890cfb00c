"""`stockade chat` on a real terminal (a pty): approval prompts, Ctrl-C interrupts the turn, not the session."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import psutil
from fake_servers import FakeModelServer, Reply, ToolCallSpec


class Terminal:
    """A child on a pty: write keystrokes, wait for text."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env["TERM"] = "xterm"
        pid, fd = pty.fork()
        if pid == 0:  # child: a session leader with the pty as its controlling terminal
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        self.pid, self.fd, self.seen = pid, fd, ""

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never appeared; terminal so far:\n{self.seen[-3000:]}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                try:
                    self.seen += os.read(self.fd, 65536).decode("utf-8", "replace")
                except OSError:  # EIO: the child closed the terminal
                    assert text in self.seen, f"{text!r} never appeared:\n{self.seen[-3000:]}"

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.seen += os.read(self.fd, 65536).decode("utf-8", "replace")
            except OSError:
                pass
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"chat did not exit; terminal:\n{self.seen[-3000:]}")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def chat(server: FakeModelServer, ws: Path, *extra: str) -> Terminal:
    argv = [sys.executable, "-c", "from agent.cli import main; main()", "chat", "--provider", "openai-chat",
            "--base-url", server.base_url, "--model", "fake", *extra]
    return Terminal(argv, ws)


def test_ctrl_c_interrupts_the_turn_and_the_session_goes_on(ws: Path) -> None:
    mark = f"4{os.getpid() % 10000:04d}{int(time.time() * 1000) % 10000:04d}"
    script = [Reply(tool_calls=[ToolCallSpec("shell", {"command": ["sleep", mark]})]),
              Reply(text="Second task done.")]
    with FakeModelServer("chat", script) as server:
        term = chat(server, ws)
        try:
            term.expect("> ")
            term.send("wait a long time\r")
            term.expect(f"$ sleep {mark}")
            time.sleep(0.3)
            term.send("\x03")  # Ctrl-C through the terminal's line discipline: SIGINT to the foreground group
            term.expect("turn ended: interrupted")
            deadline = time.monotonic() + 10
            while any(mark in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])):
                assert time.monotonic() < deadline, "the interrupted command is still running"
                time.sleep(0.1)
            term.send("now something else\r")
            term.expect("Second task done.")
            term.send("\x04")  # Ctrl-D: quit
            assert term.wait() == 0
        finally:
            term.close()
    assert len(server.requests) == 2
    tool_msgs = [m for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert "interrupted" in tool_msgs[0]["content"]


def test_escalation_is_asked_on_the_terminal(ws: Path) -> None:
    target = ws.parent / "outside.txt"
    call = ToolCallSpec("shell", {"command": ["sh", "-c", f"echo approved > {target}"],
                                  "sandbox_permissions": "require_escalated",
                                  "justification": "the user asked for a file next to the workspace"})
    with FakeModelServer("chat", [Reply(tool_calls=[call]), Reply(text="Wrote it.")]) as server:
        term = chat(server, ws)
        try:
            term.expect("> ")
            term.send("write outside\r")
            term.expect("Run this command OUTSIDE the sandbox?")
            term.expect("the user asked for a file next to the workspace")
            term.send("y\r")
            term.expect("Wrote it.")
            term.send("/exit\r")
            assert term.wait() == 0
        finally:
            term.close()
    assert target.read_text() == "approved\n"

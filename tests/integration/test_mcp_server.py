"""`stockade mcp` as an MCP client drives it: a subprocess speaking newline-delimited JSON-RPC on stdio.

Security outcomes are judged on the host (the outside file, the process table), not from the replies.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from exec_support import confining_backend_params

STOCKADE = [sys.executable, "-c", "from agent.cli import main; main()"]
BASE = Path("/srv/stockade-mcp-test")  # not /tmp: the sandbox's /tmp is private


class Client:
    """A minimal MCP client: requests by id, replies collected by a reader thread."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([*STOCKADE, "mcp", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ids = iter(range(1, 1 << 30))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.replies.put(json.loads(line))  # anything but JSON on stdout fails here

    def send(self, message: dict[str, Any] | bytes) -> None:
        assert self.proc.stdin is not None
        data = message if isinstance(message, bytes) else json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.replies.get(timeout=timeout)

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        rid = next(self.ids)
        self.send({"id": rid, "method": method, **({"params": params} if params is not None else {})})
        got = self.reply(timeout)
        assert got.get("id") == rid, got
        return got

    def call(self, name: str, **arguments: Any) -> dict[str, Any]:
        got = self.request("tools/call", {"name": name, "arguments": arguments})
        assert "result" in got, got
        return got["result"]

    def close(self) -> int:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def box() -> Iterator[Path]:
    BASE.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="box-", dir=BASE))
    (root / "ws").mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        try:
            BASE.rmdir()
        except OSError:
            pass


@pytest.fixture(params=confining_backend_params())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start(box: Path, backend: str, *extra: str) -> Client:
    client = Client(["--cwd", str(box / "ws"), "--backend", backend, "--no-config", *extra])
    init = client.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                         "clientInfo": {"name": "test", "version": "1"}})
    assert init["result"]["protocolVersion"] == "2025-06-18"
    client.send({"method": "notifications/initialized"})
    return client


def with_marker(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_handshake_and_tool_list(box: Path, backend: str) -> None:
    client = start(box, backend)
    try:
        tools = {t["name"]: t for t in client.request("tools/list")["result"]["tools"]}
        assert set(tools) == {"exec", "read_file", "write_file", "list_dir", "search"}
        assert tools["exec"]["annotations"]["openWorldHint"] is False  # network off
        assert tools["read_file"]["annotations"]["readOnlyHint"] is True
        assert client.request("ping")["result"] == {}
        old = client.request("initialize", {"protocolVersion": "2024-11-05", "capabilities": {}})
        assert old["result"]["protocolVersion"] == "2024-11-05"
        unknown = client.request("initialize", {"protocolVersion": "1999-01-01", "capabilities": {}})
        assert unknown["result"]["protocolVersion"] == "2025-06-18"
    finally:
        assert client.close() == 0


def test_commands_are_confined_and_state_persists(box: Path, backend: str) -> None:
    outside = box / "outside.txt"
    outside.write_text("safe\n")
    git_config = box / "ws" / ".git" / "config"
    git_config.parent.mkdir()
    git_config.write_text("[core]\n")
    client = start(box, backend)
    try:
        for attack in (f"echo pwned > {outside}", f"echo evil >> {git_config}"):
            r = client.call("exec", command=attack)
            assert r["isError"] is True and r["structuredContent"]["exit_code"] != 0
            assert {d["kind"] for d in r["structuredContent"]["denials"]} & {"write", "protected"}, r
        assert client.call("exec", command="echo inside > in.txt")["isError"] is False
        r = client.call("exec", command=["sh", "-c", "echo kept > /tmp/state; cat in.txt"])
        assert r["isError"] is False and r["structuredContent"]["stdout"] == "inside\n"
        assert client.call("exec", command="cat /tmp/state")["structuredContent"]["stdout"] == "kept\n"
        assert client.call("read_file", path="in.txt")["content"][0]["text"] == "inside\n"
        r = client.call("write_file", path=str(outside), content="pwned\n")
        assert r["isError"] is True
        r = client.call("write_file", path="sub/new.txt", content="made\n", create_dirs=True)
        assert r["isError"] is False
        listing = client.call("list_dir", path="sub")["content"][0]["text"]
        assert "new.txt" in listing
        found = client.call("search", pattern="ma+de", glob="*.txt")["content"][0]["text"]
        assert "new.txt:1: made" in found
    finally:
        assert client.close() == 0
    assert outside.read_text() == "safe\n" and git_config.read_text() == "[core]\n"  # judged on the host
    assert (box / "ws" / "in.txt").read_text() == "inside\n"
    assert (box / "ws" / "sub" / "new.txt").read_text() == "made\n"


def test_secrets_stay_unreadable(box: Path, backend: str) -> None:
    secret = box / "secrets" / "token"
    secret.parent.mkdir()
    secret.write_text("TOP-SECRET-VALUE\n")
    policy = box / "policy.toml"
    policy.write_text(f'extends = "workspace-write"\ndeny_read = ["{secret.parent}"]\n')
    client = start(box, backend, "--policy", str(policy))
    try:
        replies = [client.call("read_file", path=str(secret)),
                   client.call("exec", command=["cat", str(secret)]),
                   client.call("search", pattern="TOP-SECRET", path=str(secret.parent))]
        (box / "ws" / "link").symlink_to(secret)
        replies.append(client.call("read_file", path="link"))
    finally:
        assert client.close() == 0
    for reply in replies:
        assert "TOP-SECRET-VALUE" not in json.dumps(reply), reply
    assert replies[0]["isError"] and replies[1]["isError"] and replies[3]["isError"]


def test_cancel_kills_the_command_tree(box: Path, backend: str) -> None:
    client = start(box, backend)
    marker = f"mcp-cancel-{uuid.uuid4().hex[:8]}"
    try:
        client.send({"id": 99, "method": "tools/call",
                     "params": {"name": "exec", "arguments": {"command": f"sh -c 'sleep 60; : {marker}' & wait"}}})
        deadline = time.monotonic() + 10
        while not with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert with_marker(marker), "the command never started"
        client.send({"method": "notifications/cancelled", "params": {"requestId": 99, "reason": "test"}})
        deadline = time.monotonic() + 10
        while with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not with_marker(marker)  # the whole tree is gone, seen from the host
        assert client.request("ping")["result"] == {}  # the next reply is the ping's: 99 got none
    finally:
        assert client.close() == 0


def test_timeout_and_bad_calls_are_reported_not_fatal(box: Path, backend: str) -> None:
    client = start(box, backend)
    try:
        r = client.call("exec", command="sleep 30", timeout_ms=300)
        assert r["isError"] and r["structuredContent"]["timed_out"] is True
        assert client.call("exec", command=5)["isError"] is True
        assert client.call("exec", command=[])["isError"] is True
        assert client.call("exec", command="true", workdir="no/such/dir")["isError"] is True
        assert client.call("read_file", path="missing.txt")["isError"] is True
        assert client.call("search", pattern="(")["isError"] is True
        assert client.request("tools/call", {"name": "nope", "arguments": {}})["error"]["code"] == -32602
        assert client.request("no/such/method")["error"]["code"] == -32601
        client.send(b"this is not json")
        assert client.reply()["error"]["code"] == -32700
        client.send(b'[{"jsonrpc": "2.0", "id": 5, "method": "ping"}]')
        assert client.reply()["error"]["code"] == -32600
        assert client.call("exec", command=["echo", "still serving"])["structuredContent"]["stdout"] == \
            "still serving\n"
    finally:
        assert client.close() == 0


def test_stdin_eof_ends_the_server_and_leaves_nothing(box: Path, backend: str) -> None:
    client = start(box, backend)
    marker = f"mcp-eof-{uuid.uuid4().hex[:8]}"
    client.call("exec", command=f"setsid sh -c 'sleep 60; : {marker}' > /dev/null 2>&1 &")
    assert client.close() == 0
    deadline = time.monotonic() + 10
    while with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not with_marker(marker)
    assert not [c for c in psutil.Process().children(recursive=True) if c.pid == client.proc.pid]


def test_a_bad_policy_is_refused_before_serving(box: Path) -> None:
    proc = subprocess.run([*STOCKADE, "mcp", "--cwd", str(box / "ws"), "--policy", "no-such-profile"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "no-such-profile" in proc.stderr and proc.stdout == ""
    assert "Traceback" not in proc.stderr


def test_help_teaches(box: Path) -> None:
    proc = subprocess.run([*STOCKADE, "mcp", "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "MCP" in proc.stdout and '"args": ["mcp"' in proc.stdout
    assert os.path.isdir(box)

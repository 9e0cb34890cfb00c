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


def test_malformed_ids_and_invalid_unicode_never_end_the_server(box: Path, backend: str) -> None:
    """JSON allows ids no JSON-RPC peer may send and lone surrogates no writer can encode: both once killed us."""
    client = start(box, backend)
    try:
        for bad_id in ([1], {"a": 1}, None, True):
            client.send({"id": bad_id, "method": "tools/call", "params": {"name": "exec",
                                                                          "arguments": {"command": "true"}}})
            got = client.reply()
            assert got["id"] is None and got["error"]["code"] == -32600, got
        client.send({"method": "notifications/cancelled", "params": {"requestId": [1]}})
        client.send(b'{"jsonrpc": "2.0", "id": "\\ud800", "method": "ping"}')
        assert client.reply()["result"] == {}  # answered, the id made valid UTF-8
        for args in ({"command": "cat", "stdin": "\ud800"}, {"command": ["echo", "\ud800"]}):
            r = client.call("exec", **args)
            assert r["isError"] is True and "not valid Unicode" in r["content"][0]["text"], r
        r = client.call("write_file", path="x.txt", content="\ud800")
        assert r["isError"] is True and not (box / "ws" / "x.txt").exists()
        assert client.request("ping", {"x": 1}, timeout=10)["result"] == {}
    finally:
        assert client.close() == 0


def test_file_names_that_are_not_utf8_are_listed_not_fatal(box: Path, backend: str) -> None:
    """A non-UTF-8 name decodes to lone surrogates; the reply must still be valid UTF-8 JSON."""
    (box / "ws" / os.fsdecode(b"bad\xffname.txt")).write_text("needle\n")
    client = start(box, backend)
    try:
        listing = client.call("list_dir")["content"][0]["text"]
        assert "bad\ufffdname.txt" in listing
        assert "bad\ufffdname.txt:1: needle" in client.call("search", pattern="needle")["content"][0]["text"]
        assert client.call("exec", command="ls")["structuredContent"]["stdout"] == "bad\ufffdname.txt\n"
    finally:
        assert client.close() == 0


def test_a_cancel_never_cuts_a_reply_in_two(box: Path) -> None:
    """A cancel for a call whose (big) reply is being written must not leave half a line on stdout."""
    proc = subprocess.Popen([*STOCKADE, "mcp", "--cwd", str(box / "ws"), "--no-config"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None

    def send(message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
        proc.stdin.flush()

    try:
        send({"id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}}})
        assert json.loads(proc.stdout.readline())["id"] == 1
        send({"id": 2, "method": "tools/call",
              "params": {"name": "exec", "arguments": {"command": "head -c 3000000 /dev/zero | tr '\\0' a"}}})
        head = proc.stdout.read(16)  # the reply has started; megabytes of it wait on a full pipe
        send({"method": "notifications/cancelled", "params": {"requestId": 2}})
        time.sleep(0.5)
        send({"id": 3, "method": "ping"})
        time.sleep(0.5)
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = (head + rest).splitlines()
    ids = [json.loads(line)["id"] for line in lines]  # every line is one whole message
    assert ids == [2, 3]


def test_a_worker_that_dies_is_a_tool_error_not_an_internal_one(box: Path, backend: str) -> None:
    client = start(box, backend)
    marker = f"mcp-worker-{uuid.uuid4().hex[:8]}"
    try:
        client.send({"id": 7, "method": "tools/call", "params": {"name": "exec",
                                                                 "arguments": {"command": f"sleep 60; : {marker}"}}})
        deadline = time.monotonic() + 10
        while not with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = [p for p in psutil.Process(client.proc.pid).children(recursive=True)
                   if p.cmdline()[1:3] == ["-I", "-S"]]
        assert workers, "no session worker found"
        for worker in workers:
            worker.kill()
        got = client.reply()
        assert got["id"] == 7 and got["result"]["isError"] is True, got
        assert "worker died" in got["result"]["content"][0]["text"]
        assert client.call("exec", command="echo again")["structuredContent"]["stdout"] == "again\n"
    finally:
        assert client.close() == 0


def test_a_stray_print_does_not_reach_the_protocol(box: Path) -> None:
    """Only JSON-RPC on stdout: whatever else writes to fd 1 while we serve goes to stderr."""
    noisy = ("import sandbox.session as s\n"
             "start = s.Session.start\n"
             "def loud(self, *a, **k):\n"
             "    print('NOISE from a library', flush=True)\n"
             "    return start(self, *a, **k)\n"
             "s.Session.start = loud\n"
             "from agent.cli import main; main()\n")
    request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}) + "\n"
    proc = subprocess.run([sys.executable, "-c", noisy, "mcp", "--cwd", str(box / "ws"), "--no-config"],
                          input=request, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [{"jsonrpc": "2.0", "id": 1, "result": {}}]
    assert "NOISE from a library" in proc.stderr

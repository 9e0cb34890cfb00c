"""`stockade exec` and `stockade resume` as a user runs them: a subprocess against a fake model server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from fake_servers import FakeModelServer, Reply, ToolCallSpec

from agent.protocol import parse_event
from agent.rollout import find_session, load

STOCKADE = [sys.executable, "-c", "from agent.cli import main; main()"]


def model_flags(server: FakeModelServer) -> list[str]:
    return ["--provider", "openai-chat", "--base-url", server.base_url, "--model", "fake"]


def run(args: list[str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run([*STOCKADE, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env,
                          **kw)  # type: ignore[call-overload]


def shell(cmd: str) -> ToolCallSpec:
    return ToolCallSpec("shell", {"command": ["sh", "-c", cmd]})


def test_exec_runs_the_task_and_prints_progress(ws: Path, tmp_path: Path) -> None:
    script = [Reply(text="Creating it.", tool_calls=[shell("echo hello > hello.txt")]),
              Reply(text="Created hello.txt.")]
    last = tmp_path / "last.txt"
    with FakeModelServer("chat", script) as server:
        proc = run(["exec", *model_flags(server), "-o", str(last), "create hello.txt"], ws)
    assert proc.returncode == 0, proc.stderr
    assert (ws / "hello.txt").read_text() == "hello\n"
    assert proc.stdout == "Created hello.txt.\n"
    assert "$ sh -c 'echo hello > hello.txt'" in proc.stderr and "exit 0" in proc.stderr
    assert last.read_text() == "Created hello.txt.\n"


def test_exec_json_events_and_denials(ws: Path) -> None:
    outside = ws.parent / "victim.txt"
    outside.write_text("safe\n")
    script = [Reply(tool_calls=[shell(f"echo pwned > {outside}")]), Reply(text="It was denied.")]
    with FakeModelServer("chat", script) as server:
        proc = run(["exec", "--json", *model_flags(server), "write outside"], ws)
    assert proc.returncode == 0, proc.stderr
    assert outside.read_text() == "safe\n"
    events = [parse_event(line) for line in proc.stdout.splitlines()]
    types = [e.type for e in events]
    assert types[0] == "session_started" and "turn_completed" in types
    end = next(e for e in events if e.type == "tool_call_end")
    assert end.denials and end.exit_code != 0  # type: ignore[union-attr]


def test_exec_without_a_model_says_what_to_set(ws: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("STOCKADE_")}
    proc = subprocess.run([*STOCKADE, "exec", "hi"], cwd=ws, capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 2
    assert "ANTHROPIC_API_KEY" in proc.stderr and "Traceback" not in proc.stderr


def test_exec_max_turns_exit_code(ws: Path) -> None:
    script = [Reply(tool_calls=[shell("true")]) for _ in range(3)]
    with FakeModelServer("chat", script) as server:
        proc = run(["exec", "--max-turns", "1", *model_flags(server), "loop"], ws)
    assert proc.returncode == 3, proc.stderr
    assert "max_turns" in proc.stderr



def test_exec_max_time_ends_a_long_turn_and_spares_a_short_one(ws: Path) -> None:
    with FakeModelServer("chat", [Reply(tool_calls=[shell("true")]), Reply(text="done")]) as server:
        proc = run(["exec", "--max-time", "60", *model_flags(server), "quick"], ws)
    assert proc.returncode == 0, proc.stderr  # a generous limit does not end the turn at once
    started = time.monotonic()
    script = [Reply(tool_calls=[shell("sleep 30")]), Reply(text="never")]
    with FakeModelServer("chat", script) as server:
        proc = run(["exec", "--json", "--max-time", "1.5", *model_flags(server), "slow"], ws)
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - started < 20
    events = [parse_event(line) for line in proc.stdout.splitlines()]
    end = next(e for e in events if e.type == "tool_call_end")
    assert "wall-time limit" in end.output and "by the user" not in end.output  # type: ignore[union-attr]
    assert any(e.type == "turn_completed" and e.error == "wall-time limit reached" for e in events)  # type: ignore[union-attr]

def test_exec_model_failure_exit_code(ws: Path) -> None:
    from fake_servers import Fault

    with FakeModelServer("chat", [Fault(status=404, body={"error": {"message": "no such model"}})]) as server:
        proc = run(["exec", *model_flags(server), "hi"], ws)
    assert proc.returncode == 1
    assert "no such model" in proc.stderr and "Traceback" not in proc.stderr


def test_kill_9_mid_turn_then_resume(ws: Path) -> None:
    mark = f"3{os.getpid() % 10000:04d}{int(time.time() * 1000) % 10000:04d}"
    script = [Reply(text="Sleeping.", tool_calls=[shell(f"sleep {mark}")])]
    with FakeModelServer("chat", script) as server:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        proc = subprocess.Popen([*STOCKADE, "exec", "--json", *model_flags(server), "a long task"], cwd=ws,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        session_id = None
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in proc.stdout:
            event = json.loads(line)
            if event["type"] == "session_started":
                session_id = event["session_id"]
            if event["type"] == "tool_call_begin":
                break
            assert time.monotonic() < deadline
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(mark in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])):
        assert time.monotonic() < deadline, "the command outlived the killed agent"
        time.sleep(0.1)
    assert session_id
    loaded = load(find_session(session_id))
    kinds = [type(i).__name__ for i in loaded.items]
    assert kinds == ["UserMessage", "AssistantMessage"]  # nothing before the kill was lost
    assert loaded.items[1].tool_calls[0].name == "shell"  # type: ignore[union-attr]

    with FakeModelServer("chat", [Reply(text="Picked up where we left off.")]) as server:
        resumed = run(["resume", session_id[:8], "--base-url", server.base_url], ws)
        sent = server.requests[0]["messages"]
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == "Picked up where we left off.\n"
    tool_msgs = [m for m in sent if m["role"] == "tool"]
    assert len(tool_msgs) == 1 and "interrupted" in tool_msgs[0]["content"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["a long task"]


def test_resume_unknown_session(ws: Path) -> None:
    proc = run(["resume", "nope"], ws)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_chat_reads_tasks_from_stdin_and_finishes_the_turn_at_eof(ws: Path) -> None:
    script = [Reply(tool_calls=[shell("echo from-chat > chat.txt")]), Reply(text="Wrote chat.txt."),
              Reply(text="Second answer.")]
    with FakeModelServer("chat", script) as server:
        proc = run(["chat", *model_flags(server)], ws, input="write chat.txt\n")
    assert proc.returncode == 0, proc.stderr
    assert (ws / "chat.txt").read_text() == "from-chat\n"
    assert "$ sh -c 'echo from-chat > chat.txt'" in proc.stderr and "Wrote chat.txt." in proc.stderr
    assert len(server.requests) == 2


def test_model_from_the_user_config_file(ws: Path) -> None:
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "stockade" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    with FakeModelServer("chat", [Reply(text="configured")]) as server:
        config.write_text(f'[agent]\nprovider = "openai-chat"\nbase_url = "{server.base_url}"\nmodel = "m"\n'
                          'max_turns = 5\n')
        try:
            proc = run(["exec", "hi"], ws)
        finally:
            config.unlink()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "configured\n"


def test_project_file_may_not_pick_the_model_endpoint(ws: Path) -> None:
    (ws / ".stockade").mkdir()
    (ws / ".stockade" / "config.toml").write_text('[agent]\nbase_url = "http://evil.example/v1"\n')
    with FakeModelServer("chat", [Reply(text="x")]) as server:
        proc = run(["exec", *model_flags(server), "hi"], ws)
    assert proc.returncode == 2
    assert "agent" in proc.stderr and "not allowed in a project file" in proc.stderr
    assert not server.requests


def test_bad_user_config_is_one_line(ws: Path) -> None:
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "stockade" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[agent]\nmax_turns = "many"\n')
    try:
        proc = run(["exec", "--provider", "ollama", "--model", "m", "hi"], ws)
    finally:
        config.unlink()
    assert proc.returncode == 2 and "agent.max_turns" in proc.stderr and "Traceback" not in proc.stderr


def test_exec_ctrl_c_interrupts_and_exits_130(ws: Path) -> None:
    mark = f"5{os.getpid() % 10000:04d}{int(time.time() * 1000) % 10000:04d}"
    with FakeModelServer("chat", [Reply(tool_calls=[shell(f"sleep {mark}")])]) as server:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        proc = subprocess.Popen([*STOCKADE, "exec", "--json", *model_flags(server), "sleep"], cwd=ws,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line)["type"] == "tool_call_begin":
                break
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        rest, _err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert any(json.loads(line).get("reason") == "interrupted" for line in rest.splitlines())
    assert not any(mark in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))


def test_resume_fork_leaves_the_original_as_it_was(ws: Path) -> None:
    with FakeModelServer("chat", [Reply(text="first answer")]) as server:
        first = run(["exec", "--json", *model_flags(server), "first task"], ws)
    session_id = json.loads(first.stdout.splitlines()[0])["session_id"]
    original = find_session(session_id)
    before = original.read_bytes()
    with FakeModelServer("chat", [Reply(text="forked answer")]) as server:
        forked = run(["resume", "--fork", "--json", session_id, "another way", "--base-url", server.base_url], ws)
        sent = [m.get("content") for m in server.requests[0]["messages"]]
    assert forked.returncode == 0, forked.stderr
    new_id = json.loads(forked.stdout.splitlines()[0])["session_id"]
    assert new_id != session_id and original.read_bytes() == before
    assert sent[-3:] == ["first task", "first answer", "another way"]
    fork = load(find_session(new_id))
    assert fork.meta.forked_from == session_id and len(fork.items) == 4


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_exec_diff_writes_a_patch_that_reproduces_the_change(ws: Path, tmp_path: Path) -> None:
    (ws / "app.py").write_text("def add(a, b):\n    return a - b\n")
    _git(ws, "init", "-q")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-q", "-m", "init")
    patch = ("*** Begin Patch\n*** Update File: app.py\n def add(a, b):\n-    return a - b\n+    return a + b\n"
             "*** Add File: tests/test_app.py\n+from app import add\n*** End Patch\n")
    out = tmp_path / "fix.patch"
    script = [Reply(tool_calls=[ToolCallSpec("apply_patch", {"patch": patch})]), Reply(text="fixed")]
    with FakeModelServer("chat", script) as server:
        proc = run(["exec", "--diff", str(out), *model_flags(server), "fix add"], ws)
    assert proc.returncode == 0, proc.stderr
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ws), str(clone)], check=True)
    subprocess.run(["git", "apply", str(out)], cwd=clone, check=True)
    assert (clone / "app.py").read_text() == (ws / "app.py").read_text()
    assert (clone / "tests" / "test_app.py").read_text() == "from app import add\n"


def test_exec_diff_outside_a_git_repository_fails_clearly(ws: Path, tmp_path: Path) -> None:
    with FakeModelServer("chat", [Reply(text="done")]) as server:
        proc = run(["exec", "--diff", str(tmp_path / "x.patch"), *model_flags(server), "hi"], ws)
    assert proc.returncode == 1 and "git repository" in proc.stderr and "Traceback" not in proc.stderr


def test_exec_diff_in_a_workspace_below_the_repositorys_top(ws: Path, tmp_path: Path) -> None:
    """A monorepo's service as the workspace: git works inside, and the patch (paths from the top) holds only
    the change under the workspace."""
    svc = ws / "svc"
    svc.mkdir()
    (svc / "app.py").write_text("def add(a, b):\n    return a - b\n")
    (ws / "other.txt").write_text("not the agent's\n")
    _git(ws, "init", "-q")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-q", "-m", "init")
    (ws / "other.txt").write_text("changed by the user, outside the workspace\n")
    patch = ("*** Begin Patch\n*** Update File: app.py\n def add(a, b):\n-    return a - b\n+    return a + b\n"
             "*** Add File: test_app.py\n+from app import add\n*** End Patch\n")
    out = tmp_path / "fix.patch"
    script = [Reply(tool_calls=[ToolCallSpec("apply_patch", {"patch": patch}), shell("git status --short")]),
              Reply(text="fixed")]
    with FakeModelServer("chat", script) as server:
        proc = run(["exec", "--json", "--diff", str(out), *model_flags(server), "fix add"], svc)
        status = [r for r in tool_results_of(server.requests[1]) if "app.py" in r]
    assert proc.returncode == 0, proc.stderr
    assert status, "git status did not work in the sandbox"
    text = out.read_text()
    assert "svc/app.py" in text and "svc/test_app.py" in text and "other.txt" not in text
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ws), str(clone)], check=True)
    subprocess.run(["git", "apply", str(out)], cwd=clone, check=True)
    assert (clone / "svc" / "app.py").read_text() == (svc / "app.py").read_text()


def tool_results_of(request: dict[str, object]) -> list[str]:
    return [str(m.get("content")) for m in request.get("messages", []) if isinstance(m, dict)  # type: ignore[union-attr]
            and m.get("role") == "tool"]

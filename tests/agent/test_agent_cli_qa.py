"""Regressions from exploratory QA of `stockade exec` / `chat` / `resume`: each was a traceback, a wrong exit
code, a lost transcript or a silently widened policy. The CLI runs as a subprocess against a fake model server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from fake_servers import FakeModelServer, Reply, ToolCallSpec

from agent.rollout import find_session, load

STOCKADE = [sys.executable, "-c", "from agent.cli import main; main()"]


def model_flags(server: FakeModelServer) -> list[str]:
    return ["--provider", "openai-chat", "--base-url", server.base_url, "--model", "fake"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, *, input: str | bytes | None = None,
        **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it; stdout/stderr decoded leniently (the tests feed it invalid UTF-8)."""
    proc = subprocess.run([*STOCKADE, *args], cwd=cwd, capture_output=True, timeout=60, env=_env(**env),
                          input=input.encode() if isinstance(input, str) else input)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


def shell(cmd: str) -> ToolCallSpec:
    return ToolCallSpec("shell", {"command": ["sh", "-c", cmd]})


def one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def first_session(ws: Path, text: str = "first") -> str:
    with FakeModelServer("chat", [Reply(text=text)]) as server:
        proc = run(["exec", "--json", *model_flags(server), "first task"], ws)
    assert proc.returncode == 0, proc.stderr
    return str(json.loads(proc.stdout.splitlines()[0])["session_id"])


# -- output files: checked before the run ---------------------------------------------------------------


def test_output_file_in_a_missing_directory_fails_before_the_run(ws: Path) -> None:
    target = ws.parent / "missing" / "last.txt"
    with FakeModelServer("chat", [Reply(text="done")]) as server:
        proc = run(["exec", *model_flags(server), "-o", str(target), "hi"], ws)
        assert not server.requests  # no model call spent on a run whose result cannot be saved
    one_line_error(proc, 2)
    assert "-o" in proc.stderr and "does not exist" in proc.stderr


def test_diff_in_a_missing_directory_fails_before_the_run(ws: Path) -> None:
    target = ws.parent / "missing" / "fix.patch"
    with FakeModelServer("chat", [Reply(text="done")]) as server:
        proc = run(["exec", *model_flags(server), "--diff", str(target), "hi"], ws)
        resumed = run(["resume", "last", "--diff", str(target), "--base-url", server.base_url, "again"], ws)
        assert not server.requests
    one_line_error(proc, 2)
    one_line_error(resumed, 2)
    assert "--diff" in proc.stderr and "does not exist" in proc.stderr


# -- setup failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["exec", "chat"])
def test_sandbox_setup_failure_is_125_in_one_line(ws: Path, command: str) -> None:
    with FakeModelServer("chat", [Reply(text="never")]) as server:
        args = [command, "--backend", "none", *model_flags(server)] + (["hi"] if command == "exec" else [])
        proc = run(args, ws, input="hi\n")
        assert not server.requests
    one_line_error(proc, 125)
    assert "sandbox could not be set up" in proc.stderr and "full-access" in proc.stderr


def test_unwritable_transcript_directory_is_one_line_and_ephemeral_still_works(ws: Path) -> None:
    not_a_dir = ws.parent / "state-file"
    not_a_dir.write_text("")
    with FakeModelServer("chat", [Reply(text="ephemeral answer")]) as server:
        proc = run(["exec", *model_flags(server), "hi"], ws, XDG_STATE_HOME=str(not_a_dir))
        ephemeral = run(["exec", "--ephemeral", *model_flags(server), "hi"], ws, XDG_STATE_HOME=str(not_a_dir))
    one_line_error(proc, 2)
    assert "transcript" in proc.stderr and "--ephemeral" in proc.stderr
    assert ephemeral.returncode == 0 and ephemeral.stdout == "ephemeral answer\n"


# -- prompts that are not UTF-8 -----------------------------------------------------------------------


def test_prompt_with_invalid_utf8_from_stdin_or_argv(ws: Path) -> None:
    with FakeModelServer("chat", [Reply(text="ok"), Reply(text="ok")]) as server:
        from_stdin = run(["exec", *model_flags(server), "-"], ws, input=b"fix \xff this\n")
        from_argv = subprocess.run([*STOCKADE, "exec", *model_flags(server), os.fsdecode(b"fix \xfe that")],
                                   cwd=ws, capture_output=True, timeout=60, env=_env())
        sent = [r["messages"][-1]["content"] for r in server.requests]
    one_line_error(from_stdin, 0)
    assert from_argv.returncode == 0, from_argv.stderr.decode(errors="replace")
    assert sent == ["fix \ufffd this\n", "fix \ufffd that"]


# -- transcripts: torn, garbage, odd entries ----------------------------------------------------------------


def test_resume_after_a_torn_last_line_keeps_the_transcript_readable(ws: Path) -> None:
    session_id = first_session(ws)
    path = find_session(session_id)
    with open(path, "ab") as fh:
        fh.write(b'{"timestamp": "x", "type": "item", "payload": {"type": "user", "text": "caf\xc3')  # killed mid-write
    for answer in ("second", "third"):
        with FakeModelServer("chat", [Reply(text=answer)]) as server:
            proc = run(["resume", session_id, "--base-url", server.base_url, f"{answer} task"], ws)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"{answer}\n"
    loaded = load(path)
    assert not loaded.warnings
    assert [getattr(i, "text", None) for i in loaded.items] == [
        "first task", "first", "second task", "second", "third task", "third"]


def test_garbage_transcript_is_one_line_for_resume_and_list(ws: Path) -> None:
    session_id = first_session(ws)
    path = find_session(session_id)
    path.write_bytes(bytes(range(256)) * 8 + b"\n" + b"\xff\xfe\n" * 4)
    resumed = run(["resume", session_id, "more"], ws)
    listed = run(["resume", "--list"], ws)
    one_line_error(resumed, 2)
    assert "not a stockade transcript" in resumed.stderr
    one_line_error(listed, 0)
    assert session_id in listed.stdout and "unreadable" in listed.stdout


def test_list_survives_a_directory_and_a_dangling_link_among_the_transcripts(ws: Path) -> None:
    session_id = first_session(ws)
    day = find_session(session_id).parent
    (day / "rollout-20200101T000000-dddddddddddddddd.jsonl").mkdir()
    (day / "rollout-20200101T000000-eeeeeeeeeeeeeeee.jsonl").symlink_to(ws.parent / "gone.jsonl")
    listed = run(["resume", "--list"], ws)
    one_line_error(listed, 0)
    assert session_id in listed.stdout and "dddddddddddddddd" not in listed.stdout
    one_line_error(run(["resume", "dddd", "x"], ws), 2)
    with FakeModelServer("chat", [Reply(text="still fine")]) as server:
        last = run(["resume", "last", "--base-url", server.base_url, "again"], ws)
    assert last.returncode == 0 and last.stdout == "still fine\n", last.stderr


# -- the policy of a resumed session ------------------------------------------------------------------------


def test_resume_keeps_the_users_profile_and_says_when_options_change(ws: Path) -> None:
    secret = ws.parent / "secret.txt"
    secret.write_text("TOPSECRET\n")
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "stockade"
    (config / "profiles").mkdir(parents=True, exist_ok=True)
    (config / "profiles" / "strict.toml").write_text(f'mode = "workspace-write"\ndeny_read = ["{secret}"]\n')
    (config / "config.toml").write_text('profile = "strict"\n')
    read = [Reply(tool_calls=[shell(f"cat {secret}")]), Reply(text="done")]
    with FakeModelServer("chat", list(read)) as server:
        first = run(["exec", "--json", *model_flags(server), "read it"], ws)
    assert first.returncode == 0, first.stderr
    session_id = json.loads(first.stdout.splitlines()[0])["session_id"]
    assert "TOPSECRET" not in first.stdout
    with FakeModelServer("chat", list(read)) as server:
        resumed = run(["resume", "--json", session_id, "--base-url", server.base_url, "read it again"], ws)
    assert resumed.returncode == 0, resumed.stderr
    assert "TOPSECRET" not in resumed.stdout  # the strict profile still applies, not the mode's built-in one
    assert "changes the session's sandbox options" not in resumed.stderr
    with FakeModelServer("chat", [Reply(text="wider")]) as server:
        wider = run(["resume", session_id, "--network", "on", "--base-url", server.base_url, "go on"], ws)
    assert wider.returncode == 0, wider.stderr
    assert "changes the session's sandbox options: --network on" in wider.stderr


# -- Ctrl-C --------------------------------------------------------------------------------------------------


def test_ctrl_c_while_exec_waits_for_the_prompt_on_stdin_is_130(ws: Path) -> None:
    proc = subprocess.Popen([*STOCKADE, "exec", "--provider", "ollama", "--model", "m", "-"], cwd=ws,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    time.sleep(2.5)  # imported and blocked reading stdin
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Aborted" not in err


@pytest.mark.parametrize("grouped", [False, True])
def test_a_ctrl_c_that_escapes_the_front_end_still_exits_130(grouped: bool) -> None:
    """A second Ctrl-C landing during clean-up reaches trio as KeyboardInterrupt (inside a group when
    raised in a nursery): exit 130, not a traceback, click's "Aborted!" (1) or a death by SIGINT."""
    from agent.commands import _run_front_end

    async def front_end() -> int:
        if grouped:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                raise KeyboardInterrupt
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    outcome: object = None
    try:
        _run_front_end(front_end)
    except SystemExit as exited:
        outcome = exited.code
    except (KeyboardInterrupt, BaseExceptionGroup) as escaped:  # the bug: it escaped
        outcome = repr(escaped)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert outcome == 130

"""ci/stockade-fix as a CI job runs it: a real repository, real sandboxed test runs, a fake model server."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from fake_servers import FakeModelServer, Reply, ToolCallSpec

SCRIPT = Path(__file__).resolve().parents[2] / "ci" / "stockade-fix"
STOCKADE = shlex.join([sys.executable, "-c", "from agent.cli import main; main()"])
TEST = ["python3", "test_calc.py"]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def repo(ws: Path, body: str = "a - b") -> Path:
    (ws / "calc.py").write_text(f"def add(a, b):\n    return {body}\n")
    (ws / "test_calc.py").write_text("import sys\nfrom calc import add\n\nif add(2, 3) != 5:\n"
                                     "    sys.exit(f'FAILED: add(2, 3) gave {add(2, 3)}')\nprint('all good')\n")
    _git(ws, "init", "-q")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-q", "-m", "init")
    return ws


def fix(ws: Path, tmp_path: Path, server: FakeModelServer | None, *args: str, command: list[str] = TEST,
        out: Path | None = None) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("STOCKADE_")}
    env["STOCKADE"] = STOCKADE
    env["GITHUB_OUTPUT"] = str(tmp_path / "gh-output")
    if server is not None:
        env.update(STOCKADE_PROVIDER="openai-chat", STOCKADE_BASE_URL=server.base_url, STOCKADE_MODEL="fake")
    out = out or tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--workspace", str(ws), "--patch", str(out / "fix.patch"),
                           "--summary", str(out / "summary.md"), "--events", str(out / "events.jsonl"), *args,
                           "--", *command], capture_output=True, text=True, timeout=120, env=env)
    outputs: dict[str, str] = {}
    if (tmp_path / "gh-output").exists():
        outputs = dict(line.split("=", 1) for line in (tmp_path / "gh-output").read_text().splitlines())
    return proc, outputs


def sed(expr: str, file: str) -> ToolCallSpec:
    return ToolCallSpec("shell", {"command": ["sed", "-i", expr, file]})


def test_fixes_the_tests_and_emits_a_patch_that_reproduces_the_fix(ws: Path, tmp_path: Path) -> None:
    repo(ws)
    script = [Reply(tool_calls=[sed("s/a - b/a + b/", "calc.py")]),
              Reply(text="Cause: add subtracted. Changed it to a + b; the tests pass.")]
    with FakeModelServer("chat", script) as server:
        proc, outputs = fix(ws, tmp_path, server)
        first = server.requests[0]
    assert proc.returncode == 0, proc.stderr
    prompt = str(first["messages"])
    assert "python3 test_calc.py" in prompt and "add(2, 3) gave -1" in prompt  # the failure reached the model
    assert outputs == {"tests-passed": "true", "fixed": "true", "changed": "true",
                       "patch": str(tmp_path / "out" / "fix.patch")}
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "the tests pass after the fix" in summary and "Cause: add subtracted" in summary
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ws), str(clone)], check=True)
    subprocess.run(["git", "apply", str(tmp_path / "out" / "fix.patch")], cwd=clone, check=True)
    assert subprocess.run(TEST, cwd=clone, capture_output=True).returncode == 0
    assert (tmp_path / "out" / "events.jsonl").read_text().count('"type":"session_started"') == 1


def test_passing_tests_never_call_the_model(ws: Path, tmp_path: Path) -> None:
    repo(ws, body="a + b")
    with FakeModelServer("chat", [Reply(text="unused")]) as server:
        proc, outputs = fix(ws, tmp_path, server)
        assert server.requests == []
    assert proc.returncode == 0, proc.stderr
    assert outputs["tests-passed"] == "true" and outputs["fixed"] == "false" and outputs["changed"] == "false"
    assert (tmp_path / "out" / "fix.patch").read_bytes() == b""


def test_a_second_round_resumes_the_session_with_the_new_failure(ws: Path, tmp_path: Path) -> None:
    repo(ws)
    script = [Reply(tool_calls=[sed("s/a - b/a * b/", "calc.py")]), Reply(text="Fixed, I think."),
              Reply(tool_calls=[sed("s/a \\* b/a + b/", "calc.py")]), Reply(text="Now really fixed.")]
    with FakeModelServer("chat", script) as server:
        proc, outputs = fix(ws, tmp_path, server, "--attempts", "2")
        second_round = server.requests[2]
    assert proc.returncode == 0, proc.stderr
    text = str(second_round["messages"])
    assert "still fails after your change" in text and "add(2, 3) gave 6" in text
    assert "add(2, 3) gave -1" in text  # the same session: round one's history came along
    assert outputs["fixed"] == "true"
    assert "Now really fixed." in (tmp_path / "out" / "summary.md").read_text()
    patch = (tmp_path / "out" / "fix.patch").read_text()  # both rounds together: the change since the start
    assert "+    return a + b" in patch and "a * b" not in patch


def test_still_failing_exits_1_and_keeps_the_attempt(ws: Path, tmp_path: Path) -> None:
    repo(ws)
    script = [Reply(tool_calls=[sed("s/a - b/a * b/", "calc.py")]), Reply(text="Done.")]
    with FakeModelServer("chat", script) as server:
        proc, outputs = fix(ws, tmp_path, server, "--attempts", "1")
    assert proc.returncode == 1, proc.stderr
    assert outputs["tests-passed"] == "false" and outputs["changed"] == "true"
    assert "a * b" in (tmp_path / "out" / "fix.patch").read_text()
    assert "the tests still fail" in (tmp_path / "out" / "summary.md").read_text()


def test_the_agent_cannot_touch_git_or_leave_the_workspace(ws: Path, tmp_path: Path) -> None:
    repo(ws)
    victim = ws.parent / "victim.txt"
    victim.write_text("safe\n")
    hooks = ws / ".git" / "hooks" / "pre-commit"
    evil = ToolCallSpec("shell", {"command": ["sh", "-c", f"echo pwned > {victim}; echo 'curl x' > {hooks}; "
                                                           "sed -i 's/a - b/a + b/' calc.py"]})
    with FakeModelServer("chat", [Reply(tool_calls=[evil]), Reply(text="done")]) as server:
        proc, _ = fix(ws, tmp_path, server)
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "safe\n" and not hooks.exists()


def test_bad_input_is_refused_before_any_model_call(ws: Path, tmp_path: Path) -> None:
    with FakeModelServer("chat", [Reply(text="unused")]) as server:
        proc, _ = fix(ws, tmp_path, server)  # not a git repository
        assert proc.returncode == 2 and "not a git repository" in proc.stderr
        repo(ws)
        proc, _ = fix(ws, tmp_path, server, command=["no-such-test-runner-xyz"])
        assert proc.returncode == 2 and "not found in the sandbox" in proc.stderr
        proc, _ = fix(ws, tmp_path, server, "--policy", "no-such-profile")
        assert proc.returncode == 2 and "no-such-profile" in proc.stderr
        proc, _ = fix(ws, tmp_path, server, command=[])
        assert proc.returncode == 2 and "give the test command" in proc.stderr
        assert server.requests == []
    assert "Traceback" not in proc.stderr


def test_no_model_configured_says_what_to_set(ws: Path, tmp_path: Path) -> None:
    repo(ws)
    proc, outputs = fix(ws, tmp_path, None)
    assert proc.returncode == 2, proc.stderr
    assert "ANTHROPIC_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
    assert outputs["tests-passed"] == "false"


def sh(script: str) -> ToolCallSpec:
    return ToolCallSpec("shell", {"command": ["sh", "-c", script]})


def test_the_patch_is_the_agents_change_only(ws: Path, tmp_path: Path) -> None:
    """Changes made before the run and stockade-fix's own files (here inside the workspace) stay out of the patch;
    binary files, renames, deletions, modes, new directories and names with spaces reproduce on a clean clone."""
    spaced = ws.parent / "my ws"
    ws.rename(spaced)
    repo(spaced)
    (spaced / "old name.txt").write_text("rename me\n")
    (spaced / "gone.txt").write_text("delete me\n")
    (spaced / "img.bin").write_bytes(bytes(range(256)))
    (spaced / "notes.txt").write_text("notes\n")
    _git(spaced, "add", "-A")
    _git(spaced, "commit", "-q", "-m", "more")
    (spaced / "wip.txt").write_text("work in progress, not the agent's\n")  # already there when the job starts
    (spaced / "notes.txt").write_text("locally edited\n")
    change = ("sed -i 's/a - b/a + b/' calc.py && mv 'old name.txt' 'new name.txt' && rm gone.txt && "
              "mkdir -p 'new dir/sub' && printf 'x\\000y' > 'new dir/sub/data bin' && printf '\\001\\002' > img.bin && "
              "chmod +x test_calc.py")
    with FakeModelServer("chat", [Reply(tool_calls=[sh(change)]), Reply(text="Fixed.")]) as server:
        proc, outputs = fix(spaced, tmp_path, server, out=spaced / "ci-out")
    assert proc.returncode == 0, proc.stderr
    assert outputs["changed"] == "true"
    patch = (spaced / "ci-out" / "fix.patch").read_bytes()
    assert b"wip.txt" not in patch and b"ci-out" not in patch and b"locally edited" not in patch
    summary = (spaced / "ci-out" / "summary.md").read_text()
    assert "changed before stockade-fix ran" in summary and "`wip.txt`" in summary and "`notes.txt`" in summary
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(spaced), str(clone)], check=True)
    subprocess.run(["git", "apply", str(spaced / "ci-out" / "fix.patch")], cwd=clone, check=True)
    assert subprocess.run(TEST, cwd=clone, capture_output=True).returncode == 0
    assert (clone / "new dir" / "sub" / "data bin").read_bytes() == b"x\0y"
    assert (clone / "img.bin").read_bytes() == b"\1\2" and (clone / "new name.txt").read_text() == "rename me\n"
    assert not (clone / "gone.txt").exists() and not (clone / "old name.txt").exists()
    assert os.access(clone / "test_calc.py", os.X_OK) and not (clone / "wip.txt").exists()
    assert (clone / "notes.txt").read_text() == "notes\n"
    staged = subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=spaced)
    assert staged.returncode == 0  # the repository's own index was not used: nothing got staged


def test_a_workspace_below_the_top_level_still_gets_its_patch(ws: Path, tmp_path: Path) -> None:
    """A monorepo job runs in a subdirectory: the patch is not lost, and applies at the top level."""
    service = ws / "services" / "calc"
    service.mkdir(parents=True)
    (service / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (service / "test_calc.py").write_text("import sys\nfrom calc import add\nsys.exit(add(2, 3) != 5)\n")
    _git(ws, "init", "-q")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-q", "-m", "init")
    with FakeModelServer("chat", [Reply(tool_calls=[sed("s/a - b/a + b/", "calc.py")]), Reply(text="ok")]) as server:
        proc, outputs = fix(service, tmp_path, server)
    assert proc.returncode == 0, proc.stderr
    assert outputs["changed"] == "true"
    assert "+++ b/services/calc/calc.py" in (tmp_path / "out" / "fix.patch").read_text()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ws), str(clone)], check=True)
    subprocess.run(["git", "apply", str(tmp_path / "out" / "fix.patch")], cwd=clone, check=True)
    assert "a + b" in (clone / "services" / "calc" / "calc.py").read_text()


def test_huge_test_output_reaches_the_model_cut(ws: Path, tmp_path: Path) -> None:
    """A test run that prints megabytes (on one line) must not become a megabytes-long prompt."""
    repo(ws)
    (ws / "noisy.py").write_text("import sys\nprint(('y' * 300 + '\\n') * 10_000, end='')\nprint('x' * 3_000_000)\n"
                                 "sys.exit('FAILED: the real error, at the end')\n")
    with FakeModelServer("chat", [Reply(text="Cannot fix.")]) as server:
        proc, _ = fix(ws, tmp_path, server, "--attempts", "1", command=["python3", "noisy.py"])
        prompt = str(server.requests[0]["messages"])
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "FAILED: the real error, at the end" in prompt and "characters cut" in prompt
    assert len(prompt) < 40_000


def test_stop_check_keeps_the_agent_at_it_within_one_round(ws: Path, tmp_path: Path) -> None:
    repo(ws)
    script = [Reply(tool_calls=[sed("s/a - b/a * b/", "calc.py")]), Reply(text="Fixed, I think."),
              Reply(tool_calls=[sed("s/a \\* b/a + b/", "calc.py")]), Reply(text="Now it passes.")]
    with FakeModelServer("chat", script) as server:
        proc, outputs = fix(ws, tmp_path, server, "--attempts", "1", "--stop-check")
        fed_back = str(server.requests[2]["messages"])
    assert proc.returncode == 0, proc.stderr
    assert "<stop_check>" in fed_back and "add(2, 3) gave 6" in fed_back  # the check's failure, mid-round
    assert outputs["fixed"] == "true"

"""The `stockade` command line, run as a real subprocess like a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

STOCKADE = shutil.which("stockade", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
pytestmark = pytest.mark.skipif(STOCKADE is None, reason="stockade console script not installed")


def stockade(*args: str, cwd: Path | None = None, input: bytes | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([STOCKADE, *args], cwd=cwd, input=input, capture_output=True, timeout=60,
                          env=env)


def test_run_allowed_and_denied_write(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    ws = tmp_path / "ws"
    ws.mkdir()
    res = stockade("run", "--cwd", str(ws), "--", "sh", "-c",
                   f"echo allowed > inside.txt && cat inside.txt; echo denied > {outside}/x.txt")
    assert b"allowed" in res.stdout
    assert (ws / "inside.txt").read_text() == "allowed\n"
    assert not (outside / "x.txt").exists()
    assert res.returncode != 0


@pytest.mark.parametrize("code", [0, 3, 42])
def test_exit_code_passthrough(tmp_path: Path, code: int) -> None:
    assert stockade("run", "--cwd", str(tmp_path), "--", "sh", "-c", f"exit {code}").returncode == code


def test_signal_is_128_plus_n(tmp_path: Path) -> None:
    assert stockade("run", "--cwd", str(tmp_path), "--", "sh", "-c", "kill -TERM $$").returncode == 143


def test_timeout_exit_124(tmp_path: Path) -> None:
    res = stockade("run", "--cwd", str(tmp_path), "--timeout", "0.5", "--", "sleep", "30")
    assert res.returncode == 124
    assert b"timed out" in res.stderr


def test_json_result(tmp_path: Path) -> None:
    res = stockade("run", "--json", "--cwd", str(tmp_path), "--", "sh", "-c", "echo out; echo err >&2; exit 5")
    assert res.returncode == 5
    data = json.loads(res.stdout)
    assert data["exit_code"] == 5 and data["stdout"] == "out\n" and data["stderr"] == "err\n"
    assert data["backend"] in ("bwrap", "landlock") and data["protections"]["filesystem-write"] == "enforced"


def test_stdin_passthrough(tmp_path: Path) -> None:
    res = stockade("run", "--cwd", str(tmp_path), "--", "cat", input=b"hello stdin")
    assert res.stdout == b"hello stdin"


def test_command_not_found(tmp_path: Path) -> None:
    res = stockade("run", "--cwd", str(tmp_path), "--", "no-such-command-xyz")
    assert res.returncode == 127 and b"command not found" in res.stderr


@pytest.mark.parametrize("args,needle", [
    (["run", "--policy", "nope", "--", "true"], b"unknown profile 'nope'"),
    (["run", "--network", "maybe", "--", "true"], b"--network"),
    (["run", "--bogus", "--", "true"], b"no such option: --bogus"),
    (["run", "--timeout", "soon", "--", "true"], b"--timeout"),
    (["run"], b"no command given"),
])
def test_bad_input_one_line_exit_2(tmp_path: Path, args: list[str], needle: bytes) -> None:
    res = stockade(*args, cwd=tmp_path)
    assert res.returncode == 2, res
    assert needle in res.stderr
    assert res.stderr.count(b"\n") == 1 and b"Traceback" not in res.stderr


def test_bad_policy_file_names_file_and_key(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text("[limits]\npids = 'many'\n")
    res = stockade("run", "--policy", str(f), "--cwd", str(tmp_path), "--", "true")
    assert res.returncode == 2
    assert res.stderr.decode().strip() == f"stockade: {f}: limits.pids: expected an integer, got a string"


def test_backend_none_refused_for_confining_policy(tmp_path: Path) -> None:
    res = stockade("run", "--backend", "none", "--cwd", str(tmp_path), "--", "true")
    assert res.returncode == 125 and b"full-access" in res.stderr


def test_full_access_runs_unconfined(tmp_path: Path) -> None:
    outside = tmp_path / "o.txt"
    res = stockade("run", "--policy", "full-access", "--cwd", str(tmp_path / ".."), "--",
                   "sh", "-c", f"echo x > {outside}")
    assert res.returncode == 0 and outside.read_text() == "x\n"


def test_run_help_teaches() -> None:
    res = stockade("run", "--help")
    assert res.returncode == 0
    for needle in (b"--policy", b"--writable", b"--network", b"--timeout", b"--backend", b"--json", b"124", b"125"):
        assert needle in res.stdout


def test_explain(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    res = stockade("explain", "--cwd", str(tmp_path))
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    assert "backend:" in out and f"{tmp_path}/.git" in out and "seccomp" in out
    data = json.loads(stockade("explain", "--json", "--cwd", str(tmp_path)).stdout)
    assert data["backend"] in ("bwrap", "landlock")


def test_doctor() -> None:
    res = stockade("doctor")
    assert res.returncode == 0, res.stdout
    assert b"landlock ABI" in res.stdout and b"auto would use" in res.stdout
    data = json.loads(stockade("doctor", "--json").stdout)
    assert data["ok"] is True and data["auto"]["workspace-write"]["backend"]


def test_json_reports_how_limits_are_enforced(tmp_path: Path) -> None:
    data = json.loads(stockade("run", "--json", "--cwd", str(tmp_path), "--", "true").stdout)
    assert data["protections"]["limits"].startswith(("enforced", "best-effort"))


def test_denial_hint_even_when_the_command_succeeds(tmp_path: Path) -> None:
    res = stockade("run", "--cwd", str(tmp_path), "--", "sh", "-c", "echo x > /etc/stockade-hint-test; true")
    assert res.returncode == 0
    assert b"stockade: denied write /etc/stockade-hint-test (outside the writable roots)" in res.stderr
    assert not os.path.exists("/etc/stockade-hint-test")

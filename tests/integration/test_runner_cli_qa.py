"""QA regressions for the standalone runner (`stockade run`, `explain`, `doctor`) and its policy input.

Each test runs the real CLI as a subprocess, like a user would. Workspaces live under /srv (the sandbox's /tmp
is private) and the XDG config/cache/state directories point into the test's own directory, so nothing is
left in $HOME.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "from agent.cli import main; main()"]
SRV = "/srv"
SLEEPER = "3137.4159"  # a sleep duration no other process uses, to look for survivors

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="runs real sandboxed processes (Linux)"),
    pytest.mark.skipif(not os.access(SRV, os.W_OK), reason="needs a writable /srv for test workspaces"),
]


@dataclass
class Box:
    """A test directory: `ws` is the workspace, `config` the user config file (XDG_CONFIG_HOME is `base`)."""

    base: Path
    ws: Path
    env: dict[str, str]

    @property
    def config(self) -> Path:
        return self.base / "xdg-config" / "stockade" / "config.toml"

    def write_config(self, text: str) -> Path:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(text)
        return self.config

    def write_project(self, text: str) -> Path:
        path = self.ws / ".stockade" / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def run(self, *args: str, cwd: Path | None = None, input: bytes | None = None,
            env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*CLI, *args], cwd=cwd or self.ws, input=input, capture_output=True,
                              timeout=timeout, env={**self.env, **(env or {})})


@pytest.fixture
def box() -> Iterator[Box]:
    base = Path(tempfile.mkdtemp(prefix="stockade-cliqa-", dir=SRV))
    ws = base / "ws"
    ws.mkdir()
    env = {**os.environ, "XDG_CONFIG_HOME": str(base / "xdg-config"), "XDG_CACHE_HOME": str(base / "xdg-cache"),
           "XDG_STATE_HOME": str(base / "xdg-state")}
    try:
        yield Box(base, ws, env)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def one_line_error(res: subprocess.CompletedProcess[bytes], *needles: str) -> str:
    """Bad input: exit 2, no traceback, one `stockade:` line naming what was wrong."""
    err = res.stderr.decode()
    assert res.returncode == 2, (res.returncode, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stockade: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---------------------------------------------------------------- --timeout and limits


@pytest.mark.parametrize("value", ["inf", "nan", "3e6", "-inf"])
def test_timeout_must_be_finite_and_bounded(box: Box, value: str) -> None:
    # inf and 3e6 crashed the supervisor (OverflowError in epoll), nan silently meant "no timeout".
    one_line_error(box.run("run", "--timeout", value, "--", "true"), "--timeout")


def test_large_but_valid_timeout_runs(box: Box) -> None:
    res = box.run("run", "--timeout", "1e6", "--", "echo", "ok")
    assert res.returncode == 0 and res.stdout == b"ok\n", res


@pytest.mark.parametrize("table,key,value", [
    ("limits", "timeout", "inf"),
    ("limits", "timeout", "nan"),
    ("limits", "pids", "99999999999999999999999"),
    ("limits", "file_size_mb", "99999999999999999"),
    ("limits", "memory_mb", "99999999999999999"),
    ("limits", "cpu_seconds", "99999999999999999999"),
])
def test_config_limits_must_be_finite_and_bounded(box: Box, table: str, key: str, value: str) -> None:
    # These crashed the run (traceback), failed setup (125) or dropped the limit with only a warning.
    path = box.write_config(f"[{table}]\n{key} = {value}\n")
    one_line_error(box.run("run", "--", "true"), str(path), f"{table}.{key}")


# ---------------------------------------------------------------- option parsing


def test_flag_given_a_value_says_so(box: Box) -> None:
    one_line_error(box.run("run", "--json=1", "--", "true"), "--json takes no value")


@pytest.mark.parametrize("option", ["--cwd", "--policy", "--writable"])
def test_empty_option_value_is_refused(box: Box, option: str) -> None:
    # `--cwd "$UNSET"` used to run the command in the current directory instead.
    marker = box.base / "not-here"
    marker.mkdir()
    res = box.run("run", option, "", "--", "sh", "-c", "touch made-here", cwd=marker)
    one_line_error(res, option, "empty")
    assert not (marker / "made-here").exists()


def test_explain_bad_backend_is_usage_error(box: Box) -> None:
    one_line_error(box.run("explain", "--backend", "bogus"), "--backend", "bogus")


@pytest.mark.parametrize("args", [["--network", "off"], ["--allow-domain", "pypi.org"]])
def test_full_access_refuses_network_restrictions_it_cannot_enforce(box: Box, args: list[str]) -> None:
    # Accepted and silently ignored before: full-access runs unconfined, network on.
    one_line_error(box.run("run", "--policy", "full-access", *args, "--", "true"), "full-access")


# ---------------------------------------------------------------- command lookup


def test_env_path_is_used_to_find_the_command(box: Box) -> None:
    tools = box.ws / "my tools"
    tools.mkdir()
    tool = tools / "mytool"
    tool.write_text("#!/bin/sh\necho mytool ran\n")
    tool.chmod(0o755)
    res = box.run("run", "--env", f"PATH={tools}:/usr/bin:/bin", "--", "mytool")
    assert res.returncode == 0 and res.stdout == b"mytool ran\n", res
    res = box.run("run", "--env", "PATH=my tools:/usr/bin:/bin", "--", "mytool")
    assert res.returncode == 0 and res.stdout == b"mytool ran\n", res
    res = box.run("run", "--env", "PATH=/nonexistent", "--", "ls")
    assert res.returncode == 127 and b"ls: command not found" in res.stderr, res


@pytest.mark.parametrize("args,code", [
    (["--", "no-such-command-xyz"], 127),
    (["--", "./no-such-file"], 127),
    (["--backend", "seatbelt", "--", "true"], 125),
])
def test_json_prints_an_object_when_nothing_ran(box: Box, args: list[str], code: int) -> None:
    res = box.run("run", "--json", *args)
    assert res.returncode == code, res
    data = json.loads(res.stdout)
    assert data["exit_code"] == code and data["returncode"] == code and data["error"]
    assert data["timed_out"] is False and data["denials"] == []


# ---------------------------------------------------------------- stdio


def test_reader_closing_the_pipe_is_sigpipe_not_a_traceback(box: Box) -> None:
    marker = box.base / "sleeper-started"
    proc = subprocess.Popen([*CLI, "run", "--writable", str(box.base), "--", "sh", "-c",
                             f"sleep {SLEEPER} & touch '{marker}'; yes"],
                            cwd=box.ws, env=box.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"y\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 128 + signal.SIGPIPE
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert marker.exists()
    survivors = subprocess.run(["pgrep", "-f", f"sleep {SLEEPER}"], capture_output=True)
    assert survivors.stdout == b"", survivors.stdout


@pytest.mark.parametrize("redirect", [">&-", "2>&-", "<&-"])
def test_closed_stdio_fd_is_not_a_crash(box: Box, redirect: str) -> None:
    cli = " ".join(f"'{a}'" for a in CLI)
    script = f"{cli} run -- sh -c 'echo out; echo err >&2' {redirect}; echo rc=$?"
    res = subprocess.run(["sh", "-c", script], cwd=box.ws, env=box.env, capture_output=True, timeout=60)
    assert b"rc=0" in res.stdout, res
    assert b"Traceback" not in res.stderr, res


# ---------------------------------------------------------------- policy and config files


def test_unknown_profile_in_user_file_names_the_file(box: Box) -> None:
    path = box.write_config('profile = "nope"\n')
    line = one_line_error(box.run("run", "--", "true"), "unknown profile 'nope'")
    assert line.startswith(f"stockade: {path}: profile: "), line


def test_extends_is_relative_to_the_extending_file(box: Box) -> None:
    conf = box.base / "conf"
    conf.mkdir()
    (conf / "base.toml").write_text('mode = "read-only"\n')
    (conf / "p.toml").write_text('extends = "base.toml"\n')
    res = box.run("run", "--policy", str(conf / "p.toml"), "--", "sh", "-c", "touch x")
    assert res.returncode != 0 and not (box.ws / "x").exists(), res
    (conf / "p.toml").write_text('extends = "nope"\n')
    line = one_line_error(box.run("run", "--policy", str(conf / "p.toml"), "--", "true"))
    assert line.startswith(f"stockade: {conf / 'p.toml'}: extends: unknown profile 'nope'"), line


def test_project_file_cannot_empty_secret_patterns(box: Box) -> None:
    box.write_config('[env]\ninherit = "all"\n')
    path = box.write_project("[env]\nsecret_patterns = []\n")
    res = box.run("run", "--", "sh", "-c", 'echo "[$QA_API_TOKEN]"', env={"QA_API_TOKEN": "hunter2"})
    assert b"hunter2" not in res.stdout
    one_line_error(res, str(path), "env.secret_patterns")


@pytest.mark.parametrize("limits", ["timeout = 0", "timeout = 10000", "memory_mb = 0", "pids = 100000"])
def test_project_file_cannot_raise_limits(box: Box, limits: str) -> None:
    box.write_config("[limits]\ntimeout = 900\n")
    path = box.write_project(f"[limits]\n{limits}\n")
    one_line_error(box.run("run", "--", "true"), str(path), "limits.")


def test_project_file_may_lower_limits(box: Box) -> None:
    box.write_project("[limits]\ntimeout = 30\nmemory_mb = 1024\npids = 100\n")
    res = box.run("run", "--", "echo", "ok")
    assert res.returncode == 0 and res.stdout == b"ok\n", res


def test_deleted_current_directory(box: Box) -> None:
    gone = box.base / "gone"
    code = "import os, sys; d = sys.argv.pop(1); os.chdir(d); os.rmdir(d); from agent.cli import main; main()"

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        gone.mkdir()
        return subprocess.run([sys.executable, "-c", code, str(gone), *args], capture_output=True, env=box.env,
                              cwd=box.base, timeout=60)

    one_line_error(run("run", "--", "true"), "--cwd", "no longer exists")
    one_line_error(run("explain"), "--cwd", "no longer exists")
    res = run("doctor", "--json")
    assert res.returncode in (0, 1) and b"Traceback" not in res.stderr, res
    assert "ok" in json.loads(res.stdout)


# ---------------------------------------------------------------- explain


def test_explain_full_access_claims_no_protection(box: Box) -> None:
    res = box.run("explain", "--policy", "full-access")
    out = res.stdout.decode()
    assert res.returncode == 0, res
    assert "unconfined" in out
    assert "protected (read-only)" not in out and "unreadable:" not in out and "private /tmp" not in out

"""The engine off Linux, tested as far as Linux allows.

Windows: `sandbox.execute.run` routes to `sandbox.execute_windows` when
`sys.platform` is "win32"; here that route runs for real with a process-group
stand-in for the job object (the Win32 calls themselves are never run here).
macOS: the POSIX supervisor without pidfd and `os.waitid` (CPython has no
waitid on macOS), rlimits without RLIMIT_AS, honest protections. Plus imports
with `resource`/`fcntl` missing, the CLI's backend names, and Seatbelt's
launch wired to the proxy's loopback port.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.host import HostFacts
from policies.model import Limits, Mode, NetworkMode, NetworkPolicy, SandboxPolicy
from sandbox import execute, execute_windows, limits
from sandbox.detect import host_facts

PY = sys.executable
ROOT = str(Path(__file__).resolve().parents[2])


def _pin_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cache this (Linux) host's facts first: a faked sys.platform must not poison detect's cache."""
    from sandbox import detect

    monkeypatch.setattr(detect, "_CACHE", host_facts())


def _full(tmp_path: Path, **kw: object) -> SandboxPolicy:
    return SandboxPolicy(mode=Mode.FULL_ACCESS, workspace=str(tmp_path), **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- imports


def _fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})


def test_modules_import_without_resource_or_fcntl() -> None:
    """What Windows lacks: the engine, CLI, proxy and both new backends must still import."""
    res = _fresh(
        "import sys\n"
        "for name in ('resource', 'fcntl', 'termios', 'grp'):\n"
        "    sys.modules[name] = None\n"
        "import sandbox.execute, sandbox.execute_windows, sandbox.limits, sandbox.cli, sandbox.proxy\n"
        "import sandbox.backends.windows, sandbox.backends.seatbelt, sandbox.cli_full\n"
        "from sandbox.limits import child_limits, ChildLimits\n"
        "from policies.model import Limits\n"
        "from policies.host import HostFacts\n"
        "assert sandbox.limits.resource is None\n"
        "assert child_limits(Limits(), HostFacts(platform='windows'), None) == ChildLimits()\n"
        "print('ok')\n")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_linux_cold_path_imports_nothing_new() -> None:
    """`stockade run` on Linux must not pay for the Windows or macOS pieces."""
    res = _fresh("import sys\nimport sandbox.cli, sandbox.execute\nprint(' '.join(sorted(sys.modules)))")
    assert res.returncode == 0, res.stderr
    loaded = set(res.stdout.split())
    for name in ("sandbox.execute_windows", "sandbox.backends.windows", "sandbox.backends.seatbelt",
                 "sandbox.proxy", "queue", "ctypes", "psutil"):
        assert name not in loaded, name


# ---------------------------------------------------------------- Windows route (job stand-in)


class GroupJob(execute_windows.Job):
    """The job object's contract with a process group: what the Windows pump is tested against on Linux."""

    def __init__(self, hold: bool = True) -> None:
        self.pid: int | None = None
        self.hold = hold
        self.error = None if hold else "stand-in refuses"
        self.terminated = 0

    def adopt(self, popen: subprocess.Popen[bytes]) -> bool:
        self.pid = popen.pid
        return self.hold

    def terminate(self) -> None:
        self.terminated += 1
        if self.pid is not None and self.hold:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def windows_route(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[GroupJob]]:
    """sys.platform is "win32" for the engine; Popen gets POSIX options, the job is a process group."""
    jobs: list[GroupJob] = []

    def factory() -> GroupJob:
        jobs.append(GroupJob())
        return jobs[-1]

    _pin_host(monkeypatch)
    monkeypatch.setattr(execute_windows, "popen_options", lambda: {"start_new_session": True})
    monkeypatch.setattr(execute_windows, "make_job", factory)
    monkeypatch.setattr(sys, "platform", "win32")
    yield jobs


def test_windows_prepare_has_no_preexec_no_cgroup(tmp_path: Path, windows_route: list[GroupJob]) -> None:
    prep = execute.prepare(["true"], _full(tmp_path), backend="none")
    try:
        assert prep.launch.preexec_fn is None and prep.cgroup is None
    finally:
        prep.cleanup()


def test_windows_route_captures_output_and_exit_code(tmp_path: Path, windows_route: list[GroupJob]) -> None:
    seen: list[tuple[str, bytes]] = []
    result = execute.run([PY, "-c", "import sys; sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(3)"],
                         _full(tmp_path), backend="none", on_output=lambda s, c: seen.append((s, c)))
    assert (result.exit_code, result.signal, result.stdout, result.stderr) == (3, None, b"out", b"err")
    assert b"".join(c for s, c in seen if s == "stdout") == b"out"
    assert result.protections["tree-kill"] == execute_windows.JOB_TREE_KILL
    assert len(windows_route) == 1 and windows_route[0].terminated >= 1  # leftovers killed after the exit


def test_windows_route_feeds_stdin_and_caps_output(tmp_path: Path, windows_route: list[GroupJob]) -> None:
    data = b"x" * 300_000
    policy = _full(tmp_path, limits=Limits(output_bytes=1000))
    result = execute.run([PY, "-c", "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d * 2)"],
                         policy, backend="none", stdin=data)
    assert result.exit_code == 0 and result.stdout_total == 600_000 and result.stdout_truncated
    assert len(result.stdout) < 1100


def test_windows_route_timeout_kills_the_tree(tmp_path: Path, windows_route: list[GroupJob]) -> None:
    marker = tmp_path / "late"
    script = f"(sleep 2; touch {marker}) & sleep 30"
    started = time.monotonic()
    result = execute.run(["sh", "-c", script], _full(tmp_path, limits=Limits(timeout=0.5)), backend="none")
    assert result.timed_out and result.signal is None and result.exit_code is not None
    assert time.monotonic() - started < 10
    assert [d.kind for d in result.denials] == ["timeout"]
    time.sleep(2.5)
    assert not marker.exists()  # the background grandchild died with the job


def test_windows_route_exec_failure_is_127(tmp_path: Path, windows_route: list[GroupJob]) -> None:
    result = execute.run([str(tmp_path / "missing")], _full(tmp_path), backend="none")
    assert result.exit_code == 127 and b"missing" in result.stderr


def test_windows_route_without_a_job_says_so(tmp_path: Path, windows_route: list[GroupJob],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute_windows, "make_job", lambda: GroupJob(hold=False))
    result = execute.run(["true"], _full(tmp_path), backend="none")
    assert result.exit_code == 0
    assert result.protections["tree-kill"].startswith("best-effort: the main process only")
    assert any("tree kill covers the main process only" in w for w in result.warnings)


def test_windows_runner_setup_failure_is_a_setup_denial(tmp_path: Path) -> None:
    prep = execute.prepare(["true"], _full(tmp_path), backend="none")
    try:
        prep = dataclasses.replace(prep, backend="windows")
        err = execute.Capture(1000)
        err.add(b"stockade: windows sandbox setup failed: [WinError 5] Access is denied\n")
        result = execute.build_result(prep, 0, None, execute.Capture(10), err, timed_out=False, duration=0.1,
                                      exit_code=125)
        assert result.exit_code == 125 and result.signal is None
        assert [d.kind for d in result.denials] == ["setup"]
        ok = execute.build_result(prep, 0, None, execute.Capture(10), execute.Capture(10), timed_out=False,
                                  duration=0.1, exit_code=0xC0000005)
        assert ok.exit_code == 0xC0000005 and ok.signal is None and ok.denials == []
    finally:
        prep.cleanup()


def test_windows_runner_maps_unrunnable_commands() -> None:
    from sandbox.backends.windows import CommandNotRunnable

    assert CommandNotRunnable("x", 2, "not found").exit_code == 127
    assert CommandNotRunnable("x", 193, "bad exe").exit_code == 126


# ---------------------------------------------------------------- macOS pieces


@pytest.fixture
def no_pidfd_no_waitid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The POSIX supervisor as macOS's CPython sees it: neither os.pidfd_open nor os.waitid."""
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    monkeypatch.delattr(os, "waitid", raising=False)


def test_posix_engine_without_pidfd_or_waitid(tmp_path: Path, no_pidfd_no_waitid: None) -> None:
    result = execute.run(["sh", "-c", "echo hi; exit 4"], _full(tmp_path), backend="none")
    assert (result.exit_code, result.stdout) == (4, b"hi\n")
    marker = tmp_path / "late"
    result = execute.run(["sh", "-c", f"(sleep 2; touch {marker}) & sleep 30"],
                         _full(tmp_path, limits=Limits(timeout=0.5)), backend="none")
    assert result.timed_out and result.signal == signal.SIGKILL
    time.sleep(2.5)
    assert not marker.exists()


def test_has_exited_without_waitid(no_pidfd_no_waitid: None) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert not execute.has_exited(proc.pid)
        proc.kill()
        deadline = time.monotonic() + 5
        while not execute.has_exited(proc.pid):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert proc.poll() is not None  # has_exited did not reap it
    finally:
        proc.kill()
        proc.wait()


def test_exit_watch_needs_kqueue() -> None:
    import select

    if hasattr(select, "kqueue"):  # a BSD or macOS host: the watch must fire on exit
        proc = subprocess.Popen(["sleep", "0.2"])
        watch = execute.exit_watch(proc.pid)
        assert watch is not None
        assert watch.control(None, 1, 5)  # type: ignore[attr-defined]
        watch.close()  # type: ignore[attr-defined]
        proc.wait()
    else:
        assert execute.exit_watch(os.getpid()) is None


def test_macos_limits_skip_rlimit_as_and_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    monkeypatch.setattr(sys, "platform", "darwin")
    host = HostFacts(platform="macos", uid=501)
    plan = limits.child_limits(Limits(memory_mb=512, pids=64, file_size_mb=10), host, None)
    kinds = [r for r, _, _ in plan.rlimits]
    assert resource.RLIMIT_AS not in kinds and resource.RLIMIT_FSIZE in kinds and resource.RLIMIT_NPROC in kinds
    assert any("memory limit 512 MB not enforced" in w for w in plan.warnings)
    assert limits.limits_protection(host).startswith("best-effort: rlimits only")
    assert "pids not limited" in limits.limits_protection(dataclasses.replace(host, uid=0))


def test_user_tasks_without_proc_counts_with_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert limits.user_tasks(os.getuid()) >= 1  # this process at least
    assert limits.user_tasks(2_000_000_000) == 0


def test_macos_reports_tree_kill_honestly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _pin_host(monkeypatch)
    monkeypatch.setattr(sys, "platform", "darwin")
    prep = execute.prepare(["true"], _full(tmp_path), backend="none")
    try:
        assert prep.protections["tree-kill"] == execute.MACOS_TREE_KILL
    finally:
        prep.cleanup()


def test_windows_limits_protection() -> None:
    assert "job object" in limits.limits_protection(HostFacts(platform="windows"))


# ---------------------------------------------------------------- CLI and Seatbelt wiring


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-c", "from sandbox.cli import main; main()", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})


def test_cli_backend_names_match_the_registry() -> None:
    from sandbox.backends import ALL_BACKENDS
    from sandbox.cli import BACKENDS, RUN_OPTIONS

    assert set(BACKENDS) == set(ALL_BACKENDS)
    meta = next(m for n, m, _, _ in RUN_OPTIONS if n == "--backend")
    assert meta is not None and "seatbelt" in meta and "windows" in meta


@pytest.mark.parametrize("backend", ["seatbelt", "windows"])
def test_cli_accepts_platform_backends(tmp_path: Path, backend: str) -> None:
    res = _cli("run", "--no-config", "--cwd", str(tmp_path), "--backend", backend, "--", "true")
    assert res.returncode == 125, res.stderr  # a setup failure on Linux, not a usage error
    assert "unavailable" in res.stderr and "is not one of" not in res.stderr


def test_cli_rejects_unknown_backend(tmp_path: Path) -> None:
    res = _cli("run", "--no-config", "--cwd", str(tmp_path), "--backend", "jail", "--", "true")
    assert res.returncode == 2 and "seatbelt" in res.stderr


def test_seatbelt_launch_uses_the_proxy_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from policies.compile.seatbelt import resolve_for_macos
    from sandbox.backends.seatbelt import SeatbeltBackend

    class Proxy:
        tcp_port = 40123

    monkeypatch.setattr(SeatbeltBackend, "unavailable", lambda self, host: None)
    host = HostFacts(platform="macos", home="/Users/u", uid=501)
    policy = SandboxPolicy(workspace="/Users/u/proj", network=NetworkPolicy(NetworkMode.ALLOWLIST, ("a.test",)))
    rp = resolve_for_macos(policy, host)
    launch = SeatbeltBackend().launch(rp, host, ["curl", "https://a.test"], {"HTTPS_PROXY": "http://127.0.0.1:3128"},
                                      proxy=Proxy())
    try:
        assert "-DPROXY_PORT=40123" in launch.argv
        assert launch.env["HTTPS_PROXY"] == launch.env["ALL_PROXY"] == "http://127.0.0.1:40123"
        assert not any("fail closed" in w for w in launch.warnings)
    finally:
        launch.cleanup()


def test_windows_plan_names_the_proxy_port_everywhere() -> None:
    from policies.compile.windows import loopback_proxy_env
    from policies.env import PROXY_ENV

    env = loopback_proxy_env(40123)
    assert set(env) == {k for k in PROXY_ENV if k.lower() != "no_proxy"}
    assert set(env.values()) == {"http://127.0.0.1:40123"}


def test_real_host_is_linux() -> None:
    assert host_facts().platform == "linux"  # the tests above fake the other platforms; this one must not


def test_windows_env_block() -> None:
    from sandbox.backends.windows import env_block

    block = env_block({"b": "2", "A": "1", "HTTPS_PROXY": "http://127.0.0.1:4", "bad\0": "x", "=C:": "C:\\"})
    assert block == "=C:=C:\\\0A=1\0b=2\0HTTPS_PROXY=http://127.0.0.1:4\0\0"

"""The synchronous execution engine (`sandbox.run`), checked from the host side.

Engine semantics run under full-access (backend "none") so they do not depend
on the confining backends; a parametrized subset also runs under "bwrap" and
"landlock" once those exist and the host supports them.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap

import pytest
from exec_support import (
    CgroupSpy,
    backend_params,
    cgroup_host_params,
    cleanup_spy,
    edit_none_launch,
    gone,
    marker,
    pid_alive,
    policy_for,
    read_pid,
    with_marker,
)

from policies.host import HostFacts
from policies.model import EnvInherit, EnvPolicy, Limits
from sandbox.backends.base import Launch, SandboxSetupError
from sandbox.cgroup import RunCgroup
from sandbox.detect import host_facts
from sandbox.execute import Capture, run
from sandbox.limits import child_limits

BACKENDS = backend_params()
PY = sys.executable


# --- exit status -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_reported(tmp_path, backend, code):
    res = run(["sh", "-c", f"echo out; echo err >&2; exit {code}"], policy_for(backend, tmp_path),
              backend=backend, timeout=30)
    assert (res.exit_code, res.signal, res.returncode) == (code, None, code)
    assert res.stdout == b"out\n" and res.stderr == b"err\n"
    assert res.backend == backend and res.ok is (code == 0)
    assert res.peak_rss_kb and res.peak_rss_kb > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_signal_death_reported_as_signal(tmp_path, backend):
    res = run(["sh", "-c", "kill -TERM $$"], policy_for(backend, tmp_path), backend=backend, timeout=30)
    assert res.returncode == 143
    if backend == "none":
        assert (res.exit_code, res.signal) == (None, signal.SIGTERM)


def test_command_not_found_is_127(tmp_path):
    res = run(["no-such-command-xyz"], policy_for("none", tmp_path), backend="none")
    assert res.exit_code == 127 and b"no-such-command-xyz" in res.stderr


def test_policy_problems_raise_setup_error(tmp_path):
    with pytest.raises(SandboxSetupError, match="not a directory"):
        run(["true"], policy_for("none", tmp_path / "missing"), backend="none")


# --- streaming, stdin ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_streams_while_running(tmp_path, backend):
    """The command waits for a file the test creates on its first chunk: without streaming it never ends."""
    go = tmp_path / "go"
    seen: list[tuple[str, bytes]] = []

    def on_output(stream: str, chunk: bytes) -> None:
        seen.append((stream, chunk))
        go.touch()

    script = f"echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second >&2"
    res = run(["sh", "-c", script], policy_for(backend, tmp_path), backend=backend, timeout=20,
              on_output=on_output)
    assert not res.timed_out and res.exit_code == 0
    assert seen[0] == ("stdout", b"first\n")
    assert ("stderr", b"second\n") in seen


@pytest.mark.parametrize("backend", BACKENDS)
def test_stdin_bytes_pass_through(tmp_path, backend):
    data = bytes(range(256)) * 8192  # 2 MiB: more than a pipe holds, so writing and reading interleave
    res = run(["cat"], policy_for(backend, tmp_path, output_bytes=4 << 20), backend=backend,
              stdin=data, timeout=30)
    assert res.exit_code == 0 and res.stdout == data


def test_stdin_fd_and_file_pass_through(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"from a file\n")
    with open(src, "rb") as fh:
        assert run(["cat"], policy_for("none", tmp_path), backend="none", stdin=fh.fileno()).stdout == b"from a file\n"
    with open(src, "rb") as fh:
        assert run(["cat"], policy_for("none", tmp_path), backend="none", stdin=fh).stdout == b"from a file\n"


def test_stdin_defaults_to_dev_null(tmp_path):
    res = run(["sh", "-c", "cat; readlink /proc/self/fd/0"], policy_for("none", tmp_path), backend="none",
              timeout=10)
    assert res.stdout == b"/dev/null\n" and not res.timed_out


def test_stdin_ignored_by_command_does_not_hang(tmp_path):
    res = run(["true"], policy_for("none", tmp_path), backend="none", stdin=b"x" * (4 << 20), timeout=10)
    assert res.exit_code == 0 and not res.timed_out


# --- output caps -----------------------------------------------------------------------------------


def test_output_cap_keeps_head_and_tail(tmp_path):
    data = b"".join(b"%05d\n" % i for i in range(2000))  # 12000 bytes
    src = tmp_path / "data"
    src.write_bytes(data)
    streamed = bytearray()
    res = run(["sh", "-c", f"cat {src}; printf small >&2"], policy_for("none", tmp_path, output_bytes=1000),
              backend="none", on_output=lambda s, c: streamed.extend(c) if s == "stdout" else None)
    assert res.stdout_total == 12000 and res.stdout_truncated
    assert res.stdout == data[:500] + b"\n[... 11000 bytes omitted ...]\n" + data[-500:]
    assert (res.stderr, res.stderr_total, res.stderr_truncated) == (b"small", 5, False)
    assert bytes(streamed) == data  # the callback sees everything


def test_output_at_cap_is_kept_whole(tmp_path):
    res = run(["head", "-c", "1000", "/dev/zero"], policy_for("none", tmp_path, output_bytes=1000), backend="none")
    assert res.stdout == b"\0" * 1000 and not res.stdout_truncated and res.stdout_total == 1000


def test_capture_in_small_chunks_matches_one_write():
    data = bytes(range(256)) * 40
    whole, pieces = Capture(777), Capture(777)
    whole.add(data)
    for i in range(0, len(data), 13):
        pieces.add(data[i:i + 13])
    assert whole.value() == pieces.value()
    assert whole.value().startswith(data[:388]) and whole.value().endswith(data[-389:])


# --- timeout and tree-kill ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", cgroup_host_params())
def test_timeout_kills_setsid_grandchild(tmp_path, host, monkeypatch):
    spy = CgroupSpy(monkeypatch)
    mark, pidfile = marker(), tmp_path / "pid"
    res = run(["sh", "-c", f"setsid sleep {mark} & echo $! > {pidfile}; sleep 600"],
              policy_for("none", tmp_path), backend="none", timeout=1, host=host)
    assert res.timed_out and res.signal == signal.SIGKILL and res.exit_code is None
    assert any(d.kind == "timeout" for d in res.denials)
    pid = read_pid(pidfile)
    assert gone(lambda: pid_alive(pid)), f"grandchild {pid} survived"
    assert gone(lambda: with_marker(mark))
    assert spy.leftovers() == []


@pytest.mark.parametrize("host", cgroup_host_params())
def test_timeout_kills_orphaned_setsid_grandchild(tmp_path, host):
    """The middle process is gone before the timeout, so the grandchild is no longer below the main one."""
    mark, pidfile = marker(), tmp_path / "pid"
    res = run(["sh", "-c", f"(setsid sleep {mark} & echo $! > {pidfile}); sleep 600"],
              policy_for("none", tmp_path), backend="none", timeout=1, host=host)
    assert res.timed_out
    pid = read_pid(pidfile)
    assert gone(lambda: pid_alive(pid)), f"orphaned grandchild {pid} survived"


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_kills_tree_per_backend(tmp_path, backend):
    mark = marker()
    res = run(["sh", "-c", f"setsid sleep {mark} & sleep 600"], policy_for(backend, tmp_path),
              backend=backend, timeout=1.5)
    assert res.timed_out and res.returncode == 128 + signal.SIGKILL
    assert gone(lambda: with_marker(mark)), "a grandchild outlived the timeout"


def test_background_job_holding_pipes_is_killed_after_exit(tmp_path):
    mark = marker()
    res = run(["sh", "-c", f"sleep {mark} & echo done"], policy_for("none", tmp_path), backend="none", timeout=30)
    assert res.exit_code == 0 and res.stdout == b"done\n" and not res.timed_out
    assert gone(lambda: with_marker(mark))


# --- interruption and cleanup -------------------------------------------------------------------------


def test_interrupt_kills_tree_and_cleans_up(tmp_path, monkeypatch):
    spy = CgroupSpy(monkeypatch)
    cleaned = cleanup_spy(monkeypatch)
    mark = marker()

    def interrupt(stream: str, chunk: bytes) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(["sh", "-c", f"setsid sleep {mark} & sleep 0.2; echo started; sleep 600"],
            policy_for("none", tmp_path), backend="none", on_output=interrupt)
    assert gone(lambda: with_marker(mark))
    assert cleaned == [True]
    assert spy.leftovers() == []


def test_sigint_to_caller_kills_tree(tmp_path):
    """A real Ctrl-C: SIGINT to a Python process blocked in sandbox.run."""
    mark, ready = marker(), tmp_path / "ready"
    caller = textwrap.dedent(f"""
        from policies.model import Mode, SandboxPolicy
        import sandbox
        sandbox.run(["sh", "-c", "setsid sleep {mark} & touch {ready}; sleep 600"],
                    SandboxPolicy(mode=Mode.FULL_ACCESS, workspace={str(tmp_path)!r}), backend="none")
    """)
    proc = subprocess.Popen([PY, "-c", caller], stderr=subprocess.PIPE)
    try:
        assert gone(lambda: not ready.exists(), timeout=20), "the sandboxed command never started"
        assert with_marker(mark)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert b"KeyboardInterrupt" in err
    assert gone(lambda: with_marker(mark)), "the tree outlived the interrupted caller"


# --- limits --------------------------------------------------------------------------------------------


@pytest.mark.skipif(host_facts().cgroup is None, reason="no per-run cgroup on this host")
def test_fork_bomb_stopped_by_pids_cgroup(tmp_path, monkeypatch):
    spy = CgroupSpy(monkeypatch)
    mark = marker()
    bomb = textwrap.dedent(f"""
        import os, time  # {mark}
        end = time.time() + 30  # bounded, even if everything else failed
        while time.time() < end:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
    """)
    res = run([PY, "-c", bomb], policy_for("none", tmp_path, pids=64), backend="none", timeout=3)
    assert res.timed_out
    assert any(d.kind == "limit" and d.target == "processes" for d in res.denials), res.denials
    assert gone(lambda: with_marker(mark), timeout=5), "fork bomb processes survived"
    assert spy.leftovers() == []
    assert run(["true"], policy_for("none", tmp_path), backend="none").exit_code == 0  # host still forks


@pytest.mark.skipif(host_facts().cgroup is None, reason="no per-run cgroup on this host")
def test_cgroup_of_dead_owner_is_swept(tmp_path):
    """A stockade process killed with SIGKILL cleans nothing up; the next run kills and removes its leftovers."""
    from sandbox.cgroup import create, new_run_id

    ns, _, rand = new_run_id().split("-")
    stale, _ = create(host_facts().cgroup, Limits(), f"{ns}-999999999-{rand}")  # an owner pid that cannot exist
    assert stale is not None
    orphan = subprocess.Popen(["sleep", "600"])
    try:
        for path in stale.dirs:
            with open(os.path.join(path, "cgroup.procs"), "w") as fh:
                fh.write(str(orphan.pid))
        assert run(["true"], policy_for("none", tmp_path), backend="none").exit_code == 0
        assert orphan.wait(timeout=5) == -signal.SIGKILL
        assert not any(os.path.exists(d) for d in stale.dirs)
    finally:
        orphan.kill()
        stale.kill_all()
        stale.remove()


@pytest.mark.skipif(host_facts().cgroup is None, reason="no per-run cgroup on this host")
def test_memory_limit_reported(tmp_path, monkeypatch):
    spy = CgroupSpy(monkeypatch)
    res = run([PY, "-c", "b = b'x' * (512 << 20)"], policy_for("none", tmp_path, memory_mb=64),
              backend="none", timeout=30)
    if not any(cg.memory_dir for cg in spy.made):  # type: ignore[attr-defined]
        pytest.skip("no memory cgroup here")
    assert res.signal == signal.SIGKILL
    assert any(d.kind == "limit" and d.target == "memory" for d in res.denials), res.denials


def test_file_size_limit_reported(tmp_path):
    res = run(["dd", "if=/dev/zero", f"of={tmp_path / 'big'}", "bs=1M", "count=3"],
              policy_for("none", tmp_path, file_size_mb=1), backend="none", timeout=30)
    assert res.signal == signal.SIGXFSZ
    assert any(d.kind == "limit" and d.target == "file size" for d in res.denials)
    assert (tmp_path / "big").stat().st_size <= 1 << 20


def test_rlimits_chosen_by_host():
    limits = Limits(memory_mb=256, pids=32, file_size_mb=8, cpu_seconds=5)
    laptop = child_limits(limits, HostFacts(uid=54321), None)  # non-root, no cgroup
    got = {r: (s, h) for r, s, h in laptop.rlimits}
    assert got[resource.RLIMIT_CORE] == (0, 0)
    assert got[resource.RLIMIT_FSIZE][0] == 8 << 20
    assert resource.RLIMIT_AS in got and resource.RLIMIT_NPROC in got
    assert laptop.subreaper and not laptop.join
    root_cg = child_limits(limits, HostFacts(uid=0), RunCgroup(1, ("/x/pids", "/x/mem"), "/x/mem"))
    kinds = {r for r, _, _ in root_cg.rlimits}
    assert resource.RLIMIT_AS not in kinds and resource.RLIMIT_NPROC not in kinds  # the cgroup does both
    assert root_cg.join == ("/x/pids/tasks", "/x/mem/tasks") and not root_cg.subreaper
    root_bare = child_limits(limits, HostFacts(uid=0), None)
    assert resource.RLIMIT_NPROC not in {r for r, _, _ in root_bare.rlimits}  # root ignores it anyway
    assert any("not enforced" in w for w in root_bare.warnings)


def test_cleanup_warnings_reach_result(tmp_path, monkeypatch):
    """A backend's cleanup runs after the tree is gone; what it could not undo still reaches the Result."""
    def edit(launch: Launch) -> None:
        launch.warnings.append("before")
        launch.cleanup = lambda: launch.warnings.append("from cleanup")

    edit_none_launch(monkeypatch, edit)
    res = run(["true"], policy_for("none", tmp_path), backend="none")
    assert res.warnings[-2:] == ["before", "from cleanup"]


# --- leaks into the sandbox ----------------------------------------------------------------------------


def test_secret_env_scrubbed_passthrough_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_API_KEY", "sekrit-1")
    monkeypatch.setenv("OTHER_TOKEN", "passme")
    monkeypatch.setenv("PLAIN_SETTING", "plain")
    policy = policy_for("none", tmp_path).replace(
        env=EnvPolicy(inherit=EnvInherit.ALL, passthrough=("OTHER_TOKEN",)))
    out = run(["env"], policy, backend="none").stdout
    assert b"MY_API_KEY" not in out and b"sekrit-1" not in out
    assert b"OTHER_TOKEN=passme\n" in out and b"PLAIN_SETTING=plain\n" in out


def test_explicit_env_is_filtered_too(tmp_path):
    out = run(["env"], policy_for("none", tmp_path), backend="none",
              env={"PATH": "/usr/bin:/bin", "GITHUB_TOKEN": "ghp_x", "HOME": "/nowhere"}).stdout
    assert b"GITHUB_TOKEN" not in out and b"HOME=/nowhere\n" in out


@pytest.mark.parametrize("backend", BACKENDS)
def test_caller_fds_not_inherited(tmp_path, backend):
    secret = tmp_path / "caller-only.txt"
    secret.write_text("x")
    fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        script = ("import os\nfor n in sorted(os.listdir('/proc/self/fd'), key=int):\n"
                  "    try:\n        print(n, os.readlink('/proc/self/fd/' + n))\n"
                  "    except OSError:\n        pass\n")
        res = run([PY, "-c", script], policy_for(backend, tmp_path), backend=backend, timeout=30)
    finally:
        os.close(fd)
    assert res.exit_code == 0, res.stderr
    assert str(secret).encode() not in res.stdout
    fds = {int(line.split()[0]) for line in res.stdout.splitlines()}
    assert fds <= {0, 1, 2, 3}, res.stdout  # 3: the directory listing /proc/self/fd itself


def test_cgroup_v2_layout_on_fake_tree(tmp_path):
    """The v2 path cannot run on this host's empty unified hierarchy; check its layout on a fake tree."""
    from sandbox.cgroup import create

    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    cg, warnings = create(f"v2:{tmp_path}", Limits(pids=10, memory_mb=5), "run-1")
    assert cg is not None and warnings == []
    run_dir = tmp_path / "stockade" / "run-1"
    assert cg.dirs == (str(run_dir),) and cg.memory_dir == str(run_dir)
    assert cg.join_files == (str(run_dir / "cgroup.procs"),)
    assert (run_dir / "pids.max").read_text() == "10"
    assert (run_dir / "memory.max").read_text() == str(5 << 20)
    # Controllers are delegated down to the run's cgroup (each write is one "+name").
    assert (tmp_path / "stockade" / "cgroup.subtree_control").read_text() in ("+pids", "+memory")
    (run_dir / "pids.events").write_text("max 7\n")
    assert cg.forks_refused() == 7


@pytest.mark.parametrize("timeout", [3e8, 1e300, float("inf")])
def test_huge_timeouts_mean_no_timeout_not_a_crash(tmp_path, timeout):
    """select/epoll take at most 2**31-1 ms: a long deadline once raised OverflowError mid-run."""
    r = run(["sh", "-c", "echo ok"], policy_for("bwrap", tmp_path), timeout=timeout)
    assert r.exit_code == 0 and r.stdout == b"ok\n" and not r.timed_out


@pytest.mark.parametrize("timeout", [float("nan"), 0, -1.0, True])
def test_meaningless_timeouts_are_refused(tmp_path, timeout):
    with pytest.raises(ValueError, match="timeout"):
        run(["true"], policy_for("bwrap", tmp_path), timeout=timeout)

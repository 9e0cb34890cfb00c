"""The trio execution path (`sandbox.arun`, `sandbox.open_process`), checked from the host side."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest
import trio
from exec_support import (
    CgroupSpy,
    backend_params,
    cgroup_host_params,
    cleanup_spy,
    gone,
    marker,
    pid_alive,
    policy_for,
    read_pid,
    with_marker,
)

import sandbox
from sandbox import aio

BACKENDS = backend_params()
PY = sys.executable


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("code", [0, 3])
async def test_arun_exit_code_and_output(tmp_path, backend, code):
    res = await sandbox.arun(["sh", "-c", f"echo out; echo err >&2; exit {code}"],
                             policy_for(backend, tmp_path), backend=backend, timeout=30)
    assert (res.exit_code, res.signal) == (code, None)
    assert (res.stdout, res.stderr, res.backend) == (b"out\n", b"err\n", backend)


async def test_arun_signal_death(tmp_path):
    res = await sandbox.arun(["sh", "-c", "kill -TERM $$"], policy_for("none", tmp_path), backend="none")
    assert (res.exit_code, res.signal, res.returncode) == (None, signal.SIGTERM, 143)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_arun_stdin_bytes(tmp_path, backend):
    data = b"line\n" * 200_000  # 1 MB: more than a pipe holds
    res = await sandbox.arun(["cat"], policy_for(backend, tmp_path, output_bytes=2 << 20), backend=backend,
                             stdin=data, timeout=30)
    assert res.exit_code == 0 and res.stdout == data


async def test_arun_output_cap_and_callback(tmp_path):
    data = b"".join(b"%05d\n" % i for i in range(2000))
    (tmp_path / "data").write_bytes(data)
    streamed = bytearray()
    res = await sandbox.arun(["cat", str(tmp_path / "data")], policy_for("none", tmp_path, output_bytes=1000),
                             backend="none", on_output=lambda s, c: streamed.extend(c))
    assert res.stdout == data[:500] + b"\n[... 11000 bytes omitted ...]\n" + data[-500:]
    assert res.stdout_total == len(data) and res.stdout_truncated and bytes(streamed) == data


async def test_arun_command_not_found(tmp_path):
    res = await sandbox.arun(["no-such-command-xyz"], policy_for("none", tmp_path), backend="none")
    assert res.exit_code == 127


async def test_open_process_interactive_stdin_and_streaming(tmp_path):
    """A reply to each line must come back before the next is sent: stdin and output both stream."""
    proc = await sandbox.open_process(["sh", "-c", "while read l; do echo got $l; done; exit 5"],
                                      policy_for("none", tmp_path), backend="none", stdin=True, timeout=30)
    replies = []
    chunks = proc.output()
    for word in (b"one", b"two"):
        await proc.send_stdin(word + b"\n")
        stream, chunk = await chunks.receive()
        replies.append((stream, chunk))
    await proc.close_stdin()
    res = await proc.wait()
    assert replies == [("stdout", b"got one\n"), ("stdout", b"got two\n")]
    assert res.exit_code == 5 and res.stdout == b"got one\ngot two\n"


async def test_output_iterates_until_eof_while_running(tmp_path):
    go = tmp_path / "go"
    proc = await sandbox.open_process(
        ["sh", "-c", f"echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second >&2"],
        policy_for("none", tmp_path), backend="none", timeout=20)
    seen = []
    async for stream, chunk in proc.output():
        seen.append((stream, chunk))
        go.touch()  # only after the first chunk arrived may the command finish
    res = await proc.wait()
    assert seen == [("stdout", b"first\n"), ("stderr", b"second\n")]
    assert res.exit_code == 0 and not res.timed_out


async def test_wait_without_reading_output(tmp_path):
    proc = await sandbox.open_process(["head", "-c", "300000", "/dev/zero"], policy_for("none", tmp_path),
                                      backend="none")
    res = await proc.wait()
    assert res.exit_code == 0 and res.stdout_total == 300000


async def test_unread_output_backlog_is_bounded(tmp_path):
    """Nobody reads output(): the command is not slowed down, the queue stays bounded, the Result is whole."""
    total = 30_000_000  # at least 458 reads of <= 64 KiB
    proc = await sandbox.open_process(["head", "-c", str(total), "/dev/zero"], policy_for("none", tmp_path),
                                      backend="none", timeout=60)
    res = await proc.wait()
    queued = [chunk async for _, chunk in proc.output()]
    assert res.exit_code == 0 and res.stdout_total == total and not res.timed_out
    assert len(queued) == aio.STREAM_BACKLOG
    assert any("not streamed" in w for w in res.warnings)


@pytest.mark.parametrize("host", cgroup_host_params())
async def test_timeout_kills_setsid_grandchild(tmp_path, host, monkeypatch):
    spy = CgroupSpy(monkeypatch)
    mark, pidfile = marker(), tmp_path / "pid"
    res = await sandbox.arun(["sh", "-c", f"setsid sleep {mark} & echo $! > {pidfile}; sleep 600"],
                             policy_for("none", tmp_path), backend="none", timeout=1, host=host)
    assert res.timed_out and res.signal == signal.SIGKILL
    assert any(d.kind == "timeout" for d in res.denials)
    pid = read_pid(pidfile)
    assert gone(lambda: pid_alive(pid)), f"grandchild {pid} survived"
    assert spy.leftovers() == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_timeout_per_backend(tmp_path, backend):
    mark = marker()
    res = await sandbox.arun(["sh", "-c", f"setsid sleep {mark} & sleep 600"], policy_for(backend, tmp_path),
                             backend=backend, timeout=1.5)
    assert res.timed_out and res.returncode == 128 + signal.SIGKILL
    assert gone(lambda: with_marker(mark))


@pytest.mark.parametrize("host", cgroup_host_params())
async def test_cancellation_kills_tree_and_cleans_up(tmp_path, host, monkeypatch):
    spy = CgroupSpy(monkeypatch)
    cleaned = cleanup_spy(monkeypatch)
    mark, pidfile = marker(), tmp_path / "pid"
    with trio.move_on_after(1) as scope:
        await sandbox.arun(["sh", "-c", f"setsid sleep {mark} & echo $! > {pidfile}; sleep 600"],
                           policy_for("none", tmp_path), backend="none", host=host)
    assert scope.cancelled_caught
    assert cleaned == [True], "cleanup must have run before Cancelled propagated"
    pid = read_pid(pidfile)
    assert gone(lambda: pid_alive(pid)), f"grandchild {pid} survived cancellation"
    assert gone(lambda: with_marker(mark))
    assert spy.leftovers() == []


async def test_cancelled_wait_with_streaming_consumer(tmp_path):
    mark = marker()
    proc = await sandbox.open_process(["sh", "-c", f"sleep {mark} & while :; do echo tick; sleep 0.1; done"],
                                      policy_for("none", tmp_path), backend="none")
    ticks = 0
    with trio.move_on_after(1):
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                nonlocal ticks
                async for _ in proc.output():
                    ticks += 1

            nursery.start_soon(consume)
            await proc.wait()
    assert ticks >= 2
    assert gone(lambda: with_marker(mark))


async def test_kill(tmp_path):
    mark = marker()
    proc = await sandbox.open_process(["sh", "-c", f"setsid sleep {mark} & sleep 600"],
                                      policy_for("none", tmp_path), backend="none")
    await trio.sleep(0.3)
    await proc.kill()
    res = await proc.wait()
    assert res.signal == signal.SIGKILL and not res.timed_out
    assert gone(lambda: with_marker(mark))


async def test_on_output_error_kills_tree_and_propagates(tmp_path):
    mark = marker()

    def boom(stream: str, chunk: bytes) -> None:
        raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        await sandbox.arun(["sh", "-c", f"setsid sleep {mark} & sleep 0.2; echo x; sleep 600"],
                           policy_for("none", tmp_path), backend="none", on_output=boom)
    assert gone(lambda: with_marker(mark))


async def test_sigint_to_trio_caller_kills_tree(tmp_path):
    """A real Ctrl-C: trio raises KeyboardInterrupt in the task awaiting arun; the tree must die with it."""
    mark, ready = marker(), tmp_path / "ready"
    caller = textwrap.dedent(f"""
        import trio, sandbox
        from policies.model import Mode, SandboxPolicy
        trio.run(sandbox.arun, ["sh", "-c", "setsid sleep {mark} & touch {ready}; sleep 600"],
                 SandboxPolicy(mode=Mode.FULL_ACCESS, workspace={str(tmp_path)!r}))
    """)
    proc = await trio.lowlevel.open_process([PY, "-c", caller], stderr=subprocess.PIPE)
    try:
        with trio.fail_after(20):
            while not ready.exists():
                await trio.sleep(0.05)
        assert with_marker(mark)
        proc.send_signal(signal.SIGINT)
        err = b""
        with trio.fail_after(20):
            while chunk := await proc.stderr.receive_some():  # type: ignore[union-attr]
                err += chunk
            await proc.wait()
    finally:
        proc.kill()
    assert b"KeyboardInterrupt" in err
    assert gone(lambda: with_marker(mark)), "the tree outlived the interrupted trio caller"


async def test_spawns_from_one_long_lived_thread(tmp_path, monkeypatch):
    """bwrap --die-with-parent follows the forking thread: it must be the same daemon thread every time."""
    threads: list[threading.Thread] = []
    real_spawn = aio.spawn

    def spawn(*args, **kwargs):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread())
        return real_spawn(*args, **kwargs)

    monkeypatch.setattr(aio, "spawn", spawn)
    for _ in range(3):
        await sandbox.arun(["true"], policy_for("none", tmp_path), backend="none")
        await trio.to_thread.run_sync(lambda: None)  # churn trio's worker threads in between
    assert len({t.ident for t in threads}) == 1
    assert threads[0].daemon and threads[0] is not threading.main_thread() and threads[0].is_alive()


async def test_run_does_not_import_trio(tmp_path):
    code = textwrap.dedent(f"""
        import sys, sandbox
        from policies.model import Mode, SandboxPolicy
        res = sandbox.run(["true"], SandboxPolicy(mode=Mode.FULL_ACCESS, workspace={str(tmp_path)!r}),
                          backend="none")
        heavy = [m for m in ("trio", "httpx", "pydantic", "click", "psutil") if m in sys.modules]
        assert res.exit_code == 0 and not heavy, heavy
    """)
    res = await sandbox.arun([PY, "-c", code], policy_for("none", tmp_path), backend="none", timeout=60,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert res.exit_code == 0, res.stderr

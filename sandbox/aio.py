"""The trio path of the execution engine, for the agent: stream output, feed stdin, cancel.

Same preparation, spawn, tree-kill and Result as `sandbox.execute`; only the
supervision is async. Two decisions:

- Every child is forked by one long-lived daemon thread (`_Spawner`). bwrap's
  --die-with-parent is PR_SET_PDEATHSIG, which fires when the *thread* that
  forked the child exits; trio's worker threads exit after idling, which would
  kill long runs at random.
- Supervision (reading both pipes, timeout, reaping, cleanup) runs in a trio
  system task, so output keeps flowing whether or not the caller is reading,
  and the run is cleaned up even when the caller walks away. The caller's
  `wait()` only waits for it; cancelling `wait()` kills the whole tree, waits
  for cleanup, then re-raises.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol

import outcome
import trio

from policies.host import HostFacts
from policies.model import SandboxPolicy
from sandbox.execute import (
    DRAIN_SECONDS,
    POLL_SECONDS,
    READ_CHUNK,
    WATCH_AFTER,
    Capture,
    OutputCallback,
    Prepared,
    Spawned,
    build_result,
    exec_failed,
    has_exited,
    kill_tree,
    prepare,
    reap,
    spawn,
)
from sandbox.result import Result

CANCEL_GRACE = DRAIN_SECONDS + 5.0  # how long a cancelled wait() waits for cleanup
# Unread chunks (<= READ_CHUNK each) output() may hold: the command is never slowed down by a slow
# or absent reader; past this, chunks are left out of the stream (the Result still has head and tail).
STREAM_BACKLOG = 256


class _Spawner:
    """One daemon thread that runs every spawn, for the life of the process."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Any], None]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], Any], done: Callable[[Any], None]) -> None:
        with self._lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="stockade-spawner", daemon=True)
                self.thread.start()
        self._jobs.put((fn, done))

    def _loop(self) -> None:
        while True:
            fn, done = self._jobs.get()
            result = outcome.capture(fn)
            try:
                done(result)
            except Exception:  # noqa: BLE001 - only if the trio run crashed meanwhile; live on for others
                pass


_SPAWNER = _Spawner()


async def _in_spawner(fn: Callable[[], Any]) -> Any:
    """Run `fn` on the spawner thread. Not cancellable: a half-done spawn would leak a process."""
    token = trio.lowlevel.current_trio_token()
    task = trio.lowlevel.current_task()
    _SPAWNER.submit(fn, lambda result: token.run_sync_soon(trio.lowlevel.reschedule, task, result))
    return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)


class SandboxedProcess:
    """A running sandboxed command. Get it from `open_process`; always end with `wait()`."""

    def __init__(self, prep: Prepared, sp: Spawned, on_output: OutputCallback | None, stream: bool) -> None:
        self.pid = sp.pid
        self._prep, self._sp, self._on_output = prep, sp, on_output
        self._stdin = trio.lowlevel.FdStream(sp.stdin) if sp.stdin is not None else None
        sp.stdin = None  # the FdStream owns it now
        self._send, self._recv = trio.open_memory_channel[tuple[str, bytes]](STREAM_BACKLOG)
        self._stream = stream  # queue chunks for output()
        self._unstreamed = 0  # bytes left out of output() because nobody read them in time
        self._exited = False
        self._done = trio.Event()
        self._aborting = False  # killed on the caller's behalf: skip the drain
        self._drain: trio.CancelScope | None = None
        self._result: Result | None = None
        self._error: BaseException | None = None

    def output(self) -> trio.MemoryReceiveChannel[tuple[str, bytes]]:
        """`async for stream, chunk in proc.output()`: ("stdout"|"stderr", bytes) as they arrive, until EOF.

        Chunks are queued from the start, so reading may begin late; a reader
        more than STREAM_BACKLOG chunks behind misses chunks (see Result.warnings).
        """
        return self._recv

    async def send_stdin(self, data: bytes) -> None:
        """Write to the command's stdin (needs open_process(stdin=True)).

        Raises trio.BrokenResourceError once the command closed its stdin,
        trio.ClosedResourceError once it ended (or after close_stdin()).
        """
        if self._stdin is None:
            raise RuntimeError("open the process with stdin=True to send it input")
        await self._stdin.send_all(data)

    async def close_stdin(self) -> None:
        if self._stdin is not None:
            await self._stdin.aclose()

    async def kill(self) -> None:
        """SIGKILL the whole tree now; wait() then reports how it ended."""
        kill_tree(self._sp, self._prep.cgroup, descendants=not self._exited)
        await trio.lowlevel.checkpoint()

    async def wait(self) -> Result:
        """The Result once the run is over and cleaned up. Cancelling it kills the tree first."""
        try:
            await self._done.wait()
        except BaseException:
            await self._abort()
            raise
        if self._error is not None:
            raise unwrap_group(self._error)
        assert self._result is not None
        return self._result

    async def _abort(self) -> None:
        """Kill the tree, skip the drain and wait (shielded, bounded) until the run is cleaned up."""
        self._aborting = True
        kill_tree(self._sp, self._prep.cgroup, descendants=not self._exited)
        if self._drain is not None:
            self._drain.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_GRACE):
            await self._done.wait()

    async def _follow_deny_read(self) -> None:
        """Once the run lasts, stop it when a deny-read entry changes on the host (see sandbox.deny_watch)."""
        await trio.sleep(WATCH_AFTER)
        if self._exited:
            return
        fd = self._prep.start_watch(self._sp)
        while fd is not None and not self._exited:
            await trio.lowlevel.wait_readable(fd)
            if self._prep.deny_read_changed(self._sp):
                return

    async def _wait_exit(self) -> None:
        if self._sp.pidfd is not None:
            await trio.lowlevel.wait_readable(self._sp.pidfd)
        else:
            while not has_exited(self.pid):
                await trio.sleep(POLL_SECONDS)
        self._exited = True

    async def _supervise(self) -> None:
        """The system task: pump, time out, drain, kill leftovers, reap, clean up. Raises only Cancelled."""
        sp, prep = self._sp, self._prep
        out, err = Capture(prep.policy.limits.output_bytes), Capture(prep.policy.limits.output_bytes)
        eof = _Countdown(2)
        timed_out = False
        try:
            async with trio.open_nursery() as pipes:
                pipes.start_soon(pump_output, self, "stdout", sp.stdout, out, eof)
                pipes.start_soon(pump_output, self, "stderr", sp.stderr, err, eof)
                if prep.watch_patterns:
                    pipes.start_soon(self._follow_deny_read)
                sp.stdout = sp.stderr = None  # the readers own them now
                if prep.timeout is None:
                    deadline = math.inf
                else:  # from the spawn instant, on trio's clock
                    deadline = trio.current_time() + sp.started + prep.timeout - time.monotonic()
                with trio.move_on_at(deadline):
                    await self._wait_exit()
                if not self._exited:
                    timed_out = True
                    kill_tree(sp, prep.cgroup, descendants=True)
                    await self._wait_exit()
                if self._stdin is not None:
                    await self._stdin.aclose()
                with trio.move_on_after(DRAIN_SECONDS) as self._drain:
                    if not self._aborting:
                        await eof.wait()
                kill_tree(sp, prep.cgroup, descendants=False)
                pipes.cancel_scope.cancel()  # abandon pipes a leftover still holds
            status, rusage = reap(sp)
            self._result = build_result(prep, status, rusage, out, err, timed_out=timed_out,
                                        duration=time.monotonic() - sp.started)
            if self._unstreamed:
                self._result.warnings.append(
                    f"output() fell behind: {self._unstreamed} bytes were not streamed (kept in the Result)")
        except BaseException as exc:
            self._kill_and_reap()
            if isinstance(exc, trio.Cancelled):
                raise
            self._error = exc  # a system task must not raise: wait() re-raises it
        finally:
            if self._stdin is not None:
                self._stdin.close()
            sp.close()
            try:
                if self._result is not None:
                    prep.finish(self._result)
                else:
                    prep.cleanup()
            except Exception as exc:  # noqa: BLE001 - reported through wait()
                self._error = self._error or exc
            self._send.close()
            self._done.set()

    def _kill_and_reap(self) -> None:
        kill_tree(self._sp, self._prep.cgroup, descendants=not self._exited)
        if not self._sp.reaped:
            reap(self._sp)  # SIGKILLed: returns at once


class _Pumped(Protocol):
    """What `pump_output` feeds: a process of `sandbox.aio` or of a `sandbox.session.Session`."""

    _on_output: OutputCallback | None
    _stream: bool  # queue chunks for output()
    _send: trio.MemorySendChannel[tuple[str, bytes]]
    _unstreamed: int  # bytes left out of output() because nobody read them in time


async def pump_output(proc: _Pumped, name: str, fd: int, capture: Capture, done: _Countdown) -> None:
    """Read one output pipe to EOF (then close it): into `capture`, to the process's on_output callback,
    and to its output() stream, never waiting for a slow reader there. `done` ticks at the end."""
    stream = trio.lowlevel.FdStream(fd)
    try:
        while chunk := await stream.receive_some(READ_CHUNK):
            capture.add(chunk)
            if proc._on_output is not None:
                proc._on_output(name, chunk)
            if proc._stream:
                try:
                    proc._send.send_nowait((name, chunk))
                except trio.WouldBlock:
                    proc._unstreamed += len(chunk)
    finally:
        stream.close()
        done.tick()


class _Countdown:
    """An event set after `n` ticks."""

    def __init__(self, n: int) -> None:
        self._left = n
        self._event = trio.Event()

    def tick(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


async def _start(
    argv: list[str],
    policy: SandboxPolicy,
    *,
    stdin: bool,
    on_output: OutputCallback | None,
    stream: bool,
    exec_error_result: bool,
    **options: Any,
) -> SandboxedProcess | Result:
    """Prepare (in a worker thread: host probing and cgroup setup may block), spawn, start supervising.

    stream: queue chunks for output(). exec_error_result: a command that cannot
    be executed gives the shell's 127/126 Result instead of raising OSError.
    """
    prep = await trio.to_thread.run_sync(partial(prepare, argv, policy, watch=True, **options))
    try:
        sp: Spawned = await _in_spawner(partial(spawn, prep, pipe_stdin=stdin))
    except OSError as exc:
        if not exec_error_result:
            prep.cleanup()
            raise
        return prep.finish(exec_failed(prep, exc))
    except BaseException:
        prep.cleanup()
        raise
    proc = SandboxedProcess(prep, sp, on_output, stream)
    trio.lowlevel.spawn_system_task(proc._supervise, name=f"stockade-run-{sp.pid}")
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
    except BaseException:
        await proc._abort()
        raise
    return proc


async def open_process(
    argv: list[str],
    policy: SandboxPolicy,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bool = False,
    timeout: float | None = None,
    backend: str = "auto",
    host: HostFacts | None = None,
    on_output: OutputCallback | None = None,
) -> SandboxedProcess:
    """Start `argv` confined by `policy`. stdin=True gives a pipe (send_stdin/close_stdin), else /dev/null.

    Raises SandboxSetupError when nothing could be run, OSError when the
    command cannot be executed (arun turns that into exit 127/126).
    """
    proc = await _start(argv, policy, stdin=stdin, on_output=on_output, stream=True, exec_error_result=False,
                        cwd=cwd, env=env, timeout=timeout, backend=backend, host=host)
    assert isinstance(proc, SandboxedProcess)
    return proc


async def arun(
    argv: list[str],
    policy: SandboxPolicy,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float | None = None,
    backend: str = "auto",
    on_output: OutputCallback | None = None,
    host: HostFacts | None = None,
) -> Result:
    """Run `argv` and wait: the async twin of `sandbox.run` (stdin: bytes to feed, or /dev/null)."""
    proc = await _start(argv, policy, stdin=stdin is not None, on_output=on_output, stream=False,
                        exec_error_result=True, cwd=cwd, env=env, timeout=timeout, backend=backend, host=host)
    if isinstance(proc, Result):
        return proc  # the command could not be executed: 127 / 126

    async def feed(data: bytes) -> None:
        try:
            await proc.send_stdin(data)
            await proc.close_stdin()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the command stopped reading, or ended

    try:
        async with trio.open_nursery() as nursery:
            if stdin is not None:
                nursery.start_soon(feed, stdin)
            result = await proc.wait()
    except BaseExceptionGroup as group:
        raise unwrap_group(group) from None
    return result


def unwrap_group(exc: BaseException) -> BaseException:
    """The error itself: newer trio wraps even a lone nursery error in a group (nested groups too)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc

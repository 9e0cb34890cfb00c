"""The engine's supervisor on Windows: spawn into a job object, pump pipes with threads, time out, report.

`sandbox.execute.run` comes here on Windows because the POSIX supervisor
cannot work there: no fork (so no pre-exec hook), no process groups to
signal, no `os.wait4`, no `resource`, and `select` takes sockets only.

- Spawn: `CreateProcess` suspended, assigned to a fresh job object (kill on
  close, no breakaway), then resumed, so nothing the command starts can be
  born outside the job. For the `windows` backend the launched process is
  the backend's runner (`python -m sandbox.backends.windows --run`), which
  keeps its own job for the sandbox user's tree: killing the runner closes
  that job's only handle, and its kill-on-close ends the confined tree.
- Timeout and leftovers: `TerminateJobObject`, the Windows tree kill.
- Output: one thread per pipe feeds a queue; the calling thread takes it,
  keeps the same head+tail `Capture` and calls `on_output`, as on POSIX.
- Exit code: `GetExitCodeProcess` on the process handle (Popen's returncode);
  there are no signals, so `Result.signal` stays None.

Importable anywhere (ctypes' Windows parts are touched only in `WindowsJob`),
so the pump is tested on Linux with a process-group stand-in for the job;
imported by `sandbox.execute` on Windows only, never on the POSIX cold path.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from sandbox.execute import DRAIN_SECONDS, READ_CHUNK, Capture, OutputCallback, Prepared, build_result, exec_failed
from sandbox.result import Result

CREATE_SUSPENDED = 0x00000004
CREATE_NEW_PROCESS_GROUP = 0x00000200  # Ctrl+C in our console does not hit the command directly
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JobObjectExtendedLimitInformation = 9
PROCESS_TERMINATE = 0x0001
PROCESS_SET_QUOTA = 0x0100
PROCESS_SUSPEND_RESUME = 0x0800
TERMINATED_EXIT = 1  # the exit code TerminateJobObject gives what it kills (a timeout is flagged separately)
JOB_TREE_KILL = ("enforced: a job object (kill on close, no breakaway); processes started through a service "
                 "(Task Scheduler, WMI, COM) are outside any job")


class Job:
    """What the supervisor needs from a job object; the base does nothing (tree kill = the main process)."""

    error: str | None = None  # why the job could not hold the process, for the run's warnings

    def adopt(self, popen: subprocess.Popen[bytes]) -> bool:
        """Take the suspended process into the job and let it run. True when the job now holds it."""
        return False

    def terminate(self) -> None:
        """Kill everything in the job (safe to repeat)."""

    def close(self) -> None:
        """Release the job (kill on close: whatever is left in it dies)."""


class WindowsJob(Job):
    """A real job object through ctypes (Windows only)."""

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes as w

        self._ctypes = ctypes
        k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        ntdll = ctypes.WinDLL("ntdll")  # type: ignore[attr-defined]
        k32.CreateJobObjectW.restype = w.HANDLE
        k32.CreateJobObjectW.argtypes = [ctypes.c_void_p, w.LPCWSTR]
        k32.SetInformationJobObject.argtypes = [w.HANDLE, ctypes.c_int, ctypes.c_void_p, w.DWORD]
        k32.AssignProcessToJobObject.argtypes = [w.HANDLE, w.HANDLE]
        k32.TerminateJobObject.argtypes = [w.HANDLE, w.UINT]
        k32.OpenProcess.restype = w.HANDLE
        k32.OpenProcess.argtypes = [w.DWORD, w.BOOL, w.DWORD]
        k32.CloseHandle.argtypes = [w.HANDLE]
        ntdll.NtResumeProcess.argtypes = [w.HANDLE]
        ntdll.NtResumeProcess.restype = w.LONG
        self._k32, self._ntdll = k32, ntdll
        from sandbox.backends.windows import _win

        info = _win().JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        handle = k32.CreateJobObjectW(None, None)
        if not handle:
            raise OSError(ctypes.get_last_error(), "CreateJobObject failed")  # type: ignore[attr-defined]
        self._handle: int | None = handle
        if not k32.SetInformationJobObject(handle, JobObjectExtendedLimitInformation, ctypes.byref(info),
                                           ctypes.sizeof(info)):
            err = ctypes.get_last_error()  # type: ignore[attr-defined]
            self.close()
            raise OSError(err, "SetInformationJobObject failed")

    def adopt(self, popen: subprocess.Popen[bytes]) -> bool:
        k32 = self._k32
        proc = k32.OpenProcess(PROCESS_TERMINATE | PROCESS_SET_QUOTA | PROCESS_SUSPEND_RESUME, False, popen.pid)
        if not proc:
            self.error = f"OpenProcess failed (error {self._ctypes.get_last_error()})"  # type: ignore[attr-defined]
            return False
        try:
            held = bool(self._handle and k32.AssignProcessToJobObject(self._handle, proc))
            if not held:
                self.error = (f"AssignProcessToJobObject failed (error "
                              f"{self._ctypes.get_last_error()})")  # type: ignore[attr-defined]
            # Resume even when the job failed: the command must run (reported as a weaker tree kill).
            status = self._ntdll.NtResumeProcess(proc)
            if status < 0:
                popen.kill()
                raise OSError(f"could not resume the command (NTSTATUS {status & 0xFFFFFFFF:#x})")
            return held
        finally:
            k32.CloseHandle(proc)

    def terminate(self) -> None:
        if self._handle:
            self._k32.TerminateJobObject(self._handle, TERMINATED_EXIT)

    def close(self) -> None:
        if self._handle:
            handle, self._handle = self._handle, None
            self._k32.CloseHandle(handle)


def make_job() -> Job:
    """A job object for one run; a do-nothing Job (with `error` set) when Windows will not give one."""
    try:
        return WindowsJob()
    except (OSError, AttributeError) as exc:
        job = Job()
        job.error = f"no job object ({exc})"
        return job


def popen_options() -> dict[str, Any]:
    """Suspended (so the job holds it before it runs a single instruction) and in its own process group."""
    return {"creationflags": CREATE_SUSPENDED | CREATE_NEW_PROCESS_GROUP}


def _reader(stream: IO[bytes], name: str, out: queue.Queue[tuple[str, bytes | None]]) -> None:
    """Blocking reads on one pipe; None marks its end."""
    import os

    fd = stream.fileno()
    try:
        while chunk := os.read(fd, READ_CHUNK):
            out.put((name, chunk))
    except OSError:
        pass
    finally:
        out.put((name, None))


def _feeder(stream: IO[bytes], data: bytes) -> None:
    """Write all of `data`, then close: the command sees EOF. A command that stops reading is not an error."""
    try:
        view = memoryview(data)
        while view:
            stream.write(view[:READ_CHUNK])
            view = view[READ_CHUNK:]
        stream.flush()
    except OSError:  # broken pipe / EINVAL: the command closed its stdin
        pass
    finally:
        try:
            stream.close()
        except OSError:
            pass


def _waiter(popen: subprocess.Popen[bytes], out: queue.Queue[tuple[str, bytes | None]]) -> None:
    popen.wait()  # WaitForSingleObject on the process handle
    out.put(("exit", None))


def run_prepared(prep: Prepared, stdin: object, on_output: OutputCallback | None,
                 *, job_factory: Callable[[], Job] | None = None) -> Result:
    """Spawn `prep.launch`, supervise it and build its Result (the caller cleans `prep` up)."""
    launch = prep.launch
    feed = stdin if isinstance(stdin, bytes) else None
    job = (job_factory or make_job)()
    try:
        popen = subprocess.Popen(
            launch.argv,
            env=launch.env,
            cwd=launch.cwd,
            stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL if stdin is None else stdin,  # type: ignore[arg-type]
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            **popen_options(),
        )
    except OSError as exc:
        job.close()
        return exec_failed(prep, exc)
    started = time.monotonic()
    try:
        held = job.adopt(popen)
    except BaseException:
        job.close()
        popen.kill()
        popen.wait()
        _close_pipes(popen)
        raise
    return _supervise(prep, popen, job, held, feed, on_output, started)


def _supervise(prep: Prepared, popen: subprocess.Popen[bytes], job: Job, held: bool, feed: bytes | None,
               on_output: OutputCallback | None, started: float) -> Result:
    events: queue.Queue[tuple[str, bytes | None]] = queue.Queue()
    threads = [threading.Thread(target=_reader, args=(popen.stdout, "stdout", events), daemon=True),
               threading.Thread(target=_reader, args=(popen.stderr, "stderr", events), daemon=True),
               threading.Thread(target=_waiter, args=(popen, events), daemon=True)]
    if feed is not None:
        threads.append(threading.Thread(target=_feeder, args=(popen.stdin, feed), daemon=True))
    for t in threads:
        t.start()
    captures = {"stdout": Capture(prep.policy.limits.output_bytes),
                "stderr": Capture(prep.policy.limits.output_bytes)}
    deadline = started + prep.timeout if prep.timeout is not None else None
    timed_out = exited = False
    drain_until: float | None = None
    readers = 2
    try:
        while True:
            now = time.monotonic()
            if not exited and deadline is not None and now >= deadline and not timed_out:
                timed_out = True
                _kill(job, popen)
            if exited:
                if drain_until is None:
                    drain_until = now + DRAIN_SECONDS
                if readers == 0 or now >= drain_until:
                    break
            wakeups = [t for t in (drain_until, None if timed_out else deadline) if t is not None]
            wait = max(0.0, min(wakeups) - now) if wakeups else None
            try:
                what, chunk = events.get(timeout=wait)
            except queue.Empty:
                continue
            if what == "exit":
                exited = True
            elif chunk is None:
                readers -= 1
            else:
                captures[what].add(chunk)
                if on_output is not None:
                    on_output(what, chunk)
        # Leftovers of the tree (background jobs) die with the run, as on POSIX.
        job.terminate()
        code = popen.wait()
        result = build_result(prep, 0, None, captures["stdout"], captures["stderr"], timed_out=timed_out,
                              duration=time.monotonic() - started, exit_code=code)
    except BaseException:
        _kill(job, popen)
        popen.wait()
        raise
    finally:
        job.close()
        for t in threads[:2]:
            t.join(0.5)  # a grandchild outside the job may hold a pipe: never wait for it
        _close_pipes(popen)
    if not held:
        why = job.error or "no job object"
        result.protections["tree-kill"] = f"best-effort: the main process only ({why})"
        result.warnings.append(f"tree kill covers the main process only: {why}")
    elif prep.backend == "none":
        result.protections["tree-kill"] = JOB_TREE_KILL
    return result


def _kill(job: Job, popen: subprocess.Popen[bytes]) -> None:
    """The whole tree through the job; the main process directly in case the job does not hold it."""
    job.terminate()
    try:
        popen.kill()
    except OSError:
        pass


def _close_pipes(popen: subprocess.Popen[bytes]) -> None:
    for stream in (popen.stdin, popen.stdout, popen.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass

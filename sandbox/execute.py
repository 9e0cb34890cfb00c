"""Run one command under a policy: prepare, spawn, stream, time out, kill the tree, reap, report.

`prepare` (policy -> backend launch + per-run cgroup), `spawn`, `kill_tree`
and `build_result` are shared with the trio path (`sandbox.aio`); `run` is
the synchronous supervisor the CLI uses, spawning from the calling thread
(which is also the thread that waits, so bwrap's --die-with-parent holds).

Decisions kept here:
- The main process is never reaped before the last kill: while it is a zombie
  its pid (and so its process group id) cannot be reused, so killpg is safe.
- After the main process exits (or is killed) the pipes are drained for at
  most DRAIN_SECONDS, then whatever is left of the tree is killed and the
  pipes abandoned: a background grandchild may hold them open forever.
- Exit code and signal are reported as they happened; a timeout is a
  `timed_out` flag plus a Denial, not a made-up exit code.

Platforms: Linux is the reference. macOS runs the same POSIX supervisor
without the Linux-only pieces: no cgroup (limits are rlimits only), no
prctl, no pidfd (a kqueue EVFILT_PROC watch wakes the loop instead; `os.waitid`
does not exist there), tree kill by process group plus a psutil walk.
Windows has no fork, no process groups to kill, no wait4 and no `resource`:
`run` hands the prepared launch to `sandbox.execute_windows` (job object,
pipes read by threads, exit code from the process handle).

Cold start: stdlib only at import time; psutil is imported only when a live
tree has to be killed. Nothing platform-specific is imported on Linux.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from policies.env import build_env
from policies.host import HostFacts
from policies.model import NetworkMode, SandboxPolicy
from policies.resolve import ResolvedPolicy, deny_read_patterns, resolve
from sandbox.backends import choose
from sandbox.backends.base import Backend, Launch, SandboxSetupError
from sandbox.cgroup import RunCgroup, create
from sandbox.detect import host_facts
from sandbox.limits import child_limits, limits_protection, make_preexec
from sandbox.result import Denial, Result

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~3 ms of every cold start)
if TYPE_CHECKING:
    import resource
    from typing import IO

    from sandbox.deny_watch import DenyReadWatch
    from sandbox.proxy import FilteringProxy

    StdinSource = bytes | int | IO[bytes] | IO[str] | None

DRAIN_SECONDS = 2.0
READ_CHUNK = 64 * 1024
POLL_SECONDS = 0.05  # exit polling, only where pidfd_open is missing (Linux < 5.3)

OutputCallback = Callable[[str, bytes], None]


class Capture:
    """One stream capped at `cap` bytes: the first half and the last half kept, the middle dropped."""

    def __init__(self, cap: int) -> None:
        self.head_cap = max(cap, 0) // 2
        self.tail_cap = max(cap, 0) - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_cap:
            self.tail += chunk
            excess = len(self.tail) - self.tail_cap
            if excess > 0:
                del self.tail[:excess]  # cheap: bytearray drops its front in place

    @property
    def truncated(self) -> bool:
        return self.total > self.head_cap + self.tail_cap

    def value(self) -> bytes:
        if not self.truncated:
            return bytes(self.head + self.tail)
        omitted = self.total - len(self.head) - len(self.tail)
        return bytes(self.head) + f"\n[... {omitted} bytes omitted ...]\n".encode() + bytes(self.tail)


@dataclass
class Prepared:
    """Everything decided before the spawn. `cleanup` undoes it (idempotent)."""

    argv: list[str]
    policy: SandboxPolicy
    launch: Launch
    backend: str
    protections: dict[str, str]
    timeout: float | None
    cgroup: RunCgroup | None
    warnings: list[str] = field(default_factory=list)  # the engine's; the launch keeps its own
    resolved: ResolvedPolicy | None = None  # for explaining denials after the run
    proxy: FilteringProxy | None = None  # network allowlist: the run's filtering proxy (sandbox.proxy)
    watch: DenyReadWatch | None = None  # deny-read entries changing on the host mid-run (sandbox.deny_watch)
    watch_patterns: list[str] | None = None  # what to watch once the run lasts (None: nothing)
    watch_state: tuple[tuple[str, int, int], ...] = ()  # the entries as they were when the policy was resolved
    stopped: str | None = None  # why the run was stopped early (a deny-read entry changed), for the Result
    _cleaned: bool = False

    def all_warnings(self) -> list[str]:
        return [*self.warnings, *self.launch.warnings]

    def cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        try:
            if self.cgroup is not None:
                self.cgroup.kill_all()
                self.warnings.extend(self.cgroup.remove())
        finally:
            try:
                self.launch.cleanup()
            finally:
                if self.proxy is not None:
                    self.proxy.close()
                if self.watch is not None:
                    self.watch.close()

    def start_watch(self, sp: Spawned) -> int | None:
        """The run has lasted: watch its deny-read entries from now on (the fd to wait on), after checking
        that nothing changed since they were resolved (then the run is stopped at once)."""
        from sandbox.deny_watch import DenyReadWatch, deny_state

        patterns, self.watch_patterns = self.watch_patterns, None
        if not patterns:
            return None
        self.watch = DenyReadWatch.start(patterns)
        if deny_state(patterns) != self.watch_state:
            self._stop(sp, "a deny-read entry appeared or was replaced since the run started")
            return None
        return self.watch.fd if self.watch is not None else None

    def deny_read_changed(self, sp: Spawned) -> bool:
        """The watch fired: when a deny-read entry really changed, stop the run (its view no longer hides it)."""
        reason = self.watch.changed() if self.watch is not None else None
        if reason is None or self.stopped is not None:
            return False
        self._stop(sp, reason)
        return True

    def _stop(self, sp: Spawned, reason: str) -> None:
        self.stopped = reason
        kill_tree(sp, self.cgroup, descendants=True)

    def finish(self, result: Result) -> Result:
        """Clean up once the tree is gone, then add the run's warnings (cleanup may have added some)."""
        self.cleanup()
        if self.stopped is not None:
            result.denials.append(Denial("read", "", "a deny-read entry changed on the host during the run",
                                         f"{self.stopped}; the run was stopped so that it stays unreadable"))
            result.warnings.append(f"stopped: a deny-read entry changed on the host ({self.stopped})")
        result.warnings.extend(self.all_warnings())
        return result


@dataclass
class Spawned:
    """A live child: its pid, our ends of its pipes, and a pidfd to wait on without reaping."""

    popen: subprocess.Popen[bytes]
    pid: int
    stdout: int | None  # our read ends (None once handed over or closed)
    stderr: int | None
    stdin: int | None  # our write end when stdin is a pipe
    pidfd: int | None  # readable once the main process exits (a pidfd, or macOS's kqueue watch)
    started: float
    reaped: bool = False
    watch: object | None = None  # macOS: the select.kqueue owning `pidfd` (closed with it, not by fd)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()  # type: ignore[attr-defined]
            self.watch = self.pidfd = None
        for fd in (self.stdout, self.stderr, self.stdin, self.pidfd):
            _close(fd)
        self.stdout = self.stderr = self.stdin = self.pidfd = None


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


WATCH_AFTER = 0.5  # seconds a one-shot run lasts before it watches its deny-read entries (sandbox.deny_watch)
MAX_WAIT = 3600.0  # seconds one select sleeps at most: epoll takes < 2**31 ms, and a timeout of years is valid


def check_timeout(timeout: float | None) -> float | None:
    """A wall timeout in seconds: positive; infinity (or 30 years and more) means none. NaN is refused: no
    deadline would ever pass."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or math.isnan(timeout) or timeout <= 0:
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    return None if timeout >= 1e9 else float(timeout)


def prepare(
    argv: list[str],
    policy: SandboxPolicy,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    backend: str = "auto",
    host: HostFacts | None = None,
    watch: bool = False,
) -> Prepared:
    """Resolve the policy, pick the backend, make the run's cgroup and the launch. Spawns nothing.

    watch: follow the deny-read entries on the host from before they are resolved until the run ends, once it
    lasts (see sandbox.deny_watch); one-shot runs ask for it, sessions keep their own watch.
    """
    if not argv:
        raise ValueError("argv is empty")
    timeout = check_timeout(policy.limits.timeout if timeout is None else timeout)  # the effective one
    host = host or host_facts()
    patterns: list[str] | None = None
    state: tuple[tuple[str, int, int], ...] = ()
    if watch and policy.confined and policy.deny_read and sys.platform.startswith("linux"):
        from sandbox.deny_watch import deny_state

        patterns = deny_read_patterns(policy, host.home)
        state = deny_state(patterns)  # before the policy is resolved: a change from here on is seen
    prep = _prepare(argv, policy, cwd, env, timeout, backend, host)
    prep.watch_patterns, prep.watch_state = patterns, state
    return prep


def _prepare(argv: list[str], policy: SandboxPolicy, cwd: str | None, env: Mapping[str, str] | None,
             timeout: float | None, backend: str, host: HostFacts) -> Prepared:
    rp = resolve(policy, host, cwd)
    if rp.problems:
        raise SandboxSetupError("cannot run under this policy:\n  " + "\n  ".join(rp.problems))
    chosen, protections = choose(rp, host, backend)
    child_env = build_env(policy, os.environ if env is None else env, tmpdir="/tmp")
    proxy = _start_proxy(policy, chosen.name)
    if sys.platform == "win32":
        return _prepare_windows(argv, policy, rp, host, chosen, protections, child_env, proxy, timeout)
    try:
        cgroup, warnings = create(host.cgroup, policy.limits)
    except BaseException:
        if proxy is not None:
            proxy.close()
        raise
    try:
        plan = child_limits(policy.limits, host, cgroup)
        warnings.extend(plan.warnings)
        hook: list[Callable[[], None]] = []

        def limits_preexec() -> None:
            hook[0]()

        launch = chosen.launch(rp, host, list(argv), child_env, limits_preexec=limits_preexec, proxy=proxy)
        # A pid namespace already catches orphans: skip the subreaper (and the ctypes import it needs).
        hook.append(make_preexec(dataclasses.replace(plan, subreaper=plan.subreaper and not launch.kills_tree)))
    except BaseException:
        if cgroup is not None:
            cgroup.remove()
        if proxy is not None:
            proxy.close()
        raise
    final = {**protections, **launch.protections, "limits": limits_protection(host)}
    if sys.platform == "darwin":
        final["tree-kill"] = MACOS_TREE_KILL
    return Prepared(
        argv=list(argv),
        policy=policy,
        launch=launch,
        backend=chosen.name,
        protections=final,
        timeout=timeout,
        cgroup=cgroup,
        warnings=warnings,
        resolved=rp,
        proxy=proxy,
    )


MACOS_TREE_KILL = ("best-effort: process group + a walk of the live descendants; macOS has no cgroup, "
                   "pid namespace or child subreaper, so a setsid() daemon whose parent already exited escapes")


def _prepare_windows(argv: list[str], policy: SandboxPolicy, rp: ResolvedPolicy, host: HostFacts, chosen: Backend,
                     protections: dict[str, str], child_env: dict[str, str], proxy: FilteringProxy | None,
                     timeout: float | None) -> Prepared:
    """`prepare` for Windows: no cgroup, no rlimits, no pre-exec hook (there is no fork to hook)."""
    try:
        launch = chosen.launch(rp, host, list(argv), child_env, proxy=proxy)
    except BaseException:
        if proxy is not None:
            proxy.close()
        raise
    launch.preexec_fn = None
    return Prepared(
        argv=list(argv),
        policy=policy,
        launch=launch,
        backend=chosen.name,
        protections={**protections, **launch.protections, "limits": limits_protection(host)},
        timeout=timeout,
        cgroup=None,
        resolved=rp,
        proxy=proxy,
    )


# Backends that run the command behind `sandbox.proxy` for an allowlist: bwrap and landlock in a
# private network namespace (Unix socket + relay); seatbelt and windows, which have no namespace to
# carry a Unix socket into, through the proxy's loopback TCP listener.
PROXIED_BACKENDS = ("bwrap", "landlock", "seatbelt", "windows")
LOOPBACK_PROXY_BACKENDS = ("seatbelt", "windows")


def _start_proxy(policy: SandboxPolicy, backend: str) -> FilteringProxy | None:
    """The filtering proxy for a confined allowlist run (None otherwise); imported only then."""
    if not policy.confined or policy.network.mode is not NetworkMode.ALLOWLIST or backend not in PROXIED_BACKENDS:
        return None
    from sandbox.proxy import start_proxy

    try:
        return start_proxy(policy.network.allow_domains, tcp=backend in LOOPBACK_PROXY_BACKENDS)
    except (OSError, ValueError) as exc:
        raise SandboxSetupError(f"could not start the network allowlist proxy: {exc}") from exc


def spawn(prep: Prepared, stdin: int | IO[bytes] | IO[str] | None = None, *, pipe_stdin: bool = False) -> Spawned:
    """Start the launch in a new session with fresh pipes. Raises OSError when exec fails.

    `pipe_stdin` gives the caller a pipe to write; else `stdin` is passed
    through as is, None meaning /dev/null.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if pipe_stdin else (None, None)
    child_stdin: int | IO[bytes] | IO[str] = (
        in_r if in_r is not None else subprocess.DEVNULL if stdin is None else stdin
    )
    launch = prep.launch
    try:
        popen = subprocess.Popen(
            launch.argv,
            env=launch.env,
            cwd=launch.cwd,
            stdin=child_stdin,
            stdout=out_w,
            stderr=err_w,
            start_new_session=True,
            close_fds=True,
            pass_fds=launch.pass_fds,
            preexec_fn=launch.preexec_fn,
        )
    except subprocess.SubprocessError as exc:
        for fd in (out_r, err_r, in_w):
            _close(fd)
        raise SandboxSetupError(f"confining the child failed before exec ({exc})") from exc
    except BaseException:
        for fd in (out_r, err_r, in_w):
            _close(fd)
        raise
    finally:
        for fd in (out_w, err_w, in_r):
            _close(fd)
    started = time.monotonic()
    watch = None
    try:
        pidfd: int | None = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        pidfd = None
        if sys.platform == "darwin":
            watch = exit_watch(popen.pid)
            pidfd = watch.fileno() if watch is not None else None
    return Spawned(popen, popen.pid, out_r, err_r, in_w, pidfd, started, watch=watch)


def exit_watch(pid: int) -> object | None:
    """A kqueue that turns readable when `pid` exits (macOS's pidfd), or None when it cannot be made.

    EVFILT_PROC/NOTE_EXIT does not reap, so the never-reap-before-the-last-kill rule holds.
    A kqueue fd can itself be polled by the selector (and by trio), like a pidfd.
    """
    import select

    kqueue = getattr(select, "kqueue", None)
    if kqueue is None:
        return None
    kq = kqueue()
    try:
        kq.control([select.kevent(pid, filter=select.KQ_FILTER_PROC,  # type: ignore[attr-defined]
                                  flags=select.KQ_EV_ADD | select.KQ_EV_ONESHOT,  # type: ignore[attr-defined]
                                  fflags=select.KQ_NOTE_EXIT)], 0, 0)  # type: ignore[attr-defined]
    except OSError:  # ESRCH: it already exited; has_exited() polling takes over
        kq.close()
        return None
    return kq


def has_exited(pid: int) -> bool:
    """True once `pid` has exited, without reaping it (the fallback when there is no pidfd)."""
    if not hasattr(os, "waitid"):  # macOS: CPython leaves os.waitid out there
        return _is_zombie(pid)
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _is_zombie(pid: int) -> bool:
    """Has our unreaped child `pid` exited? Asked of psutil, which reads it without waiting."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_tree(sp: Spawned, cgroup: RunCgroup | None, *, descendants: bool) -> None:
    """SIGKILL the run's whole tree. Safe to repeat; a no-op once the main process is reaped.

    `descendants`: also walk the live process tree under the main process
    (psutil), catching children that left the process group with setsid();
    pointless once the main process has exited, as its children were
    reparented then. The walk runs on a stopped tree: killing a child first
    would let its parent react (a shell goes on to its next command), and
    killing the parent first would reparent the children out of reach. The
    cgroup, when there is one, catches everything else.
    """
    if sp.reaped:
        return
    found: dict[int, object] = {}
    if descendants:
        import psutil  # lazily: only a live tree needs the walk

        _signal_group(sp.pid, signal.SIGSTOP)
        for _ in range(10):  # a child outside the group may fork between the walk and its stop
            try:
                fresh = [p for p in psutil.Process(sp.pid).children(recursive=True) if p.pid not in found]
            except psutil.Error:
                break
            if not fresh:
                break
            for proc in fresh:
                found[proc.pid] = proc
                try:
                    proc.suspend()  # psutil checks the pid was not reused
                except psutil.Error:
                    pass
    _signal_group(sp.pid, signal.SIGKILL)
    for proc in found.values():
        try:
            proc.kill()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - psutil.Error: already gone
            pass
    if cgroup is not None:
        cgroup.kill_all()


def _signal_group(pid: int, sig: int) -> None:
    """Signal the main process and its process group (pgid == pid: it is a session leader)."""
    for send in (os.killpg, os.kill):
        try:
            send(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def reap(sp: Spawned) -> tuple[int, resource.struct_rusage]:
    """Reap the main process: (wait status, rusage). Blocks until it has exited."""
    _, status, rusage = os.wait4(sp.pid, 0)
    sp.reaped = True
    sp.popen.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits on it again
    return status, rusage


def build_result(
    prep: Prepared,
    status: int,
    rusage: resource.struct_rusage | None,
    stdout: Capture,
    stderr: Capture,
    *,
    timed_out: bool,
    duration: float,
    exit_code: int | None = None,
) -> Result:
    """The Result, with denials for the timeout and for limits the kernel says were hit.

    Read before cleanup (the cgroup's counters go with it); `Prepared.finish` adds the warnings.
    `exit_code`: the exit code as such (Windows has no wait status and no signals); `status` is then ignored.
    """
    code = os.waitstatus_to_exitcode(status) if exit_code is None else exit_code
    sig = -code if code < 0 and exit_code is None else None
    if sig is None and prep.launch.exit_folds_signals and 128 < code <= 128 + 64:
        sig = code - 128  # bwrap folds the command's signal death into 128+N
    limits = prep.policy.limits
    denials: list[Denial] = []
    if timed_out:
        denials.append(Denial("timeout", "", f"wall timeout {prep.timeout:g}s", "the process tree was killed"))
    if sig is not None and sig == signal.SIGXFSZ:  # no SIGXFSZ (and no sig) on Windows
        denials.append(Denial("limit", "file size", f"file_size_mb={limits.file_size_mb}",
                              "a write went past the file size limit (SIGXFSZ)"))
    if sig is not None and sig in (signal.SIGXCPU, signal.SIGKILL) and limits.cpu_seconds \
            and _cpu_seconds(rusage) >= limits.cpu_seconds:
        denials.append(Denial("limit", "cpu time", f"cpu_seconds={limits.cpu_seconds}",
                              "the CPU time limit ended the process"))
    if prep.cgroup is not None:
        ooms = prep.cgroup.oom_kills()
        if ooms:
            denials.append(Denial("limit", "memory", f"memory_mb={limits.memory_mb}",
                                  f"the kernel OOM killer ended {ooms} process(es) at the cgroup memory limit"))
        refused = prep.cgroup.forks_refused()
        if refused:
            denials.append(Denial("limit", "processes", f"pids={limits.pids}",
                                  f"{refused} fork(s) refused at the pids limit"))
    err_head = stderr.value()[:4096]
    if prep.backend == "bwrap" and code == 1 and err_head.startswith(b"bwrap: execvp ") and err_head.count(b"\n") <= 1:
        # bwrap could not exec the command: report it the way a shell does.
        code = 127 if b"No such file or directory" in err_head else 126
    if prep.backend == "bwrap" and code == 1 and err_head.startswith(b"bwrap: ") \
            and not err_head.startswith(b"bwrap: execvp"):
        # bwrap failed before the command ran (a mount it could not make): nothing was executed.
        first = err_head.split(b"\n", 1)[0].decode("utf-8", "replace")
        denials.append(Denial("setup", "", "bwrap could not build the sandbox", first))
    if prep.backend == "windows" and code == WINDOWS_SETUP_EXIT and err_head.startswith(WINDOWS_SETUP_PREFIX):
        # The runner could not build the sandbox (ACLs, logon, token): nothing was executed.
        first = err_head.split(b"\n", 1)[0].decode("utf-8", "replace")
        denials.append(Denial("setup", "", "the Windows runner could not build the sandbox", first))
    if prep.proxy is not None:
        denials.extend(prep.proxy.denials())
    if prep.resolved is not None and prep.policy.confined:
        if prep.backend == "seatbelt":  # Seatbelt refuses sockets with EPERM too
            from sandbox.backends.seatbelt import find_denials
        elif prep.backend == "windows":  # "Access is denied", not EACCES's text
            from sandbox.backends.windows import find_denials  # type: ignore[assignment]
        else:
            from sandbox.denials import find_denials

        try:
            denials.extend(find_denials(stderr.value() + b"\n" + stdout.value(), prep.resolved))
        except Exception as exc:  # noqa: BLE001 - explaining denials must never fail a run
            prep.warnings.append(f"could not analyse the output for denials: {exc}")
    return Result(
        argv=list(prep.argv),
        exit_code=None if sig is not None else code,
        signal=sig,
        stdout=stdout.value(),
        stderr=stderr.value(),
        stdout_truncated=stdout.truncated,
        stderr_truncated=stderr.truncated,
        stdout_total=stdout.total,
        stderr_total=stderr.total,
        timed_out=timed_out,
        duration=duration,
        peak_rss_kb=rusage.ru_maxrss if rusage is not None else None,
        backend=prep.backend,
        protections=dict(prep.protections),
        denials=denials,
    )


# What `python -m sandbox.backends.windows` exits with, and prints first, when it could not set up the sandbox.
WINDOWS_SETUP_EXIT = 125
WINDOWS_SETUP_PREFIX = b"stockade: windows sandbox setup failed"


def _cpu_seconds(rusage: resource.struct_rusage | None) -> float:
    return rusage.ru_utime + rusage.ru_stime if rusage is not None else 0.0


def exec_failed(prep: Prepared, exc: OSError) -> Result:
    """The shell's answer when the command cannot be executed: 127 not found, 126 not executable."""
    code = 127 if exc.errno == errno.ENOENT else 126
    message = f"stockade: {prep.argv[0]}: {exc.strerror or exc}\n".encode()
    err = Capture(prep.policy.limits.output_bytes)
    err.add(message)
    return build_result(prep, code << 8, None, Capture(0), err, timed_out=False, duration=0.0)


def run(
    argv: list[str],
    policy: SandboxPolicy,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: StdinSource = None,
    timeout: float | None = None,
    backend: str = "auto",
    on_output: OutputCallback | None = None,
    host: HostFacts | None = None,
) -> Result:
    """Run `argv` confined by `policy` and wait for it.

    env: the caller environment to filter (default os.environ). stdin: bytes
    to feed, an fd or file to pass through, or None for /dev/null. timeout
    overrides policy.limits.timeout. on_output(stream, chunk) is called as
    output arrives. Raises SandboxSetupError when nothing could be run; a
    command that cannot be executed gives the shell's 127 (not found) or 126.
    """
    if isinstance(stdin, int) and stdin < 0 and stdin != subprocess.DEVNULL:
        raise ValueError("stdin: pass bytes to feed the command, an fd or file to pass through, or None")
    prep = prepare(argv, policy, cwd=cwd, env=env, timeout=timeout, backend=backend, host=host, watch=True)
    if sys.platform == "win32":  # no fork, wait4 or killpg: the job-object runner
        from sandbox.execute_windows import run_prepared

        try:
            result = run_prepared(prep, stdin, on_output)
        except BaseException:
            prep.cleanup()
            raise
        return prep.finish(result)
    try:
        try:
            if isinstance(stdin, bytes):
                sp, feed = spawn(prep, pipe_stdin=True), stdin
            else:
                sp, feed = spawn(prep, stdin), b""
        except OSError as exc:
            result = exec_failed(prep, exc)
        else:
            result = _supervise(prep, sp, feed, on_output)
    except BaseException:
        prep.cleanup()
        raise
    return prep.finish(result)


def _supervise(prep: Prepared, sp: Spawned, feed: bytes, on_output: OutputCallback | None) -> Result:
    """Pump the pipes until the main process exits and the pipes drain, killing on timeout."""
    captures = {"stdout": Capture(prep.policy.limits.output_bytes),
                "stderr": Capture(prep.policy.limits.output_bytes)}
    deadline = sp.started + prep.timeout if prep.timeout is not None else None
    timed_out = exited = False
    drain_until: float | None = None
    pending = memoryview(feed)
    sel = selectors.DefaultSelector()
    try:
        sel.register(sp.stdout, selectors.EVENT_READ, "stdout")
        sel.register(sp.stderr, selectors.EVENT_READ, "stderr")
        if sp.pidfd is not None:
            sel.register(sp.pidfd, selectors.EVENT_READ, "exit")
        watch_at = sp.started + WATCH_AFTER if prep.watch_patterns else None
        if sp.stdin is not None and pending:
            os.set_blocking(sp.stdin, False)
            sel.register(sp.stdin, selectors.EVENT_WRITE, "stdin")
        else:
            _close(sp.stdin)
            sp.stdin = None
        readers = 2
        while True:
            now = time.monotonic()
            if not exited and sp.pidfd is None:
                exited = has_exited(sp.pid)
            if not exited and deadline is not None and now >= deadline and not timed_out:
                timed_out = True
                kill_tree(sp, prep.cgroup, descendants=True)
            if watch_at is not None and now >= watch_at:
                watch_at = None
                if not exited and (fd := prep.start_watch(sp)) is not None:
                    sel.register(fd, selectors.EVENT_READ, "watch")
            if exited:
                if drain_until is None:
                    drain_until = now + DRAIN_SECONDS
                    if sp.stdin is not None:
                        sel.unregister(sp.stdin)
                        _close(sp.stdin)
                        sp.stdin = None
                if readers == 0 or now >= drain_until:
                    break
            wakeups = [t for t in (drain_until, None if timed_out else deadline, watch_at) if t is not None]
            if sp.pidfd is None and not exited:
                wakeups.append(now + POLL_SECONDS)
            wait = min(max(0.0, min(wakeups) - now), MAX_WAIT) if wakeups else None
            for key, _ in sel.select(wait):
                what = key.data
                if what == "exit":
                    exited = True
                    sel.unregister(key.fd)
                elif what == "watch":
                    if prep.deny_read_changed(sp):
                        sel.unregister(key.fd)
                elif what == "stdin":
                    try:
                        pending = pending[os.write(key.fd, pending[:READ_CHUNK]):]
                    except BlockingIOError:
                        continue
                    except OSError:  # EPIPE: the command closed its stdin
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(key.fd)
                        _close(sp.stdin)
                        sp.stdin = None
                else:
                    chunk = os.read(key.fd, READ_CHUNK)
                    if not chunk:
                        sel.unregister(key.fd)
                        readers -= 1
                        continue
                    captures[what].add(chunk)
                    if on_output is not None:
                        on_output(what, chunk)
        # Leftovers of the tree (background jobs, daemons) die with the run.
        kill_tree(sp, prep.cgroup, descendants=False)
        status, rusage = reap(sp)
        return build_result(prep, status, rusage, captures["stdout"], captures["stderr"],
                            timed_out=timed_out, duration=time.monotonic() - sp.started)
    except BaseException:
        # KeyboardInterrupt, or on_output raised: nothing of the run may outlive us.
        kill_tree(sp, prep.cgroup, descendants=not exited)
        if not sp.reaped:
            reap(sp)
        raise
    finally:
        sel.close()
        sp.close()


def __getattr__(name: str) -> object:
    # StdinSource is a runtime alias other modules import; building it needs typing.IO,
    # so it is made on first use rather than on every cold start.
    if name == "StdinSource":
        from typing import IO

        value = bytes | int | IO[bytes] | IO[str] | None
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

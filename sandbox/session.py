"""Confined sessions: one sandbox, many commands, near-bare spawn cost.

`sandbox.run` pays the whole sandbox setup for every command (bwrap's
namespaces and mounts, or a pre-exec hook that makes CPython fork instead of
vfork). A `Session` confines one small worker process once
(`sandbox.worker`), and the worker spawns every command of the session with
a plain vfork+exec; each command inherits the worker's confinement.

How the pieces fit:
- The worker is launched like any command (`sandbox.execute.prepare` +
  `spawn`): under bwrap it is the sandboxed program, under landlock the
  backend's pre-exec hook confines it before exec. It is spawned from a
  thread that lives exactly as long as the worker (bwrap's
  --die-with-parent follows the forking thread). Before a worker is used,
  its own report (NoNewPrivs, CapEff, seccomp mode, dumpability) is checked
  against the policy; a worker that is not confined as expected is killed.
- Each request travels on a channel: a socketpair whose other end was
  handed to the worker over the control socket. A channel carries one
  request at a time and goes back to a pool, so concurrent callers (threads
  or trio tasks) each use their own and nothing is multiplexed.
- Output never relays through the worker: the host makes the stdout/stderr
  pipes and passes the write ends with SCM_RIGHTS; only `exit` (wait
  status, rusage; `started` with the pid when asked) comes back as a
  message. The host keeps its own copies of the write ends until that
  report, so the pipes cannot hang up before it: a quiet command wakes the
  host once.
- The worker spawns with posix_spawn (glibc: CLONE_VFORK), in a new
  session, with the cwd and env of the request; cost per command (2-vCPU VM,
  loaded): about 1.5x a bare `subprocess.run`, against 15-30x for
  `sandbox.run` (bench/session.py). What is left is two processes' Python
  and two more context switches per command than a bare spawn.
- The per-command env is built on the host with `policies.env.build_env`,
  as `sandbox.run` does; the worker holds no secrets.
"""

from __future__ import annotations

import array
import base64
import contextlib
import dataclasses
import errno as _errno
import itertools
import json
import os
import queue
import resource
import select
import selectors
import signal
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from policies.env import CORE_VARS, build_env
from policies.host import HostFacts
from policies.model import EnvInherit, SandboxPolicy
from policies.resolve import ResolvedPolicy
from sandbox.backends.base import ENFORCED, Launch, SandboxSetupError
from sandbox.denials import REFUSAL_MARKERS
from sandbox.detect import host_facts
from sandbox.execute import (
    DRAIN_SECONDS,
    MAX_WAIT,
    READ_CHUNK,
    Capture,
    OutputCallback,
    Prepared,
    Spawned,
    StdinSource,
    build_result,
    check_timeout,
    exec_failed,
    prepare,
    reap,
    spawn,
)
from sandbox.result import Denial, Result
from sandbox.worker import ENV_SLOTS, HEADER, MAX_CHANNELS, MAX_FRAME, FrameError, FrameReader, encode

if TYPE_CHECKING:
    import trio

    from sandbox.deny_watch import DenyReadWatch

HELLO_TIMEOUT = 30.0  # a worker that does not report within this is killed (loaded CI machines are slow)
WATCHDOG_GRACE = 10.0  # past a command's timeout + this with no exit report, the worker is taken for hung
OP_TIMEOUT = 120.0  # default wait for a file operation's answer
CANCEL_GRACE = DRAIN_SECONDS + 3.0
STREAM_BACKLOG = 256
TAIL = 64 * 1024  # of the worker's own stderr, kept for error messages
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BOOT = f"import sys; sys.path.insert(0, {_ROOT!r}); from sandbox.worker import main; main()"
_jstr = json.encoder.encode_basestring_ascii  # str -> JSON string literal, in C
_DENIED = (_errno.EACCES, _errno.EPERM, _errno.EROFS, _errno.EBUSY)
_READ_OPS = ("read_file", "list_dir", "search")
# bwrap's word for a bind source deleted between the launch's scan and its setup (the host view binds
# single files), beyond those sandbox.backends.bwrap.vanished_during_setup knows: nothing ran either.
_VANISHED_TOO = (b"bwrap: Can't get type of source ",)
TREE_KILL = ("best-effort: process group at exit; on timeout or kill every descendant (the worker is a "
             "subreaper); leftovers that left the group are swept once the session is idle")


class SessionError(RuntimeError):
    """The session cannot serve the call: its worker died or hung mid-call, or the session is closed.

    `stdout`/`stderr`: what the command had printed when it happened (partial).
    """

    def __init__(self, message: str, *, argv: list[str] | None = None, stdout: bytes = b"",
                 stderr: bytes = b"") -> None:
        super().__init__(message)
        self.argv, self.stdout, self.stderr = argv, stdout, stderr


class FileOpError(Exception):
    """A file operation failed in the sandbox: which path, which errno, and the Denial when the policy forbids it."""

    def __init__(self, op: str, path: str | None, err: int | None, message: str, denial: Denial | None) -> None:
        self.op, self.path, self.errno, self.message, self.denial = op, path, err, message, denial
        self.errname = _errno.errorcode.get(err or 0) if err else None
        where = f" {path}" if path else ""
        code = f" [{self.errname}]" if self.errname else ""
        why = f" ({denial.kind}: {denial.rule})" if denial else ""
        super().__init__(f"{op}{where}: {message}{code}{why}")


@dataclass
class FileContent:
    path: str
    data: bytes
    size: int  # the file's size (data may be shorter: see truncated)
    truncated: bool


@dataclass
class DirEntry:
    name: str
    type: str  # dir | file | link | other | unknown
    size: int


@dataclass
class SearchMatch:
    path: str
    line: int
    text: str


@dataclass
class SearchResult:
    matches: list[SearchMatch]
    truncated: bool
    files_scanned: int
    files_skipped: int  # unreadable (denied), binary, too large, special


class _Gone(Exception):
    """The worker's end of a channel closed."""


class _Vanished(SandboxSetupError):
    """bwrap gave up before exec because a mount target vanished meanwhile: a fresh launch may work."""


# -- channels ------------------------------------------------------------------------------------------

class _Chan:
    """Our end of one channel socket (non-blocking), with its frame reader."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = FrameReader()
        self.env_slots: list[int | None] = [None] * ENV_SLOTS  # which env (by id) the worker holds in each
        self.next_slot = 0

    def env_field(self, env_id: int, env_json: str) -> str:
        """The request's env fields: a slot the worker already holds, or the env itself into a slot."""
        slots = self.env_slots
        if env_id in slots:
            return f'"env_slot":{slots.index(env_id)}'
        slot = self.next_slot
        self.next_slot = (slot + 1) % ENV_SLOTS
        slots[slot] = env_id
        return f'"env_slot":{slot},"env":{env_json}'

    def forget_envs(self) -> None:
        """After an error the worker may not have stored what we sent: send every env again."""
        self.env_slots = [None] * ENV_SLOTS

    def send(self, msg: dict[str, Any], fds: Iterable[int] = (), timeout: float = 30.0) -> None:
        self.send_frame(encode(msg)[HEADER.size:], fds, timeout)

    def send_frame(self, body: bytes, fds: Iterable[int] = (), timeout: float = 30.0) -> None:
        if len(body) > MAX_FRAME:
            raise ValueError(f"request of {len(body)} bytes exceeds the {MAX_FRAME}-byte frame limit")
        data = memoryview(HEADER.pack(len(body)) + body)
        fds = list(fds)
        deadline = time.monotonic() + timeout
        while data:
            try:
                if fds:
                    sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                    fds = []
                else:
                    sent = self.sock.send(data)
                data = data[sent:]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [self.fd], [], left)[1]:
                    raise TimeoutError("the session worker stopped reading its channel") from None

    def recv(self) -> list[Any]:
        """Every message that has arrived (possibly none). Raises _Gone at EOF."""
        out: list[Any] = []
        while True:
            try:
                data = self.sock.recv(READ_CHUNK)
            except BlockingIOError:
                return out
            except OSError as exc:  # ECONNRESET
                raise _Gone(str(exc)) from None
            if not data:
                if out:
                    return out  # report these first; EOF again next time
                raise _Gone("EOF")
            out.extend(self.reader.feed(data))
            if len(data) < READ_CHUNK:
                return out

    def close(self) -> None:
        self.sock.close()


# -- one worker ------------------------------------------------------------------------------------------

class _Worker:
    """One launched worker: its launch, control socket, channel pool and the thread that keeps it."""

    def __init__(self, prep: Prepared, control: socket.socket) -> None:
        self.prep = prep
        self.control = control
        self.control_lock = threading.Lock()
        self.idle: list[_Chan] = []
        self.chans: set[_Chan] = set()
        self.inflight: dict[_Chan, int] = {}  # channel -> pid of the command running on it
        self.dead = threading.Event()
        self.status: int | None = None
        self.stderr_tail = bytearray()
        self.spawned: Spawned | None = None
        self.hello: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.seen_limits = (0, 0)  # cgroup OOM kills and refused forks already reported
        self.thread: threading.Thread | None = None
        self._host_pid: int | None = None
        self.pidfd: int | None = None  # the worker's own process, polled by alive()
        self.alive_poll: Any = None
        self.retired: str | None = None  # why the session killed it on purpose (see DenyReadWatch)
        self._cleaned = False

    # The keeper thread: spawns the worker, then lives exactly as long as it (see module docstring).
    def keep(self, ready: queue.SimpleQueue[Any]) -> None:
        try:
            sp = spawn(self.prep)
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            ready.put(exc)
            return
        self.spawned = sp
        ready.put(sp)
        sel = selectors.DefaultSelector()
        try:
            for fd in (sp.stdout, sp.stderr):
                if fd is not None:
                    sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                for key, _ in sel.select():
                    chunk = os.read(key.fd, READ_CHUNK)
                    if not chunk:
                        sel.unregister(key.fd)
                        continue
                    self.stderr_tail += chunk
                    del self.stderr_tail[:-TAIL]
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, sp.pid, os.WEXITED | os.WNOWAIT)  # gone, but its pid still ours
            with self.lock:  # kill() checks status under the lock: it never signals a recycled pid
                status, _ = reap(sp)
                self.status = status
        finally:
            sel.close()
            sp.close()
            self.after_death()
            self.dead.set()

    def after_death(self) -> None:
        """Whatever the worker left (its commands, when nothing else takes them down) dies; host state goes."""
        with self.lock:
            if self._cleaned:
                return
            self._cleaned = True
            if not self.prep.launch.kills_tree:
                for pid in list(self.inflight.values()):  # host pids (no pid namespace)
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
            self.inflight.clear()
        try:
            self.prep.cleanup()  # cgroup kill + removal, stubs, ruleset fd, per-run tmp dir
        finally:
            # Channels in use are closed by their callers (_release), never under them: a closed fd
            # number can be reused at once by another thread's pipe, and they poll by number.
            with self.control_lock, contextlib.suppress(OSError):
                self.control.close()
            if self.pidfd is not None:
                self.alive_poll = None
                with contextlib.suppress(OSError):
                    os.close(self.pidfd)
                self.pidfd = None

    def describe_death(self) -> str:
        if self.retired is not None:
            return f"retired by the session: {self.retired}; it is replaced by one that hides it"
        if self.status is None:
            return "the worker stopped answering"
        code = os.waitstatus_to_exitcode(self.status)
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        if self.prep.launch.exit_folds_signals and 128 < code <= 192:
            with contextlib.suppress(ValueError):
                how = f"killed by {signal.Signals(code - 128).name}"
        tail = self.stderr_tail.decode("utf-8", "replace").strip()
        return how + (f": {tail[-2000:]}" if tail else "")

    def alive(self) -> bool:
        """False once the worker process has exited (a pidfd poll: a few microseconds)."""
        if self.dead.is_set():
            return False
        if self.alive_poll is not None:
            try:
                return not self.alive_poll.poll(0)
            except (OSError, ValueError):
                return False
        return True

    def kill(self) -> None:
        """SIGKILL the worker (bwrap: the whole pid namespace goes with it); never a recycled pid."""
        pidfd = self.pidfd
        if pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        with self.lock:
            if self.spawned is not None and self.status is None and not self.spawned.reaped:
                with contextlib.suppress(OSError):
                    os.kill(self.spawned.pid, signal.SIGKILL)  # our unreaped child: its pid is still ours

    def close_idle(self) -> None:
        """Close the pooled channels (the worker is gone or going). Caller holds the session lock."""
        for chan in self.idle:
            self.chans.discard(chan)
            with contextlib.suppress(OSError):
                chan.close()
        self.idle.clear()

    def send_control(self, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
        data = encode(msg)
        with self.control_lock:
            self.control.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                                 if fds else [])

    def await_hello(self, timeout: float) -> dict[str, Any]:
        reader = FrameReader()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                self.dead.wait(5)
                raise SandboxSetupError(f"the session worker did not start within {timeout:g}s"
                                        f" ({self.describe_death()})")
            try:
                ready = select.select([self.control], [], [], min(left, 0.2))[0]
                data = self.control.recv(65536) if ready else b"?"
            except (OSError, ValueError):  # closed by the keeper: the worker is gone
                ready, data = [True], b""
            if self.dead.is_set() and not ready:
                raise SandboxSetupError(f"the session worker failed to start ({self.describe_death()})")
            if not ready:
                continue
            if not data:
                self.dead.wait(5)
                raise SandboxSetupError(f"the session worker failed to start ({self.describe_death()})")
            for msg in reader.feed(data):
                if isinstance(msg, dict) and "hello" in msg:
                    self.hello = msg
                    return msg

    def host_pid(self) -> int | None:
        """The worker's pid on the host (under bwrap it sits two levels below the bwrap process)."""
        if self._host_pid is None and self.spawned is not None:
            ns_pid = self.hello.get("pid")
            if ns_pid == self.spawned.pid or not self.prep.launch.kills_tree:
                self._host_pid = self.spawned.pid
            else:
                self._host_pid = _find_ns_pid(self.spawned.pid, ns_pid)
        return self._host_pid


def _stop_worker(w: _Worker) -> None:
    """EOF on the control socket (the worker kills its commands and exits), else SIGKILL; then clean up."""
    with w.control_lock, contextlib.suppress(OSError):
        w.control.shutdown(socket.SHUT_RDWR)
    if not w.dead.wait(5.0):
        w.kill()
        w.dead.wait(5.0)
    w.after_death()
    w.close_idle()
    if w.thread is not None and w.thread is not threading.current_thread():
        w.thread.join(5.0)


def _finalize(holder: list[_Worker | None]) -> None:
    """A session dropped (or the interpreter exiting) without close(): stop its worker all the same."""
    w, holder[0] = holder[0], None
    if w is not None:
        _stop_worker(w)


def _find_ns_pid(root: int, ns_pid: object) -> int | None:
    """The host pid of the descendant of `root` whose innermost namespace pid is `ns_pid`."""
    from sandbox.worker import descendants, proc_table

    for pid in sorted(descendants(proc_table(), root)):
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("NSpid:"):
                        ids = line.split()[1:]
                        if len(ids) > 1 and ids[-1] == str(ns_pid):
                            return pid
        except OSError:
            continue
    return None


# -- one command ------------------------------------------------------------------------------------------

class _Run:
    """What the host knows about one command: its captures and the worker's reports."""

    def __init__(self, rid: int, argv: list[str], cwd: str, timeout: float | None, cap: int) -> None:
        self.rid, self.argv, self.cwd, self.timeout = rid, argv, cwd, timeout
        self.out, self.err = Capture(cap), Capture(cap)
        self.pid: int | None = None
        self.exit: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.writers: list[int] = []  # host-held write ends of stdout/stderr
        self.stdin_w: int | None = None  # our end of its stdin pipe (sync exec feeding bytes)
        self.sent = time.monotonic()

    def handle(self, msg: Any) -> None:
        if isinstance(msg, FrameError) or not isinstance(msg, dict):
            self.error = {"kind": "protocol", "message": getattr(msg, "message", repr(msg))}
        elif msg.get("id") is None and msg.get("ok") is False:  # the worker could not read our request
            self.error = {"kind": "protocol", **(msg.get("error") or {})}
        elif msg.get("id") != self.rid:
            return  # not ours: a late answer to something abandoned
        elif msg.get("ev") == "started":
            self.pid = msg.get("pid")
        elif msg.get("ev") == "exit":
            self.exit = msg
            self.pid = self.pid if self.pid is not None else msg.get("pid")
        elif msg.get("ok") is False:
            self.error = msg.get("error") or {"kind": "protocol", "message": "error without detail"}

    @property
    def over(self) -> bool:
        return self.exit is not None or self.error is not None

    def close_stdin(self) -> None:
        if self.stdin_w is not None:
            fd, self.stdin_w = self.stdin_w, None
            os.close(fd)

    def writers_done(self) -> None:
        """Close the host's copies of the output write ends: once the command's tree is gone, EOF follows."""
        for fd in self.writers:
            try:
                os.close(fd)
            except OSError:
                pass
        self.writers = []


# -- the session ------------------------------------------------------------------------------------------

def _mentions_refusal(out: bytes, err: bytes) -> bool:
    """Whether the output may hold a refusal worth explaining (a cheap scan; the parser decides)."""
    return bool(out or err) and any(word in err or word in out for word in REFUSAL_MARKERS)


class Session:
    """One confined worker serving many commands and file operations under one policy.

    Use it as a context manager (`with Session(policy) as s: s.exec([...])`)
    or, from trio, `async with` (`await s.aexec(...)`, `await
    s.open_process(...)`). `close()` stops the worker and removes everything
    the session made: its private /tmp is a tmpfs in the worker's mount
    namespace (bwrap; landlock with a mount namespace) and dies with it; a
    per-run host TMPDIR (landlock without namespaces), the cgroup, mount
    stubs and fds are removed.

    State persists for the session's life: its /tmp and whatever commands
    write in the writable roots. Resource limits (pids, memory) are the
    session's as a whole (one cgroup or one set of rlimits for the worker and
    everything it spawns); the wall timeout and the output caps are per
    command.

    Escalation: every command of a session runs under the session's policy.
    A command that needs another policy (more writable roots, network)
    runs outside the session, with `sandbox.run(argv, other_policy)`; a
    session never widens or narrows its confinement.

    Leftovers: when a command's main process exits, its process group is
    killed; descendants that left it (setsid, double fork) are killed with
    the command on timeout or kill, and otherwise swept once no command of
    the session runs (50 ms later). Under concurrency, an orphan in a new
    session cannot be told apart from another command's, so it lives until
    the session goes idle.

    Worker failure: a worker that dies or hangs while serving a call makes
    that call raise `SessionError` (with the partial output); whatever it
    had started is killed (pid namespace, cgroup, or the process groups it
    reported). The next call starts a fresh worker, launched and checked
    like the first, so nothing ever runs unconfined; the session's /tmp does
    not survive this. `restarts` counts them.

    Results are `sandbox.run`'s: exit code or signal as it happened, output
    capped head+tail, `timed_out` with a Denial, denials read from the output,
    backend and protections from the worker's launch ("tree-kill" says what a
    session gives). Pids (`SessionProcess.pid`) are as seen in the sandbox
    (under bwrap, pids in its pid namespace).

    File operations (`read_file`, `write_file`, `apply_edits`, `list_dir`,
    `search`) run in the worker, so the kernel enforces the policy on them
    exactly as on a command. A refusal raises `FileOpError` with the path,
    errno and, when the policy explains it, a Denial.

    The sandbox's mounts are fixed when the worker starts: a program under
    the host's /tmp, which `sandbox.run` shows read-only for that command,
    is not visible in a session; run it with `sandbox.run`.
    """

    def __init__(self, policy: SandboxPolicy, backend: str = "auto", *, host: HostFacts | None = None) -> None:
        self.policy = policy
        self._requested = backend
        self._host = host
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # a channel came back (see MAX_CHANNELS)
        self._worker: _Worker | None = None
        self._holder: list[_Worker | None] = [None]  # what the finalizer stops (it must not hold self)
        weakref.finalize(self, _finalize, self._holder)
        self._closed = False
        self._ids = itertools.count(1)
        self._rp_cache: dict[str, ResolvedPolicy] = {}
        self._env_cache: dict[tuple[Any, ...], tuple[int, str]] = {}
        self._environ_seen: tuple[dict[bytes, bytes] | None, tuple[int, str]] = (None, (0, ""))
        self._env_ids = itertools.count(1)
        self._cmd_launch = Launch(argv=[], env={}, cwd="")  # what build_result reads: no signal folding
        self._workspace = os.path.realpath(policy.workspace)
        self._tmpdir = "/tmp"
        self._notify = False
        self.backend = ""
        self.protections: dict[str, str] = {}
        self.restarts = 0
        self._watch: DenyReadWatch | None = None
        self._watcher: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> Session:
        """Start the worker now (else the first call does). Raises SandboxSetupError when it cannot be confined."""
        with self._lock:
            self._ensure()
        return self

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker, kill whatever it runs, remove what the session made. Idempotent."""
        with self._lock:
            self._closed = True
            worker, self._worker, self._holder[0] = self._worker, None, None
            watch, self._watch = self._watch, None
        if worker is not None:
            self._stop(worker)
        if watch is not None:
            watch.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def resolved(self) -> ResolvedPolicy | None:
        """The policy as resolved for the running worker (real paths, protected paths); None before start."""
        return getattr(self, "_rp", None)

    @property
    def worker_pid(self) -> int | None:
        """The worker's host pid (None before start or after close)."""
        w = self._worker
        return w.host_pid() if w is not None and not w.dead.is_set() else None

    def _stop(self, w: _Worker) -> None:
        _stop_worker(w)

    def _ensure(self) -> _Worker:
        """The live worker, launched (again) when needed. Caller holds self._lock."""
        if self._closed:
            raise SessionError("the session is closed")
        w = self._worker
        if w is not None and w.alive() and w.retired is None:  # (retired: killed, maybe not dead yet)
            reason = self._watch.changed() if self._watch is not None else None
            if reason is None:
                return w
            w.retired = f"a deny-read entry changed on the host ({reason})"
        if w is not None:
            self._worker = self._holder[0] = None
            self._stop(w)
            self.restarts += 1
        w = self._launch()
        self._worker = self._holder[0] = w
        return w

    def _launch(self) -> _Worker:
        """Launch and check a worker; again (twice at most) when bwrap gave up because a mount target vanished."""
        for _ in range(2):
            try:
                return self._launch_once()
            except _Vanished:
                continue
        return self._launch_once()

    def _launch_once(self) -> _Worker:
        host = self._host or host_facts()
        policy = self._watched_policy(host)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            argv = [sys.executable, "-I", "-S", "-c", _BOOT, str(theirs.fileno())]
            prep = prepare(argv, policy, backend=self.backend or self._requested, host=host)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        prep.launch.pass_fds = (*prep.launch.pass_fds, theirs.fileno())
        w = _Worker(prep, ours)
        ready: queue.SimpleQueue[Any] = queue.SimpleQueue()
        w.thread = threading.Thread(target=w.keep, args=(ready,), name="stockade-session-worker", daemon=True)
        w.thread.start()
        got = ready.get()
        theirs.close()
        if isinstance(got, BaseException):
            w.after_death()
            if isinstance(got, OSError):
                raise SandboxSetupError(f"could not start the session worker: {got}") from got
            raise got
        try:
            hello = w.await_hello(HELLO_TIMEOUT)
            problems = self._check(hello, prep)
            if problems:
                raise SandboxSetupError("the session worker is not confined as the policy requires, refusing "
                                        "to use it: " + "; ".join(problems))
        except BaseException as exc:
            self._stop(w)
            if isinstance(exc, SandboxSetupError) and prep.backend == "bwrap" and w.status is not None:
                from sandbox.backends.bwrap import vanished_during_setup

                # Nothing ran: bwrap stopped before exec because a host socket or file it was to mount
                # on disappeared between the scan and its setup.
                code, err = os.waitstatus_to_exitcode(w.status), bytes(w.stderr_tail)
                if vanished_during_setup(code, err) or (
                        code == 1 and err.startswith(_VANISHED_TOO) and err.count(b"\n") <= 1):
                    raise _Vanished(str(exc)) from exc
            raise
        pid = w.host_pid()
        if pid is not None:
            with contextlib.suppress(OSError, AttributeError):
                w.pidfd = os.pidfd_open(pid)
                w.alive_poll = select.poll()
                w.alive_poll.register(w.pidfd, select.POLLIN)
        self.backend = prep.backend
        self.protections = {**prep.protections, "tree-kill": TREE_KILL}
        self._tmpdir = prep.launch.env.get("TMPDIR", "/tmp")
        self._rp_cache, self._env_cache, self._environ_seen = {}, {}, (None, (0, ""))
        # Without a pid namespace or a cgroup, only the pids the worker reports let the host kill
        # commands a dead worker left behind: ask for them then (a `started` message per command).
        self._notify = not prep.launch.kills_tree and prep.cgroup is None
        assert prep.resolved is not None
        self._rp = prep.resolved
        return w

    def _watched_policy(self, host: HostFacts) -> SandboxPolicy:
        """The policy for a new worker, with the deny-read watch (re)started: what changes on the host from
        now on retires the worker (see sandbox.deny_watch); entries renamed away stay denied."""
        if not self.policy.confined or not self.policy.deny_read:
            return self.policy
        if self._watch is None:
            from sandbox.deny_watch import watch_for

            self._watch = watch_for(self.policy, host.home)
            if self._watch is not None:
                self._watcher = threading.Thread(target=self._watch_loop, args=(self._watch,),
                                                 name="stockade-deny-watch", daemon=True)
                self._watcher.start()
        else:
            self._watch.changed()  # what happened before this launch is in the view it is about to resolve
        if self._watch is None or not self._watch.moved:
            return self.policy
        return dataclasses.replace(self.policy, deny_read=(*self.policy.deny_read, *self._watch.moved))

    def _watch_loop(self, watch: DenyReadWatch) -> None:
        """Between calls: retire the worker as soon as the host changes a deny-read entry, so a command
        already running cannot wait for the new secret."""
        poller = select.poll()
        poller.register(watch.fd, select.POLLIN)
        while not self._closed and watch.fd >= 0:
            try:
                events = poller.poll(1000)
            except (OSError, ValueError):
                return
            if any(ev & (select.POLLNVAL | select.POLLERR) for _, ev in events):
                return
            if not events:
                continue
            with self._lock:
                if self._watch is not watch or self._closed:
                    return
                reason = watch.changed()
                w = self._worker
                if reason is not None and w is not None and w.alive():
                    w.retired = f"a deny-read entry changed on the host ({reason})"
                    w.kill()

    def _check(self, hello: dict[str, Any], prep: Prepared) -> list[str]:
        """What the worker reports about itself against what the launch promised."""
        problems = []
        if hello.get("hello") != 1:
            problems.append(f"unknown protocol {hello.get('hello')!r}")
        if hello.get("dumpable") != 0:
            problems.append("the worker is dumpable")
        if self.policy.confined:
            if hello.get("no_new_privs") != 1:
                problems.append("NoNewPrivs is not set")
            if hello.get("cap_eff") != 0:
                problems.append(f"capabilities left: CapEff={hello.get('cap_eff')!r:}")
            if prep.protections.get("syscall-filter") == ENFORCED and hello.get("seccomp") != 2:
                problems.append(f"no seccomp filter (Seccomp={hello.get('seccomp')!r})")
        return problems

    # -- channels ------------------------------------------------------------------------------------------

    def _acquire(self) -> tuple[_Worker, _Chan]:
        """An idle channel of the live worker, or a new one; past MAX_CHANNELS in use, wait for one."""
        with self._cond:
            for attempt in (0, 1):
                w = self._ensure()
                deadline = time.monotonic() + OP_TIMEOUT
                while not w.idle and len(w.chans) >= MAX_CHANNELS and w is self._worker:
                    if not self._cond.wait(max(deadline - time.monotonic(), 0)) and time.monotonic() >= deadline:
                        raise SessionError(f"{MAX_CHANNELS} calls already in flight in this session")
                    w = self._ensure()
                if w.idle:
                    return w, w.idle.pop()
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    w.send_control({"op": "attach", "nfds": 1}, [theirs.fileno()])
                except OSError as exc:  # the worker is gone; nothing was asked of it yet
                    ours.close()
                    w.kill()
                    w.dead.wait(5.0)
                    if attempt:
                        raise SessionError(f"the session worker is gone ({exc})") from exc
                    continue
                finally:
                    theirs.close()
                chan = _Chan(ours)
                w.chans.add(chan)
                return w, chan
            raise AssertionError("unreachable")

    def _release(self, w: _Worker, chan: _Chan, reusable: bool, run: _Run | None = None) -> None:
        if run is not None and run.exit is None:
            chan.forget_envs()  # the request may have been refused before its env was stored
        with self._cond:
            w.inflight.pop(chan, None)
            self._cond.notify()
            if reusable and not w.dead.is_set() and self._worker is w:
                w.idle.append(chan)
                return
            w.chans.discard(chan)
        chan.close()

    def _gone(self, w: _Worker, what: str, run: _Run | None = None) -> SessionError:
        """The worker's channel hit EOF: wait until it is reaped and its leftovers killed, then say so."""
        if not w.dead.wait(5.0):
            w.kill()
            w.dead.wait(5.0)
        w.after_death()
        if self._closed:
            return SessionError(f"the session was closed while {what}", argv=run.argv if run else None,
                                stdout=run.out.value() if run else b"", stderr=run.err.value() if run else b"")
        return SessionError(f"the session worker died while {what} ({w.describe_death()}); anything it ran "
                            "was killed, and the next call starts a fresh worker (the session's /tmp is lost)",
                            argv=run.argv if run else None, stdout=run.out.value() if run else b"",
                            stderr=run.err.value() if run else b"")

    # -- commands ------------------------------------------------------------------------------------------

    def _command_env(self, env: Mapping[str, str] | None) -> tuple[int, str]:
        """`build_env` for this caller env as (id, JSON), memoised on exactly the variables it reads."""
        caller = os.environ if env is None else env
        if env is None:
            data = getattr(os.environ, "_data", None)  # CPython's backing dict: one compare instead of lookups
            if data is not None and data == self._environ_seen[0]:
                return self._environ_seen[1]
        rules = self.policy.env
        if rules.inherit is EnvInherit.ALL:
            key: tuple[Any, ...] = tuple(sorted(caller.items()))
        else:
            names = (*CORE_VARS, *rules.passthrough) if rules.inherit is EnvInherit.CORE else rules.passthrough
            key = tuple(caller.get(name) for name in names)
        encoded = self._env_cache.get(key)
        if encoded is None:
            child = build_env(self.policy, caller, tmpdir=self._tmpdir)
            if self._tmpdir != "/tmp":  # a per-run host TMPDIR (landlock without namespaces)
                for name in ("TMP", "TEMP"):
                    if name in child:
                        child[name] = self._tmpdir
            if len(self._env_cache) > 64:
                self._env_cache.clear()
            encoded = self._env_cache[key] = (next(self._env_ids), json.dumps(child))
        if env is None and data is not None:
            self._environ_seen = (dict(data), encoded)
        return encoded

    def _cwd(self, cwd: str | os.PathLike[str] | None) -> str:
        if cwd is None:
            return self._rp.cwd
        return os.path.normpath(os.path.join(self._rp.cwd, os.fspath(cwd)))

    def _start(self, argv: list[str], cwd: str | os.PathLike[str] | None, env: Mapping[str, str] | None,
               stdin: StdinSource, timeout: float | None, pipe_stdin: bool,
               notify: bool = False) -> tuple[_Worker, _Chan, _Run, int, int, int | None]:
        """Send a run request: (worker, channel, run, stdout read end, stderr read end, stdin write end)."""
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv: a non-empty list of strings")
        for attempt in (0, 1):
            w, chan = self._acquire()
            run_cwd = self._cwd(cwd)
            timeout_s = check_timeout(self.policy.limits.timeout if timeout is None else timeout)
            run = _Run(next(self._ids), list(argv), run_cwd, timeout_s, self.policy.limits.output_bytes)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            fds, in_w, in_r = [out_w, err_w], None, None
            if pipe_stdin:
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
                fds.append(in_r)
            elif stdin is not None:
                fds.append(stdin if isinstance(stdin, int) else stdin.fileno())  # type: ignore[union-attr]
            # Spelled out rather than json.dumps(dict): the env's JSON is memoised (the fast path).
            body = (f'{{"op":"run","id":{run.rid},"argv":[{",".join(map(_jstr, run.argv))}],'
                    f'{chan.env_field(*self._command_env(env))},"cwd":{_jstr(run_cwd)},'
                    f'"timeout":{"null" if timeout_s is None else repr(float(timeout_s))},"nfds":{len(fds)},'
                    f'"notify":{"true" if notify or self._notify else "false"}}}').encode()
            try:
                chan.send_frame(body, fds)
            except (OSError, TimeoutError) as exc:
                for fd in (out_r, err_r, in_w, out_w, err_w):
                    if fd is not None:
                        os.close(fd)
                self._release(w, chan, False)
                w.kill()  # nothing ran: a fresh worker may take it
                if attempt:
                    raise SessionError(f"the session worker does not take requests ({exc})") from exc
                w.dead.wait(5.0)
                continue
            finally:
                if in_r is not None:
                    os.close(in_r)
            # Our copies of the write ends stay open until the exit report: the pipes cannot hang up
            # before it, so the report is the one wakeup a quiet command costs (see _Run.writers_done).
            run.writers = [out_w, err_w]
            return w, chan, run, out_r, err_r, in_w
        raise AssertionError("unreachable")

    def exec(
        self,
        argv: list[str],
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        stdin: StdinSource = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> Result:
        """Run `argv` in the session and wait, like `sandbox.run` (same arguments and Result).

        cwd: relative to the workspace. env: the caller environment the policy
        filters (default os.environ). stdin: bytes to feed, an fd or file to
        pass through, None for /dev/null. Raises SessionError when the worker
        dies or hangs meanwhile, SandboxSetupError when the working directory
        cannot be entered (nothing ran).
        """
        if isinstance(stdin, int) and stdin < 0:
            raise ValueError("stdin: pass bytes to feed the command, an fd or file to pass through, or None")
        feed = stdin if isinstance(stdin, bytes) else b""
        w, chan, run, out_r, err_r, in_w = self._start(argv, cwd, env, None if isinstance(stdin, bytes) else stdin,
                                                      timeout, pipe_stdin=isinstance(stdin, bytes))
        run.stdin_w = in_w  # closed exactly once, by whoever is done with it first (see _Run.close_stdin)
        reusable = False
        try:
            self._supervise(w, chan, run, out_r, err_r, feed, on_output)
            reusable = run.over
        except BaseException:
            if not w.dead.is_set() and run.exit is None:
                reusable = self._abort(chan, run)
            raise
        finally:
            run.writers_done()
            run.close_stdin()
            for fd in (out_r, err_r):
                os.close(fd)
            self._release(w, chan, reusable, run)
        return self._finish(w, run)

    def _supervise(self, w: _Worker, chan: _Chan, run: _Run, out_r: int, err_r: int,
                   feed: bytes, on_output: OutputCallback | None) -> None:
        """Pump the pipes and the channel until the exit report and EOF on both pipes."""
        poller = select.poll()
        names = {out_r: (run.out, "stdout"), err_r: (run.err, "stderr")}
        for fd in names:
            poller.register(fd, select.POLLIN)
        poller.register(chan.fd, select.POLLIN)
        pending = memoryview(feed)
        in_w = run.stdin_w
        if in_w is not None and pending:
            os.set_blocking(in_w, False)
            poller.register(in_w, select.POLLOUT)
        elif in_w is not None:
            run.close_stdin()
            in_w = None
        readers = 2
        watchdog = run.sent + run.timeout + WATCHDOG_GRACE if run.timeout is not None else None
        drain_until: float | None = None
        while readers or not run.over:
            if run.over:
                now = time.monotonic()
                drain_until = drain_until or now + DRAIN_SECONDS
                if now >= drain_until:
                    break  # a leftover still holds the pipes: abandon them
                wait: float | None = drain_until - now
            elif watchdog is not None:
                wait = watchdog - time.monotonic()
                if wait <= 0:
                    w.kill()
                    raise self._gone(w, f"running {run.argv[0]} (no exit report {WATCHDOG_GRACE:g}s past its "
                                     "timeout: the worker was killed as hung)", run)
            else:
                wait = None
            for fd, _ in poller.poll(None if wait is None else min(max(wait, 0), MAX_WAIT) * 1000 + 1):
                if fd == chan.fd:
                    try:
                        for msg in chan.recv():
                            run.handle(msg)
                    except _Gone:
                        raise self._gone(w, f"running {run.argv[0]}", run) from None
                    if run.pid is not None and chan not in w.inflight and not run.over:
                        w.inflight[chan] = run.pid
                    if run.over:
                        run.writers_done()
                        poller.unregister(chan.fd)
                        if in_w is not None:
                            poller.unregister(in_w)
                            run.close_stdin()
                            in_w = None
                elif fd == in_w:
                    try:
                        pending = pending[os.write(in_w, pending[:READ_CHUNK]):]
                    except BlockingIOError:
                        continue
                    except OSError:  # EPIPE: the command closed its stdin
                        pending = pending[:0]
                    if not pending:
                        poller.unregister(in_w)
                        run.close_stdin()
                        in_w = None
                else:
                    chunk = os.read(fd, READ_CHUNK)
                    capture, name = names[fd]
                    if not chunk:
                        poller.unregister(fd)
                        readers -= 1
                        continue
                    capture.add(chunk)
                    if on_output is not None:
                        on_output(name, chunk)

    def _abort(self, chan: _Chan, run: _Run, grace: float = CANCEL_GRACE) -> bool:
        """Kill a command we stop waiting for, and wait (bounded) for its exit report. True: channel reusable."""
        try:
            chan.send({"op": "kill", "id": run.rid})
            deadline = time.monotonic() + grace
            while not run.over and time.monotonic() < deadline:
                if select.select([chan.fd], [], [], deadline - time.monotonic())[0]:
                    for msg in chan.recv():
                        run.handle(msg)
        except (OSError, TimeoutError, _Gone):
            return False
        return run.over

    def _rp_for(self, cwd: str) -> ResolvedPolicy:
        rp = self._rp_cache.get(cwd)
        if rp is None:
            rp = self._rp_cache[cwd] = dataclasses.replace(self._rp, cwd=cwd)
        return rp

    def _finish(self, w: _Worker, run: _Run) -> Result:
        ex = run.exit
        if ex is not None and ex["status"] == 0 and not ex["timed_out"]:
            # The common case, built directly: what build_result adds (limits, timeout, denials read from
            # the output) only concerns a failed command, or one whose output mentions a refusal (a swallowed
            # "Read-only file system" still gets explained, as `sandbox.run` does).
            out, err = run.out, run.err
            stdout, stderr = out.value(), err.value()
            if not _mentions_refusal(stdout, stderr):
                return Result(argv=run.argv, exit_code=0, signal=None, stdout=stdout, stderr=stderr,
                              stdout_truncated=out.truncated, stderr_truncated=err.truncated,
                              stdout_total=out.total, stderr_total=err.total, duration=ex["duration"],
                              peak_rss_kb=ex["maxrss"], backend=self.backend, protections=dict(self.protections),
                              denials=self._proxy_denials(w), warnings=w.prep.all_warnings())
        prep = Prepared(argv=run.argv, policy=self.policy, launch=self._cmd_launch, backend=self.backend,
                        protections=self.protections, timeout=run.timeout, cgroup=None,
                        resolved=self._rp_for(run.cwd))
        if run.exit is None:
            err = run.error or {}
            if err.get("kind") == "spawn" and err.get("where") == "cwd":
                raise SandboxSetupError(f"cannot run in {run.cwd}: {err.get('message')}")
            if err.get("kind") == "spawn":
                result = exec_failed(prep, OSError(err.get("errno") or _errno.ENOENT, err.get("message") or "",
                                                   run.argv[0]))
            else:
                raise SessionError(f"the session worker refused the command: {err.get('message')}",
                                   argv=run.argv)
        else:
            ex = run.exit
            rusage = resource.struct_rusage((float(ex.get("utime", 0.0)), float(ex.get("stime", 0.0)),
                                             int(ex.get("maxrss", 0)), *([0] * 13)))
            result = build_result(prep, int(ex["status"]), rusage, run.out, run.err,
                                  timed_out=bool(ex.get("timed_out")), duration=float(ex.get("duration", 0.0)))
            # build_result reads "bwrap: ..." on stderr as bwrap's own setup failure; here bwrap is long done.
            result.denials = [d for d in result.denials if d.kind != "setup"]
            if not result.ok:
                result.denials.extend(self._limit_denials(w))
        result.denials[:0] = self._proxy_denials(w)
        result.warnings.extend(w.prep.all_warnings())
        return result

    def _proxy_denials(self, w: _Worker) -> list[Denial]:
        """Requests the allowlist proxy refused since the last command finished (it is the session's:
        under concurrency a refusal lands on whichever command finishes next)."""
        proxy = w.prep.proxy
        return proxy.take_denials() if proxy is not None else []

    def _limit_denials(self, w: _Worker) -> list[Denial]:
        """Limits hit since the last report (the cgroup is the session's: counted session-wide)."""
        cg = w.prep.cgroup
        if cg is None:
            return []
        with w.lock:
            ooms, refused = cg.oom_kills(), cg.forks_refused()
            new_ooms, new_refused = ooms - w.seen_limits[0], refused - w.seen_limits[1]
            w.seen_limits = (ooms, refused)
        limits = self.policy.limits
        out = []
        if new_ooms > 0:
            out.append(Denial("limit", "memory", f"memory_mb={limits.memory_mb}",
                              f"the kernel OOM killer ended {new_ooms} process(es) at the session's memory limit"))
        if new_refused > 0:
            out.append(Denial("limit", "processes", f"pids={limits.pids}",
                              f"{new_refused} fork(s) refused at the session's pids limit"))
        return out

    # -- file operations -------------------------------------------------------------------------------------

    def _abs(self, path: str | os.PathLike[str]) -> str:
        return os.path.normpath(os.path.join(self._workspace, os.fspath(path)))

    def _call(self, op: str, payload: dict[str, Any], timeout: float | None = OP_TIMEOUT) -> dict[str, Any]:
        w, chan = self._acquire()
        rid = next(self._ids)
        reusable = False
        try:
            try:
                chan.send({"op": op, "id": rid, **payload})
            except (OSError, TimeoutError) as exc:
                w.kill()
                raise SessionError(f"the session worker does not take requests ({exc})") from exc
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{op}: no answer within {timeout:g}s")
                if not select.select([chan.fd], [], [], left)[0]:
                    continue
                try:
                    msgs = chan.recv()
                except _Gone:
                    raise self._gone(w, f"serving {op}") from None
                for msg in msgs:
                    if isinstance(msg, dict) and msg.get("id") == rid:
                        reusable = True
                        if msg.get("ok"):
                            return msg
                        raise self._op_error(op, msg.get("error") or {})
                    if isinstance(msg, FrameError) or (isinstance(msg, dict) and msg.get("id") is None):
                        raise SessionError(f"{op}: protocol error: {getattr(msg, 'message', msg)}")
        finally:
            self._release(w, chan, reusable)

    def _op_error(self, op: str, err: dict[str, Any]) -> Exception:
        kind = err.get("kind")
        message = str(err.get("message") or "failed")
        if kind == "bad-request":
            return ValueError(f"{op}: {message}")
        if kind not in ("os", "content"):
            return SessionError(f"{op}: {message}")
        path = err.get("path") if isinstance(err.get("path"), str) else None
        code = err.get("errno") if isinstance(err.get("errno"), int) else None
        denial = None
        # EINVAL: a deny-read file covered by a device node (/dev/null) is "not a regular file".
        if path and (code in _DENIED or (code == _errno.EINVAL and op in _READ_OPS)):
            from sandbox.denials import classify_path

            try:
                denial = classify_path(path, self._rp, self._rp.workspace)
            except OSError:  # resolving the path on the host failed too (/proc/<pid>/root, ...)
                denial = None
            if denial is not None and op in _READ_OPS and denial.kind != "read":
                denial = None  # a refused read outside the writable roots is not a write denial
        return FileOpError(op, path, code, message, denial)

    def read_file(self, path: str | os.PathLike[str], max_bytes: int = 1 << 20) -> FileContent:
        """Read at most `max_bytes` of a regular file, as the sandbox lets a command read it."""
        full = self._abs(path)
        msg = self._call("read_file", {"path": full, "max_bytes": int(max_bytes)})
        return FileContent(full, base64.b64decode(msg["data"]), int(msg["size"]), bool(msg["truncated"]))

    def write_file(self, path: str | os.PathLike[str], data: bytes | str, *, parents: bool = False) -> int:
        """Replace (or create) a file atomically (temp file + rename). parents: create missing directories."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        msg = self._call("write_file", {"path": self._abs(path), "data": base64.b64encode(raw).decode(),
                                        "parents": parents})
        return int(msg["written"])

    def apply_edits(self, edits: list[dict[str, Any]], *, parents: bool = False) -> list[str]:
        """Apply every edit or none; returns the changed paths.

        Each edit is {"path", "content"} (write or create), {"path", "old",
        "new"[, "count"]} (replace text that occurs exactly `count` times,
        default 1) or {"path", "delete": True}. Temp files are written next to
        their targets and swapped in; on any failure the swaps done are undone
        and nothing changes.
        """
        wire = []
        for edit in edits:
            item: dict[str, Any] = {"path": self._abs(edit["path"])}
            for key in ("content", "old", "new"):
                if key in edit:
                    value = edit[key]
                    item[key] = base64.b64encode(value.encode() if isinstance(value, str) else bytes(value)).decode()
            for key in ("count", "delete"):
                if key in edit:
                    item[key] = edit[key]
            wire.append(item)
        return list(self._call("apply_edits", {"edits": wire, "parents": parents})["changed"])

    def list_dir(self, path: str | os.PathLike[str] = ".", max_entries: int = 10_000) -> list[DirEntry]:
        """The entries of a directory, sorted by name (at most max_entries)."""
        msg = self._call("list_dir", {"path": self._abs(path), "max_entries": int(max_entries)})
        return [DirEntry(e["name"], e["type"], int(e["size"])) for e in msg["entries"]]

    def search(self, pattern: str, path: str | os.PathLike[str] = ".", glob: str | None = None, *,
               max_results: int = 500, ignore_case: bool = False, max_seconds: int = 30) -> SearchResult:
        """Lines matching a regex in the files under `path` whose names match `glob` (`.git` skipped).

        One match per line; files that cannot be read (denied), binary or over
        8 MiB are skipped and counted. Stops at max_results or max_seconds
        (then `truncated`). A pathological regex can still run long in the
        worker (Python's re cannot be interrupted).
        """
        msg = self._call("search", {"pattern": pattern, "path": self._abs(path), "glob": glob,
                                    "max_results": int(max_results), "ignore_case": ignore_case,
                                    "max_seconds": int(max_seconds)})
        return SearchResult([SearchMatch(m["path"], int(m["line"]), m["text"]) for m in msg["matches"]],
                            bool(msg["truncated"]), int(msg["files_scanned"]), int(msg["files_skipped"]))

    def ping(self) -> dict[str, Any]:
        """The worker's own view (pid in the sandbox, commands running): a liveness check."""
        return self._call("ping", {}, timeout=10.0)

    # -- trio ------------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Session:
        import trio

        await trio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        import trio

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.close)

    async def _astart(self, argv: list[str], cwd: str | os.PathLike[str] | None, env: Mapping[str, str] | None,
                      stdin: bool, timeout: float | None) -> tuple[_Worker, _Chan, _Run, int, int, int | None]:
        import trio

        w = self._worker
        if w is None or not w.alive() or (not w.idle and len(w.chans) >= MAX_CHANNELS):
            # Launching a worker, or waiting for a free channel, blocks: not on the trio thread.
            return await trio.to_thread.run_sync(
                lambda: self._start(argv, cwd, env, None, timeout, pipe_stdin=stdin, notify=True))
        return self._start(argv, cwd, env, None, timeout, pipe_stdin=stdin, notify=True)

    async def open_process(
        self,
        argv: list[str],
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bool = False,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> SessionProcess:
        """Start `argv` in the session: stream its output, feed stdin (stdin=True), then `await wait()`.

        Raises OSError when it cannot be executed (aexec turns that into exit
        127/126), SandboxSetupError when cwd cannot be entered.
        """
        proc = await self._aopen(argv, cwd, env, stdin, timeout, on_output, stream=True)
        if proc.failed is not None:
            raise proc.failed
        return proc

    async def _aopen(self, argv: list[str], cwd: str | os.PathLike[str] | None, env: Mapping[str, str] | None,
                     stdin: bool, timeout: float | None, on_output: OutputCallback | None,
                     stream: bool) -> SessionProcess:
        import trio

        w, chan, run, out_r, err_r, in_w = await self._astart(argv, cwd, env, stdin, timeout)
        proc = SessionProcess(self, w, chan, run, out_r, err_r, in_w, on_output, stream)
        trio.lowlevel.spawn_system_task(proc._supervise, name=f"stockade-session-{run.rid}")
        try:
            await proc._first.wait()
        except BaseException:
            await proc._abort()
            raise
        return proc

    async def aexec(
        self,
        argv: list[str],
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> Result:
        """The async twin of `exec` (stdin: bytes to feed, or /dev/null)."""
        import trio

        proc = await self._aopen(argv, cwd, env, stdin is not None, timeout, on_output, stream=False)
        if proc.failed is not None:
            await proc.wait_quietly()
            if isinstance(proc.failed, OSError):
                return self._finish(proc._w, proc._run)  # 127 / 126
            raise proc.failed

        if stdin is None:
            return await proc.wait()  # no nursery: a SessionError reaches the caller as itself

        async def feed(data: bytes) -> None:
            try:
                await proc.send_stdin(data)
                await proc.close_stdin()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed, stdin)
                result = await proc.wait()
        except BaseExceptionGroup as group:  # strict nurseries wrap; callers catch SessionError itself
            from sandbox.aio import unwrap_group

            inner = unwrap_group(group)
            if inner is group or isinstance(inner, trio.Cancelled):
                raise
            raise inner from None
        return result

    async def aread_file(self, path: str | os.PathLike[str], max_bytes: int = 1 << 20) -> FileContent:
        return await self._athread(self.read_file, path, max_bytes)

    async def awrite_file(self, path: str | os.PathLike[str], data: bytes | str, *, parents: bool = False) -> int:
        return await self._athread(lambda: self.write_file(path, data, parents=parents))

    async def aapply_edits(self, edits: list[dict[str, Any]], *, parents: bool = False) -> list[str]:
        return await self._athread(lambda: self.apply_edits(edits, parents=parents))

    async def alist_dir(self, path: str | os.PathLike[str] = ".", max_entries: int = 10_000) -> list[DirEntry]:
        return await self._athread(self.list_dir, path, max_entries)

    async def asearch(self, pattern: str, path: str | os.PathLike[str] = ".", glob: str | None = None,
                      **kw: Any) -> SearchResult:
        return await self._athread(lambda: self.search(pattern, path, glob, **kw))

    async def _athread(self, fn: Callable[..., Any], *args: Any) -> Any:
        import trio

        return await trio.to_thread.run_sync(lambda: fn(*args))


class SessionProcess:
    """A command running in a session (from `Session.open_process`); always end with `wait()`."""

    def __init__(self, session: Session, w: _Worker, chan: _Chan, run: _Run, out_r: int, err_r: int,
                 in_w: int | None, on_output: OutputCallback | None, stream: bool) -> None:
        import trio

        self._session, self._w, self._chan, self._run = session, w, chan, run
        self._fds: list[int] = [out_r, err_r]
        self._stdin = trio.lowlevel.FdStream(in_w) if in_w is not None else None
        self._on_output, self._stream = on_output, stream
        self._send, self._recv = trio.open_memory_channel[tuple[str, bytes]](STREAM_BACKLOG)
        self._unstreamed = 0
        self._first = trio.Event()  # started, or refused
        self._done = trio.Event()
        self._result: Result | None = None
        self._error: BaseException | None = None
        self._aborting = False
        self.failed: BaseException | None = None  # the spawn was refused (exec error, bad cwd)

    @property
    def pid(self) -> int | None:
        """The command's pid as seen in the sandbox."""
        return self._run.pid

    def output(self) -> trio.MemoryReceiveChannel[tuple[str, bytes]]:
        """`async for stream, chunk in proc.output()`: ("stdout"|"stderr", bytes) until EOF."""
        return self._recv

    async def send_stdin(self, data: bytes) -> None:
        if self._stdin is None:
            raise RuntimeError("open the process with stdin=True to send it input")
        await self._stdin.send_all(data)

    async def close_stdin(self) -> None:
        if self._stdin is not None:
            await self._stdin.aclose()

    async def kill(self) -> None:
        """SIGKILL the command's whole tree now; wait() then reports how it ended."""
        import trio

        if not self._run.over:
            with contextlib.suppress(OSError, TimeoutError):
                self._chan.send({"op": "kill", "id": self._run.rid})
        await trio.lowlevel.checkpoint()

    async def wait(self) -> Result:
        """The Result once the command is over. Cancelling it kills the tree first."""
        try:
            await self._done.wait()
        except BaseException:
            await self._abort()
            raise
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    async def wait_quietly(self) -> None:
        await self._done.wait()

    async def _abort(self) -> None:
        import trio

        self._aborting = True
        await self.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_GRACE):
            await self._done.wait()

    async def _control(self) -> None:
        """Read the worker's reports until the exit (or refusal); a watchdog for a hung worker."""
        import trio

        run, chan, w = self._run, self._chan, self._w
        deadline = run.sent + run.timeout + WATCHDOG_GRACE if run.timeout is not None else float("inf")
        while not run.over:
            with trio.move_on_after(max(deadline - time.monotonic(), 0)) as scope:
                await trio.lowlevel.wait_readable(chan.fd)
            if scope.cancelled_caught:
                w.kill()
                raise await trio.to_thread.run_sync(
                    self._session._gone, w, f"running {run.argv[0]} (no exit report: killed as hung)", run)
            try:
                for msg in chan.recv():
                    run.handle(msg)
            except _Gone:
                raise await trio.to_thread.run_sync(self._session._gone, w, f"running {run.argv[0]}", run) from None
            if run.pid is not None and not run.over:
                w.inflight[chan] = run.pid
            if run.exit is None and (run.error or {}).get("kind") == "spawn":
                err = run.error or {}
                if err.get("where") == "cwd":
                    self.failed = SandboxSetupError(f"cannot run in {run.cwd}: {err.get('message')}")
                else:
                    self.failed = OSError(err.get("errno") or _errno.ENOENT, err.get("message") or "", run.argv[0])
            if run.pid is not None or run.over:
                self._first.set()

    async def _supervise(self) -> None:
        """The system task: pump, follow the reports, drain, build the Result. Raises only Cancelled."""
        import trio

        from sandbox.aio import _Countdown, pump_output, unwrap_group  # trio-only: not imported with the session

        run, w = self._run, self._w
        reusable = False
        try:
            eof = _Countdown(2)
            async with trio.open_nursery() as pipes:
                pipes.start_soon(pump_output, self, "stdout", self._fds[0], run.out, eof)
                pipes.start_soon(pump_output, self, "stderr", self._fds[1], run.err, eof)
                self._fds = []  # the readers own them now
                try:
                    await self._control()
                finally:
                    run.writers_done()
                if self._stdin is not None:
                    await self._stdin.aclose()
                with trio.move_on_after(0 if self._aborting else DRAIN_SECONDS):
                    await eof.wait()
                pipes.cancel_scope.cancel()  # abandon pipes a leftover still holds
            reusable = True
            if self.failed is not None:
                self._error = self.failed
            else:
                self._result = self._session._finish(w, run)
                if self._unstreamed:
                    self._result.warnings.append(
                        f"output() fell behind: {self._unstreamed} bytes were not streamed (kept in the Result)")
        except BaseException as exc:
            if isinstance(exc, trio.Cancelled):
                raise
            inner = unwrap_group(exc)  # a nursery's group of one: callers catch SessionError itself
            self._error = exc if isinstance(inner, trio.Cancelled) else inner
        finally:
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self._stdin is not None:
                self._stdin.close()
            self._session._release(w, self._chan, reusable and run.over, run)
            self._send.close()
            self._first.set()
            self._done.set()


__all__ = ["DirEntry", "FileContent", "FileOpError", "SearchMatch", "SearchResult", "Session", "SessionError",
           "SessionProcess"]

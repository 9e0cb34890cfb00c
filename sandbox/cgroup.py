"""Per-run cgroups: the limits root cannot get from rlimits, and a tree tracker that cannot be escaped.

Root is exempt from RLIMIT_NPROC (even with capabilities dropped), so for root
only the pids controller stops a fork bomb. A cgroup also lists every process
of the run, including ones that called setsid() or were orphaned, which the
process group and parent links both miss; so it is what tree-kill trusts.

The parent makes the cgroup before spawning; the child joins it between fork
and exec (`join_files`), so everything it starts is born inside. Under v1 the
run's cgroup goes beneath the caller's own cgroup in each hierarchy, so any
limit already placed on the caller (a systemd unit, a container) still holds.
Cgroups whose owner died without cleaning up (SIGKILL) are swept, processes
and all, by the next run.

Stdlib only: imported on the `stockade run` cold path.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

from policies.model import Limits

V1_MOUNT = "/sys/fs/cgroup"
PARENT_NAME = "stockade"
MIB = 1024 * 1024


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value)


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read()
    except OSError:
        return ""


def _counter(path: str, key: str) -> int:
    """A `key value` line from a flat-keyed cgroup file (pids.events, memory.events, ...)."""
    for line in _read(path).splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _own_v1_dir(controller: str) -> str:
    """This process's cgroup in a v1 hierarchy (falls back to the hierarchy root)."""
    mount = os.path.join(V1_MOUNT, controller)
    for line in _read("/proc/self/cgroup").splitlines():
        _, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if controller in ctrls.split(","):
            candidate = os.path.normpath(mount + path)
            if candidate.startswith(mount) and os.path.isdir(candidate):
                return candidate
    return mount


def _pidns() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def new_run_id() -> str:
    """<pid namespace>-<pid>-<random>: the owner is known, so a crashed owner's cgroup can be swept."""
    return f"{_pidns()}-{os.getpid()}-{os.urandom(4).hex()}"


def _sweep(base: str, version: int) -> None:
    """Kill and remove run cgroups whose owner died without cleaning up (SIGKILL, power cut of the caller).

    Only owners in our pid namespace are judged: a pid from another namespace means nothing here.
    """
    prefix = _pidns() + "-"
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        owner = name[len(prefix):].split("-", 1)[0] if name.startswith(prefix) else ""
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            stale = RunCgroup(version, (os.path.join(base, name),), None)
            stale.kill_all()
            stale.remove(parent=False)


def _make_run_dir(parent: str, run_id: str, version: int, controllers: list[str] | None = None) -> str:
    """parent/stockade/<run_id>; retried because another run may rmdir `stockade` between our calls.

    `controllers` (v2) are enabled for the children of `stockade` first.
    """
    base = os.path.join(parent, PARENT_NAME)
    path = os.path.join(base, run_id)
    for _ in range(5):
        os.makedirs(base, exist_ok=True)
        _sweep(base, version)
        if controllers:
            _enable(base, controllers)
        try:
            os.mkdir(path)
            return path
        except FileNotFoundError:
            continue
    raise OSError(f"could not create {path}")


@dataclass
class RunCgroup:
    """The cgroup(s) of one run. `dirs[0]` is the one that lists members and counts pids."""

    version: int  # 1 or 2
    dirs: tuple[str, ...]
    memory_dir: str | None  # where the memory limit lives, None when memory is not limited here
    _refused: int | None = field(default=None, repr=False)

    @property
    def join_files(self) -> tuple[str, ...]:
        """The files the child writes "0" to, to join.

        v1: `tasks`, which moves only the writing thread, and a thread moving
        itself skips the global threadgroup lock whose RCU sync costs 7-20 ms
        per run on `cgroup.procs` (measured). Between fork and exec the child
        has one thread, so that moves the whole process. v2 has no such shortcut.
        """
        name = "tasks" if self.version == 1 else "cgroup.procs"
        return tuple(os.path.join(d, name) for d in self.dirs)

    def members(self) -> list[int]:
        text = _read(os.path.join(self.dirs[0], "cgroup.procs"))
        return [int(p) for p in text.split()]

    def forks_refused(self) -> int:
        """Forks the pids limit refused (before tree-kill clamped pids.max to 0)."""
        if self._refused is not None:
            return self._refused
        return _counter(os.path.join(self.dirs[0], "pids.events"), "max")

    def oom_kills(self) -> int:
        if self.memory_dir is None:
            return 0
        if self.version == 1:
            return _counter(os.path.join(self.memory_dir, "memory.oom_control"), "oom_kill")
        return _counter(os.path.join(self.memory_dir, "memory.events"), "oom_kill")

    def kill_all(self, timeout: float = 2.0) -> bool:
        """SIGKILL every member until none is left; True when the cgroup is empty.

        pids.max is first clamped to 0 so nothing can fork while we kill (a fork
        bomb otherwise refills every slot we free); v2's cgroup.kill does it all.
        """
        pids = self.members()
        if not pids:
            return True
        if self._refused is None:
            self._refused = self.forks_refused()
        try:
            _write(os.path.join(self.dirs[0], "pids.max"), "0")
        except OSError:
            pass
        kill_file = os.path.join(self.dirs[0], "cgroup.kill")
        if self.version == 2 and os.path.exists(kill_file):
            try:
                _write(kill_file, "1")
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        pause = 0.0005  # members are usually already exiting: poll fast, then back off
        while pids:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
            pids = self.members()
        return True

    def remove(self, parent: bool = True) -> list[str]:
        """rmdir the run's cgroups (and the shared `stockade` parent when idle). Returns warnings."""
        warnings: list[str] = []
        for path in self.dirs:
            for attempt in range(100):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    # EBUSY while killed members are still exiting.
                    if attempt == 99:
                        warnings.append(f"could not remove cgroup {path}: {exc}")
                    time.sleep(min(0.0005 * 2**attempt, 0.01))
            if parent:
                try:
                    os.rmdir(os.path.dirname(path))
                except OSError:
                    pass  # another run still uses it
        return warnings


def create(spec: str | None, limits: Limits, run_id: str | None = None) -> tuple[RunCgroup | None, list[str]]:
    """Make the run's cgroup as HostFacts.cgroup allows; (None, [why]) when it cannot."""
    if not spec:
        return None, []
    run_id = run_id or new_run_id()
    try:
        if spec == "v1":
            return _create_v1(limits, run_id)
        if spec.startswith("v2:"):
            return _create_v2(spec[3:], limits, run_id), []
    except OSError as exc:
        return None, [f"per-run cgroup unavailable ({exc}); using rlimits only"]
    return None, [f"unknown cgroup kind {spec!r}; using rlimits only"]


def _create_v1(limits: Limits, run_id: str) -> tuple[RunCgroup, list[str]]:
    pids_dir = _make_run_dir(_own_v1_dir("pids"), run_id, 1)
    try:
        _write(os.path.join(pids_dir, "pids.max"), str(limits.pids) if limits.pids else "max")
    except OSError:
        os.rmdir(pids_dir)
        raise
    if not limits.memory_mb:
        return RunCgroup(1, (pids_dir,), None), []
    mem_dir = None
    try:
        mem_dir = _make_run_dir(_own_v1_dir("memory"), run_id, 1)
        limit = str(limits.memory_mb * MIB)
        _write(os.path.join(mem_dir, "memory.limit_in_bytes"), limit)
        memsw = os.path.join(mem_dir, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):
            _write(memsw, limit)  # no escaping the limit into swap
    except OSError as exc:
        if mem_dir:
            RunCgroup(1, (mem_dir,), None).remove()
        return RunCgroup(1, (pids_dir,), None), [f"memory cgroup unavailable ({exc}); using RLIMIT_AS"]
    return RunCgroup(1, (pids_dir, mem_dir), mem_dir), []


def _enable(parent: str, controllers: list[str]) -> None:
    control = os.path.join(parent, "cgroup.subtree_control")
    enabled = _read(control).split()
    for name in controllers:
        if name not in enabled:
            _write(control, f"+{name}")


def _create_v2(base: str, limits: Limits, run_id: str) -> RunCgroup:
    available = _read(os.path.join(base, "cgroup.controllers")).split()
    if "pids" not in available:
        raise OSError(f"{base} offers no pids controller")
    memory = limits.memory_mb if "memory" in available else None
    wanted = ["pids", "memory"] if memory else ["pids"]
    _enable(base, wanted)
    path = _make_run_dir(base, run_id, 2, wanted)
    cg = RunCgroup(2, (path,), path if memory else None)
    try:
        _write(os.path.join(path, "pids.max"), str(limits.pids) if limits.pids else "max")
        if memory:
            _write(os.path.join(path, "memory.max"), str(memory * MIB))
            if os.path.exists(os.path.join(path, "memory.swap.max")):
                _write(os.path.join(path, "memory.swap.max"), "0")
    except OSError:
        cg.remove()
        raise
    return cg

"""Resource limits applied inside the child, between fork and exec.

The parent decides everything (`child_limits`), so the pre-exec hook only
makes syscalls: join the run's cgroup, set rlimits, maybe become a subreaper.
Which mechanism carries which limit:

- pids: the cgroup pids controller when there is one (root is exempt from
  RLIMIT_NPROC, so for root it is the only thing that stops a fork bomb); else
  RLIMIT_NPROC for non-root callers.
- memory: the memory cgroup when there is one; else RLIMIT_AS. RLIMIT_AS
  counts address space, not memory, and breaks V8 and Go runtimes when low,
  so it is only the fallback.
- file size (RLIMIT_FSIZE), CPU seconds (RLIMIT_CPU), no core dumps (RLIMIT_CORE 0).

Without a cgroup the child also becomes a child subreaper, so descendants
orphaned by a dying middle process (`(setsid cmd &)`) reparent to the run's
main process instead of init, and tree-kill can still find them.

Platforms: on macOS there are no cgroups, no prctl (no subreaper, no
parent-death signal) and no /proc; the kernel ignores RLIMIT_AS, so memory
is not limited there and the run is told so; RLIMIT_NPROC counts the
user's processes, found with psutil. On Windows there is no `resource`
module at all: the Windows backend's job object carries the pids and
memory limits, and the engine never calls into this module's rlimit code.

Stdlib only: imported on the `stockade run` cold path.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from policies.host import HostFacts
from policies.model import Limits
from sandbox.cgroup import RunCgroup

try:
    import resource
except ImportError:  # Windows: limits come from the job object (sandbox.execute_windows), not rlimits
    resource = None  # type: ignore[assignment]

MIB = 1024 * 1024
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildLimits:
    rlimits: tuple[tuple[int, int, int], ...] = ()  # (resource, soft, hard)
    join: tuple[str, ...] = ()  # cgroup.procs files the child writes "0" to
    subreaper: bool = False
    warnings: tuple[str, ...] = ()  # limits asked for that nothing here can enforce


def _capped(res: int, soft: int, hard: int | None = None) -> tuple[int, int, int]:
    """Never ask for more than the current hard limit: an unprivileged setrlimit would fail."""
    hard = soft if hard is None else hard
    current = resource.getrlimit(res)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    return res, soft, hard


def user_tasks(uid: int) -> int:
    """Tasks (threads) the uid runs now: RLIMIT_NPROC counts all of them, not only this run's.

    One stat per process: /proc/<pid>/task has 2 + <threads> links. Without
    /proc (macOS, whose RLIMIT_NPROC counts processes, not threads) psutil
    counts the uid's processes.
    """
    if sys.platform != "linux":
        return _user_processes(uid)
    count = 0
    try:
        entries = os.scandir("/proc")
    except OSError:
        return 0
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                st = os.stat(f"/proc/{entry.name}/task")
            except OSError:
                continue
            if st.st_uid == uid:
                count += max(st.st_nlink - 2, 1)
    return count


def _user_processes(uid: int) -> int:
    """Processes `uid` runs now, where there is no /proc to count them (0 when psutil cannot say)."""
    try:
        import psutil
    except ImportError:
        return 0
    count = 0
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info.get("uids")
        if uids is not None and uids.real == uid:
            count += 1
    return count


def child_limits(limits: Limits, host: HostFacts, cgroup: RunCgroup | None) -> ChildLimits:
    if resource is None:  # Windows: nothing runs between fork and exec; the job object holds the limits
        return ChildLimits()
    rl = [_capped(resource.RLIMIT_CORE, 0)]
    if limits.file_size_mb:
        rl.append(_capped(resource.RLIMIT_FSIZE, limits.file_size_mb * MIB))
    if limits.cpu_seconds:
        # Soft first: SIGXCPU is catchable and reported as a limit; the hard limit then SIGKILLs.
        rl.append(_capped(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1))
    warnings: list[str] = []
    if limits.memory_mb and (cgroup is None or cgroup.memory_dir is None):
        if sys.platform == "darwin":
            warnings.append(f"memory limit {limits.memory_mb} MB not enforced: macOS has no cgroups and its "
                            "kernel ignores RLIMIT_AS")
        else:
            rl.append(_capped(resource.RLIMIT_AS, limits.memory_mb * MIB))
    if limits.pids and cgroup is None:
        if host.uid != 0:
            # Per-user limit: give the run `pids` tasks on top of what the user already runs.
            rl.append(_capped(resource.RLIMIT_NPROC, user_tasks(host.uid) + limits.pids))
        else:
            warnings.append(f"pids limit {limits.pids} not enforced: root is exempt from RLIMIT_NPROC "
                            "and no per-run cgroup is available")
    return ChildLimits(
        rlimits=tuple(rl),
        join=cgroup.join_files if cgroup else (),
        subreaper=cgroup is None,
        warnings=tuple(warnings),
    )


def make_preexec(plan: ChildLimits) -> Callable[[], None]:
    """The pre-exec hook for `plan`. Runs in the forked child: syscalls only, no imports, no locks."""
    rlimits, join = plan.rlimits, plan.join
    import ctypes

    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # None on macOS: no pdeathsig/subreaper
    parent = os.getpid()
    subreaper = plan.subreaper

    def apply_limits() -> None:
        # The command dies with its caller (a SIGKILLed agent must not leave it running);
        # re-check the parent in case it died before the prctl took effect.
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(125)
        for path in join:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        for res, soft, hard in rlimits:
            resource.setrlimit(res, (soft, hard))
        if subreaper and prctl is not None:
            prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    return apply_limits


def limits_protection(host: HostFacts) -> str:
    """How `limits` are enforced on this host, for `Result.protections` and `stockade doctor`."""
    if host.platform == "windows":
        return ("enforced: processes and memory by the Windows backend's job object; file size and CPU time "
                "are not limited on Windows")
    if host.platform == "macos":
        if host.is_root:
            return ("best-effort: rlimits only (file size, CPU); macOS has no cgroups, ignores RLIMIT_AS "
                    "(memory not limited) and exempts root from RLIMIT_NPROC (pids not limited)")
        return ("best-effort: rlimits only (processes per user, file size, CPU); macOS has no cgroups and "
                "ignores RLIMIT_AS, so memory is not limited")
    if host.cgroup:
        return f"enforced: pids and memory by a per-run cgroup ({host.cgroup}), file size and CPU by rlimits"
    if host.is_root:
        return ("best-effort: rlimits only; a root caller is exempt from RLIMIT_NPROC, "
                "so the pids limit is not enforced without a cgroup")
    return "enforced: rlimits (processes, address space, file size, CPU)"

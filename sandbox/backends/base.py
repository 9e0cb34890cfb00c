"""The contract every backend keeps.

A backend turns (resolved policy, host facts, argv) into a `Launch`: the argv
to exec, the environment, the fds to pass and an optional pre-exec hook that
confines the child. The execution engine (`sandbox.execute`, `sandbox.aio`)
spawns it, streams it, times it out and reaps it; backends never wait on
processes themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from policies.host import HostFacts
from policies.resolve import ResolvedPolicy

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import ClassVar


class SandboxSetupError(Exception):
    """The sandbox could not be set up; nothing was run. str() says why and how to fix it."""


# Names of the protections a backend reports; values are "enforced" or
# "missing: <why>" (or "n/a" when the policy does not ask for it).
PROTECTIONS = (
    "filesystem-write",  # writes only inside writable roots
    "protected-paths",  # .git / .stockade read-only inside writable roots
    "deny-read",  # secrets unreadable
    "private-tmp",  # /tmp private to the run, removed afterwards
    "network",  # network off / on as the policy says
    "host-unix-sockets",  # no connect() to the host's pathname Unix sockets
    "abstract-unix-sockets",  # no connect() to the host's abstract sockets
    "process-isolation",  # no signals, ptrace or /proc reads of outside processes
    "syscall-filter",  # dangerous syscalls refused (seccomp)
    "no-capabilities",  # CapEff/CapBnd/CapAmb empty, NoNewPrivs=1
    "tree-kill",  # every descendant dies on timeout
    "limits",  # pids / memory / file size
)


def show_programs(rp: ResolvedPolicy, argv: list[str], env: dict[str, str]) -> ResolvedPolicy:
    """`rp` plus the host /tmp entries holding the command's program (see policies.resolve.programs_in_tmp)."""
    if not rp.policy.confined or not argv:
        return rp
    from policies.resolve import programs_in_tmp

    extra = [p for p in programs_in_tmp(argv[0], env, rp.cwd) if p not in rp.show]
    return dataclasses.replace(rp, show=(*rp.show, *extra)) if extra else rp


def missing(reason: str) -> str:
    return f"missing: {reason}"


ENFORCED = "enforced"
NOT_APPLICABLE = "n/a"


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    pass_fds: tuple[int, ...] = ()
    preexec_fn: Callable[[], None] | None = None
    # Called once the process and its tree are gone (close fds, remove stubs and tmp dirs).
    cleanup: Callable[[], None] = lambda: None
    # True when killing the launched process kills every descendant (pid namespace).
    kills_tree: bool = False
    # True when the launcher reports a signal death of the command as exit 128+N
    # (bwrap does, like a shell); the engine maps 129..192 back to a signal.
    exit_folds_signals: bool = False
    protections: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Backend:
    name: ClassVar[str] = "?"

    def unavailable(self, host: HostFacts) -> str | None:
        """None when usable on this host, else why not and the fix."""
        raise NotImplementedError

    def protections(self, rp: ResolvedPolicy, host: HostFacts) -> dict[str, str]:
        """What this backend would enforce for this policy on this host."""
        raise NotImplementedError

    def launch(
        self,
        rp: ResolvedPolicy,
        host: HostFacts,
        argv: list[str],
        env: dict[str, str],
        *,
        limits_preexec: Callable[[], None] | None = None,
        proxy: object | None = None,
    ) -> Launch:
        """Prepare the spawn. `limits_preexec` (rlimits, cgroup attach) must run in the child.

        `proxy`: the run's filtering proxy (`sandbox.proxy.FilteringProxy`) for a confined network
        allowlist, started by the engine; None otherwise.
        """
        raise NotImplementedError

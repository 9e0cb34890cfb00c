"""Shared helpers for the execution-engine tests (test_execute.py, test_aio.py).

Everything about the run is checked from the host side: process tables
(psutil), cgroup directories, files the command wrote.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from policies.host import HostFacts
from policies.model import Limits, Mode, SandboxPolicy
from sandbox.backends.base import Launch
from sandbox.backends.none import NoneBackend
from sandbox.detect import host_facts


def backend_unavailable(name: str) -> str | None:
    """Why `name` cannot run here (module not written yet, or host lacks it), else None."""
    from sandbox.backends import get_backend

    try:
        return get_backend(name).unavailable(host_facts())
    except ImportError as exc:
        return f"backend {name} not importable: {exc}"


def confining_backend_params() -> list[object]:
    """'bwrap' and 'landlock', each skipped (with the reason) when this host cannot run it."""
    params: list[object] = []
    for name in ("bwrap", "landlock"):
        reason = backend_unavailable(name)
        params.append(pytest.param(name, id=name, marks=[
            getattr(pytest.mark, name), pytest.mark.skipif(reason is not None, reason=str(reason))]))
    return params


def backend_params() -> list[object]:
    """'none' always; 'bwrap' and 'landlock' when their modules exist and the host supports them."""
    return [pytest.param("none", id="none"), *confining_backend_params()]


def policy_for(backend: str, workspace: object, **limits: object) -> SandboxPolicy:
    """full-access for 'none' (engine semantics only), workspace-write for the confining backends."""
    mode = Mode.FULL_ACCESS if backend == "none" else Mode.WORKSPACE_WRITE
    return SandboxPolicy(mode=mode, workspace=str(workspace), limits=Limits(**limits))  # type: ignore[arg-type]


def host_without_cgroup() -> HostFacts:
    """This host as if it had no per-run cgroup (the non-root laptop case)."""
    return dataclasses.replace(host_facts(), cgroup=None)


def cgroup_host_params() -> list[object]:
    """Run tree-kill tests both with the per-run cgroup (when the host has one) and without."""
    has = host_facts().cgroup is not None
    return [
        pytest.param(None, id="cgroup", marks=pytest.mark.skipif(not has, reason="no per-run cgroup here")),
        pytest.param(host_without_cgroup(), id="no-cgroup"),
    ]


def marker() -> str:
    """A sleep argument no other process on the host uses: `sleep <marker>` is findable from the host."""
    return f"600.{uuid.uuid4().int % 10**9:09d}"


def live(match: Callable[[psutil.Process], bool]) -> list[psutil.Process]:
    """Non-zombie host processes for which `match` holds."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and match(proc):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def with_marker(mark: str) -> list[psutil.Process]:
    return live(lambda p: mark in " ".join(p.info["cmdline"] or ()))


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone(check: Callable[[], object], timeout: float = 3.0) -> bool:
    """True once check() is falsy. SIGKILL is delivered at once but a process needs a moment to die."""
    deadline = time.monotonic() + timeout
    while check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def read_pid(path: object, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = open(str(path), encoding="ascii").read().strip()
            if text:
                return int(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no pid written to {path}")


class CgroupSpy:
    """Records every per-run cgroup the engine makes, to check from the host that each was removed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import sandbox.execute

        self.made: list[object] = []
        real = sandbox.execute.create

        def spy(*args: object, **kwargs: object) -> object:
            cg, warnings = real(*args, **kwargs)  # type: ignore[arg-type]
            if cg is not None:
                self.made.append(cg)
            return cg, warnings

        monkeypatch.setattr(sandbox.execute, "create", spy)

    def dirs(self) -> list[str]:
        return [d for cg in self.made for d in cg.dirs]  # type: ignore[attr-defined]

    def leftovers(self) -> list[str]:
        return [d for d in self.dirs() if os.path.exists(d)]



def cleanup_spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Makes the 'none' backend's Launch.cleanup record each call in the returned list."""
    calls: list[bool] = []
    edit_none_launch(monkeypatch, lambda launch: setattr(launch, "cleanup", lambda: calls.append(True)))
    return calls


def edit_none_launch(monkeypatch: pytest.MonkeyPatch, edit: Callable[[Launch], None]) -> None:
    """Let a test change every Launch the 'none' backend hands to the engine."""
    real = NoneBackend.launch

    def launch(self: NoneBackend, *args: Any, **kwargs: Any) -> Launch:
        out = real(self, *args, **kwargs)
        edit(out)
        return out

    monkeypatch.setattr(NoneBackend, "launch", launch)

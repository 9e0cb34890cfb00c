"""Translate a resolved policy into a bubblewrap argv.

Pure: no process, no filesystem access; everything comes from the arguments,
so `stockade explain` prints exactly what a launch would run and the argv can
be golden-tested on any OS.

Mount order is the whole game in bwrap: a later mount on a path, or on an
ancestor of it, hides an earlier one, and a mountpoint that bwrap has to
create inside a read-only mount aborts the sandbox. So every path mount is
collected first and emitted shallowest first; at the same path the stronger
rule comes last (host view < private tmp < read-only view < writable <
protected < deny-read < hidden socket). Rules that a stronger ancestor
already covers are dropped instead of emitted: a protected path inside a
deny-read dir would re-expose it, a socket inside the private /tmp is not
there at all.

Decisions worth knowing:
- Deny-read files are covered with `--ro-bind /dev/null F`. bwrap's read-only
  binds are `nodev`, so opening F fails with EACCES (the read fails, it does
  not return the file's bytes or even an empty file); chmod gives EROFS and
  unlink/rename give EBUSY.
- Deny-read dirs get an empty `--perms 0000` tmpfs remounted read-only, so even
  a root caller (owner of the tmpfs, but without capabilities) cannot list it
  or chmod it back.
- Missing protected paths get an empty read-only dir on top (a bound
  `empty_dir` or, without one, an empty 0555 tmpfs), so `mkdir .stockade` and
  `.stockade/config.toml` both fail. bwrap needs a mountpoint for that on the
  host; the backend owns creating and removing it.
- No `--clearenv`/`--setenv`: the engine hands the policy's environment to
  Popen, and bwrap passes its own environment through unchanged. Values on the
  command line would be readable by every host user in /proc/<pid>/cmdline;
  /proc/<pid>/environ is owner-only.
- `/dev` is bwrap's minimal one (a tmpfs with a few device nodes), remounted
  read-only at the end (no junk files, no unbounded tmpfs), with `/dev/shm`
  as its own writable tmpfs for POSIX semaphores and shared memory.
- Root callers: sysctl and other procfs knobs are checked against uid 0,
  not capabilities, so /proc/sys and friends are bound read-only; the host's
  device nodes can be swapped for copies the caller does not own
  (`dev_nodes_dir`), or `chmod 000 /dev/null` inside would break the host.
- Network off: the host is shown through `view` (`policies.compile.hostview`):
  read-only overlays, carved around the host's mounts, on bwrap's own tmpfs
  root, so no host socket below them is connectable (connect() finds a
  socket by inode, and overlayfs gives out its own). `--ro-overlay` needs
  two lower layers: `overlay_empty` is an empty host dir (without one,
  `--tmp-overlay` + `--remount-ro` does the same at a higher cost). What
  the view shows through plain binds (writable roots, /sys, the workspace
  re-shown under a private /tmp) still gets /dev/null over each host socket
  found at launch (`hide_sockets`). Without a view (network on, or no
  overlayfs), `--ro-bind / /` as before.
- Network allowlist: as off (a private network namespace), plus the
  directory of the host's filtering proxy socket bound read-only at its own
  path (`proxy_dir`), last, so nothing hides it: the single host socket the
  sandbox can reach.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from policies.compile.hostview import HostView, Overlay, PlainBind, Skeleton, Symlink, ViewItem
from policies.host import HostFacts
from policies.model import NetworkMode, TmpMode
from policies.resolve import ResolvedPolicy

# Device nodes bwrap's `--dev` binds from the host. A root caller owns the
# host inodes and could chmod them from inside; `dev_nodes_dir` replaces them.
DEV_NODES: tuple[str, ...] = ("null", "zero", "full", "random", "urandom", "tty")

# Global kernel knobs in procfs are checked against uid 0, not capabilities,
# so a root caller could write them (core_pattern = root code execution on
# the next crash). bwrap covers /proc/irq and /proc/bus only; these get a
# read-only bind of the host's copy (`-try`: some do not exist everywhere).
PROC_READ_ONLY: tuple[str, ...] = ("/proc/sys", "/proc/sysrq-trigger", "/proc/fs", "/proc/mtrr",
                                   "/proc/acpi", "/proc/driver", "/proc/scsi")

PRIVATE_TMP_DIRS: tuple[str, ...] = ("/tmp", "/var/tmp")
SHM_DIR = "/dev/shm"

# Priorities for mounts on the same path: the later one wins.
_VIEW, _TMP, _READ, _WRITE, _PROTECT, _DENY, _SOCKET, _PROXY = range(8)


@dataclass(frozen=True)
class _Mount:
    path: str
    rank: int
    args: tuple[str, ...]


def _under(path: str, root: str) -> bool:
    """True when path is root or inside it (string-wise; both are canonical)."""
    return path == root or root == "/" or path.startswith(root + "/")


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def _check(path: str, what: str) -> str:
    if not os.path.isabs(path) or os.path.normpath(path) != path or path.startswith("//"):
        raise ValueError(f"bwrap needs a canonical absolute path for {what}, got {path!r}")
    return path


def _owner(path: str, layers: dict[str, list[str]]) -> str | None:
    """Which layer ("fresh", "read", "write") is topmost at path; None: the read-only host root.

    The deepest ancestor wins; at the same path the later layer in `layers`
    (the order they are mounted in) wins the tie.
    """
    best: tuple[int, int] | None = None
    name: str | None = None
    for rank, (layer, roots) in enumerate(layers.items()):
        for root in roots:
            if _under(path, root) and (best is None or (_depth(root), rank) > best):
                best, name = (_depth(root), rank), layer
    return name


def bwrap_argv(
    rp: ResolvedPolicy,
    host: HostFacts,
    command: list[str],
    *,
    seccomp_fd: int | None,
    hide_sockets: tuple[str, ...] = (),
    empty_dir: str | None = None,
    tmp_size_mb: int | None = None,
    dev_nodes_dir: str | None = None,
    view: HostView | None = None,
    overlay_empty: str | None = None,
    proxy_dir: str | None = None,
) -> list[str]:
    """The full bwrap argv for running `command` under `rp`.

    `hide_sockets`: host pathname Unix sockets (canonical paths) to cover
    when the network is off; those the view hides are left out. `view`: the
    host as the sandbox sees it when the network is off (None: `--ro-bind /
    /`); the backend builds it (carved: bwrap always has a user namespace)
    and checks that overlayfs works. `overlay_empty`: an empty host dir,
    the second lower layer of each overlay, outside every overlaid dir of
    its filesystem. `empty_dir`: an empty read-only
    host dir bound on missing protected paths (else an empty tmpfs is used).
    `tmp_size_mb`: size of each private tmpfs (/tmp, /var/tmp, /dev/shm).
    `dev_nodes_dir`: a host dir with private copies of DEV_NODES not owned
    by the caller, bound over bwrap's; the backend makes it for root callers.
    `proxy_dir`: network allowlist only, the host dir holding the filtering
    proxy's Unix socket (`sandbox.proxy`), bound read-only at the same path
    last: the one host socket the sandbox can reach. `command` already runs
    behind the relay then (the backend prefixes it).
    """
    if not host.bwrap_path:
        raise ValueError("host has no bwrap_path")
    if not command:
        raise ValueError("empty command")
    policy = rp.policy
    argv: list[str] = [host.bwrap_path, "--new-session", "--die-with-parent"]
    cwd = _check(rp.cwd, "cwd")

    if not policy.confined:
        # full-access through bwrap: only the pid namespace, for tree-kill.
        argv += ["--unshare-pid", "--dev-bind", "/", "/", "--proc", "/proc", "--chdir", cwd]
        if seccomp_fd is not None:
            argv += ["--seccomp", str(seccomp_fd)]
        return [*argv, "--", *command]

    network_on = policy.network.mode is NetworkMode.ON
    argv += ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not network_on:
        # "allowlist" too: its only way out is the proxy's Unix socket (`proxy_dir`).
        argv.append("--unshare-net")
    argv += ["--disable-userns", "--cap-drop", "ALL"]

    writable = [_check(w, "writable root") for w in rp.writable] if policy.writes_workspace else []
    writable = list(dict.fromkeys(writable))
    root_writable = "/" in writable
    if root_writable:
        writable.remove("/")
        argv += ["--bind", "/", "/"]
    root_item = None if network_on or root_writable or view is None else next(
        (item for item in view.items if item.path == "/"), None)
    if root_item is None:
        view = None
        if not root_writable:
            argv += ["--ro-bind", "/", "/"]
    elif not isinstance(root_item, Skeleton):  # a skeleton root is bwrap's own tmpfs
        argv += _view_args(root_item, overlay_empty)
    argv += ["--dev", "/dev"]
    if dev_nodes_dir is not None:
        base = _check(dev_nodes_dir, "dev_nodes_dir")
        for node in DEV_NODES:
            argv += ["--dev-bind", f"{base}/{node}", f"/dev/{node}"]
    argv += ["--proc", "/proc"]
    for p in PROC_READ_ONLY:
        argv += ["--ro-bind-try", p, p]

    size = ("--size", str(tmp_size_mb * 1024 * 1024)) if tmp_size_mb else ()
    private_tmp = policy.tmp is TmpMode.PRIVATE
    fresh_dirs = [SHM_DIR, *(PRIVATE_TMP_DIRS if private_tmp else ())]
    if not private_tmp and policy.writes_workspace and not root_writable:
        # tmp = "host": share the host's /tmp and /var/tmp like any writable root.
        writable += [d for d in PRIVATE_TMP_DIRS if d not in writable]
    fresh = ["/dev", *fresh_dirs]  # fresh, empty filesystems: nothing of the host below them

    deny_dirs = list(dict.fromkeys(_check(d.path, "deny-read path") for d in rp.deny_read if d.kind == "dir"))
    deny_files = list(dict.fromkeys(_check(d.path, "deny-read path") for d in rp.deny_read if d.kind != "dir"))

    def denied(path: str, *, strict: bool = False) -> bool:
        return any(_under(path, d) and not (strict and path == d) for d in deny_dirs)

    mounts = [_Mount(d, _TMP, (*size, "--tmpfs", d)) for d in fresh_dirs if not denied(d, strict=True)]
    for w in writable:
        if not denied(w):
            mounts.append(_Mount(w, _WRITE, ("--bind", w, w)))
    shown = _view_items(view, covered=["/proc", *fresh, *writable, *deny_dirs])
    for item in shown:
        mounts.append(_Mount(item.path, _VIEW, _view_args(item, overlay_empty)))
    shown += [root_item] if root_item is not None else []
    # Made read-only last: bwrap's tmpfs mounts, and overlays with a tmpfs upper layer.
    remount = [item.path for item in shown if (isinstance(item, Skeleton) and (item.fresh or item.path == "/"))
               or (isinstance(item, Overlay) and overlay_empty is None)]
    layers: dict[str, list[str]] = {
        "view": [i.path for i in shown if not isinstance(i, PlainBind)],
        "plain": [i.path for i in shown if isinstance(i, PlainBind)],
        "fresh": fresh,
        "read": [],
        "write": [m.path for m in mounts if m.rank == _WRITE] + (["/"] if root_writable else []),
    }

    # The workspace and cwd stay visible (read-only) even when a private tmp
    # dir would hide them: a read-only run in /tmp/x must still read /tmp/x.
    for r in sorted({_check(rp.workspace, "workspace"), cwd, *(_check(p, "shown path") for p in rp.show)},
                    key=_depth):
        if not denied(r) and _owner(r, layers) == "fresh":
            layers["read"].append(r)
            mounts.append(_Mount(r, _READ, ("--ro-bind", r, r)))

    # Host content shows through everywhere except under a fresh mount, so
    # only there may a deny-read entry or a socket be left out.
    for d in deny_dirs:
        if denied(d, strict=True) or _owner(d, layers) == "fresh":
            continue
        mounts.append(_Mount(d, _DENY, ("--perms", "0000", "--tmpfs", d, "--remount-ro", d)))
    for f in deny_files:
        if denied(f) or _owner(f, layers) == "fresh":
            continue
        mounts.append(_Mount(f, _DENY, ("--ro-bind", "/dev/null", f)))

    seen_protected: set[str] = set()
    for p in rp.protected:
        path = _check(p.path, "protected path")
        if path in seen_protected or path in deny_files or denied(path):
            continue
        owner = _owner(path, layers)
        if owner in (None, "read", "view", "plain"):
            continue  # read-only already, through --ro-bind / /, the view or a readable root
        # Under a writable bind: make it read-only. Under a private tmp dir (a
        # gitdir target in /tmp, say): make it visible, read-only, so git works.
        seen_protected.add(path)
        if p.kind != "missing":
            args: tuple[str, ...] = ("--ro-bind", path, path)
        elif empty_dir is not None:
            args = ("--ro-bind", empty_dir, path)  # a source: bwrap resolves it on the host
        else:
            args = ("--perms", "0555", "--tmpfs", path, "--remount-ro", path)
        mounts.append(_Mount(path, _PROTECT, args))

    # Directories between a writable root and a protected path: mounted onto
    # themselves (still writable), so renaming one away, protected path and all,
    # fails with EBUSY instead of leaving an unprotected copy to be rebuilt.
    for anc in rp.pinned:
        path = _check(anc, "pinned directory")
        if _owner(path, layers) == "write" and not denied(path) and path not in seen_protected:
            mounts.append(_Mount(path, _WRITE, ("--bind", path, path)))

    if not network_on:
        proxy = _check(proxy_dir, "proxy_dir") if proxy_dir is not None else None
        for s in dict.fromkeys(hide_sockets):
            sock = _check(s, "socket")
            if sock in deny_files or denied(sock) or _owner(sock, layers) in ("fresh", "view"):
                continue  # not there, or shown through an overlay: not connectable anyway
            if proxy is not None and _under(sock, proxy):
                continue  # the allowlist proxy: the one host socket meant to be reached
            mounts.append(_Mount(sock, _SOCKET, ("--ro-bind", "/dev/null", sock)))
        if proxy is not None:
            mounts.append(_Mount(proxy, _PROXY, ("--ro-bind", proxy, proxy)))

    for m in sorted(mounts, key=lambda m: (_depth(m.path), m.rank, m.path)):
        argv += m.args

    # Last: bwrap made mountpoints in these while setting up the mounts above.
    for d in ("/dev", *sorted(remount, key=_depth)):
        argv += ["--remount-ro", d]
    argv += ["--chdir", cwd]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, "--", *command]


def _view_items(view: HostView | None, covered: list[str]) -> list[ViewItem]:
    """The view's items below "/", less those at or below the sandbox's own mounts (bwrap makes their
    mountpoints itself)."""
    if view is None:
        return []
    return [item for item in view.items if item.path != "/" and not any(_under(item.path, c) for c in covered)]


def _view_args(item: ViewItem, empty: str | None) -> tuple[str, ...]:
    if isinstance(item, Overlay):
        if empty is None:
            return ("--overlay-src", item.path, "--tmp-overlay", item.path)  # made read-only at the end
        # The last --overlay-src is the top layer.
        return ("--overlay-src", empty, "--overlay-src", item.path, "--ro-overlay", item.path)
    if isinstance(item, Skeleton):
        return ("--perms", f"{item.mode:04o}", "--tmpfs" if item.fresh else "--dir", item.path)
    if isinstance(item, Symlink):
        return ("--symlink", item.target, item.path)
    return ("--ro-bind", item.path, item.path)


def view_probe_argv(bwrap_path: str, view: HostView, overlay_empty: str | None) -> list[str]:
    """A bwrap argv that only builds `view` (in a user namespace, like a run) and runs `true`.

    The backend's check that overlayfs takes every mount of this host;
    bwrap names the mountpoint it failed on.
    """
    argv = [bwrap_path, "--die-with-parent", "--unshare-user", "--unshare-pid", "--unshare-net"]
    remount = []
    for item in view.items:
        if not (item.path == "/" and isinstance(item, Skeleton)):
            argv += _view_args(item, overlay_empty)
        if (isinstance(item, Skeleton) and (item.fresh or item.path == "/")) or (
                isinstance(item, Overlay) and overlay_empty is None):
            remount.append(item.path)
    for d in remount:
        argv += ["--remount-ro", d]
    return [*argv, "--", "true"]

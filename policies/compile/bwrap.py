"""Translate a resolved policy into a bubblewrap argv.

Pure: no process, no filesystem access; everything comes from the arguments,
so `stockade explain` prints exactly what a launch would run and the argv can
be golden-tested on any OS.

Mount order is the whole game in bwrap: a later mount on a path, or on an
ancestor of it, hides an earlier one, and a mountpoint that bwrap has to
create inside a read-only mount aborts the sandbox. So every path mount is
collected first and emitted shallowest first; at the same path the stronger
rule comes last (private tmp < socket overlay < read-only view < writable <
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
- Network off: a read-only overlay over `socket_dirs` (/run) makes every
  socket below unconnectable (overlayfs gives out its own inodes and
  connect() finds sockets by inode); other host sockets get /dev/null.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
_TMP, _OVERLAY, _READ, _WRITE, _PROTECT, _DENY, _SOCKET = range(7)


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
    socket_dirs: tuple[str, ...] = (),
) -> list[str]:
    """The full bwrap argv for running `command` under `rp`.

    `hide_sockets`: host pathname Unix sockets (canonical paths) to cover
    when the network is off. `socket_dirs`: host dirs (canonical, e.g.
    /run) shown through a read-only overlay when the network is off: no
    socket below one is connectable through the overlay, whatever its name
    or age, so `hide_sockets` below them are left out (the backend checks
    overlayfs works in a user namespace). `empty_dir`: an empty read-only
    host dir bound on missing protected paths (else an empty tmpfs is used).
    `tmp_size_mb`: size of each private tmpfs (/tmp, /var/tmp, /dev/shm).
    `dev_nodes_dir`: a host dir with private copies of DEV_NODES not owned
    by the caller, bound over bwrap's; the backend makes it for root callers.
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
        # "allowlist" has no proxy yet, so it is treated as off.
        argv.append("--unshare-net")
    argv += ["--disable-userns", "--cap-drop", "ALL"]

    writable = [_check(w, "writable root") for w in rp.writable] if policy.writes_workspace else []
    writable = list(dict.fromkeys(writable))
    root_writable = "/" in writable
    if root_writable:
        writable.remove("/")
        argv += ["--bind", "/", "/"]
    else:
        argv += ["--ro-bind", "/", "/"]
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
    # Overlayfs hands out its own inodes, and connect() finds a socket by
    # inode: sockets in the lower layer cannot be reached through it.
    overlays = [] if network_on else [
        o for o in dict.fromkeys(_check(d, "socket dir") for d in socket_dirs)
        if not denied(o) and o not in writable and o != "/" and not any(_under(o, f) for f in fresh)]
    mounts += [_Mount(o, _OVERLAY, ("--overlay-src", o, "--tmp-overlay", o)) for o in overlays]
    layers: dict[str, list[str]] = {
        "fresh": fresh,
        "overlay": overlays,
        "read": [],
        "write": [m.path for m in mounts if m.rank == _WRITE] + (["/"] if root_writable else []),
    }

    # The workspace and cwd stay visible (read-only) even when a private tmp
    # dir would hide them: a read-only run in /tmp/x must still read /tmp/x.
    for r in sorted({_check(rp.workspace, "workspace"), cwd}, key=_depth):
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
        if owner in (None, "read", "overlay"):
            continue  # read-only already, through --ro-bind / / or a readable root
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

    if not network_on:
        for s in dict.fromkeys(hide_sockets):
            sock = _check(s, "socket")
            if sock in deny_files or denied(sock) or _owner(sock, layers) in ("fresh", "overlay"):
                continue
            mounts.append(_Mount(sock, _SOCKET, ("--ro-bind", "/dev/null", sock)))

    for m in sorted(mounts, key=lambda m: (_depth(m.path), m.rank, m.path)):
        argv += m.args

    # Last: bwrap made mountpoints in these while setting up the mounts above.
    for d in ("/dev", *overlays):
        if d not in writable:
            argv += ["--remount-ro", d]
    argv += ["--chdir", cwd]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, "--", *command]

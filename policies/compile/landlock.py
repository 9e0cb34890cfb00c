"""Landlock rules for a resolved policy, as plain data (no syscalls).

The backend turns the plan into one ruleset (fs, net and scopes together: a
second stacked ruleset would implicitly deny REFER) in the parent and
enforces it in the child.

Rules only ever add access and cover a whole hierarchy, and they match
resolved inodes, never names. Two consequences shape the plan:

- Deny-read without a mount namespace: a grant on "/" would cover `~/.ssh`,
  so instead each child of "/" is granted except the ancestors of denied
  paths, and those are recursed into ("carving"). An ancestor itself gets
  only READ_DIR (so `ls ~` works), which the denied path inherits: its names
  can be listed, its contents not read. Carved rules are added without
  following a final symlink, so a sibling that is a symlink to a denied path
  grants nothing (the real location is carved on its own).
  With a mount namespace the mount plan hides denied paths instead and "/"
  is granted read in one rule.
- Protected paths (`.git`) inside a writable root cannot be kept read-only by
  Landlock at all: that needs the mount namespace (see `policies.compile.mounts`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from policies.host import HostFacts
from policies.model import NetworkMode, TmpMode
from policies.resolve import ResolvedPolicy

# linux/landlock.h access rights (values are kernel ABI).
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
FS_RESOLVE_UNIX = 1 << 16

NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

FS_NAMES = ("EXECUTE", "WRITE_FILE", "READ_FILE", "READ_DIR", "REMOVE_DIR", "REMOVE_FILE", "MAKE_CHAR",
            "MAKE_DIR", "MAKE_REG", "MAKE_SOCK", "MAKE_FIFO", "MAKE_BLOCK", "MAKE_SYM", "REFER", "TRUNCATE",
            "IOCTL_DEV", "RESOLVE_UNIX")

_FS_V1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_FS_LATER = ((FS_REFER, 2), (FS_TRUNCATE, 3), (FS_IOCTL_DEV, 5), (FS_RESOLVE_UNIX, 9))

READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
DEVICE = FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV
# Device nodes every program may open read-write; ttys only matter when the caller has one.
DEVICE_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx")
DEVICE_DIRS = ("/dev/pts",)
# Made private per run: fresh tmpfs mounts with a mount namespace, else a per-run TMPDIR.
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def fs_rights_for_abi(abi: int) -> int:
    """Every filesystem right the given Landlock ABI knows."""
    if abi < 1:
        return 0
    rights = _FS_V1
    for bit, since in _FS_LATER:
        if abi >= since:
            rights |= bit
    return rights


def access_names(access: int) -> str:
    return "|".join(name for i, name in enumerate(FS_NAMES) if access & (1 << i)) or "0"


class PathRule(NamedTuple):
    path: str
    access: int
    follow: bool = True  # False: do not follow a final symlink (carved siblings)


class PortRule(NamedTuple):
    port: int
    access: int


@dataclass(frozen=True)
class LandlockPlan:
    abi: int
    handled_fs: int
    rules: tuple[PathRule, ...]
    # Added in the child once the mount namespace exists: fresh tmpfs mounts have no inode before that.
    late_rules: tuple[PathRule, ...] = ()
    handled_net: int = 0
    port_rules: tuple[PortRule, ...] = ()
    scoped: int = 0
    tmpdir: str | None = None  # TMPDIR the command should get (None: leave it as the engine set it)
    notes: tuple[str, ...] = ()  # what is best-effort on this host, and why

    def describe(self) -> list[str]:
        lines = [f"Landlock ABI {self.abi}; handled fs: {access_names(self.handled_fs)}"]
        lines.extend(f"{r.path}: {access_names(r.access)}{'' if r.follow else ' (no follow)'}"
                     for r in self.rules)
        lines.extend(f"{r.path}: {access_names(r.access)} (added in the child, after mounting)"
                     for r in self.late_rules)
        if self.handled_net:
            lines.append(f"TCP bind/connect handled ({self.handled_net:#x}); allowed ports: "
                         f"{', '.join(str(p.port) for p in self.port_rules) or 'none'}")
        if self.scoped:
            scopes = [n for bit, n in ((SCOPE_SIGNAL, "signal"), (SCOPE_ABSTRACT_UNIX_SOCKET, "abstract-unix"))
                      if self.scoped & bit]
            lines.append("scoped: " + ", ".join(scopes))
        lines.extend(f"note: {n}" for n in self.notes)
        return lines


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def carve(root: str, rights: int, denied: Iterable[str], listdir: Callable[[str], list[str]]) -> list[PathRule]:
    """Rules granting `rights` on `root` except on `denied` paths (and below them).

    Ancestors of a denied path get `rights` minus READ_FILE and EXECUTE (they
    keep READ_DIR and any write rights, which the denied path inherits);
    every other entry along the way gets `rights` in full.
    """
    inside = {d for d in denied if _under(d, root)}
    if not inside:
        return [PathRule(root, rights)]
    if root in inside:
        return []
    ancestors = {root}
    for path in inside:
        while path != root:
            path = os.path.dirname(path)
            ancestors.add(path)
    partial = rights & ~(FS_READ_FILE | FS_EXECUTE)
    out: list[PathRule] = []

    def walk(directory: str) -> None:
        if partial:
            out.append(PathRule(directory, partial, follow=False))
        try:
            children = sorted(listdir(directory))
        except OSError:
            return  # unreadable or gone: granting less is the safe side
        for name in children:
            child = os.path.join(directory, name)
            if child in inside:
                continue
            if child in ancestors:
                walk(child)
            else:
                out.append(PathRule(child, rights, follow=False))

    walk(root)
    return out


def landlock_plan(
    rp: ResolvedPolicy,
    host: HostFacts,
    *,
    tmp_dir: str | None,
    listdir: Callable[[str], list[str]] = os.listdir,
    mount_ns: bool | None = None,
    host_view: bool = False,
    proxy_dir: str | None = None,
) -> LandlockPlan:
    """The ruleset for `rp` at `host.landlock_abi`.

    tmp_dir: the per-run host directory that becomes TMPDIR when there is no
    mount namespace (None: no private tmp).
    mount_ns: whether the backend also builds the mount namespace of
    `policies.compile.mounts` (default: when the caller is root or user
    namespaces work). With it, deny-read is the mounts' job, and /tmp,
    /var/tmp and /dev/shm are fresh tmpfs mounts granted in the child
    (`late_rules`); `tmp_dir` is then unused.
    host_view: the mount namespace's root is the host seen through overlays
    (`policies.compile.hostview`), whose inodes are not the host's, and
    Landlock does not look at a mountpoint that another mount covers: "/"
    is granted read again in the child, on the view. What the view binds
    from the host (writable roots, /dev) keeps the host's inodes and rules.
    proxy_dir: network allowlist, the host dir of the filtering proxy's Unix
    socket: granted RESOLVE_UNIX (ABI 9) so the command can connect to it.
    """
    abi = host.landlock_abi
    if abi < 1:
        return LandlockPlan(abi=0, handled_fs=0, rules=(), notes=("Landlock unavailable on this host",))
    if mount_ns is None:
        mount_ns = host.is_root or host.userns
    policy = rp.policy
    online = policy.network.mode is NetworkMode.ON
    notes = [f"Landlock ABI {abi}"]
    handled_fs = fs_rights_for_abi(abi)
    if online:
        handled_fs &= ~FS_RESOLVE_UNIX  # host Unix sockets are the network's business when it is on
    read = READ & handled_fs
    write = handled_fs
    device = DEVICE & handled_fs
    denied = [d.path for d in rp.deny_read]

    rules: list[PathRule] = []
    if mount_ns:
        rules.append(PathRule("/", read))
        if denied:
            notes.append("deny-read enforced by the mount namespace (empty read-only mounts over each path)")
    else:
        rules.extend(carve("/", read, denied, listdir))
    for root in rp.writable:
        rules.extend([PathRule(root, write)] if mount_ns else carve(root, write, denied, listdir))

    tmpdir: str | None = None
    late: list[PathRule] = []
    if mount_ns and host_view:
        late.append(PathRule("/", read))
    if policy.tmp is TmpMode.PRIVATE and mount_ns:
        late.extend(PathRule(p, write) for p in PRIVATE_TMP_DIRS)
    elif policy.tmp is TmpMode.PRIVATE and tmp_dir:
        tmpdir = tmp_dir
        rules.append(PathRule(tmp_dir, write))
        rules.append(PathRule("/dev/shm", write))
        notes.append("/dev/shm is the host's and shared (POSIX semaphores need it); "
                     "a mount namespace gives a private one")
    elif policy.tmp is TmpMode.HOST:
        rules.extend(PathRule(p, write) for p in PRIVATE_TMP_DIRS)
    rules.extend(PathRule(p, device) for p in (*DEVICE_FILES, *DEVICE_DIRS))
    if proxy_dir and not online and handled_fs & FS_RESOLVE_UNIX:
        # Network allowlist: the filtering proxy's socket is the one host socket the command may reach.
        rules.append(PathRule(proxy_dir, read | FS_RESOLVE_UNIX))

    handled_net = 0
    if not online and not mount_ns:
        if abi >= 4:
            handled_net = NET_BIND_TCP | NET_CONNECT_TCP  # no port rules: no TCP at all
        else:
            notes.append("TCP not restricted by Landlock (ABI 4, kernel 6.7); seccomp refuses inet sockets")
    scoped = SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET if abi >= 6 else 0

    if abi < 2:
        notes.append("ABI 1: renames and links across directories fail with EXDEV (REFER needs ABI 2, 5.19)")
    if abi < 3:
        notes.append("truncate() is not restricted (ABI 3, kernel 6.2)")
    if abi < 5:
        notes.append("ioctl on device files is not restricted (ABI 5, kernel 6.10)")
    if abi < 6:
        notes.append("signals and abstract Unix sockets are not scoped (ABI 6, kernel 6.12)")
    if not mount_ns:
        notes.append("chmod/chown/utimes/xattrs on files the caller owns outside the writable roots are not "
                     "restricted (Landlock does not handle metadata); a mount namespace makes / read-only")
        if not online and abi < 9:
            notes.append("connect() to the host's pathname Unix sockets is not restricted (ABI 9)")
    return LandlockPlan(abi=abi, handled_fs=handled_fs, rules=tuple(rules), late_rules=tuple(late),
                        handled_net=handled_net,
                        scoped=scoped, tmpdir=tmpdir, notes=tuple(notes))

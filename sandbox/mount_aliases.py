"""Other names a path has through bind mounts on the host.

Hiding `~/.ssh` by its path does nothing against `/mnt/home-alias/.ssh` when
the host bind-mounted the home directory there, and a Landlock grant on the
alias is a grant on the very same inodes. So every path the sandbox hides
(deny-read entries, host sockets) is looked up in /proc/self/mountinfo: each
other mount of the same filesystem whose root contains it gives one more
name, kept only if it really is the same file (device and inode match).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from policies.compile.hostview import unescape_field

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class MountEntry:
    dev: str  # "major:minor"
    root: str  # the path inside the filesystem that is mounted
    mountpoint: str


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) >= 5:
            entries.append(MountEntry(fields[2], unescape_field(fields[3]), unescape_field(fields[4])))
    return entries


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _join(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel if rel else base


_LAST: tuple[str, list[MountEntry]] = ("", [])


def current_mounts() -> list[MountEntry]:
    """This process's mount table (parsed again only when it changed)."""
    global _LAST
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
    except OSError:
        return []
    if text != _LAST[0]:
        _LAST = (text, parse_mountinfo(text))
    return _LAST[1]


def aliases(paths: Iterable[str], mounts: list[MountEntry] | None = None) -> dict[str, list[str]]:
    """For each path, its other names through other mounts of the same filesystem (same dev and inode)."""
    if mounts is None:
        mounts = current_mounts()
    by_dev: dict[str, list[MountEntry]] = {}
    for m in mounts:
        by_dev.setdefault(m.dev, []).append(m)
    if all(len(v) == 1 and v[0].root == "/" for v in by_dev.values()):
        return {}  # no bind mounts anywhere: nothing can have a second name
    found: dict[str, list[str]] = {}
    for path in paths:
        # The mount that holds `path` is the last one (in mount order) whose mountpoint contains it.
        holder = None
        for m in mounts:
            if _under(path, m.mountpoint):
                holder = m
        if holder is None:
            continue
        inner = _join(holder.root, path[len(holder.mountpoint.rstrip("/")):].lstrip("/"))
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        names = []
        for m in by_dev.get(holder.dev, []):
            if m is holder or not _under(inner, m.root):
                continue
            alias = _join(m.mountpoint, inner[len(m.root.rstrip("/")):].lstrip("/"))
            if alias == path or alias in names:
                continue
            try:
                ast = os.stat(alias, follow_symlinks=False)
            except OSError:
                continue
            if (ast.st_dev, ast.st_ino) == (st.st_dev, st.st_ino):
                names.append(alias)
        if names:
            found[path] = names
    return found

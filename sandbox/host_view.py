"""Host side of the overlay view (`policies.compile.hostview`): the mount table, directory scans,
the empty lower layer, and the check that the overlays really mount here.

The check (a probe spawn, made by the backend) runs once per mount table
and namespace kind: overlayfs refuses some lower layers (one already two
overlays deep, as in Docker-in-Docker; a filesystem it does not support),
and each refused mount is then shown with a plain read-only bind, as before
the view existed, and reported (`HostView.plain`). If the probe fails for
any other reason the whole view is given up. Either way the run goes on,
with "host-unix-sockets" reported best-effort instead of enforced.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable

from policies.compile.hostview import Entry, HostMount, HostView, Overlay, host_view, parse_mountinfo

MOUNTINFO = "/proc/self/mountinfo"

_TABLE: tuple[str, list[HostMount]] = ("", [])
# (kind, mountinfo text, ...) -> mount ids to show plainly, or None when the view is unusable.
_PROBED: dict[tuple[object, ...], frozenset[int] | None] = {}
_LOCK = threading.Lock()

# The probe is retried this often at most (each refused mount costs one more spawn, once).
MAX_PROBES = 12


def mount_table() -> tuple[str, list[HostMount]]:
    """This process's mount table, as text and parsed (parsed again only when it changed)."""
    global _TABLE
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
    except OSError:
        return "", []
    if text != _TABLE[0]:
        _TABLE = (text, parse_mountinfo(text))
    return _TABLE


def scan(directory: str) -> list[Entry] | None:
    """The entries of a host directory (what a carved skeleton gets back); None when it cannot be listed."""
    out = []
    try:
        with os.scandir(directory) as it:
            for e in it:
                try:
                    if e.is_symlink():
                        out.append(Entry(e.name, "symlink", os.readlink(e.path)))
                    elif e.is_dir(follow_symlinks=False):
                        out.append(Entry(e.name, "dir"))
                    elif e.is_file(follow_symlinks=False):
                        out.append(Entry(e.name, "file"))
                    else:
                        out.append(Entry(e.name, "other"))
                except OSError:
                    continue  # gone meanwhile
    except OSError:
        return None
    return out


def stat_kind(path: str) -> tuple[str, int]:
    """(kind, permission bits) of a host path; kind "missing" when it cannot be stat'ed."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "missing", 0
    kind = ("dir" if stat.S_ISDIR(mode) else "symlink" if stat.S_ISLNK(mode)
            else "file" if stat.S_ISREG(mode) else "other")
    return kind, stat.S_IMODE(mode)


def build(*, carve: bool, skip: Iterable[str] = (), plain_mounts: Iterable[int] = ()) -> HostView | None:
    """The view of this host now (see `policies.compile.hostview.host_view`)."""
    _, mounts = mount_table()
    return host_view(mounts, carve=carve, scan=scan, stat=stat_kind, skip=skip, plain_mounts=plain_mounts)


EMPTY_BASE = "/dev/shm"


def empty_layer_path(uid: int, base: str = EMPTY_BASE) -> str | None:
    """Where `empty_layer` keeps the empty dir (None when `base` is not usable), without looking further."""
    return os.path.join(base, f"stockade-{uid}", "empty") if os.path.realpath(base) == base else None


def empty_layer(uid: int, *, create: bool = True, base: str = EMPTY_BASE) -> str | None:
    """`base`/stockade-<uid>/empty: an empty dir of this user's, writable by nobody (None: not possible).

    overlayfs wants two lower layers for a read-only mount; this is the
    second. overlayfs also refuses a lower layer inside another one of the
    same filesystem, so it must lie where the view overlays nothing: under
    /dev, which the sandbox always gets fresh. It must stay empty (whatever
    is in it would show in every overlaid dir), so it is checked on every
    call, and its parent must be private to the user. Left in place between
    runs, like the stub registry. `create`: make it when missing.
    """
    path = empty_layer_path(uid, base)
    if path is None:
        return None  # /dev/shm -> /run/shm: not under /dev after all
    base = os.path.dirname(path)
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(base, 0o700)
        st = os.lstat(base)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
            return None
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o500)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o222 or os.listdir(path):
            return None
    except OSError:
        return None
    return path


def plain_mounts(key: tuple[object, ...], *, carve: bool,
                 probe: Callable[[HostView], str | None]) -> frozenset[int] | None:
    """Mount ids the overlay could not be made for here, found by `probe` once per mount table and `key`.

    probe(view) spawns a throw-away sandbox showing `view` and returns None
    when every mount in it worked, the path of the item that failed, or ""
    for any other failure. None from here: the view is unusable.
    """
    text, _ = mount_table()
    full = (*key, text)
    with _LOCK:
        if full in _PROBED:
            return _PROBED[full]
    cached = _read_probe_cache(full)
    if cached is not None:
        with _LOCK:
            _PROBED[full] = cached
        return cached
    plain: set[int] = set()
    found: frozenset[int] | None = None
    for _ in range(MAX_PROBES):
        # The probe shows everything but the kernel trees and the usual private dirs, so each mount is tried.
        view = build(carve=carve, skip=("/proc", "/dev", "/tmp", "/var/tmp"), plain_mounts=plain)
        if view is None:
            break
        failed = probe(view)
        if failed is None:
            found = frozenset(plain)
            break
        item = next((i for i in view.items if i.path == failed), None)
        if not isinstance(item, Overlay) or item.mount_id in plain:
            break
        plain.add(item.mount_id)
    with _LOCK:
        _PROBED[full] = found
    if found is not None:
        _write_probe_cache(full, found)
    return found


# A cold `stockade run` would otherwise pay a throw-away bwrap spawn (~10 ms) for
# the probe. The answer is kept next to the host facts, keyed by the exact key and
# mount table text (compared whole); that directory is protected inside writable roots.
def _probe_cache_file(full: tuple[object, ...]) -> tuple[str, str]:
    import zlib

    from policies.resolve import state_dirs

    text = repr(full)
    return os.path.join(state_dirs()[0], f"hostview-{zlib.crc32(text.encode()):08x}.json"), text


def _read_probe_cache(full: tuple[object, ...]) -> frozenset[int] | None:
    import json

    path, text = _probe_cache_file(full)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if data.get("key") == text:
            return frozenset(int(i) for i in data["plain"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_probe_cache(full: tuple[object, ...], found: frozenset[int]) -> None:
    import json

    path, text = _probe_cache_file(full)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"key": text, "plain": sorted(found)}, fh)
        os.replace(tmp, path)
    except OSError:
        pass


_FAILED_AT = r" on (/newroot)?(/\S*)"  # compiled (and cached by re) only when a probe fails


def failed_path(stderr: str) -> str:
    """The mountpoint a probe's setup failed on ("" when the message names none)."""
    m = re.search(_FAILED_AT, stderr)
    if m is None:
        return ""
    path = m.group(2)
    return path.rstrip(":") or "/"

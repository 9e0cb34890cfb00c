"""The host's pathname Unix sockets, so a network-off sandbox can cover them.

A network namespace does not isolate pathname sockets: a `connect()` to
/run/docker.sock goes through the filesystem, and a docker socket is a full
escape. Both backends show the host through read-only overlays when the
network is off (`policies.compile.hostview`), where no socket is
connectable; this scan covers the rest, the parts shown through plain binds
(writable roots, kernel trees, mounts overlayfs refused, or everything when
there is no overlay view): /dev/null is bound over every socket found here
at launch, and there sockets created after launch stay reachable.

Runs on every launch, so it reads /proc/net/unix once and stats only the
named entries and the sockets in their directories. /proc/net/unix lists
sockets bound in the caller's network namespace only: a socket bind-mounted
into a container from outside (the classic /var/run/docker.sock) is not in
it, hence the well-known list. What the scan alone leaves reachable (in
those plain parts): a socket's other hard links, a socket renamed into
another directory after bind(), and sockets bound after launch.
"""

from __future__ import annotations

import contextlib
import glob
import os
import stat

PROC_NET_UNIX = "/proc/net/unix"
MAX_DIR_ENTRIES = 4096  # a huge directory is scanned only this far

# Sockets that are dangerous to expose and are often bind-mounted in from
# another network namespace, where /proc/net/unix does not show them.
WELL_KNOWN_SOCKETS: tuple[str, ...] = (
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/run/crio/crio.sock",
    "/run/buildkit/buildkitd.sock",
    "/run/snapd.socket",
    "/run/dbus/system_bus_socket",
    "/run/systemd/private",
    "/run/systemd/journal/stdout",
    "/run/systemd/journal/socket",
    "/run/systemd/notify",
)
WELL_KNOWN_GLOBS: tuple[str, ...] = (
    "/run/user/*/docker.sock",
    "/run/user/*/podman/podman.sock",
    "/run/user/*/bus",
)


def _listed(text: str) -> list[str]:
    """Absolute socket paths from the text of /proc/net/unix, in order."""
    paths: list[str] = []
    for line in text.splitlines()[1:]:
        # Num RefCount Protocol Flags Type St Inode [Path]; a path may hold spaces.
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7].startswith("/"):
            paths.append(fields[7])
    return paths


def _sockets_in(directory: str, limit: int = MAX_DIR_ENTRIES) -> list[str]:
    """Socket files directly in `directory` (at most `limit` entries looked at)."""
    found: list[str] = []
    try:
        with os.scandir(directory) as it:
            for n, entry in enumerate(it):
                if n >= limit:
                    break
                if entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
                    continue  # d_type answers these without a stat
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                        found.append(entry.path)
    except OSError:
        pass
    return found


def host_unix_sockets(proc_net_unix: str = PROC_NET_UNIX) -> tuple[str, ...]:
    """Canonical paths of the bound pathname sockets that exist now.

    Abstract sockets ('@...') and relative paths are skipped. Every name
    found is reported (two hard links in one directory are two entries),
    each once, at its canonical path, because bwrap cannot mount on a
    destination reached through an absolute symlink.
    """
    try:
        with open(proc_net_unix, encoding="utf-8", errors="surrogateescape") as fh:
            listed = _listed(fh.read())
    except OSError:
        listed = []
    candidates = [*listed, *WELL_KNOWN_SOCKETS]
    for pattern in WELL_KNOWN_GLOBS:
        candidates += glob.glob(pattern)
    # /proc/net/unix keeps the name given to bind(): a daemon that binds a
    # temporary name and renames it into place shows the stale name. Every
    # socket sitting next to a listed name is taken as well.
    for parent in dict.fromkeys(os.path.dirname(p) for p in listed):
        candidates += _sockets_in(parent)

    found: dict[str, None] = {}
    for path in dict.fromkeys(candidates):
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                found[os.path.realpath(path)] = None
        except (OSError, ValueError):
            continue
    return tuple(found)

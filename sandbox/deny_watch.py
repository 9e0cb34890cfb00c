"""Notice when the host's deny-read entries change under a long-lived sandbox (a session's worker).

A worker hides the deny-read entries that exist when it starts: a missing
`~/.aws` cannot be covered, and the empty mount over `~/.aws` follows that
directory if the host renames it. So when the user runs `aws configure` or
`gh auth login` in another terminal, or a tool rebuilds its directory
(`mv ~/.aws ~/.aws.bak && mkdir ~/.aws`), the running worker would expose the
new secret. inotify on the parents of the entries reports such changes at
once; the session then retires its worker (killing what runs in it) and the
next call starts a fresh one that hides them. An entry renamed away on the
host stays denied under its new name for the session's life (`moved`).

Checking costs one non-blocking read of the inotify fd per call. One-shot
runs (`sandbox.run`, `sandbox.arun`) are followed too, once they have run
for `sandbox.execute.WATCH_AFTER` seconds: closing an inotify instance waits for an RCU grace
period (~9 ms here), too much for every short command, so they only note
what the entries are (`deny_state`) when the policy is resolved, and a run
that lasts compares that with the host before it starts watching. A change
stops the run (the tree is killed) with a denial saying why. Linux only:
elsewhere `DenyReadWatch.start` returns None and nothing is watched.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import glob
import os
import struct
import sys
import threading
from collections.abc import Iterable

from policies.resolve import deny_read_patterns

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (it is on `stockade run`'s path)
if TYPE_CHECKING:
    from policies.model import SandboxPolicy

IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE_SELF, IN_MOVE_SELF = 0x40, 0x80, 0x100, 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ONLYDIR, IN_NONBLOCK, IN_CLOEXEC = 0x4000, 0x8000, 0x1000000, 0o4000, 0o2000000
MASK = IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
EVENT = struct.Struct("iIII")


class DenyReadWatch:
    """inotify watches on the nearest existing ancestor of every deny-read entry (globs: their directory)."""

    def __init__(self, fd: int, patterns: tuple[str, ...]) -> None:
        self.fd = fd
        self.patterns = patterns
        self.moved: list[str] = []  # entries renamed away on the host, under their new names
        self._wd: dict[int, str] = {}
        self._cookies: dict[int, str] = {}
        self._lock = threading.Lock()
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._arm()

    @classmethod
    def start(cls, patterns: Iterable[str]) -> DenyReadWatch | None:
        """Watch these absolute entries (globs allowed); None where inotify is not available."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        return cls(fd, tuple(dict.fromkeys(os.path.normpath(p) for p in patterns if os.path.isabs(p))))

    def _arm(self) -> None:
        """(Re)place the watches: an entry's deepest existing directory, so its creation is seen."""
        for pattern in self.patterns:
            probe = os.path.dirname(pattern)
            while glob.has_magic(probe):
                probe = os.path.dirname(probe)
            while probe != "/" and not os.path.isdir(probe):
                probe = os.path.dirname(probe)
            if probe not in self._wd.values():
                wd = self._libc.inotify_add_watch(self.fd, os.fsencode(probe), MASK)
                if wd >= 0:
                    self._wd[wd] = probe

    def _relevant(self, directory: str, name: str) -> bool:
        """Whether `directory/name` is an entry, or an ancestor of one (its creation makes the entry possible)."""
        path = os.path.join(directory, name)
        for pattern in self.patterns:
            if fnmatch.fnmatchcase(path, pattern) or pattern.startswith(path + "/"):
                return True
            parts = pattern.split("/")
            if glob.has_magic(pattern) and fnmatch.fnmatchcase(path, "/".join(parts[:path.count("/") + 1])):
                return True
        return False

    def changed(self) -> str | None:
        """What changed since the last call (None: nothing that matters). Never blocks."""
        with self._lock:
            reasons: list[str] = []
            while True:
                try:
                    data = os.read(self.fd, 64 * 1024)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    return f"the deny-read watch failed ({exc.strerror})"
                reasons.extend(self._parse(data))
            if reasons:
                self._arm()
            return "; ".join(dict.fromkeys(reasons)) or None

    def _parse(self, data: bytes) -> list[str]:
        reasons: list[str] = []
        offset = 0
        while offset + EVENT.size <= len(data):
            wd, mask, cookie, size = EVENT.unpack_from(data, offset)
            raw = data[offset + EVENT.size:offset + EVENT.size + size]
            offset += EVENT.size + size
            name = os.fsdecode(raw.split(b"\0", 1)[0])
            if mask & IN_Q_OVERFLOW:
                reasons.append("too many changes on the host to follow")
                continue
            directory = self._wd.get(wd)
            if directory is None:
                continue
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                self._wd.pop(wd, None)
                reasons.append(f"{directory} was moved or removed")
                continue
            path = os.path.join(directory, name)
            if mask & IN_MOVED_FROM and self._relevant(directory, name):
                self._cookies[cookie] = path
            elif mask & IN_MOVED_TO and cookie in self._cookies:
                old = self._cookies.pop(cookie)
                self.moved.append(path)  # the secret itself, under a name the policy does not list
                reasons.append(f"{old} was renamed to {path}")
            elif mask & (IN_CREATE | IN_MOVED_TO) and self._relevant(directory, name):
                reasons.append(f"{path} appeared")
        return reasons

    def close(self) -> None:
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def deny_state(patterns: Iterable[str]) -> tuple[tuple[str, int, int], ...]:
    """What the deny-read entries are right now: each existing match with its device and inode."""
    out = []
    for pattern in patterns:
        for match in (glob.glob(pattern) if glob.has_magic(pattern) else (pattern,)):
            try:
                st = os.lstat(match)
            except OSError:
                continue
            out.append((match, st.st_dev, st.st_ino))
    return tuple(out)


def watch_for(policy: SandboxPolicy, home: str) -> DenyReadWatch | None:
    """A watch for a confining policy with a deny-read list (None otherwise, or where there is no inotify)."""
    if not policy.confined or not policy.deny_read or not sys.platform.startswith("linux"):
        return None
    return DenyReadWatch.start(deny_read_patterns(policy, home))

"""Mountpoint stubs for missing protected paths, shared safely between runs.

To keep `.stockade` read-only before it exists, the bwrap backend mounts an
empty read-only dir on it, and a mount needs a mountpoint: an empty dir on the
host, inside the workspace. The run must remove it afterwards (no ghost files)
but must not remove it while another run still uses it: removing a
mountpoint from the host namespace silently detaches the mount in the other
sandbox, which could then create `.stockade/config.toml`.

So each stub has two lock files in a per-user registry (outside every
workspace): `<key>.lock`, held exclusively for a moment while a stub is made
or removed, and `<key>.users`, held shared by every run that mounts on the
stub. `<key>.lock` also records the stub's device, inode and ctime (empty when
there is no stub), so a later run recognises an empty dir as a stub (and not
the user's) and joins it. The last run out (the one that gets `.users`
exclusively) removes the stub, only if it is still the same empty dir. A stub
left by a crash is removed by the next run that joins and leaves it. The
last run out also unlinks both lock files, so the registry does not grow;
a process that locked a lock file just as it was unlinked notices (the
path no longer names the inode it locked) and starts over.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from dataclasses import dataclass, field


def registry_dir(uid: int | None = None) -> str:
    """Per-user lock registry: a fixed path, so every stockade process agrees on it."""
    return f"/tmp/stockade-{os.getuid() if uid is None else uid}/stubs"


def _ensure_registry(path: str) -> None:
    """Create the registry 0700 and refuse one we do not own (shared /tmp)."""
    uid = os.getuid()
    parent = os.path.dirname(path)
    for d in (parent, path):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
            raise OSError(f"{d} is not a private directory owned by uid {uid}")


def _key(path: str) -> str:
    """The registry file name for `path`: distinct paths always get distinct names.

    Usually the path itself, escaped (`%` -> `%25`, `/` -> `%2F`: injective, and
    no hashing on the cold path); a path too long for one file name gets a
    sha256 instead. The two forms cannot meet: only the first starts with `p-`.
    """
    escaped = path.replace("%", "%25").replace("/", "%2F")
    if len(escaped.encode("utf-8", "surrogateescape")) <= _MAX_ESCAPED:
        return "p-" + escaped
    import hashlib  # lazily: ~2 ms of the cold start otherwise

    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:32]


_MAX_ESCAPED = 200  # + "p-" + ".users" stays well under NAME_MAX (255)


Ident = tuple[int, int, int]


def _ident(st: os.stat_result) -> Ident:
    """Who a dir is: inode numbers are reused at once, so the change time goes with them."""
    return st.st_dev, st.st_ino, st.st_ctime_ns


def _read_ident(fd: int) -> Ident | None:
    """The stub identity recorded in a lock file, or None when it records no stub."""
    try:
        dev, ino, ctime = os.pread(fd, 96, 0).split()[:3]
        return int(dev), int(ino), int(ctime)
    except (OSError, ValueError):
        return None


def _write_ident(fd: int, ident: Ident | None) -> None:
    os.ftruncate(fd, 0)
    if ident is not None:
        os.pwrite(fd, (" ".join(map(str, ident)) + "\n").encode("ascii"), 0)


def _is_empty_dir(path: str, ident: Ident) -> bool:
    """Still the very stub we made, and empty (a change on the host makes it user data)."""
    try:
        st = os.lstat(path)
        return stat.S_ISDIR(st.st_mode) and _ident(st) == ident and not os.listdir(path)
    except OSError:
        return False


@dataclass
class _Held:
    path: str
    lock: str
    users_fd: int


@dataclass
class StubLease:
    """The stubs one run mounts on; `release()` removes those no other run holds."""

    registry: str
    held: list[_Held] = field(default_factory=list)

    def _files(self, path: str) -> tuple[str, str]:
        key = os.path.join(self.registry, _key(path))
        return key + ".lock", key + ".users"

    def is_stub(self, path: str) -> bool:
        """True when `path` is an empty dir a stockade run made as a stub (cheap check)."""
        try:
            fd = os.open(self._files(path)[0], os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            ident = _read_ident(fd)
        finally:
            os.close(fd)
        return ident is not None and _is_empty_dir(path, ident)

    def join(self, path: str, *, create: bool) -> bool:
        """Hold `path` as a stub for this run, making it if `create` and it is missing.

        Returns False when `path` exists but is not a stub (user data: never
        touched).
        """
        lock, users = self._files(path)
        lock_fd = _lock_current(lock)
        try:
            ident = _read_ident(lock_fd)
            if not os.path.lexists(path):
                if not create:
                    return False
                os.mkdir(path, 0o755)
                _write_ident(lock_fd, _ident(os.lstat(path)))
            elif ident is None or not _is_empty_dir(path, ident):
                return False
            users_fd = os.open(users, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(users_fd, fcntl.LOCK_SH)
            self.held.append(_Held(path, lock, users_fd))
            return True
        finally:
            os.close(lock_fd)  # closing drops the flock

    def release(self) -> list[str]:
        """Drop this run's holds; remove each stub no other run holds. Returns problems."""
        problems: list[str] = []
        for held in reversed(self.held):
            try:
                lock_fd = _lock_current(held.lock)
            except OSError as exc:
                problems.append(f"cannot lock stub {held.path}: {exc}")
                os.close(held.users_fd)
                continue
            try:
                try:
                    fcntl.flock(held.users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another run still mounts on it; the last one out removes it
                ident = _read_ident(lock_fd)
                if ident is not None and _is_empty_dir(held.path, ident):
                    try:
                        os.rmdir(held.path)
                    except OSError as exc:
                        problems.append(f"could not remove stub {held.path}: {exc}")
                        continue
                _write_ident(lock_fd, None)  # gone, or user data now: no longer a stub
                # Last one out, under both locks: retire the lock files too.
                for name in (held.lock[: -len(".lock")] + ".users", held.lock):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name)
            finally:
                os.close(held.users_fd)
                os.close(lock_fd)
        self.held.clear()
        return problems


def _lock_current(path: str) -> int:
    """Open and exclusively lock `path`, retrying if it was unlinked (retired) meanwhile."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_dev, current.st_ino) == (st.st_dev, st.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def new_lease(uid: int | None = None) -> StubLease:
    """A lease on the per-user registry (created on first use)."""
    reg = registry_dir(uid)
    _ensure_registry(reg)
    return StubLease(reg)

"""The session worker: confined once, it spawns every command of a session and runs its file operations.

`sandbox.session` starts it inside the sandbox (bwrap: as the sandboxed
command; landlock: after the backend's pre-exec hook confined it), so each
command it spawns inherits the same confinement without paying the sandbox
setup again, and is spawned with a plain vfork+exec (no pre-exec hook). File
operations run here too, so the kernel judges them exactly as it would a
command's: there is no path check in Python to get wrong.

Stdlib only: it starts with `python -I -S` and imports nothing of stockade
but this module. It holds no secrets: each request carries only what that
command needs (argv, the env the host built, cwd, its pipes).

Protocol (both directions): frames of a 4-byte big-endian length and a JSON
object, at most MAX_FRAME bytes; fds travel as SCM_RIGHTS with a frame whose
`nfds` says how many are its own. One message is not JSON: the exit report,
the one every command gets, is a fixed binary record (EXIT_RECORD) announced
by the BINARY bit in its length word; decoding JSON right after a wake-up,
with cold caches, cost the host ~25 us per command, a fortieth of a spawn. The first socket (control) only carries
`attach` (a new channel socket, one fd) and `shutdown`; its EOF means the
host is gone, and the worker kills everything and exits. Each channel carries
one request at a time: `run` answers `exit` (preceded by `started` with the
pid when the request asks for it: it costs the host a wakeup) or one error,
`kill` ends a running command, the file operations answer once. Every
request is validated; anything malformed gets an error reply, never a crash.

A command's environment is sent once per channel, not per command: a `run`
names an env slot (`env_slot`, 0..ENV_SLOTS-1) and carries the `env` only when
the host fills or refills that slot; later requests reuse it (a 2 KB env
decoded and checked per command was a fifth of the session's overhead). The
host alone decides what each slot holds, and forgets every slot of a channel
after any error on it, so the two sides cannot disagree.

Leftovers: when a command's main process exits, its process group is killed
at once (as bwrap's pid namespace does for `sandbox.run`). Descendants that
left the group (setsid, double fork) are found through the process table:
the worker is a child subreaper, so orphans reparent to it. They are killed
on the command's timeout or kill, and by an idle sweep once no command of the
session runs; at shutdown everything under the worker dies.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import errno
import fnmatch
import json
import os
import re
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PROTOCOL = 1
HEADER = struct.Struct(">I")
BINARY = 0x8000_0000  # in a length word: a fixed binary record follows, not JSON
# The exit report: id, pid, wait status, duration, user and system CPU seconds, peak RSS (KiB), flags.
EXIT_RECORD = struct.Struct(">QIidddQB")
EXIT_TIMED_OUT, EXIT_KILLED = 1, 2
_EXIT_WORD = HEADER.pack(BINARY | EXIT_RECORD.size)
MAX_FRAME = 64 << 20  # bytes of JSON per frame; a bigger one is skipped and answered with an error
MAX_FDS = 4  # fds one frame may carry
MAX_CHANNELS = 64
ENV_SLOTS = 4  # environments a channel remembers (see the module docstring)
MAX_READ = 32 << 20  # read_file's largest answer (base64 grows it by a third)
MAX_ENTRIES = 10_000  # list_dir
MAX_MATCHES = 5_000  # search
SEARCH_FILE_LIMIT = 8 << 20  # larger files are skipped by search
MAX_WAIT = 3600.0  # seconds the loop sleeps at most at a time
IDLE_SWEEP = 0.05  # seconds of idleness before leftovers of finished commands are swept
RECV_CHUNK = 64 * 1024
SEND_TIMEOUT = 30.0  # a host that stops reading its channel loses it

_ANC_SPACE = socket.CMSG_SPACE(MAX_FDS * 4)
_CTRUNC, _CMSG_CLOEXEC = int(socket.MSG_CTRUNC), int(socket.MSG_CMSG_CLOEXEC)  # plain ints: enum ops are slow
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
RENAME_EXCHANGE = 2
RENAME_NOREPLACE = 1


# -- framing (shared with the host side) -----------------------------------------------------------

class FrameError:
    """A frame that could not be decoded: reported to the peer, never raised."""

    def __init__(self, message: str) -> None:
        self.message = message


_decode = json.JSONDecoder().decode  # of str: json.loads sniffs the encoding of bytes first


def _loads(body: bytes) -> Any:
    return _decode(body.decode())  # UnicodeDecodeError is a ValueError, as for json.loads


def encode(msg: dict[str, Any]) -> bytes:
    body = json.dumps(msg, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ValueError(f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return HEADER.pack(len(body)) + body


class FrameReader:
    """Bytes in, decoded frames out. An oversize frame is skipped (the stream stays in step)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.buf = bytearray()
        self.skip = 0
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[Any]:
        if not self.buf and not self.skip and len(data) > HEADER.size:  # the usual case: one whole message
            word = HEADER.unpack_from(data)[0]
            if word == len(data) - HEADER.size:
                try:
                    return [_loads(data[HEADER.size:])]
                except ValueError as exc:
                    return [FrameError(f"undecodable frame: {exc}")]
            if word == BINARY | EXIT_RECORD.size and len(data) == HEADER.size + EXIT_RECORD.size:
                return [_exit_report(data, HEADER.size)]
        out: list[Any] = []
        if self.skip:
            cut = min(self.skip, len(data))
            self.skip -= cut
            data = data[cut:]
        self.buf += data
        while len(self.buf) >= HEADER.size:
            (word,) = HEADER.unpack_from(self.buf)
            size = word & ~BINARY
            if word & BINARY and size != EXIT_RECORD.size:
                del self.buf[:HEADER.size]
                cut = min(size, len(self.buf))
                del self.buf[:cut]
                self.skip = size - cut
                out.append(FrameError(f"unknown binary record of {size} bytes"))
                continue
            if size > self.max_frame:
                del self.buf[:HEADER.size]
                cut = min(size, len(self.buf))
                del self.buf[:cut]
                self.skip = size - cut
                out.append(FrameError(f"frame of {size} bytes exceeds the {self.max_frame}-byte limit"))
                continue
            if len(self.buf) < HEADER.size + size:
                break
            if word & BINARY:
                out.append(_exit_report(self.buf, HEADER.size))
                del self.buf[:HEADER.size + size]
                continue
            body = bytes(self.buf[HEADER.size:HEADER.size + size])
            del self.buf[:HEADER.size + size]
            try:
                out.append(_loads(body))
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError
                out.append(FrameError(f"undecodable frame: {exc}"))
        return out


def encode_exit(rid: int, pid: int, status: int, duration: float, utime: float, stime: float, maxrss: int,
                timed_out: bool, killed: bool) -> bytes:
    return _EXIT_WORD + EXIT_RECORD.pack(rid, pid, status, duration, utime, stime, maxrss,
                                         (EXIT_TIMED_OUT if timed_out else 0) | (EXIT_KILLED if killed else 0))


def _exit_report(data: bytes | bytearray, offset: int) -> dict[str, Any]:
    """An exit record as the message it stands for."""
    rid, pid, status, duration, utime, stime, maxrss, flags = EXIT_RECORD.unpack_from(data, offset)
    return {"id": rid, "ev": "exit", "pid": pid, "status": status, "timed_out": bool(flags & EXIT_TIMED_OUT),
            "killed": bool(flags & EXIT_KILLED), "duration": duration, "utime": utime, "stime": stime,
            "maxrss": maxrss}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- request validation ------------------------------------------------------------------------------

class BadRequest(Exception):
    """The request is malformed; the message says which field and why."""


def _field(msg: dict[str, Any], key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
    """msg[key] if it has the expected JSON type (a bool is never taken for a number)."""
    value = msg.get(key)
    if value is None and optional:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise BadRequest(f"{key}: expected {names}, got {type(value).__name__}")
    return value


def _path(msg: dict[str, Any], key: str = "path") -> str:
    value = _field(msg, key, str)
    if not value or "\0" in value:
        raise BadRequest(f"{key}: empty or contains NUL")
    return value


def _abs_path(msg: dict[str, Any], key: str = "path") -> str:
    """File operations take absolute paths only: the worker's cwd follows the last command spawned."""
    value = _path(msg, key)
    if not value.startswith("/"):
        raise BadRequest(f"{key}: must be absolute")
    return value


def _blob(msg: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(_field(msg, key, str), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{key}: not base64 ({exc})") from None


def _env(chan: Channel, msg: dict[str, Any]) -> dict[str, str]:
    """The request's env: the one it carries (stored in its slot), else the one its slot holds."""
    slot = _count(msg, "env_slot", 0, ENV_SLOTS - 1)
    if "env" not in msg:
        env = chan.envs[slot]
        if env is None:
            raise BadRequest(f"env_slot {slot}: empty (send the env)")
        return env
    env = _field(msg, "env", dict)
    try:  # joins in C: a TypeError for any non-string name or value
        names, values = "".join(env), "".join(env.values())
    except TypeError:
        names = values = "\0"
    if "\0" in names or "\0" in values or "=" in names or "" in env:
        raise BadRequest("env: string names (no '=') and values, no NUL")
    chan.envs[slot] = env
    return env


def _count(msg: dict[str, Any], key: str, default: int, limit: int) -> int:
    value = msg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise BadRequest(f"{key}: expected an integer in 0..{limit}")
    return value


class OpFailed(Exception):
    """A file operation failed: errno (None for a content error), the path it concerns, why."""

    def __init__(self, path: str, err: int | None, message: str) -> None:
        super().__init__(message)
        self.path, self.errno, self.message = path, err, message


def _os_failed(path: str, exc: OSError) -> OpFailed:
    return OpFailed(path, exc.errno, exc.strerror or str(exc))


# -- file operations (run on a thread; the kernel enforces the policy on every call) --------------------

def op_read_file(msg: dict[str, Any]) -> dict[str, Any]:
    path = _abs_path(msg)
    limit = _count(msg, "max_bytes", MAX_READ, MAX_READ)
    try:
        # O_NONBLOCK: opening a FIFO must not hang the worker; anything but a regular file is refused.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise _os_failed(path, exc) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OpFailed(path, errno.EISDIR, "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise OpFailed(path, errno.EINVAL, "not a regular file")
        chunks, got = [], 0
        while got < limit:
            chunk = os.read(fd, min(limit - got, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        data = b"".join(chunks)
        more = got >= limit and len(os.read(fd, 1)) > 0
    except OSError as exc:
        raise _os_failed(path, exc) from None
    finally:
        os.close(fd)
    return {"data": b64(data), "size": max(st.st_size, len(data)), "truncated": more}


def op_list_dir(msg: dict[str, Any]) -> dict[str, Any]:
    path = _abs_path(msg)
    limit = _count(msg, "max_entries", MAX_ENTRIES, MAX_ENTRIES)
    entries: list[dict[str, Any]] = []
    truncated = False
    try:
        with os.scandir(path) as it:
            for entry in it:
                if len(entries) >= limit:
                    truncated = True
                    break
                try:
                    st = entry.stat(follow_symlinks=False)
                    mode = st.st_mode
                    kind = ("dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode)
                            else "link" if stat.S_ISLNK(mode) else "other")
                    size = st.st_size
                except OSError:
                    kind, size = "unknown", 0
                entries.append({"name": entry.name, "type": kind, "size": size})
    except OSError as exc:
        raise _os_failed(path, exc) from None
    entries.sort(key=lambda e: e["name"])
    return {"entries": entries, "truncated": truncated}


def op_search(msg: dict[str, Any]) -> dict[str, Any]:
    """A small grep: regex per line over the files under `path` whose name matches `glob`."""
    path = _abs_path(msg)
    pattern = _field(msg, "pattern", str)
    glob = _field(msg, "glob", str, optional=True)
    limit = _count(msg, "max_results", 500, MAX_MATCHES)
    budget = time.monotonic() + _count(msg, "max_seconds", 30, 600)  # a search of / must end somewhere
    flags = re.IGNORECASE if msg.get("ignore_case") is True else 0
    try:
        regex = re.compile(pattern.encode("utf-8", "surrogateescape"), flags | re.MULTILINE)
    except (re.error, OverflowError) as exc:
        raise OpFailed(path, None, f"bad pattern: {exc}") from None
    matches: list[dict[str, Any]] = []
    scanned = skipped = 0
    truncated = False

    def scan(file: str) -> bool:
        """Search one file; False once the result limit is reached."""
        nonlocal scanned, skipped
        try:
            fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            skipped += 1
            return True
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > SEARCH_FILE_LIMIT:
                skipped += 1
                return True
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read(SEARCH_FILE_LIMIT + 1)
        except OSError:
            skipped += 1
            return True
        finally:
            os.close(fd)
        if b"\0" in data[:8192]:
            skipped += 1  # binary
            return True
        scanned += 1
        pos, line_no, counted = 0, 1, 0
        while pos <= len(data):
            m = regex.search(data, pos)
            if m is None:
                break
            start = data.rfind(b"\n", 0, m.start()) + 1
            end = data.find(b"\n", m.start())
            end = len(data) if end < 0 else end
            line_no += data.count(b"\n", counted, start)
            counted = start
            matches.append({"path": file, "line": line_no, "text": data[start:end][:500].decode("utf-8", "replace")})
            if len(matches) >= limit:
                return False
            pos = end + 1  # one hit per line
        return True

    try:
        st = os.stat(path)
    except OSError as exc:
        raise _os_failed(path, exc) from None
    if not stat.S_ISDIR(st.st_mode):
        truncated = not scan(path)
    else:
        def walk_error(exc: OSError) -> None:
            nonlocal skipped
            skipped += 1
        for root, dirs, files in os.walk(path, onerror=walk_error):
            dirs[:] = sorted(d for d in dirs if d != ".git")
            for name in sorted(files):
                if glob and not fnmatch.fnmatch(name, glob):
                    continue
                if not scan(os.path.join(root, name)) or time.monotonic() > budget:
                    truncated = True
                    break
            if truncated:
                break
    return {"matches": matches, "truncated": truncated, "files_scanned": scanned, "files_skipped": skipped}


_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _renameat2(dirfd: int, a: str, b: str, flags: int) -> None:
    """renameat2 of two names in one open directory (RENAME_EXCHANGE: swap; RENAME_NOREPLACE: never clobber)."""
    lib = _libc()
    if lib.renameat2(dirfd, os.fsencode(a), dirfd, os.fsencode(b), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), b)


def _temp_name(name: str, tag: str) -> str:
    return f".{name[:100]}.stockade-{tag}-{os.urandom(4).hex()}"


class _Dirs:
    """Each target's parent directory opened once: staging, commit, undo and clean-up all act on that
    directory, by name, even if a command swaps the path for a symlink meanwhile (by path, the clean-up
    once followed the swap and left its temp files behind)."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def of(self, path: str) -> tuple[int, str]:
        directory, name = os.path.split(path)
        fd = self.fds.get(directory)
        if fd is None:
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise _os_failed(path, exc) from None
            self.fds[directory] = fd
        return fd, name

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _parse_edits(msg: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    edits = _field(msg, "edits", list)
    if not edits or len(edits) > 1000:
        raise BadRequest("edits: expected 1..1000 edits")
    parsed = []
    for i, edit in enumerate(edits):
        if not isinstance(edit, dict):
            raise BadRequest(f"edits[{i}]: expected an object")
        path = _abs_path(edit)
        if "content" in edit:
            parsed.append((os.path.normpath(path), "write", {"content": _blob(edit, "content")}))
        elif "old" in edit:
            parsed.append((os.path.normpath(path), "replace",
                           {"old": _blob(edit, "old"), "new": _blob(edit, "new"),
                            "count": _count(edit, "count", 1, 1 << 20)}))
        elif edit.get("delete") is True:
            parsed.append((os.path.normpath(path), "delete", {}))
        else:
            raise BadRequest(f"edits[{i}]: needs content, old/new, or delete: true")
    return parsed


def op_apply_edits(msg: dict[str, Any]) -> dict[str, Any]:
    """Apply every edit or none.

    1. compute each file's new bytes in memory (reads only);
    2. stage: write each new content to a temp file next to its target
       (missing parent dirs made, when asked, and remembered);
    3. commit: swap each temp with its target (RENAME_EXCHANGE), rename new
       files in place, move deleted files to a temp name;
    4. on any failure undo the steps done, in reverse; then remove the temps.
    The kernel refuses what the policy forbids at step 2 or 3, before
    anything visible changed, or the undo puts it back.
    """
    edits = _parse_edits(msg)
    parents = msg.get("parents") is True
    state: dict[str, bytes | None] = {}  # path -> new content (None: deleted)
    original: dict[str, os.stat_result | None] = {}
    for path, kind, args in edits:
        if path not in state:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            except OSError as exc:
                raise _os_failed(path, exc) from None
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise OpFailed(path, errno.EINVAL, "not a regular file")
            original[path] = st
            if st is not None and kind != "write":
                try:
                    with open(path, "rb") as fh:
                        state[path] = fh.read()
                except OSError as exc:
                    raise _os_failed(path, exc) from None
            else:
                state[path] = None
        current = state[path]
        if kind == "write":
            state[path] = args["content"]
        elif kind == "delete":
            if current is None:
                raise OpFailed(path, errno.ENOENT, "cannot delete: no such file")
            state[path] = None
        else:
            if current is None:
                raise OpFailed(path, errno.ENOENT, "cannot edit: no such file")
            found = current.count(args["old"]) if args["old"] else 0
            if found == 0:
                raise OpFailed(path, None, "old text not found")
            if found != args["count"]:
                raise OpFailed(path, None, f"old text found {found} times, expected {args['count']}")
            state[path] = current.replace(args["old"], args["new"])

    dirs = _Dirs()
    temps: dict[str, tuple[int, str]] = {}  # target -> (its directory, the temp holding the new, then old, content)
    made_dirs: list[str] = []
    undo: list[Callable[[], None]] = []
    try:
        for path, content in state.items():
            if content is None:
                continue
            directory = os.path.dirname(path)
            if parents and not os.path.isdir(directory):
                missing = []
                probe = directory
                while probe and not os.path.lexists(probe):
                    missing.append(probe)
                    probe = os.path.dirname(probe)
                for d in reversed(missing):
                    try:
                        os.mkdir(d)
                    except OSError as exc:
                        raise _os_failed(path, exc) from None
                    made_dirs.append(d)
            dfd, name = dirs.of(path)
            temp = _temp_name(name, "new")
            st = original.get(path)
            mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600,
                             dir_fd=dfd)
            except OSError as exc:
                raise _os_failed(path, exc) from None
            temps[path] = (dfd, temp)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
                os.fchmod(fd, mode)
            except OSError as exc:
                raise _os_failed(path, exc) from None
            finally:
                os.close(fd)
        for path, content in state.items():
            existed = original.get(path) is not None
            try:
                if content is None:
                    if existed:
                        dfd, name = dirs.of(path)
                        grave = _temp_name(name, "old")
                        _renameat2(dfd, name, grave, RENAME_NOREPLACE)
                        temps[path] = (dfd, grave)
                        undo.append(lambda d=dfd, n=name, g=grave: _renameat2(d, g, n, 0))
                elif existed:
                    dfd, temp = temps[path]
                    name = os.path.basename(path)
                    _renameat2(dfd, temp, name, RENAME_EXCHANGE)
                    undo.append(lambda d=dfd, n=name, t=temp: _renameat2(d, t, n, RENAME_EXCHANGE))
                else:
                    dfd, temp = temps[path]
                    name = os.path.basename(path)
                    _renameat2(dfd, temp, name, RENAME_NOREPLACE)
                    undo.append(lambda d=dfd, n=name, t=temp: _renameat2(d, n, t, 0))
            except OSError as exc:
                raise _os_failed(path, exc) from None
    except BaseException:
        for step in reversed(undo):
            with contextlib.suppress(OSError):
                step()
        _remove(temps.values())
        dirs.close()
        for d in reversed(made_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        raise
    _remove(temps.values())  # after the commit they hold the old contents
    dirs.close()
    return {"changed": sorted(state), "deleted": sorted(p for p, c in state.items() if c is None)}


def _remove(temps: Any) -> None:
    for dfd, name in temps:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dfd)


_UMASK = [0o022]


def _umask() -> int:
    """The umask read once at startup (reading it means setting it: racy with threads)."""
    return _UMASK[0]


def op_write_file(msg: dict[str, Any]) -> dict[str, Any]:
    path = _abs_path(msg)
    data = _blob(msg, "data")
    op_apply_edits({"edits": [{"path": path, "content": msg["data"]}], "parents": msg.get("parents") is True})
    return {"written": len(data)}


FILE_OPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "read_file": op_read_file,
    "write_file": op_write_file,
    "apply_edits": op_apply_edits,
    "list_dir": op_list_dir,
    "search": op_search,
}


# -- processes -------------------------------------------------------------------------------------

def proc_table() -> dict[int, tuple[str, int, int, int]]:
    """pid -> (state, ppid, pgrp, session) for every process this worker can see."""
    table: dict[int, tuple[str, int, int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
            fields = data[data.rfind(b")") + 2:].split()
            table[int(name)] = (fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def descendants(table: dict[int, tuple[str, int, int, int]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class _SpawnError(OSError):
    def __init__(self, err: int, where: str, path: str) -> None:
        super().__init__(err, os.strerror(err), path)
        self.where, self.path = where, path


def _which(name: str, env: dict[str, str]) -> str:
    """The program execvpe would run for `name`, searching the command's PATH (not ours)."""
    if "/" in name:
        return name
    denied = False
    for directory in os.get_exec_path(env):
        candidate = os.path.join(directory or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
        denied = denied or os.path.lexists(candidate)
    raise _SpawnError(errno.EACCES if denied else errno.ENOENT, "exec", name)


# Ignored in the worker (by Python itself), so they would stay ignored across exec: reset them.
_RESET_SIGNALS = tuple(getattr(signal, n) for n in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, n))


def spawn(argv: list[str], env: dict[str, str], cwd: str, stdin: int, stdout: int, stderr: int) -> int:
    """posix_spawn the command in a new session; glibc uses CLONE_VFORK, so it costs a bare spawn.

    The worker's cwd is the child's: chdir first (only this thread spawns,
    and file operations use absolute paths). Every fd of the worker is
    close-on-exec (see `Worker.__init__`), so the child gets fds 0-2 only.
    """
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise _SpawnError(exc.errno or errno.ENOENT, "cwd", cwd) from None
    program = _which(argv[0], env)
    try:
        return os.posix_spawn(program, argv, env, setsid=True, setsigdef=_RESET_SIGNALS, setsigmask=(),
                              file_actions=[(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
                                            (os.POSIX_SPAWN_DUP2, stderr, 2)])
    except OSError as exc:
        raise _SpawnError(exc.errno or errno.ENOEXEC, "exec", argv[0]) from None


def _signal(pid: int, sig: int, *, group: bool = False) -> None:
    with contextlib.suppress(OSError):
        (os.killpg if group else os.kill)(pid, sig)


def _send_all(sock: socket.socket, data: bytes) -> None:
    """sendall on a non-blocking socket, waiting at most SEND_TIMEOUT for room (raises TimeoutError)."""
    view = memoryview(data)
    deadline = None
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            deadline = deadline or time.monotonic() + SEND_TIMEOUT
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [sock], [], left)[1]:
                raise TimeoutError("the host stopped reading") from None


class Channel:
    """One socket to the host: a frame reader, the fds received so far, a send lock."""

    def __init__(self, sock: socket.socket, *, control: bool = False) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.control = control
        self.reader = FrameReader()
        self.fds: list[int] = []
        self.lock = threading.Lock()
        self.busy: object = None  # the Command running on it, or "op" while a file op runs
        self.envs: list[dict[str, str] | None] = [None] * ENV_SLOTS  # validated, filled by the host
        self.closed = False  # no more sends (the host went away)
        self.dropped = False  # out of the loop: whoever frees it last closes the socket

    def send(self, msg: dict[str, Any]) -> None:
        self.send_bytes(encode(msg))  # ValueError past MAX_FRAME

    def send_bytes(self, data: bytes) -> None:
        """Send whole frames; a host that went away or stopped reading loses the channel."""
        with self.lock:
            if self.closed:
                return
            try:
                _send_all(self.sock, data)
            except OSError:  # the host walked away, or stopped reading: end the channel both ways
                self.closed = True
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)  # the loop then reads EOF and drops it

    def take_fds(self, n: int) -> list[int]:
        if n > len(self.fds):
            raise BadRequest(f"nfds: {n} announced, {len(self.fds)} received")
        taken, self.fds = self.fds[:n], self.fds[n:]
        return taken


class Command:
    def __init__(self, rid: int, chan: Channel, pid: int, timeout: float | None) -> None:
        self.rid, self.chan, self.pid = rid, chan, pid
        self.started = time.monotonic()
        self.deadline = self.started + timeout if timeout is not None else None
        self.timed_out = False
        self.killed = False
        self.pidfd: int | None = None


class Worker:
    def __init__(self, control_fd: int) -> None:
        for name in os.listdir("/proc/self/fd"):  # whatever the launcher left open: never to a command
            with contextlib.suppress(OSError, ValueError):
                if int(name) > 2:
                    os.set_inheritable(int(name), False)
        self.pid = os.getpid()
        # The network allowlist relay (sandbox.proxy_relay) forked us off before exec: our child, and the
        # session's way out through the proxy for its whole life. Sweeps and tree kills spare it.
        relay = os.environ.pop("STOCKADE_PROXY_RELAY_PID", "")
        self.spared: set[int] = {int(relay)} if relay.isdigit() else set()
        self.ep = select.epoll()
        self.devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        self.control = Channel(socket.socket(fileno=control_fd), control=True)
        self.channels: dict[int, Channel] = {}
        self.by_pidfd: dict[int, Command] = {}
        self.active: dict[int, Command] = {}  # pid -> command
        self.timed = 0  # active commands with a deadline
        self.polled: list[Command] = []  # no pidfd: exit polled with waitid
        self.reap_later: set[int] = set()
        self._sweep_due: float | None = None  # when idle, leftovers are swept at this time
        self._last_swept: set[int] = set()
        self.stopping = False
        self._add(self.control)

    def _add(self, chan: Channel) -> None:
        chan.sock.setblocking(False)  # recv follows epoll; sends wait for room in _send_all
        self.channels[chan.fd] = chan
        self.ep.register(chan.fd, select.EPOLLIN)

    def hello(self) -> None:
        status: dict[str, str] = {}
        with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                status[key] = value.strip()
        self.control.send({"hello": PROTOCOL, "pid": self.pid,
                           "cap_eff": int(status.get("CapEff", "ffffffffffffffff"), 16),
                           "no_new_privs": int(status.get("NoNewPrivs", "0")),
                           "seccomp": int(status.get("Seccomp", "0")),
                           "dumpable": int(_libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))})

    # -- loop ---------------------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stopping:
            try:
                events = self.ep.poll(self._wait())
            except InterruptedError:
                continue
            for fd, _ in events:
                chan = self.channels.get(fd)
                if chan is not None:
                    self._readable(chan)
                    continue
                cmd = self.by_pidfd.get(fd)
                if cmd is not None:
                    self._exited(cmd)
            if self.timed or self.polled or self.reap_later or self._sweep_due is not None:
                self._timers()
        self.shutdown()

    def _wait(self) -> float:
        if not (self.timed or self.polled or self.reap_later or self._sweep_due is not None):
            return -1  # the usual case between commands without a timeout: nothing to wake for
        now = time.monotonic()
        wakeups = [c.deadline for c in self.active.values() if c.deadline is not None and not c.timed_out]
        if self.polled:
            wakeups.append(now + 0.02)
        if self.reap_later:
            wakeups.append(now + 0.05)
        if not self.active and self._sweep_due is not None:
            wakeups.append(self._sweep_due)
        # Capped: epoll takes at most 2**31-1 ms, and a timeout of months is a valid request.
        return min(max(0.0, min(wakeups) - now), MAX_WAIT) if wakeups else -1

    def _timers(self) -> None:
        now = time.monotonic()
        for cmd in list(self.active.values()):
            if cmd.deadline is not None and not cmd.timed_out and now >= cmd.deadline:
                cmd.timed_out = True
                self.tree_kill(cmd)
        for cmd in list(self.polled):
            try:
                done = os.waitid(os.P_PID, cmd.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            except ChildProcessError:
                done = True
            if done:
                self.polled.remove(cmd)
                self._exited(cmd)
        if self.reap_later:
            self._reap()
        if not self.active and self._sweep_due is not None and now >= self._sweep_due:
            self._sweep_due = None
            self.sweep()

    def _readable(self, chan: Channel) -> None:
        try:
            data, anc, flags, _ = chan.sock.recvmsg(RECV_CHUNK, _ANC_SPACE, _CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError:
            data, anc, flags = b"", [], 0
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                chan.fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
        if flags & _CTRUNC:  # fds were lost: which request they belonged to cannot be told any more
            self._error(chan, None, "bad-request", "too many fds in one message")
            self._drop(chan)
            return
        if not data:
            self._drop(chan)
            return
        for msg in chan.reader.feed(data):
            self._dispatch(chan, msg)
            if chan.closed:
                return

    def _drop(self, chan: Channel) -> None:
        """The host closed this channel: kill what runs on it; the control channel ends the worker."""
        if chan.fd in self.channels:
            del self.channels[chan.fd]
            with contextlib.suppress(OSError):
                self.ep.unregister(chan.fd)
        with chan.lock:
            chan.closed = chan.dropped = True
            busy = chan.busy
            if busy is None:
                chan.sock.close()  # else closed when its command or file op ends
        for fd in chan.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        chan.fds = []
        if isinstance(busy, Command):
            busy.killed = True
            self.tree_kill(busy)
        if chan.control:
            self.stopping = True

    def _error(self, chan: Channel, rid: int | None, kind: str, message: str) -> None:
        """Answer a refused request. Never on the control socket: the host does not read it after the hello."""
        if chan.control:
            sys.stderr.write(f"stockade worker: control request refused ({kind}): {message}\n")
            sys.stderr.flush()
        else:
            chan.send({"id": rid, "ok": False, "error": {"kind": kind, "message": message}})

    def _dispatch(self, chan: Channel, msg: Any) -> None:
        if isinstance(msg, FrameError):
            self._error(chan, None, "bad-frame", msg.message)
            return
        rid = msg.get("id") if isinstance(msg, dict) else None
        if not isinstance(rid, int) or isinstance(rid, bool) or not 0 <= rid < 1 << 63:
            rid = None  # (the exit record holds it as an unsigned 64-bit number)
        fds: list[int] = []
        try:
            if not isinstance(msg, dict):
                raise BadRequest("a request is a JSON object")
            fds = chan.take_fds(_count(msg, "nfds", 0, MAX_FDS))
            op = msg.get("op")
            if chan.control:
                if op == "attach":
                    if len(fds) != 1 or len(self.channels) > MAX_CHANNELS:
                        raise BadRequest("attach: one socket fd, and at most "
                                         f"{MAX_CHANNELS} channels")
                    self._add(Channel(socket.socket(fileno=fds.pop())))
                elif op == "shutdown":
                    self.stopping = True
                else:
                    raise BadRequest(f"op {op!r} is not a control operation")
                return
            if rid is None:
                raise BadRequest("id: expected an integer in 0..2**63-1")
            if op == "kill":
                if isinstance(chan.busy, Command) and chan.busy.rid == rid:
                    chan.busy.killed = True
                    self.tree_kill(chan.busy)
                return
            if chan.busy is not None:
                raise BadRequest("channel busy: one request at a time")
            if op == "run":
                taken, fds = fds, []  # _run owns (and closes) them now
                self._run(chan, rid, msg, taken)
            elif op == "ping":
                chan.send({"id": rid, "ok": True, "pid": self.pid, "active": len(self.active)})
            elif op in FILE_OPS:
                chan.busy = "op"
                threading.Thread(target=self._file_op, args=(chan, rid, op, msg), daemon=True).start()
            else:
                raise BadRequest(f"unknown op {op!r}")
        except BadRequest as exc:
            self._error(chan, rid, "bad-request", str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must not take the session down
            self._error(chan, rid, "internal", repr(exc))
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _file_op(self, chan: Channel, rid: int, op: str, msg: dict[str, Any]) -> None:
        try:
            reply = {"id": rid, "ok": True, **FILE_OPS[op](msg)}
        except OpFailed as exc:
            reply = {"id": rid, "ok": False, "error": {
                "kind": "os" if exc.errno is not None else "content", "errno": exc.errno,
                "errname": errno.errorcode.get(exc.errno or 0), "path": exc.path, "message": exc.message}}
        except BadRequest as exc:
            reply = {"id": rid, "ok": False, "error": {"kind": "bad-request", "message": str(exc)}}
        except OSError as exc:
            reply = {"id": rid, "ok": False, "error": {
                "kind": "os", "errno": exc.errno, "errname": errno.errorcode.get(exc.errno or 0),
                "path": exc.filename if isinstance(exc.filename, str) else None,
                "message": exc.strerror or str(exc)}}
        except Exception as exc:  # noqa: BLE001
            reply = {"id": rid, "ok": False, "error": {"kind": "internal", "message": repr(exc)}}
        with chan.lock:
            # Free before the reply leaves: the host may send its next request as soon as it has it.
            chan.busy = None
            if chan.dropped:
                chan.sock.close()
                return
        try:
            chan.send(reply)
        except ValueError as exc:  # too big for a frame
            chan.send({"id": rid, "ok": False, "error": {"kind": "internal", "message": str(exc)}})

    def _run(self, chan: Channel, rid: int, msg: dict[str, Any], fds: list[int]) -> None:
        try:
            argv = _field(msg, "argv", list)
            if not argv or not argv[0] or not all(isinstance(a, str) and "\0" not in a for a in argv):
                raise BadRequest("argv: a non-empty list of strings without NUL")
            env = _env(chan, msg)
            cwd = _path(msg, "cwd")
            timeout = _field(msg, "timeout", (int, float), optional=True)
            if timeout is not None and not 0 <= timeout < 1e9:
                raise BadRequest("timeout: expected seconds >= 0")
            if len(fds) not in (2, 3):
                raise BadRequest("run: needs the stdout and stderr pipes (and optionally stdin)")
            stdin = fds[2] if len(fds) == 3 else self.devnull
            try:
                pid = spawn(argv, env, cwd, stdin, fds[0], fds[1])
            except _SpawnError as exc:
                chan.send({"id": rid, "ok": False, "error": {
                    "kind": "spawn", "where": exc.where, "errno": exc.errno,
                    "errname": errno.errorcode.get(exc.errno or 0), "path": exc.path, "message": exc.strerror}})
                return
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        cmd = Command(rid, chan, pid, timeout)
        chan.busy = cmd
        self.active[cmd.pid] = cmd
        if cmd.deadline is not None:
            self.timed += 1
        self._sweep_due = None
        try:
            cmd.pidfd = os.pidfd_open(cmd.pid)
            self.by_pidfd[cmd.pidfd] = cmd
            self.ep.register(cmd.pidfd, select.EPOLLIN)
        except (AttributeError, OSError):
            cmd.pidfd = None
            self.polled.append(cmd)
        if msg.get("notify") is True:
            chan.send({"id": rid, "ev": "started", "pid": cmd.pid})

    def _exited(self, cmd: Command) -> None:
        """The main process exited: kill what is left of its group, reap it, report; then tidy up
        (the host waits for the report: nothing else comes before it)."""
        _signal(cmd.pid, signal.SIGKILL, group=True)  # the zombie keeps the group id from being reused
        try:
            _, status, ru = os.wait4(cmd.pid, 0)
        except ChildProcessError:
            status, ru = 255 << 8, None
        duration = time.monotonic() - cmd.started
        del self.active[cmd.pid]
        if cmd.deadline is not None:
            self.timed -= 1
        chan = cmd.chan
        chan.send_bytes(encode_exit(cmd.rid, cmd.pid, status, duration, ru.ru_utime if ru else 0.0,
                                    ru.ru_stime if ru else 0.0, ru.ru_maxrss if ru else 0, cmd.timed_out,
                                    cmd.killed))
        with chan.lock:
            chan.busy = None
            if chan.dropped:
                chan.sock.close()
        if cmd.pidfd is not None:
            del self.by_pidfd[cmd.pidfd]
            with contextlib.suppress(OSError):
                self.ep.unregister(cmd.pidfd)
            os.close(cmd.pidfd)
            cmd.pidfd = None
        if not self.active:
            self._sweep_due = time.monotonic() + IDLE_SWEEP

    def tree_kill(self, cmd: Command) -> None:
        """SIGKILL a running command's whole tree: stopped first, so nothing forks or reparents meanwhile."""
        _signal(cmd.pid, signal.SIGSTOP, group=True)
        found: set[int] = set()
        others = {pid for pid in self.active if pid != cmd.pid}
        for _ in range(10):
            table = proc_table()
            mine = descendants(table, self.pid) - self.spared
            targets = {cmd.pid} | descendants(table, cmd.pid)
            targets |= {p for p in mine if table[p][2] == cmd.pid or table[p][3] == cmd.pid}
            if not others:
                targets |= mine  # the only command: every orphan under the worker is its own
            else:
                spared = set(others)
                for other in others:
                    spared |= descendants(table, other)
                targets -= spared
            fresh = targets - found
            if not fresh:
                break
            for pid in fresh:
                _signal(pid, signal.SIGSTOP)
            found |= fresh
        _signal(cmd.pid, signal.SIGKILL, group=True)
        for pid in found:
            _signal(pid, signal.SIGKILL)
        self.reap_later |= found - set(self.active)

    def sweep(self, *, everything: bool = False) -> None:
        """Kill every process under the worker that is not a running command's (all of them when idle)."""
        table = proc_table()
        mine = descendants(table, self.pid)
        if not everything:
            mine -= self.spared
            for pid in self.active:
                mine -= {pid} | descendants(table, pid)
        if not mine:
            return
        if not self.active and mine != self._last_swept:
            self._sweep_due = time.monotonic() + IDLE_SWEEP  # once more: zombies reparented meanwhile
        self._last_swept = mine
        for pid in mine:
            _signal(pid, signal.SIGSTOP)
        for pid in mine:
            _signal(pid, signal.SIGKILL)
        self.reap_later |= mine - set(self.active)
        self._reap()

    def _reap(self) -> None:
        for pid in list(self.reap_later):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            except ChildProcessError:
                pass  # not (or no longer) our child: its own parent reaps it
            self.reap_later.discard(pid)

    def shutdown(self) -> None:
        for cmd in list(self.active.values()):
            cmd.killed = True
            self.tree_kill(cmd)
        self.sweep(everything=True)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    time.sleep(0.01)
            except ChildProcessError:
                break


def harden() -> None:
    """Not dumpable (commands cannot read or write our memory, environ or fds through /proc);
    a child subreaper (orphaned grandchildren reparent to us, so tree kills find them)."""
    lib = _libc()
    lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    for option, value in ((PR_SET_DUMPABLE, 0), (PR_SET_CHILD_SUBREAPER, 1)):
        if lib.prctl(option, value, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            sys.stderr.write(f"stockade worker: prctl({option}) failed: {os.strerror(err)}\n")
            os._exit(125)
    lib.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    mask = os.umask(0o022)
    os.umask(mask)
    _UMASK[0] = mask


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        sys.stderr.write("usage: python -m sandbox.worker CONTROL_FD (started by sandbox.session)\n")
        sys.exit(2)
    harden()
    worker = Worker(int(args[0]))
    worker.hello()
    code = 0
    try:
        worker.run()
    except BaseException:  # noqa: BLE001 - a bug: say what (the host shows our stderr tail), then go
        import traceback

        traceback.print_exc()
        code = 70
    finally:
        sys.stderr.flush()
        os._exit(code)  # daemon file-op threads may be blocked in a syscall: do not wait for them


if __name__ == "__main__":
    main()

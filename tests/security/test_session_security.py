"""Confined sessions under attack: the worker, its protocol, and what commands and file operations reach.

Uses this suite's `box` (a victim host under /srv: git workspace, outside
victim, fake HOME with secrets), `backend` and `mode` fixtures. Every attack
is judged from the host side: file bytes and modes, host processes, what a
host server received, the worker's fds and environ read by the host.
"""

from __future__ import annotations

import array
import base64
import contextlib
import faulthandler
import hashlib
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from policies.model import Limits, Mode, SandboxPolicy
from sandbox.session import FileOpError, Session, SessionError, _Chan
from sandbox.worker import BINARY, EXIT_RECORD, HEADER, MAX_FDS, MAX_FRAME

CANARY = os.environ.get("STOCKADE_SECTEST_CANARY") == "1"
TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def _hang_guard() -> Iterator[None]:
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _policy(box: Any, mode: str = "workspace-write") -> SandboxPolicy:
    return SandboxPolicy(mode=Mode("full-access" if CANARY else mode), workspace=str(box.ws),
                         limits=Limits(timeout=TIMEOUT))


@pytest.fixture
def session(box: Any, backend: str) -> Iterator[Session]:
    s = Session(_policy(box), backend=backend, host=box.host).start()
    try:
        yield s
    finally:
        s.close()


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Kind, mode, size, mtime and content hash of everything under root (what an attack could change)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = ""
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            out[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size,
                                                st.st_mtime_ns, digest)
    return out


def survivors(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if (proc.pid != os.getpid() and proc.info["status"] != psutil.STATUS_ZOMBIE
                    and marker in " ".join(proc.info["cmdline"] or ())):
                found.append(proc.pid)
    return found


def wait_gone(marker: str, timeout: float = 3.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := survivors(marker)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def worker_fds(session: Session) -> list[str]:
    pid = session.worker_pid
    assert pid is not None
    return sorted(os.listdir(f"/proc/{pid}/fd"), key=int)


# ---------------------------------------------------------------- the protocol


def _frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def _replies(chan: _Chan, count: int, timeout: float = 5.0) -> list[Any]:
    import select

    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        if select.select([chan.fd], [], [], deadline - time.monotonic())[0]:
            got.extend(chan.recv())
    return got


def test_malformed_requests_get_errors_not_crashes(session: Session) -> None:
    pid, fds_before = session.worker_pid, worker_fds(session)
    w, chan = session._acquire()
    pipe_r, pipe_w = os.pipe()
    try:
        bad: list[bytes] = [
            b"not json at all",
            b"\xff\xfe\x00",
            b"[1, 2, 3]",
            b'"a string"',
            b'{"op": "no-such-op", "id": 1}',
            b'{"op": "run", "id": 2, "argv": "ls", "env": {}, "cwd": "/", "nfds": 0}',
            b'{"op": "run", "id": 3, "argv": ["ls"], "env": {"A": 1}, "cwd": "/", "nfds": 0}',
            b'{"op": "run", "id": 4, "argv": ["ls"], "env": {}, "cwd": "/\\u0000x", "nfds": 0}',
            b'{"op": "run", "id": 5, "argv": ["ls"], "env": {}, "cwd": "/", "timeout": "soon", "nfds": 0}',
            b'{"op": "run", "id": 6, "argv": ["ls"], "env": {}, "cwd": "/", "nfds": 2}',  # fds announced, none sent
            b'{"op": "run", "id": 7, "argv": [], "env": {}, "cwd": "/", "nfds": 0}',
            b'{"op": "run", "id": 8, "argv": ["ls"], "env": {}, "cwd": "/", "nfds": 99}',
            b'{"op": "read_file", "id": 9, "path": 42}',
            b'{"op": "write_file", "id": 10, "path": "/tmp/x", "data": "***not base64***"}',
            b'{"op": "write_file", "id": 11, "path": "relative.txt", "data": ""}',
            b'{"op": "apply_edits", "id": 12, "edits": [{"path": "/tmp/x"}]}',
            b'{"op": "search", "id": 13, "pattern": "(", "path": "/"}',
            b'{"op": "list_dir", "id": 14, "path": "/", "max_entries": -1}',
            b'{"op": "attach", "id": 15, "nfds": 0}',
            b'{"op": "kill", "id": true}',
            b'{"op": "run", "id": 16, "argv": ["ls"], "env": {"A=B": "c"}, "cwd": "/", "nfds": 0}',
            b'{"op": "run", "id": 17, "argv": ["ls"], "env": {}, "env_slot": 99, "cwd": "/", "nfds": 0}',
            b'{"op": "run", "id": 18, "argv": ["ls"], "env_slot": "0", "cwd": "/", "nfds": 0}',
            b'{"op": "run", "id": -1, "argv": ["ls"], "env": {}, "cwd": "/", "nfds": 0}',
            b'{"op": "ping", "id": 18446744073709551616}',
        ]
        # Binary records are the worker's to send: one sent to it is refused, known size or not.
        binary = [HEADER.pack(BINARY | EXIT_RECORD.size) + bytes(EXIT_RECORD.size),
                  HEADER.pack(BINARY | 7) + bytes(7)]
        for body in bad:
            chan.sock.setblocking(True)
            chan.sock.sendall(_frame(body))
            chan.sock.setblocking(False)
            reply = _replies(chan, 1)
            assert len(reply) == 1 and reply[0].get("ok") is False, (body, reply)
            assert reply[0]["error"]["kind"] in ("bad-frame", "bad-request", "content"), (body, reply)
        for raw in binary:
            chan.sock.setblocking(True)
            chan.sock.sendall(raw)
            chan.sock.setblocking(False)
            reply = _replies(chan, 1)
            assert len(reply) == 1 and reply[0].get("ok") is False, (raw, reply)
        # Fds sent along with a malformed request are closed by the worker, not kept.
        chan.sock.sendmsg([_frame(b'{"op": "run", "id": 20, "argv": 5, "nfds": 2}')],
                          [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pipe_r, pipe_w]))])
        assert _replies(chan, 1)[0]["error"]["kind"] == "bad-request"
        # A frame over the size limit is skipped whole; the next one is read normally.
        chan.sock.setblocking(True)
        chan.sock.sendall(HEADER.pack(MAX_FRAME + 1))
        chunk = b"x" * (1 << 20)
        left = MAX_FRAME + 1
        while left:
            n = chan.sock.send(chunk[:left])
            left -= n
        chan.sock.sendall(_frame(b'{"op": "ping", "id": 30}'))
        chan.sock.setblocking(False)
        replies = _replies(chan, 2, timeout=20)
        assert replies[0]["error"]["kind"] == "bad-frame" and replies[1] == {
            "id": 30, "ok": True, "pid": replies[1]["pid"], "active": 0}
        session._release(w, chan, True)
    finally:
        os.close(pipe_r)
        os.close(pipe_w)
    # Too many fds in one message: the channel is dropped; the worker lives on.
    w, chan = session._acquire()
    pipes = [os.pipe() for _ in range(MAX_FDS + 2)]
    try:
        flat = [fd for pair in pipes for fd in pair][:MAX_FDS + 4]
        chan.sock.sendmsg([_frame(b'{"op": "ping", "id": 40}')],
                          [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", flat))])
        time.sleep(0.2)
        session._release(w, chan, False)
    finally:
        for r, wr in pipes:
            os.close(r)
            os.close(wr)
    assert session.ping()["ok"] and session.worker_pid == pid and session.restarts == 0
    r = session.exec(["echo", "still confined"])
    assert r.stdout == b"still confined\n"
    time.sleep(0.1)
    assert len(worker_fds(session)) <= len(fds_before) + 1, (fds_before, worker_fds(session))


def test_oversize_request_refused_on_host(session: Session) -> None:
    with pytest.raises(ValueError):
        session.write_file("big.bin", b"\0" * (MAX_FRAME // 4 * 3 + 1024))
    assert session.ping()["ok"]


# ---------------------------------------------------------------- the worker as a target


def test_worker_memory_fds_and_environ_out_of_reach(session: Session, box: Any) -> None:
    script = r"""
import os, ctypes
ppid = os.getppid()
for path, flags in (("mem", os.O_RDWR), ("mem", os.O_RDONLY), ("environ", os.O_RDONLY), ("fd/0", os.O_RDONLY),
                    ("fd/3", os.O_RDWR), ("root/etc/hostname", os.O_RDONLY), ("cwd/x", os.O_RDONLY)):
    try:
        os.close(os.open(f"/proc/{ppid}/{path}", flags))
        print("OPENED", path)
    except OSError as exc:
        print("denied", path, exc.errno)
libc = ctypes.CDLL(None, use_errno=True)
print("ptrace", libc.ptrace(16, ppid, 0, 0), ctypes.get_errno())  # PTRACE_ATTACH
"""
    r = session.exec([sys.executable, "-I", "-S", "-c", script], env=box.env)
    assert r.exit_code == 0, r.stderr
    assert b"OPENED" not in r.stdout, r.stdout
    assert b"ptrace -1" in r.stdout
    # What the worker holds: no secret in its environ or command line (read from the host, as root).
    pid = session.worker_pid
    assert pid is not None
    held = Path(f"/proc/{pid}/environ").read_bytes() + Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not box.leaked(held.decode("utf-8", "replace"))


def test_commands_inherit_only_stdio(session: Session) -> None:
    r = session.exec(["python3", "-I", "-S", "-c",
                      "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))"])
    assert r.stdout.strip() in (b"[0, 1, 2]", b"[0, 1, 2, 3]"), r.stdout  # 3: listdir's own
    r = session.exec(["sh", "-c", "ls -l /proc/$$/fd"])
    assert b"socket:" not in r.stdout


def test_secret_env_never_reaches_commands(session: Session, box: Any) -> None:
    r = session.exec(["env"], env=box.env)
    assert r.exit_code == 0 and not box.leaked(r.stdout.decode())


def test_command_killing_its_worker_gets_a_confined_successor(session: Session, box: Any) -> None:
    old = session.worker_pid
    with pytest.raises(SessionError):
        session.exec(["sh", "-c", f"kill -9 $PPID; sleep {box.marker}"])
    assert not wait_gone(box.marker)
    r = session.exec(["sh", "-c", f"grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; "
                                  f"echo pwned > {box.victim}"])
    assert session.worker_pid not in (None, old) and session.restarts == 1
    assert b"CapEff:\t0000000000000000" in r.stdout and b"NoNewPrivs:\t1" in r.stdout
    assert b"Seccomp:\t2" in r.stdout
    assert box.victim.read_text() == f"victim file {box.marker}\n"


# ---------------------------------------------------------------- filesystem, via commands and file operations


def test_writes_outside_and_protected_fail(box: Any, backend: str, mode: str) -> None:
    before_outside, before_home, before_git = tree(box.outside), tree(box.home), tree(box.ws / ".git")
    before_ws = tree(box.ws)
    with Session(_policy(box, mode), backend=backend, host=box.host) as s:
        s.exec(["sh", "-c", f"""
            echo pwned > {box.victim}; echo pwned >> {box.home}/.bashrc; chmod 777 {box.victim}
            echo pwned > .git/config; echo 'exit 1' > .git/hooks/pre-commit; touch .git/new
            mv .git .git-moved; ln {box.victim} hard; echo pwned > hard; ln -s {box.victim} soft
            echo pwned > soft; rm -f {box.home}/.profile
        """], env=box.env)
        if mode == "workspace-write":
            (box.ws / "link-out").symlink_to(box.victim)  # a link the host made, pointing outside
        attempts: list[tuple[str, dict[str, Any]]] = [
            ("write_file", {"path": box.victim, "data": "pwned"}),
            ("write_file", {"path": box.home / ".bashrc", "data": "pwned"}),
            ("write_file", {"path": box.ws / ".git" / "config", "data": "pwned"}),
            ("write_file", {"path": box.ws / ".git" / "hooks" / "post-checkout", "data": "pwned"}),
            ("write_file", {"path": box.ws / ".stockade" / "config.toml", "data": "x", "parents": True}),
        ]
        for op, kw in attempts:
            path = kw.pop("path")
            with pytest.raises(FileOpError) as err:
                getattr(s, op)(path, **kw)
            if not CANARY:
                assert err.value.errno is not None
        with pytest.raises(FileOpError):
            s.apply_edits([{"path": "src/app.py", "old": "a + b", "new": "a - b"},
                           {"path": ".git/HEAD", "content": "ref: refs/heads/evil\n"}])
        with pytest.raises(FileOpError):
            s.apply_edits([{"path": "README.md", "delete": True}, {"path": str(box.victim), "delete": True}])
        if mode == "workspace-write":
            s.write_file("link-out", "replaced the link, not the victim\n")
    assert tree(box.outside) == before_outside
    assert tree(box.home) == before_home
    assert tree(box.ws / ".git") == before_git
    assert (box.ws / "src" / "app.py").read_text().count("a + b") == 1  # the batch changed nothing
    assert (box.ws / "README.md").exists()
    if mode == "read-only":
        assert tree(box.ws) == before_ws
    leftovers = [p for p in box.ws.rglob("*") if ".stockade-" in p.name]
    assert not leftovers


def test_deny_read_via_file_operations(session: Session, box: Any) -> None:
    secret_files = [box.home / ".ssh" / "id_rsa", box.home / ".aws" / "credentials", box.home / ".netrc",
                    box.home / ".gnupg" / "private-keys-v1.d" / "key.key"]
    texts: list[str] = []
    for path in secret_files:
        try:
            texts.append(base64.b64encode(session.read_file(path).data).decode())
            texts.append(session.read_file(path).data.decode("utf-8", "replace"))
        except FileOpError as exc:
            texts.append(str(exc))
            if not CANARY:
                assert exc.denial is not None and exc.denial.kind == "read", exc
    session.exec(["ln", "-s", str(secret_files[0]), "key-link"])
    with contextlib.suppress(FileOpError):
        texts.append(session.read_file("key-link").data.decode("utf-8", "replace"))
    for directory in (box.home / ".ssh", box.home / ".aws"):
        with contextlib.suppress(FileOpError):
            texts.append(" ".join(e.name for e in session.list_dir(directory)))
    found = session.search("S3CRET", str(box.home))
    texts.extend(m.text for m in found.matches)
    with contextlib.suppress(FileOpError):
        texts.extend(m.text for m in session.search("S3CRET", "/proc/self/root" + str(box.home)).matches)
    leaked = box.leaked("\n".join(texts))
    assert not leaked, leaked


def test_timeout_leaves_no_survivor(session: Session, box: Any) -> None:
    m = box.marker
    (box.ws / "sleeper.py").write_text("import signal, time\nsignal.signal(15, signal.SIG_IGN)\ntime.sleep(600)\n")
    sleeper = f"{sys.executable} -I -S sleeper.py {m}"
    script = (f"trap '' TERM HUP; (setsid {sleeper} &); nohup setsid {sleeper} >/dev/null 2>&1 & "
              f"sh -c '{sleeper}' & {sleeper}")
    seen: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(seen) < 4:
            seen[:] = survivors(m)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    r = session.exec(["sh", "-c", script], timeout=2.0)
    watcher.join(10)
    assert r.timed_out and len(seen) >= 4, (seen, r.stderr)
    assert not wait_gone(m), "a descendant outlived the command's timeout"


def test_network_off(session: Session) -> None:
    servers = []
    addrs = ["127.0.0.1"] + [a.address for nic, entries in psutil.net_if_addrs().items() if nic != "lo"
                             for a in entries if a.family == socket.AF_INET]
    for addr in addrs:
        tcp = socket.socket()
        tcp.bind((addr, 0))
        tcp.listen(4)
        tcp.setblocking(False)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((addr, 0))
        udp.setblocking(False)
        servers.append((addr, tcp, udp))
    try:
        targets = [(a, t.getsockname()[1], u.getsockname()[1]) for a, t, u in servers]
        script = f"""
import socket
for addr, tport, uport in {targets!r}:
    try:
        s = socket.socket(); s.settimeout(1); s.connect((addr, tport)); print("CONNECTED", addr)
    except OSError as exc:
        print("refused", addr, exc)
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"leak", (addr, uport))
    except OSError as exc:
        print("refused udp", addr, exc)
"""
        r = session.exec(["python3", "-I", "-S", "-c", script])
        time.sleep(0.1)
        for _, tcp, udp in servers:
            with pytest.raises(BlockingIOError):
                tcp.accept()
            with pytest.raises(BlockingIOError):
                udp.recv(100)
        assert b"CONNECTED" not in r.stdout
    finally:
        for _, tcp, udp in servers:
            tcp.close()
            udp.close()


def test_worker_reports_are_checked(box: Any, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that reports capabilities or no NoNewPrivs is never used (nothing runs unconfined)."""
    if CANARY:
        pytest.skip("full-access: nothing to check")
    from sandbox import session as mod

    real = mod._Worker.await_hello

    def lying(self: Any, timeout: float) -> dict[str, Any]:
        hello = real(self, timeout)
        return {**hello, "cap_eff": 1, "no_new_privs": 0}

    monkeypatch.setattr(mod._Worker, "await_hello", lying)
    s = Session(_policy(box), backend=backend, host=box.host)
    from sandbox.backends.base import SandboxSetupError

    with pytest.raises(SandboxSetupError, match="not confined"):
        s.start()
    s.close()


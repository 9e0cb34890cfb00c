"""Confined sessions (`sandbox.Session`): one worker, many commands; checked from the host side.

Each backend that works here gets the same tests. Victims and workspaces live
under /srv (not /tmp): a private /tmp in the sandbox would hide them and make
a write outside the writable roots fail for the wrong reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import trio
from exec_support import backend_unavailable, confining_backend_params

from policies.host import HostFacts
from policies.model import Limits, Mode, SandboxPolicy
from sandbox.backends.base import SandboxSetupError
from sandbox.detect import host_facts
from sandbox.session import FileOpError, Session, SessionError
from sandbox.worker import ENV_SLOTS

BASE = Path(os.environ.get("STOCKADE_SESSION_TEST_BASE", "/srv/stockade-session-test"))
RUN_TIMEOUT = 20.0


@pytest.fixture(autouse=True)
def _hang_guard() -> Iterator[None]:
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@dataclasses.dataclass
class Box:
    root: Path
    ws: Path
    outside: Path
    victim: Path
    home: Path
    secret: str
    host: HostFacts
    marker: str

    def policy(self, **limits: object) -> SandboxPolicy:
        return SandboxPolicy(mode=Mode.WORKSPACE_WRITE, workspace=str(self.ws),
                             limits=Limits(**{"timeout": RUN_TIMEOUT, **limits}))  # type: ignore[arg-type]


@pytest.fixture
def box() -> Iterator[Box]:
    BASE.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="box-", dir=BASE))
    ws, outside, home = root / "ws", root / "outside", root / "home"
    for d in (ws / ".git", outside, home / ".ssh"):
        d.mkdir(parents=True)
    (ws / ".git" / "config").write_text("[core]\n")
    (ws / "README.md").write_text("hello session\n")
    victim = outside / "victim.txt"
    victim.write_text("victim\n")
    secret = "S3CRET" + uuid.uuid4().hex
    (home / ".ssh" / "id_rsa").write_text(secret + "\n")
    host = dataclasses.replace(host_facts(), home=str(home))
    b = Box(root, ws, outside, victim, home, secret, host, "600." + str(uuid.uuid4().int % 10**9).zfill(9))
    try:
        yield b
    finally:
        for proc in with_marker(b.marker):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):
            BASE.rmdir()  # only when no other run is using it


@pytest.fixture(params=confining_backend_params())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def session(backend: str, box: Box) -> Iterator[Session]:
    s = Session(box.policy(), backend=backend, host=box.host)
    s.start()
    try:
        yield s
    finally:
        s.close()


def with_marker(mark: str) -> list[psutil.Process]:
    """Live host processes whose command line has `mark` (never this test process)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if (proc.pid != os.getpid() and proc.info["status"] != psutil.STATUS_ZOMBIE
                    and mark in " ".join(proc.info["cmdline"] or ())):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def gone(mark: str, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while with_marker(mark):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---------------------------------------------------------------- results, like sandbox.run


@pytest.mark.parametrize("code", [0, 7])
def test_exit_codes(session: Session, backend: str, code: int) -> None:
    r = session.exec(["sh", "-c", f"echo out; echo err >&2; exit {code}"])
    assert (r.exit_code, r.signal, r.stdout, r.stderr) == (code, None, b"out\n", b"err\n")
    assert r.backend == backend and r.protections["filesystem-write"] == "enforced"


def test_signal_reported(session: Session) -> None:
    r = session.exec(["sh", "-c", "kill -TERM $$"])
    assert (r.exit_code, r.signal, r.returncode) == (None, signal.SIGTERM, 143)


def test_same_result_as_sandbox_run(session: Session, box: Box, backend: str) -> None:
    from sandbox import run

    argv = ["sh", "-c", "echo $STOCKADE_POLICY $TMPDIR; pwd; exit 3"]
    a = session.exec(argv)
    b = run(argv, box.policy(), backend=backend, host=box.host)
    assert (a.exit_code, a.signal, a.stdout, a.stderr) == (b.exit_code, b.signal, b.stdout, b.stderr)
    assert a.stdout.split(b"\n")[1].decode() == os.path.realpath(box.ws)


def test_no_timeout_in_policy(backend: str, box: Box) -> None:
    policy = dataclasses.replace(box.policy(), limits=Limits(timeout=None))
    with Session(policy, backend=backend, host=box.host) as s:
        assert s.exec(["echo", "no limit"]).stdout == b"no limit\n"
        assert s.exec(["sleep", "5"], timeout=0.3).timed_out



def test_a_timeout_of_years_is_a_timeout_not_a_crash(session: Session) -> None:
    """The worker's loop once passed the deadline straight to epoll, which takes at most 2**31-1 ms."""
    pid = session.worker_pid
    assert session.exec(["true"], timeout=3e8).exit_code == 0
    assert session.exec(["echo", "alive"]).stdout == b"alive\n"
    assert session.worker_pid == pid and session.restarts == 0

def test_not_found_and_bad_cwd(session: Session, box: Box) -> None:
    r = session.exec(["no-such-command-xyz"])
    assert r.exit_code == 127 and b"no-such-command-xyz" in r.stderr
    with pytest.raises(SandboxSetupError):
        session.exec(["true"], cwd="does/not/exist")
    (box.ws / "sub").mkdir()
    assert session.exec(["pwd"], cwd="sub").stdout.decode().strip() == str((box.ws / "sub").resolve())


def test_env_is_the_policys(session: Session) -> None:
    r = session.exec(["env"], env={"PATH": os.environ["PATH"], "HOME": "/h", "OPENAI_API_KEY": "sk-leak",
                                   "LANG": "C.UTF-8"})
    env = dict(line.split("=", 1) for line in r.stdout.decode().splitlines())
    assert "OPENAI_API_KEY" not in env and env["HOME"] == "/h" and env["STOCKADE_SANDBOX"] == "1"



def test_env_sent_once_per_channel_and_always_right(session: Session) -> None:
    """Envs travel once per channel slot; cycling through more envs than slots, and a refused
    request in between, never hands a command the wrong environment."""
    def seen(marker: str | None) -> str | None:
        env = {"PATH": os.environ["PATH"], "HOME": "/h"}
        if marker is not None:
            env["LANG"] = marker
        r = session.exec(["sh", "-c", 'echo "${LANG-unset}"'], env=env)
        return r.stdout.decode().strip()

    markers = [f"C.m{i}" for i in range(ENV_SLOTS + 2)]
    for _ in range(3):
        for marker in markers:
            assert seen(marker) == marker
    assert seen(None) == "unset"
    w, chan = session._acquire()
    held = [slot for slot in chan.env_slots if slot is not None]
    session._release(w, chan, True)
    assert held, "the channel remembers what it sent"
    assert session.exec(["no-such-command-xyz"]).exit_code == 127  # a refused request: slots forgotten
    w, chan = session._acquire()
    assert chan.env_slots == [None] * ENV_SLOTS
    session._release(w, chan, True)
    for marker in markers[:2]:
        assert seen(marker) == marker

def test_streaming(session: Session) -> None:
    seen: list[tuple[float, str, bytes]] = []
    start = time.monotonic()
    r = session.exec(["sh", "-c", "echo first; sleep 0.6; echo second >&2"],
                     on_output=lambda stream, chunk: seen.append((time.monotonic() - start, stream, chunk)))
    assert r.exit_code == 0
    assert seen[0][1:] == ("stdout", b"first\n") and seen[0][0] < r.duration - 0.3  # arrived while running
    assert seen[-1][1:] == ("stderr", b"second\n")


def test_stdin(session: Session, tmp_path: Path) -> None:
    data = b"line\n" * 100_000  # more than a pipe holds
    r = session.exec(["wc", "-c"], stdin=data)
    assert r.stdout.strip() == str(len(data)).encode()
    src = tmp_path / "in.txt"
    src.write_bytes(b"from a file\n")
    with open(src, "rb") as fh:
        assert session.exec(["cat"], stdin=fh).stdout == b"from a file\n"
    assert session.exec(["cat"]).stdout == b""  # /dev/null by default


def test_output_caps(backend: str, box: Box) -> None:
    with Session(box.policy(output_bytes=1000), backend=backend, host=box.host) as s:
        r = s.exec(["sh", "-c", "i=0; while [ $i -lt 2000 ]; do printf '%05d\\n' $i; i=$((i+1)); done"])
    assert r.stdout_truncated and r.stdout_total == 12000
    assert r.stdout.startswith(b"00000\n") and r.stdout.endswith(b"01999\n") and b"bytes omitted" in r.stdout


# ---------------------------------------------------------------- timeouts and process trees


def test_timeout_kills_setsid_grandchildren(session: Session, box: Box) -> None:
    m = box.marker
    start = time.monotonic()
    r = session.exec(["sh", "-c", f"setsid sleep {m} & (setsid sleep {m} &); sleep {m}"], timeout=0.5)
    assert r.timed_out and r.signal == signal.SIGKILL and time.monotonic() - start < 5
    assert any(d.kind == "timeout" for d in r.denials)
    assert gone(m), [p.cmdline() for p in with_marker(m)]


def test_leftovers_die_after_exit(session: Session, box: Box) -> None:
    m = box.marker
    r = session.exec(["sh", "-c", f"sleep {m} >/dev/null & (setsid sleep {m} >/dev/null &); echo ok"])
    assert r.stdout == b"ok\n"
    assert gone(m), "background jobs and orphans outlived their command"


def test_tmp_persists_until_close(backend: str, box: Box) -> None:
    name = f"sess-{box.marker}"
    s = Session(box.policy(), backend=backend, host=box.host).start()
    try:
        assert s.exec(["sh", "-c", f"echo kept > /tmp/{name}"]).exit_code == 0
        assert s.exec(["cat", f"/tmp/{name}"]).stdout == b"kept\n"
        assert not os.path.exists(f"/tmp/{name}")  # private: not the host's /tmp
        wpid = s.worker_pid
        assert wpid and Path(f"/proc/{wpid}/root/tmp/{name}").read_text() == "kept\n"  # it lives in the worker's
    finally:
        s.close()
    assert not pid_alive(wpid)
    assert not os.path.exists(f"/tmp/{name}") and not Path(f"/proc/{wpid}/root/tmp/{name}").exists()


def test_workspace_writes_persist(session: Session, box: Box) -> None:
    assert session.exec(["sh", "-c", "echo one > made.txt"]).exit_code == 0
    assert (box.ws / "made.txt").read_text() == "one\n"
    assert session.exec(["cat", "made.txt"]).stdout == b"one\n"
    assert session.read_file("made.txt").data == b"one\n"


def test_writes_outside_and_into_git_fail(session: Session, box: Box) -> None:
    before = {p: p.read_bytes() for p in (box.victim, box.ws / ".git" / "config")}
    r = session.exec(["sh", "-c", f"echo pwned > {box.victim}; echo pwned > .git/config; touch .git/hook"])
    assert r.exit_code != 0 and {d.kind for d in r.denials} >= {"write"}
    for path, target in ((box.victim, "write"), (box.ws / ".git" / "config", "protected")):
        with pytest.raises(FileOpError) as err:
            session.write_file(path, "pwned")
        assert err.value.denial is not None and err.value.denial.kind == target
        assert err.value.errno is not None and err.value.path == str(path)
    with pytest.raises(FileOpError):
        session.apply_edits([{"path": "README.md", "content": "changed\n"}, {"path": str(box.victim), "content": "x"}])
    assert {p: p.read_bytes() for p in before} == before
    assert (box.ws / "README.md").read_text() == "hello session\n"  # all or nothing
    assert not (box.ws / ".git" / "hook").exists()
    assert sorted(os.listdir(box.ws)) == [".git", ".stockade", "README.md"] or \
        sorted(os.listdir(box.ws)) == [".git", "README.md"]  # no temp files left


def test_deny_read_via_read_file(session: Session, box: Box) -> None:
    secret_file = box.home / ".ssh" / "id_rsa"
    with pytest.raises(FileOpError) as err:
        session.read_file(secret_file)
    assert err.value.denial is not None and err.value.denial.kind == "read"
    assert box.secret not in str(err.value)
    r = session.exec(["cat", str(secret_file)])
    assert box.secret.encode() not in r.stdout + r.stderr


# ---------------------------------------------------------------- file operations


def test_file_operations(session: Session, box: Box) -> None:
    assert session.write_file("src/app.py", "def f():\n    return 1\n", parents=True) == 22
    got = session.read_file("src/app.py", max_bytes=5)
    assert (got.data, got.size, got.truncated) == (b"def f", 22, True)
    changed = session.apply_edits([
        {"path": "src/app.py", "old": "return 1", "new": "return 2"},
        {"path": "src/new.py", "content": b"x = 1\n"},
        {"path": "README.md", "delete": True},
    ])
    assert changed == sorted(str(box.ws / p) for p in ("src/app.py", "src/new.py", "README.md"))
    assert (box.ws / "src" / "app.py").read_text() == "def f():\n    return 2\n"
    assert not (box.ws / "README.md").exists()
    names = {e.name: e.type for e in session.list_dir("src")}
    assert names == {"app.py": "file", "new.py": "file"}
    found = session.search(r"return \d", ".", "*.py")
    assert [(m.path, m.line, m.text) for m in found.matches] == [(str(box.ws / "src" / "app.py"), 2,
                                                                 "    return 2")]
    with pytest.raises(FileOpError) as err:  # no such text: nothing changes
        session.apply_edits([{"path": "src/new.py", "content": "y = 2\n"},
                             {"path": "src/app.py", "old": "absent", "new": "z"}])
    assert err.value.errno is None and err.value.denial is None
    assert (box.ws / "src" / "new.py").read_text() == "x = 1\n"
    with pytest.raises(FileOpError) as err:
        session.read_file("missing.txt")
    assert err.value.errname == "ENOENT"
    leftovers = [p for p in box.ws.rglob("*") if ".stockade-" in p.name]
    assert not leftovers


# ---------------------------------------------------------------- the worker


def test_worker_killed_mid_command(session: Session, box: Box) -> None:
    m = box.marker
    out: dict[str, object] = {}

    def victim() -> None:
        try:
            out["result"] = session.exec(["sh", "-c", f"echo started; sleep {m} & sleep {m}"])
        except SessionError as exc:
            out["error"] = exc

    thread = threading.Thread(target=victim)
    thread.start()
    deadline = time.monotonic() + 10
    while len(with_marker(m)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    old = session.worker_pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    thread.join(15)
    assert isinstance(out.get("error"), SessionError), out
    assert b"started" in out["error"].stdout  # type: ignore[attr-defined]
    assert gone(m), "commands of a dead worker survived"
    # The next call gets a fresh worker, confined like the first.
    r = session.exec(["sh", "-c", f"grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; echo x > {box.victim}"])
    assert session.restarts == 1 and session.worker_pid not in (None, old)
    assert b"CapEff:\t0000000000000000" in r.stdout and b"NoNewPrivs:\t1" in r.stdout
    assert r.exit_code != 0 and box.victim.read_text() == "victim\n"


def test_hung_worker_is_replaced(session: Session, box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    import sandbox.session as mod

    monkeypatch.setattr(mod, "WATCHDOG_GRACE", 0.5)
    out: dict[str, object] = {}

    def victim() -> None:
        try:
            out["result"] = session.exec(["sleep", box.marker], timeout=0.3)
        except SessionError as exc:
            out["error"] = exc

    thread = threading.Thread(target=victim)
    thread.start()
    deadline = time.monotonic() + 10
    while not with_marker(box.marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    old = session.worker_pid
    assert old is not None
    os.kill(old, signal.SIGSTOP)  # it can no longer time the command out, nor answer
    thread.join(15)
    assert isinstance(out.get("error"), SessionError) and "hung" in str(out["error"]), out
    assert gone(box.marker)
    assert session.exec(["echo", "next"]).stdout == b"next\n" and session.worker_pid != old


def test_worker_killed_while_idle(session: Session, box: Box) -> None:
    old = session.worker_pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(old) and time.monotonic() < deadline:
        time.sleep(0.02)
    r = session.exec(["sh", "-c", f"echo x > {box.victim}; echo alive"])
    assert r.stdout == b"alive\n" and box.victim.read_text() == "victim\n"
    assert session.worker_pid not in (None, old)


def test_many_commands(session: Session) -> None:
    start = time.monotonic()
    for i in range(200):
        r = session.exec(["sh", "-c", f"echo {i}"])
        assert r.stdout == f"{i}\n".encode() and r.exit_code == 0
    assert time.monotonic() - start < 60
    assert session.restarts == 0


def test_concurrent_commands(session: Session) -> None:
    results: list[float] = []

    def one() -> None:
        r = session.exec(["sleep", "0.5"])
        assert r.exit_code == 0
        results.append(r.duration)

    threads = [threading.Thread(target=one) for _ in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 4 and time.monotonic() - start < 1.6


def test_calls_past_the_channel_limit_wait(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    import sandbox.session as mod

    monkeypatch.setattr(mod, "MAX_CHANNELS", 2)
    done: list[int] = []
    threads = [threading.Thread(target=lambda: done.append(session.exec(["sleep", "0.3"]).exit_code))
               for _ in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert done == [0, 0, 0, 0] and 0.55 < time.monotonic() - start < 3


def test_concurrent_timeouts_are_per_command(session: Session, box: Box) -> None:
    out: dict[str, object] = {}

    def slow() -> None:
        out["slow"] = session.exec(["sleep", box.marker], timeout=0.4)

    t = threading.Thread(target=slow)
    t.start()
    fast = session.exec(["sh", "-c", "sleep 0.8; echo done"])
    t.join(10)
    assert fast.stdout == b"done\n" and not fast.timed_out
    assert out["slow"].timed_out  # type: ignore[attr-defined]


def test_worker_not_dumpable(session: Session) -> None:
    r = session.exec(["sh", "-c", "cat /proc/$PPID/environ; echo; head -c1 /proc/$PPID/mem; "
                                  "readlink -v /proc/$PPID/fd/0; ls /proc/$PPID/root/; "
                                  "grep -E '^(Name|PPid)' /proc/$PPID/status"])
    assert b"python" in r.stdout  # $PPID is the worker
    assert r.stderr.count(b"Permission denied") == 4, r.stderr


def test_capabilities_and_nnp_inside(session: Session) -> None:
    status = session.exec(["cat", "/proc/self/status"]).stdout.decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["CapPrm"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"


def test_network_off(session: Session) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        r = session.exec(["python3", "-I", "-S", "-c",
                          f"import socket; s = socket.socket(); s.settimeout(2); s.connect(('127.0.0.1', {port}))"])
        assert r.exit_code != 0
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing reached the host
    finally:
        server.close()


def test_close_leaves_nothing(backend: str, box: Box) -> None:
    before = sorted(os.listdir(box.ws))
    s = Session(box.policy(), backend=backend, host=box.host).start()
    wpid = s.worker_pid
    cgroup_dirs = list(s._worker.prep.cgroup.dirs) if s._worker and s._worker.prep.cgroup else []
    s.exec(["sh", "-c", f"sleep {box.marker} >/dev/null 2>&1 &"])
    s.close()
    s.close()  # idempotent
    assert wpid is not None and not pid_alive(wpid)
    assert gone(box.marker)
    assert sorted(os.listdir(box.ws)) == before  # mount stubs removed
    assert not [d for d in cgroup_dirs if os.path.exists(d)]
    with pytest.raises(SessionError):
        s.exec(["true"])


def test_read_only_policy(backend: str, box: Box) -> None:
    policy = dataclasses.replace(box.policy(), mode=Mode.READ_ONLY)
    with Session(policy, backend=backend, host=box.host) as s:
        r = s.exec(["sh", "-c", "echo x > inside.txt"])
        assert r.exit_code != 0 and not (box.ws / "inside.txt").exists()
        with pytest.raises(FileOpError) as err:
            s.write_file("inside.txt", "x")
        assert err.value.denial is not None and err.value.denial.kind == "write"
        assert s.read_file("README.md").data == b"hello session\n"


# ---------------------------------------------------------------- trio


async def test_trio_aexec_and_stream(backend: str, box: Box) -> None:
    async with Session(box.policy(), backend=backend, host=box.host) as s:
        r = await s.aexec(["sh", "-c", "cat; exit 4"], stdin=b"fed\n")
        assert (r.exit_code, r.stdout) == (4, b"fed\n")
        proc = await s.open_process(["sh", "-c", "echo a; sleep 0.3; echo b >&2"])
        assert proc.pid is not None
        chunks = [item async for item in proc.output()]
        assert chunks == [("stdout", b"a\n"), ("stderr", b"b\n")]
        assert (await proc.wait()).exit_code == 0
        start = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(s.aexec, ["sleep", "0.5"])
        assert time.monotonic() - start < 1.6
        assert (await s.aexec(["no-such-command-xyz"])).exit_code == 127
        assert (await s.aread_file("README.md")).data == b"hello session\n"


async def test_trio_cancel_kills_tree(backend: str, box: Box) -> None:
    async with Session(box.policy(), backend=backend, host=box.host) as s:
        proc = await s.open_process(["sh", "-c", f"(setsid sleep {box.marker} &); sleep {box.marker}"])
        with trio.move_on_after(0.5):
            await proc.wait()
        assert await trio.to_thread.run_sync(gone, box.marker)
        r = await s.aexec(["echo", "still serving"])
        assert r.stdout == b"still serving\n"


# ---------------------------------------------------------------- landlock without namespaces or cgroup


@pytest.mark.landlock
def test_landlock_without_namespaces_tmpdir_removed(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = backend_unavailable("landlock")
    if reason:
        pytest.skip(reason)
    from sandbox.backends.landlock import LandlockBackend

    monkeypatch.setattr(LandlockBackend, "ns_mode", lambda self, host: None)  # as for a user without userns
    with Session(box.policy(), backend="landlock", host=box.host) as s:
        tmpdir = s.exec(["sh", "-c", "echo $TMPDIR"]).stdout.decode().strip()
        assert tmpdir != "/tmp" and os.path.isdir(tmpdir)  # a per-session host dir
        assert s.exec(["sh", "-c", 'echo kept > "$TMPDIR/f"']).exit_code == 0
        assert s.exec(["cat", f"{tmpdir}/f"]).stdout == b"kept\n"
    assert not os.path.exists(tmpdir)


@pytest.mark.landlock
def test_landlock_without_cgroup_dead_worker_leaves_nothing(box: Box) -> None:
    reason = backend_unavailable("landlock")
    if reason:
        pytest.skip(reason)
    host = dataclasses.replace(box.host, cgroup=None)  # no pid namespace, no cgroup: the reported pids
    with Session(box.policy(), backend="landlock", host=host) as s:
        out: dict[str, object] = {}

        def victim() -> None:
            try:
                s.exec(["sh", "-c", f"sleep {box.marker} & sleep {box.marker}"])
            except SessionError as exc:
                out["error"] = exc

        thread = threading.Thread(target=victim)
        thread.start()
        deadline = time.monotonic() + 10
        while len(with_marker(box.marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(s.worker_pid or 0, signal.SIGKILL)
        thread.join(15)
        assert isinstance(out.get("error"), SessionError)
        assert gone(box.marker), "commands of a dead worker survived"
        assert s.exec(["echo", "fresh"]).stdout == b"fresh\n"


def test_refusal_in_the_output_of_a_successful_command_is_explained(session: Session, box: Box) -> None:
    r = session.exec(["sh", "-c", f"echo x > {box.victim} 2>&1; true"])
    assert r.exit_code == 0
    assert [(d.kind, d.target) for d in r.denials] == [("write", str(box.victim))]
    assert session.exec(["true"]).denials == []


@pytest.mark.parametrize("stdin", [None, b"input\n"])
def test_aexec_raises_session_error_itself_when_the_worker_dies(box: Box, backend: str, stdin: bytes | None) -> None:
    """Callers (the agent's shell tool, `stockade mcp`) catch SessionError; a nursery must not wrap it."""
    with Session(box.policy(), backend=backend) as s:
        async def main() -> BaseException | None:
            async with trio.open_nursery() as nursery:
                async def kill_worker() -> None:
                    deadline = time.monotonic() + 10
                    while len(with_marker(box.marker)) < 1 and time.monotonic() < deadline:
                        await trio.sleep(0.02)
                    os.kill(s.worker_pid or 0, signal.SIGKILL)
                nursery.start_soon(kill_worker)
                try:
                    await s.aexec(["sh", "-c", f"cat > /dev/null; sleep {box.marker}"], stdin=stdin)
                except SessionError as exc:
                    return exc
            return None

        assert isinstance(trio.run(main), SessionError)

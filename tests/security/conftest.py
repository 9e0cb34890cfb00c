"""Adversarial suite fixtures: a victim host the sandboxed command attacks, and `run_in` to attack it.

Every test decides from the HOST side: victim bytes and mtimes (`snap`), what the
host's servers received (`NetSpy`), host processes still alive, secrets absent
from everything the command printed. A command's exit code alone never passes
an attack test.

The victims live under /srv (not /tmp or /var/tmp): a private /tmp or /var/tmp in
the sandbox would hide them and make every filesystem attack pass for the wrong
reason. `STOCKADE_SECTEST_BASE` moves them.

`STOCKADE_SECTEST_CANARY=1 pytest tests/security` checks the suite itself: every test
runs unconfined (backend "none", full-access) and every attack test must then FAIL.
It really runs the attacks, so they only aim at this suite's own victims; the two
host knobs it writes (printk_ratelimit, printk.time) are restored, keys it adds are
invalidated, and the /dev-node test is skipped. Attack tests that still pass under
the canary cannot see an escape on this host (e.g. /proc/1 is closed even to root
here, ping sockets are disabled by sysctl), or check engine features that also
apply unconfined (limits, env scrubbing, fd closing, tree-kill).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import faulthandler
import hashlib
import os
import secrets
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from policies.host import HostFacts
from policies.model import Limits, Mode, NetworkMode, NetworkPolicy, SandboxPolicy
from sandbox.backends.base import SandboxSetupError
from sandbox.result import Result

# STOCKADE_SECTEST_CANARY=1 runs every test unconfined (backend "none", full-access): a check of
# the suite itself, under which every attack test must FAIL (it would have caught the escape).
CANARY = os.environ.get("STOCKADE_SECTEST_CANARY") == "1"
BACKENDS = ("none",) if CANARY else ("bwrap", "landlock")
MODES = ("read-only", "workspace-write")
PYTHON = sys.executable  # as a user runs it (must-work tests)
PY = f"{PYTHON} -I -S"  # attack scripts: stdlib only, 5x faster to start
BASE = Path(os.environ.get("STOCKADE_SECTEST_BASE", "/srv/stockade-sectest"))
RUN_TIMEOUT = 10.0  # policy wall timeout of every run
HANG_ABORT = 90  # a run that takes longer than this aborts pytest with a traceback
MIB = 1 << 20
PATH = f"{os.path.dirname(PYTHON)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# ---------------------------------------------------------------- backends / modes


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CANARY:  # the canary checks that attack tests catch an unconfined run; must-work tests are moot there
        skip = pytest.mark.skip(reason="STOCKADE_SECTEST_CANARY: must-work tests do not apply to an unconfined run")
        for item in items:
            if item.path.name == "test_sec_works.py":
                item.add_marker(skip)


@pytest.fixture(scope="session")
def base_host() -> HostFacts:
    from sandbox.detect import host_facts

    return host_facts()


def _sandbox_run() -> Callable[..., Result]:
    import sandbox

    fn = getattr(sandbox, "run", None)
    if fn is None:
        from sandbox.execute import run as fn
    return fn


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, base_host: HostFacts) -> str:
    """A backend name; skipped (with the reason) when it is not built yet or unusable here."""
    name: str = request.param
    try:
        from sandbox.backends import get_backend

        impl = get_backend(name)
        _sandbox_run()
    except ImportError as exc:
        pytest.skip(f"backend {name} not importable yet: {exc}")
    reason = impl.unavailable(base_host)
    if reason:
        pytest.skip(f"backend {name} unavailable on this host: {reason}")
    return name


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


# ---------------------------------------------------------------- host-side observation


def snap(root: Path | str) -> dict[str, tuple[Any, ...]]:
    """Everything observable about a tree: kind, mode, size, mtime, content hash, link target."""
    root = Path(root)
    state: dict[str, tuple[Any, ...]] = {}
    if not os.path.lexists(root):
        return state
    todo = [root]
    while todo:
        path = todo.pop()
        st = os.lstat(path)
        rel = str(path.relative_to(root)) if path != root else "."
        xattrs = tuple(sorted(os.listxattr(path, follow_symlinks=False))) if not stat.S_ISLNK(st.st_mode) else ()
        if stat.S_ISDIR(st.st_mode):
            state[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime_ns, xattrs)
            todo.extend(sorted(path.iterdir()))
        elif stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_size, st.st_mtime_ns, digest, xattrs)
        elif stat.S_ISLNK(st.st_mode):
            state[rel] = ("link", os.readlink(path))
        else:
            state[rel] = ("other", st.st_mode, st.st_mtime_ns)
    return state


def names(root: Path | str) -> set[str]:
    """Relative names and kinds in a tree: what 'leaves nothing behind' compares."""
    return {f"{k}:{v[0]}" for k, v in snap(root).items()}


def cmdline_pids(*markers: str) -> list[int]:
    """Host pids whose command line contains any of `markers` (never this process)."""
    found = []
    needles = [m.encode() for m in markers]
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                line = fh.read()
            if any(n in line for n in needles):
                found.append(int(entry))
        except OSError:
            continue
    return found


def proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as fh:
            return dict(line.split(":\t", 1) for line in fh.read().splitlines() if ":\t" in line)
    except OSError:
        return {}


def proc_state(pid: int) -> str:
    """One-letter state from /proc/<pid>/stat ('' when gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


class Sampler:
    """Calls `fn` every `interval` seconds in a thread while the block runs; results in `.samples`."""

    def __init__(self, fn: Callable[[], Any], interval: float = 0.01) -> None:
        self.fn, self.interval = fn, interval
        self.samples: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append(self.fn())
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self.samples.append(self.fn())


def describe(r: Result) -> str:
    """Everything about a run, for assertion messages (never used to decide an attack test)."""
    return (f"backend={r.backend} exit={r.exit_code} signal={r.signal} timed_out={r.timed_out} "
            f"refused={getattr(r, 'refused', None)}\nprotections={r.protections}\nwarnings={r.warnings}\n"
            f"--- output ---\n{getattr(r, 'out', '')[-3000:]}")


# ---------------------------------------------------------------- the victim host


@dataclasses.dataclass
class Box:
    root: Path  # everything below is ours and removed afterwards
    ws: Path  # the workspace: a git repo
    outside: Path  # a directory outside every writable root
    victim: Path  # outside/victim.txt
    home: Path  # the fake HOME
    marker: str  # unique per test: in every command line, payload and probe name
    secrets: dict[str, str]  # name -> secret string that must never reach the output
    host: HostFacts
    env: dict[str, str]  # the caller environment handed to sandbox.run
    num: str = ""  # a numeric marker: `sleep 60 0.<num>` is a sleep whose command line can be found

    def procs(self) -> list[int]:
        """Host processes started by this test's commands (their command lines carry a marker)."""
        return cmdline_pids(self.marker, f"0.{self.num}")

    @property
    def dotfiles(self) -> list[Path]:
        return [self.home / ".bashrc", self.home / ".profile", self.home / ".gitconfig"]

    def leaked(self, text: str) -> list[str]:
        """Names of the secrets that appear in `text`."""
        return [name for name, value in self.secrets.items() if value in text]


ENV_SECRETS = ("OPENAI_API_KEY", "GH_TOKEN", "DB_PASSWORD")


def _secret(name: str) -> str:
    return f"S3CRET{name.upper().replace('_', '').replace('.', '').replace('/', '')}{secrets.token_hex(8)}"


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=20,
                   env={"PATH": PATH, "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1",
                        "GIT_AUTHOR_NAME": "sec", "GIT_AUTHOR_EMAIL": "sec@example.invalid",
                        "GIT_COMMITTER_NAME": "sec", "GIT_COMMITTER_EMAIL": "sec@example.invalid"})


RUN_TESTS = '''\
"""The workspace's own tiny test suite (no pytest)."""
import sys
sys.path.insert(0, "src")
import app

def test_add():
    assert app.add(2, 3) == 5

def test_greet():
    assert app.greet("x") == "hello x"

if __name__ == "__main__":
    tests = [f for n, f in sorted(globals().items()) if n.startswith("test_")]
    for t in tests:
        t()
    print(f"{len(tests)} passed")
'''


@pytest.fixture(scope="session")
def repo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed git workspace, copied into every box (git init per test is slow)."""
    BASE.mkdir(parents=True, exist_ok=True)
    tpl = Path(tempfile.mkdtemp(prefix="template-", dir=BASE))
    ws = tpl / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "tests").mkdir()
    (ws / "README.md").write_text("# demo workspace\nREADME-CONTENT-OK\n")
    (ws / "src" / "app.py").write_text("def add(a, b):\n    return a + b\n\n\ndef greet(n):\n    return 'hello ' + n\n")
    (ws / "tests" / "run_tests.py").write_text(RUN_TESTS)
    _git(ws, "init", "-q", "-b", "main")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-q", "-m", "initial commit GITLOG-OK")
    hook = ws / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    yield ws
    shutil.rmtree(tpl, ignore_errors=True)
    with contextlib.suppress(OSError):
        BASE.rmdir()  # only when no other run is using it


@pytest.fixture
def box(repo_template: Path, base_host: HostFacts) -> Iterator[Box]:
    root = Path(tempfile.mkdtemp(prefix="box-", dir=BASE))
    marker = "MRK" + secrets.token_hex(8)
    ws = root / "ws"
    shutil.copytree(repo_template, ws, symlinks=True)
    outside = root / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text(f"victim file {marker}\n")
    home = root / "home"
    sec = {name: _secret(name) for name in (
        "ssh", "aws", "gnupg", "netrc", "fd", "sleeper", *ENV_SECRETS)}
    files = {
        ".ssh/id_rsa": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{sec['ssh']}\n-----END OPENSSH PRIVATE KEY-----\n",
        ".ssh/fd_secret": f"{sec['fd']}\n",
        ".aws/credentials": f"[default]\naws_access_key_id = AKIA\naws_secret_access_key = {sec['aws']}\n",
        ".gnupg/private-keys-v1.d/key.key": f"{sec['gnupg']}\n",
        ".netrc": f"machine example.invalid login me password {sec['netrc']}\n",
        ".bashrc": f"# bashrc {marker}\nexport PS1='$ '\n",
        ".profile": f"# profile {marker}\n",
        ".gitconfig": f"[user]\n\tname = Sec Test\n\temail = sec@example.invalid\n# gitconfig {marker}\n",
    }
    for rel, text in files.items():
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (home / ".ssh").chmod(0o700)
    (home / ".ssh" / "id_rsa").chmod(0o600)
    host = dataclasses.replace(base_host, home=str(home))
    env = {"PATH": PATH, "HOME": str(home), "LANG": "C.UTF-8", "USER": "root", "LOGNAME": "root",
           "TERM": "dumb", **{name: sec[name] for name in ENV_SECRETS}}
    b = Box(root=root, ws=ws, outside=outside, victim=victim, home=home, marker=marker,
            secrets=sec, host=host, env=env, num=str(secrets.randbelow(10**12)).zfill(12))
    try:
        yield b
    finally:
        for pid in b.procs():  # whatever a failed test let survive
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


_LIBC = ctypes.CDLL(None, use_errno=True)
MS_BIND, MNT_DETACH = 0x1000, 2


def bind_mount(src: Path, dst: Path) -> None:
    """A host bind mount (the host's own setup in some tests; removed with the box)."""
    if _LIBC.mount(str(src).encode(), str(dst).encode(), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount --bind {src} {dst}: {os.strerror(err)}")


def _unmount_under(root: Path) -> None:
    """Take off our own bind mounts, and whatever an escape mounted over our dirs on the host."""
    for point in reversed(host_mounts_under(root)):
        _LIBC.umount2(point.encode(), MNT_DETACH)


def host_mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        points = [line.split()[4] for line in fh]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


# ---------------------------------------------------------------- running a command


@pytest.fixture
def run_in(box: Box) -> Callable[..., Result]:
    """run_in(backend, mode, script, *, py=False, limits=None, network="off", writable_roots=(), **run_kw).

    Runs `sh -c script` (or `python -c script` when py=True) in box.ws under the
    policy, with box.env as the caller environment and box.host as host facts.
    A SandboxSetupError (nothing ran) becomes a Result with `.refused` set.
    Every Result gets `.out` (stdout+stderr text) and `.why` (for messages).
    """

    def run(backend: str, mode: str, script: str, *, py: bool = False, limits: dict[str, Any] | None = None,
            network: str = "off", writable_roots: tuple[Path | str, ...] = (), **kw: Any) -> Result:
        argv = [PYTHON, "-I", "-S", "-c", script] if py else ["sh", "-c", script]
        if CANARY:
            mode = "full-access"
        policy = SandboxPolicy(
            mode=Mode(mode),
            workspace=str(box.ws),
            writable_roots=tuple(str(p) for p in writable_roots),
            network=NetworkPolicy(mode=NetworkMode(network)),
            limits=Limits(**{"timeout": RUN_TIMEOUT, **(limits or {})}),
        )
        faulthandler.dump_traceback_later(HANG_ABORT, exit=True)
        try:
            kw.setdefault("host", box.host)
            result = _sandbox_run()(argv, policy, env=box.env, backend=backend, **kw)
            result.refused = None  # type: ignore[attr-defined]
        except SandboxSetupError as exc:
            result = Result(argv=argv, exit_code=None, signal=None, stderr=f"REFUSED: {exc}".encode(),
                            backend=backend)
            result.refused = str(exc)  # type: ignore[attr-defined]
        finally:
            faulthandler.cancel_dump_traceback_later()
        result.out = (result.stdout + result.stderr).decode("utf-8", "replace")  # type: ignore[attr-defined]
        result.why = describe(result)  # type: ignore[attr-defined]
        return result

    return run


def declared(r: Result, protection: str) -> str:
    """What the backend said about a protection for this run ('' when it said nothing)."""
    return r.protections.get(protection, "")


# ---------------------------------------------------------------- host processes and terminals


@pytest.fixture
def sleeper(box: Box) -> Iterator[subprocess.Popen[bytes]]:
    """A host process outside the sandbox: a secret in its environment, an open fd on ~/.ssh/id_rsa
    (`.secret_fd`, like an agent holding a key), cwd = box.outside."""
    fd = os.open(box.home / ".ssh" / "id_rsa", os.O_RDONLY)
    try:
        proc = subprocess.Popen(["sleep", "300"], cwd=box.outside, start_new_session=True, pass_fds=(fd,),
                                env={"PATH": PATH, "SLEEPER_SECRET": box.secrets["sleeper"]})
    finally:
        os.close(fd)
    proc.secret_fd = fd  # type: ignore[attr-defined]
    wait_until(lambda: proc_state(proc.pid) in ("S", "R"), 5)
    yield proc
    proc.kill()
    proc.wait(10)


def healthy(proc: subprocess.Popen[bytes]) -> bool:
    """Alive, not stopped, not traced."""
    return proc.poll() is None and proc_state(proc.pid) in ("S", "R", "D") and \
        proc_status(proc.pid).get("TracerPid", "0").strip() == "0"


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int]]:
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def drain(fd: int) -> bytes:
    """Whatever can be read from fd right now."""
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except (BlockingIOError, OSError):
            return data
        if not chunk:
            return data
        data += chunk


# ---------------------------------------------------------------- host servers (network attacks)


ETH_P_ALL = 0x0003


class NetSpy:
    """Host-side servers that record every connection and byte they get, plus a packet sniffer.

    The sniffer (AF_PACKET, all interfaces) records every frame carrying the
    test's marker, so a datagram to a closed port, a DNS query or an ICMP echo
    leaves a trace even when no server answers.
    """

    UNIX_KINDS = ("outside-dir", "under-run", "under-tmp", "renamed-after-bind", "hardlinked-name",
                  "hardlink-same-dir", "moved-to-other-dir", "bind-mounted-dir-alias", "appeared-during-run")

    def __init__(self, box: Box) -> None:
        self.marker = box.marker.encode()
        self.events: list[tuple[str, str, bytes]] = []
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._owned: list[socket.socket] = []
        self._cleanup_paths: list[Path] = []
        self._sync_seen: set[bytes] = set()

        self.tcp4 = self._listen(socket.AF_INET, socket.SOCK_STREAM, ("0.0.0.0", 0), "tcp4")
        self.tcp6 = self._listen(socket.AF_INET6, socket.SOCK_STREAM, ("::", 0), "tcp6")
        self.udp4 = self._listen(socket.AF_INET, socket.SOCK_DGRAM, ("0.0.0.0", 0), "udp4")
        self.udp6 = self._listen(socket.AF_INET6, socket.SOCK_DGRAM, ("::", 0), "udp6")
        self.dns_udp = self.dns_tcp = None
        with contextlib.suppress(OSError):
            self.dns_udp = self._listen(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 53), "dns-udp")
            self.dns_tcp = self._listen(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 53), "dns-tcp")

        # Pathname Unix sockets imitating docker.sock, where a host keeps them.
        tag = box.marker[-10:]
        run_dir = Path(f"/run/stockade-sec-{tag}")
        tmp_dir = Path(f"/tmp/sec-sock-{tag}")
        self.unix: dict[str, Path] = {}
        self.unix["outside-dir"] = self._unix(box.root / "dockerd" / "docker.sock", "outside-dir")
        self.unix["under-run"] = self._unix(run_dir / "docker.sock", "under-run")
        self.unix["under-tmp"] = self._unix(tmp_dir / "docker.sock", "under-tmp")
        self._cleanup_paths += [run_dir, tmp_dir]
        # A second name for a socket (hard link): /proc/net/unix shows only the first.
        first = self._unix(box.root / "sock-a" / "docker.sock", "hardlinked-name")
        (box.root / "sock-b").mkdir()
        os.link(first, box.root / "sock-b" / "docker.sock")
        self.unix["hardlinked-name"] = box.root / "sock-b" / "docker.sock"
        # Bound under a temporary name, then renamed into place (atomic socket replacement).
        tmp_name = self._unix(box.root / "sock-r" / "docker.sock.tmp", "renamed-after-bind")
        os.rename(tmp_name, box.root / "sock-r" / "docker.sock")
        self.unix["renamed-after-bind"] = box.root / "sock-r" / "docker.sock"
        # Two names in one directory: the one /proc/net/unix does not show.
        first = self._unix(box.root / "sock-c" / "docker.sock", "hardlink-same-dir")
        os.link(first, box.root / "sock-c" / "docker2.sock")
        self.unix["hardlink-same-dir"] = box.root / "sock-c" / "docker2.sock"
        # Bound in one directory, then moved to another.
        moved = self._unix(box.root / "sock-m1" / "docker.sock", "moved-to-other-dir")
        (box.root / "sock-m2").mkdir()
        os.rename(moved, box.root / "sock-m2" / "docker.sock")
        self.unix["moved-to-other-dir"] = box.root / "sock-m2" / "docker.sock"
        # The socket's directory also bind-mounted elsewhere (containers, chroots, /workspaces setups).
        self._unix(box.root / "sock-al" / "docker.sock", "bind-mounted-dir-alias")
        (box.root / "sock-al-alias").mkdir()
        bind_mount(box.root / "sock-al", box.root / "sock-al-alias")
        self.unix["bind-mounted-dir-alias"] = box.root / "sock-al-alias" / "docker.sock"
        # Bound by the host only after the sandbox started (`late_unix`), e.g. a daemon restarting.
        (box.root / "sock-late").mkdir()
        self.unix["appeared-during-run"] = box.root / "sock-late" / "docker.sock"

        self.abstract = f"stockade-sec-{box.marker}"
        self._listen(socket.AF_UNIX, socket.SOCK_STREAM, "\0" + self.abstract, "abstract")

        self.sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sniffer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MIB)
        self._owned.append(self.sniffer)
        self._sel.register(self.sniffer, selectors.EVENT_READ, ("sniffer", "frame"))

        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._owned += [self._wake_r, self._wake_w]
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", "wake"))
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _listen(self, family: int, kind: int, addr: Any, name: str) -> int:
        s = socket.socket(family, kind)
        self._owned.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(addr)
        if kind == socket.SOCK_STREAM:
            s.listen(64)
            self._sel.register(s, selectors.EVENT_READ, (name, "accept"))
        else:
            self._sel.register(s, selectors.EVENT_READ, (name, "datagram"))
        return s.getsockname()[1] if family in (socket.AF_INET, socket.AF_INET6) else 0

    def _unix(self, path: Path, name: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._listen(socket.AF_UNIX, socket.SOCK_STREAM, str(path), name)
        return path

    def late_unix(self, name: str) -> None:
        """Bind the socket `name` now (from an on_output callback, while the sandbox runs)."""
        if not self.unix[name].exists():
            self._unix(self.unix[name], name)

    def _record(self, server: str, what: str, data: bytes = b"") -> None:
        with self._lock:
            self.events.append((server, what, data))

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.05):
                server, what = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    if what == "wake":
                        return
                    if what == "accept":
                        conn, _ = sock.accept()
                        conn.setblocking(False)
                        self._owned.append(conn)
                        self._sel.register(conn, selectors.EVENT_READ, (server, "conn"))
                        self._record(server, "connect")
                    elif what == "conn":
                        data = sock.recv(65536)
                        if data:
                            self._record(server, "data", data)
                        else:
                            self._sel.unregister(sock)
                            sock.close()
                    elif what == "datagram":
                        data = sock.recv(65536)
                        if not data.startswith(b"SPY-SYNC-"):
                            self._record(server, "datagram", data)
                    else:  # sniffer
                        frame = sock.recv(65536)
                        if b"SPY-SYNC-" in frame:
                            self._sync_seen.add(frame[frame.index(b"SPY-SYNC-"):][:25])
                        elif self.marker in frame:
                            self._record("sniffer", "frame", frame)
                except OSError:
                    continue

    def seen(self) -> list[tuple[str, str, bytes]]:
        """Everything recorded so far, after making sure in-flight frames were processed."""
        token = b"SPY-SYNC-" + secrets.token_hex(8).encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(token, ("127.0.0.1", self.udp4))
        wait_until(lambda: token in self._sync_seen, 3)
        time.sleep(0.02)
        with self._lock:
            return list(self.events)

    def seen_by(self, *servers: str) -> list[tuple[str, str, bytes]]:
        return [e for e in self.seen() if e[0] in servers or e[0] == "sniffer"]

    def close(self) -> None:
        self._stop.set()
        self._wake_w.send(b"x")
        self._thread.join(5)
        for s in self._owned:
            with contextlib.suppress(OSError):
                s.close()
        self._sel.close()
        for path in self._cleanup_paths:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def spy(box: Box) -> Iterator[NetSpy]:
    net = NetSpy(box)
    yield net
    net.close()


def host_addresses() -> list[str]:
    """This host's non-loopback addresses (the sandbox must not reach them either)."""
    import psutil

    addrs = []
    for nic, entries in psutil.net_if_addrs().items():
        if nic == "lo":
            continue
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6) and "%" not in entry.address:
                addrs.append(entry.address)
    return addrs


def frame_summary(events: list[tuple[str, str, bytes]]) -> str:
    return "; ".join(f"{srv}:{what}:{data[:60]!r}" for srv, what, data in events[:10])

"""The bwrap backend for real: spawn the Launch and check every outcome from the host side.

Exit codes are not trusted: each test looks at host files, host servers and
the host's /tmp after the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.env import build_env
from policies.host import HostFacts
from policies.model import DEFAULT_DENY_READ, Mode, NetworkMode, NetworkPolicy, SandboxPolicy
from policies.resolve import resolve
from sandbox.backends.bwrap import BwrapBackend, vanished_during_setup
from sandbox.detect import host_facts

pytestmark = [
    pytest.mark.bwrap,
    pytest.mark.skipif(sys.platform != "linux" or not host_facts().bwrap_usable,
                       reason=f"bwrap unusable: {host_facts().bwrap_error}"),
]

PY = sys.executable


@dataclasses.dataclass
class Box:
    """A workspace, a fake home with secrets, and an outside dir, all on the host."""

    ws: Path
    home: Path
    outside: Path
    host: HostFacts

    def run(self, cmd: list[str] | str, *, policy: SandboxPolicy | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else cmd
        policy = policy or SandboxPolicy(workspace=str(self.ws))
        rp = resolve(policy, self.host)
        assert not rp.problems, rp.problems
        # The tests call the venv's python by path inside scripts: keep its directory on PATH so
        # the private /tmp still shows it when the checkout lives under /tmp.
        path = f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"
        env = build_env(policy, {**os.environ, "HOME": str(self.home), "PATH": path})
        for _attempt in range(3):
            launch = BwrapBackend().launch(rp, self.host, argv, env)
            try:
                r = subprocess.run(launch.argv, env=launch.env, cwd=launch.cwd, pass_fds=launch.pass_fds,
                                   capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            finally:
                launch.cleanup()
            # Other test suites on this host bind and remove sockets all the time; one that
            # vanishes between the scan and bwrap's setup stops bwrap before anything runs.
            if not vanished_during_setup(r.returncode, r.stderr):
                break
        return r


def _outside_tmp_dir() -> Path:
    """A scratch dir outside /tmp (which the sandbox replaces) and outside every deny-read entry."""
    for base in ("/run", "/var/lib", os.path.expanduser("~/.cache")):
        if os.path.isdir(base) and os.access(base, os.W_OK):
            return Path(tempfile.mkdtemp(prefix="stockade-test-", dir=base))
    pytest.skip("no writable directory outside /tmp")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """Host dirs outside /tmp: under the private /tmp a failed read or write proves nothing."""
    base = _outside_tmp_dir()
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def box(scratch: Path) -> Iterator[Box]:
    ws = scratch / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    subprocess.run(["git", "-C", str(ws), "-c", "user.email=t@t", "-c", "user.name=t",
                    "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    home = scratch / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN FAKE KEY-----\nsecret-material\n")
    (home / ".bashrc").write_text("# original bashrc\n")
    outside = scratch / "outside"
    outside.mkdir()
    yield Box(ws, home, outside, dataclasses.replace(host_facts(), home=str(home)))


def test_workspace_write_works(box: Box) -> None:
    r = box.run("echo written > result.txt && mkdir -p sub/dir && echo x > sub/dir/f")
    assert r.returncode == 0, r.stderr
    assert (box.ws / "result.txt").read_text() == "written\n"
    assert (box.ws / "sub" / "dir" / "f").read_text() == "x\n"


def test_write_outside_writable_roots_fails(box: Box) -> None:
    target = box.outside / "file.txt"
    target.write_text("original\n")
    bashrc = box.home / ".bashrc"
    r = box.run(f"echo pwned > '{target}'; echo pwned >> '{bashrc}'; rm -f '{target}'; "
                f"chmod 000 '{target}'; touch '{box.outside}/new'")
    assert target.read_text() == "original\n"
    assert stat.S_IMODE(target.stat().st_mode) != 0
    assert bashrc.read_text() == "# original bashrc\n"
    assert not (box.outside / "new").exists()
    assert "Read-only file system" in r.stderr


def test_git_config_is_read_only(box: Box) -> None:
    config = box.ws / ".git" / "config"
    before = config.read_bytes()
    hooks = box.ws / ".git" / "hooks"
    r = box.run("echo '[core] hooksPath = /tmp/evil' >> .git/config; echo 'echo pwned' > .git/hooks/pre-commit;"
                " mv .git .git-away; rm -rf .git")
    assert config.read_bytes() == before
    assert not (hooks / "pre-commit").exists()
    assert (box.ws / ".git").is_dir() and not (box.ws / ".git-away").exists()
    assert r.returncode != 0


def test_missing_protected_path_cannot_be_created_and_leaves_no_stub(box: Box) -> None:
    assert not (box.ws / ".stockade").exists()
    r = box.run("mkdir -p .stockade && echo evil > .stockade/config.toml; mkdir .stockade/x; "
                "ls -ld .stockade; echo ok > allowed.txt")
    assert "Read-only file system" in r.stderr or "File exists" in r.stderr
    assert not (box.ws / ".stockade").exists(), "stub left on the host after cleanup"
    assert (box.ws / "allowed.txt").read_text() == "ok\n"
    assert sorted(os.listdir(box.ws)) == [".git", "allowed.txt"]


def test_missing_git_stub_removed_too(box: Box) -> None:
    bare = box.outside / "plain"
    bare.mkdir()
    r = box.run("git init -q . ; mkdir .git/hooks; echo x > .git/HEAD; true",
                policy=SandboxPolicy(workspace=str(bare)))
    assert r.returncode == 0
    assert os.listdir(bare) == []


def test_deny_read_file_in_fake_home(box: Box) -> None:
    r = box.run(f"cat '{box.home}/.ssh/id_rsa'; ls -la '{box.home}/.ssh'; "
                f"chmod 700 '{box.home}/.ssh'; cat '{box.home}/.ssh/id_rsa'")
    assert "secret-material" not in r.stdout + r.stderr
    assert "id_rsa" not in r.stdout
    assert (box.home / ".ssh" / "id_rsa").read_text().endswith("secret-material\n")


def test_etc_shadow_unreadable(box: Box) -> None:
    if not os.path.exists("/etc/shadow"):
        pytest.skip("no /etc/shadow")
    r = box.run("cat /etc/shadow; echo rc=$?; head -c 100 /etc/shadow | od -c | head -2")
    assert "rc=0" not in r.stdout
    assert "root:" not in r.stdout
    if os.access("/etc/shadow", os.R_OK):  # the caller can read it: the sandbox must not
        assert open("/etc/shadow").read(5) not in r.stdout


def test_no_capabilities_and_no_new_privs(box: Box) -> None:
    r = box.run(["cat", "/proc/self/status"])
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line)
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"):
        assert int(fields[cap].strip(), 16) == 0, (cap, fields[cap])
    assert fields["NoNewPrivs"].strip() == "1"


def test_tmp_is_private(box: Box) -> None:
    name = f"stockade-private-{uuid.uuid4().hex}"
    r = box.run(f"echo inside > /tmp/{name} && cat /tmp/{name} && echo v > /var/tmp/{name} && "
                f"echo s > /dev/shm/{name} && ls /tmp | wc -l")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "inside"
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        assert not os.path.exists(f"{d}/{name}")


def test_host_dev_null_cannot_be_chmodded(box: Box) -> None:
    before = os.stat("/dev/null")
    # 0666 is what it already is: harmless if the protection were missing.
    r = box.run("chmod 0666 /dev/null && echo CHMOD-WORKED; echo data > /dev/null && echo WRITE-OK; "
                "head -c 4 /dev/zero | wc -c")
    assert "WRITE-OK" in r.stdout and r.stdout.splitlines()[-1].strip() == "4"
    if box.host.is_root:
        assert "CHMOD-WORKED" not in r.stdout
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)


@contextlib.contextmanager
def _unix_server(path: str) -> Iterator[socket.socket]:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(5)
    srv.setblocking(False)
    try:
        yield srv
    finally:
        srv.close()
        with contextlib.suppress(OSError):
            if not path.startswith("\0"):
                os.unlink(path)


def _nothing_arrived(srv: socket.socket) -> bool:
    try:
        conn, _ = srv.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


CONNECT = textwrap.dedent("""
    import socket, sys
    fam = socket.AF_UNIX if sys.argv[1] == "unix" else socket.AF_INET
    addr = sys.argv[2] if fam == socket.AF_UNIX else ("127.0.0.1", int(sys.argv[2]))
    if isinstance(addr, str) and addr.startswith("@"):
        addr = "\\0" + addr[1:]
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(addr)
        s.sendall(b"escaped")
        print("CONNECTED")
    except OSError as e:
        print("REFUSED", e)
""")


@pytest.mark.parametrize("base", ["/run", "/var/lib", "~/.cache"])
def test_host_unix_socket_outside_workspace_is_hidden(box: Box, base: str) -> None:
    base = os.path.expanduser(base)
    if not (os.path.isdir(base) and os.access(base, os.W_OK)):
        pytest.skip(f"{base} not writable")
    d = tempfile.mkdtemp(prefix="stockade-sock-", dir=base)  # the overlay view (or a /dev/null bind without one)
    try:
        path = os.path.join(d, "docker.sock")
        with _unix_server(path) as srv:
            r = box.run([PY, "-c", CONNECT, "unix", path])
            assert "REFUSED" in r.stdout, r.stdout + r.stderr
            assert _nothing_arrived(srv)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_host_unix_socket_inside_workspace_is_hidden(box: Box) -> None:
    path = str(box.ws / "host.sock")
    with _unix_server(path) as srv:
        r = box.run([PY, "-c", CONNECT, "unix", path])
        assert "REFUSED" in r.stdout, r.stdout + r.stderr
        assert _nothing_arrived(srv)
    assert not os.path.exists(path)


def test_host_abstract_socket_unreachable(box: Box) -> None:
    name = f"stockade-test-{uuid.uuid4().hex}"
    with _unix_server("\0" + name) as srv:
        r = box.run([PY, "-c", CONNECT, "unix", "@" + name])
        assert "REFUSED" in r.stdout, r.stdout + r.stderr
        assert _nothing_arrived(srv)


def test_own_unix_sockets_work(box: Box) -> None:
    script = textwrap.dedent("""
        import os, socket
        a, b = socket.socketpair(); a.sendall(b"x"); assert b.recv(1) == b"x"
        srv = socket.socket(socket.AF_UNIX); srv.bind("/tmp/own.sock"); srv.listen(1)
        c = socket.socket(socket.AF_UNIX); c.connect("/tmp/own.sock"); s, _ = srv.accept()
        c.sendall(b"hi"); assert s.recv(2) == b"hi"
        print("UNIX-OK")
    """)
    r = box.run([PY, "-c", script])
    assert "UNIX-OK" in r.stdout, r.stderr


def test_tcp_to_host_loopback_fails_when_network_off(box: Box) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.setblocking(False)
    with srv:
        r = box.run([PY, "-c", CONNECT, "tcp", str(srv.getsockname()[1])])
        assert "REFUSED" in r.stdout, r.stdout + r.stderr
        assert _nothing_arrived(srv)


def test_tcp_to_host_loopback_works_when_network_on(box: Box) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    with srv:
        policy = SandboxPolicy(workspace=str(box.ws), network=NetworkPolicy(mode=NetworkMode.ON))
        r = box.run([PY, "-c", CONNECT, "tcp", str(srv.getsockname()[1])], policy=policy)
        assert "CONNECTED" in r.stdout, r.stdout + r.stderr


def test_loopback_server_and_client_inside(box: Box) -> None:
    script = textwrap.dedent("""
        import socket, threading
        srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
        def serve():
            c, _ = srv.accept(); c.sendall(c.recv(5).upper()); c.close()
        t = threading.Thread(target=serve); t.start()
        cli = socket.create_connection(srv.getsockname(), timeout=5); cli.sendall(b"hello")
        print(cli.recv(5).decode()); t.join()
    """)
    r = box.run([PY, "-c", script])
    assert r.stdout.strip() == "HELLO", r.stderr


def test_git_status_in_workspace(box: Box) -> None:
    (box.ws / "new.txt").write_text("x")
    r = box.run("git status --porcelain && git log --oneline | wc -l && git diff --stat")
    assert r.returncode == 0, r.stderr
    assert "?? new.txt" in r.stdout


def test_python_multiprocessing_works(box: Box) -> None:
    script = textwrap.dedent("""
        import multiprocessing as mp
        from multiprocessing import shared_memory
        def sq(x): return x * x
        if __name__ == "__main__":
            lock = mp.Lock()
            with lock:
                pass
            shm = shared_memory.SharedMemory(create=True, size=16); shm.close(); shm.unlink()
            with mp.Pool(2) as p:
                print(sum(p.map(sq, range(5))))
    """)
    (box.ws / "mp_test.py").write_text(script)
    r = box.run([PY, "mp_test.py"])
    assert r.stdout.strip() == "30", r.stderr


def test_read_only_mode_writes_nothing(box: Box) -> None:
    policy = SandboxPolicy(mode=Mode.READ_ONLY, workspace=str(box.ws))
    r = box.run("echo x > ro.txt; cat .git/HEAD; git status --porcelain; echo t > /tmp/t && cat /tmp/t",
                policy=policy)
    assert not (box.ws / "ro.txt").exists()
    assert "ref: refs/heads/" in r.stdout and r.stdout.strip().endswith("t"), r.stderr


@pytest.mark.parametrize("mode", [Mode.READ_ONLY, Mode.WORKSPACE_WRITE])
def test_workspace_under_host_tmp(tmp_path: Path, box: Box, mode: Mode) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "input.txt").write_text("readable\n")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / ".env").write_text("TOKEN=TOPSECRET\n")
    sibling = tmp_path / "sibling.txt"
    sibling.write_text("host tmp file\n")
    policy = SandboxPolicy(mode=mode, workspace=str(ws), deny_read=(*DEFAULT_DENY_READ, ".env"))
    with _unix_server(str(ws / "lsp.sock")) as srv:
        r = box.run(f"cat input.txt; git status --porcelain; cat '{sibling}'; cat .env; echo w > out.txt;"
                    f" {PY} -c '{CONNECT}' unix lsp.sock", policy=policy)
        assert _nothing_arrived(srv)
    assert "readable" in r.stdout, r.stderr
    assert "host tmp file" not in r.stdout  # the rest of the host /tmp is not there
    assert "TOPSECRET" not in r.stdout
    assert "REFUSED" in r.stdout
    assert (ws / "out.txt").exists() == (mode is Mode.WORKSPACE_WRITE)
    assert not (ws / ".stockade").exists()


def test_symlinked_workspace(box: Box) -> None:
    link = box.outside / "ws-link"
    link.symlink_to(box.ws)
    r = box.run("pwd; echo via-link > f.txt", policy=SandboxPolicy(workspace=str(link)))
    assert r.returncode == 0, r.stderr
    assert (box.ws / "f.txt").read_text() == "via-link\n"


def test_deny_read_inside_workspace(box: Box) -> None:
    (box.ws / "secrets").mkdir()
    (box.ws / "secrets" / "token").write_text("TOPSECRET")
    (box.ws / ".env").write_text("API=TOPSECRET")
    policy = SandboxPolicy(workspace=str(box.ws), deny_read=(*DEFAULT_DENY_READ, "secrets", ".env"))
    r = box.run("cat secrets/token .env; ls secrets; rm -rf secrets .env; echo ok > other", policy=policy)
    assert "TOPSECRET" not in r.stdout + r.stderr
    assert (box.ws / "secrets" / "token").read_text() == "TOPSECRET"
    assert (box.ws / ".env").read_text() == "API=TOPSECRET"
    assert (box.ws / "other").exists()


def test_pid_namespace_hides_host_processes(box: Box) -> None:
    r = box.run("ls -d /proc/[0-9]* | wc -l")
    assert int(r.stdout.strip()) < 10


def test_concurrent_runs_share_a_stub(box: Box) -> None:
    """The first run's cleanup must not detach the second run's protection (REFERENCE 2.2)."""
    backend = BwrapBackend()
    policy = SandboxPolicy(workspace=str(box.ws))
    env = build_env(policy, dict(os.environ))
    slow = backend.launch(resolve(policy, box.host), box.host,
                          ["sh", "-c", "sleep 1; echo evil > .stockade/config.toml; ls -A .stockade"], env)
    proc = subprocess.Popen(slow.argv, env=slow.env, cwd=slow.cwd, pass_fds=slow.pass_fds,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        quick = backend.launch(resolve(policy, box.host), box.host, ["true"], env)
        try:
            subprocess.run(quick.argv, env=quick.env, cwd=quick.cwd, pass_fds=quick.pass_fds, check=True)
        finally:
            quick.cleanup()
        assert (box.ws / ".stockade").is_dir(), "the quick run removed a stub the slow run mounts on"
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        slow.cleanup()
    assert "Read-only file system" in err, (out, err)
    assert not (box.ws / ".stockade").exists()


def test_run_sockets_hidden_whatever_their_name_or_age(box: Box) -> None:
    """The host is shown through overlays: a socket bound after launch, or a second name of one, is
    unreachable too (here under /run)."""
    from sandbox.backends.bwrap import overlay_problem

    policy = SandboxPolicy(workspace=str(box.ws))
    problem = overlay_problem(resolve(policy, box.host), box.host)
    if problem or not os.access("/run", os.W_OK):
        pytest.skip(f"no overlay view of /run on this host: {problem}")
    d = Path(tempfile.mkdtemp(prefix="stockade-late-", dir="/run"))
    try:
        launch = BwrapBackend().launch(resolve(policy, box.host), box.host,
                                       [PY, "-c", CONNECT, "unix", str(d / "late.sock")],
                                       build_env(policy, dict(os.environ)))
        try:
            with _unix_server(str(d / "early.sock")) as srv:  # bound after the socket scan
                os.link(d / "early.sock", d / "late.sock")
                r = subprocess.run(launch.argv, env=launch.env, cwd=launch.cwd, pass_fds=launch.pass_fds,
                                   capture_output=True, text=True, timeout=30)
                assert "REFUSED" in r.stdout, r.stdout + r.stderr
                assert _nothing_arrived(srv)
        finally:
            launch.cleanup()
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("knob", ["/proc/sys/kernel/printk_ratelimit", "/proc/sys/vm/drop_caches",
                                  "/proc/sysrq-trigger"])
def test_host_kernel_knobs_not_writable(box: Box, knob: str) -> None:
    """sysctl writes are checked against uid 0, not capabilities: a root caller needs them read-only."""
    if not os.path.exists(knob):
        pytest.skip(f"no {knob}")
    before = open(knob).read() if os.access(knob, os.R_OK) and "sysrq" not in knob else None
    r = box.run([PY, "-c", f"import os\ntry:\n    os.open({knob!r}, os.O_WRONLY)\n    print('OPENED')\n"
                           "except OSError as e:\n    print('DENIED', e)"])
    assert "DENIED" in r.stdout, r.stdout + r.stderr
    if before is not None:
        assert open(knob).read() == before


def test_plan_argv_matches_launch_and_creates_nothing(box: Box) -> None:
    from sandbox.backends.bwrap import plan_argv

    policy = SandboxPolicy(workspace=str(box.ws))
    rp = resolve(policy, box.host)
    planned = plan_argv(rp, box.host, ["true"])
    assert not (box.ws / ".stockade").exists()  # no stub made by planning
    launch = BwrapBackend().launch(rp, box.host, ["true"], {})
    try:
        fd = launch.pass_fds[0] if launch.pass_fds else None
        expected = [str(fd) if a == "3" and fd is not None and planned[i - 1] == "--seccomp" else a
                    for i, a in enumerate(planned)]
        assert launch.argv == expected
    finally:
        launch.cleanup()

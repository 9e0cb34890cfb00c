"""The Landlock backend end to end: spawn with the Launch it builds, judge from the host side.

Modes: "auto" (as root: a mount namespace without a user namespace), "userns"
(forced, to cover the unprivileged path) and "none" (Landlock alone). Tests
that need a namespace skip the "none" mode, whose gaps `protections` reports.

Victims and the fake home live outside /tmp (a private /tmp inside would hide
them and make attacks fail for the wrong reason).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.env import build_env
from policies.host import HostFacts
from policies.model import Mode, NetworkMode, NetworkPolicy, SandboxPolicy
from policies.resolve import resolve
from sandbox import confine
from sandbox.backends.landlock import LandlockBackend
from sandbox.detect import host_facts

HOST = host_facts()
PY = sys.executable
pytestmark = [
    pytest.mark.landlock,
    pytest.mark.skipif(HOST.landlock_abi < 1 or not HOST.seccomp, reason="host lacks Landlock or seccomp"),
]
X86_64 = platform.machine() == "x86_64"
MODES = ["auto", "none"] + (["userns"] if HOST.is_root or HOST.userns else [])
SYSCALL = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(nr, *args)
    return ctypes.get_errno() if ret == -1 else 0
"""


@dataclasses.dataclass
class Box:
    ws: Path  # the workspace (a git repo), under /tmp
    outside: Path  # a directory outside every writable root and outside /tmp
    home: Path  # fake home with secrets
    host: HostFacts
    mode: str

    def policy(self, **changes: object) -> SandboxPolicy:
        return SandboxPolicy(workspace=str(self.ws)).replace(**changes)

    @property
    def has_ns(self) -> bool:
        return LandlockBackend(namespaces=self.mode).ns_mode(self.host) is not None  # type: ignore[arg-type]

    def run(self, cmd: list[str], policy: SandboxPolicy | None = None, *, timeout: float = 60,
            close_fds: bool = True, pass_fds: tuple[int, ...] = (), cwd: str | None = None,
            stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
        policy = policy or self.policy()
        rp = resolve(policy, self.host, cwd)
        launch = LandlockBackend(namespaces=self.mode).launch(  # type: ignore[arg-type]
            rp, self.host, cmd, build_env(policy, os.environ))
        launch.pass_fds = (*launch.pass_fds, *pass_fds)
        try:
            return subprocess.run(launch.argv, env=launch.env, cwd=launch.cwd, pass_fds=launch.pass_fds,
                                  preexec_fn=launch.preexec_fn, capture_output=True, text=True, timeout=timeout,
                                  start_new_session=True, close_fds=close_fds, stdin=stdin)
        finally:
            launch.cleanup()
            launch.cleanup()  # idempotent

    def py(self, code: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run([PY, "-c", code], **kw)  # type: ignore[arg-type]


@pytest.fixture(params=MODES)
def box(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Box]:
    base = Path(tempfile.mkdtemp(prefix=".stockade-lltest-", dir=os.path.expanduser("~")))
    try:
        ws = tmp_path / "ws"
        ws.mkdir()
        (ws / "src.txt").write_text("tracked\n")
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
        subprocess.run([*git, "init", "-q"], cwd=ws, check=True)
        subprocess.run([*git, "add", "."], cwd=ws, check=True)
        subprocess.run([*git, "commit", "-qm", "init"], cwd=ws, check=True)
        outside = base / "outside"
        outside.mkdir()
        (outside / "victim.txt").write_text("original\n")
        home = base / "home"
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "id_rsa").write_text("SECRET-KEY-MATERIAL\n")
        (home / ".netrc").write_text("machine x password SECRET-NETRC\n")
        host = dataclasses.replace(HOST, home=str(home))
        yield Box(ws=ws, outside=outside, home=home, host=host, mode=request.param)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def needs_ns(box: Box) -> None:
    if not box.has_ns:
        pytest.skip("needs a mount namespace (reported missing by protections())")


def snapshot(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mode, st.st_mtime_ns


# ---------------------------------------------------------------- filesystem


def test_workspace_write_works_and_outside_is_untouched(box: Box) -> None:
    victim = box.outside / "victim.txt"
    before = snapshot(victim)
    res = box.run(["sh", "-c", f"""
        echo hi > new.txt && echo wrote
        echo pwn > {victim}; echo pwn >> {victim}; : > {victim}; truncate -s0 {victim}
        mv {victim} {box.outside}/moved; rm -f {victim}; ln {victim} hard; ln -s {victim} soft
        echo pwn > soft
        touch {box.outside}/new; mkdir {box.outside}/dir
        chmod 777 {victim}; touch -d 2000-01-01 {victim}
        echo pwn > ~/.bashrc
        true"""])
    assert "wrote" in res.stdout, res.stderr
    assert (box.ws / "new.txt").read_text() == "hi\n"
    data, mode, mtime = snapshot(victim)
    assert data == before[0] == b"original\n"
    if box.has_ns:  # Landlock alone does not govern chmod/utimes (reported in protections)
        assert (mode, mtime) == before[1:]
    assert sorted(p.name for p in box.outside.iterdir()) == ["victim.txt"]
    assert not (box.home / ".bashrc").exists()
    assert not (box.ws / "hard").exists()


def test_git_dir_is_read_only(box: Box) -> None:
    needs_ns(box)
    config = box.ws / ".git" / "config"
    before = snapshot(config)
    res = box.run(["sh", "-c", """
        echo '[core] hooksPath=/x' >> .git/config; echo pwn > .git/config
        echo pwn > .git/hooks/pre-commit; rm -rf .git/objects; mv .git g2; rm -rf .git
        true"""])
    assert snapshot(config) == before, res.stderr
    assert not (box.ws / ".git" / "hooks" / "pre-commit").exists()
    assert (box.ws / ".git" / "objects").is_dir() and not (box.ws / "g2").exists()
    assert "Read-only file system" in res.stderr


def test_missing_protected_dir_cannot_be_created_and_leaves_no_stub(box: Box) -> None:
    needs_ns(box)
    res = box.run(["sh", "-c", "mkdir -p .stockade/x; echo x > .stockade/config.toml; ls -a; true"])
    assert ".stockade" in res.stdout.split()  # the stub is there during the run, read-only
    assert "Read-only file system" in res.stderr
    assert not (box.ws / ".stockade").exists()  # ...and gone after cleanup


def test_protections_are_honest_without_a_namespace(box: Box) -> None:
    rp = resolve(box.policy(), box.host)
    prot = LandlockBackend(namespaces=box.mode).protections(rp, box.host)  # type: ignore[arg-type]
    if box.has_ns:
        assert prot["protected-paths"] == "enforced" and prot["filesystem-write"] == "enforced"
    else:
        assert prot["protected-paths"].startswith("missing: Landlock cannot keep a path read-only")
        assert prot["filesystem-write"].startswith("best-effort")
    assert prot["tree-kill"] == "best-effort: process group + descendants"


def test_deny_read_secrets(box: Box) -> None:
    res = box.run(["sh", "-c", "cat ~/.ssh/id_rsa ~/.netrc; ls ~/.ssh; head -c 64 /etc/shadow | od -c | head -2; "
                               f"{PY} -c \"print(repr(open('{box.home}/.ssh/id_rsa').read()))\"; true"])
    out = res.stdout + res.stderr
    assert "SECRET" not in out
    shadow = Path("/etc/shadow").read_bytes()[:8].decode(errors="replace")
    if HOST.is_root and shadow.strip():
        assert f"{shadow[0]}   {shadow[1]}" not in res.stdout  # od -c output of the real first bytes


def test_read_anywhere_else_still_works(box: Box) -> None:
    res = box.run(["sh", "-c", "cat /etc/hostname >/dev/null && ls / >/dev/null && ls ~ && "
                               f"cat {box.outside}/victim.txt"])
    assert res.returncode == 0, res.stderr
    assert "original" in res.stdout


# ---------------------------------------------------------------- process and kernel


def test_capabilities_gone_no_new_privs_seccomp_on(box: Box) -> None:
    res = box.run(["cat", "/proc/self/status"])
    fields = dict(line.split(":\t", 1) for line in res.stdout.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0
    assert int(fields["CapAmb"], 16) == 0 and int(fields["CapInh"], 16) == 0
    if box.host.is_root or box.has_ns:
        assert int(fields["CapBnd"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"


def test_no_new_namespaces(box: Box) -> None:
    for cmd in (["unshare", "-U", "true"], ["unshare", "-m", "true"], ["unshare", "-n", "true"],
                ["unshare", "-Ur", "true"]):
        res = box.run(cmd)
        assert res.returncode != 0, (cmd, res.stdout)
        assert "Operation not permitted" in res.stderr, res.stderr


@pytest.mark.skipif(not X86_64, reason="x86_64 syscall numbers")
def test_dangerous_syscalls_return_eperm(box: Box) -> None:
    res = box.py(SYSCALL + "print(call(101, 0, 0, 0, 0), call(425, 8, 0), call(321, 0, 0, 0), "
                           "call(298, 0, 0, -1, -1, 0), call(323, 0), call(310, os.getppid(), 0, 0, 0, 0, 0))")
    assert res.stdout.split() == [str(errno.EPERM)] * 6, res.stderr


@pytest.mark.skipif(not X86_64, reason="x86_64 syscall numbers")
def test_clone3_enosys_and_threads_work(box: Box) -> None:
    res = box.py(SYSCALL + """
import threading
print(call(435, 0, 0))
out = []
ts = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sorted(out) == list(range(8)))""")
    assert res.stdout.split() == [str(errno.ENOSYS), "True"], res.stderr


@pytest.mark.skipif(not X86_64, reason="x86_64 syscall numbers")
def test_tiocsti_refused_with_high_bits(box: Box) -> None:
    # fd 999 does not exist: without the filter the kernel says EBADF, with it EPERM.
    res = box.py(SYSCALL + """
buf = ctypes.c_char(b"x")
print(call(16, 999, ctypes.c_ulong(0x5412), ctypes.byref(buf)),
      call(16, 999, ctypes.c_ulong(0xdeadbeef00005412), ctypes.byref(buf)),
      call(16, 999, ctypes.c_ulong(0x541C), ctypes.byref(buf)),
      call(16, 999, ctypes.c_ulong(0x541B), ctypes.byref(buf)))""")
    assert res.stdout.split() == [str(errno.EPERM)] * 3 + [str(errno.EBADF)], res.stderr


@pytest.mark.skipif(not X86_64, reason="x86_64 syscall numbers")
def test_x32_syscalls_kill_the_process(box: Box) -> None:
    res = box.py(SYSCALL + "print('before', flush=True); call(0x40000000 | 39); print('after')")
    assert res.stdout.split() == ["before"]
    assert res.returncode == -signal.SIGSYS


def test_socket_families(box: Box) -> None:
    res = box.py("""
import socket, errno
def try_(fam, typ=socket.SOCK_DGRAM):
    try:
        socket.socket(fam, typ).close(); return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
a, b = socket.socketpair(); a.sendall(b"x"); assert b.recv(1) == b"x"
print(try_(socket.AF_UNIX), try_(socket.AF_INET), try_(socket.AF_INET6), try_(socket.AF_NETLINK, socket.SOCK_RAW),
      try_(socket.AF_PACKET, socket.SOCK_RAW), try_(40), try_(38, socket.SOCK_SEQPACKET))""")
    inet = "ok" if box.has_ns else "EPERM"
    assert res.stdout.split() == ["ok", inet, inet, "EPERM", "EAFNOSUPPORT", "EAFNOSUPPORT", "EAFNOSUPPORT"], \
        res.stderr


def test_cannot_signal_or_inspect_host_processes(box: Box) -> None:
    if box.host.landlock_abi < 6:
        pytest.skip("signal scoping needs Landlock ABI 6")
    sleeper = subprocess.Popen(["sleep", "60"], env={"PATH": os.environ["PATH"], "MARK": "SECRET-ENV"})
    try:
        res = box.py(f"""
import os
for sig in (9, 15, 0):
    try:
        os.kill({sleeper.pid}, sig); print("sent", sig)
    except OSError as e:
        print("refused", sig, e.errno)
for name in ("environ", "mem", "root/etc/hostname"):
    try:
        print(open("/proc/{sleeper.pid}/" + name, "rb").read(64))
    except OSError as e:
        print("unreadable", name, e.errno)""")
        time.sleep(0.2)
        assert sleeper.poll() is None, res.stdout
        assert "sent" not in res.stdout and "SECRET" not in res.stdout, res.stdout
        assert res.stdout.count("unreadable") == 3, res.stdout + res.stderr
    finally:
        sleeper.kill()
        sleeper.wait()


def test_inherited_fds_are_closed_even_without_close_fds(box: Box) -> None:
    fd = os.open(str(box.outside / "victim.txt"), os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        res = box.run(["ls", "/proc/self/fd"], close_fds=False)
        passed = box.run(["ls", "/proc/self/fd"], pass_fds=(fd,))
    finally:
        os.close(fd)
    assert sorted(int(x) for x in res.stdout.split()) == [0, 1, 2, 3]  # 3: ls's own directory fd
    assert str(fd) in passed.stdout.split()


def test_setup_failure_is_fatal_and_visible() -> None:
    import ctypes

    def bad() -> int:
        ctypes.set_errno(errno.EPERM)
        return -1

    steps: list[confine.Step] = [("probe step", bad, (), False)]
    res = subprocess.run(["sh", "-c", "echo RAN"], preexec_fn=lambda: confine.run_steps(steps),
                         capture_output=True, text=True)
    assert res.returncode == confine.SETUP_FAILED == 125
    assert res.stdout == ""
    assert "stockade: sandbox setup failed: probe step: EPERM" in res.stderr


# ---------------------------------------------------------------- network


class _Spy:
    """Host-side TCP and UDP listeners on 127.0.0.1 that record what reaches them."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.tcp.settimeout(0.3)
        self.udp.settimeout(0.3)
        self.got: list[bytes] = []

    def collect(self) -> list[bytes]:
        try:
            conn, _ = self.tcp.accept()
            conn.settimeout(0.3)
            self.got.append(b"tcp-connect:" + conn.recv(100))
        except OSError:
            pass
        try:
            self.got.append(b"udp:" + self.udp.recv(100))
        except OSError:
            pass
        self.tcp.close()
        self.udp.close()
        return self.got


def test_host_loopback_unreachable_when_offline(box: Box) -> None:
    spy = _Spy()
    tcp, udp = spy.tcp.getsockname()[1], spy.udp.getsockname()[1]
    res = box.py(f"""
import socket
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::ffff:127.0.0.1")):
    try:
        s = socket.socket(fam); s.settimeout(1); s.connect((host, {tcp})); s.sendall(b"PWN"); print("connected")
    except OSError as e:
        print("tcp refused", e.errno)
    try:
        u = socket.socket(fam, socket.SOCK_DGRAM); u.sendto(b"PWN", (host, {udp})); print("udp sent")
    except OSError as e:
        print("udp refused", e.errno)""")
    assert spy.collect() == [], res.stdout
    assert "connected" not in res.stdout


def test_loopback_server_and_client_inside(box: Box) -> None:
    needs_ns(box)
    res = box.py("""
import socket, threading
srv = socket.create_server(("127.0.0.1", 0)); port = srv.getsockname()[1]
def serve():
    c, _ = srv.accept(); c.sendall(c.recv(10).upper()); c.close()
threading.Thread(target=serve).start()
cli = socket.create_connection(("127.0.0.1", port), timeout=5); cli.sendall(b"ping"); print(cli.recv(10).decode())
""", policy=box.policy())
    assert res.stdout.strip() == "PING", res.stderr


def test_host_pathname_unix_socket_refused(box: Box) -> None:
    if not box.has_ns and box.host.landlock_abi < 9:
        pytest.skip("needs a mount namespace or Landlock ABI 9 (reported missing by protections())")
    res = _connect_from_inside(box, str(box.outside / "docker.sock"), b"GET /containers/json")
    assert "connected" not in res.stdout, res.stdout + res.stderr


def test_host_abstract_unix_socket_unreachable(box: Box) -> None:
    if not box.has_ns and box.host.landlock_abi < 6:
        pytest.skip("needs a network namespace or Landlock ABI 6")
    res = _connect_from_inside(box, f"\0stockade-test-{uuid.uuid4().hex}", b"x")
    assert "refused" in res.stdout, res.stdout + res.stderr


def _connect_from_inside(box: Box, address: str, payload: bytes):  # type: ignore[no-untyped-def]
    """A host Unix listener at `address`; the sandboxed command tries to connect and send `payload`.

    Fails the test if the host side accepted a connection; returns the command's result.
    """
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(address)
    srv.listen(4)
    srv.settimeout(0.3)
    try:
        res = box.py(f"""
import socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect({address!r}); s.sendall({payload!r}); print("connected")
except OSError as e:
    print("refused", e.errno)""")
        with pytest.raises(OSError):
            srv.accept()
        return res
    finally:
        srv.close()


def test_network_on_reaches_host_loopback(box: Box) -> None:
    spy = _Spy()
    port = spy.tcp.getsockname()[1]
    res = box.py(f"""
import socket
s = socket.create_connection(("127.0.0.1", {port}), timeout=2); s.sendall(b"HELLO"); print("sent")""",
                 policy=box.policy(network=NetworkPolicy(mode=NetworkMode.ON)))
    assert "sent" in res.stdout, res.stderr
    assert spy.collect() == [b"tcp-connect:HELLO"]


# ---------------------------------------------------------------- things that must work


def test_private_tmp(box: Box) -> None:
    marker = f"stockade-marker-{uuid.uuid4().hex}"
    host_file = Path("/tmp") / f"stockade-host-{uuid.uuid4().hex}"
    host_file.write_text("host")
    try:
        res = box.run(["sh", "-c", f'echo $TMPDIR; echo x > "$TMPDIR/{marker}" && cat "$TMPDIR/{marker}"; '
                                   f'test -e {host_file} && echo host-visible; echo y > /tmp/{marker}-direct; true'])
        tmpdir = res.stdout.split()[0]
        assert "x" in res.stdout.split(), res.stderr
        assert not Path(tmpdir, marker).exists() and not Path("/tmp", marker).exists()
        assert not Path(f"/tmp/{marker}-direct").exists()
        if box.has_ns:
            assert tmpdir == "/tmp" and "host-visible" not in res.stdout
        else:
            assert tmpdir != "/tmp" and not os.path.exists(tmpdir)  # per-run TMPDIR removed afterwards
    finally:
        host_file.unlink()


def test_git_status_diff_log(box: Box) -> None:
    (box.ws / "src.txt").write_text("changed\n")
    res = box.run(["sh", "-c", "git status --porcelain && git diff --stat && git log --oneline"])
    assert res.returncode == 0, res.stderr
    assert "M src.txt" in res.stdout and "init" in res.stdout


def test_multiprocessing_pool_semaphore_and_shared_memory(box: Box) -> None:
    res = box.py("""
import multiprocessing as mp
from multiprocessing import shared_memory
sem = mp.Semaphore(2); sem.acquire(); sem.release()
with mp.Pool(2) as pool:
    print(pool.map(abs, [-1, -2, -3]))
shm = shared_memory.SharedMemory(create=True, size=16); shm.buf[0] = 7; print(shm.buf[0]); shm.close(); shm.unlink()
""")
    assert res.stdout.split() == ["[1,", "2,", "3]", "7"], res.stderr


def test_devices_and_read_only_policy(box: Box) -> None:
    policy = box.policy(mode=Mode.READ_ONLY)
    res = box.run(["sh", "-c", "echo x > /dev/null && head -c 4 /dev/urandom | wc -c && head -c 2 /dev/zero | wc -c"
                               " && echo y > src.txt; cat src.txt"], policy=policy)
    assert res.stdout.split()[:2] == ["4", "2"], res.stderr
    assert (box.ws / "src.txt").read_text() == "tracked\n"
    assert "tracked" in res.stdout


def test_cwd_inside_protected_dir_cannot_write(box: Box) -> None:
    needs_ns(box)
    before = snapshot(box.ws / ".git" / "config")
    res = box.run(["sh", "-c", "echo pwn > config; pwd"], cwd=str(box.ws / ".git"))
    assert snapshot(box.ws / ".git" / "config") == before, res.stdout


def test_stale_per_run_tmp_dirs_are_swept(tmp_path: Path) -> None:
    from sandbox.backends import landlock as ll

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{ll.RUN_TMP_PREFIX}{dead.pid}-abc"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "f").write_text("x")
    os.chmod(stale / "sub", 0)
    alive = tmp_path / f"{ll.RUN_TMP_PREFIX}{os.getpid()}-def"
    alive.mkdir()
    other = tmp_path / "unrelated"
    other.mkdir()
    ll._sweep_stale(str(tmp_path))
    assert not stale.exists() and alive.exists() and other.exists()


def test_deny_read_through_a_host_bind_mount_alias(box: Box) -> None:
    if not HOST.is_root:
        pytest.skip("needs root to bind-mount on the host")
    alias = box.outside / "home-alias"
    alias.mkdir()
    subprocess.run(["mount", "--bind", str(box.home), str(alias)], check=True)
    try:
        res = box.run(["sh", "-c", f"cat {alias}/.ssh/id_rsa {alias}/.netrc; ls {alias}; true"])
        assert "SECRET" not in res.stdout + res.stderr
    finally:
        subprocess.run(["umount", str(alias)], check=True)


def test_symlinked_git_dir_is_pinned(box: Box) -> None:
    needs_ns(box)
    shutil.move(box.ws / ".git", box.ws / "realgit")
    os.symlink("realgit", box.ws / ".git")
    before = snapshot(box.ws / "realgit" / "config")
    res = box.run(["sh", "-c", "echo pwn >> .git/config; rm -f .git; ln -sfn /tmp .git; git status --short; true"])
    assert os.readlink(box.ws / ".git") == "realgit", res.stderr
    assert snapshot(box.ws / "realgit" / "config") == before


@pytest.mark.skipif(not HOST.is_root or not HOST.userns, reason="needs root to become an unprivileged user")
@pytest.mark.parametrize("namespaces", ["auto", "none"])
def test_unprivileged_caller(namespaces: str) -> None:
    """The non-root paths for real: the child drops to uid 65534 before confining itself,
    then gets a user namespace ("auto") or Landlock alone ("none")."""
    nobody = 65534
    ws = Path(tempfile.mkdtemp(prefix="stockade-lltest-ws-", dir="/srv" if os.path.isdir("/srv") else None))
    try:
        (ws / ".git").mkdir()
        (ws / ".git" / "config").write_text("cfg\n")
        for p in (ws, ws / ".git", ws / ".git" / "config"):
            os.chown(p, nobody, nobody)
        host = dataclasses.replace(HOST, uid=nobody, gid=nobody, home="/nonexistent")
        policy = SandboxPolicy(workspace=str(ws))
        backend = LandlockBackend(namespaces=namespaces)  # type: ignore[arg-type]
        assert backend.ns_mode(host) == ("userns" if namespaces == "auto" else None)
        launch = backend.launch(resolve(policy, host), host, ["sh", "-c", (
            "id -u; grep -E 'CapEff|CapBnd|NoNewPrivs|Seccomp:' /proc/self/status; echo ok > w.txt; "
            "echo pwn > .git/config; mkdir .stockade/x; unshare -U true; touch /etc/x; ls /tmp | wc -l")],
            build_env(policy, os.environ))
        try:
            res = subprocess.run(launch.argv, env=launch.env, cwd=launch.cwd, pass_fds=launch.pass_fds,
                                 preexec_fn=launch.preexec_fn, capture_output=True, text=True, timeout=60,
                                 user=nobody, group=nobody, extra_groups=[], start_new_session=True)
        finally:
            launch.cleanup()
        fields = dict(line.split(":\t", 1) for line in res.stdout.splitlines() if ":\t" in line)
        assert res.stdout.split()[:1] == [str(nobody)], (res.returncode, res.stderr)
        assert int(fields["CapEff"], 16) == 0, res.stdout
        assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"
        assert (ws / "w.txt").read_text() == "ok\n"
        assert not (ws / ".stockade").exists() and not Path("/etc/x").exists()
        assert "Operation not permitted" in res.stderr  # unshare -U
        if namespaces == "auto":
            assert int(fields["CapBnd"], 16) == 0, res.stdout
            assert (ws / ".git" / "config").read_text() == "cfg\n"
            assert res.stdout.split()[-1] == "0"  # fresh, empty /tmp
    finally:
        shutil.rmtree(ws, ignore_errors=True)

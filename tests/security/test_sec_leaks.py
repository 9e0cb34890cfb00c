"""THREATS.md "Leaks into the sandbox": secret-looking env vars and the caller's extra fds stay outside."""

from __future__ import annotations

import os
import socket

import pytest
from conftest import ENV_SECRETS, PY

ENV_PROBES = {
    "env": "env",
    "shell-set": "set",
    "proc-self-environ": "tr '\\0' '\\n' < /proc/self/environ",
    "grandchild": f"sh -c 'sh -c \"{PY} -c \\\"import os; print(dict(os.environ))\\\"\"'",
    "proc-parent-environ": "cat /proc/$PPID/environ /proc/1/environ",
}


@pytest.mark.parametrize("how", ENV_PROBES)
def test_secret_env_vars_not_passed(backend, mode, how, box, run_in):
    r = run_in(backend, mode, ENV_PROBES[how] + " 2>&1; echo HOME-IS=$HOME")
    leaked = [n for n in box.leaked(r.out) if n in ENV_SECRETS]
    assert not leaked, f"secret env vars reached the command via {how!r}: {leaked}"
    assert f"HOME-IS={box.home}" in r.out, f"the caller's ordinary env did not arrive\n{r.why}"


FD_PROBE = r'''
import glob, os, sys
mark, caller, caller_fd = sys.argv[1].encode(), sys.argv[2], sys.argv[3]
for path in [f"/proc/{caller}/fd/{caller_fd}", *glob.glob(f"/proc/{os.getppid()}/fd/*")]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        print("VIA-PROC", path, os.pread(fd, 200, 0) if os.path.isfile(path) else os.read(fd, 200), flush=True)
    except OSError as exc:
        print("proc fd failed", path, exc)
for n in range(3, 1024):
    try:
        target = os.readlink(f"/proc/self/fd/{n}")
    except OSError:
        target = None
    try:
        os.fstat(n)
    except OSError:
        continue
    print("OPEN", n, target, flush=True)
    try:
        print("READ", n, os.pread(n, 200, 0) if target and target.startswith("/") else os.read(n, 200), flush=True)
    except OSError as exc:
        print("read failed", n, exc)
    if target and target.startswith("socket:"):
        try:
            os.write(n, mark)
        except OSError as exc:
            print("write failed", n, exc)
'''


def test_caller_fds_not_inherited(backend, mode, box, spy, run_in):
    """An inheritable fd on a deny-read file and an inheritable socket connected to a host server:
    neither is open inside (nothing read, nothing written to the server), and the caller's own copy
    cannot be opened through /proc/<caller>/fd either."""
    secret_path = box.home / ".ssh" / "fd_secret"
    fd = os.open(secret_path, os.O_RDONLY)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(spy.unix["outside-dir"]))
    probe = box.root / "fdprobe.py"
    probe.write_text(FD_PROBE)
    try:
        os.set_inheritable(fd, True)
        sock.set_inheritable(True)
        r = run_in(backend, mode, f"{PY} {probe} {box.marker} {os.getpid()} {fd} 2>&1; ls -l /proc/self/fd/ 2>&1")
    finally:
        os.close(fd)
        sock.close()
    assert box.secrets["fd"] not in r.out, f"the secret fd was readable inside (fd {fd})"
    assert str(secret_path) not in r.out, f"the secret fd (fd {fd}) was open inside\n{r.why}"
    data = [e for e in spy.seen_by("outside-dir") if e[1] == "data"]
    assert not data, f"the inherited socket fd carried data to the host server: {data}\n{r.why}"

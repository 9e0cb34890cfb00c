"""THREATS.md "Must be denied", process and kernel: host processes stay alive, untraced and unread."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from conftest import PY, Sampler, cmdline_pids, drain, healthy, host_mounts_under, proc_status, snap, wait_until

SIGNALS = {
    "kill-9": "kill -9 {pid}",
    "kill-stop": "kill -STOP {pid}",
    "kill-group": "kill -9 -{pid}",
    "python-kill": PY + " -c 'import os, signal; os.kill({pid}, signal.SIGKILL)'",
    "pidfd": PY + " -c 'import os, signal; fd = os.pidfd_open({pid}); signal.pidfd_send_signal(fd, signal.SIGKILL)'",
}


@pytest.mark.parametrize("how", SIGNALS)
def test_cannot_signal_host_process(backend, mode, how, sleeper, run_in):
    r = run_in(backend, mode, SIGNALS[how].format(pid=sleeper.pid) + " 2>&1; echo attempted")
    time.sleep(0.02)  # a SIGKILL is delivered before kill() returns; STOP needs no time either
    assert healthy(sleeper), f"host sleeper hit by {how!r} (state {sleeper.poll()})\n{r.why}"


def test_cannot_signal_the_caller(backend, mode, run_in):
    """SIGUSR2 to the process that runs the sandbox (and to the command's parent) is never delivered."""
    got: list[int] = []
    old = signal.signal(signal.SIGUSR2, lambda *_: got.append(1))
    try:
        r = run_in(backend, mode, f"kill -USR2 {os.getpid()} $PPID 2>&1; echo attempted")
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert not got, f"the caller received SIGUSR2 from the sandbox\n{r.why}"


PTRACE_ATTACH = (
    "import ctypes, time\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "for req in (16, 0x4206):  # PTRACE_ATTACH, PTRACE_SEIZE\n"
    "    rc = libc.ptrace(ctypes.c_long(req), ctypes.c_long({pid}), None, None)\n"
    "    print(req, rc, ctypes.get_errno(), flush=True)\n"
    "    time.sleep(0.1)\n"
)
PTRACES = {
    "python-ptrace": f"{PY} -c '{PTRACE_ATTACH}'",
    "strace": "timeout 1 strace -p {pid} -o /dev/null",
    "gdb-style-proc-mem-write": (PY + " -c \"f = open('/proc/{pid}/mem', 'r+b'); import re; "
                                 "m = open('/proc/{pid}/maps').read(); "
                                 "a = int(re.search('([0-9a-f]+)-.*\\\\[stack\\\\]', m).group(1), 16); "
                                 "f.seek(a); f.write(b'PWN{marker}')\""),
}


@pytest.mark.parametrize("how", PTRACES)
def test_cannot_ptrace_host_process(backend, mode, how, box, sleeper, run_in):
    def tracer() -> str:
        return proc_status(sleeper.pid).get("TracerPid", "0").strip()

    with Sampler(tracer, 0.005) as watch:
        r = run_in(backend, mode, PTRACES[how].format(pid=sleeper.pid, marker=box.marker) + " 2>&1; echo attempted")
    traced = sorted({t for t in watch.samples if t != "0"})
    assert not traced, f"host sleeper was traced by {traced} via {how!r}\n{r.why}"
    assert healthy(sleeper), r.why
    assert f"PWN{box.marker}".encode() not in stack_of(sleeper.pid), f"the sandbox wrote into a host process\n{r.why}"


def stack_of(pid: int) -> bytes:
    """The [stack] mapping of a host process, read from the host."""
    with open(f"/proc/{pid}/maps", encoding="ascii") as fh:
        line = next(ln for ln in fh if ln.rstrip().endswith("[stack]"))
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(lo)
        return mem.read(hi - lo)


PROC_READS = {
    "environ": "cat /proc/{pid}/environ; tr '\\0' '\\n' < /proc/{pid}/environ",
    "all-environs": "cat /proc/*/environ",
    "mem": (PY + " -c \"import re; m = open('/proc/{pid}/maps').read(); "
            "lo, hi = (int(x, 16) for x in re.search('([0-9a-f]+)-([0-9a-f]+) .*\\\\[stack\\\\]', m).groups()); "
            "f = open('/proc/{pid}/mem', 'rb'); f.seek(lo); print(f.read(hi - lo))\""),
    "process-vm-readv": (
        PY + " -c \"import ctypes, re; libc = ctypes.CDLL(None, use_errno=True); "
        "m = open('/proc/{pid}/maps').read(); "
        "lo, hi = (int(x, 16) for x in re.search('([0-9a-f]+)-([0-9a-f]+) .*\\\\[stack\\\\]', m).groups()); "
        "n = hi - lo; buf = ctypes.create_string_buffer(n); "
        "loc = (ctypes.c_void_p * 2)(ctypes.addressof(buf), n); rem = (ctypes.c_void_p * 2)(lo, n); "
        "rc = libc.syscall(310, {pid}, loc, 1, rem, 1, 0); print(rc, ctypes.get_errno(), buf.raw[:max(rc, 0)])\""),
}


PROC_READS.update({
    "proc-pid-fd": "cat /proc/{pid}/fd/{fd}; cat /proc/{pid}/fdinfo/{fd}",
    "pidfd_getfd": (PY + " -c \"import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
                    "pfd = os.pidfd_open({pid}); fd = libc.syscall(438, pfd, {fd}, 0); "
                    "print(fd, ctypes.get_errno()); print(os.pread(fd, 4096, 0))\""),
})


@pytest.mark.parametrize("what", PROC_READS)
def test_cannot_read_host_process_memory_or_env(backend, mode, what, box, sleeper, run_in):
    """A host process's environment, memory and open files (it holds ~/.ssh/id_rsa open) stay unread."""
    r = run_in(backend, mode, PROC_READS[what].format(pid=sleeper.pid, fd=sleeper.secret_fd) + " 2>&1; echo attempted")
    leaked = [s for s in ("sleeper", "ssh") if box.secrets[s] in r.out]
    assert not leaked, f"host process secrets {leaked} read via {what!r}\n{r.protections}"


def _caps(text: str) -> dict[str, str]:
    return dict(ln.split(":\t", 1) for ln in text.splitlines() if ln.startswith(("Cap", "NoNewPrivs", "Seccomp:")))


CAP_PROBES = {
    "shell": "cat /proc/self/status",
    "setsid-child": "setsid sh -c 'cat /proc/self/status'",
    "setuid-root-binary": "{suid_cat} /proc/self/status",
    "file-caps-binary": "{fcap_cat} /proc/self/status",
    "setresuid-then-exec": (PY + " -c \"import os\nfor f in (lambda: os.setresuid(0, 0, 0), lambda: os.setuid(0), "
                            "lambda: os.setgroups([0])):\n    try: f()\n    except OSError: pass\n"
                            "os.execv('/bin/cat', ['cat', '/proc/self/status'])\""),
}


@pytest.mark.parametrize("how", CAP_PROBES)
def test_no_capabilities_inside(backend, mode, how, box, run_in):
    """CapEff/CapPrm/CapBnd/CapAmb/CapInh all 0, NoNewPrivs 1, a seccomp filter, even for a root caller
    and after exec of a setuid-root or file-capability binary."""
    suid, fcap = box.root / "suid-cat", box.root / "fcap-cat"
    shutil.copy("/bin/cat", suid)
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
    shutil.copy("/bin/cat", fcap)
    if how == "file-caps-binary":
        if not shutil.which("setcap"):
            pytest.skip("setcap not installed")
        subprocess.run(["setcap", "cap_sys_admin,cap_dac_override,cap_setuid+eip", str(fcap)], check=True, timeout=10)
    r = run_in(backend, mode, CAP_PROBES[how].format(suid_cat=suid, fcap_cat=fcap))
    caps = _caps(r.stdout.decode())
    if how.endswith("-binary") and not caps and r.exit_code == 126 and "Operation not permitted" in r.out:
        return  # the kernel refused to exec a privileged binary it could not honour: nothing gained
    assert caps, f"no /proc/self/status output\n{r.why}"
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(caps[key], 16) == 0, f"{key}={caps[key]} via {how!r}\n{r.why}"
    assert caps["NoNewPrivs"].strip() == "1", r.why
    assert caps["Seccomp"].strip() == "2", f"no seccomp filter in a child ({how!r})\n{r.why}"


# `{target}` is a directory of its own per attempt (host-side: nothing mounted on it, its victim
# file unchanged); all attempts run in one sandboxed command per (backend, mode).
UNDO = {
    "unshare-U": "unshare -U true",
    "unshare-r": "unshare -r true",
    "unshare-m": "unshare -m true",
    "unshare-Urm": "unshare -Urm true",
    "unshare-n": "unshare -n true",
    "unshare-Urm-remount": ("unshare -Urm sh -c 'mount -o remount,bind,rw {target}; mount -o remount,rw /; "
                            "echo pwned > {target}/victim.txt'"),
    "mount-tmpfs": "mount -t tmpfs none {target}",
    "mount-bind": "mount --bind {ws} {target}",
    "chroot": "chroot / true",
    "pivot_root": (PY + " -c \"import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True); "
                   "rc = libc.syscall(155, b'.', b'.'); "
                   "sys.exit(0 if rc == 0 or ctypes.get_errno() not in (1, 38) else 1)\""),
    "nsenter-host": "nsenter -t {pid} -m -u -n -p true",
}


_undo_results: dict[tuple[str, str], dict[str, tuple[str, list[str], bool, str]]] = {}


def _undo_all(backend: str, mode: str, request: pytest.FixtureRequest) -> dict[str, tuple[str, list[str], bool, str]]:
    box, sleeper, run_in = (request.getfixturevalue(n) for n in ("box", "sleeper", "run_in"))
    script, before = [], {}
    for how, cmd in UNDO.items():
        target = box.outside / how
        target.mkdir()
        (target / "victim.txt").write_text("victim\n")
        before[how] = snap(target)
        cmd = cmd.format(target=target, ws=box.ws, pid=sleeper.pid)
        script.append(f"{cmd} >/dev/null 2>&1; echo RC {how} $?")
    r = run_in(backend, mode, "\n".join(script))
    rcs = dict(line.split()[1:3] for line in r.out.splitlines() if line.startswith("RC "))
    missing = "refused" if r.refused else "?"  # nothing ran at all: nothing to undo
    return {how: (rcs.get(how, missing), host_mounts_under(box.outside / how), snap(box.outside / how) != before[how],
                  r.why) for how in UNDO}


@pytest.mark.parametrize("how", UNDO)
def test_cannot_undo_the_sandbox(backend, mode, how, request):
    """The exit status is the kernel's answer here (pivot_root: anything but EPERM/ENOSYS means it got
    past the filter); the host side is checked too: nothing mounted on the host, victim unchanged."""
    if (backend, mode) not in _undo_results:
        _undo_results[backend, mode] = _undo_all(backend, mode, request)
    rc, mounts, changed, why = _undo_results[backend, mode][how]
    assert not mounts, f"{how!r} mounted on the host: {mounts}\n{why}"
    assert not changed, f"{how!r} changed the victim on the host\n{why}"
    assert rc not in ("0", "?"), f"{how!r} succeeded inside the sandbox (rc={rc})\n{why}"


# Kernel interfaces: each call is made in a forked child with arguments that would succeed
# (or fail harmlessly with EINVAL/EBADF/EFAULT) if it were allowed; denied means EPERM/ENOSYS/EACCES
# (ENOSPC for user namespaces under bwrap's --disable-userns).
SYSCALL_SCRIPT = r'''
import ctypes, errno, json, os, struct, sys
MARK = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
keep = []

def p(data):
    buf = ctypes.create_string_buffer(data, len(data) + 1)
    keep.append(buf)
    return ctypes.addressof(buf)

def call(nr, *args, forks=False):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        ctypes.set_errno(0)
        rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        err = ctypes.get_errno()
        if rc == 0 and forks:
            os._exit(0)  # the clone child
        os.write(w, json.dumps([rc, err]).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.waitpid(pid, 0)
    os.close(r)
    return json.loads(data) if data else [-1, -1]

def iov(n):
    buf = ctypes.create_string_buffer(n)
    keep.append(buf)
    vec = (ctypes.c_void_p * 2)(ctypes.addressof(buf), n)
    keep.append(vec)
    return ctypes.addressof(vec)

perf = struct.pack("IIQQQQQ", 1, 64, 0, 0, 0, 0, (1 << 0) | (1 << 5) | (1 << 6)).ljust(64, b"\0")
bpf_attr = struct.pack("IIII", 2, 4, 4, 1).ljust(72, b"\0")
clone_args = struct.pack("QQQQQQQQQQQ", 0x10000000, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0)
res = {
    "io_uring_setup": call(425, 8, p(bytes(120))),
    "io_uring_enter": call(426, -1, 0, 0, 0, 0, 0),
    "io_uring_register": call(427, -1, 0, 0, 0),
    "bpf": call(321, 0, p(bpf_attr), 72),
    "perf_event_open": call(298, p(perf), 0, -1, -1, 0),
    "keyctl": call(250, 0, -3, 1),
    "add_key": call(248, p(b"user"), p(MARK.encode()), p(b"x"), 1, -4),
    "request_key": call(249, p(b"user"), p(b"stockade-nonexistent"), 0, 0),
    "userfaultfd": call(323, os.O_CLOEXEC | 1),
    "ptrace": call(101, 0, 0, 0, 0),
    "process_vm_readv": call(310, os.getpid(), iov(64), 1, iov(64), 1, 0),
    "process_vm_writev": call(311, os.getpid(), iov(64), 1, iov(64), 1, 0),
    "init_module": call(175, 0, 0, p(b"")),
    "finit_module": call(313, -1, p(b""), 0),
    "delete_module": call(176, p(b"stockade_nonexistent"), os.O_NONBLOCK),
    "reboot": call(169, 0, 0, 0, 0),
    "kexec_load": call(246, 0, 0, 0, 0x80),  # an unknown flag: EINVAL, never "unload the loaded image"
    "kexec_file_load": call(320, -1, -1, 0, p(b""), 0),
    "mount": call(165, p(b"none"), p(b"/nonexistent-stockade"), p(b"tmpfs"), 0, 0),
    "umount2": call(166, p(b"/nonexistent-stockade"), 0),
    "pivot_root": call(155, p(b"."), p(b".")),
    "chroot": call(161, p(b"/")),
    "unshare(CLONE_NEWUSER)": call(272, 0x10000000),
    "unshare(CLONE_NEWNS)": call(272, 0x00020000),
    "clone(CLONE_NEWUSER)": call(56, 0x10000000 | 17, 0, 0, 0, 0, forks=True),
    "clone3(CLONE_NEWUSER)": call(435, p(clone_args), len(clone_args), forks=True),
    "open_tree(OPEN_TREE_CLONE)": call(428, -100, p(b"/"), 1),
    "fsopen": call(430, p(b"tmpfs"), 0),
}
try:
    fd = os.open("/dev/userfaultfd", os.O_RDONLY | os.O_CLOEXEC)
    res["/dev/userfaultfd"] = [libc.ioctl(fd, ctypes.c_ulong(0xAA00), 0), ctypes.get_errno()]
except OSError as exc:
    res["/dev/userfaultfd"] = [-1, exc.errno]
print("RESULTS=" + json.dumps(res))
'''
SYSCALLS = ("io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open", "keyctl",
            "add_key", "request_key", "userfaultfd", "/dev/userfaultfd", "ptrace", "process_vm_readv",
            "process_vm_writev", "init_module", "finit_module", "delete_module", "reboot", "kexec_load",
            "kexec_file_load", "mount", "umount2", "pivot_root", "chroot", "unshare(CLONE_NEWUSER)",
            "unshare(CLONE_NEWNS)", "clone(CLONE_NEWUSER)", "clone3(CLONE_NEWUSER)",
            "open_tree(OPEN_TREE_CLONE)", "fsopen")
DENIED_ERRNOS = {1: "EPERM", 13: "EACCES", 38: "ENOSYS", 28: "ENOSPC"}
_syscall_results: dict[tuple[str, str], tuple[dict, str, str]] = {}


@pytest.mark.parametrize("name", SYSCALLS)
def test_dangerous_kernel_interfaces_denied(backend, mode, name, request):
    key = (backend, mode)
    if key not in _syscall_results:  # one sandboxed probe per (backend, mode), shared by the names
        box, run_in = request.getfixturevalue("box"), request.getfixturevalue("run_in")
        path = box.root / "syscalls.py"
        path.write_text(SYSCALL_SCRIPT)
        r = run_in(backend, mode, f"{PY} {path} {box.marker}")
        line = next((ln for ln in r.stdout.decode().splitlines() if ln.startswith("RESULTS=")), "RESULTS={}")
        _syscall_results[key] = (json.loads(line[8:]), box.marker, r.why)
    results, marker, why = _syscall_results[key]
    assert name in results, f"the probe did not run\n{why}"
    rc, err = results[name]
    allowed = {**DENIED_ERRNOS, 2: "ENOENT"} if name.startswith("/dev/") else DENIED_ERRNOS
    assert rc == -1 and err in allowed, \
        f"{name} was not refused inside the sandbox: rc={rc} errno={err} ({os.strerror(err) if err > 0 else ''})"
    assert not _drop_keys(marker), "a key made inside the sandbox landed in the host's user keyring"


def _drop_keys(marker: str) -> list[int]:
    """Ids of host keys described with `marker` (invalidated, so a failed run leaves none behind)."""
    import ctypes

    with open("/proc/keys", encoding="utf-8") as fh:
        ids = [int(line.split()[0], 16) for line in fh if marker in line]
    for key in ids:
        ctypes.CDLL(None, use_errno=True).syscall(250, 21, key)  # keyctl(KEYCTL_INVALIDATE)
    return ids


TIOCSTI = {
    "TIOCSTI": 0x5412,
    "TIOCSTI-high-bits": 0xFFFFFFFF00005412,
    "TIOCLINUX-paste": 0x541C,
}
INJECT = '''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
req, payload = int(sys.argv[1]), sys.argv[2].encode() + b"\\n"
try:
    os.setsid()
except OSError:
    pass
libc.syscall(ctypes.c_long(16), ctypes.c_long(0), ctypes.c_ulong(0x540E), ctypes.c_long(0))  # TIOCSCTTY
errs = set()
if req == 0x541C:
    sel = ctypes.create_string_buffer(bytes([3]))  # TIOCL_PASTESEL
    libc.syscall(ctypes.c_long(16), ctypes.c_long(0), ctypes.c_ulong(req), sel)
    errs.add(ctypes.get_errno())
else:
    for ch in payload:
        c = ctypes.c_char(ch)
        rc = libc.syscall(ctypes.c_long(16), ctypes.c_long(0), ctypes.c_ulong(req), ctypes.byref(c))
        errs.add(ctypes.get_errno() if rc else 0)
print("errnos", sorted(errs))
'''


@pytest.mark.parametrize("how", TIOCSTI)
def test_no_keystroke_injection(backend, mode, how, box, pty_pair, run_in):
    """The command gets a pty as stdin (as an interactive caller would give it) and tries to push input
    into it; the host reads both ends of the pty afterwards."""
    master, slave = pty_pair
    path = box.root / "inject.py"
    path.write_text(INJECT)
    payload = "INJ" + box.marker
    r = run_in(backend, mode, f"{PY} {path} {TIOCSTI[how]} {payload}", stdin=slave)
    echoed, queued = drain(master), drain(slave)
    assert payload.encode() not in echoed + queued, f"{how}: keystrokes reached the caller's terminal\n{r.why}"
    if how.startswith("TIOCLINUX"):
        # Only a VT console answers TIOCLINUX, so nothing can be seen from the host on a pty:
        # the kernel's answer must be the filter's EPERM, not the tty layer's ENOTTY/EINVAL.
        assert "errnos [1]" in r.out, f"TIOCLINUX was not refused by the filter\n{r.why}"


# Process lifetime does not depend on the filesystem mode: these slow tests run in one mode only.
LIFETIME_MODE = "workspace-write"
BOMB = '''
# {marker}
import os, time
def bomb(depth):
    while depth < 9:
        try:
            pid = os.fork()
        except OSError:
            time.sleep(0.05)
            continue
        if pid == 0:
            depth += 1
            continue
        depth += 1
    time.sleep(60)
bomb(0)
'''


def test_fork_bomb_is_contained(backend, box, run_in):
    """pids=64: the bomb never has more than 64 processes, the run ends, the host can still fork,
    and no bomb process survives."""
    with Sampler(lambda: len(cmdline_pids(box.marker)), 0.02) as watch:
        r = run_in(backend, LIFETIME_MODE, BOMB.format(marker=box.marker), py=True, limits={"pids": 64}, timeout=2)
    assert r.duration < 10, r.why
    assert subprocess.run(["true"], timeout=10, check=False).returncode == 0
    assert wait_until(lambda: not cmdline_pids(box.marker), 3), f"bomb processes survived\n{r.why}"
    assert max(watch.samples) <= 64, f"the bomb reached {max(watch.samples)} processes (pids=64)\n{r.why}"


ESCAPEES = {
    "background": "sh -c 'sleep 60 0.{n}; : {m}' &",
    "setsid": "setsid sh -c 'sleep 60 0.{n}; : {m}' &",
    "double-fork": "( ( sleep 61 0.{n}; : {m} ) & ) ",
    "nohup-setsid-fork": "nohup setsid -f sh -c 'sleep 62 0.{n}; : {m}' >/dev/null 2>&1",
    "leave-cgroup": ("for c in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do echo $$ > ${{c}}cgroup.procs; done 2>/dev/null; "
                     "setsid sh -c 'sleep 60 0.{n}; : {m}' &"),
    "python-daemon": (PY + " -c \"import os, time\nif os.fork(): os._exit(0)\nos.setsid()\n"
                      "if os.fork(): os._exit(0)\nos.closerange(0, 1024)\ntime.sleep(60)  # {m} 0.{n}\""),
}


@pytest.mark.parametrize("how", ESCAPEES)
def test_no_descendant_outlives_timeout(backend, how, box, run_in):
    script = ESCAPEES[how].format(m=box.marker, n=box.num) + f"\nsleep 0.1; echo started; sleep 60 0.{box.num}"
    r = run_in(backend, LIFETIME_MODE, script, timeout=0.4)
    assert r.timed_out, r.why
    survivors = [] if wait_until(lambda: not box.procs(), 3) else box.procs()
    assert not survivors, f"{how!r}: pids {survivors} outlived the timed-out run\n{r.why}"


class Cancel(Exception):
    pass


def test_no_descendant_outlives_cancellation(backend, box, run_in):
    """on_output raising (the caller cancelling) kills the whole tree too."""

    def on_output(stream: str, chunk: bytes) -> None:
        if b"started" in chunk:
            raise Cancel

    script = (f"setsid sh -c 'sleep 60 0.{box.num}; : {box.marker}' & ( ( sleep 61 0.{box.num}; : {box.marker} ) & ); "
              f"sleep 0.2; echo started; sleep 60 0.{box.num}")
    with pytest.raises(Cancel):
        run_in(backend, LIFETIME_MODE, script, on_output=on_output)
    assert wait_until(lambda: not box.procs(), 3), f"survivors: {box.procs()}"


CALLER = '''
import dataclasses, sys
import sandbox
from policies.model import Limits, Mode, SandboxPolicy
ws, home, marker, n, backend = sys.argv[1:6]
host = dataclasses.replace(sandbox.host_facts(), home=home)
script = (f"setsid sh -c 'sleep 60 0.{n}; : {marker}' & ( ( sleep 61 0.{n}; : {marker} ) & ); "
          f"sleep 0.1; echo started; sleep 60 0.{n}")
def out(stream, chunk):
    if b"started" in chunk:
        print("STARTED", flush=True)
sandbox.run(["sh", "-c", script], SandboxPolicy(mode=Mode.WORKSPACE_WRITE, workspace=ws, limits=Limits(timeout=30)),
            backend=backend, host=host, on_output=out)
'''


def _rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def test_no_descendant_outlives_a_killed_caller(backend, box, request):
    """The process running the sandbox is SIGKILLed mid-run (a crash, an OOM kill): the sandboxed tree,
    grandchildren in new sessions included, must not live on."""
    if backend == "landlock":
        # Known gap, reported as `tree-kill: best-effort` by the backend: without a pid namespace only
        # the direct child dies with the caller (PDEATHSIG); setsid'd grandchildren live on until the
        # next run sweeps the dead caller's cgroup. A pid namespace with an init of our own closes it.
        request.applymarker(pytest.mark.xfail(reason="landlock has no pid namespace yet", strict=False))
    import select

    from conftest import PYTHON

    path = box.root / "caller.py"
    path.write_text(CALLER)
    caller = subprocess.Popen([PYTHON, str(path), str(box.ws), str(box.home), box.marker, box.num, backend],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([caller.stdout], [], [], 15)
        assert ready and caller.stdout.readline().startswith(b"STARTED"), caller.stderr.read1(4096)
        assert wait_until(lambda: len(box.procs()) >= 5, 3)
        caller.kill()
    finally:
        caller.kill()
        caller.wait(10)
    survivors = [] if wait_until(lambda: not box.procs(), 3) else box.procs()
    detail = {pid: open(f"/proc/{pid}/cmdline", "rb").read()[:80] for pid in survivors
              if os.path.exists(f"/proc/{pid}")}
    for pid in survivors:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not box.procs(), 3)
    # Nobody is left to remove the dead caller's per-run cgroups: do it for the engine (best effort).
    for leftover in glob.glob(f"/sys/fs/cgroup/*/stockade/*-{caller.pid}-*") + \
            glob.glob(f"/sys/fs/cgroup/stockade/*-{caller.pid}-*"):
        wait_until(lambda d=leftover: _rmdir(d), 2)
    assert not survivors, f"{backend}: pids {survivors} outlived the killed caller: {detail}"

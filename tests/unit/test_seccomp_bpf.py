"""The cBPF libseccomp emits for our plans, run through a small interpreter.

Checks what the kernel would do with each (arch, nr, args) without loading
anything: denials and their errnos, the x32/ia32 refusal, and masked compares
that ignore high-half garbage.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import random
import struct

import pytest

from policies.compile.seccomp import TIOCLINUX, TIOCSTI, seccomp_rules
from policies.host import HostFacts
from policies.model import NetworkMode, NetworkPolicy, SandboxPolicy

pytest.importorskip("pyseccomp")
if platform.machine() != "x86_64":  # syscall numbers below are x86_64's
    pytest.skip("x86_64 only", allow_module_level=True)

from sandbox.seccomp_bpf import bpf_bytes, bpf_fd, pfc_text

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_BIT = 0x40000000
NR = {"read": 0, "write": 1, "ioctl": 16, "socket": 41, "socketpair": 53, "clone": 56, "ptrace": 101,
      "unshare": 272, "clone3": 435, "io_uring_setup": 425, "bpf": 321, "mount": 165, "setns": 308,
      "adjtimex": 159, "execve": 59}
ALLOW = 0x7FFF0000
KILL_PROCESS = 0x80000000


def errno_action(err: int) -> int:
    return 0x00050000 | err


def run_bpf(prog: bytes, nr: int, args: tuple[int, ...] = (), arch: int = AUDIT_ARCH_X86_64) -> int:
    """Interpret classic BPF over a struct seccomp_data; returns the action word."""
    full = (*args, *([0] * (6 - len(args))))
    data = struct.pack("<IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *[a & 0xFFFFFFFFFFFFFFFF for a in full])
    insns = [struct.unpack("<HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0
    for _ in range(10000):
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x00:  # LD
            mode = code & 0xE0
            if mode == 0x20:
                a = struct.unpack_from("<I", data, k)[0]
            elif mode == 0x00:
                a = k
            elif mode == 0x60:
                a = mem[k]
            else:
                raise AssertionError(f"LD mode {code:#x}")
        elif cls == 0x01:  # LDX
            x = k if code & 0xE0 == 0x00 else mem[k]
        elif cls == 0x02:
            mem[k] = a
        elif cls == 0x03:
            mem[k] = x
        elif cls == 0x04:  # ALU
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x50:
                a &= src
            elif op == 0x40:
                a |= src
            elif op == 0x00:
                a = (a + src) & 0xFFFFFFFF
            elif op == 0x10:
                a = (a - src) & 0xFFFFFFFF
            else:
                raise AssertionError(f"ALU op {code:#x}")
        elif cls == 0x05:  # JMP
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                pc += k
                continue
            taken = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}[op]
            pc += jt if taken else jf
        elif cls == 0x06:  # RET
            return a if code & 0x18 == 0x10 else k
        elif cls == 0x07:  # MISC
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
    raise AssertionError("BPF program did not terminate")


@pytest.fixture(scope="module")
def offline_netns() -> bytes:
    return bpf_bytes(seccomp_rules(SandboxPolicy(), HostFacts(arch="x86_64"), netns=True))


@pytest.fixture(scope="module")
def offline_bare() -> bytes:
    return bpf_bytes(seccomp_rules(SandboxPolicy(), HostFacts(arch="x86_64"), netns=False))


def test_ordinary_syscalls_allowed(offline_netns: bytes) -> None:
    for name in ("read", "write", "execve", "adjtimex"):
        assert run_bpf(offline_netns, NR[name]) == ALLOW, name
    assert run_bpf(offline_netns, NR["clone"], (0x3D0F00,)) == ALLOW  # pthread_create's flags
    assert run_bpf(offline_netns, NR["unshare"], (0x400,)) == ALLOW  # CLONE_FILES
    assert run_bpf(offline_netns, NR["ioctl"], (1, 0x541B)) == ALLOW  # FIONREAD


def test_dangerous_syscalls_get_errnos(offline_netns: bytes) -> None:
    for name in ("ptrace", "io_uring_setup", "bpf", "mount", "setns"):
        assert run_bpf(offline_netns, NR[name]) == errno_action(errno.EPERM), name
    assert run_bpf(offline_netns, NR["clone3"], (0, 88)) == errno_action(errno.ENOSYS)
    assert run_bpf(offline_netns, NR["clone"], (0x10000000 | 17,)) == errno_action(errno.EPERM)
    assert run_bpf(offline_netns, NR["unshare"], (0x20000 | 0x400,)) == errno_action(errno.EPERM)


def test_tiocsti_refused_even_with_high_bits(offline_netns: bytes) -> None:
    for req in (TIOCSTI, TIOCLINUX, 0xDEADBEEF00000000 | TIOCSTI, 0xFFFFFFFF00000000 | TIOCLINUX):
        assert run_bpf(offline_netns, NR["ioctl"], (0, req)) == errno_action(errno.EPERM), hex(req)


def test_socket_families(offline_netns: bytes, offline_bare: bytes) -> None:
    online = bpf_bytes(seccomp_rules(SandboxPolicy(network=NetworkPolicy(mode=NetworkMode.ON)),
                                     HostFacts(arch="x86_64"), netns=False))
    rng = random.Random(7)
    samples = list(range(0, 130)) + [rng.getrandbits(32) for _ in range(300)]
    for prog, allowed, eperm in ((offline_netns, {1, 2, 10}, {16}), (offline_bare, {1}, {2, 10, 16}),
                                 (online, {1, 2, 10, 16}, set())):
        for syscall in ("socket", "socketpair"):
            for fam in samples:
                want = ALLOW if fam in allowed else errno_action(
                    errno.EPERM if fam in eperm else errno.EAFNOSUPPORT)
                assert run_bpf(prog, NR[syscall], (fam, 1, 0)) == want, (syscall, fam)
            for fam in allowed:  # high-half garbage is refused, never widened
                assert run_bpf(prog, NR[syscall], (fam | (7 << 32), 1, 0)) != ALLOW


def test_foreign_abis_are_killed(offline_netns: bytes) -> None:
    assert run_bpf(offline_netns, X32_BIT | NR["socket"], (17, 3, 0)) == KILL_PROCESS
    assert run_bpf(offline_netns, X32_BIT | NR["read"]) == KILL_PROCESS
    assert run_bpf(offline_netns, 102, arch=AUDIT_ARCH_I386) == KILL_PROCESS  # ia32 socketcall
    assert run_bpf(offline_netns, 0xFFFFFFFF) == ALLOW  # the -1 tracers use stays for the kernel


def test_pfc_shows_native_arch_only_and_kill_for_bad_arch() -> None:
    text = pfc_text(seccomp_rules(SandboxPolicy(), HostFacts(arch="x86_64"), netns=True))
    assert text.count("filter for arch") == 1 and "x86_64" in text
    assert "action KILL_PROCESS;" in text.split("invalid architecture action")[1]


def test_bpf_is_cached_per_plan() -> None:
    p = seccomp_rules(SandboxPolicy(), HostFacts(arch="x86_64"), netns=True)
    assert bpf_bytes(p) is bpf_bytes(p)
    assert len(bpf_bytes(p)) % 8 == 0 and len(bpf_bytes(p)) // 8 < 256


def test_bpf_fd_is_a_sealed_readable_memfd_at_offset_zero() -> None:
    p = seccomp_rules(SandboxPolicy(), HostFacts(arch="x86_64"), netns=False)
    fd = bpf_fd(p)
    try:
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
        assert os.read(fd, 1 << 16) == bpf_bytes(p)
        assert not os.get_inheritable(fd)
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x", 0)
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
    finally:
        os.close(fd)

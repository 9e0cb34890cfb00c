"""The seccomp filter a confined command runs under, as plain data.

Pure: no libseccomp here (`sandbox.seccomp_bpf` turns a plan into cBPF), so
`stockade explain` and the golden tests run anywhere. Both Linux backends use
the same plan: bwrap passes it with `--seccomp FD`, the Landlock backend loads
it in the child after every other step.

Choices, and why:

- Default ALLOW; every denial returns an errno, never kills, so tools fail
  the normal way and the error is visible. The only kill is for a syscall
  made with a foreign ABI (x32 numbers, `int 0x80` ia32 calls): those would
  bypass every rule below, since the numbers differ (ia32 also has
  `socketcall`, which hides the socket family behind a pointer).
- Integer arguments are compared with MASKED_EQ on their low 32 bits: the
  kernel reads an `int` from the low half of the register, so a plain 64-bit
  EQ is bypassed by setting the high bits (CVE-2019-10063, TIOCSTI).
- `clone3` gets ENOSYS: its flags sit behind a pointer seccomp cannot read,
  and glibc falls back to `clone` only on ENOSYS (EPERM would break threads).
  `clone` and `unshare` are refused when any CLONE_NEW* bit is set.
- socket()/socketpair() families are an ALLOW-list (a deny-list once left
  AF_PACKET open to root). Below 64 the complement of the allowed families is
  covered by masked compares on the low 32 bits; one 64-bit `>= 64` compare
  refuses everything else, including any value with high-half bits set (a
  superset of what the kernel would read as a bad family, so it fails
  closed; real callers pass a sign-extended small int). AF_UNIX
  always; AF_INET/AF_INET6 when the network is on, or when it is off but the
  backend gives a private network namespace (only a loopback there, so a
  server and its client inside the sandbox work, and nothing outside is
  reachable); AF_NETLINK only when the network is on. Families the policy
  turned off (inet, netlink) fail with EPERM, so the refusal reads
  "Operation not permitted" and denial detection sees it; every other family
  fails with EAFNOSUPPORT, what a kernel without that family says, so
  libraries probing for AF_ALG, AF_BLUETOOTH, ... take their normal fallback.
- Clock setting (settimeofday, clock_settime) is refused outright; adjtimex
  and clock_adjtime stay allowed because mode 0 is a harmless read (used by
  NTP status tools) and writes need CAP_SYS_TIME, which the sandbox drops.
"""

from __future__ import annotations

import errno as _errno
import functools
from dataclasses import dataclass

from policies.host import HostFacts
from policies.model import NetworkMode, SandboxPolicy

MASK32 = 0xFFFFFFFF
MASKED_EQ = "masked_eq"
GE = "ge"  # full 64-bit compare; mask unused
FAMILY_LIMIT = 64  # above every AF_* the kernel knows (AF_MAX is 46 in 6.18)

AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
AF_NETLINK = 16
FAMILY_NAMES = {AF_UNIX: "AF_UNIX", AF_INET: "AF_INET", AF_INET6: "AF_INET6", AF_NETLINK: "AF_NETLINK"}

TIOCSTI = 0x5412
TIOCLINUX = 0x541C

CLONE_NEW_FLAGS: tuple[tuple[str, int], ...] = (
    ("CLONE_NEWTIME", 0x00000080),
    ("CLONE_NEWNS", 0x00020000),
    ("CLONE_NEWCGROUP", 0x02000000),
    ("CLONE_NEWUTS", 0x04000000),
    ("CLONE_NEWIPC", 0x08000000),
    ("CLONE_NEWUSER", 0x10000000),
    ("CLONE_NEWPID", 0x20000000),
    ("CLONE_NEWNET", 0x40000000),
)

# Kernel interfaces no confined command needs, each refused with EPERM.
DENIED_SYSCALLS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tracing and reading other processes", ("ptrace", "process_vm_readv", "process_vm_writev")),
    ("io_uring (IORING_OP_SOCKET and friends skip the socket rules)",
     ("io_uring_setup", "io_uring_enter", "io_uring_register")),
    ("kernel attack surface", ("bpf", "perf_event_open", "userfaultfd")),
    ("kernel keyrings", ("keyctl", "add_key", "request_key")),
    ("kernel modules, kexec and reboot",
     ("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot")),
    ("undoing the filesystem sandbox",
     ("mount", "umount2", "pivot_root", "chroot", "setns", "open_tree", "move_mount", "fsopen",
      "fsconfig", "fsmount", "fspick", "mount_setattr")),
    ("file handles bypass path checks", ("open_by_handle_at", "name_to_handle_at")),
    ("host administration",
     ("swapon", "swapoff", "acct", "quotactl", "lookup_dcookie", "syslog", "settimeofday",
      "clock_settime", "iopl", "ioperm")),
)

# Architectures whose clone() takes the stack before the flags.
_CLONE_FLAGS_SECOND = ("s390", "s390x", "cris")


@dataclass(frozen=True)
class ArgCmp:
    """One argument comparison: (args[index] & mask) == value for MASKED_EQ; args[index] >= value for GE."""

    index: int
    op: str
    mask: int
    value: int


@dataclass(frozen=True)
class SeccompRule:
    syscall: str
    action: str  # "errno" | "enosys"
    errno: int
    args: tuple[ArgCmp, ...] = ()
    why: str = ""


@dataclass(frozen=True)
class SeccompPlan:
    """A default-allow filter; `rules` are the denials. Frozen and hashable, so BPF is cached per plan."""

    rules: tuple[SeccompRule, ...]
    allowed_families: tuple[int, ...]
    arch: str
    default: str = "allow"
    bad_arch: str = "kill-process"  # x32 numbers and ia32 calls on x86_64
    notes: tuple[str, ...] = ()


def _eperm(name: str, why: str, *args: ArgCmp) -> SeccompRule:
    return SeccompRule(name, "errno", _errno.EPERM, tuple(args), why)


def complement_blocks(allowed: set[int] | frozenset[int], bits: int = 32) -> list[tuple[int, int]]:
    """(mask, value) pairs whose MASKED_EQ matches cover exactly the values NOT in `allowed`.

    Like CIDR blocks: the complement of a few points in a 2**bits space splits
    into aligned power-of-two blocks, each one masked compare.
    """
    full = (1 << bits) - 1
    out: list[tuple[int, int]] = []

    def walk(prefix: int, depth: int) -> None:
        size = bits - depth
        lo, hi = prefix << size, (prefix << size) | ((1 << size) - 1)
        inside = [a for a in allowed if lo <= a <= hi]
        if not inside:
            out.append(((full << size) & full, lo))
            return
        if size == 0:
            return  # this single value is allowed
        walk(prefix << 1, depth + 1)
        walk((prefix << 1) | 1, depth + 1)

    walk(0, 0)
    return out


def seccomp_rules(policy: SandboxPolicy, host: HostFacts, *, netns: bool) -> SeccompPlan:
    """The filter for `policy`. `netns`: the backend gives the command a private network namespace.

    Only the network mode and the architecture matter, so plans are memoised
    on those: every launch gets the same plan object (and its cached BPF).
    """
    return _plan(policy.network.mode, host.arch, netns)


@functools.lru_cache(maxsize=32)
def _plan(network: NetworkMode, arch: str, netns: bool) -> SeccompPlan:
    rules: list[SeccompRule] = []
    notes: list[str] = []
    for why, names in DENIED_SYSCALLS:
        rules.extend(_eperm(name, why) for name in names)

    clone_arg = 1 if arch in _CLONE_FLAGS_SECOND else 0
    for flag_name, bit in CLONE_NEW_FLAGS:
        why = f"no new namespaces ({flag_name})"
        rules.append(_eperm("unshare", why, ArgCmp(0, MASKED_EQ, bit, bit)))
        rules.append(_eperm("clone", why, ArgCmp(clone_arg, MASKED_EQ, bit, bit)))
    rules.append(SeccompRule("clone3", "enosys", _errno.ENOSYS, (),
                             "flags behind a pointer; glibc falls back to clone on ENOSYS"))
    for name, request in (("TIOCSTI", TIOCSTI), ("TIOCLINUX", TIOCLINUX)):
        rules.append(_eperm("ioctl", f"no keystroke injection ({name})", ArgCmp(1, MASKED_EQ, MASK32, request)))

    online = network is NetworkMode.ON
    allowed = {AF_UNIX}
    policy_off: set[int] = set()
    if online or netns:
        allowed |= {AF_INET, AF_INET6}
    else:
        policy_off |= {AF_INET, AF_INET6}
    if online:
        allowed.add(AF_NETLINK)
    else:
        policy_off.add(AF_NETLINK)
    if network is NetworkMode.ALLOWLIST:
        notes.append("network allowlist: sockets as for network off; the proxy decides which domains are reached")
    if netns and not online:
        notes.append("AF_INET/AF_INET6 allowed: the private network namespace has only a loopback")
    for syscall in ("socket", "socketpair"):
        for family in sorted(policy_off):
            rules.append(_eperm(syscall, f"network off ({FAMILY_NAMES[family]})",
                                ArgCmp(0, MASKED_EQ, MASK32, family)))
        why = "socket family not on the allow-list"
        rules.append(SeccompRule(syscall, "errno", _errno.EAFNOSUPPORT, (ArgCmp(0, GE, 0, FAMILY_LIMIT),), why))
        high = MASK32 & ~(FAMILY_LIMIT - 1)
        for mask, value in complement_blocks(frozenset(allowed | policy_off), bits=6):
            rules.append(SeccompRule(syscall, "errno", _errno.EAFNOSUPPORT,
                                     (ArgCmp(0, MASKED_EQ, high | mask, value),), why))
    return SeccompPlan(rules=tuple(rules), allowed_families=tuple(sorted(allowed)), arch=arch,
                       notes=tuple(notes))


def _errno_name(rule: SeccompRule) -> str:
    return _errno.errorcode.get(rule.errno, str(rule.errno))


def describe(plan: SeccompPlan) -> list[str]:
    """Human-readable lines for `stockade explain`."""
    lines = [f"default {plan.default}; syscalls from a non-native ABI (x32, ia32 on {plan.arch}): {plan.bad_arch}"]
    plain: dict[tuple[str, str], list[str]] = {}
    for rule in plan.rules:
        if not rule.args:
            plain.setdefault((_errno_name(rule), rule.why), []).append(rule.syscall)
    for (err, why), names in plain.items():
        lines.append(f"{err}: {', '.join(names)} ({why})")
    ns = [name for name, bit in CLONE_NEW_FLAGS
          if any(r.syscall == "clone" and r.args and r.args[0].mask == bit for r in plan.rules)]
    if ns:
        lines.append(f"EPERM: clone/unshare with any of {'|'.join(ns)} (one masked bit test each)")
    ioctls = [f"{r.args[0].value:#x}" for r in plan.rules if r.syscall == "ioctl"]
    if ioctls:
        lines.append(f"EPERM: ioctl requests {', '.join(ioctls)} (TIOCSTI, TIOCLINUX; arg 1 low 32 bits)")
    fams = ", ".join(FAMILY_NAMES.get(f, str(f)) for f in plan.allowed_families)
    off = sorted({r.args[0].value for r in plan.rules if r.syscall == "socket" and r.errno == _errno.EPERM})
    line = f"socket/socketpair: only {fams}; other families EAFNOSUPPORT"
    if off:
        line += f"; {', '.join(FAMILY_NAMES.get(f, str(f)) for f in off)} EPERM (network off)"
    lines.append(line)
    lines.extend(f"note: {n}" for n in plan.notes)
    return lines

"""The seccomp plan as data: what is refused, with which errno, for which network mode."""

from __future__ import annotations

import errno
import itertools

import pytest

from policies.compile.seccomp import (
    AF_INET,
    AF_INET6,
    AF_NETLINK,
    AF_UNIX,
    CLONE_NEW_FLAGS,
    GE,
    MASK32,
    MASKED_EQ,
    TIOCLINUX,
    TIOCSTI,
    SeccompPlan,
    SeccompRule,
    complement_blocks,
    describe,
    seccomp_rules,
)
from policies.host import HostFacts
from policies.model import NetworkMode, NetworkPolicy, SandboxPolicy

HOST = HostFacts(arch="x86_64")
BRIEF_EPERM = {
    "ptrace", "process_vm_readv", "process_vm_writev", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "reboot", "mount", "umount2", "pivot_root", "chroot",
    "setns", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "acct", "quotactl", "lookup_dcookie",
    "syslog", "settimeofday", "clock_settime",
}


def plan(mode: NetworkMode = NetworkMode.OFF, *, netns: bool = False, host: HostFacts = HOST) -> SeccompPlan:
    return seccomp_rules(SandboxPolicy(network=NetworkPolicy(mode=mode)), host, netns=netns)


def family_errno(p: SeccompPlan, syscall: str, value: int) -> int | None:
    """Evaluate the plan's rules for socket(value, ...) (None: allowed).

    Values with high-half bits may match both a masked rule and the 64-bit
    `>= 64` rule; both deny, so any one errno is returned for them.
    """
    hits = set()
    for rule in p.rules:
        if rule.syscall != syscall:
            continue
        (cmp,) = rule.args
        if (cmp.op == GE and value >= cmp.value) or (cmp.op == MASKED_EQ and value & cmp.mask == cmp.value):
            hits.add(rule.errno)
    assert len(hits) <= 1 or value > MASK32, f"conflicting rules for {value:#x}: {hits}"
    return min(hits) if hits else None


def test_unconditional_denials_return_eperm() -> None:
    plain = {r.syscall: r for r in plan().rules if not r.args}
    assert BRIEF_EPERM <= set(plain)
    for name in BRIEF_EPERM:
        assert plain[name].action == "errno" and plain[name].errno == errno.EPERM
    assert {"adjtimex", "clock_adjtime", "read", "write", "execve"}.isdisjoint(plain)


def test_clone3_gets_enosys_so_glibc_falls_back() -> None:
    (rule,) = [r for r in plan().rules if r.syscall == "clone3"]
    assert (rule.action, rule.errno, rule.args) == ("enosys", errno.ENOSYS, ())


@pytest.mark.parametrize("syscall", ["clone", "unshare"])
def test_one_masked_bit_test_per_namespace_flag(syscall: str) -> None:
    rules = [r for r in plan().rules if r.syscall == syscall]
    bits = {bit for _, bit in CLONE_NEW_FLAGS}
    assert len(bits) == 8
    assert {(r.args[0].index, r.args[0].op, r.args[0].mask, r.args[0].value) for r in rules} == {
        (0, MASKED_EQ, bit, bit) for bit in bits}
    assert all(r.errno == errno.EPERM for r in rules)


def test_clone_flags_index_follows_the_arch() -> None:
    rules = [r for r in plan(host=HostFacts(arch="s390x")).rules if r.syscall == "clone"]
    assert {r.args[0].index for r in rules} == {1}
    assert {r.args[0].index for r in plan(host=HostFacts(arch="s390x")).rules if r.syscall == "unshare"} == {0}


def test_terminal_ioctls_masked_to_32_bits() -> None:
    rules = [r for r in plan().rules if r.syscall == "ioctl"]
    assert {(r.args[0].index, r.args[0].op, r.args[0].mask, r.args[0].value) for r in rules} == {
        (1, MASKED_EQ, MASK32, TIOCSTI), (1, MASKED_EQ, MASK32, TIOCLINUX)}


@pytest.mark.parametrize(("mode", "netns", "allowed", "eperm"), [
    (NetworkMode.OFF, False, {AF_UNIX}, {AF_INET, AF_INET6, AF_NETLINK}),
    (NetworkMode.OFF, True, {AF_UNIX, AF_INET, AF_INET6}, {AF_NETLINK}),
    (NetworkMode.ALLOWLIST, True, {AF_UNIX, AF_INET, AF_INET6}, {AF_NETLINK}),
    (NetworkMode.ALLOWLIST, False, {AF_UNIX}, {AF_INET, AF_INET6, AF_NETLINK}),
    (NetworkMode.ON, False, {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK}, set()),
    (NetworkMode.ON, True, {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK}, set()),
])
def test_socket_families_are_an_allow_list(mode: NetworkMode, netns: bool, allowed: set[int],
                                           eperm: set[int]) -> None:
    p = plan(mode, netns=netns)
    assert set(p.allowed_families) == allowed
    for syscall in ("socket", "socketpair"):
        for value in range(0, 300):
            got = family_errno(p, syscall, value)
            want = None if value in allowed else errno.EPERM if value in eperm else errno.EAFNOSUPPORT
            assert got == want, (syscall, value)
        # High-half garbage never sneaks a family through, even an allowed one.
        for value in (AF_UNIX, AF_INET, 17, 0x7FFFFFFF, MASK32):
            assert family_errno(p, syscall, value | (1 << 32)) in (errno.EPERM, errno.EAFNOSUPPORT)
        for value in (0x80000000 | AF_UNIX, 0x40000011, 0xFFFF0002):
            assert family_errno(p, syscall, value) == errno.EAFNOSUPPORT


@pytest.mark.parametrize("allowed", [set(), {0}, {255}, {1, 2, 10}, {1, 2, 10, 16}, set(range(0, 256, 3))])
def test_complement_blocks_cover_exactly_the_rest(allowed: set[int]) -> None:
    blocks = complement_blocks(allowed, bits=8)
    for value in range(256):
        matches = [b for b in blocks if value & b[0] == b[1]]
        assert len(matches) == (0 if value in allowed else 1), value
    if allowed == {1, 2, 10}:
        assert len(complement_blocks(allowed)) == 34  # 32 bits: a handful of blocks per allowed point


def test_denials_never_kill_and_plan_is_hashable_and_memoised() -> None:
    p = plan()
    assert p.default == "allow" and p.bad_arch == "kill-process"
    assert all(r.action in ("errno", "enosys") for r in p.rules)
    assert all(isinstance(r, SeccompRule) for r in p.rules)
    assert hash(p) == hash(plan()) and p is plan()
    assert p is not plan(NetworkMode.ON)
    # The environment and other policy fields do not change the filter.
    other = SandboxPolicy(workspace="/elsewhere", env=SandboxPolicy().env.__class__(set={"A": "b"}))
    assert seccomp_rules(other, HOST, netns=False) is p


def test_no_conflicting_actions_for_any_rule_pair() -> None:
    p = plan(NetworkMode.OFF, netns=True)
    by_syscall: dict[str, list[SeccompRule]] = {}
    for rule in p.rules:
        by_syscall.setdefault(rule.syscall, []).append(rule)
    for syscall, rules in by_syscall.items():
        if syscall in ("socket", "socketpair"):
            continue  # checked value by value above
        for a, b in itertools.combinations(rules, 2):
            assert a.errno == b.errno, (syscall, a, b)


def test_describe_mentions_every_kind_of_rule() -> None:
    text = "\n".join(describe(plan(NetworkMode.OFF, netns=True)))
    for needle in ("default allow", "kill-process", "EPERM: ptrace", "ENOSYS: clone3", "CLONE_NEWUSER",
                   "0x5412", "0x541c", "only AF_UNIX, AF_INET, AF_INET6", "AF_NETLINK EPERM",
                   "private network namespace"):
        assert needle in text, needle
    assert "AF_NETLINK EPERM" not in "\n".join(describe(plan(NetworkMode.ON)))

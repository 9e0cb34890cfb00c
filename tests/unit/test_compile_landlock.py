"""Golden tests for the Landlock plan, on a fake filesystem tree (no syscalls)."""

from __future__ import annotations

import pytest

from policies.compile.landlock import (
    DEVICE,
    FS_EXECUTE,
    FS_IOCTL_DEV,
    FS_MAKE_REG,
    FS_READ_DIR,
    FS_READ_FILE,
    FS_REFER,
    FS_RESOLVE_UNIX,
    FS_TRUNCATE,
    FS_WRITE_FILE,
    NET_BIND_TCP,
    NET_CONNECT_TCP,
    READ,
    SCOPE_ABSTRACT_UNIX_SOCKET,
    SCOPE_SIGNAL,
    PathRule,
    access_names,
    carve,
    fs_rights_for_abi,
    landlock_plan,
)
from policies.host import HostFacts
from policies.model import Mode, NetworkMode, NetworkPolicy, SandboxPolicy, TmpMode
from policies.resolve import DeniedPath, ProtectedPath, ResolvedPolicy

TREE = {
    "/": ["bin", "etc", "home", "proc", "tmp", "usr"],
    "/etc": ["hosts", "passwd", "shadow", "ssh"],
    "/etc/ssh": ["ssh_config", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"],
    "/home": ["u", "v"],
    "/home/u": [".bashrc", ".ssh", "proj"],
    "/home/u/proj": [".git", "src", "secrets"],
}
DENIED = ("/etc/shadow", "/etc/ssh/ssh_host_ed25519_key", "/home/u/.ssh")
ALL7 = fs_rights_for_abi(7)


def listdir(path: str) -> list[str]:
    if path not in TREE:
        raise FileNotFoundError(path)
    return list(reversed(TREE[path]))  # unsorted on purpose: the plan sorts


def rp_for(*, mode: Mode = Mode.WORKSPACE_WRITE, network: NetworkMode = NetworkMode.OFF,
           denied: tuple[str, ...] = DENIED, tmp: TmpMode = TmpMode.PRIVATE) -> ResolvedPolicy:
    ws = "/home/u/proj"
    policy = SandboxPolicy(mode=mode, workspace=ws, network=NetworkPolicy(mode=network), tmp=tmp)
    return ResolvedPolicy(
        policy=policy, workspace=ws, cwd=ws,
        writable=(ws,) if mode is not Mode.READ_ONLY else (),
        protected=(ProtectedPath(f"{ws}/.git", "dir", f".git under {ws}"),),
        deny_read=tuple(DeniedPath(p, "dir" if p.endswith(".ssh") else "file", p) for p in denied),
        home="/home/u",
    )


def host(abi: int = 7, uid: int = 1000) -> HostFacts:
    return HostFacts(landlock_abi=abi, uid=uid, home="/home/u", seccomp=True)


def test_abi_rights_table() -> None:
    assert fs_rights_for_abi(0) == 0
    assert fs_rights_for_abi(1) == (1 << 13) - 1
    assert fs_rights_for_abi(2) & FS_REFER and not fs_rights_for_abi(2) & FS_TRUNCATE
    assert fs_rights_for_abi(3) & FS_TRUNCATE and not fs_rights_for_abi(4) & FS_IOCTL_DEV
    assert fs_rights_for_abi(5) & FS_IOCTL_DEV and not fs_rights_for_abi(8) & FS_RESOLVE_UNIX
    assert fs_rights_for_abi(9) & FS_RESOLVE_UNIX
    assert access_names(READ) == "EXECUTE|READ_FILE|READ_DIR"


def test_golden_landlock_only_plan() -> None:
    plan = landlock_plan(rp_for(), host(), tmp_dir="/run/user/1000/stockade-tmp-x", listdir=listdir,
                         mount_ns=False)
    ro, rd = READ, FS_READ_DIR
    write_anc = ALL7 & ~(FS_READ_FILE | FS_EXECUTE)
    assert plan.rules == (
        PathRule("/", rd, False),
        PathRule("/bin", ro, False),
        PathRule("/etc", rd, False),
        PathRule("/etc/hosts", ro, False),
        PathRule("/etc/passwd", ro, False),
        PathRule("/etc/ssh", rd, False),
        PathRule("/etc/ssh/ssh_config", ro, False),
        PathRule("/etc/ssh/ssh_host_ed25519_key.pub", ro, False),
        PathRule("/home", rd, False),
        PathRule("/home/u", rd, False),
        PathRule("/home/u/.bashrc", ro, False),
        PathRule("/home/u/proj", ro, False),
        PathRule("/home/v", ro, False),
        PathRule("/proc", ro, False),
        PathRule("/tmp", ro, False),
        PathRule("/usr", ro, False),
        PathRule("/home/u/proj", ALL7),
        PathRule("/run/user/1000/stockade-tmp-x", ALL7),
        PathRule("/dev/shm", ALL7),
        *(PathRule(p, DEVICE) for p in ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                                         "/dev/tty", "/dev/ptmx", "/dev/pts")),
    )
    assert write_anc & FS_MAKE_REG and not write_anc & FS_READ_FILE
    assert plan.late_rules == ()
    assert plan.tmpdir == "/run/user/1000/stockade-tmp-x"
    assert plan.handled_fs == ALL7
    assert plan.handled_net == NET_BIND_TCP | NET_CONNECT_TCP and plan.port_rules == ()
    assert plan.scoped == SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET
    notes = "\n".join(plan.notes)
    assert "chmod" in notes and "/dev/shm" in notes and "ABI 9" in notes


def test_no_rule_ever_grants_read_file_on_a_denied_path() -> None:
    plan = landlock_plan(rp_for(), host(), tmp_dir="/t", listdir=listdir, mount_ns=False)
    for denied in DENIED:
        covering = [r for r in plan.rules
                    if denied == r.path or denied.startswith(r.path.rstrip("/") + "/")]
        assert covering, denied
        assert all(not r.access & (FS_READ_FILE | FS_EXECUTE) for r in covering), (denied, covering)


def test_deny_inside_a_writable_root_is_carved_too() -> None:
    rp = rp_for(denied=("/home/u/proj/secrets",))
    plan = landlock_plan(rp, host(), tmp_dir=None, listdir=listdir, mount_ns=False)
    proj = [r for r in plan.rules if r.path.startswith("/home/u/proj")]
    anc = ALL7 & ~(FS_READ_FILE | FS_EXECUTE)
    assert PathRule("/home/u/proj", anc, False) in proj
    assert PathRule("/home/u/proj/.git", ALL7, False) in proj
    assert PathRule("/home/u/proj/src", ALL7, False) in proj
    assert not any(r.path == "/home/u/proj/secrets" for r in proj)
    assert plan.tmpdir is None  # no per-run directory given


def test_mount_namespace_plan_is_small_and_grants_fresh_tmpfs_late() -> None:
    plan = landlock_plan(rp_for(), host(uid=0), tmp_dir="/ignored", listdir=listdir, mount_ns=True)
    assert plan.rules[:2] == (PathRule("/", READ), PathRule("/home/u/proj", ALL7))
    assert [r.path for r in plan.rules[2:]] == ["/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                                 "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/pts"]
    assert plan.late_rules == tuple(PathRule(p, ALL7) for p in ("/tmp", "/var/tmp", "/dev/shm"))
    assert plan.tmpdir is None
    assert plan.handled_net == 0  # the private network namespace isolates instead
    assert any("mount namespace" in n for n in plan.notes)


def test_mount_ns_default_follows_the_host() -> None:
    fake_list = lambda p: pytest.fail("listdir must not be called with a mount namespace")  # noqa: E731
    root = landlock_plan(rp_for(), host(uid=0), tmp_dir=None, listdir=fake_list)
    assert root.rules[0] == PathRule("/", READ)
    userns = landlock_plan(rp_for(), HostFacts(landlock_abi=7, uid=1000, userns=True), tmp_dir=None,
                           listdir=fake_list)
    assert userns.late_rules
    plain = landlock_plan(rp_for(), host(), tmp_dir=None, listdir=listdir)
    assert plain.rules[0] == PathRule("/", FS_READ_DIR, False)


def test_read_only_mode_grants_no_workspace_writes() -> None:
    plan = landlock_plan(rp_for(mode=Mode.READ_ONLY), host(uid=0), tmp_dir=None, mount_ns=True)
    assert not any(r.path == "/home/u/proj" for r in plan.rules)
    assert all(r.access & ~(READ | DEVICE) == 0 for r in plan.rules)


def test_device_rules_carry_file_rights_only() -> None:
    plan = landlock_plan(rp_for(), host(), tmp_dir=None, listdir=listdir, mount_ns=False)
    dev = [r for r in plan.rules if r.path == "/dev/null"]
    assert dev == [PathRule("/dev/null", FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV)]


@pytest.mark.parametrize(("abi", "net", "scoped", "resolve_unix"), [
    (1, 0, 0, False), (3, 0, 0, False), (4, NET_BIND_TCP | NET_CONNECT_TCP, 0, False),
    (6, NET_BIND_TCP | NET_CONNECT_TCP, SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET, False),
    (9, NET_BIND_TCP | NET_CONNECT_TCP, SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET, True),
])
def test_per_abi(abi: int, net: int, scoped: int, resolve_unix: bool) -> None:
    plan = landlock_plan(rp_for(), host(abi), tmp_dir="/t", listdir=listdir, mount_ns=False)
    assert plan.abi == abi and plan.handled_fs == fs_rights_for_abi(abi)
    assert plan.handled_net == net and plan.scoped == scoped
    assert bool(plan.handled_fs & FS_RESOLVE_UNIX) == resolve_unix
    notes = "\n".join(plan.notes)
    if abi < 2:
        assert "EXDEV" in notes
    if abi < 4:
        assert "TCP not restricted" in notes
    if abi < 6:
        assert "not scoped" in notes
    # pathname sockets: granted only where writes are (never on the read-only tree)
    assert not any(r.access & FS_RESOLVE_UNIX for r in plan.rules if r.access == READ & plan.handled_fs)


def test_network_on_handles_no_tcp_and_no_resolve_unix() -> None:
    plan = landlock_plan(rp_for(network=NetworkMode.ON), host(9), tmp_dir="/t", listdir=listdir,
                         mount_ns=False)
    assert plan.handled_net == 0 and not plan.handled_fs & FS_RESOLVE_UNIX


def test_host_tmp_mode_grants_the_real_dirs() -> None:
    plan = landlock_plan(rp_for(tmp=TmpMode.HOST), host(uid=0), tmp_dir=None, mount_ns=True)
    assert {r.path for r in plan.rules if r.access == ALL7} >= {"/tmp", "/var/tmp", "/dev/shm"}
    assert plan.late_rules == ()


def test_landlock_unavailable() -> None:
    plan = landlock_plan(rp_for(), host(0), tmp_dir=None, listdir=listdir)
    assert plan.handled_fs == 0 and plan.rules == () and "unavailable" in plan.notes[0]


def test_carve_edge_cases() -> None:
    assert carve("/a", READ, ["/a"], listdir) == []
    assert carve("/a", READ, ["/b"], listdir) == [PathRule("/a", READ)]
    # an unreadable ancestor grants only the ancestor itself
    assert carve("/", READ, ["/gone/x"], lambda p: [] if p == "/gone" else ["gone"]) == [
        PathRule("/", FS_READ_DIR, False), PathRule("/gone", FS_READ_DIR, False)]

    def broken(path: str) -> list[str]:
        raise PermissionError(path)
    assert carve("/", READ, ["/x/y"], broken) == [PathRule("/", FS_READ_DIR, False)]


def test_describe() -> None:
    plan = landlock_plan(rp_for(), host(uid=0), tmp_dir=None, mount_ns=True)
    text = "\n".join(plan.describe())
    assert "Landlock ABI 7" in text and "/tmp: " in text and "added in the child" in text
    assert "scoped: signal, abstract-unix" in text

"""Golden tests for the mount plan (pure data; nothing is mounted)."""

from __future__ import annotations

from policies.compile.mounts import (
    Bind,
    Chdir,
    LoopbackUp,
    MapIds,
    MountPlan,
    PinLink,
    PrivateTmp,
    RemountTree,
    SocketDirOverlay,
    Tmpfs,
    Unshare,
    mount_plan,
)
from policies.host import HostFacts
from policies.model import Mode, NetworkMode, NetworkPolicy, SandboxPolicy, TmpMode
from policies.resolve import DeniedPath, ProtectedPath, ResolvedPolicy

WS = "/tmp/pytest-of-u/t0/ws"
ROOT = HostFacts(uid=0, gid=0, home="/root", landlock_abi=7, seccomp=True)
USER = HostFacts(uid=1000, gid=1000, home="/home/u", landlock_abi=7, seccomp=True, userns=True)


def rp_for(*, ws: str = WS, mode: Mode = Mode.WORKSPACE_WRITE, network: NetworkMode = NetworkMode.OFF,
           tmp: TmpMode = TmpMode.PRIVATE, extra_protected: tuple[ProtectedPath, ...] = (),
           cwd: str | None = None, writable_extra: tuple[str, ...] = ()) -> ResolvedPolicy:
    policy = SandboxPolicy(mode=mode, workspace=ws, network=NetworkPolicy(mode=network), tmp=tmp)
    writable = (ws, *writable_extra) if mode is not Mode.READ_ONLY else ()
    protected = (
        ProtectedPath(f"{ws}/.git", "dir", f".git under {ws}"),
        ProtectedPath(f"{ws}/.stockade", "missing", f".stockade under {ws}"),
        *extra_protected,
    ) if writable else ()
    return ResolvedPolicy(
        policy=policy, workspace=ws, cwd=cwd or ws, writable=writable, protected=protected,
        deny_read=(DeniedPath("/root/.ssh", "dir", "~/.ssh"), DeniedPath("/etc/shadow", "file", "/etc/shadow"),
                   DeniedPath(f"{ws}/.env", "file", ".env")),
        home="/root",
    )


def test_golden_root_offline() -> None:
    plan = mount_plan(rp_for(), ROOT, host_sockets=("/run/docker.sock", "/root/.ssh/agent.sock"))
    assert plan == MountPlan(
        ops=(
            Unshare(mount=True, user=False, net=True, ipc=True),
            RemountTree("/", readonly=True, private=True),
            Bind(WS, WS, readonly=False, why="writable root"),
            Bind(f"{WS}/.git", f"{WS}/.git", readonly=True, why=f"protected: .git under {WS}"),
            Tmpfs(f"{WS}/.stockade", mode=0o555, why=f"protected, missing: .stockade under {WS}"),
            Tmpfs("/root/.ssh", why="deny-read ~/.ssh"),
            Bind("/dev/null", "/etc/shadow", recursive=False, readonly=True, why="deny-read /etc/shadow"),
            Bind("/dev/null", f"{WS}/.env", recursive=False, readonly=True, why="deny-read .env"),
            # the agent socket lies under a hidden directory: no bind (it would fail)
            Bind("/dev/null", "/run/docker.sock", recursive=False, readonly=True, optional=True, volatile=True,
                 why="host Unix socket"),
            PrivateTmp("/tmp", keep=(WS,)),
            PrivateTmp("/var/tmp"),
            PrivateTmp("/dev/shm"),
            LoopbackUp(),
            Chdir(WS),
        ),
        stubs=(f"{WS}/.stockade",),
    )


def test_user_namespace_for_non_root_maps_ids_first() -> None:
    plan = mount_plan(rp_for(), USER)
    assert plan.ops[:3] == (Unshare(user=True, net=True), MapIds(1000, 1000), RemountTree("/"))
    assert mount_plan(rp_for(), USER, userns=False).ops[1] == RemountTree("/")


def test_protected_binds_come_after_writable_binds_and_before_tmp() -> None:
    rp = rp_for(writable_extra=("/data/cache",))
    ops = mount_plan(rp, ROOT).ops
    kinds = [type(op).__name__ + (":w" if isinstance(op, Bind) and op.readonly is False else "") for op in ops]
    last_writable = max(i for i, k in enumerate(kinds) if k == "Bind:w")
    first_protected = next(i for i, op in enumerate(ops) if "protected" in getattr(op, "why", ""))
    first_tmp = next(i for i, op in enumerate(ops) if isinstance(op, PrivateTmp))
    assert last_writable < first_protected < first_tmp
    assert isinstance(ops[-1], Chdir)


def test_network_on_keeps_the_host_network_and_sockets() -> None:
    plan = mount_plan(rp_for(network=NetworkMode.ON), ROOT, host_sockets=("/run/docker.sock",))
    assert plan.ops[0] == Unshare(net=False)
    assert not any(isinstance(op, LoopbackUp) for op in plan.ops)
    assert not any(isinstance(op, Bind) and op.volatile for op in plan.ops)


def test_allowlist_counts_as_offline() -> None:
    plan = mount_plan(rp_for(network=NetworkMode.ALLOWLIST), ROOT)
    assert plan.ops[0] == Unshare(net=True) and LoopbackUp() in plan.ops


def test_host_tmp_mode_has_no_private_tmp() -> None:
    plan = mount_plan(rp_for(tmp=TmpMode.HOST), ROOT)
    assert not any(isinstance(op, PrivateTmp) for op in plan.ops)


def test_workspace_outside_tmp_keeps_nothing() -> None:
    plan = mount_plan(rp_for(ws="/srv/ws", cwd="/srv/ws/sub"), ROOT)
    assert PrivateTmp("/tmp") in plan.ops and plan.ops[-1] == Chdir("/srv/ws/sub")


def test_paths_kept_under_private_dirs_are_the_shallowest() -> None:
    gitdir = ProtectedPath("/var/tmp/repo.git", "dir", "gitdir target of /tmp/pytest-of-u/t0/ws/.git")
    rp = rp_for(cwd=f"{WS}/src", extra_protected=(gitdir,), writable_extra=(f"{WS}/build", "/dev/shm/x"))
    ops = {op.dst: op for op in mount_plan(rp, ROOT).ops if isinstance(op, PrivateTmp)}
    assert ops["/tmp"].keep == (WS,)
    assert ops["/var/tmp"].keep == ("/var/tmp/repo.git",)
    assert ops["/dev/shm"].keep == ("/dev/shm/x",)


def test_workspace_that_is_tmp_itself_is_not_hidden() -> None:
    plan = mount_plan(rp_for(ws="/tmp"), ROOT)
    assert {op.dst for op in plan.ops if isinstance(op, PrivateTmp)} == {"/var/tmp", "/dev/shm"}
    assert any("/tmp is itself" in n for n in plan.notes)


def test_read_only_mode_binds_nothing_writable() -> None:
    plan = mount_plan(rp_for(mode=Mode.READ_ONLY), ROOT)
    assert not any(isinstance(op, Bind) and op.readonly is False for op in plan.ops)
    assert plan.stubs == ()
    assert PrivateTmp("/tmp", keep=(WS,)) in plan.ops  # the read-only workspace stays visible


def test_protected_outside_writable_roots_and_symlinks() -> None:
    outside = ProtectedPath("/srv/repo.git", "dir", f"gitdir target of {WS}/.git")
    link = ProtectedPath(f"{WS}/.stockade2", "file", f".stockade2 under {WS} (symlink)")
    plan = mount_plan(rp_for(extra_protected=(outside, link)), ROOT)
    dsts = {getattr(op, "dst", None) for op in plan.ops}
    assert "/srv/repo.git" not in dsts  # read-only already, with the rest of /
    assert f"{WS}/.stockade2" not in dsts
    assert PinLink(f"{WS}/.stockade2", why=f"protected: .stockade2 under {WS} (symlink)") in plan.ops


def test_socket_dirs_overlaid_first_when_offline() -> None:
    plan = mount_plan(rp_for(), ROOT, socket_dirs=("/run",), host_sockets=("/run/docker.sock", "/srv/d.sock"))
    assert plan.ops[2] == SocketDirOverlay("/run")  # right after / goes read-only, before any bind
    socket_binds = [op.dst for op in plan.ops if isinstance(op, Bind) and op.volatile]
    assert socket_binds == ["/srv/d.sock"]  # the overlay already covers /run/docker.sock
    assert not any(isinstance(op, SocketDirOverlay)
                   for op in mount_plan(rp_for(network=NetworkMode.ON), ROOT, socket_dirs=("/run",)).ops)


def test_socket_dir_holding_the_workspace_is_not_overlaid() -> None:
    plan = mount_plan(rp_for(ws="/run/user/1000/ws"), ROOT, socket_dirs=("/run", "/odd:dir"))
    assert not any(isinstance(op, SocketDirOverlay) for op in plan.ops)
    assert len([n for n in plan.notes if "not overlaid" in n]) == 2


def test_describe_is_readable() -> None:
    text = "\n".join(mount_plan(rp_for(), ROOT, host_sockets=("/run/docker.sock",)).describe())
    for needle in ("unshare mount,ipc,net", "/ recursively read-only private", f"bind -r writable {WS} -> {WS}",
                   f"tmpfs mode 0555 read-only on {WS}/.stockade", "/dev/null -> /run/docker.sock (if present)",
                   f"fresh tmpfs mode 1777 on /tmp, keeping {WS}", "bring lo up", f"chdir {WS}"):
        assert needle in text, needle

"""Golden tests for the mount plan (pure data; nothing is mounted)."""

from __future__ import annotations

from policies.compile.hostview import HostView, Overlay, PlainBind
from policies.compile.mounts import (
    Bind,
    Chdir,
    LoopbackUp,
    MapIds,
    MountPlan,
    PinLink,
    PrivateTmp,
    RemountTree,
    SealView,
    ShowHost,
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


VIEW = HostView(items=(Overlay("/", 1), PlainBind("/dev", why="kernel filesystem"),
                       PlainBind("/proc", why="kernel filesystem"), Overlay("/run", 2)))


def test_host_view_is_the_root_right_after_it_goes_read_only() -> None:
    plan = mount_plan(rp_for(), ROOT, view=VIEW,
                      host_sockets=("/run/docker.sock", "/srv/d.sock", "/dev/log", f"{WS}/lsp.sock"))
    assert plan.ops[:3] == (Unshare(net=True), RemountTree("/"), ShowHost(VIEW))  # before any bind
    # The writable root comes from the host, not from the view: real files, and sockets the command makes work.
    assert Bind(WS, WS, readonly=False, host=True, why="writable root") in plan.ops
    socket_binds = [op.dst for op in plan.ops if isinstance(op, Bind) and op.volatile]
    # Overlaid: /run and /srv. Shown plainly: /dev; the workspace is the host's own.
    assert socket_binds == ["/dev/log", f"{WS}/lsp.sock"]
    seal = plan.ops.index(SealView())
    assert all(i < seal for i, op in enumerate(plan.ops) if isinstance(op, (Bind, Tmpfs, PrivateTmp, PinLink)))
    assert plan.ops[seal + 1:] == (LoopbackUp(), Chdir(WS))


def test_no_host_view_when_network_on() -> None:
    plan = mount_plan(rp_for(network=NetworkMode.ON), ROOT, view=VIEW)
    assert not any(isinstance(op, (ShowHost, SealView)) for op in plan.ops)
    assert Bind(WS, WS, readonly=False, why="writable root") in plan.ops


def test_host_view_keeps_sockets_it_shows_plainly_covered() -> None:
    view = HostView(items=(PlainBind("/", why="overlay failed"), Overlay("/run", 2)), plain=("/",))
    plan = mount_plan(rp_for(), ROOT, view=view, host_sockets=("/run/docker.sock", "/srv/d.sock"))
    assert [op.dst for op in plan.ops if isinstance(op, Bind) and op.volatile] == ["/srv/d.sock"]


def test_describe_is_readable() -> None:
    text = "\n".join(mount_plan(rp_for(), ROOT, host_sockets=("/run/docker.sock",)).describe())
    shown = "\n".join(mount_plan(rp_for(), ROOT, view=VIEW).describe())
    for needle in ("root: the host through read-only overlays", "  read-only overlay of /run",
                   "  read-only bind /dev  # kernel filesystem", f"bind -r writable host {WS} -> {WS}",
                   "view's own dirs read-only"):
        assert needle in shown, needle
    for needle in ("unshare mount,ipc,net", "/ recursively read-only private", f"bind -r writable {WS} -> {WS}",
                   f"tmpfs mode 0555 read-only on {WS}/.stockade", "/dev/null -> /run/docker.sock (if present)",
                   f"fresh tmpfs mode 1777 on /tmp, keeping {WS}", "bring lo up", f"chdir {WS}"):
        assert needle in text, needle

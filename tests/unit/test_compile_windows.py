"""The Windows plan: each mode, the network boundary, and the path spellings that bite on Windows."""

from __future__ import annotations

import pytest

from policies.compile.windows import (
    DISABLE_MAX_PRIVILEGE,
    FILE_DELETE_CHILD,
    FILE_WRITE_DATA,
    INHERIT,
    JOB_OBJECT_LIMIT_ACTIVE_PROCESS,
    JOB_OBJECT_LIMIT_JOB_MEMORY,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    LUA_TOKEN,
    OFFLINE_USER,
    ONLINE_USER,
    WRITE_RESTRICTED,
    canonical,
    key,
    resolve_for_windows,
    setup_script,
    split_stream,
    windows_plan,
)
from policies.host import HostFacts
from policies.model import Limits, Mode, NetworkMode, NetworkPolicy, SandboxPolicy, TmpMode
from policies.resolve import DeniedPath, ProtectedPath, ResolvedPolicy

WIN = HostFacts(platform="windows", arch="AMD64", home="C:\\Users\\u")
WS = "C:\\Users\\u\\proj"
TMP = "C:\\Users\\u\\AppData\\Local\\Temp\\stockade-tmp-1"


def plan_for(policy: SandboxPolicy, **kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("private_tmp", TMP)
    kw.setdefault("users_ready", True)
    return windows_plan(resolve_for_windows(policy, WIN), WIN, **kw)  # type: ignore[arg-type]


def test_workspace_write_plan() -> None:
    plan = plan_for(SandboxPolicy(workspace=WS, deny_read=("~/.ssh",)), runtime=("C:\\Python311",))
    assert plan.problems == ()
    assert plan.capabilities == ("cap:write", "cap:root:0")
    assert plan.token.flags == ("DISABLE_MAX_PRIVILEGE", "LUA_TOKEN", "WRITE_RESTRICTED")
    assert plan.token.flags_value == DISABLE_MAX_PRIVILEGE | LUA_TOKEN | WRITE_RESTRICTED
    assert plan.token.restricting_sids == ("cap:write", "cap:root:0", "logon")
    assert "S-1-1-0" not in plan.token.restricting_sids  # no Everyone: world-writable dirs stay read-only
    grants = [(g.path, g.sid, g.inherit) for g in plan.grants]
    assert grants == [
        (WS, "cap:write", INHERIT), (WS, f"user:{OFFLINE_USER}", INHERIT), (WS, "cap:root:0", INHERIT),
        (TMP, "cap:write", INHERIT), (TMP, f"user:{OFFLINE_USER}", INHERIT),
        ("C:\\Python311", f"user:{OFFLINE_USER}", INHERIT),
        ("\\\\.\\NUL", "cap:write", 0),
    ]
    assert all(g.allow and g.mask & FILE_WRITE_DATA for g in plan.grants[:5])
    denies = [(d.path, d.sid, d.mask == FILE_DELETE_CHILD, d.placeholder) for d in plan.denies]
    assert denies == [
        (f"{WS}\\.git", "cap:write", False, True),
        (WS, "cap:write", True, False),  # DELETE_CHILD on the parent: no rename-away
        (f"{WS}\\.stockade", "cap:write", False, True),
        ("C:\\Users\\u\\.ssh", f"user:{OFFLINE_USER}", False, False),
    ]
    assert plan.env == {"TEMP": TMP, "TMP": TMP}


def test_read_only_plan_grants_no_write_on_workspace() -> None:
    plan = plan_for(SandboxPolicy(mode=Mode.READ_ONLY, workspace=WS, deny_read=()))
    assert all(g.path != WS or not g.mask & FILE_WRITE_DATA for g in plan.grants)
    assert [g.path for g in plan.grants if g.mask & FILE_WRITE_DATA] == [TMP, TMP, "\\\\.\\NUL"]
    assert plan.denies == ()
    assert plan.capabilities == ("cap:write",)


def test_full_access_has_no_plan() -> None:
    with pytest.raises(ValueError):
        plan_for(SandboxPolicy(mode=Mode.FULL_ACCESS, workspace=WS))


def test_job_limits() -> None:
    plan = plan_for(SandboxPolicy(workspace=WS, limits=Limits(pids=64, memory_mb=512)))
    assert plan.job.kill_on_close and not plan.job.breakaway_ok
    assert plan.job.active_processes == 64
    assert plan.job.job_memory_bytes == 512 * 1024 * 1024
    flags = plan.job.limit_flags
    assert flags & JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    assert flags & JOB_OBJECT_LIMIT_ACTIVE_PROCESS and flags & JOB_OBJECT_LIMIT_JOB_MEMORY


@pytest.mark.parametrize("mode, user, boundary", [
    (NetworkMode.OFF, OFFLINE_USER, "firewall-user"),
    (NetworkMode.ALLOWLIST, OFFLINE_USER, "firewall-user"),
    (NetworkMode.ON, ONLINE_USER, "none"),
])
def test_network_boundary(mode: NetworkMode, user: str, boundary: str) -> None:
    plan = plan_for(SandboxPolicy(workspace=WS, network=NetworkPolicy(mode=mode)), proxy_port=3128)
    assert plan.network.run_as == user
    assert plan.network.boundary == boundary
    assert plan.problems == ()
    if mode is NetworkMode.OFF:
        assert "loopback is not filtered" in plan.network.enforced  # said plainly
        assert plan.network.firewall_rule["local_user"] == OFFLINE_USER
    if mode is NetworkMode.ALLOWLIST:
        assert plan.network.proxy_port == 3128
        assert plan.env["HTTPS_PROXY"] == "http://127.0.0.1:3128"


def test_allowlist_without_proxy_refuses() -> None:
    plan = plan_for(SandboxPolicy(workspace=WS, network=NetworkPolicy(mode=NetworkMode.ALLOWLIST)))
    assert any("fail closed" in p for p in plan.problems)


def test_without_setup_refuses() -> None:
    plan = plan_for(SandboxPolicy(workspace=WS), users_ready=False)
    assert any("one-time setup" in p for p in plan.problems)
    script = setup_script()
    assert OFFLINE_USER in script and ONLINE_USER in script and "New-NetFirewallRule" in script
    assert "-Direction Outbound -Action Block" in script


@pytest.mark.parametrize("raw, expected", [
    ("\\\\?\\C:\\ws\\.git", "C:\\ws\\.git"),
    ("\\\\?\\UNC\\srv\\share\\ws", "\\\\srv\\share\\ws"),
    ("c:/ws/sub/../.git", "C:\\ws\\.git"),
    ("\\??\\C:\\ws", "C:\\ws"),
    ("C:\\ws\\", "C:\\ws"),
])
def test_canonical_spellings(raw: str, expected: str) -> None:
    assert canonical(raw) == expected


def test_case_variants_are_one_path() -> None:
    assert key("C:\\WS\\.GIT") == key("c:\\ws\\.git") == key("\\\\?\\C:\\ws\\.Git")
    policy = SandboxPolicy(workspace=WS, protected=(".git", ".GIT", ".Git"), deny_read=())
    plan = plan_for(policy)
    assert [d.path for d in plan.denies if d.mask != FILE_DELETE_CHILD] == [f"{WS}\\.git"]
    # A protected path given in another case still lands on the same deny.
    rp = resolve_for_windows(SandboxPolicy(workspace=WS, deny_read=()), WIN)
    rp = ResolvedPolicy(**{**rp.__dict__, "protected": (ProtectedPath(f"{WS.upper()}\\.GIT", "dir", "x"),)})
    plan = windows_plan(rp, WIN, private_tmp=TMP, users_ready=True)
    assert plan.denies[0].path == "C:\\USERS\\U\\PROJ\\.GIT"


def test_alternate_data_streams() -> None:
    assert split_stream("C:\\ws\\.git:evil:$DATA") == ("C:\\ws\\.git", "evil:$DATA")
    assert split_stream("C:\\ws\\.git") == ("C:\\ws\\.git", None)
    rp = resolve_for_windows(SandboxPolicy(workspace=WS, deny_read=()), WIN)
    rp = ResolvedPolicy(**{**rp.__dict__, "protected": (ProtectedPath(f"{WS}\\.git::$DATA", "file", "ads"),)})
    plan = windows_plan(rp, WIN, private_tmp=TMP, users_ready=True)
    assert plan.denies[0].path == f"{WS}\\.git"  # the ACE is on the file, which covers its streams
    bad = ResolvedPolicy(**{**rp.__dict__, "writable": (f"{WS}:stream",)})
    assert any("alternate data stream" in p for p in windows_plan(bad, WIN, users_ready=True).problems)


def test_unc_and_device_writable_roots_are_refused() -> None:
    roots = ("\\\\srv\\share\\w", "\\\\?\\UNC\\srv\\s2", "\\\\.\\PhysicalDrive0")
    policy = SandboxPolicy(workspace=WS, writable_roots=roots)
    plan = plan_for(policy)
    assert sum("network share" in p for p in plan.problems) == 2
    assert sum("device path" in p for p in plan.problems) == 1
    assert [g.path for g in plan.grants if g.sid == "cap:root:0"] == [WS]


def test_long_path_prefix_is_the_same_root() -> None:
    policy = SandboxPolicy(workspace=WS, writable_roots=(f"\\\\?\\{WS}", WS.lower()), deny_read=())
    plan = plan_for(policy)
    assert plan.capabilities == ("cap:write", "cap:root:0")


def test_junction_targets_are_not_followed_on_paper() -> None:
    """A junction inside the workspace gets no grant of its own: ACLs bind the target's objects, not names."""
    plan = plan_for(SandboxPolicy(workspace=WS, deny_read=()))
    assert all(not g.path.lower().startswith("c:\\windows") for g in plan.grants)


def test_paper_resolution_for_windows() -> None:
    policy = SandboxPolicy(workspace="/home/u/proj", writable_roots=("~/cache", "rel"),
                           deny_read=("~/.ssh", "/etc/shadow"), tmp=TmpMode.HOST)
    rp = resolve_for_windows(policy, WIN)
    assert rp.workspace == "C:\\home\\u\\proj"
    assert rp.writable == ("C:\\home\\u\\proj", "C:\\Users\\u\\cache", "C:\\home\\u\\proj\\rel")
    assert [d.path for d in rp.deny_read] == ["C:\\Users\\u\\.ssh"]  # Unix system paths have no meaning here
    assert all(p.kind == "missing" for p in rp.protected)
    plan = windows_plan(rp, WIN, users_ready=True)
    assert plan.private_tmp is None
    assert any("tmp = host" in n for n in plan.notes)
    assert DeniedPath  # imported for the type

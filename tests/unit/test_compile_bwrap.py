"""Golden-style tests for the bwrap argv: flags, mount order, and the edge cases that bite."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from policies.compile.bwrap import DEV_NODES, PROC_READ_ONLY, bwrap_argv, view_probe_argv
from policies.compile.hostview import HostView, Overlay, PlainBind, Skeleton, Symlink
from policies.host import HostFacts
from policies.model import Mode, NetworkMode, NetworkPolicy, SandboxPolicy, TmpMode
from policies.resolve import DeniedPath, ProtectedPath, ResolvedPolicy, resolve

BWRAP = "/usr/bin/bwrap"
HOST = HostFacts(bwrap_path=BWRAP, bwrap_usable=True, home="/home/u", seccomp=True, uid=1000)
WS = "/home/u/proj"

# Arity of every bwrap option the compiler emits, to parse argvs back.
_ARITY = {"--bind": 2, "--ro-bind": 2, "--ro-bind-try": 2, "--dev-bind": 2, "--tmpfs": 1, "--dev": 1, "--proc": 1,
          "--remount-ro": 1, "--perms": 1, "--size": 1, "--chdir": 1, "--seccomp": 1, "--cap-drop": 1,
          "--overlay-src": 1, "--tmp-overlay": 1, "--ro-overlay": 1, "--symlink": 2, "--dir": 1}


def rp_for(
    *,
    mode: Mode = Mode.WORKSPACE_WRITE,
    network: NetworkMode = NetworkMode.OFF,
    tmp: TmpMode = TmpMode.PRIVATE,
    writable: tuple[str, ...] = (WS,),
    protected: tuple[ProtectedPath, ...] = (),
    deny: tuple[DeniedPath, ...] = (),
    cwd: str = WS,
) -> ResolvedPolicy:
    policy = SandboxPolicy(mode=mode, workspace=WS, network=NetworkPolicy(mode=network), tmp=tmp)
    return ResolvedPolicy(policy=policy, workspace=WS, cwd=cwd,
                          writable=writable if policy.writes_workspace else (),
                          protected=protected, deny_read=deny, home=HOST.home)


def ops(argv: list[str]) -> list[tuple[str, ...]]:
    """The options before `--`, each with its arguments, in order."""
    assert argv[0] == BWRAP or os.path.basename(argv[0]) == "bwrap"
    out: list[tuple[str, ...]] = []
    i = 1
    while argv[i] != "--":
        n = _ARITY.get(argv[i], 0)
        out.append(tuple(argv[i:i + n + 1]))
        i += n + 1
    return out


def mounts(argv: list[str]) -> list[tuple[str, str]]:
    """(option, destination) of every mount-like op, in order."""
    return [(op[0], op[-1]) for op in ops(argv)
            if op[0] in ("--bind", "--ro-bind", "--dev-bind", "--tmpfs", "--dev", "--proc", "--remount-ro",
                         "--tmp-overlay", "--ro-overlay")]


def index(argv: list[str], *op: str) -> int:
    found = ops(argv)
    assert tuple(op) in found, f"{op} not in {found}"
    return found.index(tuple(op))


def command(argv: list[str]) -> list[str]:
    return argv[argv.index("--") + 1:]


def check_invariants(argv: list[str]) -> None:
    """Properties every argv must have, whatever the policy."""
    found = ops(argv)
    binds = [op for op in found
             if op[0] in ("--bind", "--ro-bind", "--ro-bind-try", "--dev-bind", "--tmpfs", "--tmp-overlay",
                          "--ro-overlay")]
    assert len(binds) == len(set(binds)), f"duplicate mount op in {binds}"
    # A mount placed before a mount on one of its strict ancestors would be hidden by it.
    targets = [op[-1] for op in binds]
    for i, t in enumerate(targets):
        for later in targets[i + 1:]:
            assert not (later != "/" and t.startswith(later + "/")), f"{later} mounted after {t} hides it"


def test_workspace_write_golden() -> None:
    rp = rp_for(protected=(ProtectedPath(f"{WS}/.git", "dir", ".git under ws"),),
                deny=(DeniedPath("/home/u/.ssh", "dir", "~/.ssh"),
                      DeniedPath("/etc/shadow", "file", "/etc/shadow")))
    argv = bwrap_argv(rp, HOST, ["sh", "-c", "echo hi"], seccomp_fd=7)
    assert argv == [
        BWRAP, "--new-session", "--die-with-parent",
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--unshare-net", "--disable-userns", "--cap-drop", "ALL",
        "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
        *[a for p in PROC_READ_ONLY for a in ("--ro-bind-try", p, p)],
        "--tmpfs", "/tmp",
        "--tmpfs", "/dev/shm",
        "--tmpfs", "/var/tmp",
        "--ro-bind", "/dev/null", "/etc/shadow",
        "--bind", WS, WS,
        "--perms", "0000", "--tmpfs", "/home/u/.ssh", "--remount-ro", "/home/u/.ssh",
        "--ro-bind", f"{WS}/.git", f"{WS}/.git",
        "--remount-ro", "/dev",
        "--chdir", WS, "--seccomp", "7",
        "--", "sh", "-c", "echo hi",
    ]
    check_invariants(argv)


def test_network_on_keeps_host_net_and_sockets() -> None:
    argv = bwrap_argv(rp_for(network=NetworkMode.ON), HOST, ["true"], seccomp_fd=None,
                      hide_sockets=("/run/docker.sock",))
    assert "--unshare-net" not in argv
    assert "/run/docker.sock" not in argv
    assert "--seccomp" not in argv
    assert "--disable-userns" in argv and ("--cap-drop", "ALL") in ops(argv)


def test_allowlist_is_treated_as_off() -> None:
    argv = bwrap_argv(rp_for(network=NetworkMode.ALLOWLIST), HOST, ["true"], seccomp_fd=None)
    assert "--unshare-net" in argv


def test_read_only_has_no_writable_binds() -> None:
    # Even a hand-built rp that lists writable roots gets none in read-only mode.
    rp = ResolvedPolicy(policy=SandboxPolicy(mode=Mode.READ_ONLY, workspace=WS), workspace=WS, cwd=WS,
                        writable=(WS,), protected=(ProtectedPath(f"{WS}/.git", "dir", "x"),),
                        deny_read=(), home=HOST.home)
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert "--bind" not in argv
    assert f"{WS}/.git" not in argv  # read-only already; nothing to protect
    assert ("--tmpfs", "/tmp") in ops(argv)
    check_invariants(argv)


def test_tmp_size() -> None:
    argv = bwrap_argv(rp_for(), HOST, ["true"], seccomp_fd=None, tmp_size_mb=64)
    found = ops(argv)
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        i = found.index(("--tmpfs", d))
        assert found[i - 1] == ("--size", str(64 * 1024 * 1024))


def test_tmp_host_shares_tmp_only_when_writing() -> None:
    argv = bwrap_argv(rp_for(tmp=TmpMode.HOST), HOST, ["true"], seccomp_fd=None)
    assert ("--bind", "/tmp", "/tmp") in ops(argv)
    assert ("--bind", "/var/tmp", "/var/tmp") in ops(argv)
    assert ("--tmpfs", "/tmp") not in ops(argv)
    assert ("--tmpfs", "/dev/shm") in ops(argv)
    ro = bwrap_argv(rp_for(tmp=TmpMode.HOST, mode=Mode.READ_ONLY), HOST, ["true"], seccomp_fd=None)
    assert "--bind" not in ro and ("--tmpfs", "/tmp") not in ops(ro)


def test_order_of_base_mounts() -> None:
    argv = bwrap_argv(rp_for(), HOST, ["true"], seccomp_fd=None)
    assert index(argv, "--ro-bind", "/", "/") < index(argv, "--dev", "/dev") < index(argv, "--bind", WS, WS)
    assert index(argv, "--tmpfs", "/dev/shm") > index(argv, "--dev", "/dev")
    assert mounts(argv)[-1] == ("--remount-ro", "/dev")


def test_dev_nodes_dir_replaces_host_nodes() -> None:
    argv = bwrap_argv(rp_for(), HOST, ["true"], seccomp_fd=None, dev_nodes_dir="/var/cache/dev")
    dev = index(argv, "--dev", "/dev")
    for node in DEV_NODES:
        assert index(argv, "--dev-bind", f"/var/cache/dev/{node}", f"/dev/{node}") > dev
    assert index(argv, "--dev-bind", "/var/cache/dev/tty", "/dev/tty") < index(argv, "--remount-ro", "/dev")


def test_nested_writable_roots_shallowest_first() -> None:
    inner = f"{WS}/sub/inner"
    rp = rp_for(writable=(inner, WS),
                protected=(ProtectedPath(f"{WS}/.git", "dir", "a"), ProtectedPath(f"{inner}/.git", "dir", "b")))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert index(argv, "--bind", WS, WS) < index(argv, "--bind", inner, inner)
    assert index(argv, "--bind", inner, inner) < index(argv, "--ro-bind", f"{inner}/.git", f"{inner}/.git")
    check_invariants(argv)


def test_protected_after_writable_and_each_once() -> None:
    git = ProtectedPath(f"{WS}/.git", "dir", "a")
    rp = rp_for(writable=(WS, WS), protected=(git, git, ProtectedPath(f"{WS}/.git", "dir", "again")))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert argv.count(f"{WS}/.git") == 2  # one --ro-bind SRC DEST
    assert ops(argv).count(("--bind", WS, WS)) == 1
    check_invariants(argv)


def test_git_file_and_gitdir_target_both_protected(tmp_path: Path) -> None:
    main = tmp_path / "main"
    (main / ".git" / "worktrees" / "wt").mkdir(parents=True)
    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {main}/.git/worktrees/wt\n")
    (main / ".git" / "worktrees" / "wt" / "commondir").write_text("../..\n")
    host = HostFacts(bwrap_path=BWRAP, home=str(tmp_path / "home"))
    rp = resolve(SandboxPolicy(workspace=str(wt), writable_roots=(str(main),), deny_read=()), host)
    assert not rp.problems
    argv = bwrap_argv(rp, host, ["true"], seccomp_fd=None)
    gitfile = os.path.realpath(wt / ".git")
    target = os.path.realpath(main / ".git" / "worktrees" / "wt")
    common = os.path.realpath(main / ".git")
    for p in (gitfile, target, common):
        assert ("--ro-bind", p, p) in ops(argv)
    assert index(argv, "--ro-bind", common, common) < index(argv, "--ro-bind", target, target)
    for root in rp.writable:
        assert index(argv, "--bind", root, root) < index(argv, "--ro-bind", gitfile, gitfile)
    check_invariants(argv)


def test_gitdir_target_outside_writable_roots_is_left_alone() -> None:
    rp = rp_for(protected=(ProtectedPath(f"{WS}/.git", "file", "a"),
                           ProtectedPath("/srv/repos/main.git", "dir", "gitdir target")))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert ("--ro-bind", f"{WS}/.git", f"{WS}/.git") in ops(argv)
    assert "/srv/repos/main.git" not in argv  # read-only already through --ro-bind / /


def test_missing_protected_gets_empty_read_only_dir() -> None:
    rp = rp_for(protected=(ProtectedPath(f"{WS}/.stockade", "missing", "m"),))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    p = f"{WS}/.stockade"
    i = index(argv, "--tmpfs", p)
    assert ops(argv)[i - 1] == ("--perms", "0555")
    assert ops(argv)[i + 1] == ("--remount-ro", p)
    assert index(argv, "--bind", WS, WS) < i
    with_dir = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None, empty_dir="/run/stockade/empty")
    assert index(with_dir, "--ro-bind", "/run/stockade/empty", p) > index(with_dir, "--bind", WS, WS)


def test_deny_read_inside_writable_root_comes_after_the_bind() -> None:
    rp = rp_for(deny=(DeniedPath(f"{WS}/secrets", "dir", "secrets"), DeniedPath(f"{WS}/.env", "file", ".env")))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    bind = index(argv, "--bind", WS, WS)
    assert index(argv, "--tmpfs", f"{WS}/secrets") > bind
    assert index(argv, "--remount-ro", f"{WS}/secrets") > bind
    assert index(argv, "--ro-bind", "/dev/null", f"{WS}/.env") > bind
    check_invariants(argv)


def test_deny_read_beats_protected_and_writable() -> None:
    # A protected path inside (or equal to) a deny-read dir would re-expose it: skipped.
    rp = rp_for(writable=(WS, f"{WS}/secrets/cache"),
                protected=(ProtectedPath(f"{WS}/secrets/.git", "dir", "p"),
                           ProtectedPath(f"{WS}/.netrc", "file", "p2")),
                deny=(DeniedPath(f"{WS}/secrets", "dir", "d"), DeniedPath(f"{WS}/.netrc", "file", "d2")))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert f"{WS}/secrets/.git" not in argv
    assert f"{WS}/secrets/cache" not in argv
    assert ("--ro-bind", f"{WS}/.netrc", f"{WS}/.netrc") not in ops(argv)
    assert ("--ro-bind", "/dev/null", f"{WS}/.netrc") in ops(argv)
    check_invariants(argv)


def test_deny_inside_protected_comes_after_it() -> None:
    rp = rp_for(protected=(ProtectedPath(f"{WS}/.git", "dir", "p"),),
                deny=(DeniedPath(f"{WS}/.git/credentials", "file", "d"),))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert index(argv, "--ro-bind", f"{WS}/.git", f"{WS}/.git") < \
        index(argv, "--ro-bind", "/dev/null", f"{WS}/.git/credentials")


def test_nested_deny_dirs_once() -> None:
    rp = rp_for(deny=(DeniedPath("/home/u/.config", "dir", "a"), DeniedPath("/home/u/.config/gh", "dir", "b"),
                      DeniedPath("/home/u/.config/gh/hosts.yml", "file", "c")))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert "/home/u/.config/gh" not in argv and "/home/u/.config/gh/hosts.yml" not in argv
    check_invariants(argv)


def test_things_under_private_tmp_are_skipped_unless_writable() -> None:
    ws = "/tmp/pytest/ws"
    rp = rp_for(writable=(ws,), cwd=ws,
                protected=(ProtectedPath(f"{ws}/.git", "dir", "p"),),
                deny=(DeniedPath("/tmp/other/secret", "file", "d"), DeniedPath(f"{ws}/key", "file", "d2")))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None,
                      hide_sockets=("/tmp/.X11-unix/X0", f"{ws}/run.sock", "/run/docker.sock",
                                    "/dev/log", "/home/u/.ssh/agent.sock"))
    found = ops(argv)
    assert index(argv, "--tmpfs", "/tmp") < index(argv, "--bind", ws, ws) < index(argv, "--ro-bind", f"{ws}/.git",
                                                                               f"{ws}/.git")
    assert "/tmp/other/secret" not in argv  # the private /tmp has no such file
    assert "/tmp/.X11-unix/X0" not in argv
    assert "/dev/log" not in argv  # /dev is bwrap's own
    assert ("--ro-bind", "/dev/null", f"{ws}/key") in found
    assert index(argv, "--ro-bind", "/dev/null", f"{ws}/run.sock") > index(argv, "--bind", ws, ws)
    assert ("--ro-bind", "/dev/null", "/run/docker.sock") in found
    assert ("--ro-bind", "/dev/null", "/home/u/.ssh/agent.sock") in found
    check_invariants(argv)


def test_socket_under_deny_dir_is_skipped() -> None:
    rp = rp_for(deny=(DeniedPath("/home/u/.ssh", "dir", "d"),))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None, hide_sockets=("/home/u/.ssh/agent.sock",))
    assert "/home/u/.ssh/agent.sock" not in argv


def test_sockets_deduplicated() -> None:
    argv = bwrap_argv(rp_for(), HOST, ["true"], seccomp_fd=None,
                      hide_sockets=("/run/docker.sock", "/run/docker.sock"))
    assert argv.count("/run/docker.sock") == 1


def test_private_tmp_under_writable_var_is_mounted_after_it() -> None:
    rp = rp_for(writable=("/var", WS))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert index(argv, "--bind", "/var", "/var") < index(argv, "--tmpfs", "/var/tmp")
    check_invariants(argv)


def test_writable_slash() -> None:
    rp = rp_for(writable=("/",), protected=(ProtectedPath("/.git", "missing", "p"),))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert ops(argv)[ops(argv).index(("--cap-drop", "ALL")) + 1] == ("--bind", "/", "/")
    assert ("--ro-bind", "/", "/") not in ops(argv)
    assert ("--tmpfs", "/.git") in ops(argv)
    check_invariants(argv)


def test_paths_with_spaces_stay_single_arguments() -> None:
    ws = "/home/u/my project"
    rp = rp_for(writable=(ws,), cwd=f"{ws}/sub dir",
                protected=(ProtectedPath(f"{ws}/.git", "dir", "p"),),
                deny=(DeniedPath("/home/u/my secrets", "dir", "d"),))
    argv = bwrap_argv(rp, HOST, ["echo", "a b"], seccomp_fd=None, hide_sockets=("/run/a b.sock",))
    assert ("--bind", ws, ws) in ops(argv)
    assert ("--ro-bind", f"{ws}/.git", f"{ws}/.git") in ops(argv)
    assert ("--tmpfs", "/home/u/my secrets") in ops(argv)
    assert ("--chdir", f"{ws}/sub dir") in ops(argv)
    assert ("--ro-bind", "/dev/null", "/run/a b.sock") in ops(argv)
    assert command(argv) == ["echo", "a b"]


def test_symlinked_writable_root_binds_the_real_path(tmp_path: Path) -> None:
    real = tmp_path / "real-ws"
    real.mkdir()
    (real / ".git").mkdir()
    link = tmp_path / "link-ws"
    link.symlink_to(real)
    host = HostFacts(bwrap_path=BWRAP, home=str(tmp_path / "home"))
    rp = resolve(SandboxPolicy(workspace=str(link)), host)
    argv = bwrap_argv(rp, host, ["true"], seccomp_fd=None)
    r = str(real.resolve())
    assert ("--bind", r, r) in ops(argv)
    assert ("--ro-bind", f"{r}/.git", f"{r}/.git") in ops(argv)
    assert ("--tmpfs", f"{r}/.stockade") in ops(argv)
    assert str(link) not in argv
    assert ("--chdir", r) in ops(argv)


def test_rejects_non_canonical_paths() -> None:
    with pytest.raises(ValueError, match="canonical"):
        bwrap_argv(rp_for(writable=(f"{WS}/../proj",)), HOST, ["true"], seccomp_fd=None)
    with pytest.raises(ValueError, match="canonical"):
        bwrap_argv(rp_for(cwd="proj"), HOST, ["true"], seccomp_fd=None)
    with pytest.raises(ValueError):
        bwrap_argv(rp_for(), HOST, [], seccomp_fd=None)
    with pytest.raises(ValueError):
        bwrap_argv(rp_for(), HostFacts(), ["true"], seccomp_fd=None)


def test_full_access_is_only_a_pid_namespace() -> None:
    argv = bwrap_argv(rp_for(mode=Mode.FULL_ACCESS), HOST, ["true"], seccomp_fd=None)
    assert ops(argv) == [("--new-session",), ("--die-with-parent",), ("--unshare-pid",),
                         ("--dev-bind", "/", "/"), ("--proc", "/proc"), ("--chdir", WS)]


def test_pure_no_filesystem_access(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiler must not touch the filesystem or spawn: make both explode."""
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("bwrap_argv touched the host")

    for name in ("stat", "lstat", "open", "listdir", "scandir", "readlink", "access"):
        monkeypatch.setattr(os, name, boom)
    monkeypatch.setattr(subprocess, "Popen", boom)
    rp = rp_for(protected=(ProtectedPath(f"{WS}/.git", "dir", "p"),),
                deny=(DeniedPath("/home/u/.ssh", "dir", "d"),))
    bwrap_argv(rp, HOST, ["true"], seccomp_fd=3, hide_sockets=("/run/x.sock",), dev_nodes_dir="/d")


def test_read_only_workspace_under_private_tmp_stays_visible() -> None:
    ws = "/tmp/pytest/ws"
    rp = ResolvedPolicy(policy=SandboxPolicy(mode=Mode.READ_ONLY, workspace=ws), workspace=ws,
                        cwd=f"{ws}/sub", writable=(), protected=(), deny_read=(), home=HOST.home)
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert index(argv, "--tmpfs", "/tmp") < index(argv, "--ro-bind", ws, ws)
    assert f"{ws}/sub" not in [op[-1] for op in ops(argv) if op[0] == "--ro-bind"]  # inside ws already
    assert "--bind" not in argv
    check_invariants(argv)


def test_cwd_under_private_tmp_outside_writable_roots_is_visible() -> None:
    rp = rp_for(cwd="/tmp/elsewhere")
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert index(argv, "--tmpfs", "/tmp") < index(argv, "--ro-bind", "/tmp/elsewhere", "/tmp/elsewhere")
    assert ("--chdir", "/tmp/elsewhere") in ops(argv)


def test_gitdir_target_under_private_tmp_is_visible_read_only() -> None:
    ws = "/tmp/t/wt"
    target = "/tmp/t/main/.git/worktrees/wt"
    rp = rp_for(writable=(ws,), cwd=ws, protected=(ProtectedPath(f"{ws}/.git", "file", "p"),
                                                   ProtectedPath(target, "dir", "gitdir target")))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None)
    assert index(argv, "--tmpfs", "/tmp") < index(argv, "--ro-bind", target, target)
    assert ("--ro-bind", f"{ws}/.git", f"{ws}/.git") in ops(argv)
    check_invariants(argv)


def test_deny_and_sockets_inside_a_readable_root_under_tmp_still_apply() -> None:
    ws = "/tmp/pytest/ws"
    rp = ResolvedPolicy(policy=SandboxPolicy(mode=Mode.READ_ONLY, workspace=ws), workspace=ws, cwd=ws,
                        writable=(), protected=(), home=HOST.home,
                        deny_read=(DeniedPath(f"{ws}/.env", "file", ".env"),
                                   DeniedPath(f"{ws}/secrets", "dir", "secrets")))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None, hide_sockets=(f"{ws}/lsp.sock", "/tmp/x.sock"))
    bind = index(argv, "--ro-bind", ws, ws)
    assert index(argv, "--ro-bind", "/dev/null", f"{ws}/.env") > bind
    assert index(argv, "--tmpfs", f"{ws}/secrets") > bind
    assert index(argv, "--ro-bind", "/dev/null", f"{ws}/lsp.sock") > bind
    assert "/tmp/x.sock" not in argv
    check_invariants(argv)


EMPTY = "/dev/shm/stockade-1000/empty"
# A carved view (bwrap always has a user namespace): "/" is bwrap's tmpfs, the host's entries come back
# one by one, /mnt/data is a mount of its own, the kernel trees and the private dirs are the sandbox's.
VIEW = HostView(carved=True, items=(
    Skeleton("/", 0o755), Symlink("/bin", "usr/bin"), Skeleton("/dev", 0o755), Overlay("/etc", 1),
    PlainBind("/etc/hosts", is_dir=False, why="file mount"), Overlay("/home", 1), Skeleton("/mnt", 0o755),
    Overlay("/mnt/data", 2), Skeleton("/proc", 0o555), Overlay("/run", 3), Overlay("/srv", 1),
    PlainBind("/sys", why="kernel filesystem"), Skeleton("/tmp", 0o1777), Overlay("/usr", 1),
    Overlay("/var", 1),
))


def test_view_replaces_the_read_only_root_when_offline() -> None:
    rp = rp_for(deny=(DeniedPath("/home/u/.ssh", "dir", "d"), DeniedPath("/etc/shadow", "file", "s")),
                protected=(ProtectedPath(f"{WS}/.git", "dir", "p"),))
    argv = bwrap_argv(rp, HOST, ["true"], seccomp_fd=None, view=VIEW, overlay_empty=EMPTY,
                      hide_sockets=("/run/docker.sock", "/srv/app.sock", f"{WS}/lsp.sock", "/sys/x.sock"))
    found = ops(argv)
    assert ("--ro-bind", "/", "/") not in found  # the root is bwrap's own tmpfs
    # The last --overlay-src is the top layer: the host's dir; the empty dir is only the second layer.
    i = index(argv, "--ro-overlay", "/usr")
    assert found[i - 2:i] == [("--overlay-src", EMPTY), ("--overlay-src", "/usr")]
    assert ("--symlink", "usr/bin", "/bin") in found
    assert ("--dir", "/mnt") in found and found[index(argv, "--dir", "/mnt") - 1] == ("--perms", "0755")
    assert index(argv, "--dir", "/mnt") < index(argv, "--ro-overlay", "/mnt/data")
    assert index(argv, "--ro-overlay", "/etc") < index(argv, "--ro-bind", "/etc/hosts", "/etc/hosts")
    assert ("--ro-bind", "/sys", "/sys") in found
    # The sandbox's own mounts replace what the view has there.
    assert "/proc" not in [op[-1] for op in found if op[0] in ("--dir", "--ro-bind")]
    assert ("--dir", "/tmp") not in found and ("--dir", "/dev") not in found
    # Host content shows through the overlays: deny-read and protection still apply on top.
    assert index(argv, "--tmpfs", "/home/u/.ssh") > index(argv, "--ro-overlay", "/home")
    assert index(argv, "--ro-bind", "/dev/null", "/etc/shadow") > index(argv, "--ro-overlay", "/etc")
    assert index(argv, "--bind", WS, WS) > index(argv, "--ro-overlay", "/home")
    assert ("--ro-bind", f"{WS}/.git", f"{WS}/.git") in found
    # No socket is connectable through an overlay; the writable root and /sys are plain binds.
    assert "/run/docker.sock" not in argv and "/srv/app.sock" not in argv
    assert index(argv, "--ro-bind", "/dev/null", f"{WS}/lsp.sock") > index(argv, "--bind", WS, WS)
    assert ("--ro-bind", "/dev/null", "/sys/x.sock") in found
    # bwrap makes mountpoints in its tmpfs root while it sets up: read-only only at the end.
    assert mounts(argv)[-2:] == [("--remount-ro", "/dev"), ("--remount-ro", "/")]
    check_invariants(argv)


def test_view_without_an_empty_dir_uses_a_tmpfs_upper_made_read_only() -> None:
    argv = bwrap_argv(rp_for(), HOST, ["true"], seccomp_fd=None, view=VIEW)
    found = ops(argv)
    i = index(argv, "--tmp-overlay", "/usr")
    assert found[i - 1] == ("--overlay-src", "/usr") and "--ro-overlay" not in argv
    assert index(argv, "--remount-ro", "/usr") > index(argv, "--bind", WS, WS)
    check_invariants(argv)


def test_view_root_shown_plainly_when_overlayfs_refused_it() -> None:
    view = HostView(carved=True, plain=("/",), items=(
        PlainBind("/", why="overlay failed"), PlainBind("/proc", why="kernel filesystem"), Overlay("/run", 3)))
    argv = bwrap_argv(rp_for(), HOST, ["true"], seccomp_fd=None, view=view, overlay_empty=EMPTY,
                      hide_sockets=("/run/docker.sock", "/srv/app.sock"))
    found = ops(argv)
    assert found.index(("--ro-bind", "/", "/")) < found.index(("--dev", "/dev"))  # first, as without a view
    assert index(argv, "--ro-overlay", "/run") > found.index(("--ro-bind", "/", "/"))
    assert "/run/docker.sock" not in argv and ("--ro-bind", "/dev/null", "/srv/app.sock") in found
    assert ("--remount-ro", "/") not in found
    check_invariants(argv)


def test_no_view_when_network_on_or_root_writable() -> None:
    on = bwrap_argv(rp_for(network=NetworkMode.ON), HOST, ["true"], seccomp_fd=None, view=VIEW,
                    overlay_empty=EMPTY)
    assert ("--ro-bind", "/", "/") in ops(on)
    assert not {"--ro-overlay", "--tmp-overlay", "--overlay-src", "--symlink"} & set(on)
    root = bwrap_argv(rp_for(writable=("/", WS)), HOST, ["true"], seccomp_fd=None, view=VIEW, overlay_empty=EMPTY)
    assert ("--bind", "/", "/") in ops(root) and "--ro-overlay" not in root


def test_view_probe_argv_builds_only_the_view() -> None:
    argv = view_probe_argv(BWRAP, VIEW, EMPTY)
    assert argv[:5] == [BWRAP, "--die-with-parent", "--unshare-user", "--unshare-pid", "--unshare-net"]
    assert command(argv) == ["true"]
    assert ("--ro-overlay", "/usr") in ops(argv) and ("--ro-bind", "/", "/") not in ops(argv)
    assert ops(argv)[-1] == ("--remount-ro", "/")

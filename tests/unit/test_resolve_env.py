"""Path resolution (symlinks, protected paths, gitdir files, deny-read) and env scrubbing."""

from __future__ import annotations

import os
from pathlib import Path

from policies.env import build_env, is_secret_name
from policies.host import HostFacts
from policies.model import EnvInherit, EnvPolicy, Mode, NetworkMode, NetworkPolicy, SandboxPolicy
from policies.resolve import read_gitdir, resolve


def host(home: Path) -> HostFacts:
    return HostFacts(home=str(home), uid=0)


def test_symlinked_writable_root_resolves_to_target(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    ws = tmp_path / "ws"
    ws.mkdir()
    rp = resolve(SandboxPolicy(workspace=str(ws), writable_roots=(str(link),)), host(tmp_path))
    assert str(real) in rp.writable and str(link) not in rp.writable
    assert rp.writable[0] == str(ws) or rp.writable[0].count("/") <= rp.writable[-1].count("/")


def test_missing_protected_paths_are_listed(tmp_path: Path) -> None:
    rp = resolve(SandboxPolicy(workspace=str(tmp_path)), host(tmp_path))
    kinds = {Path(p.path).name: p.kind for p in rp.protected}
    assert kinds == {".git": "missing", ".stockade": "missing"}
    assert not rp.problems


def test_git_dir_protected(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    rp = resolve(SandboxPolicy(workspace=str(tmp_path)), host(tmp_path))
    assert any(p.path == str(tmp_path / ".git") and p.kind == "dir" for p in rp.protected)


def test_gitdir_file_protects_target(tmp_path: Path) -> None:
    target = tmp_path / "main" / ".git" / "worktrees" / "wt"
    target.mkdir(parents=True)
    (target / "commondir").write_text("../..\n")
    ws = tmp_path / "wt"
    ws.mkdir()
    (ws / ".git").write_text(f"gitdir: {target}\n")
    rp = resolve(SandboxPolicy(workspace=str(ws)), host(tmp_path))
    paths = {p.path: p.kind for p in rp.protected}
    assert paths[str(ws / ".git")] == "file"
    assert paths[str(target)] == "dir"
    assert paths[str(tmp_path / "main" / ".git")] == "dir"


def test_relative_gitdir(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / ".git").write_text("gitdir: store\n")
    assert read_gitdir(str(tmp_path / ".git")) == str(tmp_path / "store")


def test_bogus_git_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / ".git").write_text("not a pointer")
    rp = resolve(SandboxPolicy(workspace=str(tmp_path)), host(tmp_path))
    assert any("gitdir" in p for p in rp.problems)


def test_dangling_gitdir_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / ".git").write_text("gitdir: /nonexistent/x\n")
    rp = resolve(SandboxPolicy(workspace=str(tmp_path)), host(tmp_path))
    assert any("does not exist" in p for p in rp.problems)


def test_read_only_has_no_writable_roots(tmp_path: Path) -> None:
    rp = resolve(SandboxPolicy(mode=Mode.READ_ONLY, workspace=str(tmp_path)), host(tmp_path))
    assert rp.writable == () and rp.protected == ()


def test_deny_read_expands_home_and_globs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".netrc").write_text("x")
    keys = tmp_path / "etc"
    keys.mkdir()
    (keys / "ssh_host_rsa_key").write_text("k")
    (keys / "ssh_host_rsa_key.pub").write_text("p")
    policy = SandboxPolicy(workspace=str(tmp_path), deny_read=("~/.ssh", "~/.netrc", "~/.aws",
                                                              f"{keys}/ssh_host_*_key"))
    rp = resolve(policy, host(home))
    got = {d.path: d.kind for d in rp.deny_read}
    assert got == {str(home / ".ssh"): "dir", str(home / ".netrc"): "file",
                   str(keys / "ssh_host_rsa_key"): "file"}


def test_deny_read_symlink_denies_target(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    secret = tmp_path / "vault"
    secret.mkdir()
    (home / ".aws").symlink_to(secret)
    rp = resolve(SandboxPolicy(workspace=str(tmp_path), deny_read=("~/.aws",)), host(home))
    assert str(secret) in {d.path for d in rp.deny_read}


def test_secret_names() -> None:
    pats = EnvPolicy().secret_patterns
    for name in ("OPENAI_API_KEY", "GH_TOKEN", "aws_secret_access_key", "DB_PASSWORD", "SSH_AUTH_SOCK",
                 "AWS_PROFILE", "MY_CREDENTIALS"):
        assert is_secret_name(name, pats), name
    for name in ("PATH", "HOME", "LANG", "TERM", "CI"):
        assert not is_secret_name(name, pats), name


def test_env_inherit_all_scrubs_secrets(tmp_path: Path) -> None:
    caller = {"PATH": "/bin", "OPENAI_API_KEY": "sk-1", "GH_TOKEN": "t", "CI": "true", "HOME": "/h"}
    policy = SandboxPolicy(workspace=str(tmp_path), env=EnvPolicy(inherit=EnvInherit.ALL, passthrough=("GH_TOKEN",)))
    env = build_env(policy, caller)
    assert "OPENAI_API_KEY" not in env and env["GH_TOKEN"] == "t" and env["CI"] == "true"
    assert env["TMPDIR"] == "/tmp" and env["STOCKADE_NETWORK_DISABLED"] == "1"


def test_env_core_and_none(tmp_path: Path) -> None:
    caller = {"PATH": "/x", "CI": "1", "HOME": "/h", "LANG": "C"}
    core = build_env(SandboxPolicy(workspace=str(tmp_path)), caller)
    assert core["PATH"] == "/x" and "CI" not in core and core["HOME"] == "/h"
    none = build_env(SandboxPolicy(workspace=str(tmp_path), env=EnvPolicy(inherit=EnvInherit.NONE)), caller)
    assert none["PATH"] != "/x" and "HOME" not in none
    on = build_env(SandboxPolicy(workspace=str(tmp_path), network=NetworkPolicy(mode=NetworkMode.ON)), caller)
    assert "STOCKADE_NETWORK_DISABLED" not in on
    assert os.pathsep in on["PATH"] or on["PATH"] == "/x"


def test_env_set_wins(tmp_path: Path) -> None:
    policy = SandboxPolicy(workspace=str(tmp_path), env=EnvPolicy(set={"API_TOKEN": "given", "PAGER": "less"}))
    env = build_env(policy, {"PATH": "/bin"})
    assert env["API_TOKEN"] == "given" and env["PAGER"] == "less"


def test_state_dirs_protected_when_inside_writable_root(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "stockade").mkdir(parents=True)
    rp = resolve(SandboxPolicy(workspace=str(tmp_path)), host(tmp_path))
    assert any(p.path == str(tmp_path / "cache" / "stockade") and p.kind == "dir" for p in rp.protected)
    elsewhere = tmp_path / "ws"
    elsewhere.mkdir()
    rp = resolve(SandboxPolicy(workspace=str(elsewhere)), host(tmp_path))
    assert all("cache" not in p.path for p in rp.protected)


def test_programs_in_tmp(tmp_path: Path) -> None:
    from policies.resolve import programs_in_tmp

    tool = Path("/tmp") / f"stockade-test-tool-{os.getpid()}"
    (tool / "bin").mkdir(parents=True, exist_ok=True)
    try:
        got = programs_in_tmp(str(tool / "bin" / "python3"), {"PATH": "/usr/bin:/bin"}, "/")
        assert got == (str(tool),)
        assert programs_in_tmp("python3", {"PATH": f"{tool}/bin:/usr/bin"}, "/") == (str(tool),)
        assert programs_in_tmp("python3", {"PATH": "/usr/bin", "VIRTUAL_ENV": str(tool)}, "/") == (str(tool),)
        assert programs_in_tmp("/usr/bin/true", {"PATH": "/usr/bin"}, "/") == ()
    finally:
        (tool / "bin").rmdir()
        tool.rmdir()


def test_own_code_protected_when_inside_writable_root(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A venv in the workspace that stockade itself runs from: commands must not change what runs unconfined."""
    import sys

    venv = tmp_path / ".venv"
    venv.mkdir()
    monkeypatch.setattr(sys, "prefix", str(venv))
    rp = resolve(SandboxPolicy(workspace=str(tmp_path)), host(tmp_path))
    assert any(p.path == str(venv) and "own code" in p.reason for p in rp.protected)
    elsewhere = tmp_path / "ws"
    elsewhere.mkdir()
    rp = resolve(SandboxPolicy(workspace=str(elsewhere)), host(tmp_path))
    assert all("own code" not in p.reason for p in rp.protected)


def test_nested_repositories_are_protected(tmp_path: Path) -> None:
    """`vendor/lib/.git` runs hooks on the host like the top `.git`: protected when it exists."""
    (tmp_path / ".git").mkdir()
    nested = tmp_path / "vendor" / "lib" / ".git"
    nested.mkdir(parents=True)
    deep = tmp_path / "a" / "b" / "c" / "d" / ".git"  # deeper than the search goes
    deep.mkdir(parents=True)
    (tmp_path / "node_modules" / "x" / ".git").mkdir(parents=True)  # bulky trees are not searched
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".git").write_text("not a pointer\n")  # nested and odd: protected, not a refusal
    rp = resolve(SandboxPolicy(workspace=str(tmp_path)), host(tmp_path))
    paths = {p.path for p in rp.protected}
    assert str(nested) in paths and str(tmp_path / "sub" / ".git") in paths
    assert str(deep) not in paths and str(tmp_path / "node_modules" / "x" / ".git") not in paths
    assert not rp.problems
    assert str(tmp_path / "vendor" / ".stockade") not in paths  # below the top only what exists
    assert str(tmp_path / "vendor") in rp.pinned  # the nested repo cannot be carried off by a rename

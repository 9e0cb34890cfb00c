"""Denial explanations parsed from tool error messages."""

from __future__ import annotations

from pathlib import Path

from policies.host import HostFacts
from policies.model import Mode, NetworkMode, NetworkPolicy, SandboxPolicy
from policies.resolve import resolve
from sandbox.denials import find_denials


def rp_for(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (tmp_path / "ws" / ".git").mkdir(parents=True)
    policy = SandboxPolicy(workspace=str(tmp_path / "ws"), deny_read=("~/.ssh",), **kw)  # type: ignore[arg-type]
    return resolve(policy, HostFacts(home=str(home)))


def test_write_outside(tmp_path: Path) -> None:
    rp = rp_for(tmp_path)
    out = b"sh: 1: cannot create /etc/passwd: Read-only file system\n"
    [d] = find_denials(out, rp)
    assert (d.kind, d.target, d.rule) == ("write", "/etc/passwd", "outside the writable roots")
    assert "denied write /etc/passwd" in d.hint()


def test_protected_relative_path(tmp_path: Path) -> None:
    rp = rp_for(tmp_path)
    [d] = find_denials(b"touch: cannot touch '.git/config': Read-only file system\n", rp)
    assert d.kind == "protected" and d.target.endswith("/ws/.git/config")


def test_deny_read(tmp_path: Path) -> None:
    rp = rp_for(tmp_path)
    line = f"cat: {tmp_path}/home/.ssh/id_rsa: Permission denied\n".encode()
    [d] = find_denials(line, rp)
    assert d.kind == "read" and "deny-read" in d.rule


def test_python_errors(tmp_path: Path) -> None:
    rp = rp_for(tmp_path, mode=Mode.READ_ONLY)
    out = f"PermissionError: [Errno 30] Read-only file system: '{tmp_path}/ws/new.txt'\n".encode()
    [d] = find_denials(out, rp)
    assert d.kind == "write" and d.rule == "read-only policy"


def test_inside_workspace_is_not_a_denial(tmp_path: Path) -> None:
    rp = rp_for(tmp_path)
    out = f"rm: cannot remove '{tmp_path}/ws/x': Permission denied\n".encode()
    assert find_denials(out, rp) == []


def test_network(tmp_path: Path) -> None:
    rp = rp_for(tmp_path)
    [d] = find_denials(b"curl: (6) Could not resolve host: example.com\n", rp)
    assert d.kind == "network"
    rp_on = rp_for(tmp_path / "x", network=NetworkPolicy(mode=NetworkMode.ON))
    assert find_denials(b"curl: (6) Could not resolve host: example.com\n", rp_on) == []


def test_unquoted_relative_protected(tmp_path: Path) -> None:
    rp = rp_for(tmp_path)
    [d] = find_denials(b"sh: 1: cannot create .git/config: Read-only file system\n", rp)
    assert d.kind == "protected" and d.target == f"{tmp_path}/ws/.git/config"


def test_unresolvable_paths_are_not_an_error(tmp_path: Path) -> None:
    rp = rp_for(tmp_path)
    out = b"cat: /proc/1/root/etc/shadow: Permission denied\nsh: cannot create /proc/1/cwd/x: Permission denied\n"
    assert find_denials(out, rp) == []

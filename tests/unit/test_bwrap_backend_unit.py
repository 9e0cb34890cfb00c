"""BwrapBackend without spawning: availability, protections and path canonicalisation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from policies.host import HostFacts
from policies.model import Mode, NetworkMode, NetworkPolicy, SandboxPolicy
from policies.resolve import DeniedPath, ProtectedPath, resolve
from sandbox.backends import bwrap as bwrap_backend
from sandbox.backends import gaps
from sandbox.backends.base import ENFORCED, NOT_APPLICABLE, PROTECTIONS
from sandbox.backends.bwrap import BwrapBackend, canonical_paths

GOOD = HostFacts(bwrap_path="/usr/bin/bwrap", bwrap_usable=True, seccomp=True, home="/home/u")


@pytest.fixture(autouse=True)
def overlay_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """GOOD's overlay view covers every mount (the real check spawns bwrap: see the integration tests)."""
    monkeypatch.setattr(bwrap_backend, "overlay_problem", lambda rp, host: None)


def test_unavailable_names_error_and_fix() -> None:
    b = BwrapBackend()
    assert b.name == "bwrap"
    assert b.unavailable(GOOD) is None
    bad = dataclasses.replace(GOOD, bwrap_usable=False, bwrap_error="setting up uid map: Permission denied")
    msg = b.unavailable(bad)
    assert msg and "setting up uid map" in msg and "Fix" in msg
    assert b.unavailable(HostFacts(platform="macos")) is not None


def _rp(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    (tmp_path / "ws").mkdir(exist_ok=True)
    return resolve(SandboxPolicy(workspace=str(tmp_path / "ws"), **kw), GOOD)  # type: ignore[arg-type]


def test_protections_workspace_write(tmp_path: Path) -> None:
    prot = BwrapBackend().protections(_rp(tmp_path), GOOD)
    assert set(prot) == set(PROTECTIONS)
    for key in ("filesystem-write", "protected-paths", "private-tmp", "network", "host-unix-sockets",
                "abstract-unix-sockets", "process-isolation", "no-capabilities", "tree-kill"):
        assert prot[key] == ENFORCED, key
    assert prot["limits"] == NOT_APPLICABLE
    assert prot["syscall-filter"] in (ENFORCED,) or prot["syscall-filter"].startswith("missing")


def test_protections_host_sockets_best_effort_without_the_overlay_view(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bwrap_backend, "overlay_problem", lambda rp, host: "not overlaid: /data")
    prot = BwrapBackend().protections(_rp(tmp_path), GOOD)
    assert prot["host-unix-sockets"].startswith("best-effort: not overlaid: /data")
    assert prot["network"] == ENFORCED


def test_overlay_problem_without_overlayfs(tmp_path: Path) -> None:
    assert bwrap_backend.sockets_protection(None) == ENFORCED
    old = dataclasses.replace(GOOD, kernel="5.4.0")
    bwrap_backend._FOUND.pop("overlay", None)
    try:
        assert "5.11" in (bwrap_backend.host_view_for(_rp(tmp_path), old, create=False)[2] or "")
    finally:
        bwrap_backend._FOUND.pop("overlay", None)


def test_protections_without_seccomp_is_missing(tmp_path: Path) -> None:
    prot = BwrapBackend().protections(_rp(tmp_path), dataclasses.replace(GOOD, seccomp=False))
    assert prot["syscall-filter"].startswith("missing:")


def test_protections_network_modes(tmp_path: Path) -> None:
    on = BwrapBackend().protections(_rp(tmp_path, network=NetworkPolicy(mode=NetworkMode.ON)), GOOD)
    assert on["network"] == on["host-unix-sockets"] == on["abstract-unix-sockets"] == NOT_APPLICABLE
    allow = BwrapBackend().protections(_rp(tmp_path, network=NetworkPolicy(mode=NetworkMode.ALLOWLIST)), GOOD)
    assert allow["network"].startswith(ENFORCED + ": allowlist via proxy")  # a netns whose only way out is the proxy
    assert not gaps(allow)


def test_protections_read_only_and_full_access(tmp_path: Path) -> None:
    ro = BwrapBackend().protections(_rp(tmp_path, mode=Mode.READ_ONLY), GOOD)
    assert ro["filesystem-write"] == ENFORCED and ro["protected-paths"] == NOT_APPLICABLE
    full = BwrapBackend().protections(_rp(tmp_path, mode=Mode.FULL_ACCESS), GOOD)
    assert full["tree-kill"] == ENFORCED
    assert all(v == NOT_APPLICABLE for k, v in full.items() if k != "tree-kill")


def test_canonical_paths_drop_symlinked_spellings(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "data" / "aws"
    data.mkdir(parents=True)
    (home / ".aws").symlink_to(data)  # absolute symlink: bwrap cannot mount through it
    host = dataclasses.replace(GOOD, home=str(home))
    (tmp_path / "ws").mkdir()
    rp = resolve(SandboxPolicy(workspace=str(tmp_path / "ws"), deny_read=("~/.aws",)), host)
    assert {d.path for d in rp.deny_read} == {str(home / ".aws"), str(data.resolve())}
    crp = canonical_paths(rp)
    assert [(d.path, d.kind) for d in crp.deny_read] == [(str(data.resolve()), "dir")]


def test_canonical_paths_protected(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "realgit").mkdir()
    (ws / ".git").symlink_to(ws / "realgit")
    rp = resolve(SandboxPolicy(workspace=str(ws), protected=(".git", ".stockade", "conf/deep/x")), GOOD)
    crp = canonical_paths(rp)
    paths = {p.path: p.kind for p in crp.protected}
    real = str((ws / "realgit").resolve())
    w = str(ws.resolve())
    assert paths.get(real) == "dir"  # the symlink's target, protected on its own
    assert f"{w}/.git" not in paths  # a symlink cannot be a mountpoint
    assert paths.get(f"{w}/.stockade") == "missing"
    # a missing nested name is protected at its first missing component
    assert paths.get(f"{w}/conf") == "missing" and f"{w}/conf/deep/x" not in paths


def test_canonical_paths_keeps_plain_entries() -> None:
    rp = resolve(SandboxPolicy(workspace="/", deny_read=()), GOOD)
    rp = dataclasses.replace(rp, deny_read=(DeniedPath("/etc/hostname", "file", "x"),),
                             protected=(ProtectedPath("/etc", "dir", "x"),))
    crp = canonical_paths(rp)
    assert crp.deny_read == rp.deny_read and crp.protected == rp.protected


def test_stub_for_a_vanished_target_is_removed(tmp_path: Path) -> None:
    from sandbox.backends.bwrap import _Stubs

    ws = tmp_path / "ws"
    ws.mkdir()
    sock, deny, kept, outside = ws / "app.sock", ws / "secret.d", ws / "data.txt", tmp_path / "out.sock"
    sock.write_text("stand-in for a socket")
    deny.mkdir()
    kept.write_text("user data")
    outside.write_text("x")
    warnings: list[str] = []
    stubs = _Stubs(warnings)
    stubs.watch([str(sock), str(deny), str(kept), str(outside)], (str(ws),))
    assert str(outside) not in stubs.watched
    # All three vanish before bwrap mounts; bwrap makes empty stubs for the first two,
    # and the user writes new content at the third.
    sock.unlink()
    sock.write_text("")
    sock.chmod(0o444)  # what bwrap makes
    deny.rmdir()
    deny.mkdir()
    kept.unlink()
    kept.write_text("new user data")
    stubs.release()
    assert not sock.exists() and not deny.exists()
    assert kept.read_text() == "new user data"
    assert warnings == []


def test_vanished_during_setup() -> None:
    from sandbox.backends.bwrap import vanished_during_setup

    msg = "bwrap: Can't create file at /srv/x/docker.sock: Read-only file system\n"
    assert vanished_during_setup(1, msg)
    assert vanished_during_setup(1, msg.encode())
    assert vanished_during_setup(1, "bwrap: Can't mkdir parents for /srv/x/d.sock: Read-only file system\n")
    assert vanished_during_setup(1, "bwrap: Can't make overlay mount on /newroot/srv/gone with options "
                                    "lowerdir=/oldroot/srv/gone:/oldroot/dev/shm/stockade-0/empty,userxattr: "
                                    "No such file or directory\n")
    assert not vanished_during_setup(0, msg)
    assert not vanished_during_setup(1, "some output\n" + msg)  # the command ran and printed this
    assert not vanished_during_setup(1, "bwrap: execvp nosuch: No such file or directory\n")


def test_symlinked_protected_name_is_refused(tmp_path: Path) -> None:
    import pytest

    from sandbox.backends.base import SandboxSetupError
    from sandbox.backends.bwrap import unpinnable

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "realgit").mkdir()
    (ws / ".git").symlink_to("realgit")
    rp = resolve(SandboxPolicy(workspace=str(ws)), GOOD)
    assert unpinnable(rp) == [str(ws.resolve() / ".git")]
    assert BwrapBackend().protections(rp, GOOD)["protected-paths"].startswith("missing:")
    with pytest.raises(SandboxSetupError, match="symlink"):
        BwrapBackend().launch(rp, GOOD, ["true"], {})
    assert unpinnable(resolve(SandboxPolicy(workspace=str(ws), mode=Mode.READ_ONLY), GOOD)) == []

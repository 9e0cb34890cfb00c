"""The Seatbelt backend under a real sandbox-exec: macOS only (skipped elsewhere, with that reason)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "darwin" or not os.access("/usr/bin/sandbox-exec", os.X_OK),
                                reason="needs macOS with /usr/bin/sandbox-exec; this host cannot run Seatbelt")


def _run(argv: list[str], ws: Path, **kw: object):  # type: ignore[no-untyped-def]
    import sandbox
    from policies.model import SandboxPolicy

    policy = SandboxPolicy(workspace=str(ws), **kw)  # type: ignore[arg-type]
    return sandbox.run(argv, policy, cwd=str(ws), timeout=60, backend="auto")


def test_write_inside_allowed_outside_denied(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    outside = Path.home() / f".stockade-test-{os.getpid()}"
    r = _run(["/bin/sh", "-c", f"echo ok > inside.txt; echo no > {outside}"], ws)
    assert r.backend == "seatbelt"
    assert (ws / "inside.txt").read_text() == "ok\n"
    assert not outside.exists()
    assert any(d.kind == "write" for d in r.denials)


def test_protected_git_even_before_it_exists(tmp_path: Path) -> None:
    r = _run(["/bin/sh", "-c", "mkdir .git; mkdir -p .GIT/hooks; echo x > .stockade"], tmp_path)
    assert not (tmp_path / ".git").exists()
    assert not (tmp_path / ".stockade").exists()
    assert r.exit_code != 0


def test_deny_read_and_network_off(tmp_path: Path) -> None:
    r = _run([sys.executable, "-c", "import socket; socket.create_connection(('1.1.1.1', 53), 3)"], tmp_path)
    assert r.exit_code != 0
    r = _run(["/bin/cat", str(Path.home() / ".ssh" / "known_hosts")], tmp_path)
    assert r.exit_code != 0


def test_multiprocessing_and_tmpdir_work(tmp_path: Path) -> None:
    code = ("import multiprocessing as m, tempfile, os;"
            "print(m.Pool(2).map(abs, [-1, -2]), os.access(tempfile.gettempdir(), os.W_OK))")
    r = _run([sys.executable, "-c", code], tmp_path)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == b"[1, 2] True"

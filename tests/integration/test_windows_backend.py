"""The Windows restricted-token backend for real: Windows only, after the one-time setup (skipped elsewhere)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "win32",
                                reason="needs Windows (restricted tokens, ACLs, job objects); this host is not Windows")


@pytest.fixture(autouse=True)
def _ready() -> None:
    from sandbox.backends.windows import users_ready

    if not users_ready():
        pytest.skip("the sandbox users are not set up (run the script `stockade doctor` prints)")


def _run(ws: Path, code: str) -> int:
    import subprocess

    from policies.model import SandboxPolicy
    from policies.resolve import resolve
    from sandbox.backends.windows import WindowsBackend
    from sandbox.detect import host_facts

    host = host_facts()
    launch = WindowsBackend().launch(resolve(SandboxPolicy(workspace=str(ws)), host), host,
                                     [sys.executable, "-c", code], {})
    try:
        return subprocess.run(launch.argv, env=None, cwd=launch.cwd, timeout=120).returncode
    finally:
        launch.cleanup()


def test_outside_write_denied_inside_allowed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    outside = Path.home() / "stockade-escape.txt"
    _run(ws, f"open(r'{ws / 'in.txt'}','w').write('ok'); open(r'{outside}','w').write('no')")
    assert (ws / "in.txt").read_text() == "ok"
    assert not outside.exists()


@pytest.mark.parametrize("name", [".git\\config", ".GIT\\config", ".git:stream", ".git\\hooks\\x"])
def test_protected_spellings_denied(tmp_path: Path, name: str) -> None:
    (tmp_path / ".git").mkdir()
    target = tmp_path / name
    _run(tmp_path, f"open(r'{target}','w').write('x')")
    assert not target.exists() or target.read_text() != "x"

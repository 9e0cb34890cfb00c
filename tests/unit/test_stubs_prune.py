"""The stub lock registry does not grow: the last run out retires its lock files."""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.stubs import StubLease


def test_last_release_removes_stub_and_lock_files(tmp_path: Path) -> None:
    registry = tmp_path / "reg"
    registry.mkdir(mode=0o700)
    target = tmp_path / "ws" / ".stockade"
    target.parent.mkdir()
    first, second = StubLease(str(registry)), StubLease(str(registry))
    assert first.join(str(target), create=True)
    assert second.join(str(target), create=False)
    assert first.release() == []
    assert target.is_dir() and os.listdir(registry)  # the second run still mounts on it
    assert second.release() == []
    assert not target.exists()
    assert os.listdir(registry) == []


def test_user_data_is_never_removed(tmp_path: Path) -> None:
    registry = tmp_path / "reg"
    registry.mkdir(mode=0o700)
    target = tmp_path / ".stockade"
    lease = StubLease(str(registry))
    assert lease.join(str(target), create=True)
    (target / "config.toml").write_text("x")  # the host wrote into it: user data now
    lease.release()
    assert (target / "config.toml").read_text() == "x"

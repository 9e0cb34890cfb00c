"""Mountpoint stubs for missing protected paths: made, shared between runs, removed by the last one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.stubs import StubLease, _ensure_registry


@pytest.fixture
def registry(tmp_path: Path) -> str:
    reg = str(tmp_path / "reg" / "stubs")
    _ensure_registry(reg)
    return reg


def test_made_and_removed(tmp_path: Path, registry: str) -> None:
    stub = str(tmp_path / ".stockade")
    lease = StubLease(registry)
    assert lease.join(stub, create=True)
    assert os.path.isdir(stub) and not os.listdir(stub)
    assert StubLease(registry).is_stub(stub)
    assert lease.release() == []
    assert not os.path.lexists(stub)
    assert not StubLease(registry).is_stub(stub)


def test_last_run_out_removes_it(tmp_path: Path, registry: str) -> None:
    stub = str(tmp_path / ".git")
    first, second = StubLease(registry), StubLease(registry)
    assert first.join(stub, create=True)
    # The second run resolved after the stub appeared: it sees a dir, recognises it and joins.
    assert second.is_stub(stub)
    assert second.join(stub, create=False)
    assert first.release() == []
    assert os.path.isdir(stub), "removed while another run still mounts on it"
    assert second.release() == []
    assert not os.path.lexists(stub)


def test_user_data_is_never_removed(tmp_path: Path, registry: str) -> None:
    stub = tmp_path / ".stockade"
    lease = StubLease(registry)
    assert lease.join(str(stub), create=True)
    (stub / "config.toml").write_text("mine")  # the user wrote into it from the host meanwhile
    lease.release()
    assert (stub / "config.toml").read_text() == "mine"
    assert not StubLease(registry).is_stub(str(stub))


def test_replaced_stub_is_not_removed(tmp_path: Path, registry: str) -> None:
    stub = tmp_path / ".stockade"
    lease = StubLease(registry)
    assert lease.join(str(stub), create=True)
    stub.rmdir()
    stub.mkdir()  # a different (empty) dir now: not ours
    lease.release()
    assert stub.is_dir()


def test_existing_user_dir_is_not_a_stub(tmp_path: Path, registry: str) -> None:
    d = tmp_path / ".git"
    d.mkdir()
    lease = StubLease(registry)
    assert not lease.is_stub(str(d))
    assert not lease.join(str(d), create=True)
    assert not lease.join(str(d), create=False)
    lease.release()
    assert d.is_dir()


def test_stub_left_by_a_crash_is_cleaned_by_the_next_run(tmp_path: Path, registry: str) -> None:
    stub = str(tmp_path / ".stockade")
    crashed = StubLease(registry)
    assert crashed.join(stub, create=True)
    for held in crashed.held:  # the process died: its locks are gone, release() never ran
        os.close(held.users_fd)
    crashed.held.clear()
    later = StubLease(registry)
    assert later.is_stub(stub)
    assert later.join(stub, create=False)
    later.release()
    assert not os.path.lexists(stub)


def test_registry_must_be_private(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    with pytest.raises(OSError):
        _ensure_registry(str(loose / "stubs"))

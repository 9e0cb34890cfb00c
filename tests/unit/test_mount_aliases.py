"""Other names of a path through host bind mounts, from a mountinfo text."""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.mount_aliases import MountEntry, aliases, parse_mountinfo

SAMPLE = (
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "80 22 254:0 /srv/home /srv/alias\\040dir rw,relatime - ext4 /dev/vda rw\n"
    "81 22 0:30 / /proc rw - proc proc rw\n"
)


def test_parse_mountinfo_unescapes() -> None:
    assert parse_mountinfo(SAMPLE) == [
        MountEntry("254:0", "/", "/"), MountEntry("254:0", "/srv/home", "/srv/alias dir"),
        MountEntry("0:30", "/", "/proc")]


def test_aliases_need_the_same_inode(tmp_path: Path) -> None:
    real = tmp_path / "home" / ".ssh"
    real.mkdir(parents=True)
    alias_root = tmp_path / "alias"
    (alias_root / ".ssh").mkdir(parents=True)  # same name, different directory: not an alias
    mounts = [MountEntry("1:1", "/", "/"), MountEntry("1:1", str(tmp_path / "home"), str(alias_root))]
    assert aliases([str(real)], mounts) == {}
    os.rmdir(alias_root / ".ssh")
    os.rmdir(alias_root)
    os.symlink(tmp_path / "home", alias_root)  # a symlink stands in for the bind mount: same inode
    assert aliases([str(real)], mounts) == {str(real): [str(alias_root / ".ssh")]}


def test_no_bind_mounts_no_work() -> None:
    assert aliases(["/etc/shadow"], [MountEntry("1:1", "/", "/"), MountEntry("0:5", "/", "/proc")]) == {}

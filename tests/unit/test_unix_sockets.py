"""host_unix_sockets(): real sockets bound in a tmp dir, and the /proc/net/unix parser."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from sandbox.unix_sockets import _listed, host_unix_sockets

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs /proc/net/unix")


def _bound(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    return s


def test_finds_a_real_bound_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "server.sock")
    with _bound(path):
        assert os.path.realpath(path) in host_unix_sockets()


def test_path_with_spaces(tmp_path: Path) -> None:
    d = tmp_path / "a dir"
    d.mkdir()
    path = str(d / "my sock")
    with _bound(path):
        assert os.path.realpath(path) in host_unix_sockets()


def test_canonical_path_through_a_symlinked_dir(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with _bound(str(link / "s.sock")):  # /proc/net/unix shows the path used at bind()
        found = host_unix_sockets()
        assert str((real / "s.sock").resolve()) in found
        assert str(link / "s.sock") not in found


def test_skips_abstract_deleted_and_non_sockets(tmp_path: Path) -> None:
    name = f"stockade-test-{os.getpid()}-{time.monotonic_ns()}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + name)
    gone = str(tmp_path / "gone.sock")
    replaced = str(tmp_path / "replaced.sock")
    with abstract, _bound(gone), _bound(replaced):
        os.unlink(gone)
        os.unlink(replaced)
        Path(replaced).write_text("now a regular file")
        found = host_unix_sockets()
    assert not any(name in p for p in found)
    assert gone not in found and replaced not in found
    assert all(p.startswith("/") for p in found)


def test_every_name_once(tmp_path: Path) -> None:
    path = str(tmp_path / "once.sock")
    with _bound(path):
        os.link(path, str(tmp_path / "hardlink.sock"))  # a second name in the same dir
        found = host_unix_sockets()
    assert len(found) == len(set(found))
    mine = sorted(p for p in found if p.startswith(str(tmp_path.resolve())))
    assert mine == [str((tmp_path / "hardlink.sock").resolve()), str((tmp_path / "once.sock").resolve())]


def test_parser() -> None:
    text = (
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/docker.sock\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 12346 @/tmp/.X11-unix/X0\n"
        "0000000000000000: 00000003 00000000 00000000 0001 03 12347\n"
        "0000000000000000: 00000002 00000000 00010000 0005 01 12348 /run/a b.sock\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 12349 relative.sock\n"
    )
    assert _listed(text) == ["/run/docker.sock", "/run/a b.sock"]


def test_missing_proc_file_is_not_fatal(tmp_path: Path) -> None:
    assert isinstance(host_unix_sockets(str(tmp_path / "nope")), tuple)


def test_fast_enough() -> None:
    host_unix_sockets()
    start = time.perf_counter()
    for _ in range(20):
        host_unix_sockets()
    assert (time.perf_counter() - start) / 20 < 0.02


def test_socket_renamed_after_bind_is_found(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    with _bound(str(d / "docker.sock.tmp")):
        os.rename(d / "docker.sock.tmp", d / "docker.sock")  # /proc/net/unix still shows the .tmp name
        assert str((d / "docker.sock").resolve()) in host_unix_sockets()

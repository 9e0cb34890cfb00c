"""The session protocol's framing: JSON frames and the binary exit record, whole or cut anywhere."""

from __future__ import annotations

import struct

import pytest

from sandbox.worker import BINARY, EXIT_RECORD, HEADER, FrameError, FrameReader, encode, encode_exit


def _exit(rid: int = 7, **kw: object) -> bytes:
    args = dict(pid=4242, status=3 << 8, duration=0.25, utime=0.125, stime=0.0625, maxrss=2048,
                timed_out=False, killed=False)
    args.update(kw)
    return encode_exit(rid, **args)  # type: ignore[arg-type]


def test_exit_record_round_trip() -> None:
    (msg,) = FrameReader().feed(_exit(timed_out=True))
    assert msg == {"id": 7, "ev": "exit", "pid": 4242, "status": 3 << 8, "timed_out": True, "killed": False,
                   "duration": 0.25, "utime": 0.125, "stime": 0.0625, "maxrss": 2048}
    (msg,) = FrameReader().feed(_exit(rid=(1 << 63) - 1, killed=True))
    assert msg["id"] == (1 << 63) - 1 and msg["killed"] and not msg["timed_out"]


def test_records_and_frames_cut_at_every_byte() -> None:
    stream = encode({"id": 1, "ev": "started", "pid": 9}) + _exit(1) + encode({"id": 2, "ok": True}) + _exit(2)
    reader, got = FrameReader(), []
    for i in range(len(stream)):
        got.extend(reader.feed(stream[i:i + 1]))
    assert [m.get("ev", m.get("ok")) for m in got] == ["started", "exit", True, "exit"]
    assert [m["id"] for m in got] == [1, 1, 2, 2]
    assert FrameReader().feed(stream) == got


def test_unknown_binary_record_is_skipped_whole() -> None:
    stream = HEADER.pack(BINARY | 5) + b"12345" + encode({"id": 3, "ok": True})
    got = FrameReader().feed(stream)
    assert isinstance(got[0], FrameError) and got[1] == {"id": 3, "ok": True}
    reader, got = FrameReader(), []
    for i in range(len(stream)):
        got.extend(reader.feed(stream[i:i + 1]))
    assert isinstance(got[0], FrameError) and got[1:] == [{"id": 3, "ok": True}]


@pytest.mark.parametrize("bad", [-1, 1 << 64])
def test_exit_record_refuses_ids_it_cannot_hold(bad: int) -> None:
    with pytest.raises(struct.error):  # the worker refuses such ids before anything runs
        _exit(bad)


def test_record_size_is_fixed() -> None:
    assert len(_exit()) == HEADER.size + EXIT_RECORD.size

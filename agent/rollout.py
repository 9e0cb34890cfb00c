"""Session transcripts as JSONL, written before every model call, so a session can be resumed.

One file per session under `$XDG_STATE_HOME/stockade/sessions/YYYY/MM/DD/`
(`~/.local/state/...`), lines `{"timestamp", "type", "payload"}` with type
`session_meta` (once, first), `turn_context` (per turn: cwd, policy,
approval, model), `item` (a model-visible history item), `compacted` (the
history was replaced: payload holds the new items) and `event` (turn
results). Deltas and approval requests are never written.

Durability: `flush()` runs before each model call and pushes every line to
the kernel, so a `kill -9` of stockade loses nothing written before its last
model call. It does not fsync: surviving a power cut is not the goal, and an
fsync per model call costs milliseconds.

The sessions directory is one of stockade's state directories, which every
sandbox keeps read-only when a writable root contains it: a sandboxed
command cannot plant instructions in a transcript that will be resumed.
"""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from agent.items import Item

_ITEM: TypeAdapter[Item] = TypeAdapter(Item)


class RolloutError(Exception):
    pass


def sessions_dir() -> Path:
    from policies.resolve import state_dirs

    return Path(state_dirs()[2]) / "sessions"


def new_session_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class SessionMeta:
    session_id: str
    cwd: str
    provider: str
    model: str
    policy: str  # profile name or mode
    approval: str
    base_url: str | None = None
    created: str = ""
    version: str = "1"
    forked_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Rollout:
    """Append-only writer of one session's transcript."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _drop_torn_tail(path)
        # Private: transcripts hold what the commands printed.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # errors="replace": a stray surrogate (undecodable bytes smuggled in as text) costs one
        # character, not the session (a UnicodeEncodeError at the next flush).
        self._file = open(fd, "a", encoding="utf-8", errors="replace")
        self._pending: list[str] = []

    @classmethod
    def create(cls, meta: SessionMeta) -> Rollout:
        now = datetime.now(UTC)
        meta.created = meta.created or now.isoformat()
        path = sessions_dir() / now.strftime("%Y/%m/%d") / f"rollout-{now:%Y%m%dT%H%M%S}-{meta.session_id}.jsonl"
        rollout = cls(path)
        rollout._line("session_meta", meta.__dict__)
        rollout.flush()
        return rollout

    def _line(self, kind: str, payload: Any) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        self._pending.append(json.dumps({"timestamp": stamp, "type": kind, "payload": payload},
                                        ensure_ascii=False) + "\n")

    def turn_context(self, **payload: Any) -> None:
        self._line("turn_context", payload)

    def item(self, item: Item) -> None:
        self._line("item", item.model_dump(mode="json"))

    def compacted(self, items: list[Item]) -> None:
        self._line("compacted", {"items": [i.model_dump(mode="json") for i in items]})

    def event(self, payload: dict[str, Any]) -> None:
        self._line("event", payload)

    def flush(self) -> None:
        if self._pending:
            self._file.write("".join(self._pending))
            self._pending.clear()
        self._file.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._file.close()


def _drop_torn_tail(path: Path, chunk: int = 65536) -> None:
    """Cut a torn last line (killed mid-write) off an existing transcript before appending to it.

    `load` skips such a line, but a line appended after it would be glued onto
    it and the result, no longer last, would make the whole transcript unreadable.
    """
    try:
        fh = open(path, "rb+")
    except FileNotFoundError:
        return
    with fh:
        end = fh.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            block = fh.read(pos - start)
            if pos == end and block.endswith(b"\n"):
                return  # the usual case: the file ends with a whole line
            cut = block.rfind(b"\n")
            if cut >= 0:
                fh.truncate(start + cut + 1)
                return
            pos = start
        fh.truncate(0)


@dataclass
class LoadedSession:
    meta: SessionMeta
    items: list[Item]
    path: Path
    turns: int
    last_context: dict[str, Any]
    warnings: list[str]


def _dated_transcripts() -> list[tuple[float, Path]]:
    """Every transcript with its last write time, oldest first.

    One that vanishes or is a dangling link between the listing and the stat
    (another stockade cleaning up), or is not a file, is skipped, not a traceback
    (nor the `last` session).
    """
    root = sessions_dir()
    if not root.is_dir():
        return []
    dated: list[tuple[float, Path]] = []
    for path in root.glob("*/*/*/rollout-*.jsonl"):
        try:
            info = path.stat()
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            dated.append((info.st_mtime, path))
    dated.sort(key=lambda pair: pair[0])
    return dated


def _transcripts() -> list[Path]:
    """Every transcript, oldest first (by last write)."""
    return [path for _, path in _dated_transcripts()]


def _session_id(path: Path) -> str:
    return path.stem.rsplit("-", 1)[-1]


def find_session(session_id: str) -> Path:
    """The transcript of `session_id` (a unique prefix is enough), or `last` for the newest."""
    root = sessions_dir()
    files = _transcripts()
    if not files:
        raise RolloutError(f"no saved sessions in {root}")
    if session_id in ("last", "--last"):
        return files[-1]
    matches = [p for p in files if _session_id(p).startswith(session_id)]
    if not matches:
        raise RolloutError(f"no session {session_id!r} in {root} (`stockade resume --list` shows them)")
    if len(matches) > 1:
        ids = ", ".join(_session_id(p) for p in matches[:5])
        raise RolloutError(f"session id {session_id!r} is ambiguous: {ids}")
    return matches[0]


def list_sessions(limit: int = 20) -> list[tuple[str, float, Path]]:
    newest = _dated_transcripts()[::-1][:limit]
    return [(_session_id(p), mtime, p) for mtime, p in newest]


def load(path: Path) -> LoadedSession:
    """Replay a transcript. A torn last line (killed mid-write) is skipped with a warning."""
    meta: SessionMeta | None = None
    items: list[Item] = []
    turns = 0
    last_context: dict[str, Any] = {}
    warnings: list[str] = []
    # Invalid UTF-8 (garbage, or a multibyte character cut by a torn last line) must not be a
    # traceback: it becomes U+FFFD, and a line it breaks is reported (or skipped when last) below.
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind, payload = record["type"], record["payload"]
            if kind == "session_meta":
                meta = SessionMeta(**payload)
            elif kind == "turn_context":
                turns += 1
                last_context = payload
            elif kind == "item":
                items.append(_ITEM.validate_python(payload))
            elif kind == "compacted":
                items = [_ITEM.validate_python(i) for i in payload["items"]]
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            if number >= len(lines) - 1:
                warnings.append(f"{path}:{number}: incomplete last line skipped")
                continue
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # pydantic's are multi-line
            raise RolloutError(f"{path}:{number}: not a stockade transcript line ({reason})") from None
    if meta is None:
        raise RolloutError(f"{path}: no session_meta line; not a stockade transcript")
    return LoadedSession(meta, items, path, turns, last_context, warnings)


def age(seconds_since_epoch: float) -> str:
    delta = time.time() - seconds_since_epoch
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return "just now"

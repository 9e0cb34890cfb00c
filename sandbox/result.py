"""What a confined run produced, reported as it happened."""

from __future__ import annotations

import json
import signal as _signal
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Denial:
    """Something the sandbox blocked, as far as it can be known.

    kind: write | read | network | syscall | protected | timeout | limit | setup
    """

    kind: str
    target: str
    rule: str
    detail: str = ""

    def hint(self) -> str:
        where = f" {self.target}" if self.target else ""
        return f"stockade: denied {self.kind}{where} ({self.rule}){': ' + self.detail if self.detail else ''}"


@dataclass
class Result:
    argv: list[str]
    exit_code: int | None  # the command's exit status, None if killed by a signal
    signal: int | None  # the signal that ended it, if any
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_total: int = 0  # bytes the command wrote, before capping
    stderr_total: int = 0
    timed_out: bool = False
    duration: float = 0.0
    peak_rss_kb: int | None = None
    backend: str = ""
    protections: dict[str, str] = field(default_factory=dict)
    denials: list[Denial] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def returncode(self) -> int:
        """Shell convention: the exit code, or 128+N when killed by signal N."""
        if self.signal is not None:
            return 128 + self.signal
        return self.exit_code if self.exit_code is not None else 1

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["stdout"] = self.stdout.decode("utf-8", "replace")
        data["stderr"] = self.stderr.decode("utf-8", "replace")
        data["returncode"] = self.returncode
        if self.signal is not None:
            try:
                data["signal_name"] = _signal.Signals(self.signal).name
            except ValueError:
                data["signal_name"] = None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

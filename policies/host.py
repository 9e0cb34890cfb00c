"""Facts about the host that translation depends on, as plain data.

`sandbox.detect` probes them; tests build them by hand, so every translator
is a pure function of (policy, host facts) and runs on any OS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class HostFacts:
    platform: str = "linux"  # linux | macos | windows
    arch: str = "x86_64"
    kernel: str = ""
    uid: int = 1000
    gid: int = 1000
    home: str = "/home/user"
    landlock_abi: int = 0
    seccomp: bool = False
    userns: bool = False  # unprivileged user namespaces usable
    bwrap_path: str | None = None
    bwrap_version: str | None = None
    bwrap_usable: bool = False
    bwrap_error: str | None = None
    in_container: bool = False
    wsl: int = 0  # 0, 1 or 2
    cgroup: str | None = None  # "v2:<path>" | "v1" | None: where per-run cgroups can be made
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> HostFacts:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "notes" in known:
            known["notes"] = tuple(known["notes"])  # type: ignore[arg-type]
        return cls(**known)  # type: ignore[arg-type]

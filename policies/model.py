"""The sandbox policy: what a confined command may do.

These are stdlib dataclasses, not pydantic models, on purpose: `stockade run`
builds a policy on every cold start and importing pydantic costs ~70 ms on
this machine against a 6 ms bwrap call. pydantic validates these classes
directly (`pydantic.TypeAdapter(SandboxPolicy)`) wherever the agent needs a
schema, so nothing is lost; validation of user input lives in
`policies.config`, which reports file, key and reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum, StrEnum


class Mode(StrEnum):
    READ_ONLY = "read-only"
    WORKSPACE_WRITE = "workspace-write"
    FULL_ACCESS = "full-access"


class NetworkMode(StrEnum):
    OFF = "off"
    ON = "on"
    ALLOWLIST = "allowlist"


class EnvInherit(StrEnum):
    ALL = "all"
    CORE = "core"
    NONE = "none"


class TmpMode(StrEnum):
    PRIVATE = "private"
    HOST = "host"


DEFAULT_PROTECTED: tuple[str, ...] = (".git", ".stockade")

# Secrets no confining mode may read unless the user lifts them. `~` is the
# caller's home. /etc/shadow and friends matter when the caller is root: root
# owns them, so dropping capabilities alone does not stop the owner reading.
DEFAULT_DENY_READ: tuple[str, ...] = (
    "~/.ssh",
    "~/.aws",
    "~/.gnupg",
    "~/.netrc",
    "~/.git-credentials",
    "~/.docker/config.json",
    "~/.kube",
    "~/.azure",
    "~/.config/gcloud",
    "~/.config/gh",
    "~/.npmrc",
    "~/.pypirc",
    "~/.cargo/credentials",
    "~/.cargo/credentials.toml",
    "~/.config/stockade",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh/ssh_host_*_key",
    "/root/.ssh",
)

# Environment variables whose names look like secrets (matched
# case-insensitively as shell globs); dropped unless named in `env.passthrough`.
DEFAULT_SECRET_ENV: tuple[str, ...] = (
    "*KEY*",
    "*TOKEN*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*CREDENTIAL*",
    "*AUTH*",
    "AWS_*",
    "AZURE_*",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "SSH_AUTH_SOCK",
    "GPG_AGENT_INFO",
    "DOCKER_HOST",
    "KUBECONFIG",
)


@dataclass(frozen=True)
class NetworkPolicy:
    mode: NetworkMode = NetworkMode.OFF
    allow_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class Limits:
    """Resource limits. None means no limit beyond the host's."""

    timeout: float | None = None  # wall seconds
    memory_mb: int | None = 4096  # address space (RLIMIT_AS) / cgroup memory
    pids: int | None = 512  # processes+threads (cgroup pids, else RLIMIT_NPROC)
    file_size_mb: int | None = 1024  # largest file the command may write
    cpu_seconds: int | None = None
    output_bytes: int = 1024 * 1024  # per stream, head+tail kept


@dataclass(frozen=True)
class EnvPolicy:
    inherit: EnvInherit = EnvInherit.CORE
    scrub_secrets: bool = True
    secret_patterns: tuple[str, ...] = DEFAULT_SECRET_ENV
    passthrough: tuple[str, ...] = ()  # names passed even if secret-looking
    set: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SandboxPolicy:
    mode: Mode = Mode.WORKSPACE_WRITE
    workspace: str = "."
    writable_roots: tuple[str, ...] = ()
    protected: tuple[str, ...] = DEFAULT_PROTECTED
    deny_read: tuple[str, ...] = DEFAULT_DENY_READ
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    limits: Limits = field(default_factory=Limits)
    env: EnvPolicy = field(default_factory=EnvPolicy)
    tmp: TmpMode = TmpMode.PRIVATE

    @property
    def confined(self) -> bool:
        return self.mode is not Mode.FULL_ACCESS

    @property
    def writes_workspace(self) -> bool:
        return self.mode is not Mode.READ_ONLY

    def replace(self, **changes: object) -> SandboxPolicy:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able dict (enums as their values)."""
        return _plain(dataclasses.asdict(self))  # type: ignore[return-value]


def _plain(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

"""WHAT may happen: policy models, profiles and pure translation to per-platform plans.

Nothing here spawns a process. Exports load lazily so that `sandbox.run`
callers who build a SandboxPolicy by hand never pay for TOML/config imports.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

_EXPORTS = {
    "EnvPolicy": "policies.model",
    "Limits": "policies.model",
    "Mode": "policies.model",
    "NetworkMode": "policies.model",
    "NetworkPolicy": "policies.model",
    "SandboxPolicy": "policies.model",
    "Overrides": "policies.config",
    "PolicyError": "policies.config",
    "build_policy": "policies.config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'policies' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

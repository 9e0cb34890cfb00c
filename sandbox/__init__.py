"""HOW a policy is enforced: host detection, backends, process execution, limits.

The public names are loaded on first use (module `__getattr__`), so `import
sandbox` costs nothing and `sandbox.run` never imports trio; only
`sandbox.arun` / `sandbox.open_process` do.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~3 ms of every cold start)

_EXPORTS = {
    "run": "sandbox.execute",
    "arun": "sandbox.aio",
    "open_process": "sandbox.aio",
    "Session": "sandbox.session",
    "Result": "sandbox.result",
    "Denial": "sandbox.result",
    "SandboxSetupError": "sandbox.backends.base",
    "host_facts": "sandbox.detect",
}

__all__ = ["Denial", "Result", "SandboxSetupError", "arun", "host_facts", "open_process", "run"]

if TYPE_CHECKING:
    from typing import Any

    from sandbox.aio import arun, open_process
    from sandbox.backends.base import SandboxSetupError
    from sandbox.detect import host_facts
    from sandbox.execute import run
    from sandbox.result import Denial, Result


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

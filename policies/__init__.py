"""WHAT may happen: policy models, profiles and pure translation to per-platform plans.

Nothing here spawns a process.
"""

from policies.config import Overrides, PolicyError, build_policy
from policies.model import EnvPolicy, Limits, Mode, NetworkMode, NetworkPolicy, SandboxPolicy

__all__ = [
    "EnvPolicy",
    "Limits",
    "Mode",
    "NetworkMode",
    "NetworkPolicy",
    "Overrides",
    "PolicyError",
    "SandboxPolicy",
    "build_policy",
]

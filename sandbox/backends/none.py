"""No confinement: only for `full-access`. Timeouts, caps and env scrubbing still apply."""

from __future__ import annotations

from collections.abc import Callable

from policies.host import HostFacts
from policies.resolve import ResolvedPolicy
from sandbox.backends.base import NOT_APPLICABLE, PROTECTIONS, Backend, Launch, SandboxSetupError


class NoneBackend(Backend):
    name = "none"

    def unavailable(self, host: HostFacts) -> str | None:
        return None

    def protections(self, rp: ResolvedPolicy, host: HostFacts) -> dict[str, str]:
        out = dict.fromkeys(PROTECTIONS, NOT_APPLICABLE)
        out["tree-kill"] = "best-effort: process group + descendants"
        return out

    def launch(
        self,
        rp: ResolvedPolicy,
        host: HostFacts,
        argv: list[str],
        env: dict[str, str],
        *,
        limits_preexec: Callable[[], None] | None = None,
        proxy: object | None = None,  # never set: full access has no allowlist to enforce
    ) -> Launch:
        if rp.policy.confined:
            raise SandboxSetupError(
                f"the 'none' backend runs unconfined and only serves full-access; "
                f"policy mode is {rp.policy.mode.value}"
            )
        return Launch(argv=list(argv), env=env, cwd=rp.cwd, preexec_fn=limits_preexec,
                      protections=self.protections(rp, host))

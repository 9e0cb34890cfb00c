"""Backend registry and the `auto` ladder: bwrap+seccomp -> landlock+seccomp -> refuse.

On macOS the ladder is seatbelt -> refuse, on Windows the restricted-token
backend -> refuse (`ladder(host)`); Linux is unchanged.

`auto` never runs a confining policy unconfined, and never picks a rung that
would leave out a protection the policy needs (`.git` read-only inside a
writable workspace, say) when another rung gives it.
"""

from __future__ import annotations

from policies.host import HostFacts
from policies.resolve import ResolvedPolicy
from sandbox.backends.base import ENFORCED, NOT_APPLICABLE, Backend, SandboxSetupError

BACKEND_NAMES = ("auto", "bwrap", "landlock", "none")
LADDER = ("bwrap", "landlock")
PLATFORM_LADDERS = {"macos": ("seatbelt",), "windows": ("windows",)}
ALL_BACKENDS = (*BACKEND_NAMES, "seatbelt", "windows")


def ladder(host: HostFacts) -> tuple[str, ...]:
    """The backends `auto` tries on this host's platform, strongest first."""
    return PLATFORM_LADDERS.get(host.platform, LADDER)


def get_backend(name: str) -> Backend:
    if name == "bwrap":
        from sandbox.backends.bwrap import BwrapBackend

        return BwrapBackend()
    if name == "landlock":
        from sandbox.backends.landlock import LandlockBackend

        return LandlockBackend()
    if name == "none":
        from sandbox.backends.none import NoneBackend

        return NoneBackend()
    if name == "seatbelt":
        from sandbox.backends.seatbelt import SeatbeltBackend

        return SeatbeltBackend()
    if name == "windows":
        from sandbox.backends.windows import WindowsBackend

        return WindowsBackend()
    raise SandboxSetupError(f"unknown backend {name!r} (choose from {', '.join(ALL_BACKENDS)})")


def gaps(protections: dict[str, str]) -> dict[str, str]:
    """The protections a policy needs that this backend cannot give."""
    return {k: v for k, v in protections.items() if v not in (ENFORCED, NOT_APPLICABLE)
            and not v.startswith(("best-effort", ENFORCED + ":"))}


def choose(rp: ResolvedPolicy, host: HostFacts, requested: str = "auto") -> tuple[Backend, dict[str, str]]:
    """The backend to use and the protections it gives, or SandboxSetupError saying why not."""
    if not rp.policy.confined:
        if requested not in ("auto", "none"):
            backend = get_backend(requested)
            reason = backend.unavailable(host)
            if reason:
                raise SandboxSetupError(f"backend {requested} unavailable: {reason}")
            return backend, backend.protections(rp, host)
        backend = get_backend("none")
        return backend, backend.protections(rp, host)
    if requested == "none":
        raise SandboxSetupError(
            f"--backend none runs unconfined; it is only allowed with --policy full-access "
            f"(policy mode is {rp.policy.mode.value})"
        )
    if requested != "auto":
        backend = get_backend(requested)
        reason = backend.unavailable(host)
        if reason:
            raise SandboxSetupError(f"backend {requested} is unavailable on this host: {reason}")
        return backend, backend.protections(rp, host)

    reasons: list[str] = []
    for name in ladder(host):
        backend = get_backend(name)
        reason = backend.unavailable(host)
        if reason:
            reasons.append(f"{name}: {reason}")
            continue
        prot = backend.protections(rp, host)
        missing = gaps(prot)
        if missing:
            reasons.append(f"{name}: cannot give " + "; ".join(f"{k} ({v})" for k, v in missing.items()))
            continue
        return backend, prot
    raise SandboxSetupError(
        "no sandbox backend can enforce this policy on this host, refusing to run unconfined:\n  "
        + "\n  ".join(reasons)
        + "\nrun `stockade doctor` for the fix, or pass --policy full-access to run without a sandbox"
    )

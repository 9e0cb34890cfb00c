"""`stockade explain`: the plan a policy compiles to on this host, without running anything."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from policies.host import HostFacts
from policies.model import SandboxPolicy
from policies.resolve import resolve
from sandbox.backends import choose
from sandbox.backends.base import SandboxSetupError
from sandbox.detect import host_facts


def explain_plan(
    policy: SandboxPolicy,
    *,
    backend: str = "auto",
    command: list[str] | None = None,
    platform: str | None = None,
    host: HostFacts | None = None,
) -> dict[str, Any]:
    host = host or host_facts()
    command = command or ["CMD"]
    plan: dict[str, Any] = {"policy": policy.to_dict(), "host": host.to_dict()}
    if platform and platform != host.platform:
        plan["error"] = (f"compiling for {platform} is not implemented yet; "
                         f"this host is {host.platform}")
        return plan
    rp = resolve(policy, host)
    plan["resolved"] = {
        "workspace": rp.workspace,
        "writable": list(rp.writable),
        "protected": [dataclasses.asdict(p) for p in rp.protected],
        "deny_read": [dataclasses.asdict(d) for d in rp.deny_read],
        "problems": list(rp.problems),
    }
    try:
        chosen, protections = choose(rp, host, backend)
    except SandboxSetupError as exc:
        plan["error"] = str(exc)
        return plan
    plan["backend"] = chosen.name
    plan["protections"] = protections
    if not policy.confined:
        return plan
    netns = chosen.name == "bwrap" or (chosen.name == "landlock" and _landlock_has_ns(host))
    try:
        from policies.compile.seccomp import describe, seccomp_rules

        plan["seccomp"] = describe(seccomp_rules(policy, host, netns=netns))
    except ImportError as exc:  # pragma: no cover - partial checkout
        plan["seccomp"] = f"unavailable: {exc}"
    if chosen.name == "bwrap":
        from sandbox.backends.bwrap import plan_argv

        argv = plan_argv(rp, host, command, seccomp_fd=3)
        plan["bwrap_argv"] = argv
        plan["bwrap_command"] = " ".join(shlex.quote(a) for a in argv)
    elif chosen.name == "landlock":
        from policies.compile.landlock import landlock_plan

        ll = landlock_plan(rp, host, tmp_dir="<private-tmp>")
        plan["landlock"] = _jsonable(ll)
        try:
            from policies.compile import mounts

            plan["mounts"] = _jsonable(mounts.mount_plan(rp, host, tmp_dir="<private-tmp>"))
        except (ImportError, AttributeError, TypeError):
            pass
    return plan


def _landlock_has_ns(host: HostFacts) -> bool:
    return host.is_root or host.userns


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool) and type(value) is not int:
        return int(value)  # IntFlag
    return value


def render_text(plan: dict[str, Any]) -> str:
    pol = plan["policy"]
    lines = [f"policy: {pol['mode']}, network {pol['network']['mode']}, workspace {pol['workspace']}"]
    res = plan.get("resolved")
    if res:
        lines.append("writable: " + (", ".join(res["writable"]) or "(none)") + " + private /tmp")
        for p in res["protected"]:
            lines.append(f"protected (read-only): {p['path']} [{p['kind']}] - {p['reason']}")
        for d in res["deny_read"]:
            lines.append(f"unreadable: {d['path']} [{d['kind']}] (from {d['entry']})")
        for problem in res["problems"]:
            lines.append(f"PROBLEM: {problem}")
    if plan.get("error"):
        lines.append(f"REFUSED: {plan['error']}")
        return "\n".join(lines)
    lines.append(f"backend: {plan['backend']}")
    lines.append("protections:")
    for key, value in plan["protections"].items():
        lines.append(f"  {key:<22} {value}")
    if "bwrap_command" in plan:
        lines.append("bwrap argv (seccomp BPF on fd 3):")
        lines.append("  " + plan["bwrap_command"])
    if "landlock" in plan:
        ll = plan["landlock"]
        lines.append("landlock:")
        for key, value in ll.items():
            if key == "rules":
                for rule in value:
                    lines.append(f"  rule: {rule}")
            else:
                lines.append(f"  {key}: {value}")
    if "mounts" in plan:
        lines.append("mount namespace:")
        for op in plan["mounts"] if isinstance(plan["mounts"], list) else plan["mounts"].get("ops", []):
            lines.append(f"  {op}")
    if "seccomp" in plan:
        lines.append("seccomp:")
        seccomp = plan["seccomp"]
        lines.extend(f"  {line}" for line in (seccomp if isinstance(seccomp, list) else [seccomp]))
    return "\n".join(lines)

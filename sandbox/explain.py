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
    if chosen.name == "bwrap":
        from policies.compile.seccomp import describe, seccomp_rules
        from sandbox.backends.bwrap import plan_argv

        argv = plan_argv(rp, host, command, seccomp_fd=3)
        plan["bwrap_argv"] = argv
        plan["bwrap_command"] = " ".join(shlex.quote(a) for a in argv)
        plan["seccomp"] = describe(seccomp_rules(policy, host, netns=True))
    elif chosen.name == "landlock":
        from sandbox.backends.landlock import LandlockBackend

        plan.update(LandlockBackend().explain(rp, host))
    return plan


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
    for key in ("namespaces", "landlock", "mounts", "seccomp"):
        value = plan.get(key)
        if value is None:
            continue
        lines.append(f"{key}:")
        lines.extend(f"  {line}" for line in (value if isinstance(value, list) else [value]))
    return "\n".join(lines)

"""`stockade explain`: the plan a policy compiles to on this host, without running anything.

`--platform macos|windows` compiles for that platform from any host. The
target filesystem is not there to resolve against, so the paths come from
the policy's strings (`resolve_for_macos` / `resolve_for_windows`: `~` is the
target's home, `/Users/<user>` or `C:/Users/<user>`, firmlinks and long-path
prefixes rewritten as string rules, no symlink or junction followed) and the
per-run directories are shown as placeholders.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from policies.host import HostFacts
from policies.model import SandboxPolicy
from policies.resolve import ResolvedPolicy, resolve
from sandbox.backends import choose
from sandbox.backends.base import SandboxSetupError
from sandbox.detect import host_facts


def _resolved(rp: ResolvedPolicy) -> dict[str, Any]:
    """The resolved paths of a plan, as explain prints them."""
    return {
        "workspace": rp.workspace,
        "writable": list(rp.writable),
        "protected": [dataclasses.asdict(p) for p in rp.protected],
        "deny_read": [dataclasses.asdict(d) for d in rp.deny_read],
        "problems": list(rp.problems),
    }


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
        if platform == "linux":
            plan["error"] = ("compiling for linux needs a Linux host (bwrap and Landlock are probed); "
                             f"this host is {host.platform}")
            return plan
        return _foreign_plan(plan, policy, platform, host, command)
    rp = resolve(policy, host)
    plan["resolved"] = _resolved(rp)
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
    elif chosen.name == "seatbelt":
        plan.update(_seatbelt(rp, host, command))
    elif chosen.name == "windows":
        plan.update(_windows(rp, host))
    return plan


PER_RUN_TMP = {"macos": "/private/var/folders/<per-user>/T/stockade-tmp-<run>",
               "windows": "C:\\Users\\<user>\\AppData\\Local\\Temp\\stockade-tmp-<run>"}


def target_host(platform: str, host: HostFacts) -> HostFacts:
    """Host facts for compiling on paper for `platform`: the caller's user name, the platform's home layout."""
    import os

    user = os.path.basename(host.home.rstrip("/\\")) or "user"
    home = f"/Users/{user}" if platform == "macos" else f"C:\\Users\\{user}"
    return HostFacts(platform=platform, arch="arm64" if platform == "macos" else "AMD64", home=home,
                     uid=host.uid, gid=host.gid, notes=("compiled on paper from another host",))


def _foreign_plan(plan: dict[str, Any], policy: SandboxPolicy, platform: str, host: HostFacts,
                  command: list[str]) -> dict[str, Any]:
    target = target_host(platform, host)
    if platform == "macos":
        from policies.compile.seatbelt import resolve_for_macos

        rp = resolve_for_macos(policy, target)
        name = "seatbelt"
    else:
        from policies.compile.windows import resolve_for_windows

        rp = resolve_for_windows(policy, target)
        name = "windows"
    plan["target"] = target.to_dict()
    plan["resolved"] = {
        **_resolved(rp),
        "resolution": "on paper: paths from the policy's strings, no symlink, junction or glob followed",
    }
    if not policy.confined:
        plan["backend"] = "none"
        plan["protections"] = {}
        return plan
    plan["backend"] = name
    from sandbox.backends import get_backend

    plan["protections"] = get_backend(name).protections(rp, target)
    plan.update(_seatbelt(rp, target, command) if name == "seatbelt" else _windows(rp, target, paper=True))
    return plan


def _seatbelt(rp: Any, host: HostFacts, command: list[str]) -> dict[str, Any]:
    from policies.compile.seatbelt import MacosInputs
    from sandbox.backends.seatbelt import SeatbeltBackend

    port = 3128 if rp.policy.network.mode.value == "allowlist" else None
    inputs = MacosInputs(private_tmp=PER_RUN_TMP["macos"], user_temp_dir="/private/var/folders/<per-user>/T",
                         user_cache_dir="/private/var/folders/<per-user>/C", proxy_port=port)
    out = SeatbeltBackend().explain(rp, host, inputs, command)
    out.pop("seatbelt_profile")  # the base part is static: profiles/seatbelt-base.sb
    if port:
        out["notes"].append("PROXY_PORT shown as 3128; a run uses the port of the proxy it is given")
    return out


def _windows(rp: Any, host: HostFacts, paper: bool = False) -> dict[str, Any]:
    from policies.compile.windows import setup_script, windows_plan

    port = 3128 if rp.policy.network.mode.value == "allowlist" else None
    plan = windows_plan(rp, host, private_tmp=PER_RUN_TMP["windows"], proxy_port=port, users_ready=paper or
                        _windows_ready(), runtime=("<python installation>",))
    return {"windows_plan": _jsonable(plan), "windows_setup": setup_script()}


def _windows_ready() -> bool:
    from sandbox.backends.windows import users_ready

    return users_ready()


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
    if pol["mode"] == "full-access":
        # Nothing is confined: listing writable roots, protected paths and hidden secrets would claim
        # protections that a full-access run does not have.
        lines.append("unconfined: full-access reads, writes and connects anywhere; no path is protected or hidden")
    elif res:
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
    if "sandbox_exec_argv" in plan:
        lines.append("sandbox-exec parameters (base profile: profiles/seatbelt-base.sb):")
        lines.extend(f"  -D{k}={v}" for k, v in plan["seatbelt_params"].items())
        lines.append("generated SBPL rules:")
        lines.extend(f"  {line}" for line in plan["seatbelt_rules"].splitlines())
        lines.extend(f"note: {n}" for n in plan.get("notes", []))
    if "windows_plan" in plan:
        lines.extend(_render_windows(plan["windows_plan"]))
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


def _render_windows(wp: dict[str, Any]) -> list[str]:
    lines = ["windows plan:", f"  capability SIDs: {', '.join(wp['capabilities']) or '(none)'}"]
    tok = wp["token"]
    lines.append(f"  restricted token: {' | '.join(tok['flags'])}; restricting SIDs: "
                 f"{', '.join(tok['restricting_sids'])}")
    for ace in wp["grants"]:
        lines.append(f"  grant {ace['sid']:<26} mask 0x{ace['mask']:08x} inherit {ace['inherit']} {ace['path']}"
                     f" ({ace['reason']})")
    for ace in wp["denies"]:
        extra = ", placeholder dir if missing" if ace["placeholder"] else ""
        lines.append(f"  deny  {ace['sid']:<26} mask 0x{ace['mask']:08x} inherit {ace['inherit']} {ace['path']}"
                     f" ({ace['reason']}{extra})")
    job = wp["job"]
    lines.append(f"  job: kill on close {job['kill_on_close']}, breakaway {job['breakaway_ok']}, "
                 f"active processes {job['active_processes']}, memory {job['job_memory_bytes']}")
    net = wp["network"]
    lines.append(f"  network: {net['mode']} via {net['boundary']}, runs as {net['run_as']}; stops: {net['enforced']}")
    lines.extend(f"  PROBLEM: {p}" for p in wp["problems"])
    lines.extend(f"  note: {n}" for n in wp["notes"])
    return lines

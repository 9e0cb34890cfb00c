"""`stockade doctor`: what this host can enforce and the exact fix for what it cannot."""

from __future__ import annotations

import os

from policies.host import HostFacts
from policies.model import Mode, SandboxPolicy
from policies.resolve import resolve
from sandbox.backends import choose, get_backend, ladder
from sandbox.backends.base import SandboxSetupError
from sandbox.detect import host_facts
from sandbox.limits import limits_protection


def doctor_report(refresh: bool = False, workspace: str | None = None) -> dict[str, object]:
    host = host_facts(refresh=refresh)
    if workspace is None:
        try:
            workspace = os.getcwd()
        except FileNotFoundError:  # the current directory was deleted: any directory shows the same support
            workspace = os.path.expanduser("~")
    backends: dict[str, dict[str, object]] = {}
    rungs = ladder(host)
    for name in rungs:
        reason = get_backend(name).unavailable(host)
        backends[name] = {"available": reason is None, "reason": reason}
    auto: dict[str, dict[str, object]] = {}
    for mode in (Mode.READ_ONLY, Mode.WORKSPACE_WRITE):
        rp = resolve(SandboxPolicy(mode=mode, workspace=workspace), host)
        entry: dict[str, object] = {}
        try:
            backend, prot = choose(rp, host, "auto")
            entry = {"backend": backend.name, "protections": {**prot, "limits": limits_protection(host)}}
        except SandboxSetupError as exc:
            entry = {"backend": None, "error": str(exc)}
        for name in rungs:
            if backends[name]["available"]:
                entry.setdefault("by_backend", {})[name] = get_backend(name).protections(rp, host)  # type: ignore[index]
        auto[mode.value] = entry
    fixes = _fixes(host, backends)
    ok = all(e.get("backend") for e in auto.values())
    return {"host": host.to_dict(), "backends": backends, "auto": auto, "fixes": fixes, "ok": ok}


def _fixes(host: HostFacts, backends: dict[str, dict[str, object]]) -> list[str]:
    fixes: list[str] = []
    if host.platform == "macos":
        if not backends["seatbelt"]["available"]:
            fixes.append(f"seatbelt: {backends['seatbelt']['reason']}")
        return fixes
    if host.platform == "windows":
        if not backends["windows"]["available"]:
            from policies.compile.windows import setup_script

            fixes.append("windows: create the sandbox users and the firewall rule once, in an elevated "
                         "PowerShell:\n" + setup_script())
        return fixes
    if host.platform != "linux":
        fixes.append(f"{host.platform}: no backend exists for this platform; use --policy full-access "
                     "to run unconfined, knowingly")
        return fixes
    if not backends["bwrap"]["available"]:
        fixes.append(f"bwrap: {backends['bwrap']['reason']}")
    if host.landlock_abi == 0:
        fixes.append("Landlock: boot a kernel >= 5.13 with Landlock enabled "
                     "(add `lsm=landlock,...` to the kernel command line)")
    elif host.landlock_abi < 6:
        fixes.append(f"Landlock ABI {host.landlock_abi}: signal and abstract-socket scoping need ABI 6 "
                     "(kernel >= 6.12)")
    if not host.seccomp:
        fixes.append("seccomp: the kernel lacks CONFIG_SECCOMP_FILTER; use a distribution kernel")
    if host.wsl == 1:
        fixes.append("WSL1 cannot confine anything: convert the distribution with `wsl --set-version <distro> 2`")
    if host.is_root and host.cgroup is None:
        fixes.append("no writable cgroup: pids/memory limits fall back to rlimits, which do not bind root; "
                     "mount cgroup2 at /sys/fs/cgroup with the pids controller enabled")
    return fixes


def render_doctor(report: dict[str, object]) -> str:
    host = report["host"]
    assert isinstance(host, dict)
    if host["platform"] != "linux":
        lines = [f"host: {host['platform']} {host['arch']} {host['kernel']}, uid {host['uid']}", "backends:"]
        return _render_rest(report, lines)
    lines = [
        f"host: {host['platform']} {host['arch']} kernel {host['kernel']}, uid {host['uid']}"
        + (" (root: capabilities are dropped inside)" if host["uid"] == 0 else ""),
        f"  landlock ABI: {host['landlock_abi'] or 'unavailable'}",
        f"  seccomp: {'yes' if host['seccomp'] else 'no'}",
        f"  bwrap: {host['bwrap_path'] or 'not found'} {host['bwrap_version'] or ''}"
        f" ({'usable' if host['bwrap_usable'] else 'unusable'})",
        f"  user namespaces: {'yes' if host['userns'] else 'no'}",
        f"  cgroup for limits: {host['cgroup'] or 'none (rlimits only)'}",
        f"  container: {'yes' if host['in_container'] else 'no'}" + (f", WSL{host['wsl']}" if host["wsl"] else ""),
        "backends:",
    ]
    return _render_rest(report, lines)


def _render_rest(report: dict[str, object], lines: list[str]) -> str:
    backends = report["backends"]
    assert isinstance(backends, dict)
    for name, info in backends.items():
        status = "available" if info["available"] else f"unavailable: {info['reason']}"
        lines.append(f"  {name}: {status}")
    lines.append("auto would use:")
    auto = report["auto"]
    assert isinstance(auto, dict)
    for mode, entry in auto.items():
        if entry.get("backend"):
            lines.append(f"  {mode}: {entry['backend']}")
            for key, value in entry["protections"].items():
                lines.append(f"      {key:<22} {value}")
        else:
            lines.append(f"  {mode}: REFUSES: {entry['error']}")
    fixes = report["fixes"]
    assert isinstance(fixes, list)
    if fixes:
        lines.append("fixes:")
        lines.extend(f"  - {f}" for f in fixes)
    else:
        lines.append("nothing to fix.")
    return "\n".join(lines)

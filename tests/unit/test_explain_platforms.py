"""`stockade explain --platform macos|windows` from Linux, the platform ladders, and the backends' imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sbpl

from policies.host import HostFacts
from policies.model import Mode, NetworkMode, NetworkPolicy, SandboxPolicy
from policies.resolve import resolve
from sandbox.backends import LADDER, choose, get_backend, ladder
from sandbox.backends.base import SandboxSetupError
from sandbox.explain import explain_plan, render_text

LINUX = HostFacts(platform="linux", home="/home/u")


@pytest.mark.parametrize("mode", [Mode.READ_ONLY, Mode.WORKSPACE_WRITE])
def test_explain_macos_from_linux(tmp_path: Path, mode: Mode) -> None:
    plan = explain_plan(SandboxPolicy(mode=mode, workspace=str(tmp_path)), platform="macos", host=LINUX)
    assert "error" not in plan
    assert plan["backend"] == "seatbelt"
    assert plan["sandbox_exec_argv"][:2] == ["/usr/bin/sandbox-exec", "-p"]
    assert plan["target"]["home"] == "/Users/u"
    assert all(v for v in plan["seatbelt_params"].values())
    text = render_text(plan)
    assert "generated SBPL rules:" in text and "-DPRIVATE_TMP=" in text
    profile = plan["sandbox_exec_argv"][2]
    sbpl.check(profile, plan["seatbelt_params"])


def test_explain_windows_from_linux(tmp_path: Path) -> None:
    policy = SandboxPolicy(workspace=str(tmp_path), network=NetworkPolicy(mode=NetworkMode.ALLOWLIST))
    plan = explain_plan(policy, platform="windows", host=LINUX)
    assert "error" not in plan and plan["backend"] == "windows"
    wp = plan["windows_plan"]
    assert wp["token"]["flags"] == ["DISABLE_MAX_PRIVILEGE", "LUA_TOKEN", "WRITE_RESTRICTED"]
    assert wp["network"]["boundary"] == "firewall-user"
    assert "New-NetFirewallRule" in plan["windows_setup"]
    assert "restricted token:" in render_text(plan)
    json.dumps(plan, default=str)


def test_explain_full_access_for_other_platforms(tmp_path: Path) -> None:
    for platform in ("macos", "windows"):
        plan = explain_plan(SandboxPolicy(mode=Mode.FULL_ACCESS, workspace=str(tmp_path)), platform=platform,
                            host=LINUX)
        assert plan["backend"] == "none" and "error" not in plan


def test_ladders() -> None:
    assert ladder(LINUX) == LADDER == ("bwrap", "landlock")
    assert ladder(HostFacts(platform="macos")) == ("seatbelt",)
    assert ladder(HostFacts(platform="windows")) == ("windows",)


def test_auto_on_macos_and_windows_never_runs_unconfined(tmp_path: Path) -> None:
    for platform in ("macos", "windows"):
        host = HostFacts(platform=platform, home=str(tmp_path))
        rp = resolve(SandboxPolicy(workspace=str(tmp_path)), host)
        with pytest.raises(SandboxSetupError, match="refusing to run unconfined"):
            choose(rp, host, "auto")  # no sandbox-exec / no sandbox users on this Linux machine
        backend, _ = choose(resolve(SandboxPolicy(mode=Mode.FULL_ACCESS, workspace=str(tmp_path)), host), host)
        assert backend.name == "none"


def test_backends_unavailable_off_their_platform() -> None:
    assert "only on macOS" in (get_backend("seatbelt").unavailable(LINUX) or "")
    assert "only on Windows" in (get_backend("windows").unavailable(LINUX) or "")


def test_backends_import_cleanly_on_linux() -> None:
    code = "import sandbox.backends.windows, sandbox.backends.seatbelt, policies.compile.windows; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_cli_explain_platform_exit_codes(tmp_path: Path) -> None:
    for platform in ("macos", "windows"):
        res = subprocess.run([sys.executable, "-c", "from sandbox.cli import main; main()", "explain", "--platform",
                              platform, "--cwd", str(tmp_path), "--json"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["backend"] in ("seatbelt", "windows")


def test_seatbelt_denials_map_eperm_on_sockets(tmp_path: Path) -> None:
    from sandbox.backends.seatbelt import find_denials, proxy_port

    rp = resolve(SandboxPolicy(workspace=str(tmp_path)), LINUX)
    out = b"curl: (7) Failed to connect to example.com port 443: Operation not permitted\n"
    assert [d.kind for d in find_denials(out, rp)] == ["network"]
    out = b"sandbox-exec: sandbox_apply: Operation not permitted\n"
    assert find_denials(out, rp)[0].kind == "setup"
    outside = f"touch: {tmp_path.parent}/x: Operation not permitted\n".encode()
    assert [d.kind for d in find_denials(outside, rp)] == ["write"]
    assert proxy_port(None) is None  # no proxy started for the run: no network (fail closed)

    class Proxy:
        tcp_port = 40123

    assert proxy_port(Proxy()) == 40123

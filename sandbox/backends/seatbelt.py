"""The macOS Seatbelt backend: `/usr/bin/sandbox-exec -p PROFILE -D... -- CMD`.

The profile comes from `policies.compile.seatbelt` (pure); this module does
the host-side work around it: the run's private TMPDIR (made under the
user's own temp dir, removed after the run), the per-user temp and cache
dirs from `confstr`, the proxy port for an allowlist, and turning what the command printed into denials: Seatbelt
refuses with EPERM ("Operation not permitted"), for files and sockets alike.

Written for macOS and never run on this project's Linux CI; the translation
is tested there exhaustively (golden profiles, a well-formedness check).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from urllib.parse import urlsplit

from policies.compile.seatbelt import SANDBOX_EXEC, MacosInputs, seatbelt_plan
from policies.host import HostFacts
from policies.model import NetworkMode, TmpMode
from policies.resolve import ResolvedPolicy
from sandbox.backends.base import ENFORCED, NOT_APPLICABLE, PROTECTIONS, Backend, Launch, SandboxSetupError
from sandbox.result import Denial

# confstr names (unistd.h on macOS); os.confstr_names has them on a Mac.
_CS_DARWIN_USER_TEMP_DIR = 65537
_CS_DARWIN_USER_CACHE_DIR = 65538
_NET_EPERM_HINTS = ("connect", "Failed to connect", "socket", "getaddrinfo", "resolve", "Network", "urlopen",
                    "Connection", "curl:", "dial tcp")


def darwin_dir(name: str, number: int) -> str | None:
    """`confstr(CS_DARWIN_USER_*_DIR)`, or None off macOS."""
    try:
        return os.confstr(os.confstr_names.get(name, number)) or None  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return None


def proxy_port(proxy: object | None) -> int | None:
    """The host loopback TCP port of the run's own filtering proxy, or None (fail closed).

    Only a proxy the engine started for this run counts (`tcp_port`, a
    loopback listener): a port read from HTTP(S)_PROXY could name any local
    service, another proxy without our allowlist included. `sandbox.proxy`
    listens on a Unix socket for the Linux backends and, for this backend
    and Windows, on a loopback TCP listener the engine starts
    (`sandbox.execute.LOOPBACK_PROXY_BACKENDS`). Without one, an allowlist
    means no network at all.
    """
    port = getattr(proxy, "tcp_port", None)
    return port if isinstance(port, int) and 0 < port < 65536 else None


def env_proxy_port(env: dict[str, str]) -> int | None:
    """The loopback port HTTP(S)_PROXY names (for display only; never trusted as the boundary)."""
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        value = env.get(var)
        if not value:
            continue
        try:
            parts = urlsplit(value if "://" in value else f"http://{value}")
            port = parts.port
        except ValueError:
            return None
        if parts.hostname not in ("127.0.0.1", "localhost", "::1") or not port:
            return None
        return port
    return None


class SeatbeltBackend(Backend):
    name = "seatbelt"

    def unavailable(self, host: HostFacts) -> str | None:
        if host.platform != "macos":
            return "Seatbelt (sandbox-exec) exists only on macOS"
        if not os.access(SANDBOX_EXEC, os.X_OK):
            return f"{SANDBOX_EXEC} is missing or not executable (it ships with macOS; is this a stripped image?)"
        return None

    def protections(self, rp: ResolvedPolicy, host: HostFacts) -> dict[str, str]:
        policy = rp.policy
        out = dict.fromkeys(PROTECTIONS, ENFORCED)
        if not policy.writes_workspace or not rp.protected:
            out["protected-paths"] = NOT_APPLICABLE
        if not rp.deny_read:
            out["deny-read"] = NOT_APPLICABLE
        out["private-tmp"] = ("best-effort: TMPDIR is a per-run directory removed afterwards; /tmp itself "
                              "(/private/tmp) is read-only rather than private" if policy.tmp is TmpMode.PRIVATE
                              else NOT_APPLICABLE)
        if policy.network.mode is NetworkMode.ALLOWLIST:
            out["network"] = ("enforced: outbound only to the proxy's loopback port; no DNS; "
                              "none at all when no proxy port is known")
        out["abstract-unix-sockets"] = NOT_APPLICABLE  # no abstract namespace on macOS
        out["syscall-filter"] = ("best-effort: Seatbelt mediates operations (files, sockets, mach services, "
                                 "sysctl, iokit), not raw syscalls")
        out["no-capabilities"] = ("best-effort: macOS has no capabilities; a root caller stays root inside, "
                                  "still bound by the profile")
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
        proxy: object | None = None,
    ) -> Launch:
        if not rp.policy.confined:
            raise SandboxSetupError("full-access runs with the 'none' backend, not under sandbox-exec")
        reason = self.unavailable(host)
        if reason:
            raise SandboxSetupError(reason)
        user_tmp = darwin_dir("CS_DARWIN_USER_TEMP_DIR", _CS_DARWIN_USER_TEMP_DIR)
        private = None
        if rp.policy.tmp is TmpMode.PRIVATE:
            private = os.path.realpath(tempfile.mkdtemp(prefix="stockade-tmp-", dir=user_tmp))
        warnings: list[str] = []
        port = proxy_port(proxy) if rp.policy.network.mode is NetworkMode.ALLOWLIST else None
        if rp.policy.network.mode is NetworkMode.ALLOWLIST and port is None:
            warnings.append("network allowlist: no loopback proxy was started for this run, so the command has "
                            "no network at all (fail closed)")
        inputs = MacosInputs(private_tmp=private, user_temp_dir=user_tmp, proxy_port=port,
                             user_cache_dir=darwin_dir("CS_DARWIN_USER_CACHE_DIR", _CS_DARWIN_USER_CACHE_DIR))
        try:
            plan = seatbelt_plan(rp, host, inputs)
        except ValueError as exc:
            if private:
                shutil.rmtree(private, ignore_errors=True)
            raise SandboxSetupError(f"cannot compile the Seatbelt profile: {exc}") from exc
        child_env = dict(env)
        if private:
            child_env["TMPDIR"] = private + "/"
        if port is not None:
            from policies.compile.windows import loopback_proxy_env

            child_env.update(loopback_proxy_env(port))  # the profile allows this port only, not 3128

        def cleanup() -> None:
            if private:
                shutil.rmtree(private, ignore_errors=True)

        return Launch(argv=plan.argv(list(argv)), env=child_env, cwd=rp.cwd, preexec_fn=limits_preexec,
                      cleanup=cleanup, protections=self.protections(rp, host),
                      warnings=warnings + list(plan.notes))

    def explain(self, rp: ResolvedPolicy, host: HostFacts, inputs: MacosInputs | None = None,
                command: list[str] | None = None) -> dict[str, object]:
        plan = seatbelt_plan(rp, host, inputs)
        return {"sandbox_exec_argv": plan.argv(command or ["CMD"]), "seatbelt_params": plan.params,
                "seatbelt_rules": plan.rules, "seatbelt_profile": plan.profile, "notes": list(plan.notes)}


def find_denials(output: bytes, rp: ResolvedPolicy, *, max_bytes: int = 256 * 1024) -> list[Denial]:
    """Denials for a Seatbelt run: the generic path analysis, plus EPERM on sockets and sandbox-exec's own errors.

    Seatbelt answers a refused connect() with EPERM, which the generic
    analysis (made for Linux's ENETUNREACH) would take for a file error with
    no path.
    """
    from sandbox.denials import find_denials as generic

    found = generic(output, rp, max_bytes=max_bytes)
    text = output[-max_bytes:].decode("utf-8", "replace")
    for line in text.splitlines():
        if line.startswith("sandbox-exec: "):
            found.insert(0, Denial("setup", "", "sandbox-exec could not apply the profile", line.strip()[:200]))
            break
    if rp.policy.network.mode is not NetworkMode.ON and not any(d.kind == "network" for d in found):
        for line in text.splitlines():
            if "Operation not permitted" in line and any(h in line for h in _NET_EPERM_HINTS):
                rule = "network is off" if rp.policy.network.mode is NetworkMode.OFF else "only the proxy is allowed"
                found.append(Denial("network", "", rule, line.strip()[:200]))
                break
    return found

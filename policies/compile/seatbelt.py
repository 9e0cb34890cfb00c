"""macOS Seatbelt: a resolved policy as an SBPL profile plus `-D` parameters for sandbox-exec.

`/usr/bin/sandbox-exec -p PROFILE -DNAME=VALUE ... -- CMD`. The profile is
the static base (`profiles/seatbelt-base.sb`) followed by generated rules.
Every path travels as a parameter read with `(param "NAME")`; the generated
text is made only of fixed rule templates and parameter names we choose
(`WRITABLE_ROOT_0`, ...), so no path, however it is spelled (quotes,
parentheses, newlines, unicode), can change the profile (SBPL injection).

Seatbelt matches the *resolved* path of every file operation: a symlink is
followed before the rules see it, and `/var`, `/tmp` and `/etc` are symlinks
into `/private`. So every path parameter is canonical. On a Mac the input
comes from `policies.resolve.resolve` (realpath on the real filesystem) and
`canonical` is a no-op on it; compiling for a Mac from another OS
(`stockade explain --platform macos`) cannot realpath against the target, so
`resolve_for_macos` builds the resolved policy from the policy's strings
alone and `canonical` applies the firmlink rules as string rewrites. That
input is explicit: no function here touches the filesystem, except reading
the base profile shipped with the package.

Rules, in order (later rules win in SBPL):
- reads: everything, then `deny file-read*` on each deny-read path;
- writes: one `allow file-write*` per writable root whose `require-all`
  excludes each protected path under it both as `literal` (so a missing
  `.git` cannot be created) and as `subpath` (nothing inside it), plus the
  run's private TMPDIR; then `deny file-write-unlink` on each protected path's
  ancestors inside writable roots (no `mv ws/sub elsewhere` to carry a
  protected path out from under its name), and `deny file-write*` on
  deny-read paths;
- network: nothing when off (deny default); everything plus the services TLS
  needs (trustd for Go) when on; with an allowlist, only outbound TCP to
  `localhost:PROXY_PORT` (no DNS, no trustd: both are exfiltration paths), and
  no network at all when there is no proxy port (fail closed);
- Unix sockets: bind/connect only under the private TMPDIR, i.e. sockets the
  command made itself (connect() on a Unix socket is a network operation on
  macOS, not a file write: the Docker socket is reachable otherwise).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from importlib import resources

from policies.host import HostFacts
from policies.model import NetworkMode, SandboxPolicy, TmpMode
from policies.resolve import DeniedPath, ProtectedPath, ResolvedPolicy

SANDBOX_EXEC = "/usr/bin/sandbox-exec"
BASE_PROFILE = "seatbelt-base.sb"

# The firmlinks macOS resolves every path through (Seatbelt sees the right-hand side).
FIRMLINKS: tuple[tuple[str, str], ...] = (("/var", "/private/var"), ("/tmp", "/private/tmp"), ("/etc", "/private/etc"))

# Mach services a networked command needs: DNS configuration, TLS certificate
# evaluation (trustd: Go's crypto/x509 on macOS fails with OSStatus -26276
# without it), OCSP, and directory lookups.
NETWORK_SERVICES = (
    "com.apple.bsd.dirhelper",
    "com.apple.system.opendirectoryd.membership",
    "com.apple.SecurityServer",
    "com.apple.networkd",
    "com.apple.ocspd",
    "com.apple.trustd.agent",
    "com.apple.SystemConfiguration.DNSConfiguration",
    "com.apple.SystemConfiguration.configd",
)

_PARAM_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class MacosInputs:
    """What the profile needs beyond the resolved policy, given rather than probed.

    private_tmp: the run's own TMPDIR (made by the backend, removed after the
    run); user_temp_dir / user_cache_dir: `confstr(CS_DARWIN_USER_TEMP_DIR)`
    and `..._CACHE_DIR` (`/var/folders/xx/yyyy/T/` and `.../C/`); proxy_port:
    the host-side proxy's loopback port for `network.mode = allowlist`.
    """

    private_tmp: str | None = None
    user_temp_dir: str | None = None
    user_cache_dir: str | None = None
    proxy_port: int | None = None


@dataclass(frozen=True)
class SeatbeltPlan:
    profile: str  # the whole SBPL text (base + generated rules)
    rules: str  # the generated part alone (what golden tests pin)
    params: dict[str, str]  # NAME -> canonical value, in the order the rules use them
    notes: tuple[str, ...] = field(default_factory=tuple)

    def param_args(self) -> list[str]:
        return [f"-D{name}={value}" for name, value in self.params.items()]

    def argv(self, command: list[str]) -> list[str]:
        """The sandbox-exec argv. sandbox-exec is named by absolute path: PATH is the command's, not ours."""
        return [SANDBOX_EXEC, "-p", self.profile, *self.param_args(), "--", *command]


def canonical(path: str) -> str:
    """The spelling Seatbelt matches: normalized, firmlinks rewritten (`/var/x` -> `/private/var/x`)."""
    path = posixpath.normpath(path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    for short, real in FIRMLINKS:
        if path == short or path.startswith(short + "/"):
            return real + path[len(short):]
    return path


def base_profile() -> str:
    return resources.files("profiles").joinpath(BASE_PROFILE).read_text(encoding="utf-8")


def glob_regex(pattern: str) -> str:
    """An anchored regex matching `pattern` (a deny-read glob) and everything under a match.

    `**/` is any number of directories, `*` and `?` stay within one name;
    everything else is literal.
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "^" + "".join(out) + "(/.*)?$"


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


class _Params:
    """Parameter names and values; the profile text only ever gets `(param "NAME")`."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def ref(self, name: str, value: str) -> str:
        if not _PARAM_NAME.match(name):
            raise ValueError(f"bad parameter name {name!r}")
        if "\0" in value:
            raise ValueError(f"parameter {name}: a NUL byte cannot travel in argv: {value!r}")
        if self.values.get(name, value) != value:
            raise ValueError(f"parameter {name} given twice with different values")
        self.values[name] = value
        return f'(param "{name}")'


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def seatbelt_plan(rp: ResolvedPolicy, host: HostFacts, inputs: MacosInputs | None = None) -> SeatbeltPlan:
    """The profile and parameters for a confining policy. Pure: no filesystem, no processes."""
    policy = rp.policy
    if not policy.confined:
        raise ValueError("full-access runs without sandbox-exec; there is no profile to compile")
    inputs = inputs or MacosInputs()
    params = _Params()
    notes: list[str] = []
    lines: list[str] = [";; ---- stockade policy rules (generated; paths are -D parameters) ----"]

    # Reads: everything but the deny-read list.
    lines.append(";; reads: everything except the deny-read list")
    lines.append("(allow file-read*)")
    deny_filters = _deny_filters(rp.deny_read, params)
    if deny_filters:
        lines.append("(deny file-read*")
        lines.extend(f"  {f}" for f in deny_filters[:-1])
        lines.append(f"  {deny_filters[-1]})")

    # Writes.
    writable = list(dict.fromkeys(canonical(w) for w in rp.writable))
    protected = list(dict.fromkeys(canonical(p.path) for p in rp.protected))
    lines.append(";; writes: writable roots minus protected paths (also before they exist)")
    for i, root in enumerate(writable):
        root_ref = params.ref(f"WRITABLE_ROOT_{i}", root)
        excluded = [p for p in protected if _under(p, root)]
        if not excluded:
            lines.append(f"(allow file-write* (subpath {root_ref}))")
            continue
        lines.append("(allow file-write*")
        lines.append("  (require-all")
        lines.append(f"    (subpath {root_ref})")
        for j, path in enumerate(excluded):
            ref = params.ref(f"WRITABLE_ROOT_{i}_EXCLUDED_{j}", path)
            close = "))" if j == len(excluded) - 1 else ""
            lines.append(f"    (require-not (literal {ref}))")
            lines.append(f"    (require-not (subpath {ref})){close}")
    outside = [p for p in protected if not any(_under(p, w) for w in writable)]
    if outside and writable:
        notes.append("protected paths outside every writable root are read-only anyway: " + ", ".join(outside))

    tmp_dirs = _tmp_dirs(policy, inputs, notes)
    for name, path in tmp_dirs:
        lines.append(f"(allow file-write* (subpath {params.ref(name, path)}))")

    ancestors = _ancestors(protected, writable)
    if ancestors:
        lines.append(";; a protected path cannot be carried away by renaming one of its ancestors")
        lines.append("(deny file-write-unlink")
        refs = [f"  (literal {params.ref(f'PROTECTED_ANCESTOR_{k}', a)})" for k, a in enumerate(ancestors)]
        refs[-1] += ")"
        lines.extend(refs)
    if deny_filters:
        lines.append(";; secrets stay untouchable even inside a writable root")
        lines.append("(deny file-write*")
        lines.extend(f"  {f}" for f in deny_filters[:-1])
        lines.append(f"  {deny_filters[-1]})")

    # Unix sockets the command makes itself (bind + connect), only in its private tmp.
    private = [(n, p) for n, p in tmp_dirs if n == "PRIVATE_TMP"]
    if private:
        lines.append(";; Unix sockets: only those bound under the private TMPDIR")
        lines.append(f'(allow network-bind network-outbound (subpath (param "{private[0][0]}")))')

    lines.extend(_network_rules(policy, inputs, params, notes))
    rules = "\n".join(lines) + "\n"
    return SeatbeltPlan(profile=base_profile().rstrip("\n") + "\n\n" + rules, rules=rules,
                        params=dict(params.values), notes=tuple(notes))


def _deny_filters(deny: tuple[DeniedPath, ...], params: _Params) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for d in deny:
        if _has_magic(d.path):
            value = glob_regex(canonical(d.path))
            kind = "regex"
        else:
            value = canonical(d.path)
            kind = "subpath"  # a file's subpath is the file itself; a dir's covers its contents
        if value in seen:
            continue
        seen.add(value)
        out.append(f"({kind} {params.ref(f'DENY_READ_{len(seen) - 1}', value)})")
    return out


def _tmp_dirs(policy: SandboxPolicy, inputs: MacosInputs, notes: list[str]) -> list[tuple[str, str]]:
    if policy.tmp is TmpMode.PRIVATE:
        if inputs.private_tmp:
            return [("PRIVATE_TMP", canonical(inputs.private_tmp))]
        notes.append("no private TMPDIR given: nothing outside the writable roots is writable, /tmp included")
        return []
    out = [("HOST_TMP", "/private/tmp"), ("HOST_VAR_TMP", "/private/var/tmp")]
    if inputs.user_temp_dir:
        out.append(("DARWIN_USER_TEMP_DIR", canonical(inputs.user_temp_dir)))
    return out


def _ancestors(protected: list[str], writable: list[str]) -> list[str]:
    """Each protected path and its ancestors that lie inside a writable root, shallowest first."""
    found: dict[str, None] = {}
    for path in protected:
        roots = [w for w in writable if _under(path, w)]
        if not roots:
            continue
        top = min(roots, key=len)
        cur = path
        while True:
            found[cur] = None
            if cur == top or cur == "/":
                break
            cur = posixpath.dirname(cur)
    return sorted(found, key=lambda p: (p.count("/"), p))


def _network_rules(policy: SandboxPolicy, inputs: MacosInputs, params: _Params, notes: list[str]) -> list[str]:
    mode = policy.network.mode
    if mode is NetworkMode.OFF:
        return [";; network: off (deny default covers every socket operation)"]
    if mode is NetworkMode.ALLOWLIST:
        port = inputs.proxy_port
        if port is None or not 0 < int(port) < 65536:
            notes.append("network allowlist without a proxy port: no network at all (fail closed)")
            return [";; network: allowlist, but no proxy port was given: no network (fail closed)"]
        ref = params.ref("PROXY_PORT", str(int(port)))
        # socket() is `system-socket`, which the base allows for AF_UNIX only: without an inet socket
        # the one permitted connect() could never happen. Creating one reaches nothing by itself.
        return [";; network: allowlist, so only the host proxy on loopback (no DNS, no trustd)",
                "(allow system-socket (socket-domain AF_INET) (socket-domain AF_INET6))",
                f'(allow network-outbound (remote ip (string-append "localhost:" {ref})))']
    lines = [";; network: on",
             "(allow network-outbound)",
             "(allow network-inbound)",
             "(allow network-bind)",
             "(allow system-socket)",
             '(allow sysctl-read (sysctl-name-prefix "net.routetable"))',
             "(allow mach-lookup"]
    lines.extend(f'  (global-name "{name}")' for name in NETWORK_SERVICES)
    lines[-1] += ")"
    if inputs.user_cache_dir:
        ref = params.ref("DARWIN_USER_CACHE_DIR", canonical(inputs.user_cache_dir))
        lines.append(";; Security.framework caches certificate state in the per-user cache dir")
        lines.append(f"(allow file-write* (subpath {ref}))")
    return lines


# ---------------------------------------------------------------- compiling for a Mac from elsewhere


def resolve_for_macos(policy: SandboxPolicy, host: HostFacts, cwd: str | None = None) -> ResolvedPolicy:
    """A ResolvedPolicy for a Mac built from the policy's strings alone (no filesystem access).

    What a real resolve does and this cannot: follow symlinks (paths are only
    normalized and rewritten through the firmlinks), read a `.git` file's
    `gitdir:` target, tell files from directories (protected paths are
    "unknown", which the profile treats like a missing one: literal and
    subpath), expand deny-read globs (they stay patterns and become regexes).
    Relative paths are taken against the workspace; `~` is `host.home`.
    """
    home = host.home

    def absolute(path: str, base: str) -> str:
        if path == "~" or path.startswith("~/"):
            path = home + path[1:]
        if not path.startswith("/"):
            path = posixpath.join(base, path)
        return canonical(path)

    workspace = absolute(policy.workspace, home)
    writable: list[str] = []
    if policy.writes_workspace:
        writable = list(dict.fromkeys(absolute(r, workspace) for r in (policy.workspace, *policy.writable_roots)))
        writable.sort(key=lambda p: (p.count("/"), p))
    protected: list[ProtectedPath] = []
    for root in writable:
        for name in policy.protected:
            path = canonical(posixpath.join(root, name))
            if all(p.path != path for p in protected):
                protected.append(ProtectedPath(path, "unknown", f"{name} under {root}"))
    deny: list[DeniedPath] = []
    for entry in policy.deny_read:
        path = absolute(entry, workspace)
        kind = "pattern" if _has_magic(path) else "unknown"
        if all(d.path != path for d in deny):
            deny.append(DeniedPath(path, kind, entry))
    return ResolvedPolicy(policy=policy, workspace=workspace, cwd=absolute(cwd, workspace) if cwd else workspace,
                          writable=tuple(writable), protected=tuple(protected), deny_read=tuple(deny), home=home,
                          problems=())


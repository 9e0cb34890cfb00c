"""Windows: a resolved policy as a restricted-token / ACL / job-object plan (data only).

The plan says what `sandbox.backends.windows` does, in order:
1. identity: the command runs as a dedicated local user, `stockade-offline`
   (network off or allowlist; a firewall rule blocks it) or `stockade-online`,
   made once by an administrator (`setup_script`). Being another user is what
   keeps the caller's secrets unreadable: the caller's profile is not
   readable by other users, and deny ACEs naming the sandbox user cover the
   rest. (A restricted token of the caller's own cannot: WRITE_RESTRICTED
   leaves reads to the caller's rights, and a deny ACE for the caller would
   lock the caller out too.)
2. capability SIDs: random `S-1-5-21-a-b-c-d` SIDs, made once and persisted
   (one for "may write", one per writable root), named here symbolically
   (`cap:write`, `cap:root:<n>`) and bound to real SIDs by the backend;
3. ACL grants: inheritable (container + object) allow ACEs on each writable
   root and the private TEMP dir for the capability SID and the sandbox user
   (WRITE_RESTRICTED needs both checks to pass), read for the sandbox user on
   the workspace and on the Python runtime the runner needs;
4. ACL denies: an inheritable deny ACE for `cap:write` (write, append,
   attributes, EA, DELETE, DELETE_CHILD) on each protected path, plus
   DELETE_CHILD on its parent so it cannot be renamed away; only sandboxed
   tokens carry `cap:write`, so the caller's own git still works. A protected
   path that does not exist yet gets an empty placeholder directory carrying
   the deny (removed after the run when still empty), so its first creation
   fails. Deny-read paths get a deny-read ACE for the sandbox user;
5. the restricted token, made by the runner from its own (sandbox user's)
   token: `CreateRestrictedToken(DISABLE_MAX_PRIVILEGE | LUA_TOKEN |
   WRITE_RESTRICTED)` with the restricting SIDs [capabilities..., logon SID].
   WRITE_RESTRICTED makes the restricting SIDs count only for writes: reads
   are the sandbox user's, writes need the user's access and a grant to a
   restricting SID. Everyone is deliberately *not* a restricting SID (Codex
   adds it for PowerShell, then has to scan for and deny world-writable
   directories); without it a world-writable directory is not writable here;
6. the job object: kill on close (the whole tree dies with the runner),
   no breakaway, an active-process limit and a memory limit;
7. the network boundary (below).

ACLs bind objects, not names, which is what makes the tricky spellings
harmless: `.GIT`, `\\\\?\\C:\\ws\\.git`, the 8.3 name `GIT~1`, an alternate data
stream `.git\\config:evil` all reach the same object and its deny ACE, and a
junction made inside the workspace that points at `C:\\Windows` leads to
objects with no grant for the capability SID. What names cannot do, this
plan refuses: network shares (`\\\\server\\share`: the server checks the
user's network logon, never the restricted token) as writable roots, and
writable roots that are alternate data streams or device paths.

Network. Environment tricks (proxy variables pointing at `127.0.0.1:9`,
offline flags for pip/npm/cargo) are not a boundary: a raw socket ignores
them. The real boundaries on Windows are a firewall rule (or WFP filters)
scoped to a dedicated local user, or an AppContainer. This plan implements
the first: the command runs as the local user `stockade-offline`, made once
by an administrator together with an outbound Windows Firewall block rule
whose `LocalUserAuthorizedList` names that user (`stockade doctor` prints the
script). Its limit, said plainly: Windows Firewall does not filter loopback,
so 127.0.0.1 / ::1 stay reachable, and an allowlist's proxy port cannot be
singled out on loopback. AppContainer would also block loopback but hides
the user's profile from reads, which breaks "read anything not secret"; it is
not implemented. Without the one-time setup a network-off policy is refused.

Pure: paths are given (a real `resolve` on Windows, or `resolve_for_windows`
from strings when compiling from another OS) and only rewritten by the
string rules in `canonical`.
"""

from __future__ import annotations

import ntpath
from dataclasses import dataclass, field

from policies.host import HostFacts
from policies.model import NetworkMode, SandboxPolicy, TmpMode
from policies.resolve import DeniedPath, ProtectedPath, ResolvedPolicy

# Access masks (winnt.h).
FILE_READ_DATA = 0x0001
FILE_WRITE_DATA = 0x0002
FILE_APPEND_DATA = 0x0004
FILE_READ_EA = 0x0008
FILE_WRITE_EA = 0x0010
FILE_EXECUTE = 0x0020
FILE_DELETE_CHILD = 0x0040
FILE_READ_ATTRIBUTES = 0x0080
FILE_WRITE_ATTRIBUTES = 0x0100
DELETE = 0x00010000
READ_CONTROL = 0x00020000
WRITE_DAC = 0x00040000
WRITE_OWNER = 0x00080000
SYNCHRONIZE = 0x00100000
FILE_GENERIC_READ = 0x00120089
FILE_GENERIC_WRITE = 0x00120116
FILE_GENERIC_EXECUTE = 0x001200A0
GENERIC_ALL = 0x10000000

WRITE_RIGHTS = (FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_WRITE_EA | FILE_WRITE_ATTRIBUTES | DELETE
                | FILE_DELETE_CHILD | WRITE_DAC | WRITE_OWNER)
GRANT_RIGHTS = FILE_GENERIC_READ | FILE_GENERIC_WRITE | FILE_GENERIC_EXECUTE | DELETE | FILE_DELETE_CHILD
READ_RIGHTS = FILE_GENERIC_READ | FILE_GENERIC_EXECUTE

# ACE inheritance flags.
OBJECT_INHERIT_ACE = 0x1
CONTAINER_INHERIT_ACE = 0x2
INHERIT = OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE

# CreateRestrictedToken flags.
DISABLE_MAX_PRIVILEGE = 0x1
SANDBOX_INERT = 0x2
LUA_TOKEN = 0x4
WRITE_RESTRICTED = 0x8
TOKEN_FLAGS = {"DISABLE_MAX_PRIVILEGE": DISABLE_MAX_PRIVILEGE, "LUA_TOKEN": LUA_TOKEN,
               "WRITE_RESTRICTED": WRITE_RESTRICTED}

# Job object limit flags (JOBOBJECT_BASIC_LIMIT_INFORMATION.LimitFlags).
JOB_OBJECT_LIMIT_ACTIVE_PROCESS = 0x00000008
JOB_OBJECT_LIMIT_PROCESS_MEMORY = 0x00000100
JOB_OBJECT_LIMIT_JOB_MEMORY = 0x00000200
JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION = 0x00000400
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000

EVERYONE = "S-1-1-0"
OFFLINE_USER = "stockade-offline"
ONLINE_USER = "stockade-online"
FIREWALL_RULE = "stockade: block outbound for stockade-offline"


@dataclass(frozen=True)
class Ace:
    path: str  # canonical Windows path
    sid: str  # symbolic: "cap:write", "cap:root:0", "user:stockade-offline", or a literal SID
    allow: bool
    mask: int
    inherit: int  # OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE, or 0
    reason: str
    placeholder: bool = False  # the path does not exist: make an empty dir to carry the ACE


@dataclass(frozen=True)
class TokenSpec:
    flags: tuple[str, ...]
    restricting_sids: tuple[str, ...]  # symbolic, in order
    default_dacl: tuple[str, ...]  # SIDs granted GENERIC_ALL on objects the command creates (pipes)
    enable_privileges: tuple[str, ...] = ("SeChangeNotifyPrivilege",)

    @property
    def flags_value(self) -> int:
        value = 0
        for name in self.flags:
            value |= TOKEN_FLAGS[name]
        return value


@dataclass(frozen=True)
class JobSpec:
    kill_on_close: bool = True
    breakaway_ok: bool = False
    die_on_unhandled_exception: bool = True
    active_processes: int | None = None
    job_memory_bytes: int | None = None

    @property
    def limit_flags(self) -> int:
        flags = JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION if self.die_on_unhandled_exception else 0
        if self.kill_on_close:
            flags |= JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if self.active_processes:
            flags |= JOB_OBJECT_LIMIT_ACTIVE_PROCESS
        if self.job_memory_bytes:
            flags |= JOB_OBJECT_LIMIT_JOB_MEMORY
        return flags


@dataclass(frozen=True)
class NetworkSpec:
    mode: str  # the policy's: off | on | allowlist
    boundary: str  # "none" (network on) | "firewall-user"
    run_as: str | None  # the local user the command runs as, None: the caller
    enforced: str  # what is really stopped, in words
    proxy_port: int | None = None
    firewall_rule: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowsPlan:
    capabilities: tuple[str, ...]  # symbolic capability SIDs to create or load
    grants: tuple[Ace, ...]
    denies: tuple[Ace, ...]
    token: TokenSpec
    job: JobSpec
    network: NetworkSpec
    private_tmp: str | None
    env: dict[str, str]
    problems: tuple[str, ...] = ()  # reasons to refuse
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------- paths


def canonical(path: str) -> str:
    """The spelling the plan uses: `\\\\?\\` removed, backslashes, drive letter upper-case, normalized.

    Case is otherwise kept (for display); `key` is what compares paths.
    """
    path = path.replace("/", "\\")
    if path.startswith("\\\\?\\UNC\\"):
        path = "\\\\" + path[len("\\\\?\\UNC\\"):]
    elif path.startswith(("\\\\?\\", "\\??\\")):
        path = path[4:]
    path = ntpath.normpath(path)
    if len(path) >= 2 and path[1] == ":":
        path = path[0].upper() + path[1:]
    return path


def key(path: str) -> str:
    """Comparison key: NTFS names are case-insensitive (`.GIT` is `.git`)."""
    return canonical(path).casefold()


def is_unc(path: str) -> bool:
    return canonical(path).startswith("\\\\")


def is_device(path: str) -> bool:
    path = path.replace("/", "\\").upper()
    return path.startswith(("\\\\.\\", "\\\\?\\GLOBALROOT", "\\\\?\\PIPE", "\\??\\GLOBALROOT"))


def split_stream(path: str) -> tuple[str, str | None]:
    """(file, stream) for `C:\\ws\\.git:evil:$DATA`; the stream is None for a plain path."""
    drive, rest = ntpath.splitdrive(canonical(path))
    if ":" not in rest:
        return drive + rest, None
    head, _, stream = rest.partition(":")
    return drive + head, stream


def _under(path: str, root: str) -> bool:
    p, r = key(path), key(root).rstrip("\\")
    return p == r or p.startswith(r + "\\")


# ---------------------------------------------------------------- the plan


def windows_plan(rp: ResolvedPolicy, host: HostFacts, *, private_tmp: str | None = None,
                 proxy_port: int | None = None, users_ready: bool = False,
                 runtime: tuple[str, ...] = ()) -> WindowsPlan:
    """The plan for a confining policy. Pure.

    private_tmp: the run's TEMP dir (made by the backend); proxy_port: the
    host proxy for an allowlist; users_ready: whether the one-time sandbox
    users, their stored credentials and the firewall rule exist (a host
    fact); runtime: directories the runner's Python needs to read.
    """
    policy = rp.policy
    if not policy.confined:
        raise ValueError("full-access runs without a restricted token; there is no plan to compile")
    problems: list[str] = []
    notes: list[str] = []

    writable: list[str] = []
    for root in rp.writable:
        base, stream = split_stream(root)
        if stream is not None:
            problems.append(f"writable root {root} names an alternate data stream, not a directory")
            continue
        if is_device(root):
            problems.append(f"writable root {root} is a device path")
            continue
        if is_unc(base):
            problems.append(f"writable root {root} is a network share: the server checks the user's network "
                            "logon, not the restricted token, so the grant could not be confined; refusing")
            continue
        if all(key(base) != key(w) for w in writable):
            writable.append(canonical(base))

    caps = ["cap:write"] if writable or private_tmp else []
    caps += [f"cap:root:{i}" for i in range(len(writable))]
    user = f"user:{OFFLINE_USER if policy.network.mode is not NetworkMode.ON else ONLINE_USER}"
    grantees = ("cap:write", user)

    grants: list[Ace] = []
    for i, root in enumerate(writable):
        for sid in (*grantees, f"cap:root:{i}"):
            grants.append(Ace(root, sid, True, GRANT_RIGHTS, INHERIT, f"writable root {i}"))
    tmp = None
    if policy.tmp is TmpMode.PRIVATE and private_tmp:
        tmp = canonical(private_tmp)
        for sid in grantees:
            grants.append(Ace(tmp, sid, True, GRANT_RIGHTS, INHERIT, "private TEMP"))
    elif policy.tmp is TmpMode.HOST:
        notes.append("tmp = host: TEMP stays the caller's and is not writable (no grant on a shared directory)")
    # The sandbox user must read the workspace and the runner's Python (the caller's profile keeps it out).
    for path in dict.fromkeys((canonical(rp.workspace), *(canonical(r) for r in runtime))):
        if not any(_under(path, w) for w in writable):
            grants.append(Ace(path, user, True, READ_RIGHTS, INHERIT, "read access for the sandbox user"))
    grants.append(Ace("\\\\.\\NUL", "cap:write", True, FILE_GENERIC_READ | FILE_GENERIC_WRITE, 0, "NUL device"))

    denies: list[Ace] = []
    seen: set[str] = set()
    for p in rp.protected:
        path, stream = split_stream(p.path)
        if stream is not None:
            notes.append(f"protected path {p.path} names a stream; protecting the file {path} (ACLs cover streams)")
        if key(path) in seen or not any(_under(path, w) for w in writable):
            continue
        seen.add(key(path))
        placeholder = p.kind == "missing"
        denies.append(Ace(path, "cap:write", False, WRITE_RIGHTS, INHERIT, p.reason, placeholder=placeholder))
        parent = ntpath.dirname(path)
        if all(not (key(a.path) == key(parent) and a.mask == FILE_DELETE_CHILD) for a in denies):
            denies.append(Ace(parent, "cap:write", False, FILE_DELETE_CHILD, 0,
                              f"no rename-away of {ntpath.basename(path)}"))
    for d in rp.deny_read:
        path, _ = split_stream(d.path)
        if "*" in path or "?" in path:
            notes.append(f"deny-read pattern {d.path} is expanded on the host at launch")
            continue
        if key(path) in seen:
            continue
        seen.add(key(path))
        denies.append(Ace(path, user, False, FILE_GENERIC_READ | WRITE_RIGHTS,
                          INHERIT if d.kind != "file" else 0, f"deny-read ({d.entry})"))

    token = TokenSpec(flags=("DISABLE_MAX_PRIVILEGE", "LUA_TOKEN", "WRITE_RESTRICTED"),
                      restricting_sids=(*caps, "logon"), default_dacl=("logon", *caps))

    limits = policy.limits
    job = JobSpec(active_processes=limits.pids,
                  job_memory_bytes=limits.memory_mb * 1024 * 1024 if limits.memory_mb else None)
    if not users_ready:
        problems.append(f"the sandbox users ({OFFLINE_USER}, {ONLINE_USER}), their stored credentials and the "
                        "firewall rule do not exist: run the one-time setup `stockade doctor` prints")
    network = _network(policy, proxy_port, problems)

    env: dict[str, str] = {}
    if tmp:
        env.update(TEMP=tmp, TMP=tmp)
    if policy.network.mode is NetworkMode.ALLOWLIST and network.proxy_port:
        env.update(loopback_proxy_env(network.proxy_port))
    return WindowsPlan(capabilities=tuple(caps), grants=tuple(grants), denies=tuple(denies), token=token, job=job,
                       network=network, private_tmp=tmp, env=env, problems=tuple(problems), notes=tuple(notes))


def loopback_proxy_env(port: int) -> dict[str, str]:
    """Every proxy variable `build_env` sets, pointed at the host proxy's loopback port.

    `build_env` names the fixed in-namespace port (3128) the Linux relay
    serves; without a namespace the proxy's own ephemeral port must be named
    instead, or clients would knock on a port nobody (or anybody) holds.
    """
    from policies.env import PROXY_ENV

    url = f"http://127.0.0.1:{int(port)}"
    return {name: url for name in PROXY_ENV if name.lower() != "no_proxy"}


def _network(policy: SandboxPolicy, proxy_port: int | None, problems: list[str]) -> NetworkSpec:
    mode = policy.network.mode
    if mode is NetworkMode.ON:
        return NetworkSpec(mode.value, "none", ONLINE_USER, "nothing: the network is on")
    rule = {
        "name": FIREWALL_RULE,
        "direction": "outbound",
        "action": "block",
        "local_user": OFFLINE_USER,
        "remote_address": "any",
        "note": "Windows Firewall never filters loopback; 127.0.0.1 and ::1 stay reachable",
    }
    if mode is NetworkMode.ALLOWLIST and not proxy_port:
        problems.append("network allowlist without a running proxy port: refusing (fail closed)")
    enforced = ("outbound traffic to other hosts, by a firewall rule for the dedicated user; "
                "loopback is not filtered")
    if mode is NetworkMode.ALLOWLIST:
        enforced += "; the proxy is reached on loopback, and so is every other loopback port"
    return NetworkSpec(mode.value, "firewall-user", OFFLINE_USER, enforced,
                       proxy_port=proxy_port if mode is NetworkMode.ALLOWLIST else None, firewall_rule=rule)


def setup_script() -> str:
    """The one-time PowerShell (elevated) that creates the sandbox users and the offline firewall rule.

    The passwords are handed to `python -m sandbox.backends.windows --store-credential`, which keeps them
    DPAPI-encrypted for the calling user (so only that user can start runs as the sandbox users).
    """
    lines = ["# run once in an elevated PowerShell, as the user who will run stockade"]
    for user, what in ((OFFLINE_USER, "network-off"), (ONLINE_USER, "network-on")):
        lines += [
            "$pw = -join ((48..57) + (65..90) + (97..122) | Get-Random -Count 32 | ForEach-Object {[char]$_})",
            f"New-LocalUser -Name '{user}' -Password (ConvertTo-SecureString $pw -AsPlainText -Force) "
            f"-PasswordNeverExpires -UserMayNotChangePassword -Description 'stockade {what} sandbox user'",
            f"$pw | python -m sandbox.backends.windows --store-credential {user}",
        ]
    lines += [
        f"$sid = (Get-LocalUser '{OFFLINE_USER}').SID.Value",
        f"New-NetFirewallRule -DisplayName '{FIREWALL_RULE}' -Direction Outbound -Action Block "
        "-LocalUser \"D:(A;;CC;;;$sid)\" -Profile Any",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- compiling for Windows from elsewhere


def resolve_for_windows(policy: SandboxPolicy, host: HostFacts, cwd: str | None = None) -> ResolvedPolicy:
    """A ResolvedPolicy for Windows from the policy's strings alone (no filesystem access).

    A path without a drive (`/home/u/proj`, given on Linux) is taken on the
    home's drive. Cannot know: junction and symlink targets (a real resolve on Windows
    follows them with `os.path.realpath`), whether a protected path exists
    (every one is treated as missing, so the plan shows its placeholder), or
    what a deny-read glob matches. `~` is `host.home`; `/`-separated paths
    become `\\`-separated; relative paths are taken against the workspace.
    """
    home = canonical(host.home)

    def absolute(path: str, base: str) -> str:
        if path == "~" or path.startswith(("~/", "~\\")):
            path = home + path[1:]
        path = path.replace("/", "\\")
        if not ntpath.splitdrive(path)[0]:  # relative, or rooted without a drive: the base's drive
            path = ntpath.splitdrive(base)[0] + path if path.startswith("\\") else ntpath.join(base, path)
        return canonical(path)

    workspace = absolute(policy.workspace, home)
    writable: list[str] = []
    if policy.writes_workspace:
        for root in (policy.workspace, *policy.writable_roots):
            path = absolute(root, workspace)
            if all(key(path) != key(w) for w in writable):
                writable.append(path)
    protected: list[ProtectedPath] = []
    for root in writable:
        for name in policy.protected:
            path = canonical(ntpath.join(root, name))
            if all(key(p.path) != key(path) for p in protected):
                protected.append(ProtectedPath(path, "missing", f"{name} under {root}"))
    deny: list[DeniedPath] = []
    for entry in policy.deny_read:
        if entry.startswith("/") and not entry.startswith("//"):
            continue  # a Unix system path (/etc/shadow): nothing of the kind on Windows
        path = absolute(entry, workspace)
        if all(key(d.path) != key(path) for d in deny):
            deny.append(DeniedPath(path, "unknown", entry))
    return ResolvedPolicy(policy=policy, workspace=workspace, cwd=absolute(cwd, workspace) if cwd else workspace,
                          writable=tuple(writable), protected=tuple(protected), deny_read=tuple(deny),
                          home=home, problems=())

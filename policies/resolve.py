"""Turn a policy's path strings into the concrete paths a backend binds or grants.

Reads the filesystem (stat, readlink, one small `.git` file) but never spawns.
Symlinks are resolved first, so a writable root given through a symlink is
granted at its real location, and a protected path or deny-read entry that is
a symlink is enforced on its target too.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field

from policies.host import HostFacts
from policies.model import SandboxPolicy


@dataclass(frozen=True)
class ProtectedPath:
    path: str  # absolute, real (symlinks in the parent resolved)
    kind: str  # "dir" | "file" | "missing"
    reason: str  # e.g. ".git under /ws", "gitdir target of /ws/.git"


@dataclass(frozen=True)
class DeniedPath:
    path: str
    kind: str  # "dir" | "file"
    entry: str  # the deny_read entry it came from


@dataclass(frozen=True)
class ResolvedPolicy:
    policy: SandboxPolicy
    workspace: str  # real path
    cwd: str  # real path the command starts in
    writable: tuple[str, ...]  # real paths, shallowest first, no duplicates
    protected: tuple[ProtectedPath, ...]
    deny_read: tuple[DeniedPath, ...]
    home: str
    problems: tuple[str, ...] = field(default_factory=tuple)  # reasons to refuse
    # Host paths under a private tmp dir that must stay visible (read-only): the
    # command's own program or virtualenv living in /tmp. See `programs_in_tmp`.
    show: tuple[str, ...] = field(default_factory=tuple)
    # Existing directories between a writable root and a protected path below it
    # (`~/.local` and `~/.local/state` for `~/.local/state/stockade`). Each is
    # mounted onto itself, still writable, so it cannot be renamed away: a
    # rename would carry the protected path off and let the command build a
    # fresh, unprotected one in its place (EBUSY instead). See `pinned_ancestors`.
    pinned: tuple[str, ...] = field(default_factory=tuple)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _expand(entry: str, home: str) -> str:
    if entry == "~" or entry.startswith("~/"):
        return home + entry[1:]
    return entry


def read_gitdir(git_file: str) -> str | None:
    """The target of a `.git` file (`gitdir: <path>`), as git reads it, or None."""
    try:
        with open(git_file, "rb") as fh:
            data = fh.read(4096)
    except OSError:
        return None
    text = data.decode("utf-8", "replace").strip()
    if not text.startswith("gitdir:"):
        return None
    target = text[len("gitdir:"):].strip().splitlines()[0].strip()
    if not target:
        return None
    if not os.path.isabs(target):
        target = os.path.join(os.path.dirname(git_file), target)
    return os.path.normpath(target)


def _kind(path: str) -> str:
    if os.path.isdir(path):
        return "dir"
    if os.path.lexists(path):
        return "file"
    return "missing"


def state_dirs() -> tuple[str, str, str]:
    """stockade's own cache, config and state directories (XDG-aware).

    The cache holds host facts, compiled seccomp filters and parsed policy files, the config the
    user's policy, the state the agent's session transcripts: a command that could write any of
    them would weaken the next run (or plant instructions in a resumed session), so whenever a
    writable root contains them they are protected.
    """
    home = os.path.expanduser("~")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(cache, "stockade"), os.path.join(config, "stockade"), os.path.join(state, "stockade")


NESTED_DEPTH = 3  # levels below a writable root searched for nested repos (`vendor/lib/.git`)
NESTED_MAX_DIRS = 400  # directories read at most: the search is on every run's cold path
NESTED_MAX_ENTRIES = 8000  # and entries looked at (a data directory of 100k files must not cost a second)
NESTED_SKIP = frozenset({"node_modules", "__pycache__", "venv", "site-packages", "target", "dist", "build"})


def nested_holders(root: str, names: set[str]) -> list[str]:
    """Directories below `root` (at most NESTED_DEPTH levels, NESTED_MAX_DIRS read) holding a protected name:
    a nested repository's `.git` runs hooks on the host as surely as the top one's. Hidden and bulky
    directories are not searched; a bigger tree is searched in part (breadth first: shallow repos first)."""
    found: list[str] = []
    frontier, read, seen = [root], 0, 0
    for _ in range(NESTED_DEPTH):
        below: list[str] = []
        for directory in frontier:
            if read >= NESTED_MAX_DIRS or seen >= NESTED_MAX_ENTRIES:
                return found
            read += 1
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        seen += 1
                        if seen >= NESTED_MAX_ENTRIES:
                            break
                        if entry.name in names and directory != root and directory not in found:
                            found.append(directory)
                        elif not entry.name.startswith(".") and entry.name not in NESTED_SKIP and \
                                entry.is_dir(follow_symlinks=False):
                            below.append(entry.path)
            except OSError:
                continue
        frontier = below
    return found


def deny_read_patterns(policy: SandboxPolicy, home: str) -> list[str]:
    """The deny-read entries as absolute paths or globs: `~` is `home`, a relative entry is in the workspace."""
    workspace = _real(policy.workspace)
    out = []
    for entry in policy.deny_read:
        pattern = _expand(entry, home)
        out.append(pattern if os.path.isabs(pattern) else os.path.join(workspace, pattern))
    return out


def own_code() -> tuple[str, ...]:
    """What the host runs of stockade, outside any sandbox: the Python environment it runs in (its
    interpreter, stockade and every library it imports) and stockade's own package directories (an
    editable install). A command that could change them would run its code unconfined the next time
    stockade starts, so whenever a writable root contains them they are protected."""
    packages = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return (sys.prefix, *(os.path.join(packages, name) for name in ("policies", "sandbox", "agent", "profiles")))


def resolve(
    policy: SandboxPolicy,
    host: HostFacts,
    cwd: str | None = None,
) -> ResolvedPolicy:
    problems: list[str] = []
    workspace = _real(policy.workspace)
    run_cwd = _real(cwd) if cwd else workspace
    if not os.path.isdir(workspace):
        problems.append(f"workspace {policy.workspace} is not a directory")
    if cwd and not os.path.isdir(run_cwd):
        problems.append(f"working directory {cwd} is not a directory")

    writable: list[str] = []
    if policy.writes_workspace:
        for root in (policy.workspace, *policy.writable_roots):
            real = _real(root)
            if not os.path.isdir(real):
                problems.append(f"writable root {root} does not exist")
                continue
            writable.append(real)
    writable = _dedupe_nested(writable)

    protected: list[ProtectedPath] = []
    seen: set[str] = set()

    def add(path: str, kind: str, reason: str) -> None:
        if path not in seen:
            seen.add(path)
            protected.append(ProtectedPath(path, kind, reason))

    bases = [(root, root, True) for root in writable]
    names = {n for n in policy.protected if "/" not in n}
    for root in writable:
        bases += [(nested, root, False) for nested in nested_holders(root, names)]
    for base, root, top in bases:
        for name in policy.protected:
            candidate = os.path.join(base, name)
            if not top and not os.path.lexists(candidate):
                continue  # below the top level only what exists is protected (a stub there would be noise)
            if os.path.islink(candidate):
                # A protected name that is a symlink: protect the link itself
                # (by its name) and whatever it points at inside a writable root.
                target = _real(candidate)
                add(candidate, "file", f"{name} under {root} (symlink)")
                if _under_any(target, writable):
                    add(target, _kind(target), f"target of {candidate}")
                continue
            kind = _kind(candidate)
            add(candidate, kind, f"{name} under {base}")
            if name == ".git" and kind == "file":
                target = read_gitdir(candidate)
                if target is None:
                    if top:  # a nested one that is not a pointer is protected as the file it is
                        problems.append(f"{candidate} is a file but not a `gitdir:` pointer; refusing to guess")
                    continue
                real_target = _real(target)
                if os.path.isdir(real_target):
                    add(real_target, "dir", f"gitdir target of {candidate}")
                    commondir = os.path.join(real_target, "commondir")
                    if os.path.isfile(commondir):
                        try:
                            common = open(commondir, encoding="utf-8").read().strip()
                        except OSError:
                            common = ""
                        if common:
                            common_real = _real(os.path.join(real_target, common))
                            if os.path.isdir(common_real):
                                add(common_real, "dir", f"commondir of {real_target}")
                elif top:
                    problems.append(f"{candidate} points to {target}, which does not exist")

    for state in state_dirs():
        real_state = _real(state)
        if _under_any(real_state, writable):
            add(real_state, _kind(real_state), "stockade's own state (cache, config, sessions)")
    for code in own_code():
        real_code = _real(code)
        if os.path.isdir(real_code) and _under_any(real_code, writable) and real_code not in writable:
            add(real_code, "dir", "stockade's own code and Python environment (run outside the sandbox)")

    deny: list[DeniedPath] = []
    deny_seen: set[str] = set()
    for entry, pattern in zip(policy.deny_read, deny_read_patterns(policy, host.home), strict=True):
        matches = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
        for match in matches:
            if not os.path.lexists(match):
                continue
            for path in dict.fromkeys((os.path.normpath(match), _real(match))):
                if path in deny_seen or not os.path.exists(path):
                    continue
                deny_seen.add(path)
                deny.append(DeniedPath(path, "dir" if os.path.isdir(path) else "file", entry))

    return ResolvedPolicy(
        policy=policy,
        workspace=workspace,
        cwd=run_cwd,
        writable=tuple(writable),
        protected=tuple(protected),
        deny_read=tuple(deny),
        home=host.home,
        problems=tuple(problems),
        pinned=pinned_ancestors([p.path for p in protected], writable),
    )


def pinned_ancestors(paths: list[str], writable: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The existing real directories strictly between each path and the deepest writable root holding it."""
    out: dict[str, None] = {}
    for path in paths:
        roots = [w for w in writable if _under(path, w) and path != w]
        if not roots:
            continue
        root = max(roots, key=len)
        parent = os.path.dirname(path)
        chain = []
        while parent != root and _under(parent, root) and parent != os.path.dirname(parent):
            chain.append(parent)
            parent = os.path.dirname(parent)
        for anc in reversed(chain):
            if os.path.isdir(anc) and not os.path.islink(anc):
                out[anc] = None
    return tuple(sorted(out, key=lambda p: (p.count("/"), p)))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _under_any(path: str, roots: list[str] | tuple[str, ...]) -> bool:
    return any(_under(path, r) for r in roots)


def _dedupe_nested(paths: list[str]) -> list[str]:
    """Drop duplicates; keep nested roots (harmless) but order shallowest first."""
    unique = list(dict.fromkeys(paths))
    return sorted(unique, key=lambda p: (p.count("/"), p))


PRIVATE_TMP_ROOTS = ("/tmp", "/var/tmp")


def programs_in_tmp(argv0: str, env: dict[str, str] | None, cwd: str) -> tuple[str, ...]:
    """Top-level host /tmp (or /var/tmp) entries holding the command's program, its PATH or virtualenv.

    The run gets a private /tmp, which would otherwise hide a tool installed
    under /tmp (a CI checkout's .venv, a tool unpacked in /tmp); those entries
    are shown read-only on top of the private tmp.
    """
    candidates: list[str] = []
    if "/" in argv0:
        candidates.append(os.path.join(cwd, argv0))
    env = env or {}
    candidates += [p for p in env.get("PATH", "").split(os.pathsep) if p]
    if env.get("VIRTUAL_ENV"):
        candidates.append(env["VIRTUAL_ENV"])
    out: list[str] = []
    for cand in candidates:
        for path in dict.fromkeys((os.path.normpath(cand), _real(cand))):
            for root in PRIVATE_TMP_ROOTS:
                if path.startswith(root + "/"):
                    top = os.path.join(root, path[len(root) + 1:].split("/", 1)[0])
                    if os.path.isdir(top) and top not in out:
                        out.append(top)
    return tuple(out)

"""The environment a confined command starts with."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from policies.model import EnvInherit, EnvPolicy, NetworkMode, SandboxPolicy

CORE_VARS = ("PATH", "SHELL", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES",
             "LOGNAME", "USER", "TZ", "TERM", "VIRTUAL_ENV", "PYTHONPATH")
FALLBACK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIXED = {"NO_COLOR": "1", "PAGER": "cat", "GIT_PAGER": "cat", "STOCKADE_SANDBOX": "1"}

# network.mode = "allowlist": the relay (sandbox.proxy_relay) listens here inside the sandbox's own
# network namespace, so the port is the same for every run and never clashes with the host's.
PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
NO_PROXY = "localhost,127.0.0.1,::1"
PROXY_ENV = {
    **{name: PROXY_URL for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                                    "all_proxy")},
    "NO_PROXY": NO_PROXY,
    "no_proxy": NO_PROXY,
}


def is_secret_name(name: str, patterns: tuple[str, ...]) -> bool:
    upper = name.upper()
    return any(_matcher(p)(upper) for p in patterns)


_MATCHERS: dict[str, Callable[[str], bool]] = {}


def _matcher(pattern: str) -> Callable[[str], bool]:
    """`fnmatch.fnmatchcase(name, pattern.upper())` for an upper-cased name.

    The usual globs (`*KEY*`, `AWS_*`, `*_TOKEN`, exact names) are plain string
    tests; anything else (`?`, `[...]`, an inner `*`) goes to fnmatch, whose
    regex compile costs more than the whole environment filter otherwise.
    """
    found = _MATCHERS.get(pattern)
    if found is not None:
        return found
    glob = pattern.upper()
    core = glob.strip("*")
    if "?" in glob or "[" in glob or "*" in core:
        import fnmatch

        def found(name: str) -> bool:
            return fnmatch.fnmatchcase(name, glob)
    elif glob.startswith("*") and glob.endswith("*"):
        def found(name: str) -> bool:
            return core in name
    elif glob.startswith("*"):
        def found(name: str) -> bool:
            return name.endswith(core)
    elif glob.endswith("*"):
        def found(name: str) -> bool:
            return name.startswith(core)
    else:
        def found(name: str) -> bool:
            return name == core
    _MATCHERS[pattern] = found
    return found


def build_env(
    policy: SandboxPolicy,
    caller: Mapping[str, str],
    tmpdir: str = "/tmp",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Caller env filtered by the policy, then fixed markers, then explicit settings.

    Explicit settings (`env.set`, `extra`) and `env.passthrough` names are the
    user's own choice and are never scrubbed.
    """
    rules: EnvPolicy = policy.env
    if rules.inherit is EnvInherit.ALL:
        env = dict(caller)
    elif rules.inherit is EnvInherit.CORE:
        env = {k: caller[k] for k in CORE_VARS if k in caller}
    else:
        env = {}
    if rules.scrub_secrets:
        env = {k: v for k, v in env.items() if not is_secret_name(k, rules.secret_patterns)}
    for name in rules.passthrough:
        if name in caller:
            env[name] = caller[name]
    env.setdefault("PATH", FALLBACK_PATH)
    env.update(FIXED)
    if policy.confined:
        env["TMPDIR"] = tmpdir
        env["STOCKADE_POLICY"] = policy.mode.value
        # The workspace is a mount of its own inside the sandbox (the rest of the host is a read-only view):
        # git would stop looking for the repository at it, and a workspace below a repo's top (a monorepo's
        # service) would not be a repository at all.
        env.setdefault("GIT_DISCOVERY_ACROSS_FILESYSTEM", "1")
        if policy.network.mode is NetworkMode.OFF:
            env["STOCKADE_NETWORK_DISABLED"] = "1"
        elif policy.network.mode is NetworkMode.ALLOWLIST:
            # Convenience, not the boundary: the sandbox has no other way out, whatever a tool does
            # with these (`--noproxy '*'` just fails).
            env.update(PROXY_ENV)
    env.update(rules.set)
    if extra:
        env.update(extra)
    return env

"""Build a SandboxPolicy from a named profile, the user file, the project file and CLI flags.

Order, later wins: profile (`--policy`, else the project's or the user's
`profile` key, else `workspace-write`) -> user file
(`~/.config/stockade/config.toml`) -> project file
(`<workspace>/.stockade/config.toml`) -> CLI flags.

The project file lives in the workspace the command may have written, so it
is only allowed to tighten: it cannot pick a weaker profile, turn network on,
add writable roots outside the workspace, lift deny-read or protected entries,
or pass secret variables through. A user who trusts a project lists its path
in `trusted_projects = ["/path"]` in the user file.

Every error names the file, the key and the reason, as one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from policies.model import (
    EnvInherit,
    EnvPolicy,
    Limits,
    Mode,
    NetworkMode,
    NetworkPolicy,
    SandboxPolicy,
    TmpMode,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
DEFAULT_PROFILE = "workspace-write"
_MODE_RANK = {Mode.READ_ONLY: 0, Mode.WORKSPACE_WRITE: 1, Mode.FULL_ACCESS: 2}


class PolicyError(Exception):
    """Bad policy input. str() is the one-line message: `FILE: KEY: REASON`."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source, self.key, self.reason = source, key, reason
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "stockade" / "config.toml"


def user_profiles_dir() -> Path:
    return user_config_path().parent / "profiles"


def project_config_path(workspace: str | os.PathLike[str]) -> Path:
    return Path(workspace) / ".stockade" / "config.toml"


def available_profiles() -> list[str]:
    names = {p.stem for p in PROFILES_DIR.glob("*.toml")}
    if user_profiles_dir().is_dir():
        names |= {p.stem for p in user_profiles_dir().glob("*.toml")}
    return sorted(names)


# ---------------------------------------------------------------- network allowlist entries

DEFAULT_ALLOW_PORTS: tuple[int, ...] = (80, 443)


@dataclass(frozen=True)
class AllowEntry:
    """One parsed `network.allow_domains` entry.

    `host`: lower-case ASCII name (for a wildcard, the suffix after `*.`), or
    the canonical text of an IP address (`ip` True). `ports`: the ports it
    allows (DEFAULT_ALLOW_PORTS unless the entry names one).
    """

    text: str
    host: str
    wildcard: bool = False
    ip: bool = False
    ports: tuple[int, ...] = DEFAULT_ALLOW_PORTS

    def matches(self, host: str, port: int) -> bool:
        """`host` must already be normalised (`normalize_host`)."""
        if port not in self.ports:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


def normalize_host(host: str) -> tuple[str, bool]:
    """(canonical host, is an IP literal). Lower-case ASCII (IDNA), no trailing dot. ValueError when invalid.

    IP literals are canonicalised so `0x7f.1`, `2130706433` or `::ffff:127.0.0.1`
    cannot dress up an address to slip past a comparison.
    """
    import ipaddress

    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return str(addr), True
    name = text.rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{host!r} is not a valid host name") from None
    labels = name.split(".")
    if not name or len(name) > 253 or any(not label or len(label) > 63 for label in labels) or not all(
            c.isalnum() or c in "-_" for label in labels for c in label):
        raise ValueError(f"{host!r} is not a valid host name")
    if labels[-1].isdigit() or all(_numeric(label) for label in labels):
        # Forms inet_aton would read as an IPv4 address ("127.1", "2130706433", "0x7f.1").
        raise ValueError(f"{host!r} looks like a partial IP address; write it in full")
    return name, False


def _numeric(label: str) -> bool:
    return label.isdigit() or (label[:2] == "0x" and all(c in "0123456789abcdef" for c in label[2:]))


def parse_allow_entry(entry: str) -> AllowEntry:
    """`example.com`, `*.example.com` (subdomains only), `example.com:8443`, `10.0.0.5`, `[::1]:8080`.

    ValueError (message names the entry) when malformed or too broad.
    """
    text = entry.strip()
    host, ports = text, DEFAULT_ALLOW_PORTS
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{entry!r}: unclosed [")
        host, rest = text[:close + 1], text[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{entry!r}: expected :PORT after ]")
            ports = (_port(rest[1:], entry),)
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        ports = (_port(port, entry),)
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if not host or "*" in host:
        raise ValueError(f"{entry!r} is too broad (use `*.example.com` for the subdomains of one domain)")
    try:
        name, is_ip = normalize_host(host)
    except ValueError as exc:
        raise ValueError(f"{entry!r}: {exc}") from None
    if is_ip and wildcard:
        raise ValueError(f"{entry!r}: a wildcard needs a domain, not an address")
    if not is_ip and (name.count(".") == 0 or (wildcard and name.count(".") < 1)):
        raise ValueError(f"{entry!r} is too broad")
    return AllowEntry(text=text, host=name, wildcard=wildcard, ip=is_ip, ports=ports)


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: {text!r} is not a port number")
    return int(text)


# ---------------------------------------------------------------- schema

# key -> (expected python type(s), converter); tables recurse.
_LIST_OF_STR = "list[str]"
_SCHEMA: dict[str, Any] = {
    "extends": str,
    "profile": str,
    "mode": ("enum", Mode),
    "workspace": str,
    "writable_roots": _LIST_OF_STR,
    "protected": _LIST_OF_STR,
    "deny_read": _LIST_OF_STR,
    "allow_read": _LIST_OF_STR,
    "tmp": ("enum", TmpMode),
    "trusted_projects": _LIST_OF_STR,
    "network": {
        "mode": ("enum", NetworkMode),
        "allow_domains": _LIST_OF_STR,
    },
    "limits": {
        "timeout": "number",
        "memory_mb": "int",
        "pids": "int",
        "file_size_mb": "int",
        "cpu_seconds": "int",
        "output_bytes": "int",
    },
    # The agent's own settings (`stockade exec/chat`): read by agent/, never part of a SandboxPolicy,
    # and refused in project files (a repository must not pick the model endpoint your key is sent to).
    "agent": {
        "provider": str,
        "model": str,
        "base_url": str,
        "api_key": str,
        "approval": str,
        "max_turns": "int",
        "api_key_env": str,
        "idle_timeout": "number",
        "max_retries": "int",
        "options": "table",
        "mcp_servers": "table",  # checked by agent.mcp_client.parse_servers
        "stop_check": str,  # a shell command that must pass before the agent may finish
    },
    "env": {
        "inherit": ("enum", EnvInherit),
        "scrub_secrets": bool,
        "secret_patterns": _LIST_OF_STR,
        "passthrough": _LIST_OF_STR,
        "set": "dict[str,str]",
    },
}
_NULLABLE_LIMITS = {"timeout", "memory_mb", "pids", "file_size_mb", "cpu_seconds"}
# Upper bounds, so a typo cannot overflow the kernel interfaces the limits end up in (epoll's timeout in ms,
# cgroup pids.max, setrlimit and bwrap --size in bytes): beyond them the run crashed or silently lost a limit.
MAX_TIMEOUT = 2_000_000.0  # seconds (23 days); epoll_wait takes at most 2**31-1 ms
_MAX_MB = 2**43 - 1  # MiB: the byte count must fit a signed 64-bit value
_MAXIMA: dict[str, int] = {"timeout": int(MAX_TIMEOUT), "memory_mb": _MAX_MB, "file_size_mb": _MAX_MB,
                           "pids": 4_194_304, "cpu_seconds": 2**62, "output_bytes": 2**62,
                           "idle_timeout": int(MAX_TIMEOUT)}


def _check(source: str, data: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise PolicyError(source, dotted, f"unknown key (known keys: {known})")
        kind = schema[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise PolicyError(source, dotted, f"expected a table, got {_tname(value)}")
            out[key] = _check(source, value, kind, dotted + ".")
        else:
            out[key] = _convert(source, dotted, value, kind)
    return out


def _tname(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _convert(source: str, key: str, value: Any, kind: Any) -> Any:
    leaf = key.rsplit(".", 1)[-1]
    if kind is str:
        if not isinstance(value, str):
            raise PolicyError(source, key, f"expected a string, got {_tname(value)}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise PolicyError(source, key, f"expected true or false, got {_tname(value)}")
        return value
    if kind == _LIST_OF_STR:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyError(source, key, "expected a list of strings")
        return tuple(value)
    if kind == "table":  # free-form (provider options), checked by whoever reads it
        if not isinstance(value, dict):
            raise PolicyError(source, key, f"expected a table, got {_tname(value)}")
        return dict(value)
    if kind == "dict[str,str]":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise PolicyError(source, key, "expected a table of strings")
        return dict(value)
    if kind in ("int", "number"):
        if leaf in _NULLABLE_LIMITS and value in (0, "none", "unlimited"):
            return None
        ok = isinstance(value, int) or (kind == "number" and isinstance(value, float))
        if isinstance(value, bool) or not ok:
            want = "an integer" if kind == "int" else "a number"
            raise PolicyError(source, key, f"expected {want}, got {_tname(value)}")
        if value != value or value in (float("inf"), float("-inf")):
            raise PolicyError(source, key, f"expected a finite number, got {value}")
        if value < 0:
            raise PolicyError(source, key, "must not be negative")
        if leaf in _MAXIMA and value > _MAXIMA[leaf]:
            raise PolicyError(source, key, f"{value} is too large (at most {_MAXIMA[leaf]})")
        return value
    if isinstance(kind, tuple) and kind[0] == "enum":
        enum = kind[1]
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in enum)
            raise PolicyError(source, key, f"{value!r} is not one of {allowed}") from None
    raise AssertionError(kind)  # pragma: no cover


def read_toml(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        with open(path, "rb") as fh:
            text = fh.read()
        raw = _parse_toml(text)
    except FileNotFoundError:
        raise PolicyError(source, "", "file not found") from None
    except IsADirectoryError:
        raise PolicyError(source, "", "is a directory, expected a TOML file") from None
    except PermissionError:
        raise PolicyError(source, "", "permission denied") from None
    except _TomlError as exc:
        raise PolicyError(source, "", f"invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise PolicyError(source, "", "not UTF-8 text") from None
    return _check(source, raw, _SCHEMA)


class _TomlError(ValueError):
    """tomllib.TOMLDecodeError, same message (tomllib itself is imported only on a parse)."""


# Every `stockade run` reads a profile, and importing tomllib (with typing, re,
# datetime) costs more than parsing it. Parsed files are kept as JSON next to
# the host-facts cache (a protected path, like the seccomp cache), keyed by the
# file's full bytes, compared exactly: an edited file is parsed again.
_TOML_MAGIC = "stockade-toml-1"


def _parse_toml(text: bytes) -> dict[str, Any]:
    import json
    import zlib

    from policies.resolve import state_dirs

    cache = os.path.join(state_dirs()[0], f"toml-{zlib.crc32(text):08x}-{len(text)}.json")
    try:
        with open(cache, "rb") as fh:
            magic, source, parsed = json.loads(fh.read())
        if magic == _TOML_MAGIC and source.encode("utf-8", "surrogateescape") == text and isinstance(parsed, dict):
            return parsed
    except (OSError, ValueError, TypeError):
        pass
    import tomllib

    try:
        parsed = tomllib.loads(text.decode())  # what tomllib.load does with a binary file
    except tomllib.TOMLDecodeError as exc:
        raise _TomlError(str(exc)) from None
    try:
        blob = json.dumps([_TOML_MAGIC, text.decode(), parsed], allow_nan=True)
    except (TypeError, ValueError):
        return parsed  # dates and times have no JSON form: not cached
    try:
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        tmp = f"{cache}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(blob)
        os.replace(tmp, cache)
    except OSError:
        pass  # a cache: failing to write it only costs the next cold start
    return parsed


# ---------------------------------------------------------------- profiles

def profile_path(name_or_file: str, source: str = "--policy", key: str = "",
                 base: Path | None = None) -> Path:
    """A profile name (`read-only`) or a path to a TOML file (relative to `base`, else the current directory).

    `source`/`key` say where the name came from (`--policy`, or a file and its `profile`/`extends` key), so an
    unknown name is reported where the user wrote it.
    """
    looks_like_file = "/" in name_or_file or name_or_file.endswith(".toml")
    if looks_like_file:
        path = Path(name_or_file).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        if path.is_dir():
            raise PolicyError(str(path), "", "is a directory, expected a TOML file")
        if not path.is_file():
            if key:
                raise PolicyError(source, key, f"policy file {str(path)!r} not found")
            raise PolicyError(name_or_file, "", "policy file not found")
        return path
    for directory in (user_profiles_dir(), PROFILES_DIR):
        candidate = directory / f"{name_or_file}.toml"
        if candidate.is_file():
            return candidate
    known = ", ".join(available_profiles())
    raise PolicyError(source, key, f"unknown profile {name_or_file!r} (known: {known})")


def load_profile(name_or_file: str, _seen: tuple[str, ...] = (), *, source: str = "--policy", key: str = "",
                 base: Path | None = None) -> dict[str, Any]:
    """The profile's merged data; `extends` is resolved relative to the extending file's directory."""
    path = profile_path(name_or_file, source, key, base)
    data = read_toml(path)
    for root in data.get("writable_roots", ()):
        expanded = os.path.expanduser(root)
        if os.path.isabs(expanded) and not os.path.isdir(expanded):
            raise PolicyError(str(path), "writable_roots", f"{root}: no such directory")
    for key in ("profile", "trusted_projects"):
        if key in data:
            raise PolicyError(str(path), key, "only allowed in the user or project config file")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    me = str(path.resolve())
    parent_path = profile_path(parent, str(path), "extends", path.parent)
    if str(parent_path.resolve()) in (*_seen, me):
        raise PolicyError(str(path), "extends", f"profile {parent!r} extends itself")
    return _merge(load_profile(parent, (*_seen, me), source=str(path), key="extends", base=path.parent), data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "set":
            out[key] = _merge(out[key], value)
        elif key == "set" and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- overrides


@dataclass
class Overrides:
    """What the CLI (or an API caller) says, applied last."""

    policy: str | None = None
    workspace: str | None = None
    writable: tuple[str, ...] = ()
    network: str | None = None
    timeout: float | None = None
    env_passthrough: tuple[str, ...] = ()
    env_set: tuple[tuple[str, str], ...] = ()
    allow_domains: tuple[str, ...] = ()  # --allow-domain: implies network mode "allowlist"


def build_policy(
    overrides: Overrides | None = None,
    *,
    use_user_config: bool = True,
    use_project_config: bool = True,
) -> SandboxPolicy:
    ov = overrides or Overrides()
    try:
        workspace = os.path.abspath(ov.workspace or os.getcwd())
    except FileNotFoundError:  # the current directory was deleted
        raise PolicyError("--cwd", "", "the current directory no longer exists; pass --cwd DIR") from None
    if not os.path.isdir(workspace):
        raise PolicyError("--cwd", "", f"workspace {workspace} is not a directory")

    user: dict[str, Any] = {}
    upath = user_config_path()
    if use_user_config and upath.is_file():
        user = read_toml(upath)
    project: dict[str, Any] = {}
    ppath = project_config_path(workspace)
    if use_project_config and ppath.is_file():
        project = read_toml(ppath)
        for key in ("trusted_projects", "extends", "mode", "workspace", "agent"):
            if key in project:
                raise PolicyError(str(ppath), key, "not allowed in a project file (use `profile`)")
    trusted = workspace in {os.path.abspath(os.path.expanduser(p)) for p in user.get("trusted_projects", ())}
    for key in ("extends", "mode", "workspace"):
        if key in user:
            raise PolicyError(str(upath), key, "not allowed in the user file (use `profile`)")

    _check_roots(user, str(upath), workspace)
    _check_roots(project, str(ppath), workspace)
    if ov.policy:
        profile = load_profile(ov.policy)
    elif user.get("profile"):
        profile = load_profile(user["profile"], source=str(upath), key="profile", base=upath.parent)
    else:
        profile = load_profile(DEFAULT_PROFILE)
    data = _merge(profile, _strip(user))
    before = _to_policy(data, workspace, str(upath))
    if project:
        base = data
        if project.get("profile") and not ov.policy:
            base = _merge(load_profile(project["profile"], source=str(ppath), key="profile", base=ppath.parent),
                          _strip(user))
        merged = _merge(base, _strip(project))
        after = _to_policy(merged, workspace, str(ppath))
        if not trusted:
            _only_tightens(before, after, str(ppath))
        data = merged
    # Without a project file, `data` is what `before` was built from: do not convert it twice.
    policy = _to_policy(data, workspace, "--policy") if project else before
    return apply_overrides(policy, ov)


def _check_roots(data: dict[str, Any], source: str, workspace: str) -> None:
    for root in data.get("writable_roots", ()):
        if not os.path.isdir(_abspath(root, workspace)):
            raise PolicyError(source, "writable_roots", f"{root}: no such directory")


def _strip(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("profile", "trusted_projects", "agent")}


def _to_policy(data: dict[str, Any], workspace: str, source: str) -> SandboxPolicy:
    net = data.get("network", {})
    lim = data.get("limits", {})
    env = data.get("env", {})
    deny = tuple(data.get("deny_read", SandboxPolicy().deny_read))
    allow = set(data.get("allow_read", ()))
    deny = tuple(d for d in deny if d not in allow)
    network = NetworkPolicy(**net)
    if network.mode is NetworkMode.ALLOWLIST and not network.allow_domains:
        raise PolicyError(source, "network.allow_domains", "empty allowlist; use mode = \"off\"")
    for domain in network.allow_domains:
        try:
            parse_allow_entry(domain)
        except ValueError as exc:
            raise PolicyError(source, "network.allow_domains", str(exc)) from None
    return SandboxPolicy(
        mode=data.get("mode", Mode.WORKSPACE_WRITE),
        workspace=workspace,
        writable_roots=tuple(_abspath(p, workspace) for p in data.get("writable_roots", ())),
        protected=tuple(data.get("protected", SandboxPolicy().protected)),
        deny_read=deny,
        network=network,
        limits=Limits(**lim),
        env=EnvPolicy(**env),
        tmp=data.get("tmp", TmpMode.PRIVATE),
    )


def _abspath(path: str, workspace: str) -> str:
    return os.path.normpath(os.path.join(workspace, os.path.expanduser(path)))


def _only_tightens(before: SandboxPolicy, after: SandboxPolicy, source: str) -> None:
    def refuse(key: str, why: str) -> None:
        raise PolicyError(source, key, f"{why}; a project file may only tighten the policy "
                          "(add this workspace to `trusted_projects` in your user file to allow it)")

    if _MODE_RANK[after.mode] > _MODE_RANK[before.mode]:
        refuse("profile", f"would widen mode {before.mode.value} to {after.mode.value}")
    if after.network.mode is not NetworkMode.OFF and before.network.mode is NetworkMode.OFF:
        refuse("network.mode", "would turn network on")
    if before.network.mode is NetworkMode.ALLOWLIST and after.network.mode is NetworkMode.ON:
        refuse("network.mode", "would widen an allowlist to full network")
    if set(after.network.allow_domains) - set(before.network.allow_domains) and \
            before.network.mode is not NetworkMode.ON:
        refuse("network.allow_domains", "would add domains")
    ws = after.workspace.rstrip("/") + "/"
    for root in set(after.writable_roots) - set(before.writable_roots):
        if not (root + "/").startswith(ws):
            refuse("writable_roots", f"would make {root} (outside the workspace) writable")
    if set(before.deny_read) - set(after.deny_read):
        refuse("deny_read", "would lift deny-read entries")
    if set(before.protected) - set(after.protected):
        refuse("protected", "would unprotect paths")
    if set(after.env.passthrough) - set(before.env.passthrough):
        refuse("env.passthrough", "would pass secret variables through")
    if not after.env.scrub_secrets and before.env.scrub_secrets:
        refuse("env.scrub_secrets", "would stop removing secret variables")
    if before.env.scrub_secrets and set(before.env.secret_patterns) - set(after.env.secret_patterns):
        refuse("env.secret_patterns", "would stop removing some secret variables")
    for name in ("timeout", "memory_mb", "pids", "file_size_mb", "cpu_seconds", "output_bytes"):
        was, now = getattr(before.limits, name), getattr(after.limits, name)
        if was is not None and (now is None or now > was):
            refuse(f"limits.{name}", f"would raise the limit from {was} to {now or 'unlimited'}")
    order = [EnvInherit.NONE, EnvInherit.CORE, EnvInherit.ALL]
    if order.index(after.env.inherit) > order.index(before.env.inherit):
        refuse("env.inherit", "would inherit more of the environment")
    if after.tmp is TmpMode.HOST and before.tmp is TmpMode.PRIVATE:
        refuse("tmp", "would share the host's /tmp")


def apply_overrides(policy: SandboxPolicy, ov: Overrides) -> SandboxPolicy:
    changes: dict[str, Any] = {}
    if ov.writable:
        roots = []
        for w in ov.writable:
            path = _abspath(w, policy.workspace)
            if not os.path.isdir(path):
                raise PolicyError("--writable", "", f"{w}: no such directory")
            roots.append(path)
        changes["writable_roots"] = policy.writable_roots + tuple(roots)
    if ov.network is not None or ov.allow_domains:
        mode = policy.network.mode
        if ov.network is not None:
            try:
                mode = NetworkMode(ov.network)
            except ValueError:
                raise PolicyError("--network", "", f"{ov.network!r} is not one of 'off', 'on', 'allowlist'") from None
        domains = policy.network.allow_domains
        if ov.allow_domains:
            if ov.network is not None and mode is not NetworkMode.ALLOWLIST:
                raise PolicyError("--allow-domain", "", f"cannot be combined with --network {mode.value}")
            for domain in ov.allow_domains:
                try:
                    parse_allow_entry(domain)
                except ValueError as exc:
                    raise PolicyError("--allow-domain", "", str(exc)) from None
            mode = NetworkMode.ALLOWLIST
            domains = tuple(dict.fromkeys((*domains, *ov.allow_domains)))
        if mode is NetworkMode.ALLOWLIST and not domains:
            raise PolicyError("--network", "", "allowlist needs domains: --allow-domain D (repeatable) or "
                              "network.allow_domains in a policy file")
        if not policy.confined and mode is not NetworkMode.ON:
            # full-access runs unconfined (backend none): nothing would enforce it, so say so instead of
            # running with the network silently on.
            flag = "--allow-domain" if ov.allow_domains else "--network"
            raise PolicyError(flag, "", f"network {mode.value} needs a confining policy; full-access runs "
                              "unconfined (use --policy workspace-write or read-only)")
        changes["network"] = replace(policy.network, mode=mode, allow_domains=domains)
    if ov.timeout is not None:
        if not 0 < ov.timeout <= MAX_TIMEOUT:  # also refuses nan
            raise PolicyError("--timeout", "", f"must be a positive number of seconds, at most {MAX_TIMEOUT:g}")
        changes["limits"] = replace(policy.limits, timeout=ov.timeout)
    if ov.env_passthrough or ov.env_set:
        changes["env"] = replace(
            policy.env,
            passthrough=policy.env.passthrough + ov.env_passthrough,
            set={**policy.env.set, **dict(ov.env_set)},
        )
    return policy.replace(**changes) if changes else policy

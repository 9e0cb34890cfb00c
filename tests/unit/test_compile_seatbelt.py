"""Golden tests for the Seatbelt profile: each mode, tricky paths, and a well-formedness check of every profile."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest
import sbpl

from policies.compile.seatbelt import (
    SANDBOX_EXEC,
    MacosInputs,
    base_profile,
    canonical,
    glob_regex,
    resolve_for_macos,
    seatbelt_plan,
)
from policies.host import HostFacts
from policies.model import Mode, NetworkMode, NetworkPolicy, SandboxPolicy, TmpMode
from policies.resolve import DeniedPath, ProtectedPath, ResolvedPolicy, resolve

MAC = HostFacts(platform="macos", arch="arm64", home="/Users/u", uid=501, gid=20)
WS = "/Users/u/proj"
TMP = "/var/folders/zz/abc/T/stockade-tmp-1"
INPUTS = MacosInputs(private_tmp=TMP, user_temp_dir="/var/folders/zz/abc/T/",
                     user_cache_dir="/var/folders/zz/abc/C/", proxy_port=3128)


def rp_for(mode: Mode = Mode.WORKSPACE_WRITE, network: NetworkMode = NetworkMode.OFF, tmp: TmpMode = TmpMode.PRIVATE,
           writable: tuple[str, ...] = (WS,), protected: tuple[str, ...] = (f"{WS}/.git", f"{WS}/.stockade"),
           deny: tuple[str, ...] = ()) -> ResolvedPolicy:
    policy = SandboxPolicy(mode=mode, workspace=WS, network=NetworkPolicy(mode=network), tmp=tmp)
    return ResolvedPolicy(
        policy=policy, workspace=WS, cwd=WS, writable=writable if policy.writes_workspace else (),
        protected=tuple(ProtectedPath(p, "missing", "test") for p in protected) if policy.writes_workspace else (),
        deny_read=tuple(DeniedPath(d, "dir", d) for d in deny), home=MAC.home)


WORKSPACE_WRITE_OFF = """\
;; ---- stockade policy rules (generated; paths are -D parameters) ----
;; reads: everything except the deny-read list
(allow file-read*)
;; writes: writable roots minus protected paths (also before they exist)
(allow file-write*
  (require-all
    (subpath (param "WRITABLE_ROOT_0"))
    (require-not (literal (param "WRITABLE_ROOT_0_EXCLUDED_0")))
    (require-not (subpath (param "WRITABLE_ROOT_0_EXCLUDED_0")))
    (require-not (literal (param "WRITABLE_ROOT_0_EXCLUDED_1")))
    (require-not (subpath (param "WRITABLE_ROOT_0_EXCLUDED_1")))))
(allow file-write* (subpath (param "PRIVATE_TMP")))
;; a protected path cannot be carried away by renaming one of its ancestors
(deny file-write-unlink
  (literal (param "PROTECTED_ANCESTOR_0"))
  (literal (param "PROTECTED_ANCESTOR_1"))
  (literal (param "PROTECTED_ANCESTOR_2")))
;; Unix sockets: only those bound under the private TMPDIR
(allow network-bind network-outbound (subpath (param "PRIVATE_TMP")))
;; network: off (deny default covers every socket operation)
"""

READ_ONLY_OFF = """\
;; ---- stockade policy rules (generated; paths are -D parameters) ----
;; reads: everything except the deny-read list
(allow file-read*)
;; writes: writable roots minus protected paths (also before they exist)
(allow file-write* (subpath (param "PRIVATE_TMP")))
;; Unix sockets: only those bound under the private TMPDIR
(allow network-bind network-outbound (subpath (param "PRIVATE_TMP")))
;; network: off (deny default covers every socket operation)
"""

NETWORK_ON_TAIL = """\
;; network: on
(allow network-outbound)
(allow network-inbound)
(allow network-bind)
(allow system-socket)
(allow sysctl-read (sysctl-name-prefix "net.routetable"))
(allow mach-lookup
  (global-name "com.apple.bsd.dirhelper")
  (global-name "com.apple.system.opendirectoryd.membership")
  (global-name "com.apple.SecurityServer")
  (global-name "com.apple.networkd")
  (global-name "com.apple.ocspd")
  (global-name "com.apple.trustd.agent")
  (global-name "com.apple.SystemConfiguration.DNSConfiguration")
  (global-name "com.apple.SystemConfiguration.configd"))
;; Security.framework caches certificate state in the per-user cache dir
(allow file-write* (subpath (param "DARWIN_USER_CACHE_DIR")))
"""

ALLOWLIST_TAIL = """\
;; network: allowlist, so only the host proxy on loopback (no DNS, no trustd)
(allow system-socket (socket-domain AF_INET) (socket-domain AF_INET6))
(allow network-outbound (remote ip (string-append "localhost:" (param "PROXY_PORT"))))
"""


def test_golden_workspace_write_network_off() -> None:
    plan = seatbelt_plan(rp_for(), MAC, INPUTS)
    assert plan.rules == WORKSPACE_WRITE_OFF
    assert plan.params == {
        "WRITABLE_ROOT_0": WS,
        "WRITABLE_ROOT_0_EXCLUDED_0": f"{WS}/.git",
        "WRITABLE_ROOT_0_EXCLUDED_1": f"{WS}/.stockade",
        "PRIVATE_TMP": "/private" + TMP,
        "PROTECTED_ANCESTOR_0": WS,
        "PROTECTED_ANCESTOR_1": f"{WS}/.git",
        "PROTECTED_ANCESTOR_2": f"{WS}/.stockade",
    }
    sbpl.check(plan.profile, plan.params)


def test_golden_read_only() -> None:
    plan = seatbelt_plan(rp_for(Mode.READ_ONLY), MAC, INPUTS)
    assert plan.rules == READ_ONLY_OFF
    assert plan.params == {"PRIVATE_TMP": "/private" + TMP}
    sbpl.check(plan.profile, plan.params)


def test_golden_network_on() -> None:
    plan = seatbelt_plan(rp_for(network=NetworkMode.ON), MAC, INPUTS)
    assert plan.rules == WORKSPACE_WRITE_OFF.replace(
        ";; network: off (deny default covers every socket operation)\n", NETWORK_ON_TAIL)
    assert plan.params["DARWIN_USER_CACHE_DIR"] == "/private/var/folders/zz/abc/C"
    assert "com.apple.trustd.agent" in plan.rules  # Go TLS
    sbpl.check(plan.profile, plan.params)


def test_golden_allowlist_only_proxy_port() -> None:
    plan = seatbelt_plan(rp_for(network=NetworkMode.ALLOWLIST), MAC, INPUTS)
    assert plan.rules.endswith(ALLOWLIST_TAIL)
    assert plan.params["PROXY_PORT"] == "3128"
    assert "com.apple.trustd.agent" not in plan.rules and "network-inbound" not in plan.rules
    assert "(allow network-outbound)" not in plan.rules
    sbpl.check(plan.profile, plan.params)


def test_allowlist_without_proxy_port_fails_closed() -> None:
    plan = seatbelt_plan(rp_for(network=NetworkMode.ALLOWLIST), MAC, MacosInputs(private_tmp=TMP))
    assert "PROXY_PORT" not in plan.params
    assert "remote ip" not in plan.rules
    assert any("fail closed" in n for n in plan.notes)
    sbpl.check(plan.profile, plan.params)


def test_host_tmp_mode_grants_shared_tmp_dirs() -> None:
    plan = seatbelt_plan(rp_for(tmp=TmpMode.HOST), MAC, INPUTS)
    assert plan.params["HOST_TMP"] == "/private/tmp"
    assert plan.params["HOST_VAR_TMP"] == "/private/var/tmp"
    assert plan.params["DARWIN_USER_TEMP_DIR"] == "/private/var/folders/zz/abc/T"
    assert "PRIVATE_TMP" not in plan.params
    assert "Unix sockets" not in plan.rules  # no private dir: no Unix socket binding at all
    sbpl.check(plan.profile, plan.params)


def test_full_access_has_no_profile() -> None:
    with pytest.raises(ValueError, match="full-access"):
        seatbelt_plan(rp_for(Mode.FULL_ACCESS), MAC, INPUTS)


def test_argv_shape() -> None:
    plan = seatbelt_plan(rp_for(), MAC, INPUTS)
    argv = plan.argv(["git", "status"])
    assert argv[:3] == [SANDBOX_EXEC, "-p", plan.profile]
    assert argv[-3:] == ["--", "git", "status"]
    assert argv[3:-3] == [f"-D{k}={v}" for k, v in plan.params.items()]
    assert SANDBOX_EXEC == "/usr/bin/sandbox-exec"


def test_base_profile_denies_by_default_and_is_well_formed() -> None:
    forms = sbpl.parse(base_profile())
    assert forms[0] == [sbpl.Sym("version"), 1]
    assert forms[1] == [sbpl.Sym("deny"), sbpl.Sym("default")]
    assert sbpl.params_referenced(forms) == set()  # the base names no path of the user's
    text = base_profile()
    for needed in ("process-fork", "(target same-sandbox)", "ipc-posix-sem", "hw.ncpu", "kern.proc.pid.",
                   "com.apple.system.opendirectoryd.libinfo", "mach-host*", "pseudo-tty", "/dev/ptmx",
                   "__KMP_REGISTERED_LIB_", "kern.grade_cputype"):
        assert needed in text
    assert "trustd" not in text  # only with the network on


def test_deny_read_paths_are_unreadable_and_unwritable() -> None:
    plan = seatbelt_plan(rp_for(deny=("/Users/u/.ssh", "/etc/shadow")), MAC, INPUTS)
    assert plan.params["DENY_READ_0"] == "/Users/u/.ssh"
    assert plan.params["DENY_READ_1"] == "/private/etc/shadow"
    read_deny = '(deny file-read*\n  (subpath (param "DENY_READ_0"))\n  (subpath (param "DENY_READ_1")))'
    write_deny = read_deny.replace("file-read*", "file-write*")
    assert read_deny in plan.rules and write_deny in plan.rules
    assert plan.rules.index("(allow file-read*)") < plan.rules.index(read_deny)  # later rules win
    assert plan.rules.index("(allow file-write*") < plan.rules.index(write_deny)
    sbpl.check(plan.profile, plan.params)


def test_glob_deny_read_becomes_anchored_regex() -> None:
    assert glob_regex("/private/etc/ssh/ssh_host_*_key") == r"^/private/etc/ssh/ssh_host_[^/]*_key(/.*)?$"
    assert glob_regex("/a/**/b?.txt") == r"^/a/(.*/)?b[^/]\.txt(/.*)?$"
    rx = re.compile(glob_regex("/private/etc/ssh/ssh_host_*_key"))
    assert rx.match("/private/etc/ssh/ssh_host_ed25519_key")
    assert not rx.match("/private/etc/ssh/ssh_host_ed25519_key.pub")
    assert not rx.match("/private/etc/ssh/x/ssh_host_a_key")
    rp = resolve_for_macos(SandboxPolicy(workspace=WS, deny_read=("/etc/ssh/ssh_host_*_key",)), MAC)
    plan = seatbelt_plan(rp, MAC, INPUTS)
    assert '(regex (param "DENY_READ_0"))' in plan.rules
    assert plan.params["DENY_READ_0"].startswith("^/private/etc/ssh/")
    sbpl.check(plan.profile, plan.params)


@pytest.mark.parametrize("path, expected", [
    ("/var/folders/x", "/private/var/folders/x"),
    ("/var", "/private/var"),
    ("/tmp/a/../b", "/private/tmp/b"),
    ("/etc/hosts", "/private/etc/hosts"),
    ("/private/var/x", "/private/var/x"),  # idempotent on real paths
    ("/variable/x", "/variable/x"),  # a prefix of a name is not a firmlink
    ("//Users//u/./p/", "/Users/u/p"),
])
def test_canonical(path: str, expected: str) -> None:
    assert canonical(path) == expected
    assert canonical(canonical(path)) == canonical(path)


TRICKY = [
    '/Users/u/my project',
    '/Users/u/quote"d',
    "/Users/u/it's",
    '/Users/u/paren) (allow default) (',
    '/Users/u/semi;colon',
    '/Users/u/back\\slash',
    '/Users/u/new\nline',
    '/Users/u/ünïcødé/日本語',
    '/Users/u/param "X")',
    '/Users/u/#"regex"',
]


@pytest.mark.parametrize("ws", TRICKY)
def test_tricky_paths_travel_only_as_parameters(ws: str) -> None:
    """The profile text is the same whatever the paths are: no injection is possible."""
    reference = seatbelt_plan(rp_for(), MAC, INPUTS)
    tricky = rp_for(writable=(ws, f"{ws}/sub dir"), protected=(f"{ws}/.git", f"{ws}/sub dir/.git"),
                    deny=(f"{ws}/secret (1)",))
    plan = seatbelt_plan(tricky, MAC, INPUTS)
    forms = sbpl.check(plan.profile, plan.params)
    literals = sbpl.strings(forms)
    assert all(ws not in s for s in literals)
    assert plan.params["WRITABLE_ROOT_0"] == ws
    assert plan.params["WRITABLE_ROOT_1"] == f"{ws}/sub dir"
    assert plan.params["WRITABLE_ROOT_0_EXCLUDED_1"] == f"{ws}/sub dir/.git"  # nested root's .git under both
    assert plan.params["WRITABLE_ROOT_1_EXCLUDED_0"] == f"{ws}/sub dir/.git"
    # Same structure as a plain path apart from the extra root/deny rules:
    assert reference.rules.splitlines()[0] == plan.rules.splitlines()[0]
    for arg in plan.param_args():
        name, _, value = arg[2:].partition("=")
        assert plan.params[name] == value  # -DNAME=VALUE splits at the first '='


def test_equals_sign_and_nul_in_paths() -> None:
    plan = seatbelt_plan(rp_for(writable=("/Users/u/a=b",), protected=()), MAC, INPUTS)
    assert "-DWRITABLE_ROOT_0=/Users/u/a=b" in plan.param_args()
    with pytest.raises(ValueError, match="NUL"):
        seatbelt_plan(rp_for(writable=("/Users/u/a\0b",), protected=()), MAC, INPUTS)


def test_missing_protected_paths_are_excluded_before_they_exist() -> None:
    rp = resolve_for_macos(SandboxPolicy(workspace=WS, deny_read=()), MAC)
    assert [p.kind for p in rp.protected] == ["unknown", "unknown"]
    plan = seatbelt_plan(rp, MAC, INPUTS)
    assert '(require-not (literal (param "WRITABLE_ROOT_0_EXCLUDED_0")))' in plan.rules  # no mkdir .git
    assert '(require-not (subpath (param "WRITABLE_ROOT_0_EXCLUDED_0")))' in plan.rules  # nothing inside
    assert plan.params["WRITABLE_ROOT_0_EXCLUDED_0"] == f"{WS}/.git"


def test_gitdir_target_ancestors_cannot_be_renamed() -> None:
    other = "/Users/u/main"
    rp = rp_for(writable=(WS, other), protected=(f"{WS}/.git", f"{other}/.git/worktrees/proj"))
    plan = seatbelt_plan(rp, MAC, INPUTS)
    ancestors = [v for k, v in plan.params.items() if k.startswith("PROTECTED_ANCESTOR_")]
    assert ancestors == [other, WS, f"{other}/.git", f"{WS}/.git", f"{other}/.git/worktrees",
                         f"{other}/.git/worktrees/proj"]
    assert plan.params["WRITABLE_ROOT_1_EXCLUDED_0"] == f"{other}/.git/worktrees/proj"


def test_protected_outside_writable_roots_is_noted_not_excluded() -> None:
    plan = seatbelt_plan(rp_for(protected=("/Users/u/elsewhere/.git",)), MAC, INPUTS)
    assert "EXCLUDED" not in " ".join(plan.params)
    assert any("outside every writable root" in n for n in plan.notes)


def test_paper_resolution_for_macos() -> None:
    policy = SandboxPolicy(workspace="/var/folders/p/ws", writable_roots=("~/cache", "rel"),
                           deny_read=("~/.ssh", "/etc/sudoers"))
    rp = resolve_for_macos(policy, MAC, cwd="sub")
    assert rp.workspace == "/private/var/folders/p/ws"
    assert rp.cwd == "/private/var/folders/p/ws/sub"
    assert rp.writable == ("/Users/u/cache", "/private/var/folders/p/ws", "/private/var/folders/p/ws/rel")
    assert [d.path for d in rp.deny_read] == ["/Users/u/.ssh", "/private/etc/sudoers"]
    assert rp.problems == ()
    ro = resolve_for_macos(policy.replace(mode=Mode.READ_ONLY), MAC)
    assert ro.writable == () and ro.protected == ()


def test_symlinked_workspace_is_granted_at_its_real_path(tmp_path: Path) -> None:
    """On a Mac the input is a real resolve: a workspace reached through a symlink is granted at its target."""
    real = tmp_path / "real ws"
    (real / ".git").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    (real / "escape").symlink_to("/etc")
    host = HostFacts(platform="macos", home=str(tmp_path))
    rp = resolve(SandboxPolicy(workspace=str(link), deny_read=()), host)
    plan = seatbelt_plan(rp, host, INPUTS)
    assert plan.params["WRITABLE_ROOT_0"] == canonical(os.path.realpath(real))
    assert plan.params["WRITABLE_ROOT_0_EXCLUDED_0"] == canonical(os.path.realpath(real / ".git"))
    assert all(str(link) != v for v in plan.params.values())
    sbpl.check(plan.profile, plan.params)


MODES = [m for m in Mode if m is not Mode.FULL_ACCESS]


@pytest.mark.parametrize("mode, network, tmp, inputs", list(itertools.product(
    MODES, list(NetworkMode), list(TmpMode),
    [INPUTS, MacosInputs(), MacosInputs(private_tmp=TMP, proxy_port=1)])))
def test_every_profile_is_well_formed(mode: Mode, network: NetworkMode, tmp: TmpMode, inputs: MacosInputs) -> None:
    policy = SandboxPolicy(mode=mode, workspace=WS, writable_roots=("/Users/u/w2", "/tmp/x"),
                           network=NetworkPolicy(mode=network), tmp=tmp)
    rp = resolve_for_macos(policy, MAC)
    plan = seatbelt_plan(rp, MAC, inputs)
    sbpl.check(plan.profile, plan.params)
    for value in plan.params.values():
        assert not value.startswith(("/var/", "/tmp/", "/etc/")), value


class TestParser:
    def test_rejects_unbalanced(self) -> None:
        with pytest.raises(sbpl.SbplError):
            sbpl.parse("(version 1)\n(allow file-read*")
        with pytest.raises(sbpl.SbplError):
            sbpl.parse("(version 1))")

    def test_rejects_unterminated_string(self) -> None:
        with pytest.raises(sbpl.SbplError):
            sbpl.parse('(version 1)\n(allow file-read* (literal "/x))')

    def test_reads_strings_regexes_comments(self) -> None:
        forms = sbpl.parse('(version 1) ; c ( )\n(allow file-read* (literal "a\\"b") (regex #"^/x$"))')
        assert forms[1][2] == [sbpl.Sym("literal"), sbpl.Str('a"b')]
        assert forms[1][3] == [sbpl.Sym("regex"), sbpl.Regex("^/x$")]

    def test_missing_and_unused_parameters(self) -> None:
        text = '(version 1)\n(allow file-write* (subpath (param "A")))'
        sbpl.check(text, {"A": "/x"})
        with pytest.raises(sbpl.SbplError, match="not supplied"):
            sbpl.check(text, {})
        with pytest.raises(sbpl.SbplError, match="never referenced"):
            sbpl.check(text, {"A": "/x", "B": "/y"})

    def test_unknown_operation(self) -> None:
        with pytest.raises(sbpl.SbplError, match="unknown operation"):
            sbpl.check("(version 1)\n(allow file-wrte*)", {})

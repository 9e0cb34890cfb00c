"""The Windows backend: a dedicated sandbox user, a write-restricted token, ACL grants and denies, a job object.

The plan comes from `policies.compile.windows` (pure; read its docstring for
the why of each step). Execution happens in two stages of a small runner,
`python -m sandbox.backends.windows`, which the engine's Windows supervisor
(`sandbox.execute_windows`: its own job object, pipes read by threads, exit
code from the process handle) launches like any other command:

1. `--run PLAN -- CMD` (as the caller): applies the plan's ACEs (grants are
   inheritable and stay, so later runs skip the tree walk; placeholders for
   missing protected paths are removed afterwards when still empty), makes
   a job object (kill on close, no breakaway, process and memory limits),
   starts stage 2 as the sandbox user with `CreateProcessWithLogonW`
   (password kept DPAPI-encrypted for the caller, see `--store-credential`)
   suspended, assigns it to the job, resumes it and waits. When the runner
   dies (timeout, cancel), its job handle closes and the whole tree dies.
2. `--confine PLAN -- CMD` (as the sandbox user, inside the job): makes
   `CreateRestrictedToken(DISABLE_MAX_PRIVILEGE | LUA_TOKEN |
   WRITE_RESTRICTED)` from its own token with the capability SIDs and the
   logon SID as restricting SIDs, and starts CMD with `CreateProcessAsUserW`
   (a restricted copy of one's own token needs no privilege), stdio
   inherited; it exits with CMD's exit code.

`ctypes.windll` is only touched inside functions that run on Windows, so
this module imports anywhere (`stockade explain --platform windows` on Linux).
Never run on this project's CI; see the README's platform table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from policies.compile.windows import OFFLINE_USER, ONLINE_USER, WindowsPlan, windows_plan
from policies.host import HostFacts
from policies.model import NetworkMode, TmpMode
from policies.resolve import ResolvedPolicy
from sandbox.backends.base import ENFORCED, NOT_APPLICABLE, PROTECTIONS, Backend, Launch, SandboxSetupError


def state_dir() -> str:
    base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    return os.path.join(base, "stockade")


def credential_file(user: str) -> str:
    return os.path.join(state_dir(), f"credential-{user}.bin")


def users_ready() -> bool:
    """Whether the one-time setup stored both sandbox users' credentials (cheap: no Windows API)."""
    return all(os.path.isfile(credential_file(u)) for u in (OFFLINE_USER, ONLINE_USER))


def runtime_dirs() -> tuple[str, ...]:
    """What the runner's Python needs to read as the sandbox user: the interpreter and stockade itself."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return tuple(dict.fromkeys((sys.base_prefix, sys.prefix, here)))


def plan_to_json(plan: WindowsPlan) -> str:
    return json.dumps(dataclasses.asdict(plan))


def plan_from_json(text: str) -> dict[str, Any]:
    return json.loads(text)


class WindowsBackend(Backend):
    name = "windows"

    def unavailable(self, host: HostFacts) -> str | None:
        if host.platform != "windows":
            return "the restricted-token backend exists only on Windows"
        if not users_ready():
            return ("the sandbox users are not set up: run, once, the elevated PowerShell "
                    "`stockade doctor` prints")
        return None

    def protections(self, rp: ResolvedPolicy, host: HostFacts) -> dict[str, str]:
        policy = rp.policy
        out = dict.fromkeys(PROTECTIONS, ENFORCED)
        out["filesystem-write"] = ("enforced: write-restricted token + ACL grants; network shares (UNC) are "
                                   "checked by the server, not the token" if policy.network.mode is NetworkMode.ON
                                   else ENFORCED)
        if not policy.writes_workspace or not rp.protected:
            out["protected-paths"] = NOT_APPLICABLE
        if not rp.deny_read:
            out["deny-read"] = NOT_APPLICABLE
        out["private-tmp"] = ENFORCED if policy.tmp is TmpMode.PRIVATE else NOT_APPLICABLE
        if policy.network.mode is not NetworkMode.ON:
            out["network"] = ("best-effort: a firewall rule blocks the sandbox user's traffic to other hosts; "
                              "Windows Firewall does not filter loopback (127.0.0.1, ::1)")
        out["host-unix-sockets"] = "best-effort: AF_UNIX sockets are files: ACLs apply, not a network boundary"
        out["abstract-unix-sockets"] = NOT_APPLICABLE
        out["process-isolation"] = "enforced: another user's processes cannot be opened or signalled"
        out["syscall-filter"] = "best-effort: no syscall filter on Windows; LUA token, no privileges"
        out["no-capabilities"] = "enforced: DISABLE_MAX_PRIVILEGE (only SeChangeNotifyPrivilege remains)"
        out["tree-kill"] = "enforced: job object, kill on close, no breakaway"
        return out

    def plan(self, rp: ResolvedPolicy, host: HostFacts, private_tmp: str | None,
             proxy: object | None = None) -> WindowsPlan:
        from sandbox.backends.seatbelt import proxy_port

        port = proxy_port(proxy) if rp.policy.network.mode is NetworkMode.ALLOWLIST else None
        return windows_plan(rp, host, private_tmp=private_tmp, proxy_port=port, users_ready=users_ready(),
                            runtime=runtime_dirs())

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
            raise SandboxSetupError("full-access runs with the 'none' backend")
        reason = self.unavailable(host)
        if reason:
            raise SandboxSetupError(reason)
        private = tempfile.mkdtemp(prefix="stockade-tmp-") if rp.policy.tmp is TmpMode.PRIVATE else None
        plan = self.plan(rp, host, private, proxy)
        if plan.problems:
            if private:
                _rmtree(private)
            raise SandboxSetupError("cannot confine this policy on Windows:\n  " + "\n  ".join(plan.problems))
        control = tempfile.mkdtemp(prefix="stockade-plan-")
        plan_path = os.path.join(control, "plan.json")
        with open(plan_path, "w", encoding="utf-8") as fh:
            fh.write(plan_to_json(plan))

        def cleanup() -> None:
            for path in (control, private):
                if path:
                    _rmtree(path)

        child_env = {**env, **plan.env}
        if private:
            child_env["TMPDIR"] = private  # build_env's POSIX "/tmp" means nothing here
        return Launch(argv=[sys.executable, "-m", "sandbox.backends.windows", "--run", plan_path, "--", *argv],
                      env=child_env, cwd=rp.cwd, preexec_fn=None, cleanup=cleanup, kills_tree=True,
                      protections=self.protections(rp, host), warnings=list(plan.notes))


def env_block(env: dict[str, str] | os._Environ[str]) -> str:
    """A CreateProcess environment block: `K=V` entries sorted case-insensitively, each NUL-ended, then a NUL."""
    items = sorted(((k, v) for k, v in env.items() if k and "=" not in k[1:] and "\0" not in k + v),
                   key=lambda kv: kv[0].upper())
    return "".join(f"{k}={v}\0" for k, v in items) + "\0"


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- Win32 through ctypes (Windows only)

SE_FILE_OBJECT = 1
DACL_SECURITY_INFORMATION = 0x4
GRANT_ACCESS, DENY_ACCESS = 1, 3
TRUSTEE_IS_SID, TRUSTEE_IS_UNKNOWN = 0, 0
NO_MULTIPLE_TRUSTEE = 0
TOKEN_ALL_FOR_RESTRICT = 0x0001 | 0x0002 | 0x0008 | 0x0080 | 0x0100 | 0x0020  # assign, dup, query, dflt, sess, adj
TOKEN_GROUPS_CLASS = 2
SE_GROUP_LOGON_ID = 0xC0000000
CREATE_SUSPENDED = 0x4
CREATE_UNICODE_ENVIRONMENT = 0x400
CREATE_BREAKAWAY_FROM_JOB = 0x01000000
STARTF_USESTDHANDLES = 0x100
LOGON_WITH_PROFILE = 0x1
INFINITE = 0xFFFFFFFF
JobObjectExtendedLimitInformation = 9
STD_HANDLES = (-10, -11, -12)


def _win() -> Any:
    """The Win32 DLLs and structures, built on first use (never on import: there is no windll off Windows)."""
    import ctypes
    from ctypes import wintypes as w

    class TRUSTEE_W(ctypes.Structure):
        _fields_ = [("pMultipleTrustee", ctypes.c_void_p), ("MultipleTrusteeOperation", ctypes.c_int),
                    ("TrusteeForm", ctypes.c_int), ("TrusteeType", ctypes.c_int), ("ptstrName", ctypes.c_void_p)]

    class EXPLICIT_ACCESS_W(ctypes.Structure):
        _fields_ = [("grfAccessPermissions", w.DWORD), ("grfAccessMode", ctypes.c_int),
                    ("grfInheritance", w.DWORD), ("Trustee", TRUSTEE_W)]

    class SID_AND_ATTRIBUTES(ctypes.Structure):
        _fields_ = [("Sid", ctypes.c_void_p), ("Attributes", w.DWORD)]

    class STARTUPINFOW(ctypes.Structure):
        _fields_ = [("cb", w.DWORD), ("lpReserved", w.LPWSTR), ("lpDesktop", w.LPWSTR), ("lpTitle", w.LPWSTR),
                    ("dwX", w.DWORD), ("dwY", w.DWORD), ("dwXSize", w.DWORD), ("dwYSize", w.DWORD),
                    ("dwXCountChars", w.DWORD), ("dwYCountChars", w.DWORD), ("dwFillAttribute", w.DWORD),
                    ("dwFlags", w.DWORD), ("wShowWindow", w.WORD), ("cbReserved2", w.WORD),
                    ("lpReserved2", ctypes.c_void_p), ("hStdInput", w.HANDLE), ("hStdOutput", w.HANDLE),
                    ("hStdError", w.HANDLE)]

    class PROCESS_INFORMATION(ctypes.Structure):
        _fields_ = [("hProcess", w.HANDLE), ("hThread", w.HANDLE), ("dwProcessId", w.DWORD),
                    ("dwThreadId", w.DWORD)]

    class IO_COUNTERS(ctypes.Structure):
        _fields_ = [(n, ctypes.c_ulonglong) for n in ("r", "w", "o", "rb", "wb", "ob")]

    class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):
        _fields_ = [("PerProcessUserTimeLimit", ctypes.c_longlong), ("PerJobUserTimeLimit", ctypes.c_longlong),
                    ("LimitFlags", w.DWORD), ("MinimumWorkingSetSize", ctypes.c_size_t),
                    ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", w.DWORD),
                    ("Affinity", ctypes.c_size_t), ("PriorityClass", w.DWORD), ("SchedulingClass", w.DWORD)]

    class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):
        _fields_ = [("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION), ("IoInfo", IO_COUNTERS),
                    ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                    ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]

    class DATA_BLOB(ctypes.Structure):
        _fields_ = [("cbData", w.DWORD), ("pbData", ctypes.POINTER(ctypes.c_char))]

    ns = dict(locals())
    ns["ctypes"] = ctypes
    ns["k32"] = ctypes.WinDLL("kernel32", use_last_error=True)
    ns["adv"] = ctypes.WinDLL("advapi32", use_last_error=True)
    ns["crypt"] = ctypes.WinDLL("crypt32", use_last_error=True)
    # Handles are pointer-sized: the default int restype would truncate them on 64-bit Windows.
    for fn in ("GetCurrentProcess", "GetStdHandle", "CreateJobObjectW", "LocalFree"):
        getattr(ns["k32"], fn).restype = w.HANDLE
    return type("Win32", (), ns)


def _check(ok: Any, what: str) -> Any:
    import ctypes

    if not ok:
        raise OSError(ctypes.get_last_error(), f"{what} failed: {ctypes.FormatError(ctypes.get_last_error())}")  # type: ignore[attr-defined]
    return ok


def _sid(win: Any, text: str) -> Any:
    ptr = win.ctypes.c_void_p()
    _check(win.adv.ConvertStringSidToSidW(win.ctypes.c_wchar_p(text), win.ctypes.byref(ptr)), f"SID {text}")
    return ptr


def _account_sid(win: Any, name: str) -> Any:
    ctypes = win.ctypes
    size, dom = ctypes.c_ulong(0), ctypes.c_ulong(0)
    use = ctypes.c_int()
    win.adv.LookupAccountNameW(None, name, None, ctypes.byref(size), None, ctypes.byref(dom), ctypes.byref(use))
    buf, dbuf = ctypes.create_string_buffer(size.value), ctypes.create_unicode_buffer(dom.value)
    _check(win.adv.LookupAccountNameW(None, name, buf, ctypes.byref(size), dbuf, ctypes.byref(dom),
                                      ctypes.byref(use)), f"LookupAccountName {name}")
    return buf


def capability_sids() -> dict[str, str]:
    """The persisted random capability SIDs (`S-1-5-21-a-b-c-d`), made on first use."""
    path = os.path.join(state_dir(), "capabilities.json")
    try:
        with open(path, encoding="utf-8") as fh:
            return dict(json.load(fh))
    except (OSError, ValueError):
        return {}


def _bind_caps(names: list[str]) -> dict[str, str]:
    caps = capability_sids()
    missing = [n for n in names if n not in caps]
    if missing:
        for n in missing:
            caps[n] = "S-1-5-21-" + "-".join(str(secrets.randbits(31)) for _ in range(4))
        os.makedirs(state_dir(), exist_ok=True)
        with open(os.path.join(state_dir(), "capabilities.json"), "w", encoding="utf-8") as fh:
            json.dump(caps, fh)
    return caps


def _resolve_sid(win: Any, symbolic: str, caps: dict[str, str]) -> Any:
    if symbolic.startswith("cap:"):
        return _sid(win, caps[symbolic])
    if symbolic.startswith("user:"):
        return _account_sid(win, symbolic[len("user:"):])
    return _sid(win, symbolic)


def apply_ace(win: Any, ace: dict[str, Any], sid: Any) -> None:
    """Merge one ACE into the object's DACL (SetEntriesInAclW + SetNamedSecurityInfoW)."""
    ctypes = win.ctypes
    old_dacl, sd = ctypes.c_void_p(), ctypes.c_void_p()
    err = win.adv.GetNamedSecurityInfoW(ace["path"], SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, None, None,
                                        ctypes.byref(old_dacl), None, ctypes.byref(sd))
    if err:
        raise OSError(err, f"GetNamedSecurityInfo {ace['path']}")
    ea = win.EXPLICIT_ACCESS_W()
    ea.grfAccessPermissions = ace["mask"]
    ea.grfAccessMode = GRANT_ACCESS if ace["allow"] else DENY_ACCESS
    ea.grfInheritance = ace["inherit"]
    ea.Trustee.TrusteeForm = TRUSTEE_IS_SID
    ea.Trustee.TrusteeType = TRUSTEE_IS_UNKNOWN
    ea.Trustee.ptstrName = ctypes.cast(sid, ctypes.c_void_p)
    new_dacl = ctypes.c_void_p()
    err = win.adv.SetEntriesInAclW(1, ctypes.byref(ea), old_dacl, ctypes.byref(new_dacl))
    if err:
        raise OSError(err, f"SetEntriesInAcl {ace['path']}")
    try:
        err = win.adv.SetNamedSecurityInfoW(ace["path"], SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, None, None,
                                            new_dacl, None)
        if err:
            raise OSError(err, f"SetNamedSecurityInfo {ace['path']}")
    finally:
        win.k32.LocalFree(new_dacl)
        win.k32.LocalFree(sd)


def _apply_acl_plan(win: Any, plan: dict[str, Any], caps: dict[str, str]) -> list[str]:
    """Apply grants and denies; returns the placeholder dirs made (to remove after the run)."""
    made: list[str] = []
    for ace in [*plan["grants"], *plan["denies"]]:
        if ace["placeholder"] and not os.path.lexists(ace["path"]):
            os.makedirs(ace["path"])
            made.append(ace["path"])
        if not os.path.lexists(ace["path"]) and not ace["path"].startswith("\\\\.\\"):
            continue  # a deny-read path that does not exist
        apply_ace(win, ace, _resolve_sid(win, ace["sid"], caps))
    return made


def _dpapi(win: Any, data: bytes, protect: bool) -> bytes:
    ctypes = win.ctypes
    src = win.DATA_BLOB(len(data), ctypes.cast(ctypes.create_string_buffer(data, len(data)),
                                               ctypes.POINTER(ctypes.c_char)))
    out = win.DATA_BLOB()
    fn = win.crypt.CryptProtectData if protect else win.crypt.CryptUnprotectData
    _check(fn(ctypes.byref(src), None, None, None, None, 0, ctypes.byref(out)), "DPAPI")
    try:
        return ctypes.string_at(out.pbData, out.cbData)
    finally:
        win.k32.LocalFree(out.pbData)


def store_credential(user: str, password: str) -> None:
    win = _win()
    os.makedirs(state_dir(), exist_ok=True)
    with open(credential_file(user), "wb") as fh:
        fh.write(_dpapi(win, password.encode("utf-16-le"), protect=True))


def _job(win: Any, job: dict[str, Any]) -> Any:
    from policies.compile.windows import JobSpec

    spec = JobSpec(**job)
    handle = _check(win.k32.CreateJobObjectW(None, None), "CreateJobObject")
    info = win.JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
    info.BasicLimitInformation.LimitFlags = spec.limit_flags
    info.BasicLimitInformation.ActiveProcessLimit = spec.active_processes or 0
    info.JobMemoryLimit = spec.job_memory_bytes or 0
    _check(win.k32.SetInformationJobObject(handle, JobObjectExtendedLimitInformation, win.ctypes.byref(info),
                                           win.ctypes.sizeof(info)), "SetInformationJobObject")
    return handle


def _startupinfo(win: Any) -> Any:
    si = win.STARTUPINFOW()
    si.cb = win.ctypes.sizeof(si)
    si.dwFlags = STARTF_USESTDHANDLES
    si.hStdInput, si.hStdOutput, si.hStdError = (win.k32.GetStdHandle(h) for h in STD_HANDLES)
    return si


def _wait(win: Any, pi: Any) -> int:
    ctypes = win.ctypes
    win.k32.WaitForSingleObject(pi.hProcess, INFINITE)
    code = ctypes.c_ulong()
    win.k32.GetExitCodeProcess(pi.hProcess, ctypes.byref(code))
    win.k32.CloseHandle(pi.hThread)
    win.k32.CloseHandle(pi.hProcess)
    return int(code.value)


def run_stage(plan_path: str, command: list[str]) -> int:
    """Stage 1 (the caller): ACLs, job, the sandbox user's runner; returns the command's exit code."""
    import subprocess

    win = _win()
    ctypes = win.ctypes
    with open(plan_path, encoding="utf-8") as fh:
        plan = plan_from_json(fh.read())
    caps = _bind_caps(list(plan["capabilities"]))
    made = _apply_acl_plan(win, plan, caps)
    try:
        job = _job(win, plan["job"])
        user = plan["network"]["run_as"]
        with open(credential_file(user), "rb") as fh:
            password = _dpapi(win, fh.read(), protect=False).decode("utf-16-le")
        confine = [sys.executable, "-m", "sandbox.backends.windows", "--confine", plan_path, "--", *command]
        si, pi = _startupinfo(win), win.PROCESS_INFORMATION()
        # Our environment is the engine's filtered one (proxy variables, TEMP): pass it on explicitly,
        # or the logon would hand stage 2 the sandbox user's default environment instead.
        raw = env_block(os.environ).encode("utf-16-le", "surrogatepass")
        block = ctypes.create_string_buffer(raw, len(raw))  # byte-exact: embedded NULs are the format
        _check(win.adv.CreateProcessWithLogonW(
            user, ".", password, LOGON_WITH_PROFILE, None, subprocess.list2cmdline(confine),
            CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT, block, os.getcwd(), ctypes.byref(si), ctypes.byref(pi)),
            "CreateProcessWithLogonW")
        if not win.k32.AssignProcessToJobObject(job, pi.hProcess):
            win.k32.TerminateProcess(pi.hProcess, 125)
            _check(False, "AssignProcessToJobObject")
        win.k32.ResumeThread(pi.hThread)
        return _wait(win, pi)  # the job handle closes with this process: the tree dies with it
    finally:
        for path in reversed(made):
            try:
                os.rmdir(path)  # only when still empty
            except OSError:
                pass


def confine_stage(plan_path: str, command: list[str]) -> int:
    """Stage 2 (the sandbox user, inside the job): the write-restricted token, then CMD."""
    import subprocess

    win = _win()
    ctypes = win.ctypes
    with open(plan_path, encoding="utf-8") as fh:
        plan = plan_from_json(fh.read())
    caps = capability_sids()
    base = ctypes.c_void_p()
    _check(win.adv.OpenProcessToken(win.k32.GetCurrentProcess(), TOKEN_ALL_FOR_RESTRICT, ctypes.byref(base)),
           "OpenProcessToken")
    sids = []
    for name in plan["token"]["restricting_sids"]:
        sids.append(_logon_sid(win, base) if name == "logon" else _resolve_sid(win, name, caps))
    arr = (win.SID_AND_ATTRIBUTES * len(sids))(*[win.SID_AND_ATTRIBUTES(ctypes.cast(s, ctypes.c_void_p), 0)
                                                  for s in sids])
    from policies.compile.windows import TokenSpec

    flags = TokenSpec(**{**plan["token"], "flags": tuple(plan["token"]["flags"])}).flags_value
    token = ctypes.c_void_p()
    _check(win.adv.CreateRestrictedToken(base, flags, 0, None, 0, None, len(sids), arr, ctypes.byref(token)),
           "CreateRestrictedToken")
    si, pi = _startupinfo(win), win.PROCESS_INFORMATION()
    if not win.adv.CreateProcessAsUserW(token, None, subprocess.list2cmdline(command), None, None, True,
                                        CREATE_UNICODE_ENVIRONMENT, None, None, ctypes.byref(si), ctypes.byref(pi)):
        err = ctypes.get_last_error()
        raise CommandNotRunnable(command[0] if command else "", err, ctypes.FormatError(err).strip())  # type: ignore[attr-defined]
    return _wait(win, pi)


# CreateProcess errors that mean "the command", not "the sandbox": reported like a shell, 127 / 126.
NOT_FOUND_ERRORS = (2, 3)  # ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND
NOT_EXECUTABLE_ERRORS = (5, 193, 216)  # ERROR_ACCESS_DENIED, ERROR_BAD_EXE_FORMAT, ERROR_EXE_MACHINE_TYPE_MISMATCH


class CommandNotRunnable(Exception):
    """The sandbox was built but the command itself could not be started."""

    def __init__(self, program: str, error: int, text: str) -> None:
        super().__init__(f"{program}: {text} (error {error})")
        self.error = error

    @property
    def exit_code(self) -> int:
        return 127 if self.error in NOT_FOUND_ERRORS else 126


def _logon_sid(win: Any, token: Any) -> Any:
    """The token group carrying SE_GROUP_LOGON_ID."""
    ctypes = win.ctypes
    size = ctypes.c_ulong(0)
    win.adv.GetTokenInformation(token, TOKEN_GROUPS_CLASS, None, 0, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value)
    _check(win.adv.GetTokenInformation(token, TOKEN_GROUPS_CLASS, buf, size, ctypes.byref(size)),
           "GetTokenInformation")
    count = ctypes.c_ulong.from_buffer(buf).value
    offset = ctypes.sizeof(ctypes.c_void_p)  # GroupCount is padded to pointer alignment
    groups = (win.SID_AND_ATTRIBUTES * count).from_buffer(buf, offset)
    for g in groups:
        if g.Attributes & SE_GROUP_LOGON_ID == SE_GROUP_LOGON_ID:
            return ctypes.c_void_p(g.Sid)
    raise OSError("the token has no logon SID")


def main(args: list[str]) -> int:
    if args[:1] == ["--store-credential"] and len(args) == 2:
        store_credential(args[1], sys.stdin.readline().rstrip("\r\n"))
        return 0
    if len(args) >= 4 and args[0] in ("--run", "--confine") and args[2] == "--":
        stage = run_stage if args[0] == "--run" else confine_stage
        try:
            return stage(args[1], args[3:])
        except CommandNotRunnable as exc:
            sys.stderr.write(f"stockade: {exc}\n")
            return exc.exit_code
        except OSError as exc:
            sys.stderr.write(f"stockade: windows sandbox setup failed: {exc}\n")
            return 125
    sys.stderr.write("usage: python -m sandbox.backends.windows --run|--confine PLAN -- CMD... "
                     "| --store-credential USER (password on stdin)\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def find_denials(output: bytes, rp: ResolvedPolicy) -> list[Any]:
    """Denials for a Windows run: "Access is denied" names no path reliably, so the generic analysis is used."""
    from sandbox.denials import find_denials as generic

    return generic(output.replace(b"Access is denied", b"Permission denied"), rp)

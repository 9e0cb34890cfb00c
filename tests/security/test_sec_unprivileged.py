"""THREATS.md for an UNPRIVILEGED caller: the same attacks as the rest of this suite, run as a throwaway user.

The rest of tests/security runs as root; most users are not. This module creates a user (`stockadeqa`,
`STOCKADE_UNPRIV_USER` overrides), gives it a fake HOME with fake secrets (unique markers) and a git
workspace under /srv (`STOCKADE_UNPRIV_BASE`), runs `stockade run --json` and `sandbox.Session` AS that
user under `bwrap`, `landlock` and `auto`, in `read-only` and `workspace-write`, and judges every attack
from the host side: victim bytes, what root's listeners received, the user's other process still alive,
the markers absent from what the command printed, processes left on the host.

How the user reaches the interpreter without changing any permission: the test interpreter usually lives
under /root (mode 0700). Each command runs in a private mount namespace (`unshare -m`, gone with the
command) where a tmpfs covers /root and `sys.prefix` is bound back read-only at its own path (so its
libpython, found through RUNPATH, is the right one), then drops to the user with `setpriv` (full capability
bounding set, no no_new_privs: a normal login). The host's mount table, /root and /work are never changed.

Skips (with the reason) when not root, when useradd/userdel/unshare/setpriv are missing, or when the
interpreter is a venv. Attacks that succeed here are `xfail(strict=True)` with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

USER = os.environ.get("STOCKADE_UNPRIV_USER", "stockadeqa")
BASE = Path(os.environ.get("STOCKADE_UNPRIV_BASE", "/srv/stockade-unpriv-test"))
REPO = Path(__file__).resolve().parents[2]
TOOLS = ("useradd", "userdel", "unshare", "setpriv", "mount", "git")
BACKENDS = ("bwrap", "landlock", "auto")
MODES = ("read-only", "workspace-write")
RUN_TIMEOUT = 20  # --timeout of each stockade run (the attacks are quick)


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "Linux only"
    if os.geteuid() != 0:
        return "needs root: it creates a throwaway user and drops to it"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)} (useradd from the passwd package, unshare/setpriv from util-linux)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


# ---------------------------------------------------------------- host-side observation


def snap(root: Path) -> dict[str, tuple[Any, ...]]:
    """Kind, mode, owner, size, mtime and content hash of everything under `root` (or `root` itself)."""
    out: dict[str, tuple[Any, ...]] = {}
    if not os.path.lexists(root):
        return out
    todo = [root]
    while todo:
        p = todo.pop()
        st = os.lstat(p)
        rel = str(p.relative_to(root)) if p != root else "."
        if stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", st.st_mode, st.st_uid, st.st_mtime_ns)
            todo.extend(p.iterdir())
        elif stat.S_ISREG(st.st_mode):
            out[rel] = ("file", st.st_mode, st.st_uid, st.st_nlink, st.st_mtime_ns,
                        hashlib.sha256(p.read_bytes()).hexdigest())
        elif stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p))
        else:
            out[rel] = ("other", st.st_mode)
    return out


def proc_status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def pids_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (never this process)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd:
            found.append(int(d))
    return found


def pids_of_uid(uid: int) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    found.append(int(d))
            except OSError:
                pass
    return found


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    st = proc_status(pid)
    return bool(st) and not st.get("State", "").startswith(("Z", "X"))


class Listener:
    """A root-owned server recording every connection / datagram it receives (what the sandbox reached)."""

    def __init__(self, kind: str, addr: Any) -> None:
        self.hits: list[bytes] = []
        fam = {"tcp4": socket.AF_INET, "udp4": socket.AF_INET, "tcp6": socket.AF_INET6,
               "unix": socket.AF_UNIX}[kind]
        typ = socket.SOCK_DGRAM if kind == "udp4" else socket.SOCK_STREAM
        self.sock = socket.socket(fam, typ)
        if fam != socket.AF_UNIX:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(addr)
        if typ == socket.SOCK_STREAM:
            self.sock.listen(16)
        self.addr = self.sock.getsockname()
        self.kind = kind
        self.stop = False
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                if self.kind == "udp4":
                    data, _ = self.sock.recvfrom(4096)
                    self.hits.append(data)
                    continue
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(1)
            try:
                self.hits.append(b"connected:" + conn.recv(4096))
            except OSError:
                self.hits.append(b"connected:")
            conn.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


# ---------------------------------------------------------------- the throwaway user


@dataclass
class QA:
    user: str
    uid: int
    gid: int
    created: bool
    base: Path
    home: Path
    ws: Path
    outside: Path
    py: str  # the interpreter as the user sees it
    wrapper: Path  # asuser.sh CMD...: runs CMD as the user (private mount ns with the interpreter bound)
    marks: dict[str, str] = field(default_factory=dict)
    started: list[int] = field(default_factory=list)  # pids this module started (killed at the end)

    # -- running as the user ---------------------------------------------------------------------------

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 90,
            cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess[bytes]:
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        full = [str(self.wrapper), "env", *extra, *argv] if extra else [str(self.wrapper), *argv]
        proc = subprocess.Popen(full, cwd=cwd or self.ws, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"{argv[:3]} as {self.user} did not finish in {timeout}s: {err[-2000:]!r}") from None
        cp = subprocess.CompletedProcess(full, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} failed ({proc.returncode}): {out[-2000:]!r} {err[-2000:]!r}")
        return cp

    def stockade(self, script: str, backend: str, mode: str, *, timeout: float = RUN_TIMEOUT,
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None) -> dict[str, Any]:
        """`stockade run --json` of `sh -c script` as the user; the parsed Result (plus `_text`: all output)."""
        argv = ["stockade", "run", "--json", "--backend", backend, "--policy", mode, "--cwd", str(self.ws),
                "--timeout", str(timeout), *extra, "--", "sh", "-c", script]
        cp = self.run(argv, env=env, timeout=timeout + 60)
        try:
            res: dict[str, Any] = json.loads(cp.stdout)
        except ValueError:
            raise AssertionError(f"stockade run gave no JSON (rc {cp.returncode}): {cp.stdout[-1500:]!r} "
                                 f"{cp.stderr[-1500:]!r}") from None
        res["_text"] = (res.get("stdout") or "") + (res.get("stderr") or "") + cp.stderr.decode(errors="replace")
        return res

    def attack_py(self, name: str, code: str) -> str:
        """Write an attack script (root-owned, world-readable) and return the shell words running it."""
        path = self.base / "attacks" / f"{name}.py"
        path.write_text(textwrap.dedent(code))
        path.chmod(0o644)
        return f"{self.py} -I -S {path}"

    def spawn_victim(self, marker: str) -> subprocess.Popen[bytes]:
        """A `sleep` of the same user OUTSIDE any sandbox, with a secret in its environment."""
        proc = subprocess.Popen(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                                 "env", "-i", f"VICTIM_SECRET={marker}", "sleep", "300"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.home)
        self.started.append(proc.pid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc_status(proc.pid).get("Uid", "").split()[:1] != [str(self.uid)]:
            time.sleep(0.02)
        return proc

    def secret_markers(self) -> list[str]:
        return [self.marks[k] for k in ("ssh", "aws", "netrc", "gnupg")]


def _reachable() -> list[Path]:
    """What the user must read: the interpreter's prefix, a venv's (`.ci/run` uses one), the checkout."""
    paths = [Path(p).resolve() for p in dict.fromkeys((sys.base_prefix, sys.prefix))]
    repo = REPO.resolve()
    if not any(repo == p or repo in p.parents or p in repo.parents for p in paths):
        paths.append(repo)
    elif not any(repo == p or p in repo.parents for p in paths):  # a venv inside the checkout: bind the checkout
        paths = [p for p in paths if repo not in p.parents] + [repo]
    return paths


def _mounts(spare: Path) -> str:
    """Shell commands (run as root in the private mount namespace) that let the user reach `_reachable()`.

    When an ancestor of such a path is closed to others (/root is 0700, a `mktemp -d` checkout's parent),
    the path is bind-mounted aside, a tmpfs covers that ancestor (in this namespace only) and the path is
    bound back read-only at its own place: the interpreter finds its libpython (RUNPATH) and stdlib exactly
    where they were built for. A path closed itself (a 0700 checkout) is opened for the module's run by the
    fixture (see `_opened`), not here.
    """
    steps: list[str] = []
    covered: list[Path] = []
    backs: list[str] = []
    for i, path in enumerate(_reachable()):
        closed = next((p for p in reversed(path.parents) if p != Path("/") and not os.stat(p).st_mode & 0o001),
                      None)
        if closed is None:
            continue
        aside = spare / str(i)
        steps.append(f"mkdir -p {aside} && mount --bind {path} {aside}")
        if closed not in covered:
            covered.append(closed)
        backs.append(f"mkdir -p {path} && mount --bind -o ro {aside} {path}")
    steps += [f"mount -t tmpfs -o mode=0755,size=1m stockade-qa {c}" for c in covered] + backs
    return "".join(f"{step} && " for step in steps)


def _opened() -> list[tuple[Path, int]]:
    """Paths to reach that are closed to others themselves: opened (o+rx) for the module, restored after."""
    changed = []
    for path in _reachable():
        mode = os.stat(path).st_mode
        if mode & 0o005 != 0o005:
            os.chmod(path, stat.S_IMODE(mode) | 0o005)
            changed.append((path, stat.S_IMODE(mode)))
    return changed


def _write(path: Path, text: str, uid: int, gid: int, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chown(path, uid, gid)
    path.chmod(mode)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [dirpath, *(os.path.join(dirpath, x) for x in dirnames + filenames)]:
            os.lchown(n, uid, gid)


@pytest.fixture(scope="module")
def qa() -> Iterator[QA]:
    if BASE.exists():  # a crashed earlier run: only our own tree lives here
        shutil.rmtree(BASE)
    BASE.mkdir(parents=True)
    BASE.chmod(0o755)
    created = False
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-U", "-d", str(BASE / "home"), "-s", "/bin/bash", USER], check=True,
                       capture_output=True)
        created = True
        pw = pwd.getpwnam(USER)
    uid, gid = pw.pw_uid, pw.pw_gid
    home, pyb = BASE / "home", BASE / "py"
    q = QA(USER, uid, gid, created, BASE, home, home / "ws", BASE / "outside",
           sys.executable, BASE / "asuser.sh")
    opened = _opened()
    try:
        tag = secrets.token_hex(6)
        q.marks = {k: f"{k.upper()}MARK-{tag}" for k in ("ssh", "aws", "netrc", "gnupg", "env", "dot")}
        for d in ("py", "bin", "attacks", "sock", "cfg"):
            (BASE / d).mkdir()
            (BASE / d).chmod(0o755)
        # the interpreter for the user: see the module docstring
        q.wrapper.write_text(textwrap.dedent(f"""\
            #!/bin/sh
            exec unshare -m --propagation private sh -c '{_mounts(pyb)} \\
              exec setpriv --reuid={uid} --regid={gid} --init-groups env -i HOME={home} USER={USER} \\
              LOGNAME={USER} LANG=C.UTF-8 PATH={BASE}/bin:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin \\
              "$@"' sh "$@"
            """))
        q.wrapper.chmod(0o755)
        (BASE / "bin" / "stockade").write_text(
            f"#!/bin/sh\nexec {sys.executable} -c "
            "'import sys; from agent.cli import main; sys.argv[0] = \"stockade\"; sys.exit(main())' \"$@\"\n")
        (BASE / "bin" / "stockade").chmod(0o755)
        # the fake home: secrets with unique markers, dotfiles, a git workspace
        home.mkdir(mode=0o700)
        os.chown(home, uid, gid)
        m = q.marks
        _write(home / ".ssh" / "id_rsa", f"-----BEGIN OPENSSH PRIVATE KEY-----\n{m['ssh']}\n", uid, gid, 0o600)
        _write(home / ".aws" / "credentials", f"[default]\naws_secret_access_key = {m['aws']}\n", uid, gid, 0o600)
        _write(home / ".netrc", f"machine example.com login me password {m['netrc']}\n", uid, gid, 0o600)
        _write(home / ".gnupg" / "private-keys-v1.d" / "k.key", f"{m['gnupg']}\n", uid, gid, 0o600)
        for dot in (".bashrc", ".profile", ".gitconfig"):
            _write(home / dot, f"# {dot} {m['dot']}\n", uid, gid)
        _chown_tree(home, uid, gid)
        q.outside.mkdir()
        _write(q.outside / "victim.txt", "outside victim\n", uid, gid, 0o666)
        _write(q.outside / "keep.txt", "keep me\n", uid, gid)
        _chown_tree(q.outside, uid, gid)  # the user may write it: only the sandbox must stop it
        q.ws.mkdir()
        _write(q.ws / "a.txt", "tracked\n", uid, gid)
        _write(q.ws / "test_ok.py", "def test_ok():\n    assert 1 + 1 == 2\n", uid, gid)
        os.chown(q.ws, uid, gid)
        git = "git -c user.email=qa@example.invalid -c user.name=qa"
        q.run(["sh", "-c", f"git init -q . && git add -A && {git} commit -qm init"], check=True)
        yield q
    finally:
        for path, mode in opened:
            os.chmod(path, mode)
        kill_pids(q.started)
        if created:  # every process of the throwaway user was started by this module
            for _ in range(3):
                left = pids_of_uid(uid)
                if not left:
                    break
                kill_pids(left)
                time.sleep(0.3)
            subprocess.run(["userdel", "-r", USER], capture_output=True)
        else:
            kill_pids(pids_with(str(BASE)))
        shutil.rmtree(BASE, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def outside_state(q: QA) -> dict[str, Any]:
    """What no confined run may change: the dotfiles, the secrets, the outside dir, the home's top level."""
    state: dict[str, Any] = {"outside": snap(q.outside), "secrets": {}, "home": sorted(
        n for n in os.listdir(q.home) if n not in (".cache", ".config", ".local"))}
    for rel in (".bashrc", ".profile", ".gitconfig", ".netrc", ".ssh", ".aws", ".gnupg"):
        state["secrets"][rel] = snap(q.home / rel)
    return state


def git_state(q: QA) -> dict[str, Any]:
    return {"git": snap(q.ws / ".git"), "stockade": snap(q.ws / ".stockade"),
            "top": sorted(os.listdir(q.ws))}


# ---------------------------------------------------------------- doctor and reporting


def test_doctor_as_user(qa: QA) -> None:
    cp = qa.run(["stockade", "doctor", "--json"], check=True)
    facts = json.loads(cp.stdout)
    text = json.dumps(facts)
    assert str(qa.uid) in text or "uid" in text
    human = qa.run(["stockade", "doctor"], check=True).stdout.decode()
    assert f"uid {qa.uid}" in human, human
    assert "bwrap: available" in human and "landlock: available" in human, human


def test_protections_reported(qa: QA, backend: str, mode: str) -> None:
    """What --json says is enforced vs best-effort for an unprivileged caller (the other tests check it holds)."""
    res = qa.stockade("true", backend, mode)
    prot = res["protections"]
    assert res["backend"] == ("bwrap" if backend == "auto" else backend)
    for key in ("filesystem-write", "deny-read", "private-tmp", "network", "host-unix-sockets",
                "abstract-unix-sockets", "process-isolation", "syscall-filter", "no-capabilities"):
        assert prot.get(key) == "enforced", (key, prot)
    assert prot["protected-paths"] == ("enforced" if mode == "workspace-write" else "n/a"), prot
    # no cgroup for this user here: limits come from rlimits, and tree-kill under landlock is best-effort
    assert prot["limits"].startswith(("enforced", "best-effort")), prot
    if res["backend"] == "landlock":
        assert prot["tree-kill"].startswith("best-effort"), prot
    else:
        assert prot["tree-kill"] == "enforced", prot


# ---------------------------------------------------------------- filesystem


def test_write_outside_and_dotfiles(qa: QA, backend: str, mode: str) -> None:
    before = outside_state(qa)
    o, h = qa.outside, qa.home
    script = f"""
        echo pwn > ~/.bashrc; : > ~/.profile; echo pwn >> ~/.gitconfig; echo pwn > ~/.newdot
        mkdir -p ~/.config/autostart 2>/dev/null; echo pwn > ~/.config/autostart/x.desktop
        echo pwn > {o}/victim.txt; : > {o}/keep.txt; chmod 777 {o}/keep.txt; mv {o}/keep.txt {o}/moved
        rm -f {o}/victim.txt; touch {o}/new.txt; ln -s /etc/passwd {o}/lnk; mkdir {o}/dir
        echo pwn > /proc/self/root{o}/victim.txt; cd {o} && echo pwn > victim.txt
        echo pwn > /proc/self/cwd/victim.txt; rm -f {h}/.bashrc; mv {h}/.profile {h}/.profile2
        echo pwn > /var/tmp/../../{o}/new2.txt
        true
    """
    res = qa.stockade(textwrap.dedent(script), backend, mode)
    after = outside_state(qa)
    assert after == before, f"{backend}/{mode} changed files outside the workspace: {res['_text'][-1500:]}"
    assert not (h / ".config" / "autostart").exists()
    assert res["protections"]["filesystem-write"] == "enforced"


def test_workspace_write_respects_mode(qa: QA, backend: str, mode: str) -> None:
    before = snap(qa.ws)
    res = qa.stockade("echo new > inside.txt; echo more >> a.txt; cat inside.txt", backend, mode)
    try:
        if mode == "read-only":
            assert snap(qa.ws) == before, res["_text"]
        else:  # must work
            assert (qa.ws / "inside.txt").read_bytes() == b"new\n", res["_text"]
            assert (qa.ws / "a.txt").read_bytes() == b"tracked\nmore\n"
            assert os.stat(qa.ws / "inside.txt").st_uid == qa.uid  # the user's own file on the host
            assert res["stdout"] == "new\n"
    finally:
        (qa.ws / "inside.txt").unlink(missing_ok=True)
        _write(qa.ws / "a.txt", "tracked\n", qa.uid, qa.gid)


def test_protected_paths(qa: QA, backend: str, mode: str) -> None:
    before = git_state(qa)
    script = """
        echo '[core]\n\tfsmonitor = touch /tmp/pwn' >> .git/config
        printf '#!/bin/sh\\necho pwn\\n' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit
        touch .git/hooks/post-checkout; rm -f .git/HEAD; chmod 777 .git/config
        for o in .git/objects/*/*; do : > "$o"; break; done
        mkdir .stockade; echo 'profile = "full-access"' > .stockade/config.toml
        mkdir -p .stockade 2>/dev/null; echo x > .stockade/config.toml
        mv .git .git-away && mkdir .git && echo pwn > .git/config
        mv .stockade .stockade-away
        true
    """
    res = qa.stockade(textwrap.dedent(script), backend, mode)
    after = git_state(qa)
    assert after == before, f"{backend}/{mode}: protected paths changed: {res['_text'][-1500:]}"
    assert not (qa.ws / ".stockade").exists() and not (qa.ws / ".git-away").exists()


def test_gitdir_file_target_protected(qa: QA, backend: str) -> None:
    """A workspace whose `.git` is a FILE (`gitdir:`, a worktree): the file and its target stay read-only."""
    ws2, store = qa.base / "ws2", qa.base / "outside" / "gitstore"
    try:
        store.mkdir()
        _write(store / "config", "[core]\n", qa.uid, qa.gid)
        (store / "hooks").mkdir()
        _write(qa.outside / "gitstore" / "HEAD", "ref: refs/heads/main\n", qa.uid, qa.gid)
        ws2.mkdir()
        _write(ws2 / ".git", f"gitdir: {store}\n", qa.uid, qa.gid)
        _chown_tree(ws2, qa.uid, qa.gid)
        _chown_tree(store, qa.uid, qa.gid)
        def state() -> tuple[Any, ...]:  # ws2's own mtime moves: the run's mount points come and go
            return snap(store), {k: v for k, v in snap(ws2).items() if k != "."}, sorted(os.listdir(ws2))

        before = state()
        script = (f"cd {ws2}; echo pwn >> {store}/config; echo pwn > {store}/hooks/pre-commit; "
                  "echo 'gitdir: /tmp/evil' > .git; rm -f .git; mv .git .git-old; ln -sfn /tmp .git; true")
        res = qa.stockade(script, backend, "workspace-write", extra=("--writable", str(ws2)))
        assert state() == before, res["_text"]
    finally:
        shutil.rmtree(ws2, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)


def test_read_secrets(qa: QA, backend: str, mode: str) -> None:
    h, ws = qa.home, qa.ws
    # links planted in the workspace beforehand (as the user), for read-only where the command cannot make them
    for name, target in (("lnk_ssh", h / ".ssh" / "id_rsa"), ("lnk_aws", h / ".aws"), ("lnk_home", h)):
        os.symlink(target, ws / name)
        os.lchown(ws / name, qa.uid, qa.gid)
    nlink = os.stat(h / ".netrc").st_nlink
    script = f"""
        cat ~/.ssh/id_rsa ~/.aws/credentials ~/.netrc ~/.gnupg/private-keys-v1.d/k.key
        cat lnk_ssh lnk_aws/credentials lnk_home/.netrc lnk_home/.ssh/id_rsa
        cat /proc/self/root{h}/.ssh/id_rsa /proc/self/root{h}/.netrc /proc/$$/root{h}/.aws/credentials
        cd {h} && cat /proc/self/cwd/.netrc; cd {ws}
        ln -s {h}/.ssh/id_rsa mylink && cat mylink
        ln {h}/.netrc hard && cat hard; ln {h}/.ssh/id_rsa hard2 && cat hard2
        cp -r {h}/.ssh /tmp/s 2>/dev/null; cat /tmp/s/id_rsa; tar cf - -C {h} .ssh .aws .netrc 2>/dev/null | strings
        grep -r MARK {h} 2>/dev/null; find {h} -name '*.key' -exec cat {{}} \\;
        {qa.py} -I -S -c "import os; print(open(os.path.expanduser('~/.netrc')).read())"
        ls -la ~/.ssh ~/.aws
        true
    """
    try:
        res = qa.stockade(textwrap.dedent(script), backend, mode)
    finally:
        for name in ("lnk_ssh", "lnk_aws", "lnk_home", "mylink", "hard", "hard2"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ws / name)
    leaked = [m for m in qa.secret_markers() if m in res["_text"]]
    assert not leaked, f"{backend}/{mode} read secrets {leaked}: {res['_text'][-2000:]}"
    assert os.stat(h / ".netrc").st_nlink == nlink
    assert res["protections"]["deny-read"] == "enforced"


# ---------------------------------------------------------------- network and host sockets


def _host_ip() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: picks the outgoing interface
            ip = s.getsockname()[0]
        return None if ip.startswith("127.") else ip
    except OSError:
        return None


def test_network_off(qa: QA, backend: str, mode: str) -> None:
    tcp = Listener("tcp4", ("0.0.0.0", 0))
    udp = Listener("udp4", ("127.0.0.1", 0))
    tcp6 = None
    with contextlib.suppress(OSError):
        tcp6 = Listener("tcp6", ("::1", 0))
    ip = _host_ip()
    targets = [("127.0.0.1", tcp.addr[1])] + ([(ip, tcp.addr[1])] if ip else [])
    code = f"""
        import socket
        for host, port in {targets!r}:
            try:
                socket.create_connection((host, port), timeout=2).sendall(b"TCP " + host.encode())
                print("connected", host)
            except OSError as e:
                print("tcp refused", host, e)
        if {tcp6.addr[1] if tcp6 else 0}:
            try:
                socket.create_connection(("::1", {tcp6.addr[1] if tcp6 else 0}), timeout=2).sendall(b"TCP6")
                print("connected v6")
            except OSError as e:
                print("tcp6 refused", e)
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(3):
                s.sendto(b"UDP", ("127.0.0.1", {udp.addr[1]}))
        except OSError as e:
            print("udp refused", e)
        try:
            print("DNS-RESOLVED", socket.getaddrinfo("example.com", 80))
        except OSError as e:
            print("dns failed", e)
        for fam, typ in ((socket.AF_PACKET, socket.SOCK_RAW), (socket.AF_INET, socket.SOCK_RAW),
                         (socket.AF_NETLINK, socket.SOCK_RAW)):
            try:
                socket.socket(fam, typ, 0)
                if fam == socket.AF_NETLINK:
                    print("netlink socket ok (namespace-local)")
                else:
                    print("RAW-OPENED", fam)
            except OSError as e:
                print("raw refused", fam, e)
    """
    try:
        res = qa.stockade(qa.attack_py("net", code), backend, mode)
        time.sleep(0.5)
        hits = tcp.hits + udp.hits + (tcp6.hits if tcp6 else [])
    finally:
        tcp.close()
        udp.close()
        if tcp6:
            tcp6.close()
    assert not hits, f"{backend}/{mode}: host listeners reached: {hits} {res['_text'][-1500:]}"
    assert "DNS-RESOLVED" not in res["_text"], res["_text"]
    assert "RAW-OPENED" not in res["_text"], res["_text"]
    assert "refused" in res["stdout"], res["_text"]  # the script did run


def test_host_unix_sockets(qa: QA, backend: str, mode: str) -> None:
    path = qa.base / "sock" / f"host-{secrets.token_hex(3)}.sock"
    pathname = Listener("unix", str(path))
    path.chmod(0o666)  # the user may connect outside the sandbox: only the sandbox must stop it
    abstract_name = f"stockade-unpriv-{secrets.token_hex(4)}"
    abstract = Listener("unix", "\0" + abstract_name)
    code = f"""
        import socket
        for addr in ({str(path)!r}, "\\0" + {abstract_name!r}):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(addr)
                s.sendall(b"in")
                print("UNIX-CONNECTED", repr(addr))
            except OSError as e:
                print("unix refused", repr(addr), e)
    """
    # sanity: the user reaches both outside the sandbox (so a pass below means the sandbox stopped it)
    outside = qa.run(qa.attack_py("unix", code).split())
    try:
        assert outside.stdout.count(b"UNIX-CONNECTED") == 2, outside
        time.sleep(0.3)
        base_hits = len(pathname.hits) + len(abstract.hits)
        res = qa.stockade(qa.attack_py("unix", code), backend, mode)
        time.sleep(0.3)
        assert len(pathname.hits) + len(abstract.hits) == base_hits, \
            f"{backend}/{mode}: host unix sockets reached: {res['_text']}"
        assert "unix refused" in res["stdout"], res["_text"]
    finally:
        pathname.close()
        abstract.close()
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- process and kernel


def _find_sandboxed(marker: str, uid: int, timeout: float = 15) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pids_with(marker):
            st = proc_status(pid)
            if st.get("Uid", "").split()[:1] == [str(uid)] and "sleep" in Path(f"/proc/{pid}/comm").read_text():
                return pid
        time.sleep(0.05)
    return None


def test_capabilities_seen_from_host(qa: QA, backend: str, mode: str) -> None:
    """The sandboxed process's own /proc status, read by root from outside: caps empty, NoNewPrivs, seccomp."""
    mark = f"{secrets.randbelow(10**6) + 10**6}.{secrets.randbelow(10**6)}"
    proc = subprocess.Popen([str(qa.wrapper), "stockade", "run", "--backend", backend, "--policy", mode, "--cwd",
                             str(qa.ws), "--timeout", "20", "--", "sh", "-c", f"exec sleep {mark}"],
                            cwd=qa.ws, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        pid = _find_sandboxed(mark, qa.uid)
        assert pid, f"sandboxed sleep not found: {proc.poll()} {proc.stderr and proc.stderr.read1()!r}"
        st = proc_status(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        kill_pids(pids_with(mark))
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(st[key], 16) == 0, (key, st[key])
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"
    assert st["Uid"].split()[0] == str(qa.uid)  # no uid change on the host


def test_capability_bounding_set(qa: QA, backend: str, mode: str) -> None:
    """README: CapBnd is 0 inside. A non-root caller cannot drop its bounding set without a user namespace."""
    res = qa.stockade("grep -E '^Cap(Bnd|Eff|Prm|Amb)' /proc/self/status", backend, mode)
    vals = dict(line.split(":\t") for line in res["stdout"].splitlines())
    assert all(int(v, 16) == 0 for v in vals.values()), (backend, vals)


def test_signal_ptrace_other_processes(qa: QA, backend: str, mode: str) -> None:
    victim = qa.spawn_victim(qa.marks["env"])
    vpid = victim.pid
    code = f"""
        import ctypes, os, signal
        libc = ctypes.CDLL(None, use_errno=True)
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            try:
                os.kill({vpid}, sig)
                print("KILLED", sig)
            except OSError as e:
                print("kill refused", e)
        print("ptrace", libc.ptrace(16, {vpid}, 0, 0), ctypes.get_errno())
        for f in ("environ", "mem", "maps"):
            try:
                print(open("/proc/{vpid}/" + f, "rb").read(4096))
            except OSError as e:
                print("proc refused", f, e)
        # every process of this uid it can see (the victim, the stockade supervisor under landlock):
        # its environment, and the secrets through its root and cwd (another mount namespace: no covers)
        for pid in [d for d in os.listdir("/proc") if d.isdigit() and int(d) != os.getpid()]:
            for rel in ("environ", "root{qa.home}/.netrc", "cwd/.netrc", "root{qa.home}/.ssh/id_rsa"):
                try:
                    print(pid, rel, open("/proc/" + pid + "/" + rel, "rb").read(4096))
                except OSError:
                    pass
    """
    try:
        res = qa.stockade(qa.attack_py("sig", code) + "; kill -9 -1; kill -STOP -1; true", backend, mode)
        time.sleep(0.3)
        st = proc_status(vpid)
        assert alive(vpid), f"{backend}/{mode}: the user's process outside was killed: {res['_text']}"
        assert st["State"][0] == "S", (st["State"], res["_text"])
        assert st["TracerPid"] == "0"
        assert qa.marks["env"] not in res["_text"], res["_text"]
        assert "kill refused" in res["stdout"], res["_text"]  # the script did run
    finally:
        victim.kill()
        victim.wait()


def test_sandbox_escape_syscalls(qa: QA, backend: str, mode: str) -> None:
    before = outside_state(qa)
    code = f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            os.unshare(os.CLONE_NEWUSER | os.CLONE_NEWNS)
            print("UNSHARE-OK")
            open("/proc/self/setgroups", "w").write("deny")
            open("/proc/self/uid_map", "w").write("0 {qa.uid} 1")
            r = libc.mount(b"none", b"{qa.home}", b"tmpfs", 0, None)
            print("mount", r, ctypes.get_errno())
        except (OSError, AttributeError) as e:
            print("unshare refused", e)
        for name, nr in (("io_uring_setup", 425), ("bpf", 321), ("perf_event_open", 298), ("keyctl", 250),
                         ("userfaultfd", 323), ("init_module", 175), ("chroot", 161), ("pivot_root", 155)):
            r = libc.syscall(nr, 0, 0, 0, 0, 0)
            print(name, r, ctypes.get_errno())
            if r >= 0 and name in ("io_uring_setup", "bpf", "perf_event_open", "userfaultfd"):
                print("SYSCALL-ALLOWED", name)
        try:
            import fcntl, termios
            fd = os.open("/dev/tty", os.O_RDWR)
            fcntl.ioctl(fd, termios.TIOCSTI, b"x")
            print("TIOCSTI-OK")
        except OSError as e:
            print("tiocsti refused", e)
    """
    res = qa.stockade(qa.attack_py("esc", code) + f"; echo pwn > {qa.home}/.bashrc; true", backend, mode)
    assert outside_state(qa) == before, res["_text"]
    assert "UNSHARE-OK" not in res["_text"], f"{backend}/{mode}: nested user namespace: {res['_text']}"
    assert "SYSCALL-ALLOWED" not in res["_text"], res["_text"]
    assert "TIOCSTI-OK" not in res["_text"], res["_text"]


# ---------------------------------------------------------------- leftovers and limits

DAEMON = """
    import os, sys, time
    mark = sys.argv[1]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", mark + "1"])
        os._exit(0)
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", mark + "2"])
    os.execvp("sleep", ["sleep", mark + "3"])
"""


def test_timeout_kills_everything(qa: QA, backend: str, mode: str) -> None:
    mark = f"{secrets.randbelow(10**5) + 10**5}.{secrets.randbelow(10**5)}"
    t0 = time.monotonic()
    try:
        res = qa.stockade(f"setsid sleep {mark}4 & nohup sleep {mark}5 >/dev/null 2>&1 & "
                          + qa.attack_py("daemon", DAEMON) + f" {mark}", backend, mode, timeout=2)
        took = time.monotonic() - t0
        time.sleep(1.0)
        left = pids_with(mark)
        assert res["timed_out"] is True, res
        assert took < 30
        assert not left, (f"{backend}/{mode}: survived the timeout (tree-kill {res['protections']['tree-kill']}): "
                          + ", ".join(Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace") for p in left))
    finally:
        kill_pids(pids_with(mark))


def test_fork_bomb_pids_limit(qa: QA, backend: str) -> None:
    """pids = 64 (user config): forks beyond it fail, the host count of the user's processes stays bounded."""
    cfg = qa.base / "cfg" / "stockade"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text("[limits]\npids = 64\n")
    for p in (cfg, cfg / "config.toml"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    mark = f"{secrets.randbelow(10**5) + 10**5}.{secrets.randbelow(10**5)}"
    code = f"""
        import os, time
        n = 0
        for _ in range(300):
            try:
                pid = os.fork()
            except OSError as e:
                print("fork refused after", n, e)
                break
            if pid == 0:
                os.execvp("sleep", ["sleep", "{mark}"])
            n += 1
        print("forked", n, flush=True)
        time.sleep(30)
    """
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(pids_with(mark)))
            time.sleep(0.1)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    t0 = time.monotonic()
    try:
        res = qa.stockade(qa.attack_py("bomb", code), backend, "workspace-write", timeout=6,
                          env={"XDG_CONFIG_HOME": str(qa.base / "cfg")})
    finally:
        stop.set()
        th.join(2)
        left = pids_with(mark)
        kill_pids(left)
    assert time.monotonic() - t0 < 40
    assert "fork refused after" in res["stdout"], res["_text"]
    assert peak[0] <= 64, f"{backend}: {peak[0]} sandboxed processes at once with pids = 64"
    assert not left, f"{backend}: {len(left)} forks survived the run"


def test_file_size_limit(qa: QA, backend: str) -> None:
    """file_size_mb = 1 (user config): a 4 MiB write in the workspace stops at 1 MiB on the host's disk."""
    cfg = qa.base / "cfg-fsize" / "stockade"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text("[limits]\nfile_size_mb = 1\n")
    for p in (cfg.parent, cfg):
        p.chmod(0o755)
    (cfg / "config.toml").chmod(0o644)
    try:
        res = qa.stockade("head -c 4194304 /dev/zero > big.bin; true", backend, "workspace-write",
                          env={"XDG_CONFIG_HOME": str(cfg.parent)})
        size = os.path.getsize(qa.ws / "big.bin") if (qa.ws / "big.bin").exists() else 0
        assert size <= 1 << 20, f"{backend}: wrote {size} bytes with file_size_mb = 1: {res['_text']}"
    finally:
        (qa.ws / "big.bin").unlink(missing_ok=True)


# ---------------------------------------------------------------- must work


def test_must_work(qa: QA, backend: str, mode: str) -> None:
    host_tmp = Path("/tmp") / f"stockade-unpriv-hostonly-{secrets.token_hex(4)}"
    host_tmp.write_text("host tmp\n")
    host_tmp.chmod(0o644)
    mp = qa.attack_py("mp", """
        import multiprocessing as mp, socket, os
        from multiprocessing import shared_memory
        def sq(x):
            return x * x
        if __name__ == "__main__":
            with mp.Pool(2) as p:
                print("POOL", sum(p.map(sq, range(10))))
            sem = mp.Semaphore(1); sem.acquire(); sem.release()
            shm = shared_memory.SharedMemory(create=True, size=16); shm.buf[0] = 7; print("SHM", shm.buf[0])
            shm.close(); shm.unlink()
            a, b = socket.socketpair(); a.sendall(b"pair"); print("SP", b.recv(4).decode())
            path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "own.sock")
            srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(1)
            c = socket.socket(socket.AF_UNIX); c.connect(path); s, _ = srv.accept(); c.sendall(b"unix")
            print("UNIX", s.recv(4).decode())
            srv6 = socket.socket(); srv6.bind(("127.0.0.1", 0)); srv6.listen(1)
            c = socket.create_connection(srv6.getsockname(), timeout=3); s, _ = srv6.accept(); c.sendall(b"lo")
            print("LOOPBACK", s.recv(2).decode())
    """)
    before = sorted(os.listdir(qa.ws))
    script = f"""
        echo ok > /dev/null && echo DEVNULL
        head -c 4 /dev/zero | od -An -tx1 | tr -d ' \\n'; echo
        head -c 8 /dev/urandom | wc -c
        echo private > /tmp/sbx-{host_tmp.name}; cat /tmp/sbx-{host_tmp.name}; ls /tmp/{host_tmp.name} 2>&1
        git status --short && git log --oneline | wc -l && git diff --stat && echo GIT
        {mp}
        {qa.py} -c "import sys; print('PY', sys.version_info[0])"
    """
    try:
        res = qa.stockade(textwrap.dedent(script), backend, mode)
    finally:
        host_tmp.unlink()
    out = res["stdout"]
    assert "DEVNULL" in out and "00000000" in out and "\n8\n" in out, res["_text"]
    assert "private" in out and "No such file" in res["stderr"] + out, res["_text"]  # own /tmp, host's hidden
    assert not Path(f"/tmp/sbx-{host_tmp.name}").exists()
    assert "GIT" in out, res["_text"]
    assert "POOL 285" in out and "SHM 7" in out and "SP pair" in out and "UNIX unix" in out, res["_text"]
    assert "LOOPBACK lo" in out, res["_text"]
    assert "PY 3" in out, res["_text"]
    assert res["exit_code"] == 0, res["_text"]
    assert sorted(os.listdir(qa.ws)) == before  # no stub files left in the workspace


def test_canary_attacks_work_unconfined(qa: QA) -> None:
    """The suite checks itself: full-access (backend none) as the same user, the attacks above DO succeed."""
    victim = qa.spawn_victim(qa.marks["env"])
    tcp = Listener("tcp4", ("127.0.0.1", 0))
    code = f"""
        import socket
        print(open("/proc/{victim.pid}/environ", "rb").read())
        socket.create_connection(("127.0.0.1", {tcp.addr[1]}), timeout=2).sendall(b"canary")
    """
    try:
        res = qa.stockade("cat ~/.ssh/id_rsa ~/.netrc; " + qa.attack_py("canary", code), "none", "full-access")
        time.sleep(0.3)
        assert qa.marks["ssh"] in res["_text"] and qa.marks["netrc"] in res["_text"], res["_text"]
        assert qa.marks["env"] in res["_text"], res["_text"]
        assert tcp.hits, res["_text"]
    finally:
        victim.kill()
        victim.wait()
        tcp.close()


# ---------------------------------------------------------------- sandbox.Session as the user

SESSION = """
    import json, os, sys
    sys.path.insert(0, {repo!r})
    import sandbox
    from policies import Mode, SandboxPolicy
    from sandbox.session import FileOpError, SessionError
    home, ws, outside, vpid, mode, backend = {home!r}, {ws!r}, {outside!r}, {vpid}, {mode!r}, {backend!r}
    pol = SandboxPolicy(mode=Mode(mode), workspace=ws)
    out = {{}}
    def fileop(name, fn, *a, **kw):
        try:
            r = fn(*a, **kw)
            out[name] = "OK " + (r.data.decode(errors="replace") if hasattr(r, "data") else repr(r))
        except FileOpError as e:
            out[name] = "DENIED " + str(e)
    with sandbox.Session(pol, backend=backend) as s:
        out["backend"], out["protections"] = s.backend, s.protections
        fileop("write_ws", s.write_file, "sess.txt", b"session\\n")
        fileop("read_ws", s.read_file, "a.txt")
        fileop("write_bashrc", s.write_file, home + "/.bashrc", b"pwn\\n")
        fileop("write_dotdot", s.write_file, "../.profile", b"pwn\\n")
        fileop("write_outside", s.write_file, outside + "/victim.txt", b"pwn\\n")
        fileop("write_gitcfg", s.write_file, ".git/config", b"pwn\\n")
        fileop("write_hook", s.write_file, ".git/hooks/pre-commit", b"pwn\\n")
        fileop("write_stockade", s.write_file, ".stockade/config.toml", b"pwn\\n", parents=True)
        fileop("edit_gitcfg", s.apply_edits, [{{"path": ".git/config", "old": "[core]", "new": "[core]\\n# pwn"}}])
        fileop("read_ssh", s.read_file, home + "/.ssh/id_rsa")
        fileop("read_netrc", s.read_file, home + "/.netrc")
        fileop("read_aws_proc", s.read_file, "/proc/self/root" + home + "/.aws/credentials")
        fileop("list_ssh", s.list_dir, home + "/.ssh")
        fileop("search_home", s.search, "MARK", home)
        r = s.exec(["sh", "-c", "echo hi > /tmp/t && cat /tmp/t; cat ~/.ssh/id_rsa ~/.netrc; "
                    "echo pwn > ~/.bashrc; echo pwn >> .git/config; kill -9 %d; "
                    "git status --short >/dev/null && echo GITOK; true" % vpid])
        out["exec1"] = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
        r = s.exec(["cat", "/tmp/t"])  # the session's /tmp persists between commands
        out["exec2"] = r.stdout.decode()
        r = s.exec(sys.argv[1:])  # the network / unix socket attack
        out["exec3"] = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
        r = s.exec(["sh", "-c", "setsid sleep {mark} & sleep {mark}"], timeout=2)
        out["timeout"] = r.timed_out
        try:  # kills the worker too (it is in the sandbox): the session replaces it
            s.exec(["sh", "-c", "kill -9 -1; kill -STOP -1; sleep 1"])
        except SessionError as e:
            out["killall"] = str(e)
        out["after"] = s.exec(["sh", "-c", "echo again"]).stdout.decode()
    print(json.dumps(out))
"""


def test_session_as_user(qa: QA, mode: str, backend: str) -> None:
    victim = qa.spawn_victim(qa.marks["env"])
    tcp = Listener("tcp4", ("127.0.0.1", 0))
    sock = qa.base / "sock" / f"sess-{secrets.token_hex(3)}.sock"
    unix = Listener("unix", str(sock))
    sock.chmod(0o666)
    net = qa.attack_py("sessnet", f"""
        import socket
        for fam, addr in ((socket.AF_INET, ("127.0.0.1", {tcp.addr[1]})), (socket.AF_UNIX, {str(sock)!r})):
            try:
                socket.socket(fam, socket.SOCK_STREAM).connect(addr)
                print("REACHED", addr)
            except OSError as e:
                print("refused", addr, e)
    """)
    mark = f"{secrets.randbelow(10**5) + 10**5}.{secrets.randbelow(10**5)}"
    script = qa.base / "attacks" / "session.py"
    script.write_text(textwrap.dedent(SESSION).format(
        repo=str(REPO), home=str(qa.home), ws=str(qa.ws), outside=str(qa.outside), vpid=victim.pid, mode=mode,
        backend=backend, mark=mark))
    script.chmod(0o644)
    before_out, before_git = outside_state(qa), git_state(qa)
    try:
        cp = qa.run([*qa.py.split(), str(script), *net.split()], timeout=120)
        time.sleep(0.5)
        left = pids_with(mark)
        assert cp.returncode == 0, cp.stderr.decode()[-3000:]
        out = json.loads(cp.stdout.decode().strip().splitlines()[-1])
        text = json.dumps(out)
        assert out["backend"] == ("bwrap" if backend == "auto" else backend)
        # host side
        assert outside_state(qa) == before_out, text
        after_git = git_state(qa)
        after_git["top"] = [n for n in after_git["top"] if n != "sess.txt"]  # the session's own write
        assert after_git == before_git, text
        assert not [m for m in qa.secret_markers() if m in text], text
        assert alive(victim.pid), text
        assert not tcp.hits and not unix.hits, (tcp.hits, unix.hits, text)
        assert not left, f"session command survived its timeout: {left}"
        assert out["timeout"] is True
        assert out["after"] == "again\n", out
        for key in ("write_bashrc", "write_dotdot", "write_outside", "write_gitcfg", "write_hook",
                    "write_stockade", "edit_gitcfg", "read_ssh", "read_netrc", "read_aws_proc"):
            assert out[key].startswith("DENIED"), (key, out[key])
        # must work
        assert out["read_ws"] == "OK tracked\n", out
        assert "hi" in out["exec1"] and "GITOK" in out["exec1"], out["exec1"]
        assert out["exec2"] == "hi\n", out
        assert "refused" in out["exec3"], out["exec3"]
        if mode == "workspace-write":
            assert out["write_ws"].startswith("OK"), out
        else:
            assert out["write_ws"].startswith("DENIED"), out
    finally:
        kill_pids(pids_with(mark))
        victim.kill()
        victim.wait()
        tcp.close()
        unix.close()
        sock.unlink(missing_ok=True)
        (qa.ws / "sess.txt").unlink(missing_ok=True)

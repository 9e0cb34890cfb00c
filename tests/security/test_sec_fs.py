"""THREATS.md "Must be denied", filesystem: every attack is judged by the victim's bytes/mtime/existence."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess

import pytest
from conftest import BASE, CANARY, MIB, PY, Sampler, bind_mount, cmdline_pids, proc_status, snap

# What the command tries on each target file, `{t}` being the target.
FILE_OPS = {
    "write": "echo pwned > {t}",
    "append": "echo pwned >> {t}",
    "truncate": ": > {t}; truncate -s 0 {t}",
    "rename": "mv -f {t} {t}.moved",
    "delete": "rm -f {t}",
    "chmod": "chmod 0777 {t}",
    "chown": "chown 1234:1234 {t}",
    "utimes": "touch -d 2001-01-01 {t}",
    "xattr": f"{PY} -c \"import os; os.setxattr('{{t}}', 'user.pwned', b'1')\"",
    "replace-via-tmpfile": "cp /etc/hostname {t}.new && mv -f {t}.new {t}",
}
# What the command tries in a directory, `{d}` being the directory.
DIR_OPS = {
    "create": ("touch {d}/new; echo x > {d}/new2; mkdir {d}/newdir; ln -s /etc/passwd {d}/newlink; "
               "mkfifo {d}/newfifo; cp /etc/hostname {d}/copy; "
               f"{PY} -c \"import socket; socket.socket(socket.AF_UNIX).bind('{{d}}/newsock')\""),
}
OPS = [*FILE_OPS, *DIR_OPS]


def attack(op: str, files: list, dirs: list) -> str:
    if op in FILE_OPS:
        steps = [FILE_OPS[op].format(t=t) for t in files]
    else:
        steps = [DIR_OPS[op].format(d=d) for d in dirs]
    return "; ".join(f"( {s} ) 2>&1" for s in steps) + "; echo attempted"


@pytest.mark.parametrize("op", OPS)
def test_write_outside_writable_roots(backend, mode, op, box, run_in):
    """The victim outside the workspace and the user's dotfiles keep their bytes, mode and mtime."""
    before_out, before_home = snap(box.outside), snap(box.home)
    r = run_in(backend, mode, attack(op, [box.victim, *box.dotfiles], [box.outside, box.home]))
    assert snap(box.outside) == before_out, f"outside dir changed by {op!r}\n{r.why}"
    assert snap(box.home) == before_home, f"home (dotfiles) changed by {op!r}\n{r.why}"


@pytest.mark.parametrize("op", OPS)
def test_read_only_mode_denies_workspace_writes(backend, op, box, run_in):
    before = snap(box.ws)
    ws = box.ws
    r = run_in(backend, "read-only",
               attack(op, [ws / "README.md", ws / "src" / "app.py", ws / ".git" / "config"], [ws, ws / "src"]))
    assert snap(box.ws) == before, f"read-only workspace changed by {op!r}\n{r.why}"


GIT_ATTACKS = {
    "config-append": "printf '[core]\\n\\thooksPath = /tmp\\n' >> .git/config",
    "config-rewrite": "echo '[core]' > .git/config",
    "hook-overwrite": "printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/pre-commit",
    "hook-create": "printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/post-checkout; chmod +x .git/hooks/post-checkout",
    "objects": "mkdir -p .git/objects/ab; echo x > .git/objects/ab/cdef; git hash-object -w README.md",
    "git-commit": "git -c user.name=x -c user.email=y@z commit -q --allow-empty -m pwned",
    "git-config-cmd": "git config core.fsmonitor 'touch /tmp/pwned'",
    "delete": "rm -rf .git/hooks .git/config .git/HEAD",
    "rename-inside": "mv .git/config .git/config.bak; mv .git/hooks .git/hooks.bak",
    "chmod": "chmod -R 0777 .git",
    "git-via-symlink": "ln -s .git g; echo pwned > g/config; echo pwned > g/hooks/pre-commit",
    "git-via-abs-path": "echo pwned > $PWD/.git/config; echo pwned > $PWD/./src/../.git/hooks/pre-commit",
}


@pytest.mark.parametrize("how", GIT_ATTACKS)
def test_git_dir_protected(backend, mode, how, box, run_in):
    before = snap(box.ws / ".git")
    r = run_in(backend, mode, f"( {GIT_ATTACKS[how]} ) 2>&1; echo attempted")
    assert snap(box.ws / ".git") == before, f".git changed by {how!r}\n{r.why}"


MOVE_AWAY = {
    "mv-then-write-moved": ("mv .git .git2 && { echo pwned >> .git2/config; "
                            "printf '#!/bin/sh\\necho pwned\\n' > .git2/hooks/pre-commit; mv .git2 .git; }"),
    "mv-then-new-git": "mv .git .git2; mkdir -p .git/hooks; echo pwned > .git/config; echo x > .git/HEAD",
    "rename-workspace": "cd .. && mv ws ws-moved && echo pwned > ws-moved/.git/config; mv ws-moved ws",
    "replace-with-gitfile": "rm -rf .git; mv .git .git-old; echo 'gitdir: /tmp/evil' > .git",
}


@pytest.mark.parametrize("how", MOVE_AWAY)
def test_git_dir_moved_away_then_written(backend, mode, how, box, run_in):
    before = snap(box.ws / ".git")
    r = run_in(backend, mode, f"( {MOVE_AWAY[how]} ) 2>&1; echo attempted")
    assert snap(box.ws / ".git") == before, f".git changed by {how!r}\n{r.why}"
    leftovers = [p for p in (".git2", ".git-old") if os.path.lexists(box.ws / p)]
    assert not leftovers, f"{how!r} renamed .git away: {leftovers}\n{r.why}"
    assert os.path.isdir(box.root / "ws") and not os.path.lexists(box.root / "ws-moved"), r.why


CREATE_PROTECTED = ("mkdir -p {n}/hooks; echo pwned > {n}/config; echo x > {n}/config.toml; "
                    "printf '#!/bin/sh\\n' > {n}/hooks/pre-commit")


@pytest.mark.parametrize("name", [".stockade", ".git"])
def test_missing_protected_path_cannot_be_created(backend, mode, name, box, run_in):
    """Protected names stay unwritable before they exist (as a dir, a file or via git init)."""
    shutil.rmtree(box.ws / name, ignore_errors=True)
    script = (f"( {CREATE_PROTECTED.format(n=name)} ) 2>&1; ( rm -rf {name}; echo 'gitdir: /tmp/x' > {name} ) 2>&1; "
              f"( rm -rf {name}; ln -s {box.outside} {name} ) 2>&1; ( git init -q . ) 2>&1; echo attempted")
    r = run_in(backend, mode, script)
    assert not os.path.lexists(box.ws / name), f"{name} was created on the host\n{r.why}"


def test_existing_stockade_dir_protected(backend, mode, box, run_in):
    cfg = box.ws / ".stockade" / "config.toml"
    cfg.parent.mkdir()
    cfg.write_text('[policy]\nmode = "read-only"\n')
    before = snap(cfg.parent)
    script = ("( echo 'mode = \"full-access\"' > .stockade/config.toml; echo x > .stockade/new.toml; "
              "rm -rf .stockade; mv .stockade .st2; mkdir .stockade; echo x > .stockade/config.toml ) 2>&1; "
              "echo attempted")
    r = run_in(backend, mode, script)
    assert snap(cfg.parent) == before, r.why
    assert not os.path.lexists(box.ws / ".st2"), r.why


GIT_ELSEWHERE = ("gitfile-target-in-workspace", "gitfile-target-in-extra-root", "symlinked-git-dir",
                 "extra-root-own-git")


@pytest.mark.parametrize("where", GIT_ELSEWHERE)
def test_git_dir_elsewhere_protected(backend, mode, where, box, run_in):
    """A worktree-style `.git` FILE (its `gitdir:` target), a `.git` symlink (its target), and the `.git`
    of an extra writable root all stay read-only, though they sit inside writable roots."""
    extra = box.root / "extra"
    if where == "extra-root-own-git":
        shutil.copytree(box.ws, extra, symlinks=True)
        store = extra / ".git"
    else:
        extra.mkdir()
        store = {"gitfile-target-in-workspace": box.ws / "gitstore", "gitfile-target-in-extra-root": extra / "gitstore",
                 "symlinked-git-dir": box.ws / "realgit"}[where]
        shutil.move(box.ws / ".git", store)
        if where == "symlinked-git-dir":
            os.symlink("realgit", box.ws / ".git")
        else:
            (box.ws / ".git").write_text(f"gitdir: {store}\n")
    before_store, before_file = snap(store), snap(box.ws / ".git")
    script = (f"( echo pwned >> {store}/config; printf '#!/bin/sh\\n' > {store}/hooks/pre-commit; "
              f"mkdir -p {store}/objects/ab && echo x > {store}/objects/ab/cd; "
              "git -c user.name=x -c user.email=y@z commit -q --allow-empty -m pwned; "
              f"mv {store} {store}.moved; rm -rf {store}/hooks ) 2>&1; "
              "( echo 'gitdir: /tmp/evil' > .git; rm -f .git; mv .git .git-old; ln -sfn {box.outside} .git ) 2>&1; "
              "echo attempted")
    r = run_in(backend, mode, script, writable_roots=(extra,))
    assert snap(store) == before_store, f"{store} changed\n{r.why}"
    assert snap(box.ws / ".git") == before_file, f"{box.ws}/.git changed\n{r.why}"
    assert not os.path.lexists(f"{store}.moved"), r.why


@pytest.mark.parametrize("made_by", ["host", "command"])
def test_symlink_escape(backend, mode, made_by, box, run_in):
    """A symlink in the workspace pointing outside: writing through it changes nothing outside."""
    links = {"lnk-file": box.victim, "lnk-dir": box.outside, "lnk-rc": box.home / ".bashrc",
             "lnk-rel": os.path.relpath(box.victim, box.ws)}
    make = "true; "
    for name, target in links.items():
        if made_by == "host":
            os.symlink(target, box.ws / name)
        else:
            make += f"ln -s {target} {name}; ln -s {target} $TMPDIR/{name}; "
    script = (f"( {make} ) 2>&1; for d in . $TMPDIR; do ( echo pwned > $d/lnk-file; echo pwned >> $d/lnk-rc; "
              "echo pwned > $d/lnk-rel; echo x > $d/lnk-dir/created; mkdir $d/lnk-dir/newdir; "
              "cp /etc/hostname $d/lnk-dir/ ) 2>&1; done; echo attempted")
    before_out, before_home = snap(box.outside), snap(box.home)
    r = run_in(backend, mode, script)
    assert snap(box.outside) == before_out, r.why
    assert snap(box.home) == before_home, r.why


def test_hardlink_escape(backend, mode, box, run_in):
    """A hard link of an outside file made inside the workspace: ln fails or the outside bytes stay."""
    script = (f"( ln {box.victim} hl && echo pwned >> hl ) 2>&1; "
              f"( ln {box.home}/.bashrc hl2 && echo pwned > hl2 ) 2>&1; "
              f"( ln {box.victim} $TMPDIR/hl3 && echo pwned > $TMPDIR/hl3 ) 2>&1; "
              f"{PY} -c \"import os; os.link('{box.victim}', 'hl4'); open('hl4', 'a').write('pwned')\" 2>&1; "
              f"{PY} -c \"import os; os.link('{box.home}/.profile', 'hl5', follow_symlinks=False); "
              "open('hl5', 'w').write('pwned')\" 2>&1; echo attempted")
    before_out, before_home = snap(box.outside), snap(box.home)
    r = run_in(backend, mode, script)
    assert snap(box.outside) == before_out, r.why
    assert snap(box.home) == before_home, r.why


PROC_PATHS = {
    "proc-self-root": "/proc/self/root{victim}",
    "proc-sleeper-cwd": "/proc/{pid}/cwd/victim.txt",
    "proc-sleeper-root": "/proc/{pid}/root{victim}",
    "proc-1-root": "/proc/1/root{victim}",
    "proc-parent-root": "/proc/$PPID/root{victim}",
    "proc-thread-self": "/proc/thread-self/root{victim}",
}


@pytest.mark.parametrize("via", PROC_PATHS)
def test_proc_path_escape(backend, mode, via, box, sleeper, run_in):
    path = PROC_PATHS[via].format(victim=box.victim, pid=sleeper.pid)
    script = (f"( echo pwned > {path}; echo pwned >> {path}; rm -f {path}; "
              f"echo x > $(dirname {path})/created ) 2>&1; echo attempted")
    before = snap(box.outside)
    r = run_in(backend, mode, script)
    assert snap(box.outside) == before, f"write through {path} reached the host\n{r.why}"


READ_SECRETS = {
    "ssh": "cat ~/.ssh/id_rsa; cat {home}/.ssh/id_rsa",
    "aws": "cat ~/.aws/credentials",
    "gnupg": "cat ~/.gnupg/private-keys-v1.d/key.key",
    "netrc": "cat ~/.netrc",
    "dotdot-path": "cat {home}/.ssh/../.ssh/id_rsa {ws}/../home/.aws/credentials",
    "proc-self-root": "cat /proc/self/root{home}/.ssh/id_rsa",
    "symlink": "ln -s {home}/.ssh $TMPDIR/s; cat $TMPDIR/s/id_rsa; ln -s {home}/.aws a; cat a/credentials",
    "hardlink": "ln {home}/.ssh/id_rsa $TMPDIR/k; cat $TMPDIR/k; ln {home}/.aws/credentials k2; cat k2",
    "sweep-home": "find {home} -type f -exec cat {{}} +; grep -rh . {home}; tar cf - {home} | strings",
    "home-bind-mount-alias": "cat {root}/home-alias/.ssh/id_rsa {root}/home-alias/.aws/credentials",
    "python-open": f"{PY} -c \"import glob; [print(open(f).read()) for f in glob.glob('{{home}}/**', "
                   "recursive=True, include_hidden=True) if __import__('os').path.isfile(f)]\"",
}


@pytest.mark.parametrize("what", READ_SECRETS)
def test_deny_read_secrets(backend, mode, what, box, run_in):
    if what == "home-bind-mount-alias":
        # The same home also mounted at a second path by the host (devcontainers, chroots, /workspaces).
        (box.root / "home-alias").mkdir()
        bind_mount(box.home, box.root / "home-alias")
    script = READ_SECRETS[what].format(home=box.home, ws=box.ws, root=box.root)
    r = run_in(backend, mode, script + " 2>&1; echo attempted")
    file_secrets = {"ssh", "aws", "gnupg", "netrc", "fd"}
    leaked = [s for s in box.leaked(r.out) if s in file_secrets]
    assert not leaked, f"deny-read secrets leaked via {what!r}: {leaked}\n{describe_no_secret(r, box)}"


def describe_no_secret(r, box):
    text = r.why
    for value in box.secrets.values():
        text = text.replace(value, "<SECRET>")
    return text


def _shadow_lines() -> list[str]:
    lines = []
    for path in ("/etc/shadow", "/etc/gshadow"):
        try:
            lines += [ln for ln in open(path, encoding="utf-8", errors="replace").read().splitlines() if ln.strip()]
        except OSError:
            continue
    for name in sorted(os.listdir("/etc/ssh")) if os.path.isdir("/etc/ssh") else []:
        if name.startswith("ssh_host_") and name.endswith("_key"):
            body = open(f"/etc/ssh/{name}", encoding="ascii", errors="replace").read().splitlines()
            lines += [ln for ln in body if ln and not ln.startswith("-----")][:1]
    return lines


def test_deny_read_shadow_as_root(backend, mode, box, run_in):
    if os.getuid() != 0:
        pytest.skip("needs a root caller (the case where file modes do not protect /etc/shadow)")
    lines = _shadow_lines()
    assert lines, "host has no /etc/shadow lines to compare against"
    r = run_in(backend, mode, "cat /etc/shadow /etc/gshadow /etc/ssh/ssh_host_*_key 2>&1; "
               "grep -h . /proc/self/root/etc/shadow 2>&1; echo attempted")
    leaked = sum(1 for ln in lines if ln in r.out)
    assert leaked == 0, f"{leaked} line(s) of /etc/shadow, /etc/gshadow or ssh host keys reached the output " \
                        f"(backend={r.backend} protections={r.protections})"


FILL = {
    "shell-redirect": "head -c 20971520 /dev/zero > big",
    "python-ignoring-sigxfsz": (f"{PY} -c \"import signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                                "f = open('big', 'wb')\nfor _ in range(20):\n    try: f.write(bytes(1 << 20)); "
                                "f.flush()\n    except OSError as e: print(e); break\""),
    "fallocate": "fallocate -l 20M big",
    "truncate-extend": "truncate -s 20M big",
    "dd-seek": "dd if=/dev/zero of=big bs=1M seek=19 count=1",
}


@pytest.mark.parametrize("how", FILL)
def test_file_size_limit(backend, mode, how, box, run_in):
    """limits.file_size_mb=5: the host never gets a file bigger than 5 MiB."""
    r = run_in(backend, mode, f"( {FILL[how]} ) 2>&1; ls -l big 2>&1; echo attempted", limits={"file_size_mb": 5})
    big = box.ws / "big"
    if big.exists():
        st = big.stat()
        assert st.st_size <= 5 * MIB, f"{how}: host file is {st.st_size} bytes (limit 5 MiB)\n{r.why}"
        assert st.st_blocks * 512 <= 6 * MIB, f"{how}: host file uses {st.st_blocks * 512} bytes on disk\n{r.why}"


def test_memory_limit(backend, mode, box, run_in):
    """limits.memory_mb=256: a 768 MiB hog is stopped; the host never sees it hold more than the limit."""
    code = (f"# {box.marker}\nimport time\nhog = []\n"
            "for i in range(48):\n    hog.append(bytearray(b'\\x01') * (16 << 20))\n    time.sleep(0.005)\n"
            "print('ALLOCATED-ALL', flush=True)\ntime.sleep(1)\n")

    def peak_kb() -> int:
        peaks = [0]
        for pid in cmdline_pids(box.marker):
            hwm = proc_status(pid).get("VmHWM", "0 kB").split()[0]
            peaks.append(int(hwm))
        return max(peaks)

    with Sampler(peak_kb, 0.01) as watch:
        r = run_in(backend, mode, code, py=True, limits={"memory_mb": 256})
    peak = max(watch.samples)
    assert peak <= (256 + 32) * 1024, f"a sandboxed process held {peak // 1024} MiB (limit 256)\n{r.why}"
    assert "ALLOCATED-ALL" not in r.out, f"the hog got all 768 MiB\n{r.why}"
    assert not cmdline_pids(box.marker), "the hog outlived the run"


def test_host_git_unaffected(backend, box, run_in):
    """After a hostile run the host can still use the repo: `git fsck` and `git status` succeed."""
    run_in(backend, "workspace-write", "( " + "; ".join(GIT_ATTACKS.values()) + " ) >/dev/null 2>&1; true")
    res = subprocess.run(["git", "fsck", "--no-progress"], cwd=box.ws, capture_output=True, text=True, timeout=30,
                         env={"PATH": os.environ["PATH"], "HOME": str(box.home)}, check=False)
    assert res.returncode == 0, res.stderr


# Host kernel settings are "outside the writable roots" too. A root caller keeps uid 0, and sysctl and
# sysfs writes are checked against the uid, not capabilities, so only a read-only mount (or Landlock)
# stops them. Harmless knobs are really written (and restored); the ones that would hand the host to
# the command (core_pattern runs a program as root on the next crash) are only opened for writing.
KNOBS = {
    "sysctl-printk_ratelimit": ("/proc/sys/kernel/printk_ratelimit", "write"),
    "sysctl-core_pattern": ("/proc/sys/kernel/core_pattern", "open"),
    "sysctl-modprobe": ("/proc/sys/kernel/modprobe", "open"),
    "proc-sysrq-trigger": ("/proc/sysrq-trigger", "open"),
    "binfmt_misc-register": ("/proc/sys/fs/binfmt_misc/register", "open"),
    "sysfs-read_ahead_kb": ("/sys/block/{disk}/queue/read_ahead_kb", "write"),
    "sysfs-module-param": ("/sys/module/printk/parameters/time", "write"),
    "sysfs-uevent_helper": ("/sys/kernel/uevent_helper", "open"),
}


def _other_value(current: str) -> str:
    word = current.split()[0]
    if word in ("Y", "N"):
        return "N" if word == "Y" else "Y"
    return str(int(word) + 128)  # a multiple of the page size in KiB, for read_ahead_kb


@pytest.mark.parametrize("knob", KNOBS)
def test_kernel_settings_not_writable(backend, mode, knob, run_in):
    disks = sorted(d for d in os.listdir("/sys/block") if not d.startswith(("loop", "ram", "zram")))
    path, how = KNOBS[knob]
    path = path.format(disk=disks[0] if disks else "none")
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist on this kernel")
    if not os.access(path, os.W_OK):
        pytest.skip(f"{path} is not writable on this host even unconfined (read-only mount?)")
    before = open(path, encoding="ascii").read()
    try:
        if how == "write":
            new = _other_value(before)
            r = run_in(backend, mode, f"echo {new} > {path} 2>&1; echo attempted")
            after = open(path, encoding="ascii").read()
            assert after == before, f"the sandbox changed the host {path}: {before.strip()} -> {after.strip()}\n{r.why}"
        else:
            r = run_in(backend, mode, f"import os; os.open('{path}', os.O_WRONLY); print('OPENED-FOR-WRITE')", py=True)
            assert "OPENED-FOR-WRITE" not in r.out, f"{path} of the host is writable inside the sandbox\n{r.why}"
    finally:
        if open(path, encoding="ascii").read() != before:
            with open(path, "w", encoding="ascii") as fh:
                fh.write(before)


DEV_NODES = ("/dev/null", "/dev/zero", "/dev/tty", "/dev/urandom")


def _dev_state() -> dict[str, tuple[int, int, int, int]]:
    out = {}
    for path in DEV_NODES:
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            out[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_rdev)
    return out


def test_host_device_nodes_unchanged(backend, mode, run_in):
    """A root caller owns the host's /dev/null & co.: chmod/chown/rm/replace from inside must not reach them."""
    if CANARY:
        pytest.skip("unconfined, this really breaks the host's /dev/null for a moment (checked once, by hand)")
    before = _dev_state()
    script = "; ".join(f"( chmod 000 {p}; chown 1234 {p}; rm -f {p}; mknod {p} c 1 5; touch -d 2001-01-01 {p} ) 2>&1"
                       for p in DEV_NODES)
    try:
        r = run_in(backend, mode, script + "; echo attempted")
        assert _dev_state() == before, f"host device nodes changed\n{r.why}"
    finally:
        for path, (st_mode, uid, gid, rdev) in before.items():  # repair the host if an escape broke it
            with contextlib.suppress(OSError):
                if _dev_state().get(path) != (st_mode, uid, gid, rdev):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    os.mknod(path, st_mode, rdev)
                    os.chown(path, uid, gid)
                    os.chmod(path, stat.S_IMODE(st_mode))


def _host_disk() -> str | None:
    """The /dev node of the block device holding the victims (what a raw read would scan)."""
    st = os.stat(BASE)
    for name in (f"/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}",):
        if os.path.exists(name):
            return os.path.realpath(name)
    try:
        dev = open(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/uevent").read()
        return "/dev/" + next(ln.split("=", 1)[1] for ln in dev.splitlines() if ln.startswith("DEVNAME="))
    except (OSError, StopIteration):
        return None


RAW_DISK = """
import os, sys
dev, major, minor = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for path in (dev, "ws-disk", os.environ.get("TMPDIR", "/tmp") + "/disk"):
    if path != dev:
        try:
            os.mknod(path, 0o600 | 0o060000, os.makedev(major, minor))
            print("MKNOD-OK", path, flush=True)
        except OSError as exc:
            print("mknod failed", path, exc)
    try:
        with open(path, "rb") as fh:
            print("RAW-DISK-READ", path, len(fh.read(4096)), flush=True)
    except OSError as exc:
        print("open failed", path, exc)
"""


def test_raw_disk_not_readable(backend, mode, box, run_in):
    """Reading the block device under the deny-read files reads them all (and /etc/shadow): the host disk
    must not open, not even through a device node the command makes itself. A read leaves no trace on the
    host, so the kernel's answer is what is checked; mknod is checked on the host too."""
    disk = _host_disk()
    if disk is None or not os.path.exists(disk):
        pytest.skip("cannot tell which block device holds the test files")
    st = os.stat(disk)
    path = box.root / "rawdisk.py"
    path.write_text(RAW_DISK)
    r = run_in(backend, mode, f"{PY} {path} {disk} {os.major(st.st_rdev)} {os.minor(st.st_rdev)}")
    assert "RAW-DISK-READ" not in r.out, f"the host disk {disk} could be read inside the sandbox\n{r.why}"
    nodes = [p for p in (box.ws / "ws-disk",) if os.path.lexists(p)]
    assert not nodes, f"the command created device nodes on the host: {nodes}\n{r.why}"


def test_missing_protected_path_stays_protected_across_concurrent_runs(backend, box, run_in):
    """While one run is still going, other runs in the same workspace start and finish (setting up and
    removing whatever marks a missing `.stockade`); the long run must still be unable to create it."""
    import threading

    results = []
    script = ("sleep 0.8; ( mkdir -p .stockade && echo 'mode = \"full-access\"' > .stockade/config.toml ) 2>&1; "
              "( echo x > .stockade/config.toml ) 2>&1; echo attempted")
    long_run = threading.Thread(target=lambda: results.append(run_in(backend, "workspace-write", script)))
    long_run.start()
    try:
        for _ in range(5):
            run_in(backend, "workspace-write", "true")
    finally:
        long_run.join(30)
    assert results, "the long run did not finish"
    assert not os.path.lexists(box.ws / ".stockade"), f".stockade was created on the host\n{results[0].why}"


ANCESTOR_MOVES = {
    "mv-top": "mv dot dot2 && mkdir -p dot/config/stockade && echo 'profile = \"full-access\"' > "
              "dot/config/stockade/config.toml",
    "mv-middle": "mv dot/config dot/config2 && mkdir -p dot/config/stockade && echo pwned > "
                 "dot/config/stockade/config.toml",
    "rm-and-rebuild": "rm -rf dot; mkdir -p dot/config/stockade && echo pwned > dot/config/stockade/config.toml",
}


@pytest.mark.parametrize("how", ANCESTOR_MOVES)
def test_protected_state_dir_cannot_be_carried_off_by_renaming_an_ancestor(backend, mode, how, box, run_in,
                                                                         monkeypatch):
    """stockade's own config under a writable root: renaming a parent must not let the command rebuild it."""
    config = box.ws / "dot" / "config" / "stockade" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'profile = "read-only"  # {box.marker}\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(box.ws / "dot" / "config"))
    before = snap(box.ws / "dot")
    r = run_in(backend, mode, f"( {ANCESTOR_MOVES[how]} ) 2>&1; echo attempted")
    assert snap(box.ws / "dot") == before, f"{how!r} changed the protected config's tree\n{r.why}"
    assert not any(os.path.lexists(box.ws / p) for p in ("dot2", "dot/config2")), r.why

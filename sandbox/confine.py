"""Child-side confinement primitives for the Landlock backend.

Everything the child runs is prepared in the parent: libc functions resolved
with their argtypes, paths encoded to bytes, structures filled in. After
fork the child only walks a list of (label, function, args) steps, so a spawn
costs a few dozen syscalls and no imports or allocations worth mentioning.

Order (each step needs what the previous ones still have):
 1. new namespaces and mounts (need CAP_SYS_ADMIN, in the user namespace if any),
    the host view first when offline (`view_steps`);
 2. loopback up in the new network namespace (CAP_NET_ADMIN);
 3. capabilities: locked securebits, the whole bounding set dropped,
    ambient cleared, capset all-zero (a root caller keeps every capability
    through Landlock and seccomp otherwise);
 4. PR_SET_NO_NEW_PRIVS, then landlock_restrict_self;
 5. every fd above 2 marked close-on-exec except those passed on purpose;
 6. seccomp last, so the steps above may use what it forbids (mount, unshare).

Any failure is fatal and visible: the child prints
`stockade: sandbox setup failed: <step>: <errno>` to fd 2 and exits 125,
so the command never runs unconfined.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat
from collections.abc import Callable, Sequence

from policies.compile.hostview import HostView, Overlay, PlainBind, Skeleton, Symlink, ViewItem
from policies.compile.mounts import (
    Bind,
    Chdir,
    LoopbackUp,
    MapIds,
    MountPlan,
    PinLink,
    PrivateTmp,
    RemountTree,
    SealView,
    ShowHost,
    Tmpfs,
    Unshare,
)

SETUP_FAILED = 125

# Syscall numbers from the unified table (same on every architecture but alpha and mips).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_CLOSE_RANGE = 436
SYS_MOUNT_SETATTR = 442
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

AT_FDCWD = -100
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
AT_SYMLINK_NOFOLLOW = 0x100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE set and locked; KEEP_CAPS locked off.
SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80
CAP_SYS_ADMIN = 21
CAP_SETPCAP = 8
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

CLOSE_RANGE_CLOEXEC = 1 << 2
LANDLOCK_RULE_PATH_BENEATH = 1
# Rights that make sense on a non-directory (others give EINVAL on a file rule).
LANDLOCK_FILE_RIGHTS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)

SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40

# label, fn (-1 = fail), args, and whether ENOENT/ENOTDIR/EACCES skip the step instead of failing
Step = tuple[str, Callable[..., int], tuple[object, ...], bool]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _Ifreq(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 16), ("flags", ctypes.c_short), ("pad", ctypes.c_char * 22)]


@functools.cache
def libc() -> ctypes.CDLL:
    """libc with the functions the child calls, typed once (in the parent)."""
    lib = ctypes.CDLL(None, use_errno=True)
    c_int, c_ulong, c_char_p, c_void_p, c_long = (ctypes.c_int, ctypes.c_ulong, ctypes.c_char_p,
                                                  ctypes.c_void_p, ctypes.c_long)
    for name, res, args in (
        ("mount", c_int, [c_char_p, c_char_p, c_char_p, c_ulong, c_void_p]),
        ("unshare", c_int, [c_int]),
        ("prctl", c_int, [c_int, c_ulong, c_ulong, c_ulong, c_ulong]),
        ("capset", c_int, [c_void_p, c_void_p]),
        ("chdir", c_int, [c_char_p]),
        ("socket", c_int, [c_int, c_int, c_int]),
        ("ioctl", c_int, [c_int, c_ulong, c_void_p]),
        ("close", c_int, [c_int]),
        ("syscall", c_long, None),
    ):
        fn = getattr(lib, name)
        fn.restype = res
        if args is not None:
            fn.argtypes = args
    return lib


def _status_caps() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


@functools.cache
def has_cap(cap: int) -> bool:
    """Whether this process holds `cap` in its effective set (read once)."""
    return bool(_status_caps() >> cap & 1)


@functools.cache
def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 63  # dropping unknown caps fails with EINVAL; the loop stops there


# -- parent side: the Landlock ruleset --------------------------------------------------------------

def add_path_rule(ruleset_fd: int, path: str, access: int, *, follow: bool = True) -> bool:
    """Grant `access` beneath `path`. False when the path is missing or a symlink not followed (fail-safe).

    Rights that only apply to directories are dropped for a file rule.
    """
    flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            return False
        if not stat.S_ISDIR(mode):
            access &= LANDLOCK_FILE_RIGHTS
        if not access:
            return False
        attr = _PathBeneath(access, fd)
        if libc().syscall(SYS_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH,
                          ctypes.byref(attr), 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_add_rule {path}: {os.strerror(err)}")
        return True
    finally:
        os.close(fd)


# -- child side ------------------------------------------------------------------------------------

def fail(label: str, err: int) -> None:
    """Report a setup failure on fd 2 and exit 125 without running anything else."""
    name = errno.errorcode.get(err, str(err))
    try:
        os.write(2, f"stockade: sandbox setup failed: {label}: {name} ({os.strerror(err)})\n".encode())
    finally:
        os._exit(SETUP_FAILED)


def run_steps(steps: Sequence[Step]) -> None:
    """Run prepared steps in order; the first failure is fatal (see `fail`)."""
    get_errno = ctypes.get_errno
    for label, fn, args, optional in steps:
        if fn(*args) == -1:
            err = get_errno()
            if optional and err in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                continue  # gone, or out of our reach: then out of the command's reach too
            fail(label, err)


def _py_step(fn: Callable[[], None]) -> Callable[[], int]:
    """Wrap a Python-level step so it reports failure like a libc call (-1 and errno)."""
    def call() -> int:
        try:
            fn()
        except OSError as exc:
            ctypes.set_errno(exc.errno or errno.EIO)
            return -1
        return 0
    return call


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _map_ids(uid: int, gid: int) -> None:
    # A credential change before the hook (Popen's user=) leaves the process non-dumpable, which makes
    # /proc/self/*_map root-owned; exec resets dumpability anyway.
    if libc().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
    _write_file("/proc/self/setgroups", b"deny")
    _write_file("/proc/self/uid_map", f"{uid} {uid} 1".encode())
    _write_file("/proc/self/gid_map", f"{gid} {gid} 1".encode())


def _loopback_up() -> int:
    lib = libc()
    sock = lib.socket(2, 2 | 0o2000000, 0)  # AF_INET, SOCK_DGRAM | SOCK_CLOEXEC
    if sock < 0:
        return -1
    req = _Ifreq(b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
    ret = lib.ioctl(sock, SIOCSIFFLAGS, ctypes.byref(req))
    err = ctypes.get_errno()
    lib.close(sock)
    ctypes.set_errno(err)
    return -1 if ret < 0 else 0


def _setattr(path: bytes, *, recursive: bool, set_: int = 0, clear: int = 0, propagation: int = 0) -> Step:
    attr = _MountAttr(set_, clear, propagation, 0)
    return ("mount_setattr " + path.decode(errors="replace"), libc().syscall,
            (SYS_MOUNT_SETATTR, AT_FDCWD, path, AT_RECURSIVE if recursive else 0,
             ctypes.byref(attr), ctypes.sizeof(attr)), False)


def mount_steps(plan: MountPlan, exists: Callable[[str], bool] = os.path.lexists) -> list[Step]:
    """The mount plan as prepared child steps (optional ops whose destination is missing are dropped here)."""
    lib = libc()
    steps: list[Step] = []
    view = _ViewState()
    for op in plan.ops:
        if isinstance(op, (Bind, PrivateTmp)) and op.optional and not exists(op.dst):
            continue
        if isinstance(op, PrivateTmp):
            keep = tuple((os.fsencode(p), os.fsencode(p), os.path.isdir(p)) for p in op.keep if exists(p))
            data = f"mode={op.mode:o}".encode()
            steps.append((f"private {op.dst}", _private_tmp, (os.fsencode(op.dst), keep, data), False))
            continue
        if isinstance(op, Unshare):
            flags = ((CLONE_NEWNS if op.mount else 0) | (CLONE_NEWUSER if op.user else 0)
                     | (CLONE_NEWNET if op.net else 0) | (CLONE_NEWIPC if op.ipc else 0))
            steps.append(("unshare", lib.unshare, (flags,), False))
        elif isinstance(op, MapIds):
            steps.append(("uid/gid map", _py_step(functools.partial(_map_ids, op.uid, op.gid)), (), False))
        elif isinstance(op, RemountTree):
            steps.append(_setattr(os.fsencode(op.path), recursive=True,
                                  set_=MOUNT_ATTR_RDONLY if op.readonly else 0,
                                  propagation=MS_PRIVATE if op.private else 0))
        elif isinstance(op, ShowHost):
            steps += view_steps(op.view, view)
        elif isinstance(op, SealView):
            steps.append(("seal the host view", _py_step(view.seal), (), False))
        elif isinstance(op, Bind):
            src, dst = os.fsencode(op.src), os.fsencode(op.dst)
            flags = MS_BIND | (MS_REC if op.recursive else 0)
            label = f"bind {op.src} -> {op.dst}"
            source: bytes | Callable[[], bytes] = functools.partial(view.host_path, src) if op.host else src
            if op.readonly is None:
                steps.append((label, _bind_then(lib.mount, (source, dst, None, flags, None), None), (),
                              op.volatile))
            else:
                attr = (_setattr(dst, recursive=op.recursive, set_=MOUNT_ATTR_RDONLY) if op.readonly
                        else _setattr(dst, recursive=False, clear=MOUNT_ATTR_RDONLY))
                steps.append((label, _bind_then(lib.mount, (source, dst, None, flags, None), attr),
                              (), op.volatile))
        elif isinstance(op, Tmpfs):
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (MS_RDONLY if op.readonly else 0)
            data = f"mode={op.mode:o},size=4k,nr_inodes=4".encode()
            steps.append((f"tmpfs {op.dst}", lib.mount, (b"tmpfs", os.fsencode(op.dst), b"tmpfs", flags, data),
                          False))
        elif isinstance(op, PinLink):
            path = os.fsencode(op.path)
            steps.append((f"pin {op.path}", _pin_link, (path,), False))
        elif isinstance(op, LoopbackUp):
            steps.append(("loopback up", _loopback_up, (), False))
        elif isinstance(op, Chdir):
            steps.append((f"chdir {op.path}", lib.chdir, (os.fsencode(op.path),), False))
    return steps


# -- the host view (policies.compile.hostview) ------------------------------------------------------

_OVERLAY_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}


def _os_check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class _ViewState:
    """What the view's steps share in the child: fds on the host's root and on the empty lower layer."""

    def __init__(self) -> None:
        self.host = -1  # O_PATH fd on the host's root, opened in the child's mount namespace
        self.empty = -1  # O_PATH fd on an empty read-only tmpfs: the second lower layer of every overlay
        self.sealed: list[bytes] = []  # the view's own tmpfs mounts, made read-only by `seal`

    def host_path(self, path: bytes) -> bytes:
        """`path` in the host's tree once the view is the root (before that, `path` itself)."""
        return b"/proc/self/fd/%d%s" % (self.host, path) if self.host >= 0 else path

    def seal(self) -> None:
        for path in self.sealed:
            attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
            _os_check(libc().syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path, 0, ctypes.byref(attr),
                                     ctypes.sizeof(attr)), "mount_setattr")
        for fd in (self.host, self.empty):
            if fd >= 0:
                os.close(fd)
        self.host = self.empty = -1


def view_steps(view: HostView, state: _ViewState | None = None) -> list[Step]:
    """Steps that make `view` the root, built like bwrap builds a root (see `policies.compile.hostview`).

    The first step keeps an fd on the host's root, mounts an empty tmpfs
    (the second lower layer overlayfs wants) and then the view's root on
    top of "/", steps into it through "/.." (which goes to the topmost
    mount on the root) with the host's /proc bound in, and chroots there.
    Every later item takes its source from the host through that fd. An
    item whose host source vanished since the view was built is skipped.
    """
    state = state or _ViewState()
    items = view.items
    root = next(item for item in items if item.path == "/")
    # The first step binds the host's /proc (unless the root is a plain bind of everything already).
    proc_done = not isinstance(root, PlainBind)
    rest = [item for item in items if item.path != "/" and not (item.path == "/proc" and proc_done)]
    steps: list[Step] = [("view root", _py_step(functools.partial(_enter_view, root, state)), (), False)]
    for item in rest:
        kind = type(item).__name__.lower()
        steps.append((f"view {kind} on {item.path}", _py_step(functools.partial(_show_item, item, state)), (),
                      True))
    return steps


def _enter_view(root: ViewItem, state: _ViewState) -> None:
    lib = libc()
    state.host = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    _os_check(lib.mount(b"tmpfs", b"/", b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                        b"mode=755,size=4k,nr_inodes=2"), "empty tmpfs")
    state.empty = os.open("/..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # "/.." is the top of "/"
    host = b"/proc/self/fd/%d" % state.host
    if isinstance(root, Overlay):
        _os_check(lib.mount(b"overlay", b"/", b"overlay", _overlay_flags(root),
                            b"lowerdir=%s:/proc/self/fd/%d" % (host, state.empty)), "overlay /")
    elif isinstance(root, Skeleton):
        _os_check(lib.mount(b"tmpfs", b"/", b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=%o" % root.mode), "tmpfs /")
        state.sealed.append(b"/")
    else:
        _os_check(lib.mount(host, b"/", None, MS_BIND | MS_REC, None), "bind /")
    os.chdir("/..")
    if not isinstance(root, PlainBind):
        with contextlib.suppress(FileExistsError):
            os.mkdir("proc", 0o555)
        _os_check(lib.mount(b"/proc", b"proc", None, MS_BIND | MS_REC, None), "bind /proc")
    os.chroot(".")
    os.chdir("/")


def _overlay_flags(item: Overlay) -> int:
    flags = MS_RDONLY
    for name in item.flags:
        flags |= _OVERLAY_FLAGS.get(name, 0)
    return flags


def _show_item(item: ViewItem, state: _ViewState) -> None:
    lib = libc()
    path = os.fsencode(item.path)
    if isinstance(item, Symlink):
        os.symlink(item.target, path)
        return
    if isinstance(item, Skeleton):
        if item.fresh:
            _ensure(path, is_dir=True)
            _os_check(lib.mount(b"tmpfs", path, b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=%o" % item.mode), "tmpfs")
            state.sealed.append(path)
        else:
            try:
                os.mkdir(path)
            except FileExistsError:
                return
            os.chmod(path, item.mode)  # not left to the umask
        return
    source = state.host_path(path)
    if isinstance(item, Overlay):
        lower = os.open(source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _ensure(path, is_dir=True)
            _os_check(lib.mount(b"overlay", path, b"overlay", _overlay_flags(item),
                                b"lowerdir=/proc/self/fd/%d:/proc/self/fd/%d" % (lower, state.empty)), "overlay")
        finally:
            os.close(lower)
        return
    os.lstat(source)  # gone from the host: skipped (ENOENT), before anything is made for it
    _ensure(path, is_dir=item.is_dir)
    _os_check(lib.mount(source, path, None, MS_BIND | MS_REC, None), "bind")
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    _os_check(lib.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path, AT_RECURSIVE, ctypes.byref(attr),
                          ctypes.sizeof(attr)), "mount_setattr")


def _ensure(path: bytes, *, is_dir: bool) -> None:
    """Make a mountpoint when there is none (in the view's own tmpfs dirs)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        if is_dir:
            os.mkdir(path, 0o755)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))


def _private_tmp(dst: bytes, keep: tuple[tuple[bytes, bytes, bool], ...], data: bytes) -> int:
    """Fresh tmpfs on `dst`; the kept paths under it are cloned first and attached again in place."""
    lib = libc()
    clones = []
    for src, _, _ in keep:
        fd = lib.syscall(SYS_OPEN_TREE, AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
        if fd < 0:
            return -1
        clones.append(fd)
    if lib.mount(b"tmpfs", dst, b"tmpfs", MS_NOSUID | MS_NODEV, data) != 0:
        return -1
    for fd, (_, path, is_dir) in zip(clones, keep, strict=True):
        try:
            if is_dir:
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            ctypes.set_errno(exc.errno or errno.EIO)
            return -1
        if lib.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH) != 0:
            return -1
        lib.close(fd)
    return 0


def _pin_link(path: bytes) -> int:
    """Mount a symlink onto itself without following it (new mount API), so it cannot be replaced."""
    lib = libc()
    fd = lib.syscall(SYS_OPEN_TREE, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW)
    if fd < 0:
        return -1
    ret = lib.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH)
    err = ctypes.get_errno()
    lib.close(fd)
    ctypes.set_errno(err)
    return 0 if ret == 0 else -1


def late_rule_step(ruleset_fd: int, path: str, access: int) -> Step:
    """Grant `access` beneath `path` as it is after the mounts (fresh tmpfs); a missing path grants nothing."""
    syscall = libc().syscall
    bpath = os.fsencode(path)

    def call() -> int:
        try:
            fd = os.open(bpath, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            ctypes.set_errno(exc.errno or errno.EIO)
            return -1
        attr = _PathBeneath(access, fd)
        ret = syscall(SYS_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(attr), 0)
        err = ctypes.get_errno()
        os.close(fd)
        ctypes.set_errno(err)
        return 0 if ret == 0 else -1
    return (f"landlock rule {path}", call, (), True)


def _bind_then(mount: Callable[..., int], args: tuple[object, ...], attr: Step | None) -> Callable[[], int]:
    """A bind followed by its mount_setattr, as one optional-aware step (a skipped bind skips both).

    A callable first argument is called for the source in the child (a host path through the view's fd).
    """
    def call() -> int:
        src = args[0]
        if callable(src):
            src = src()
        if mount(src, *args[1:]) != 0:
            return -1
        if attr is None:
            return 0
        _, setattr_fn, setattr_args, _ = attr
        return 0 if setattr_fn(*setattr_args) == 0 else -1
    return call


def cap_steps(*, privileged: bool) -> list[Step]:
    """Drop every capability. `privileged`: the child holds CAP_SETPCAP (root, or a fresh user namespace)."""
    lib = libc()
    steps: list[Step] = []
    if privileged:
        steps.append(("securebits", lib.prctl, (PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0), False))
        steps.extend(("capbset drop", lib.prctl, (PR_CAPBSET_DROP, cap, 0, 0, 0), False)
                     for cap in range(last_cap() + 1))
    steps.append(("ambient clear", lib.prctl, (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), False))
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    steps.append(("capset", lib.capset, (ctypes.byref(header), ctypes.byref(data)), False))
    return steps


def nnp_step() -> Step:
    return ("no_new_privs", libc().prctl, (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), False)


def landlock_step(ruleset_fd: int) -> Step:
    return ("landlock_restrict_self", libc().syscall, (SYS_LANDLOCK_RESTRICT_SELF, ruleset_fd, 0), False)


def cloexec_from_3(keep: Callable[[], Sequence[int]]) -> Step:
    """Mark every fd >= 3 close-on-exec except `keep()` (read in the child, so late additions count)."""
    syscall = libc().syscall

    def call() -> int:
        low = 3
        for fd in sorted(set(keep())):
            if fd < low:
                continue
            if fd > low and syscall(SYS_CLOSE_RANGE, low, fd - 1, CLOSE_RANGE_CLOEXEC) != 0:
                return -1
            low = fd + 1
        return 0 if syscall(SYS_CLOSE_RANGE, low, 0xFFFFFFFF, CLOSE_RANGE_CLOEXEC) == 0 else -1
    return ("close fds", call, (), False)


def seccomp_step(bpf: bytes) -> Step:
    from sandbox.seccomp_bpf import prepare

    loader = prepare(bpf)

    def call() -> int:
        err = loader.load()
        if err:
            ctypes.set_errno(err)
            return -1
        return 0
    return ("seccomp", call, (), False)

"""Turn a `SeccompPlan` into classic BPF with libseccomp, and load it in a child.

The filter is built for the native architecture only. libseccomp then emits
an arch check first (anything but the native audit arch hits the bad-arch
action) and, on x86_64, a check that sends x32 numbers (nr >= 0x40000000,
except the -1 tracers use) to the same action; ia32 `int 0x80` calls carry
AUDIT_ARCH_I386 and fail the arch check. The bad-arch action kills the
process: no legitimate tool in the sandbox makes foreign-ABI syscalls, and a
SIGSYS is loud where an errno would look like a broken binary.

Building costs ~1 ms and importing pyseccomp a few more, so the bytes are
cached per plan (plans are frozen and hashable). Loading in the child uses a
`sock_fprog` prepared in the parent: one prctl, nothing allocated.
"""

from __future__ import annotations

import errno
import functools
import os

from policies.compile.seccomp import GE, MASKED_EQ, SeccompPlan

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_MAXINSNS = 4096

_NATIVE = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


class SeccompBuildError(RuntimeError):
    """The plan could not be compiled (old libseccomp, foreign arch, oversized filter)."""


def _filter(plan: SeccompPlan):  # type: ignore[no-untyped-def]  # pyseccomp has no stubs
    machine = os.uname().machine
    if _NATIVE.get(plan.arch, plan.arch) != _NATIVE.get(machine, machine):
        raise SeccompBuildError(f"seccomp plan is for {plan.arch}, this machine is {machine}")
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError) as exc:  # RuntimeError: libseccomp.so not found
        raise SeccompBuildError(f"pyseccomp/libseccomp unavailable ({exc}): apt-get install libseccomp2") from exc
    ops = {MASKED_EQ: sc.MASKED_EQ, GE: sc.GE}
    filt = sc.SyscallFilter(sc.ALLOW)
    filt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    for rule in plan.rules:
        nr = sc.resolve_syscall(sc.Arch.NATIVE, rule.syscall)
        if nr == -1:  # __NR_SCMP_ERROR: this libseccomp has never heard of it
            raise SeccompBuildError(f"libseccomp does not know syscall {rule.syscall!r}; upgrade libseccomp")
        args = [sc.Arg(a.index, ops[a.op], a.mask, a.value) if a.op == MASKED_EQ
                else sc.Arg(a.index, ops[a.op], a.value) for a in rule.args]
        filt.add_rule(sc.ERRNO(rule.errno), rule.syscall, *args)
    return filt


def _export(filt, method: str) -> bytes:  # type: ignore[no-untyped-def]
    fd = os.memfd_create("stockade-seccomp-export", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb", closefd=True) as fh:
            getattr(filt, method)(fh)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


_BY_ID: dict[int, tuple[SeccompPlan, bytes]] = {}


def bpf_bytes(plan: SeccompPlan) -> bytes:
    """Raw cBPF (struct sock_filter array) for `plan`; cached, and prepared for `load_in_child`.

    Looked up by identity first: `seccomp_rules` hands out one object per
    distinct plan, and hashing a plan of ~140 rules costs more than a spawn's
    worth of syscalls.
    """
    data = _bytes(plan)
    prepare(data)
    return data


def _bytes(plan: SeccompPlan) -> bytes:
    """`bpf_bytes` without the child loader: bwrap loads the filter itself (and ctypes stays unimported)."""
    hit = _BY_ID.get(id(plan))
    if hit is not None and hit[0] is plan:
        return hit[1]
    data = _build(plan)
    _BY_ID[id(plan)] = (plan, data)  # holds the plan, so the id is never reused while cached
    return data


@functools.lru_cache(maxsize=64)
def _build(plan: SeccompPlan) -> bytes:
    key = repr(plan).encode()
    data = _read_cached(key)
    if data is None:
        data = _export(_filter(plan), "export_bpf")
        if not data or len(data) % 8 or len(data) // 8 > BPF_MAXINSNS:
            raise SeccompBuildError(f"libseccomp produced an unusable filter ({len(data)} bytes)")
        _write_cached(key, data)
    return data


# A cold `stockade run` would spend ~6 ms importing pyseccomp and compiling, so
# the BPF is kept on disk, next to the host-facts cache, keyed by the plan's full
# text (compared exactly, no hash). That directory is a protected path whenever a
# writable root contains it (policies.resolve.state_dirs), so a sandboxed command
# can never plant a weaker filter for the next run.
_MAGIC = b"stockade-bpf-1\n"


def _cache_path(key: bytes) -> str:
    import zlib

    from policies.resolve import state_dirs

    return os.path.join(state_dirs()[0], f"bpf-{zlib.crc32(key):08x}-{len(key)}.bin")


def _read_cached(key: bytes) -> bytes | None:
    try:
        with open(_cache_path(key), "rb") as fh:
            blob = fh.read()
    except OSError:
        return None
    head = _MAGIC + len(key).to_bytes(4, "little") + key
    if not blob.startswith(head):
        return None
    data = blob[len(head):]
    if not data or len(data) % 8 or len(data) // 8 > BPF_MAXINSNS:
        return None
    return data


def _write_cached(key: bytes, data: bytes) -> None:
    path = _cache_path(key)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC + len(key).to_bytes(4, "little") + key + data)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache: failing to write it only costs the next cold start


def pfc_text(plan: SeccompPlan) -> str:
    """libseccomp's pseudo-code for the filter, for debugging and `stockade explain --verbose`."""
    return _export(_filter(plan), "export_pfc").decode("utf-8", "replace")


def bpf_fd(plan: SeccompPlan) -> int:
    """A sealed memfd at offset 0 holding the BPF, for `bwrap --seccomp FD`. Close-on-exec; the caller closes.

    Pass it with `pass_fds`, which makes it inheritable in the child only.
    """
    data = _bytes(plan)
    fd = os.memfd_create("stockade-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        import fcntl

        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


@functools.cache
def _sock_fprog():  # type: ignore[no-untyped-def]
    import ctypes  # lazily: only a filter loaded by stockade itself (not bwrap) needs it

    class _SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    return _SockFprog


class PreparedFilter:
    """A `sock_fprog` and the libc `prctl` resolved in the parent, so loading after fork is one call."""

    __slots__ = ("_buf", "_errno", "_prctl", "_prog", "_ref")

    def __init__(self, bpf: bytes) -> None:
        if not bpf or len(bpf) % 8 or len(bpf) // 8 > BPF_MAXINSNS:
            raise ValueError(f"not a cBPF program ({len(bpf)} bytes)")
        import ctypes

        self._buf = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _sock_fprog()(len(bpf) // 8, ctypes.cast(self._buf, ctypes.c_void_p))
        self._prctl = _libc().prctl
        self._ref = ctypes.byref(self._prog)
        self._errno = ctypes.get_errno  # nothing to import after fork

    def load(self) -> int:
        """Install the filter on the calling thread. 0, or the errno. Needs NO_NEW_PRIVS or CAP_SYS_ADMIN."""
        if self._prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._ref, 0, 0) != 0:
            return self._errno() or errno.EINVAL
        return 0


@functools.cache
def _libc():  # type: ignore[no-untyped-def]  # -> ctypes.CDLL
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.restype = ctypes.c_int
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    return libc


_PREPARED: dict[bytes, PreparedFilter] = {}


def prepare(bpf: bytes) -> PreparedFilter:
    """The loader for `bpf`, built once per distinct filter (call in the parent, before fork)."""
    found = _PREPARED.get(bpf)
    if found is None:
        found = _PREPARED[bpf] = PreparedFilter(bpf)
    return found


def load_in_child(bpf: bytes) -> None:
    """Install `bpf` on the current process (a preexec_fn step). Raises OSError if the kernel refuses."""
    err = prepare(bpf).load()
    if err:
        raise OSError(err, f"seccomp: {os.strerror(err)}")
